//! What the notifier (`crate::notifier`) does with the notifications queue's offline messages:
//!
//! - `offline.expired`: a signed webhook telling the merchant that an offline payment expired.
//! - `offline.waiting_for_funds`: the payer's top-up link in their conversation with the platform.

use std::sync::Arc;

use serde::Serialize;

use super::payment::{OfflinePaymentView, PaymentState, PaymentStore};
use crate::aws::{self, MissingEnv};
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;

/// The signed webhooks this module sends (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = &[crate::openapi::WebhookDoc {
    name: "offline.expired",
    summary: "to the merchant's product server, <product_server_url>/webhooks, signed with the merchant's key: an offline payment that waited for the payer's top-up expired, nothing was paid; sent at least once, event_id naming it",
    body: crate::openapi::schema::<OfflineExpiredWebhook>,
    answer: None,
}];

/// The merchant's webhook about an offline payment that expired.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OfflineExpiredWebhook {
    /// The same on each delivery of this notice.
    pub event_id: String,
    pub kind: OfflineExpiredKind,
    pub payment: OfflinePaymentView,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(inline))]
pub enum OfflineExpiredKind {
    #[serde(rename = "offline.expired")]
    OfflineExpired,
}

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
        let body = OfflineExpiredWebhook {
            event_id: id.to_owned(),
            kind: OfflineExpiredKind::OfflineExpired,
            payment: payment.view(),
        };
        Ok(self.relay.webhook(&merchant, &keys, &body, now_epoch_seconds()).await?)
    }

    /// The message carries the link: it is posted as the settlement function wrote it.
    pub async fn waiting_for_funds(&self, user: &str, message: &NewMessage, at: i64) -> Result<(), Failure> {
        self.conversations.post(user, &Counterparty::platform(), message, at).await?;
        Ok(())
    }
}
