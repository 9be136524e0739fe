//! Small helpers for reading and writing DynamoDB items, shared by every store adapter.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, TransactWriteItem, Update};

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A store call that failed for a reason the caller cannot fix (network, throttling, a bug): what
/// was being done, and the error that stopped it, kept as the source so its chain is not lost.
/// Display writes the whole chain, so a log line of it says everything.
#[derive(Debug)]
pub struct StoreError {
    context: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A failure with no underlying error (a corrupt item, a broken invariant).
    pub fn new(context: impl Into<String>) -> Self {
        StoreError { context: context.into(), source: None }
    }

    /// `source` stopped what `context` names.
    pub fn caused(context: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError { context: context.into(), source: Some(source.into()) }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.context)?;
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl<E, R> From<SdkError<E, R>> for StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    fn from(e: SdkError<E, R>) -> Self {
        StoreError::caused("an AWS call failed", e)
    }
}

impl From<aws_sdk_dynamodb::error::BuildError> for StoreError {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        StoreError::caused("a DynamoDB request could not be built", e)
    }
}

impl From<StoreError> for crate::Problem {
    fn from(e: StoreError) -> Self {
        crate::Problem::internal(e)
    }
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(StoreError::new(format!("item attribute {name} is missing or not a string"))),
    }
}

pub fn get_b(item: &Item, name: &str) -> Result<Vec<u8>, StoreError> {
    match item.get(name) {
        Some(AttributeValue::B(v)) => Ok(v.as_ref().to_vec()),
        _ => Err(StoreError::new(format!("item attribute {name} is missing or not binary"))),
    }
}

pub fn get_decimal(item: &Item, name: &str) -> Result<rust_decimal::Decimal, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|_| StoreError::new(format!("item attribute {name} = {v} is not a decimal")))
        }
        _ => Err(StoreError::new(format!("item attribute {name} is missing or not a number"))),
    }
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|_| StoreError::new(format!("item attribute {name} = {v} is out of range")))
        }
        _ => Err(StoreError::new(format!("item attribute {name} is missing or not a number"))),
    }
}

/// A number attribute the item may lack: `None` then.
pub fn get_n_opt<T: std::str::FromStr>(item: &Item, name: &str) -> Result<Option<T>, StoreError> {
    if item.contains_key(name) { get_n(item, name).map(Some) } else { Ok(None) }
}

/// One write of a transaction, named for the rule its condition states (`"order.still_pending"`),
/// so a cancelled transaction reports which rules failed by name, not by a position that shifts
/// whenever an item is added.
#[derive(Debug, Clone)]
pub struct Write {
    pub rule: &'static str,
    pub item: TransactWriteItem,
}

impl Write {
    pub fn put(rule: &'static str, put: Put) -> Self {
        Write { rule, item: TransactWriteItem::builder().put(put).build() }
    }

    pub fn update(rule: &'static str, update: Update) -> Self {
        Write { rule, item: TransactWriteItem::builder().update(update).build() }
    }

    pub fn delete(rule: &'static str, delete: Delete) -> Self {
        Write { rule, item: TransactWriteItem::builder().delete(delete).build() }
    }

    pub fn check(rule: &'static str, check: ConditionCheck) -> Self {
        Write { rule, item: TransactWriteItem::builder().condition_check(check).build() }
    }
}

/// Why a TransactWriteItems did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TransactError {
    /// The rules of these writes failed their conditions; nothing was written.
    #[error("conditions failed: {0:?}")]
    ConditionFailed(Vec<&'static str>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TransactError {
    /// Whether the transaction was cancelled because `rule` did not hold.
    pub fn broke(&self, rule: &str) -> bool {
        matches!(self, TransactError::ConditionFailed(rules) if rules.contains(&rule))
    }
}

