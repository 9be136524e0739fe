//! Single-use nonces of signed requests (`NonceTable`, partition `id`, TTL `expires_at`): a signed
//! request is accepted once; a replay within the tolerance window finds its nonce taken, and one
//! after it fails the timestamp check, so a nonce need only be kept for twice the window.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;

use crate::crypto::{SIGNATURE_TOLERANCE_SECONDS, SignatureError};
use crate::dynamo::{StoreError, n, s};

#[derive(Clone, Debug)]
pub struct NonceStore {
    client: Client,
    table: String,
}

impl NonceStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        NonceStore { client, table: table.into() }
    }

    /// Takes `nonce` for `key_id`, or says it was already taken.
    pub async fn use_once(
        &self,
        key_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<Result<(), SignatureError>, StoreError> {
        let outcome = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", s(format!("{key_id}#{nonce}")))
            .item("expires_at", n(now + 2 * SIGNATURE_TOLERANCE_SECONDS))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(Ok(())),
            Err(e) if matches!(e.as_service_error(), Some(PutItemError::ConditionalCheckFailedException(_))) => {
                Ok(Err(SignatureError::Replayed))
            }
            Err(e) => Err(e.into()),
        }
    }
}
