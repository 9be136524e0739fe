//! Buying: an order created with its hold (`PurchaseService::create`), then forwarded to the merchant's product server and
//! settled at once if the merchant decides at once. The purchases route buys through it, and so do
//! payment sessions (`crate::payment_session`), whose confirmation is a purchase.

use super::relay::{MerchantReply, OrderDetails, forward};
use super::service::{Answer, PurchaseService};
use super::{Order, OrderState};
use crate::aws::{self, MissingEnv};
use crate::keys::KeyService;
use crate::merchant::Merchant;
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;
use crate::merchant::store::MerchantStore;
use crate::outbox::Outbox;

pub struct Checkout {
    pub service: PurchaseService,
    pub merchants: MerchantDirectory,
    relay: MerchantClient,
}

impl Checkout {
    pub fn from_env(config: &aws_config::SdkConfig, dynamodb: &aws_sdk_dynamodb::Client) -> Result<Self, MissingEnv> {
        let keys = KeyService::new(aws_sdk_kms::Client::new(config), aws::env("PARTY_KEYS_KEY_ID")?);
        let outbox = Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?);
        Ok(Checkout {
            service: PurchaseService::from_env(dynamodb, outbox)?,
            merchants: MerchantDirectory::new(MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?), keys),
            relay: MerchantClient::new(),
        })
    }

    /// Sends an awaiting order to the product server and settles it if the merchant decided at
    /// once. The money is held by now, so whatever goes wrong here the answer is the order as it
    /// stands (with the merchant's decision recorded on it if its settlement failed). Sending it
    /// again (a retry) is safe: the merchant sees the same order id, and a settlement is applied once.
    /// With an `answer`, a settlement records it in its transaction: the order, and whether it did.
    pub async fn forward(
        &self,
        merchant: &Merchant,
        order: Order,
        now: i64,
        answer: Option<Answer<'_>>,
    ) -> (Order, bool) {
        let unsettled = |order| (order, false);
        if order.state != OrderState::AwaitingMerchant {
            return unsettled(order);
        }
        let keys = match self.merchants.keys(merchant).await {
            Ok(keys) => keys,
            Err(problem) => {
                tracing::error!(order = %order.id, %problem, "cannot unwrap the merchant's key; the order waits");
                return unsettled(order);
            }
        };
        let details = OrderDetails {
            order_id: order.id.clone(),
            user: order.user.clone(),
            product_id: order.product_id.clone(),
            quantity: order.quantity,
            amount: order.amount,
            expires_at: order.expires_at,
            callback_path: format!("/merchant/orders/{}/decision", order.id),
        };
        let decision = match forward(&self.relay, merchant, &keys, &details, now).await {
            MerchantReply::Decided(decision) => decision,
            MerchantReply::Pending => return unsettled(order),
            MerchantReply::NoAnswer(reason) => {
                tracing::warn!(order = %order.id, merchant = %merchant.id, %reason, "no usable answer from the product server; the order waits");
                return unsettled(order);
            }
        };
        match self.service.settle_answering(order.clone(), Some(decision), now, answer).await {
            Ok(settled) => settled,
            Err(problem) => {
                tracing::warn!(order = %order.id, %problem, "the merchant's answer could not settle the order");
                unsettled(self.service.orders.get(&order.id).await.ok().flatten().unwrap_or(order))
            }
        }
    }
}