/// The rules of `writes` whose conditions a cancelled transaction reports as failed, or `None`
/// when it was not cancelled by a condition (a conflict, throttling, a bad request).
pub fn failed_rules<R>(error: &SdkError<TransactWriteItemsError, R>, writes: &[Write]) -> Option<Vec<&'static str>> {
    let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() else {
        return None;
    };
    let failed: Vec<&'static str> = cancelled
        .cancellation_reasons()
        .iter()
        .zip(writes)
        .filter(|(reason, _)| reason.code() == Some("ConditionalCheckFailed"))
        .map(|(_, write)| write.rule)
        .collect();
    (!failed.is_empty()).then_some(failed)
}

/// DynamoDB cancels a transaction that races another on one of its items with a
/// `TransactionConflict` reason, and one that meets a throttled item with `ThrottlingError`:
/// nothing was written, and trying again is safe.
pub fn conflicted<R>(error: &SdkError<TransactWriteItemsError, R>) -> bool {
    match error.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => cancelled
            .cancellation_reasons()
            .iter()
            .any(|r| matches!(r.code(), Some("TransactionConflict" | "ThrottlingError"))),
        _ => false,
    }
}

/// A short, jittered wait before trying again, growing with the attempts.
pub async fn backoff(attempt: u32) {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 20;
    tokio::time::sleep(std::time::Duration::from_millis(2 + jitter * u64::from(attempt + 1).min(5))).await;
}

/// How often `transact` tries a transaction that conflicted with another.
const CONFLICT_TRIES: u32 = 5;

/// Commits `writes` in one transaction, reporting which rules failed when it is cancelled. One
/// cancelled by a conflict with another transaction on its items (two confirmations at once) is
/// tried again, a few times: nothing of it was written.
pub async fn transact(client: &aws_sdk_dynamodb::Client, writes: Vec<Write>) -> Result<(), TransactError> {
    let items: Vec<_> = writes.iter().map(|w| w.item.clone()).collect();
    let mut attempt = 0;
    let error = loop {
        match client.transact_write_items().set_transact_items(Some(items.clone())).send().await {
            Ok(_) => return Ok(()),
            Err(e) if conflicted(&e) && failed_rules(&e, &writes).is_none() && attempt + 1 < CONFLICT_TRIES => {
                backoff(attempt).await;
                attempt += 1;
            }
            Err(e) => break e,
        }
    };
    match failed_rules(&error, &writes) {
        Some(rules) => Err(TransactError::ConditionFailed(rules)),
        None => Err(StoreError::from(error).into()),
    }
}

/// The sort-key range `(low, high)` of items keyed `<prefix><sequence, 20 digits>` that come before
/// sequence `before` (exclusive; `None`: all). `None` when nothing can come before it.
fn sequence_range(prefix: &str, before: Option<u64>) -> Option<(String, String)> {
    let high = match before {
        Some(0) => return None,
        Some(before) => before - 1,
        None => u64::MAX,
    };
    Some((prefix.to_owned(), format!("{prefix}{high:020}")))
}

/// The item of `table` keyed `key` (its key attributes, strings), read consistently.
pub async fn get_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &[(&str, &str)],
) -> Result<Option<Item>, StoreError> {
    let mut request = client.get_item().table_name(table).consistent_read(true);
    for (name, value) in key {
        request = request.key(*name, s(*value));
    }
    Ok(request.send().await?.item)
}

/// Every item of `table`, by consistent scans page by page: for checks over a whole table (a
/// quiet one: a scan is not a snapshot), never for a request.
pub async fn scan_all(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client.scan().table_name(table).consistent_read(true).set_exclusive_start_key(start).send().await?;
        start = page.last_evaluated_key.clone();
        items.extend(page.items.unwrap_or_default());
        if start.is_none() {
            return Ok(items);
        }
    }
}

/// Every item of one partition (`key` = `value`), read consistently page by page: for a partition
/// that stays small (one user's instruments).
pub async fn partition_all(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &str,
    value: &str,
) -> Result<Vec<Item>, StoreError> {
    let query = client
        .query()
        .table_name(table)
        .key_condition_expression("#k = :v")
        .expression_attribute_names("#k", key)
        .expression_attribute_values(":v", s(value));
    every_page(query).await
}

