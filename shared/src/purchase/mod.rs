//! Purchase relay (capability 4): a user buys from a merchant's product server. The money is held
//! from the wallet into a hold account for the order when the order is created, captured to the
//! merchant when the merchant confirms, released back when it declines or the order expires.
//! Every one of those steps is one ledger transaction that also moves the order's state, so an
//! order never pays twice and never both pays and releases.

pub mod api;
pub mod notifier;
pub mod relay;
pub mod service;
pub mod store;

use lambda_http::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::ledger::{AccountId, Transfer};
use crate::money::{Money, MoneyInput};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    AwaitingMerchant,
    Paid,
    Declined,
    Expired,
}

impl OrderState {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::AwaitingMerchant => "awaiting_merchant",
            OrderState::Paid => "paid",
            OrderState::Declined => "declined",
            OrderState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [OrderState::AwaitingMerchant, OrderState::Paid, OrderState::Declined, OrderState::Expired]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: String,
    pub user: String,
    pub merchant_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub amount: Money,
    pub state: OrderState,
    pub created_at: i64,
    pub expires_at: i64,
    /// What may still be refunded (the paid amount less refunds so far).
    pub refundable: Decimal,
}

impl Order {
    pub fn hold_account(&self) -> AccountId {
        AccountId::hold(&self.id)
    }

    /// The transfer that holds the money when the order is created.
    pub fn hold(&self) -> Result<Transfer, crate::ledger::LedgerError> {
        Transfer::between(
            format!("{}/hold", self.id),
            self.amount,
            AccountId::wallet(&self.user),
            self.hold_account(),
            "purchase.hold",
            format!("order/{}", self.id),
        )
    }

    /// What the merchant's webhook and the user's conversation are told: the order and its user.
    pub fn notice(&self) -> serde_json::Value {
        let mut view = self.view();
        view["user"] = serde_json::json!(self.user);
        view
    }

    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "merchant_id": self.merchant_id,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "amount": self.amount,
            "state": self.state.as_str(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "refundable": self.refundable.to_string(),
        })
    }
}

/// A client's purchase request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    pub merchant_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub amount: MoneyInput,
}

/// A purchase request that passed validation.
pub struct ValidPurchase {
    pub merchant_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub amount: Money,
}

impl PurchaseRequest {
    pub fn validate(self) -> Result<ValidPurchase, Problem> {
        crate::ids::check("merchant_id", &self.merchant_id)?;
        if self.product_id.is_empty() || self.product_id.len() > 100 || self.product_id.chars().any(char::is_control) {
            return Err(Problem::bad_request("invalid_product_id", "product_id must be 1 to 100 printable characters"));
        }
        if !(1..=1000).contains(&self.quantity) {
            return Err(Problem::bad_request("invalid_quantity", "quantity must be from 1 to 1000"));
        }
        Ok(ValidPurchase {
            amount: self.amount.validate()?,
            merchant_id: self.merchant_id,
            product_id: self.product_id,
            quantity: self.quantity,
        })
    }
}

/// What a merchant decided about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Confirm,
    Decline,
}

/// What settling an order in its current state means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Move the money and the order to `to`.
    Apply { to: OrderState, transfer: Transfer },
    /// The order already reached this outcome: nothing to do, answer as before.
    AlreadyDone,
}

/// The outcome of `decision` (or of the expiry, `None`) for `order` at `now`.
pub fn settle(order: &Order, decision: Option<Decision>, now: i64) -> Result<Settlement, Problem> {
    let to = match decision {
        Some(Decision::Confirm) => OrderState::Paid,
        Some(Decision::Decline) => OrderState::Declined,
        None => OrderState::Expired,
    };
    if order.state == to {
        return Ok(Settlement::AlreadyDone);
    }
    if order.state != OrderState::AwaitingMerchant {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "order_already_settled",
            format!("order {} is already {}", order.id, order.state.as_str()),
        ));
    }
    match to {
        OrderState::Paid if now >= order.expires_at => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "order_expired",
                format!("order {} expired before it was confirmed", order.id),
            ));
        }
        OrderState::Expired if now < order.expires_at => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "order_not_expired",
                format!("order {} has not expired yet", order.id),
            ));
        }
        _ => {}
    }
    let (destination, kind) = match to {
        OrderState::Paid => (AccountId::merchant(&order.merchant_id), "purchase.capture"),
        _ => (AccountId::wallet(&order.user), "purchase.release"),
    };
    // One id for capture and release alike: whichever comes first is the only one that can apply.
    let transfer = Transfer::between(
        format!("{}/settle", order.id),
        order.amount,
        order.hold_account(),
        destination,
        kind,
        format!("order/{}", order.id),
    )
    .map_err(Problem::internal)?;
    Ok(Settlement::Apply { to, transfer })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(state: OrderState) -> Order {
        Order {
            id: "o_1".into(),
            user: "alice".into(),
            merchant_id: "m_1".into(),
            product_id: "tea".into(),
            quantity: 1,
            amount: Money::parse("12.50", "USD").unwrap(),
            state,
            created_at: 100,
            expires_at: 700,
            refundable: Decimal::ZERO,
        }
    }

    #[test]
    fn an_order_settles_once_one_way() {
        let waiting = order(OrderState::AwaitingMerchant);
        let Settlement::Apply { to, transfer } = settle(&waiting, Some(Decision::Confirm), 200).unwrap() else {
            panic!()
        };
        assert_eq!(to, OrderState::Paid);
        assert_eq!(transfer.legs[0].account, AccountId::hold("o_1"));
        assert_eq!(transfer.legs[1].account, AccountId::merchant("m_1"));
        let Settlement::Apply { transfer: release, .. } = settle(&waiting, Some(Decision::Decline), 200).unwrap()
        else {
            panic!()
        };
        assert_eq!(release.legs[1].account, AccountId::wallet("alice"));
        assert_eq!(release.id, transfer.id, "capture and release exclude each other by id");
        assert_eq!(settle(&order(OrderState::Paid), Some(Decision::Confirm), 200), Ok(Settlement::AlreadyDone));
        assert_eq!(
            settle(&order(OrderState::Paid), Some(Decision::Decline), 200).unwrap_err().code,
            "order_already_settled"
        );
        assert_eq!(settle(&order(OrderState::Declined), None, 800).unwrap_err().code, "order_already_settled");
        assert_eq!(settle(&waiting, Some(Decision::Confirm), 700).unwrap_err().code, "order_expired");
        assert_eq!(settle(&waiting, None, 699).unwrap_err().code, "order_not_expired");
        assert!(matches!(settle(&waiting, None, 700), Ok(Settlement::Apply { to: OrderState::Expired, .. })));
    }
}
