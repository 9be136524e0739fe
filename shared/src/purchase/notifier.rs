//! The notifier (template.yaml `NotifierFunction`): consumes the notifications queue and sweeps the
//! outbox on a schedule.
//!
//! - `order.settled`: a signed webhook to the merchant's product server (`<url>/webhooks`), then
//!   the message in the user's conversation with the merchant. Each step is recorded on the outbox
//!   item, so a redelivery repeats only what had not happened; the item is deleted when both did.
//! - `order.expire`: releases the hold of an order the merchant never decided, and carries out a
//!   decision recorded on an order whose settlement failed (a confirm is captured, never released).
//! - `order.refunded`: the message in the user's conversation with the merchant.
//! - `miniapp.outcome`: the outcome's message in the user's conversation with the mini-app (if
//!   the request's own call did not post it), then the signed outcome to the app's server.
//! - `offline.expired`: a signed webhook telling the merchant that an offline payment expired.
//!
//! A failed message is reported in `batchItemFailures` and made invisible for longer at each
//! attempt (exponential backoff); after `maxReceiveCount` attempts SQS moves it to the DLQ.
//!
//! The sweeper sends again what the outbox holds overdue, whichever queue it is for, and moves
//! what its sweeps never got handled to that queue's dead-letter queue (`crate::outbox`).

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use serde_json::Value;

use super::relay::MerchantClient;
use super::service::{OrderEvent, PurchaseService};
use super::store::OrderStore;
use super::{AtExpiry, Order, OrderState, at_expiry};
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::keys::KeyService;
use crate::ledger::store::LedgerStore;
use crate::merchant::directory::MerchantDirectory;
use crate::merchant::store::MerchantStore;
use crate::miniapp::MiniAppEvent;
use crate::miniapp::relay::MiniAppClient;
use crate::miniapp::store::{MiniAppDirectory, MiniAppStore, RequestStore};
use crate::offline::payment::{PaymentState, PaymentStore};
use crate::offline::settlement::OfflineEvent;
use crate::outbox::{DeadLetterQueues, Outbox};

/// Everything the notifications queue carries.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Notification {
    Order(OrderEvent),
    MiniApp(MiniAppEvent),
    Offline(OfflineEvent),
}

impl Notification {
    fn id(&self) -> &str {
        match self {
            Notification::Order(event) => event.id(),
            Notification::MiniApp(MiniAppEvent::Outcome { id, .. }) => id,
            Notification::Offline(OfflineEvent::Expired { id, .. } | OfflineEvent::WaitingForFunds { id, .. }) => id,
        }
    }
}

pub struct Notifier {
    service: PurchaseService,
    merchants: MerchantDirectory,
    conversations: ConversationStore,
    relay: MerchantClient,
    miniapps: MiniAppDirectory,
    miniapp_requests: RequestStore,
    miniapp_client: MiniAppClient,
    offline_payments: PaymentStore,
    sqs: aws_sdk_sqs::Client,
    backoff_seconds: i32,
    sweep_grace_seconds: i64,
    dead_letters: DeadLetterQueues,
}

