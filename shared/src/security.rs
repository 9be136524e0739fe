//! Each user's record of security events (`SecurityEventsTable`, partition `user`, sort `id`): what
//! happened to or in the name of their account that they should see (a refused transfer
//! instruction today; a new device or link as they come). The home interface shows it; the audit
//! log keeps the operators' side of the same event.
//!
//! An event's id derives from its source (the request that caused it), and writing it again writes
//! the same item: a retried request never shows the user one event twice.

use aws_sdk_dynamodb::types::Put;
use serde_json::Value;

use crate::dynamo::{Item, StoreError, Write, n, s};

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityEvent {
    pub user: String,
    /// Derived from the source, e.g. `transfer-refused/<request>`.
    pub id: String,
    /// What happened, e.g. `transfer.refused`.
    pub kind: &'static str,
    pub at: i64,
    /// What the user (and support) need to tell what happened: never a secret.
    pub detail: Value,
}

impl SecurityEvent {
    /// The event as a transaction item, to commit with its source.
    pub fn put_item(&self, table: &str) -> Result<Write, StoreError> {
        let item = Item::from([
            ("user".to_owned(), s(&self.user)),
            ("id".to_owned(), s(&self.id)),
            ("kind".to_owned(), s(self.kind)),
            ("at".to_owned(), n(self.at)),
            ("detail".to_owned(), s(self.detail.to_string())),
        ]);
        Ok(Write::put("security_event.written", Put::builder().table_name(table).set_item(Some(item)).build()?))
    }
}
