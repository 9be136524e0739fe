//! Mini-apps in DynamoDB:
//! - `MiniAppsTable` (partition `id`): the registry; the interface is kept as its JSON.
//! - `MiniAppSessionsTable` (partition `id`, TTL `expires_at`): sessions of verified users.
//! - `MiniAppRequestsTable` (partition `id`): relayed requests and how they ended.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, KeysAndAttributes, Put, Update};

use super::{MiniApp, MiniAppStatus, Outcome, RelayedRequest, Session};
use crate::clock::now_epoch_seconds;
use crate::dynamo::{Item, StoreError, Write, get_b, get_n, get_s, n, s, scan_all};
use crate::keys::{KeyRing, KeyService, PartyKeys, PreviousKey};
use crate::party_keys::KeyedParty;

/// Rule: the relayed request was not recorded before.
pub const REQUEST_NEW: &str = "miniapp_request.new";
/// Rule: no request is recorded under this id (yet), for what was checked before a claim.
pub const REQUEST_ABSENT: &str = "miniapp_request.absent";

fn corrupt(what: &str) -> StoreError {
    StoreError::new(format!("a stored mini-app item is corrupt: {what}"))
}

fn json_attribute<T: serde::Serialize>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_json::to_string(value)
        .map(s)
        .map_err(|e| StoreError::caused("a mini-app value could not be written as JSON", e))
}

fn from_json<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> Result<T, StoreError> {
    serde_json::from_str(get_s(item, name)?).map_err(|_| corrupt(name))
}

async fn get_item(client: &Client, table: &str, id: &str) -> Result<Option<Item>, StoreError> {
    let output = client.get_item().table_name(table).key("id", s(id)).consistent_read(true).send().await?;
    Ok(output.item)
}

#[derive(Clone, Debug)]
pub struct MiniAppStore {
    client: Client,
    table: String,
}

impl MiniAppStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        MiniAppStore { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub async fn get(&self, id: &str) -> Result<Option<MiniApp>, StoreError> {
        get_item(&self.client, &self.table, id).await?.as_ref().map(app_from_item).transpose()
    }

    /// The write that registers `app`, only if its id is new.
    pub fn create_item(&self, app: &MiniApp) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&app.id))
            .item("owner_merchant_id", s(&app.owner_merchant_id))
            .item("server_url", s(&app.server_url))
            .item("status", s(app.status.as_str()))
            .item("key_id", s(&app.key_id))
            .item("key_ciphertext", AttributeValue::B(Blob::new(app.key_ciphertext.clone())))
            .item("interface", json_attribute(&app.interface)?)
            .item("created_at", n(app.created_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("miniapp.new", put))
    }

    /// The write that sets an app's status, only if it exists and is not revoked (revocation is final).
    pub fn status_item(&self, id: &str, status: MiniAppStatus) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #status = :status")
            .condition_expression("attribute_exists(id) AND #status <> :revoked")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":revoked", s(MiniAppStatus::Revoked.as_str()))
            .build()?;
        Ok(Write::update("miniapp.not_revoked", update))
    }
}

fn app_from_item(item: &Item) -> Result<MiniApp, StoreError> {
    Ok(MiniApp {
        id: get_s(item, "id")?.to_owned(),
        owner_merchant_id: get_s(item, "owner_merchant_id")?.to_owned(),
        server_url: get_s(item, "server_url")?.to_owned(),
        status: MiniAppStatus::parse(get_s(item, "status")?).ok_or_else(|| corrupt("status"))?,
        key_id: get_s(item, "key_id")?.to_owned(),
        key_ciphertext: get_b(item, "key_ciphertext")?,
        previous_key: PreviousKey::from_item(item)?,
        interface: from_json(item, "interface")?,
        created_at: get_n(item, "created_at")?,
    })
}

/// Apps with their working keys, unwrapped by KMS once per function instance.
pub struct MiniAppDirectory {
    pub store: MiniAppStore,
    ring: KeyRing,
}

impl MiniAppDirectory {
    pub fn new(store: MiniAppStore, keys: KeyService) -> Self {
        MiniAppDirectory { store, ring: KeyRing::new(keys) }
    }

    /// The keys we sign our calls to `app`'s server with (its previous key while honoured).
    pub async fn keys(&self, app: &MiniApp) -> Result<Arc<PartyKeys>, StoreError> {
        self.ring.signing_keys(&app.kms_owner(), &app.stored_key(), now_epoch_seconds()).await
    }
}

#[derive(Clone, Debug)]
pub struct SessionStore {
    client: Client,
    table: String,
}