fn number<T: std::str::FromStr>(name: &str) -> Result<T, MissingEnv> {
    aws::env(name)?.parse().map_err(|_| MissingEnv(format!("{name} (a number)")))
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

impl Notifier {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let keys = KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?);
        Ok(Notifier {
            service: PurchaseService {
                orders: OrderStore::new(dynamodb.clone(), aws::env("ORDERS_TABLE")?),
                ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
                outbox: Outbox::new(dynamodb.clone(), sqs.clone(), aws::env("OUTBOX_TABLE")?),
                queue_url: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            },
            merchants: MerchantDirectory::new(
                MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
                keys.clone(),
            ),
            miniapps: MiniAppDirectory::new(MiniAppStore::new(dynamodb.clone(), aws::env("MINIAPPS_TABLE")?), keys),
            miniapp_requests: RequestStore::new(dynamodb.clone(), aws::env("MINIAPP_REQUESTS_TABLE")?),
            miniapp_client: MiniAppClient::default(),
            offline_payments: PaymentStore::new(
                dynamodb.clone(),
                aws::env("OFFLINE_PAYMENTS_TABLE")?,
                aws::env("OFFLINE_CODES_TABLE")?,
            ),
            conversations: ConversationStore::new(dynamodb, aws::env("CONVERSATIONS_TABLE")?),
            relay: MerchantClient::new(),
            sqs,
            backoff_seconds: number("WEBHOOK_BACKOFF_SECONDS")?,
            sweep_grace_seconds: number("OUTBOX_SWEEP_GRACE_SECONDS")?,
            dead_letters: DeadLetterQueues::parse(&aws::env("OUTBOX_DEAD_LETTER_QUEUES")?)
                .map_err(|e| MissingEnv(format!("OUTBOX_DEAD_LETTER_QUEUES ({e})")))?,
        })
    }

    /// An SQS batch (`Records`) or the schedule's tick (anything else: sweep the outbox, moving what
    /// its sweeps never got handled to its queue's dead-letter queue).
    pub async fn handle(&self, event: Value) -> Result<Value, lambda_runtime::Error> {
        if event.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event)?;
            return Ok(serde_json::to_value(self.batch(batch).await)?);
        }
        let swept =
            self.service.outbox.sweep(now_epoch_seconds(), self.sweep_grace_seconds, &self.dead_letters).await?;
        Ok(serde_json::json!({ "swept": swept.sent, "dead": swept.dead }))
    }

    /// The batch's messages run concurrently: one slow product server must not time the whole
    /// batch out (which would redeliver every message in it).
    async fn batch(&self, batch: SqsEvent) -> SqsBatchResponse {
        let outcomes = futures_util::future::join_all(batch.records.into_iter().map(|record| async move {
            let outcome = match serde_json::from_str::<Notification>(record.body.as_deref().unwrap_or_default()) {
                Ok(event) => self.process(event).await.map_err(|reason| (reason, true)),
                // A poison message fails the same way every time: no backoff, straight on to the DLQ.
                Err(e) => Err((format!("not a notification: {e}"), false)),
            };
            (record, outcome)
        }))
        .await;
        let mut response = SqsBatchResponse::default();
        for (record, outcome) in outcomes {
            let id = record.message_id.clone().unwrap_or_default();
            if let Err((reason, transient)) = outcome {
                tracing::warn!(message = %id, %reason, "notification failed; SQS will redeliver it");
                if transient {
                    self.back_off(&record.receipt_handle, record.attributes.get("ApproximateReceiveCount")).await;
                }
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    /// Waits longer before each new attempt: base, 2 x base, 4 x base ... at most 15 minutes.
    async fn back_off(&self, receipt: &Option<String>, receive_count: Option<&String>) {
        let attempts: u32 = receive_count.and_then(|c| c.parse().ok()).unwrap_or(1);
        let delay = self.backoff_seconds.saturating_mul(1 << attempts.saturating_sub(1).min(10)).min(900);
        if let Some(receipt) = receipt {
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.service.queue_url)
                .receipt_handle(receipt)
                .visibility_timeout(delay)
                .send()
                .await;
        }
    }

    async fn process(&self, event: Notification) -> Result<(), String> {
        let outbox = &self.service.outbox;
        // Handled already (its outbox item is gone): a duplicate delivery.
        if !outbox.pending(event.id()).await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        match &event {
            Notification::Order(OrderEvent::Settled { id, order }) => self.settled(id, order).await?,
            Notification::Order(OrderEvent::Expire { order_id, .. }) => self.expire(order_id).await?,
            Notification::Order(OrderEvent::Refunded { id, order, amount }) => self.refunded(id, order, amount).await?,
            Notification::MiniApp(MiniAppEvent::Outcome { id, request_id }) => {
                self.miniapp_outcome(id, request_id).await?
            }
            Notification::Offline(OfflineEvent::Expired { id, payment_id }) => {
                self.offline_expired(id, payment_id).await?
            }
            Notification::Offline(OfflineEvent::WaitingForFunds { user, message, at, .. }) => {
                self.conversations
                    .post(user, &Counterparty::platform(), message, *at)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        outbox.done(event.id()).await.map_err(|e| e.to_string())
    }

    /// The payment is read from the table, never taken from the message.
    async fn offline_expired(&self, id: &str, payment_id: &str) -> Result<(), String> {
        let payment =
            self.offline_payments.get(payment_id).await.map_err(|e| e.to_string())?.ok_or("unknown offline payment")?;
        if payment.state != PaymentState::Expired {
            return Err(format!("offline payment {payment_id} is {}, not expired", payment.state.as_str()));
        }
        let merchant = self.merchants.get(&payment.merchant_id).await.map_err(|e| e.to_string())?;
        let keys = self.merchants.keys(&merchant).await.map_err(|e| e.to_string())?;
        let body = serde_json::json!({ "event_id": id, "kind": "offline.expired", "payment": payment.view() });
        self.relay.webhook(&merchant, &keys, body.to_string().as_bytes(), now_epoch_seconds()).await
    }

    /// The request is read from the table, never taken from the message: the table says how it ended.
    async fn miniapp_outcome(&self, id: &str, request_id: &str) -> Result<(), String> {
        let fail = |e: crate::dynamo::StoreError| e.to_string();
        let request = self.miniapp_requests.get(request_id).await.map_err(fail)?.ok_or("unknown mini-app request")?;
        let app = self.miniapps.store.get(&request.app_id).await.map_err(fail)?.ok_or("unknown mini-app")?;
        // As the request's call posts it: same id, same time, so whichever comes first is the one.
        let message = request.message(&app.interface.title);
        self.conversations
            .post(&request.user, &Counterparty::mini_app(&app.id), &message, request.created_at)
            .await
            .map_err(fail)?;
        if !self.service.outbox.step_done(id, "outcome").await.map_err(fail)? {
            let keys = self.miniapps.keys(&app).await.map_err(fail)?;
            self.miniapp_client.notify(&app, &keys, &request.notice(), now_epoch_seconds()).await?;
            self.service.outbox.mark(id, "outcome").await.map_err(fail)?;
        }
        Ok(())
    }

    /// The order is read from the table, never taken from the message: the table says how it ended.
    async fn settled(&self, id: &str, notice: &Value) -> Result<(), String> {
        let order_id = notice["id"].as_str().ok_or("the notice names no order")?;
        let order = self.service.orders.get(order_id).await.map_err(|e| e.to_string())?.ok_or("unknown order")?;
        if order.state == OrderState::AwaitingMerchant {
            return Err(format!("order {order_id} is not settled"));
        }
        let merchant = self.merchants.get(&order.merchant_id).await.map_err(|e| e.to_string())?;
        let now = now_epoch_seconds();
        // The user first: a product server that is down must not keep the user uninformed.
        let (kind, text) = conversation_text(&order, &merchant.name);
        let message = NewMessage { id: id.to_owned(), kind, text, data: order.view() };
        self.conversations
            .post(&order.user, &Counterparty::merchant(&merchant.id), &message, now)
            .await
            .map_err(|e| e.to_string())?;
        if !self.service.outbox.step_done(id, "webhook").await.map_err(|e| e.to_string())? {
            let keys = self.merchants.keys(&merchant).await.map_err(|e| e.to_string())?;
            let body = serde_json::json!({ "event_id": id, "kind": "order.settled", "order": order.notice() });
            self.relay.webhook(&merchant, &keys, body.to_string().as_bytes(), now).await?;
            self.service.outbox.mark(id, "webhook").await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The merchant asked for the refund and got its answer at once: only the user is told.
    async fn refunded(&self, id: &str, notice: &Value, amount: &crate::money::Money) -> Result<(), String> {
        let order_id = notice["id"].as_str().ok_or("the notice names no order")?;
        let order = self.service.orders.get(order_id).await.map_err(|e| e.to_string())?.ok_or("unknown order")?;
        let merchant = self.merchants.get(&order.merchant_id).await.map_err(|e| e.to_string())?;
        let text =
            format!("{} refunded {} {} for {}.", merchant.name, amount.amount(), amount.currency(), order.product_id);
        let message = NewMessage { id: id.to_owned(), kind: "purchase.refunded".into(), text, data: notice.clone() };
        self.conversations
            .post(&order.user, &Counterparty::merchant(&merchant.id), &message, now_epoch_seconds())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn expire(&self, order_id: &str) -> Result<(), String> {
        let now = now_epoch_seconds();
        let Some(order) = self.service.orders.get(order_id).await.map_err(|e| e.to_string())? else { return Ok(()) };
        match at_expiry(&order, now) {
            AtExpiry::Settled => return Ok(()),
            AtExpiry::NotDue(seconds) => return Err(format!("order {order_id} expires in {seconds} s")),
            AtExpiry::Recorded(decision) => {
                tracing::info!(order = %order_id, decision = decision.as_str(), "carrying out the merchant's recorded decision");
            }
            AtExpiry::Release => {}
        }
        // The settlement judges the order by its recorded decision, if any.
        let settled = self.service.settle(order, None, now).await.map_err(|p| p.to_string())?;
        // A decision recorded since the order was read stopped the release: the next attempt carries it out.
        if settled.state == OrderState::AwaitingMerchant {
            return Err(format!("order {order_id} is still awaiting its settlement"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Money;

    #[test]
    fn each_outcome_reads_clearly() {
        let mut order = Order {
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
        };
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
}
