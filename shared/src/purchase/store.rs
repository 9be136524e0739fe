//! Orders in DynamoDB (`OrdersTable`, partition `id`). Every state change is a conditional write
//! meant for the same transaction as the ledger transfer that goes with it; only the record of a
//! merchant's decision whose transaction failed is a write of its own.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, ReturnValue, Update};
use rust_decimal::Decimal;

use super::{Decision, Order, OrderState};
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s, scan_all};
use crate::money::Money;

/// Rule: the order id is new.
pub const ORDER_NEW: &str = "order.new";
/// Rule: the order still awaits the merchant's decision, and a decision recorded on it (its
/// settlement failed) is the one this settlement carries out.
pub const ORDER_AWAITING: &str = "order.awaiting_merchant";
/// Rule: the order is paid and its refundable amount covers the refund.
pub const ORDER_REFUNDABLE: &str = "order.refundable";

#[derive(Clone, Debug)]
pub struct OrderStore {
    client: Client,
    table: String,
}

impl OrderStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        OrderStore { client, table: table.into() }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Order>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(order_from_item).transpose()
    }

    /// Creates the order, only if its id is new.
    /// Every order, for the invariant checker (`crate::purchase::check_orders`).
    pub async fn all(&self) -> Result<Vec<Order>, StoreError> {
        scan_all(&self.client, &self.table).await?.iter().map(order_from_item).collect()
    }

    pub fn create_item(&self, order: &Order) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&order.id))
            .item("user", s(&order.user))
            .item("merchant_id", s(&order.merchant_id))
            .item("product_id", s(&order.product_id))
            .item("quantity", n(order.quantity))
            .item("amount", n(order.amount.amount()))
            .item("currency", s(order.amount.currency().code()))
            .item("state", s(order.state.as_str()))
            .item("created_at", n(order.created_at))
            .item("expires_at", n(order.expires_at))
            .item("refundable", n(order.refundable))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(ORDER_NEW, put))
    }

    /// Moves an awaiting order to `to`; a paid order becomes refundable for its whole amount. A
    /// decision recorded on it since it was read must be this one (a recorded confirm is never
    /// released by an expiry that read the order before it was recorded).
    pub fn settle_item(&self, order: &Order, to: OrderState, at: i64) -> Result<Write, StoreError> {
        let refundable = if to == OrderState::Paid { order.amount.amount() } else { Decimal::ZERO };
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(&order.id))
            .update_expression("SET #state = :to, settled_at = :at, refundable = :refundable")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":awaiting", s(OrderState::AwaitingMerchant.as_str()))
            .expression_attribute_values(":at", n(at))
            .expression_attribute_values(":refundable", n(refundable));
        let update = match to.decision() {
            Some(decision) => update
                .condition_expression("#state = :awaiting AND (attribute_not_exists(decision) OR decision = :decision)")
                .expression_attribute_values(":decision", s(decision.as_str())),
            None => update.condition_expression("#state = :awaiting AND attribute_not_exists(decision)"),
        };
        Ok(Write::update(ORDER_AWAITING, update.build()?))
    }

    /// Records the merchant's `decision` on an awaiting order whose settlement could not commit,
    /// so a retry or the expiry check carries it out. One write of its own (the transaction that
    /// failed may fail again): only if the order still awaits and holds no other decision.
    pub async fn record_decision(&self, id: &str, decision: Decision, at: i64) -> Result<Recording, StoreError> {
        let recorded = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET decision = :decision, decided_at = if_not_exists(decided_at, :at)")
            .condition_expression("#state = :awaiting AND (attribute_not_exists(decision) OR decision = :decision)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":decision", s(decision.as_str()))
            .expression_attribute_values(":awaiting", s(OrderState::AwaitingMerchant.as_str()))
            .expression_attribute_values(":at", n(at))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match recorded {
            Ok(output) if output.attributes().is_some_and(|old| old.contains_key("decision")) => Ok(Recording::Again),
            Ok(_) => Ok(Recording::First),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(Recording::Refused)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Takes `amount` off a paid order's refundable amount, only if it covers it.
    pub fn refund_item(&self, order: &Order, amount: Decimal) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("id", s(&order.id))
            .update_expression("SET refundable = refundable - :amount")
            .condition_expression("#state = :paid AND refundable >= :amount")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":paid", s(OrderState::Paid.as_str()))
            .expression_attribute_values(":amount", n(amount))
            .build()?;
        Ok(Write::update(ORDER_REFUNDABLE, update))
    }
}

/// What `record_decision` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// The decision is recorded now, for the first time.
    First,
    /// It was recorded before (a retry).
    Again,
    /// The order is settled, or holds the other decision: nothing was written.
    Refused,
}

fn order_from_item(item: &Item) -> Result<Order, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("stored order is corrupt: {what}"));
    let currency: crate::money::Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    Ok(Order {
        id: get_s(item, "id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        product_id: get_s(item, "product_id")?.to_owned(),
        quantity: get_n(item, "quantity")?,
        amount: Money::new(get_decimal(item, "amount")?, currency).map_err(|_| corrupt("amount"))?,
        state: OrderState::parse(get_s(item, "state")?).ok_or_else(|| corrupt("state"))?,
        created_at: get_n(item, "created_at")?,
        expires_at: get_n(item, "expires_at")?,
        refundable: currency.rescale(get_decimal(item, "refundable")?),
        decision: match item.get("decision") {
            Some(_) => Some(Decision::parse(get_s(item, "decision")?).ok_or_else(|| corrupt("decision"))?),
            None => None,
        },
    })
}
