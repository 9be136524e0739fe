//! What the purchases API and the notifier both do to orders: create one with its hold, and settle
//! one (confirm, decline, expire). Each is ONE transaction of ledger legs, the order's new state and
//! the outbox message it implies, then the message is sent. A merchant's decision whose transaction
//! fails is recorded on the order instead, and carried out by a retry or the order's expiry check.

use super::store::{ORDER_NEW, ORDER_REFUNDABLE, OrderStore, Recording};
use super::{Decision, Order, OrderState, Settlement, settle};
use serde_json::json;

use crate::Problem;
use crate::attention::{AttentionStore, Element, Held, HeldMoney};
use crate::dynamo::{StoreError, Write};
use crate::idempotency::store::CLAIM_HELD;
use crate::idempotency::{in_flight, key_reused};
use crate::ledger::LedgerError;
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::ledger::{AccountId, Transfer};
use crate::merchant::store::MERCHANT_ACTIVE;
use crate::merchant::suspended_refund;
use crate::money::Money;
use crate::outbox::{Outbox, OutboxMessage};
use crate::problem::catalogue;
use crate::queues::NotificationMessage;

/// SQS's longest delay: an order's expiry check is due then at the latest and re-checks after.
const MAX_DELAY_SECONDS: i64 = 900;

/// How soon a recorded decision is tried again (by an early copy of the order's expiry check):
/// long enough for contention to pass, well before the order expires.
const SETTLEMENT_RETRY_SECONDS: i64 = 5;

pub struct PurchaseService {
    pub orders: OrderStore,
    pub ledger: LedgerStore,
    pub outbox: Outbox,
    pub queue_url: String,
    /// The buyer's home: a hold awaiting its merchant, then a declined or expired order, is their
    /// attention item, written with the order's own changes.
    attention: AttentionStore,
}

/// The id of an order's element on its buyer's home.
pub fn attention_id(order_id: &str) -> String {
    format!("order:{order_id}")
}

/// What `order` (in its state) needs its buyer to see, if anything: a paid order needs nothing.
fn element(order: &Order, now: i64) -> Option<Element> {
    let (kind, reason, held) = match order.state {
        OrderState::AwaitingMerchant => (
            "purchase.awaiting_merchant",
            format!("{} is held until {} confirms your order", order.amount, order.merchant_id),
            Held::Until(Some(order.expires_at)),
        ),
        OrderState::Declined => (
            "purchase.declined",
            format!("{} declined your order: {} is back in your wallet", order.merchant_id, order.amount),
            Held::GivenBack,
        ),
        OrderState::Expired => (
            "purchase.expired",
            format!(
                "{} did not confirm your order in time: {} is back in your wallet",
                order.merchant_id, order.amount
            ),
            Held::GivenBack,
        ),
        OrderState::Paid => return None,
    };
    let held = HeldMoney {
        id: attention_id(&order.id),
        kind,
        reason,
        data: json!({"order": order.view()}),
        path: format!("/purchases/{}", order.id),
        held,
        explain: json!({"rule": "an order not paid yet, or not paid", "inputs": {"order": order.id, "state": order.state.as_str()}}),
    };
    Some(held.element(now))
}

/// The write that records a route's answer for the order as it is left (`settle_answering`).
pub type Answer<'a> = &'a (dyn Fn(&Order) -> Result<Write, Problem> + Sync);

pub fn unknown_order(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_ORDER, format!("no order {id:?}"))
}