/// Every item of partition `pk` (key `pk`, sort key `sk`) sorted after `after`, read consistently
/// page by page: an account's postings beyond the sequence it was read at.
pub async fn items_after(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
    after: &str,
) -> Result<Vec<Item>, StoreError> {
    let query = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND sk > :after")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":after", s(after));
    every_page(query).await
}

/// Every item `query` finds, read consistently page by page.
async fn every_page(
    query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = query.clone().consistent_read(true).set_exclusive_start_key(start).send().await?;
        start = page.last_evaluated_key.clone();
        items.extend(page.items.unwrap_or_default());
        if start.is_none() {
            return Ok(items);
        }
    }
}

/// One page of partition `pk`'s items keyed `<prefix><sequence, 20 digits>`, newest first: `limit`
/// of them before sequence `before` (exclusive; `None`: from the newest). Postings and messages.
pub async fn newest_before(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: String,
    prefix: &str,
    before: Option<u64>,
    limit: i32,
) -> Result<Vec<Item>, StoreError> {
    let Some((low, high)) = sequence_range(prefix, before) else { return Ok(vec![]) };
    let page = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
        .expression_attribute_values(":pk", s(pk))
        .expression_attribute_values(":low", s(low))
        .expression_attribute_values(":high", s(high))
        .scan_index_forward(false)
        .limit(limit)
        // A history read right after a payment shows it (the home's latest postings, too).
        .consistent_read(true)
        .send()
        .await?;
    Ok(page.items.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancelled(codes: &[&str]) -> SdkError<TransactWriteItemsError, ()> {
        use aws_sdk_dynamodb::types::CancellationReason;
        use aws_sdk_dynamodb::types::error::TransactionCanceledException;
        let reasons = codes.iter().map(|c| CancellationReason::builder().code(*c).build()).collect();
        let cancelled = TransactionCanceledException::builder().set_cancellation_reasons(Some(reasons)).build();
        SdkError::service_error(TransactWriteItemsError::TransactionCanceledException(cancelled), ())
    }

    fn write(rule: &'static str) -> Write {
        Write::check(
            rule,
            ConditionCheck::builder()
                .table_name("t")
                .key("id", s("x"))
                .condition_expression("x")
                .build()
                .expect("a check"),
        )
    }

    #[test]
    fn a_cancelled_transaction_names_the_rules_that_failed_wherever_they_stand() {
        let writes = [write("order.new"), write("idempotency.claim_held"), write("outbox.new")];
        let error = cancelled(&["None", "ConditionalCheckFailed", "None"]);
        assert_eq!(failed_rules(&error, &writes), Some(vec!["idempotency.claim_held"]));
        let reordered = [write("idempotency.claim_held"), write("order.new"), write("outbox.new")];
        let error = cancelled(&["ConditionalCheckFailed", "None", "None"]);
        assert_eq!(failed_rules(&error, &reordered), Some(vec!["idempotency.claim_held"]));
        let failure = TransactError::ConditionFailed(vec!["idempotency.claim_held"]);
        assert!(failure.broke("idempotency.claim_held") && !failure.broke("order.new"));
        // A conflict is not a broken rule: the caller sees a store error (or plans again).
        assert_eq!(failed_rules(&cancelled(&["TransactionConflict", "None", "None"]), &writes), None);
    }

    #[test]
    fn sequence_ranges_end_before_the_cursor() {
        assert_eq!(sequence_range("p#", Some(0)), None);
        assert_eq!(sequence_range("p#", Some(3)), Some(("p#".into(), "p#00000000000000000002".into())));
        assert_eq!(sequence_range("p#", None).map(|r| r.1), Some(format!("p#{}", u64::MAX)));
    }
}