impl SessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        SessionStore { client, table: table.into() }
    }

    /// The write that records `session` (a retry of the same verification writes it again).
    pub fn put_item(&self, session: &Session) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&session.id))
            .item("user", s(&session.user))
            .item("app_id", s(&session.app_id))
            .item("created_at", n(session.created_at))
            .item("expires_at", n(session.expires_at))
            .build()?;
        Ok(Write::put("miniapp_session.new", put))
    }

    /// The session, if it exists (DynamoDB's TTL deletes expired ones late, so callers check the time).
    pub async fn get(&self, id: &str) -> Result<Option<Session>, StoreError> {
        get_item(&self.client, &self.table, id).await?.as_ref().map(session_from_item).transpose()
    }
}

fn session_from_item(item: &Item) -> Result<Session, StoreError> {
    Ok(Session {
        id: get_s(item, "id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        app_id: get_s(item, "app_id")?.to_owned(),
        created_at: get_n(item, "created_at")?,
        expires_at: get_n(item, "expires_at")?,
    })
}

/// What a relay reads before anything else, in ONE consistent BatchGetItem over the three tables
/// (one request, so a cold process opens one connection for them, not three): an earlier attempt's
/// record of request `request_id`, session `session_id`, app `app_id`.
pub async fn request_session_and_app(
    requests: &RequestStore,
    sessions: &SessionStore,
    apps: &MiniAppStore,
    (request_id, session_id, app_id): (&str, &str, &str),
) -> Result<(Option<RelayedRequest>, Option<Session>, Option<MiniApp>), StoreError> {
    let wanted = [(&requests.table, request_id), (&sessions.table, session_id), (&apps.table, app_id)];
    let mut request_items = HashMap::new();
    for (table, id) in wanted {
        let keys = KeysAndAttributes::builder().keys(HashMap::from([("id".to_owned(), s(id))])).consistent_read(true);
        request_items.insert(table.clone(), keys.build()?);
    }
    let mut found: HashMap<String, Item> = HashMap::new();
    let mut asked = Some(request_items);
    while let Some(items) = asked.take().filter(|r| !r.is_empty()) {
        let output = requests.client.batch_get_item().set_request_items(Some(items)).send().await?;
        for (table, items) in output.responses.unwrap_or_default() {
            found.extend(items.into_iter().next().map(|item| (table, item)));
        }
        asked = output.unprocessed_keys;
    }
    Ok((
        found.get(&requests.table).map(request_from_item).transpose()?,
        found.get(&sessions.table).map(session_from_item).transpose()?,
        found.get(&apps.table).map(app_from_item).transpose()?,
    ))
}

#[derive(Clone, Debug)]
pub struct RequestStore {
    client: Client,
    table: String,
}

impl RequestStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        RequestStore { client, table: table.into() }
    }

    /// The condition that request `id` is not recorded (`REQUEST_ABSENT`): no attempt under its
    /// Idempotency-Key has committed how it ended.
    pub fn absent_item(&self, id: &str) -> Result<Write, StoreError> {
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("id", s(id))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::check(REQUEST_ABSENT, check))
    }

    /// The write that records how `request` ended, only once.
    pub fn create_item(&self, request: &RelayedRequest) -> Result<Write, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&request.id))
            .item("app_id", s(&request.app_id))
            .item("user", s(&request.user))
            .item("action", s(&request.action))
            .item("outcome", json_attribute(&request.outcome)?)
            .item("created_at", n(request.created_at))
            .condition_expression("attribute_not_exists(id)");
        if let Some(approved) = &request.approved {
            put = put.item("approved", json_attribute(approved)?);
        }
        Ok(Write::put(REQUEST_NEW, put.build()?))
    }

    pub async fn get(&self, id: &str) -> Result<Option<RelayedRequest>, StoreError> {
        get_item(&self.client, &self.table, id).await?.as_ref().map(request_from_item).transpose()
    }

    /// Every request, for the invariant checker (`crate::miniapp::check_requests`).
    pub async fn all(&self) -> Result<Vec<RelayedRequest>, StoreError> {
        scan_all(&self.client, &self.table).await?.iter().map(request_from_item).collect()
    }
}

fn request_from_item(item: &Item) -> Result<RelayedRequest, StoreError> {
    Ok(RelayedRequest {
        id: get_s(item, "id")?.to_owned(),
        app_id: get_s(item, "app_id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        action: get_s(item, "action")?.to_owned(),
        approved: if item.contains_key("approved") { Some(from_json(item, "approved")?) } else { None },
        outcome: from_json::<Outcome>(item, "outcome")?,
        created_at: get_n(item, "created_at")?,
    })
}
