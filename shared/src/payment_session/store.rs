//! Payment sessions in DynamoDB (`PaymentSessionsTable`, key `id`): the session as JSON text beside
//! the attributes a condition needs (`user`, `state`).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::Put;

use super::PaymentSession;
use crate::dynamo::{Item, StoreError, Write, get_s, s};

/// Rule: a session is created once; its id derives from the request's Idempotency-Key.
pub const SESSION_NEW: &str = "payment_session.new";

#[derive(Clone, Debug)]
pub struct PaymentSessionStore {
    client: Client,
    table: String,
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
            ("state".to_owned(), s(&session.state)),
            ("session".to_owned(), s(text)),
        ]);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(SESSION_NEW, put))
    }

    pub async fn get(&self, id: &str) -> Result<Option<PaymentSession>, StoreError> {
        let out = self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        out.item()
            .map(|item| {
                serde_json::from_str(get_s(item, "session")?)
                    .map_err(|e| StoreError::caused(format!("stored payment session {id} is corrupt"), e))
            })
            .transpose()
    }
}
