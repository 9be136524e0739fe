//! The audit log: every admin action (register, suspend, publish, rotate) leaves an entry, written
//! in the same transaction as the change it describes.

use aws_sdk_dynamodb::types::Put;
use serde_json::Value;

use crate::Problem;
use crate::dynamo::{Item, StoreError, Write, n, s, transact};

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// What was acted on, e.g. `config/payment-ui`: the log's partition, so a resource's history is one Query.
    pub resource: String,
    pub action: &'static str,
    pub actor: String,
    /// Milliseconds since the epoch: entries of one resource sort by it.
    pub at_ms: i64,
    pub detail: Value,
}

impl AuditEntry {
    /// An entry for an action `actor` takes now.
    pub fn now(resource: String, action: &'static str, actor: &str, detail: Value) -> Self {
        AuditEntry { resource, action, actor: actor.to_owned(), at_ms: crate::clock::now_epoch_millis(), detail }
    }

    /// The entry as a transaction item, to commit with the change it records (so an action is
    /// logged exactly when it happens). `id` ties the entry to the request that caused it.
    pub fn put_item(&self, table: &str, id: &str) -> Result<Write, StoreError> {
        let item = Item::from([
            ("resource".to_owned(), s(&self.resource)),
            ("entry".to_owned(), s(format!("{:015}#{id}", self.at_ms))),
            ("action".to_owned(), s(self.action)),
            ("actor".to_owned(), s(&self.actor)),
            ("at_ms".to_owned(), n(self.at_ms)),
            ("detail".to_owned(), s(self.detail.to_string())),
        ]);
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(entry)")
            .build()?;
        Ok(Write::put("audit.new", put))
    }
}

/// Commits an admin's `write` (a status change) with its audit entry, under an entry id of its own;
/// `Ok(true)` when the write's condition refused it (nothing is written then).
pub async fn commit_audited(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    entry: AuditEntry,
    write: Write,
) -> Result<bool, Problem> {
    let rule = write.rule;
    let items = vec![write, entry.put_item(table, &uuid::Uuid::new_v4().to_string())?];
    match transact(dynamodb, items).await {
        Ok(()) => Ok(false),
        Err(e) if e.broke(rule) => Ok(true),
        Err(e) => Err(Problem::internal(e)),
    }
}
