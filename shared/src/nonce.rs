//! Single-use nonces of signed requests (`NonceTable`, partition `id`, TTL `expires_at`): a signed
//! request is accepted once; a replay within the tolerance window finds its nonce taken, and one
//! after it fails the timestamp check, so a nonce need only be kept for twice the window.
//!
//! Each take writes its own `taker` id with the nonce: when the write commits but its answer is
//! lost, the SDK's retry of the same write finds the nonce taken, by this very take, not by a
//! replay, and the request goes on (without it a merchant's decision would be refused as replayed).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure};

use crate::crypto::{SIGNATURE_TOLERANCE_SECONDS, SignatureError};
use crate::dynamo::{Item, StoreError, Write, n, s};

/// Rule: a nonce spent in a transaction (`NonceStore::spend_item`) was not spent before.
pub const NONCE_UNSPENT: &str = "nonce.unspent";

#[derive(Clone, Debug)]
pub struct NonceStore {
    client: Client,
    table: String,
}

impl NonceStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        NonceStore { client, table: table.into() }
    }

    /// The spending of `nonce` of what `key_id` signed, as a transaction item, to commit with what
    /// the nonce authorises; kept until `keep_until`, after which what carried it is refused anyway.
    pub fn spend_item(&self, key_id: &str, nonce: &str, keep_until: i64) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(format!("{key_id}#{nonce}")))
            .item("expires_at", n(keep_until))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(NONCE_UNSPENT, put))
    }

    /// Takes `nonce` for `key_id`, or says it was already taken.
    pub async fn use_once(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Result<(), SignatureError>, StoreError> {
        let taker = uuid::Uuid::new_v4().to_string();
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", s(format!("{key_id}#{nonce}")))
            .item("expires_at", n(now + 2 * SIGNATURE_TOLERANCE_SECONDS))
            .item("taker", s(&taker))
            .condition_expression("attribute_not_exists(id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(Ok(())),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) if taken_by(failed.item(), &taker) => {
                    Ok(Ok(()))
                }
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(Err(SignatureError::Replayed)),
                _ => Err(e.into()),
            },
        }
    }
}

/// Whether the nonce's item (`None`: not returned) was written by the take `taker`.
fn taken_by(item: Option<&Item>, taker: &str) -> bool {
    item.and_then(|item| item.get("taker")).and_then(|t| t.as_s().ok()).is_some_and(|t| t == taker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_ours_only_if_this_take_wrote_it() {
        let item = |taker: &str| Item::from([("id".to_owned(), s("k#n")), ("taker".to_owned(), s(taker))]);
        assert!(taken_by(Some(&item("t1")), "t1"), "our own write, whose answer was lost");
        assert!(!taken_by(Some(&item("t0")), "t1"), "a replay");
        assert!(!taken_by(Some(&Item::from([("id".to_owned(), s("k#n"))])), "t1"), "taken before takers were written");
        assert!(!taken_by(None, "t1"));
    }
}
