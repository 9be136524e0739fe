//! Small helpers for reading and writing DynamoDB items, shared by every store adapter.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A store call that failed for a reason the caller cannot fix (network, throttling, a bug).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

impl<E, R> From<SdkError<E, R>> for StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(e: SdkError<E, R>) -> Self {
        StoreError(DisplayErrorContext(e).to_string())
    }
}

impl From<aws_sdk_dynamodb::error::BuildError> for StoreError {
    fn from(e: aws_sdk_dynamodb::error::BuildError) -> Self {
        StoreError(e.to_string())
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
        _ => Err(StoreError(format!("item attribute {name} is missing or not a string"))),
    }
}

pub fn get_decimal(item: &Item, name: &str) -> Result<rust_decimal::Decimal, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|_| StoreError(format!("item attribute {name} = {v} is not a decimal")))
        }
        _ => Err(StoreError(format!("item attribute {name} is missing or not a number"))),
    }
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Result<T, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            v.parse().map_err(|_| StoreError(format!("item attribute {name} = {v} is out of range")))
        }
        _ => Err(StoreError(format!("item attribute {name} is missing or not a number"))),
    }
}

/// Why a TransactWriteItems did not commit.
#[derive(Debug, thiserror::Error)]
pub enum TransactError {
    /// These items (indices into the request) failed their conditions; nothing was written.
    #[error("conditions failed on items {0:?}")]
    ConditionFailed(Vec<usize>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Commits `items` in one transaction, reporting which conditions failed when it is cancelled.
pub async fn transact(
    client: &aws_sdk_dynamodb::Client,
    items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
) -> Result<(), TransactError> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let error = match client.transact_write_items().set_transact_items(Some(items)).send().await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = error.as_service_error() {
        let failed: Vec<usize> = cancelled
            .cancellation_reasons()
            .iter()
            .enumerate()
            .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
            .map(|(i, _)| i)
            .collect();
        if !failed.is_empty() {
            return Err(TransactError::ConditionFailed(failed));
        }
    }
    Err(StoreError::from(error).into())
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
        .send()
        .await?;
    Ok(page.items.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_ranges_end_before_the_cursor() {
        assert_eq!(sequence_range("p#", Some(0)), None);
        assert_eq!(sequence_range("p#", Some(3)), Some(("p#".into(), "p#00000000000000000002".into())));
        assert_eq!(sequence_range("p#", None).map(|r| r.1), Some(format!("p#{}", u64::MAX)));
    }
}
