//! Payment sessions in DynamoDB (`PaymentSessionsTable`, key `id`): what the session fixed at
//! creation as JSON text (`session`), beside the attributes its conditions need: `user`,
//! `expires_at`, and its stage (`stage`: `open`, `confirmed` with `order_id`, `confirmed_by` and
//! `confirmed_at`, or `cancelled` with `cancelled_at`).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, Update};

use super::policy::Process;
use super::{PaymentSession, Stage};
use crate::dynamo::{Item, StoreError, Write, get_n, get_s, n, s};

/// Rule: a session is created once; its id derives from the request's Idempotency-Key.
pub const SESSION_NEW: &str = "payment_session.new";
/// Rule: a session is confirmed (or cancelled) only while open and before it expires, and once.
pub const SESSION_OPEN: &str = "payment_session.open";

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
        let item = Item::from([
            ("id".to_owned(), s(&session.id)),
            ("user".to_owned(), s(&session.user)),
            ("stage".to_owned(), s("open")),
            ("expires_at".to_owned(), n(session.expires_at)),
            ("session".to_owned(), s(text)),
        ]);
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
            .update_expression("SET stage = :confirmed, order_id = :order, confirmed_by = :by, confirmed_at = :now")
            .condition_expression("stage = :open AND expires_at > :now")
            .expression_attribute_values(":confirmed", s("confirmed"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":order", s(super::session_order_id(&session.id)))
            .expression_attribute_values(":by", s(by.as_str()))
            .expression_attribute_values(":now", n(now))
            .build()?;
        Ok(Write::update(SESSION_OPEN, update))
    }

    /// Cancels `id` if it is still open (expired or not: nothing can move after either).
    pub async fn cancel(&self, id: &str, now: i64) -> Result<Cancel, StoreError> {
        let cancelled = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET stage = :cancelled, cancelled_at = :now")
            .condition_expression("stage = :open")
            .expression_attribute_values(":cancelled", s("cancelled"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":now", n(now))
            .send()
            .await;
        match cancelled {
            Ok(_) => Ok(Cancel::Cancelled),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                let session = self.get(id).await?.ok_or_else(|| StoreError::new("a cancelled session vanished"))?;
                Ok(Cancel::NotOpen(Box::new(session)))
            }
            Err(e) => Err(e.into()),
        }
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
            order_id: get_s(item, "order_id")?.to_owned(),
            by: serde_json::from_value(serde_json::json!(get_s(item, "confirmed_by")?))
                .map_err(|e| corrupt(e.to_string()))?,
            at: get_n(item, "confirmed_at")?,
        },
        "cancelled" => Stage::Cancelled { at: get_n(item, "cancelled_at")? },
        other => return Err(corrupt(format!("stage {other:?}"))),
    };
    Ok(session)
}