impl PurchaseService {
    pub fn from_env(dynamodb: &aws_sdk_dynamodb::Client, outbox: Outbox) -> Result<Self, crate::aws::MissingEnv> {
        Ok(PurchaseService {
            orders: OrderStore::new(dynamodb.clone(), crate::aws::env("ORDERS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), crate::aws::env("LEDGER_TABLE")?),
            outbox,
            queue_url: crate::aws::env("NOTIFICATIONS_QUEUE_URL")?,
            attention: AttentionStore::new(dynamodb.clone(), crate::aws::env("HOME_TABLE")?),
        })
    }

    fn message(&self, event: &NotificationMessage, delay_seconds: i64) -> Result<OutboxMessage, StoreError> {
        event
            .outbox(&self.queue_url, delay_seconds.clamp(0, MAX_DELAY_SECONDS) as i32)
            .map_err(|e| StoreError::caused("the notification could not be written", e))
    }

    /// The order's expiry check, due in `delay_seconds`. Its id is the order's: the notifier
    /// handles it once, however many copies are sent.
    fn expire_message(&self, order: &Order, delay_seconds: i64) -> Result<OutboxMessage, StoreError> {
        self.message(
            &NotificationMessage::OrderExpire { id: format!("{}/expire", order.id), order_id: order.id.clone() },
            delay_seconds,
        )
    }

    /// Holds the amount and records the order (with `with`, in the same transaction), with its
    /// expiry check on the way: the order as it stands, and whether this call created it.
    pub async fn create(&self, order: &Order, with: Vec<Write>, now: i64) -> Result<(Order, bool), TransferError> {
        let expire = self.expire_message(order, order.expires_at - now + 1)?;
        let hold = order.hold()?;
        let mut writes =
            vec![self.orders.create_item(order)?, self.outbox.put_item(&expire, now)?, self.home_item(order, now)?];
        writes.extend(with);
        // The order is new (its write's condition says so), and so is its hold account: not read.
        match self.ledger.apply_assuming(&hold, writes, now, &[order.hold_account_state(false)]).await {
            // Only the call that committed the message sends it (a crash is the sweeper's case).
            // The order is as this call wrote it: no need to read it back.
            Ok(Applied::Now) => {
                self.outbox.send(&expire).await;
                return Ok((order.clone(), true));
            }
            Ok(Applied::Already) => {}
            // An earlier attempt created the order (and its expiry check).
            Err(TransferError::Rejected(ORDER_NEW)) => {}
            Err(e) => return Err(e),
        }
        Ok((self.orders.get(&order.id).await?.unwrap_or_else(|| order.clone()), false))
    }

    /// The write that puts `order`'s element on its buyer's home, or removes it (paid).
    fn home_item(&self, order: &Order, now: i64) -> Result<Write, StoreError> {
        match element(order, now) {
            Some(element) => self.attention.put_item(&order.user, &element),
            None => self.attention.delete_item(&order.user, &attention_id(&order.id)),
        }
    }

    /// Settles `order` by `decision` (`None`: expiry). A settlement that already happened (a retry,
    /// a duplicate callback) answers with the order as it is; the opposite one is refused. A
    /// decision whose transaction fails is recorded on the order, which is answered still
    /// `awaiting_merchant` with that `decision`: a retry or the expiry check carries it out.
    pub async fn settle(&self, order: Order, decision: Option<Decision>, now: i64) -> Result<Order, Problem> {
        Ok(self.settle_answering(order, decision, now, None).await?.0)
    }

    /// `settle`, recording a route's answer in the settlement's own transaction (`answer` gives
    /// its write for the order as settled): the order, and whether its answer was recorded so.
    /// If the key's claim is no longer this request's, the settlement goes ahead without the answer.
    pub async fn settle_answering(
        &self,
        order: Order,
        decision: Option<Decision>,
        now: i64,
        answer: Option<Answer<'_>>,
    ) -> Result<(Order, bool), Problem> {
        let Settlement::Apply { to, transfer } = settle(&order, decision, now)? else { return Ok((order, false)) };
        let mut settled = order.clone();
        settled.state = to;
        if to == OrderState::Paid {
            settled.refundable = order.amount.amount();
        }
        let notice = self.message(
            &NotificationMessage::OrderSettled { id: format!("{}/settled", order.id), order: json!(settled.notice()) },
            0,
        )?;
        let mut with = vec![
            self.orders.settle_item(&order, to, now)?,
            self.outbox.put_item(&notice, now)?,
            self.home_item(&settled, now)?,
        ];
        // The money must not wait for its answer's record: without it, it is recorded after.
        let answer = match answer.map(|answer| answer(&settled)) {
            Some(Ok(write)) => {
                with.push(write);
                true
            }
            Some(Err(problem)) => {
                tracing::error!(order = %order.id, %problem, "the answer cannot be written with the settlement");
                false
            }
            None => false,
        };
        // An order awaiting its merchant has its hold account as its hold left it: not read.
        let assumed =
            if order.state == OrderState::AwaitingMerchant { vec![order.hold_account_state(true)] } else { vec![] };
        match self.ledger.apply_assuming(&transfer, with, now, &assumed).await {
            // Only the winner sends: a loser's notice would describe an outcome that did not happen.
            // The winner's order is as it wrote it: no need to read it back.
            Ok(Applied::Now) => {
                self.outbox.send(&notice).await;
                return Ok((settled, answer));
            }
            // Another attempt of the request holds its key now: the money must not wait for that.
            Err(TransferError::Rejected(CLAIM_HELD)) if answer => {
                return Box::pin(self.settle_answering(order, decision, now, None)).await;
            }
            Ok(Applied::Already) | Err(TransferError::Rejected(_)) => {}
            // The merchant decided (it may ship): its decision must outlive the failed transaction.
            Err(e) => match decision {
                Some(decision) => {
                    if let Some(recorded) = self.record(&order, decision, e, now).await? {
                        return Ok((recorded, false));
                    }
                }
                None => return Err(Problem::from(e)),
            },
        }
        let current = self.orders.get(&order.id).await?.ok_or_else(|| unknown_order(&order.id))?;
        // Another settlement won the race: this one is refused unless it was the same.
        if current.state != to {
            settle(&current, decision, now)?;
        }
        Ok((current, false))
    }

    /// Records `decision`, whose transaction failed, on the order: the order as it leaves it, or
    /// `None` if the order changed meanwhile (settled, by that very transaction perhaps, or the
    /// other decision is recorded), to be judged as it is now.
    async fn record(
        &self,
        order: &Order,
        decision: Decision,
        failure: TransferError,
        now: i64,
    ) -> Result<Option<Order>, Problem> {
        tracing::warn!(order = %order.id, decision = decision.as_str(), error = %failure, "the settlement failed; recording the merchant's decision");
        match self.orders.record_decision(&order.id, decision, now).await {
            // The first record sends an early copy of the expiry check, which carries it out soon;
            // only the first, so failing retries do not multiply messages. If it is lost, the
            // expiry check itself still comes.
            Ok(Recording::First) => self.outbox.send(&self.expire_message(order, SETTLEMENT_RETRY_SECONDS)?).await,
            Ok(Recording::Again) => {}
            Ok(Recording::Refused) => return Ok(None),
            Err(e) => {
                tracing::error!(order = %order.id, error = %e, "the merchant's decision could not be recorded either");
                return Err(Problem::from(failure));
            }
        }
        Ok(Some(Order { decision: Some(decision), ..order.clone() }))
    }

    /// Pays `amount` of a paid order back from the merchant to the buyer's wallet, never more than
    /// is still refundable. `refund_id` comes from the merchant's Idempotency-Key, so a retried
    /// refund is the same transfer. `finish` gives the item that records the route's answer for the
    /// order as the refund leaves it; it commits in the same transaction as the money.
    pub async fn refund(
        &self,
        order: &Order,
        amount: Money,
        refund_id: &str,
        now: i64,
        merchant_active: Write,
        finish: impl FnOnce(&Order) -> Result<Write, Problem>,
    ) -> Result<Refund, Problem> {
        let id = format!("{}/refund/{refund_id}", order.id);
        // A retry of a refund that already moved the money (its answer's record expired) is that
        // refund; the same key reused for another amount is another request, refused.
        if let Some(moved) = self.ledger.transfer_amount(&id).await? {
            return already_refunded(order, moved, amount);
        }
        if order.state != OrderState::Paid {
            return Err(Problem::new(
                catalogue::ORDER_NOT_PAID,
                format!("order {} is {}", order.id, order.state.as_str()),
            ));
        }
        if amount.currency() != order.amount.currency() {
            return Err(Problem::new(
                catalogue::CURRENCY_MISMATCH,
                format!("order {} was paid in {}", order.id, order.amount.currency()),
            ));
        }
        let too_much = |refundable: rust_decimal::Decimal| {
            Problem::new(
                catalogue::REFUND_EXCEEDS_PAID,
                format!("{} is more than the {refundable} still refundable on order {}", amount.amount(), order.id),
            )
            .with("refundable", refundable.to_string())
        };
        if amount.amount() > order.refundable {
            return Err(too_much(order.refundable));
        }
        let transfer = Transfer::between(
            id.clone(),
            amount,
            AccountId::merchant(&order.merchant_id),
            AccountId::wallet(&order.user),
            "purchase.refund",
            format!("order/{}", order.id),
        )
        .map_err(Problem::internal)?;
        let mut after = order.clone();
        after.refundable -= amount.amount();
        let notice = self
            .message(&NotificationMessage::OrderRefunded { id: id.clone(), order: json!(after.notice()), amount }, 0)?;
        let with = vec![
            self.orders.refund_item(order, amount.amount())?,
            self.outbox.put_item(&notice, now)?,
            finish(&after)?,
            // A suspension that lands after the route's check stops the refund here.
            merchant_active,
        ];
        match self.ledger.apply(&transfer, with, now).await {
            Ok(Applied::Now) => {
                self.outbox.send(&notice).await;
                Ok(Refund::Done(after))
            }
            // Moved meanwhile by another attempt of this request: answer with the order as it is
            // now, not as it was read before the refund.
            Ok(Applied::Already) => {
                let moved =
                    self.ledger.transfer_amount(&id).await?.ok_or_else(|| Problem::internal("refund vanished"))?;
                let current = self.orders.get(&order.id).await?.ok_or_else(|| unknown_order(&order.id))?;
                already_refunded(&current, moved, amount)
            }
            // The order changed since it was read (another refund): judge again against it.
            Err(TransferError::Rejected(CLAIM_HELD)) => Err(in_flight()),
            Err(TransferError::Rejected(MERCHANT_ACTIVE)) => Err(suspended_refund(&order.merchant_id)),
            Err(TransferError::Rejected(ORDER_REFUNDABLE)) => {
                let current = self.orders.get(&order.id).await?.ok_or_else(|| unknown_order(&order.id))?;
                Err(too_much(current.refundable))
            }
            Err(TransferError::Ledger(LedgerError::InsufficientFunds { available, .. })) => Err(Problem::new(
                catalogue::MERCHANT_INSUFFICIENT_FUNDS,
                format!("the merchant's account holds {available}, not enough for this refund"),
            )),
            Err(e) => Err(Problem::from(e)),
        }
    }
}

/// A refund whose transfer exists: this request's retry if it asked for what moved.
fn already_refunded(order: &Order, moved: Money, asked: Money) -> Result<Refund, Problem> {
    if moved == asked { Ok(Refund::Already(order.clone())) } else { Err(key_reused()) }
}

/// How a refund went.
pub enum Refund {
    /// This call moved the money; the order as it leaves it (its answer is recorded).
    Done(Order),
    /// It had moved before (a retry): the order as it is.
    Already(Order),
}
