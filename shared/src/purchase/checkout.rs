//! Buying: an order created with its hold (`PurchaseService::create`), then forwarded to the merchant's product server and
//! settled at once if the merchant decides at once. The purchases route buys through it, and so do
//! payment sessions (`crate::payment_session`), whose confirmation is a purchase.

use super::relay::{MerchantReply, OrderDetails, forward};
use super::service::{Answer, PurchaseService};
use super::{Decision, Order, OrderState};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::keys::KeyService;
use crate::ledger::store::TransferError;
use crate::merchant::Merchant;
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;
use crate::merchant::store::{MERCHANT_CURRENT, MerchantStore};
use crate::outbox::Outbox;

/// How often a hold is tried with its merchant read afresh after finding it changed.
const MERCHANT_CHANGES: usize = 3;

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

    /// Opens `wanted`'s order to an active merchant, with its hold (`PurchaseService::create`). The
    /// merchant is the copy this process keeps; the hold's transaction checks it is still current
    /// and, if it changed, it is read afresh and the hold tried again. The merchant as the hold
    /// found it, the order as it stands, and whether this call created it.
    pub async fn open(
        &self,
        merchant_id: &str,
        now: i64,
        wanted: impl Fn(&Merchant) -> Result<Order, Problem>,
    ) -> Result<(Merchant, Order, bool), Problem> {
        for _ in 0..MERCHANT_CHANGES {
            let merchant = self.merchants.active_kept(merchant_id).await?;
            let order = wanted(&merchant)?;
            match self.service.create(&order, vec![self.merchants.current_check(&merchant)?], now).await {
                Ok((order, true)) => return Ok((merchant, order, true)),
                // An earlier attempt's order: this hold committed nothing, so checked nothing
                // either. The merchant is read as it is now, as a first attempt would.
                Ok((order, false)) => {
                    self.merchants.forget(merchant_id);
                    return Ok((self.merchants.active_kept(merchant_id).await?, order, false));
                }
                Err(TransferError::Rejected(MERCHANT_CURRENT)) => self.merchants.forget(merchant_id),
                Err(e) => return Err(e.into()),
            }
        }
        // Changed at every try (a merchant's key rotated again and again): nothing was held.
        Err(TransferError::Contention.into())
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
        // A suspension that lands while the product server answers stops a capture here, as the
        // decision route refuses a suspended merchant's confirm: the order waits for its expiry.
        let guard = match decision {
            Decision::Confirm => match self.merchants.active_check(&merchant.id) {
                Ok(check) => vec![check],
                Err(e) => {
                    tracing::error!(order = %order.id, error = %e, "cannot build the merchant's check; the order waits");
                    return unsettled(order);
                }
            },
            Decision::Decline => vec![],
        };
        match self.service.settle_answering(order.clone(), Some(decision), now, answer, guard).await {
            Ok(settled) => settled,
            Err(problem) => {
                tracing::warn!(order = %order.id, %problem, "the merchant's answer could not settle the order");
                unsettled(self.service.orders.get(&order.id).await.ok().flatten().unwrap_or(order))
            }
        }
    }
}
