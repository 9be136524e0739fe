//! What the notifier (`crate::notifier`) does with the notifications queue's offline messages:
//!
//! - `offline.expired`: a signed webhook telling the merchant that an offline payment expired.
//! - `offline.waiting_for_funds`: the payer's top-up link in their conversation with the platform.

use std::sync::Arc;

use super::payment::{PaymentState, PaymentStore};
use crate::aws::{self, MissingEnv};
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;

pub struct OfflineNotices {
    payments: PaymentStore,
    merchants: Arc<MerchantDirectory>,
    conversations: ConversationStore,
    relay: MerchantClient,
}

impl OfflineNotices {
    pub fn from_env(
        dynamodb: &aws_sdk_dynamodb::Client,
        merchants: Arc<MerchantDirectory>,
        conversations: ConversationStore,
    ) -> Result<Self, MissingEnv> {
        Ok(OfflineNotices {
            payments: PaymentStore::new(
                dynamodb.clone(),
                aws::env("OFFLINE_PAYMENTS_TABLE")?,
                aws::env("OFFLINE_CODES_TABLE")?,
            ),
            merchants,
            conversations,
            relay: MerchantClient::new(),
        })
    }

    /// The payment is read from the table, never taken from the message.
    pub async fn expired(&self, id: &str, payment_id: &str) -> Result<(), Failure> {
        let payment = self
            .payments
            .get(payment_id)
            .await?
            .ok_or_else(|| Failure::poison(format!("unknown offline payment {payment_id:?}")))?;
        if payment.state != PaymentState::Expired {
            return Err(format!("offline payment {payment_id} is {}, not expired", payment.state.as_str()).into());
        }
        let merchant = self.merchants.get(&payment.merchant_id).await.map_err(|p| p.to_string())?;
        let keys = self.merchants.keys(&merchant).await.map_err(|p| p.to_string())?;
        let body = serde_json::json!({ "event_id": id, "kind": "offline.expired", "payment": payment.view() });
        Ok(self.relay.webhook(&merchant, &keys, body.to_string().as_bytes(), now_epoch_seconds()).await?)
    }

    /// The message carries the link: it is posted as the settlement function wrote it.
    pub async fn waiting_for_funds(&self, user: &str, message: &NewMessage, at: i64) -> Result<(), Failure> {
        self.conversations.post(user, &Counterparty::platform(), message, at).await?;
        Ok(())
    }
}
