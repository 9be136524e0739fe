//! Payment sessions in DynamoDB (`PaymentSessionsTable`, key `id`): what the session fixed at
//! creation as JSON text (`session`), beside the attributes its conditions need: `user`,
//! `expires_at`, and its stage (`stage`: `open`, `confirmed` with `payment_id`, `confirmed_by` and
//! `confirmed_at`, or `cancelled` with `cancelled_at`); a transfer instruction's session also
//! `instruction_digest`, which the transfer side's check of its consent reads
//! (`instruction::consent`).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, KeysAndAttributes, Put, Update};

use super::breaker::{Counts, Outcome, Settings, windows};
use super::policy::Process;
use super::{PaymentSession, Stage};
use crate::crypto::random_hex;
use crate::dynamo::{Item, StoreError, Write, get_n, get_n_opt, get_s, n, s, transact};
use crate::instruction::consent;

/// Rule: a session is created once; its id derives from the request's Idempotency-Key.
pub const SESSION_NEW: &str = "payment_session.new";
/// Rule: a session is confirmed (or cancelled) only while open and before it expires, and once.
pub const SESSION_OPEN: &str = "payment_session.open";
/// Rule: a transfer instruction's session is cancelled while open, or confirmed and not carried
/// out (its consent withdrawn).
pub const SESSION_CANCELLABLE: &str = "payment_session.cancellable";
/// Rule: an admin's force is ended only where one is.
pub const FORCE_SET: &str = "payment_session.force";

/// A process an admin forced for one user's sessions (testing), until a time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Force {
    pub process: Process,
    /// When it ends, epoch seconds.
    pub until: i64,
}

#[derive(Clone, Debug)]
pub struct PaymentSessionStore {
    client: Client,
    table: String,
}

/// What a cancel did.
#[derive(Debug, PartialEq)]
pub enum Cancel {
    Cancelled,
    /// It was not open: the session as it is.
    NotOpen(Box<PaymentSession>),
}

impl PaymentSessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        PaymentSessionStore { client, table: table.into() }
    }

    /// The write that creates `session`, only if its id is free.
    pub fn create_item(&self, session: &PaymentSession) -> Result<Write, StoreError> {
        let text = serde_json::to_string(session)
            .map_err(|e| StoreError::caused("a session could not be written as JSON", e))?;
        let mut item = Item::from([
            ("id".to_owned(), s(&session.id)),
            ("user".to_owned(), s(&session.user)),
            ("stage".to_owned(), s("open")),
            ("expires_at".to_owned(), n(session.expires_at)),
            ("session".to_owned(), s(text)),
        ]);
        if let Some(instruction) = session.instruction() {
            item.insert("instruction_digest".to_owned(), s(consent::digest(instruction)));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(SESSION_NEW, put))
    }

    /// The write that confirms `session` by `by` with its payment `order_id`: only while it is
    /// open and unexpired, so a cancel and a confirmation cannot both happen.
    pub fn confirm_item(&self, session: &PaymentSession, by: Process, now: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(&session.id))
            .update_expression("SET stage = :confirmed, payment_id = :payment, confirmed_by = :by, confirmed_at = :now")
            .condition_expression("stage = :open AND expires_at > :now")
            .expression_attribute_values(":confirmed", s("confirmed"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":payment", s(session.payment_id()))
            .expression_attribute_values(":by", s(by.as_str()))
            .expression_attribute_values(":now", n(now))
            .build()?;
        Ok(Write::update(SESSION_OPEN, update))
    }

    /// Cancels `id` if it is still open (expired or not: nothing can move after either). A
    /// transaction of one write, so a conflict with a confirmation's transaction is tried again.
    pub async fn cancel(&self, id: &str, now: i64, with: Write) -> Result<Cancel, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET stage = :cancelled, cancelled_at = :now")
            .condition_expression("stage = :open")
            .expression_attribute_values(":cancelled", s("cancelled"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":now", n(now))
            .build()?;
        match transact(&self.client, vec![Write::update(SESSION_OPEN, update), with]).await {
            Ok(()) => Ok(Cancel::Cancelled),
            Err(e) if e.broke(SESSION_OPEN) => {
                let session = self.get(id).await?.ok_or_else(|| StoreError::new("a cancelled session vanished"))?;
                Ok(Cancel::NotOpen(Box::new(session)))
            }
            Err(e) => Err(StoreError::new(e.to_string())),
        }
    }

    /// The write that cancels a transfer instruction's session `id` while it is open, or confirmed:
    /// with the check that its operation is absent, a consent is withdrawn only while nothing moved.
    pub fn withdraw_item(&self, id: &str, now: i64) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET stage = :cancelled, cancelled_at = :now")
            .condition_expression("stage IN (:open, :confirmed)")
            .expression_attribute_values(":cancelled", s("cancelled"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":confirmed", s("confirmed"))
            .expression_attribute_values(":now", n(now))
            .build()?;
        Ok(Write::update(SESSION_CANCELLABLE, update))
    }

    /// The process an admin forced for `user`, and until when (an item `force#<user>`, whose `#`
    /// no session id can hold).
    pub async fn force(&self, user: &str) -> Result<Option<Force>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", s(format!("force#{user}")))
            .consistent_read(true)
            .send()
            .await?;
        out.item()
            .map(|item| {
                let process = serde_json::from_value(serde_json::json!(get_s(item, "process")?))
                    .map_err(|e| StoreError::caused(format!("the force of {user} is corrupt"), e))?;
                Ok(Force { process, until: get_n(item, "until")? })
            })
            .transpose()
    }

    /// The write that forces `process` for `user` until `until`.
    pub fn force_item(&self, user: &str, force: &Force) -> Result<Write, StoreError> {
        let item = Item::from([
            ("id".to_owned(), s(format!("force#{user}"))),
            ("process".to_owned(), s(force.process.as_str())),
            ("until".to_owned(), n(force.until)),
            // Gone a day after it ends (the table's TTL; sessions never carry it).
            ("gone_at".to_owned(), n(force.until + 86_400)),
        ]);
        Ok(Write::put(FORCE_SET, Put::builder().table_name(&self.table).set_item(Some(item)).build()?))
    }

    /// The write that ends `user`'s force, if there is one.
    pub fn unforce_item(&self, user: &str) -> Result<Write, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key("id", s(format!("force#{user}")))
            .condition_expression("attribute_exists(id)")
            .build()?;
        Ok(Write::delete(FORCE_SET, delete))
    }

    pub async fn get(&self, id: &str) -> Result<Option<PaymentSession>, StoreError> {
        let out = self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        out.item().map(|item| session_from(id, item)).transpose()
    }
}

