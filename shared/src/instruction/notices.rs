//! What the notifier (`crate::notifier`) does with the notifications queue's `transfer.completed`:
//! the message in the payer's conversation with the provider, then a signed webhook to the
//! provider's product server (`<url>/webhooks`), recorded on the outbox item so a redelivery does
//! not tell the provider twice.

use std::sync::Arc;

use super::operation::OperationStore;
use crate::aws::{self, MissingEnv};
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;
use crate::outbox::Outbox;

pub struct OperationNotices {
    operations: OperationStore,
    merchants: Arc<MerchantDirectory>,
    conversations: ConversationStore,
    outbox: Outbox,
    relay: MerchantClient,
}

impl OperationNotices {
    pub fn from_env(
        dynamodb: &aws_sdk_dynamodb::Client,
        merchants: Arc<MerchantDirectory>,
        conversations: ConversationStore,
        outbox: Outbox,
    ) -> Result<Self, MissingEnv> {
        Ok(OperationNotices {
            operations: OperationStore::new(dynamodb.clone(), aws::env("OPERATIONS_TABLE")?),
            merchants,
            conversations,
            outbox,
            relay: MerchantClient::new(),
        })
    }

    /// The operation is read from the table, never taken from the message.
    pub async fn completed(&self, id: &str, operation_id: &str) -> Result<(), Failure> {
        let operation = self
            .operations
            .get(operation_id)
            .await?
            .ok_or_else(|| Failure::poison(format!("unknown operation {operation_id:?}")))?;
        let provider = self.merchants.get(&operation.merchant_id).await.map_err(|p| p.to_string())?;
        // The payer first: a product server that is down must not keep the payer uninformed.
        let message = NewMessage {
            id: id.to_owned(),
            kind: "transfer.completed".into(),
            text: operation.message_text(&provider.name),
            data: operation.view(),
        };
        self.conversations
            .post(&operation.payer, &Counterparty::merchant(&provider.id), &message, operation.created_at)
            .await?;
        if !self.outbox.step_done(id, "webhook").await? {
            let keys = self.merchants.keys(&provider).await.map_err(|p| p.to_string())?;
            let body = serde_json::json!({"event_id": id, "kind": "transfer.completed", "operation": operation.view()});
            self.relay.webhook(&provider, &keys, body.to_string().as_bytes(), now_epoch_seconds()).await?;
            self.outbox.mark(id, "webhook").await?;
        }
        Ok(())
    }
}
