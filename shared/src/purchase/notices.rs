//! What the notifier (`crate::notifier`) does with the notifications queue's order messages:
//!
//! - `order.settled`: a signed webhook to the merchant's product server (`<url>/webhooks`), then
//!   the message in the user's conversation with the merchant. Each step is recorded on the outbox
//!   item, so a redelivery repeats only what had not happened.
//! - `order.expire`: releases the hold of an order the merchant never decided, and carries out a
//!   decision recorded on an order whose settlement failed (a confirm is captured, never released).
//! - `order.refunded`: the message in the user's conversation with the merchant.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::service::PurchaseService;
use super::{AtExpiry, Order, OrderNotice, OrderState, at_expiry};
use crate::aws::MissingEnv;
use crate::batch::Failure;
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::merchant::client::MerchantClient;
use crate::merchant::directory::MerchantDirectory;
use crate::money::Money;
use crate::outbox::Outbox;

/// The signed webhooks this module sends (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = &[crate::openapi::WebhookDoc {
    name: "order.settled",
    summary: "to the merchant's product server, <product_server_url>/webhooks, signed with the merchant's key: how one of its orders ended (paid, declined or expired); sent at least once, event_id naming it",
    body: crate::openapi::schema::<OrderSettledWebhook>,
    answer: None,
}];

/// The merchant's webhook about a settled order.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OrderSettledWebhook {
    /// The same on each delivery of this notice.
    pub event_id: String,
    pub kind: OrderSettledKind,
    pub order: OrderNotice,
}

#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(inline))]
pub enum OrderSettledKind {
    #[serde(rename = "order.settled")]
    OrderSettled,
}

pub struct OrderNotices {
    service: PurchaseService,
    merchants: Arc<MerchantDirectory>,
    conversations: ConversationStore,
    relay: MerchantClient,
}

/// What the user reads in the conversation with the merchant.
pub fn conversation_text(order: &Order, merchant_name: &str) -> (String, String) {
    let amount = format!("{} {}", order.amount.amount(), order.amount.currency());
    match order.state {
        OrderState::Paid => (
            "purchase.paid".into(),
            format!("Paid {amount} to {merchant_name} for {} x {}.", order.quantity, order.product_id),
        ),
        OrderState::Declined => (
            "purchase.declined".into(),
            format!("{merchant_name} declined your order for {}; {amount} is back in your wallet.", order.product_id),
        ),
        OrderState::Expired => (
            "purchase.expired".into(),
            format!("Your order for {} at {merchant_name} expired; {amount} is back in your wallet.", order.product_id),
        ),
        OrderState::AwaitingMerchant => ("purchase.waiting".into(), format!("Waiting for {merchant_name}.")),
    }
}

impl OrderNotices {
    /// The merchants' directory (and its key cache) and the conversations are the notifier's, shared
    /// with the other capabilities' notices.
    pub fn from_env(
        dynamodb: &aws_sdk_dynamodb::Client,
        merchants: Arc<MerchantDirectory>,
        conversations: ConversationStore,
        outbox: Outbox,
    ) -> Result<Self, MissingEnv> {
        Ok(OrderNotices {
            service: PurchaseService::from_env(dynamodb, outbox)?,
            merchants,
            conversations,
            relay: MerchantClient::new(),
        })
    }

    /// The order is read from the table, never taken from the message: the table says how it ended.
    pub async fn settled(&self, id: &str, notice: &Value) -> Result<(), Failure> {
        let order = self.order(notice).await?;
        if order.state == OrderState::AwaitingMerchant {
            return Err(format!("order {} is not settled", order.id).into());
        }
        let merchant = self.merchants.get(&order.merchant_id).await.map_err(|p| p.to_string())?;
        let now = now_epoch_seconds();
        // The user first: a product server that is down must not keep the user uninformed.
        let (kind, text) = conversation_text(&order, &merchant.name);
        let message = NewMessage { id: id.to_owned(), kind, text, data: serde_json::json!(order.view()) };
        self.conversations.post(&order.user, &Counterparty::merchant(&merchant.id), &message, now).await?;
        if !self.service.outbox.step_done(id, "webhook").await? {
            let keys = self.merchants.keys(&merchant).await.map_err(|p| p.to_string())?;
            let body = OrderSettledWebhook {
                event_id: id.to_owned(),
                kind: OrderSettledKind::OrderSettled,
                order: order.notice(),
            };
            self.relay.webhook(&merchant, &keys, &body, now).await?;
            self.service.outbox.mark(id, "webhook").await?;
        }
        Ok(())
    }

