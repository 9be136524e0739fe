//! What the notifier (`crate::notifier`) does with the notifications queue's operation messages:
//!
//! - `transfer.changed`: the message in the payer's conversation with the provider about the
//!   operation's new state (completed, held, posted, voided, released), then a signed webhook to
//!   the provider's product server (`<url>/webhooks`, kind `transfer.<state>`), recorded on the
//!   outbox item so a redelivery does not tell the provider twice.
//! - `transfer.release`: releases a two-phase hold nobody settled by its expiry (once: it shares
//!   its settlement with a post or void).
//! - `transfer.refunded`: the message in the payer's conversation with the provider.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::operation::{Operation, OperationState, OperationView, Settlement};
use super::service::{Moved, OperationService};
use crate::aws::MissingEnv;
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;
use crate::money::Money;
use crate::outbox::Outbox;

/// The signed webhooks this module sends (`crate::openapi`): one kind per state.
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = {
    use crate::openapi::{WebhookDoc, schema};
    const fn told(name: &'static str, summary: &'static str) -> WebhookDoc {
        WebhookDoc { name, summary, body: schema::<TransferWebhook>, answer: None }
    }
    &[
        told(
            "transfer.completed",
            "to the provider's product server, <product_server_url>/webhooks, signed with the provider's key: an operation of a signed transfer instruction completed (the money moved to the provider); sent at least once, event_id naming it",
        ),
        told(
            "transfer.held",
            "to the provider's product server, <product_server_url>/webhooks, signed with the provider's key: a two-phase operation's amount is held until the provider posts or voids it, or its hold expires; sent at least once, event_id naming it",
        ),
        told(
            "transfer.posted",
            "to the provider's product server, <product_server_url>/webhooks, signed with the provider's key: the provider took `paid` of a hold, the rest went back to the payer; sent at least once, event_id naming it",
        ),
        told(
            "transfer.voided",
            "to the provider's product server, <product_server_url>/webhooks, signed with the provider's key: the provider voided a hold, all of it went back; sent at least once, event_id naming it",
        ),
        told(
            "transfer.released",
            "to the provider's product server, <product_server_url>/webhooks, signed with the provider's key: nobody settled a hold by its expiry, all of it went back; sent at least once, event_id naming it",
        ),
    ]
};

/// The provider's webhook about the state one of its operations reached (as it stood then).
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct TransferWebhook {
    /// The same on each delivery of this notice.
    pub event_id: String,
    pub kind: TransferKind,
    pub operation: OperationView,
}

/// `transfer.<state>`: the state the operation reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(inline))]
pub enum TransferKind {
    #[serde(rename = "transfer.completed")]
    Completed,
    #[serde(rename = "transfer.held")]
    Held,
    #[serde(rename = "transfer.posted")]
    Posted,
    #[serde(rename = "transfer.voided")]
    Voided,
    #[serde(rename = "transfer.released")]
    Released,
}

pub struct OperationNotices {
    service: OperationService,
    merchants: Arc<MerchantDirectory>,
    conversations: ConversationStore,
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
            service: OperationService::from_env(dynamodb, outbox)?,
            merchants,
            conversations,
            relay: MerchantClient::new(),
        })
    }

    /// The operation is read from the table, never taken from the message.
    async fn operation(&self, id: &str) -> Result<Operation, Failure> {
        self.service.operations.get(id).await?.ok_or_else(|| Failure::poison(format!("unknown operation {id:?}")))
    }

    /// The payer first: a product server that is down must not keep the payer uninformed.
    pub async fn changed(&self, id: &str, operation_id: &str, state: &str) -> Result<(), Failure> {
        let kind: TransferKind = serde_json::from_value(format!("transfer.{state}").into())
            .map_err(|_| Failure::poison(format!("unknown operation state {state:?}")))?;
        let current = self.operation(operation_id).await?;
        // Told as it stood in that state (a hold's notice may come after its settlement).
        let told = match kind {
            TransferKind::Held => {
                Operation { state: OperationState::Held, paid: rust_decimal::Decimal::ZERO, ..current.clone() }
            }
            _ => current.clone(),
        };
        let provider = self.merchants.get(&current.merchant_id).await.map_err(|p| p.to_string())?;
        let message = NewMessage {
            id: id.to_owned(),
            kind: format!("transfer.{state}"),
            text: told.message_text(&provider.name),
            data: told.view(),
        };
        self.conversations
            .post(&current.payer, &Counterparty::merchant(&provider.id), &message, now_epoch_seconds())
            .await?;
        if !self.service.outbox.step_done(id, "webhook").await? {
            let keys = self.merchants.keys(&provider).await.map_err(|p| p.to_string())?;
            let body = TransferWebhook { event_id: id.to_owned(), kind, operation: OperationView::from(&told) };
            self.relay.webhook(&provider, &keys, &body, now_epoch_seconds()).await?;
            self.service.outbox.mark(id, "webhook").await?;
        }
        Ok(())
    }

    /// Releases the hold if it still stands at its expiry; one settled meanwhile is left as it is.
    pub async fn release(&self, operation_id: &str) -> Result<(), Failure> {
        let operation = self.operation(operation_id).await?;
        let now = now_epoch_seconds();
        match operation.hold_expires_at {
            Some(expires_at) if operation.state == OperationState::Held && now < expires_at => {
                Err(format!("operation {operation_id}'s hold stands until {expires_at}").into())
            }
            _ => match self.service.settle(&operation, Settlement::Release, vec![], now).await {
                Ok(Moved::Now(_) | Moved::Before(_)) => Ok(()),
                Err(problem) => Err(problem.to_string().into()),
            },
        }
    }

    pub async fn refunded(&self, id: &str, operation_id: &str, amount: &Money) -> Result<(), Failure> {
        let operation = self.operation(operation_id).await?;
        let provider = self.merchants.get(&operation.merchant_id).await.map_err(|p| p.to_string())?;
        let text = format!("{} refunded {amount} for {} x {}.", provider.name, operation.quantity, operation.title);
        let message = NewMessage { id: id.to_owned(), kind: "transfer.refunded".into(), text, data: operation.view() };
        self.conversations
            .post(&operation.payer, &Counterparty::merchant(&provider.id), &message, now_epoch_seconds())
            .await?;
        Ok(())
    }
}