fn session_from(id: &str, item: &Item) -> Result<PaymentSession, StoreError> {
    let corrupt = |what: String| StoreError::new(format!("stored payment session {id} is corrupt: {what}"));
    let mut session: PaymentSession =
        serde_json::from_str(get_s(item, "session")?).map_err(|e| corrupt(e.to_string()))?;
    session.stage = match get_s(item, "stage")? {
        "open" => Stage::Open,
        "confirmed" => Stage::Confirmed {
            // `order_id` in sessions confirmed before mini-app charges.
            payment_id: get_s(item, "payment_id").or_else(|_| get_s(item, "order_id"))?.to_owned(),
            by: serde_json::from_value(serde_json::json!(get_s(item, "confirmed_by")?))
                .map_err(|e| corrupt(e.to_string()))?,
            at: get_n(item, "confirmed_at")?,
        },
        "cancelled" => Stage::Cancelled { at: get_n(item, "cancelled_at")? },
        other => return Err(corrupt(format!("stage {other:?}"))),
    };
    Ok(session)
}

/// How many items each counter of the circuit breaker is spread over: every launch's outcome is a
/// write, and one item takes about 1,000 writes a second; a verdict reads them all at once.
pub const BREAKER_SHARDS: u32 = 8;

/// The circuit breaker's counters (`PaymentBreakerTable`, key `id`:
/// `<process>/<platform>/<app version>#<window>#<shard>`, with `failures`, `successes` and
/// `expires_at`, three windows on, for the TTL), and a marker per user who counted in a window
/// (`user#<key>#<window>#<user>`).
#[derive(Clone, Debug)]
pub struct BreakerStore {
    client: Client,
    table: String,
    pub settings: Settings,
}

impl BreakerStore {
    pub fn new(client: Client, table: impl Into<String>, settings: Settings) -> Self {
        BreakerStore { client, table: table.into(), settings }
    }

    /// Counts one launch's `outcome` under `key` for `user`, on a shard of the current window
    /// chosen at random: the user's first outcome under `key` in the window only (a marker item,
    /// put if absent), so one user, however many sessions they start, counts once per window.
    pub async fn record(&self, key: &str, user: &str, outcome: Outcome, now: i64) -> Result<(), StoreError> {
        let [window, _] = windows(now, &self.settings);
        let expires = n((window + 3) * self.settings.window_seconds);
        let marked = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", s(format!("user#{key}#{window}#{user}")))
            .item("expires_at", expires.clone())
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match marked {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let shard = u32::from_str_radix(&random_hex::<1>(), 16).unwrap_or(0) % BREAKER_SHARDS;
        let counter = match outcome {
            Outcome::Failure => "failures",
            Outcome::Success => "successes",
        };
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", s(format!("{key}#{window}#{shard}")))
            .update_expression(format!("ADD {counter} :one SET expires_at = :expires"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":expires", expires)
            .send()
            .await?;
        Ok(())
    }

    /// What the counters of each of `keys` hold over the current window and the one before (every
    /// shard, read at once).
    pub async fn counts(&self, keys: &[String], now: i64) -> Result<HashMap<String, Counts>, StoreError> {
        let mut ids = KeysAndAttributes::builder();
        for key in keys {
            for window in windows(now, &self.settings) {
                for shard in 0..BREAKER_SHARDS {
                    ids = ids.keys(HashMap::from([("id".to_owned(), s(format!("{key}#{window}#{shard}")))]));
                }
            }
        }
        let mut found: HashMap<String, Counts> = HashMap::new();
        let mut request = Some(HashMap::from([(self.table.clone(), ids.build()?)]));
        while let Some(items) = request.take().filter(|r| !r.is_empty()) {
            let output = self.client.batch_get_item().set_request_items(Some(items)).send().await?;
            for item in output.responses().and_then(|r| r.get(&self.table)).into_iter().flatten() {
                let id = get_s(item, "id")?;
                let key = id.split('#').next().unwrap_or_default().to_owned();
                // A shard that counted only failures has no `successes`, and the other way round.
                let count = |name| get_n_opt::<u64>(item, name).map(Option::unwrap_or_default);
                let counts = Counts { failures: count("failures")?, successes: count("successes")? };
                let total = found.entry(key).or_default();
                *total = *total + counts;
            }
            request = output.unprocessed_keys().cloned();
        }
        Ok(found)
    }
}