    /// The merchant asked for the refund and got its answer at once: only the user is told.
    pub async fn refunded(&self, id: &str, notice: &Value, amount: &Money) -> Result<(), Failure> {
        let order = self.order(notice).await?;
        let merchant = self.merchants.get(&order.merchant_id).await.map_err(|p| p.to_string())?;
        let text =
            format!("{} refunded {} {} for {}.", merchant.name, amount.amount(), amount.currency(), order.product_id);
        let message = NewMessage { id: id.to_owned(), kind: "purchase.refunded".into(), text, data: notice.clone() };
        self.conversations
            .post(&order.user, &Counterparty::merchant(&merchant.id), &message, now_epoch_seconds())
            .await
            .map(|_| ())
            .map_err(Failure::from)
    }

    /// The order a notice names; a notice naming none, or an order that does not exist, can never
    /// be delivered.
    async fn order(&self, notice: &Value) -> Result<Order, Failure> {
        let order_id = notice["id"].as_str().ok_or_else(|| Failure::poison("the notice names no order"))?;
        self.service.orders.get(order_id).await?.ok_or_else(|| Failure::poison(format!("unknown order {order_id:?}")))
    }

    pub async fn expire(&self, order_id: &str) -> Result<(), Failure> {
        let now = now_epoch_seconds();
        let Some(order) = self.service.orders.get(order_id).await? else { return Ok(()) };
        match at_expiry(&order, now) {
            AtExpiry::Settled => return Ok(()),
            AtExpiry::NotDue(seconds) => return Err(format!("order {order_id} expires in {seconds} s").into()),
            AtExpiry::Recorded(decision) => {
                tracing::info!(order = %order_id, decision = decision.as_str(), "carrying out the merchant's recorded decision");
            }
            AtExpiry::Release => {}
        }
        // The settlement judges the order by its recorded decision, if any.
        let settled = self.service.settle(order, None, now).await.map_err(|p| p.to_string())?;
        // A decision recorded since the order was read stopped the release: the next attempt carries it out.
        if settled.state == OrderState::AwaitingMerchant {
            return Err(format!("order {order_id} is still awaiting its settlement").into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    fn order() -> Order {
        Order {
            id: "o_1".into(),
            user: "alice".into(),
            merchant_id: "m_1".into(),
            product_id: "green-tea".into(),
            quantity: 2,
            amount: Money::parse("12.5", "USD").unwrap(),
            state: OrderState::Paid,
            created_at: 0,
            expires_at: 600,
            refundable: rust_decimal::Decimal::ZERO,
            decision: None,
        }
    }

    #[test]
    fn each_outcome_reads_clearly() {
        let mut order = order();
        assert_eq!(conversation_text(&order, "Tea Shop").1, "Paid 12.50 USD to Tea Shop for 2 x green-tea.");
        order.state = OrderState::Expired;
        assert_eq!(
            conversation_text(&order, "Tea Shop"),
            (
                "purchase.expired".into(),
                "Your order for green-tea at Tea Shop expired; 12.50 USD is back in your wallet.".into()
            )
        );
    }

    #[test]
    fn the_webhook_tells_the_order_with_its_buyer() {
        let order = order();
        let body = OrderSettledWebhook {
            event_id: "o_1/settled".into(),
            kind: OrderSettledKind::OrderSettled,
            order: order.notice(),
        };
        assert_eq!(
            serde_json::json!(body),
            serde_json::json!({"event_id": "o_1/settled", "kind": "order.settled", "order": {
                "id": "o_1", "merchant_id": "m_1", "product_id": "green-tea", "quantity": 2,
                "amount": order.amount, "state": "paid", "created_at": 0, "expires_at": 600,
                "refundable": "0.00", "decision": "confirm", "decline_code": null, "user": "alice"}})
        );
    }
}
