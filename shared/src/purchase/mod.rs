//! Purchase relay (capability 4): a user buys from a merchant's product server. The money is held
//! from the wallet into a hold account for the order when the order is created, captured to the
//! merchant when the merchant confirms, released back when it declines or the order expires.
//! Every one of those steps is one ledger transaction that also moves the order's state, so an
//! order never pays twice and never both pays and releases.
//!
//! A merchant's decision is not lost when its transaction fails (contention, an outage): it is
//! then recorded on the order, which stays `awaiting_merchant` until a retry or, at the latest, its
//! expiry check carries the decision out. A recorded confirm is captured, never released: the
//! merchant may have shipped.

pub mod api;
pub mod checkout;
pub mod notices;
pub mod relay;
pub mod service;
pub mod store;

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::ledger::{Account, AccountId, Books, Transfer, TransferRecord, shown};
use crate::merchant::Merchant;
use crate::money::{Money, MoneyInput};
use crate::problem::{Code, catalogue};
use crate::reconcile::Violation;

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

    /// The merchant's decision that leads to this state (`None`: undecided or expired).
    pub fn decision(self) -> Option<Decision> {
        match self {
            OrderState::Paid => Some(Decision::Confirm),
            OrderState::Declined => Some(Decision::Decline),
            OrderState::AwaitingMerchant | OrderState::Expired => None,
        }
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
    /// The merchant's decision, recorded on an awaiting order when its settlement could not
    /// commit: the order is settled by it and by nothing else.
    pub decision: Option<Decision>,
}

impl Order {
    pub fn hold_account(&self) -> AccountId {
        AccountId::hold(&self.id)
    }

    /// The order's hold account as the order's own writes leave it, `held` or not yet: new and
    /// empty before the hold; holding the amount, with its one posting, until the order settles.
    /// Nothing else posts to it, so the ledger takes it as known instead of reading it (its
    /// sequence condition still checks it).
    pub fn hold_account_state(&self, held: bool) -> Account {
        let (balance, sequence) = if held { (self.amount.amount(), 1) } else { (Decimal::ZERO, 0) };
        Account { id: self.hold_account(), currency: self.amount.currency(), balance, sequence }
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
    pub fn notice(&self) -> OrderNotice {
        OrderNotice { order: self.view(), user: self.user.clone() }
    }

    /// `decision` is the merchant's, once known: an order still `awaiting_merchant` with a decision
    /// is being settled by it.
    pub fn view(&self) -> OrderView {
        let decision = if self.state == OrderState::AwaitingMerchant { self.decision } else { self.state.decision() };
        OrderView {
            id: self.id.clone(),
            merchant_id: self.merchant_id.clone(),
            product_id: self.product_id.clone(),
            quantity: self.quantity,
            amount: self.amount,
            state: self.state.as_str(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            refundable: self.amount.currency().rescale(self.refundable).to_string(),
            decision: decision.map(Decision::as_str),
            decline_code: (self.state == OrderState::Declined).then_some(catalogue::MERCHANT_DECLINED.code()),
        }
    }
}

/// An order as its buyer (and its merchant) see it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OrderView {
    pub id: String,
    pub merchant_id: String,
    pub product_id: String,
    pub quantity: u32,
    pub amount: Money,
    /// `awaiting_merchant`, `paid`, `declined` or `expired`.
    pub state: &'static str,
    pub created_at: i64,
    /// When an order still awaiting its merchant is given up and its money given back.
    pub expires_at: i64,
    /// What may still be refunded, in the currency's scale ("0.00", not "0").
    pub refundable: String,
    /// The merchant's decision (`confirm` or `decline`), once made or recorded.
    pub decision: Option<&'static str>,
    /// The merchant's refusal as a code the error-flow table answers: never retried.
    pub decline_code: Option<&'static str>,
}

/// An order as its merchant's webhook tells it: with its buyer.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OrderNotice {
    #[serde(flatten)]
    pub order: OrderView,
    /// The buyer's account on this platform.
    pub user: String,
}

/// A client's purchase request.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    pub merchant_id: String,
    /// 1 to 100 printable characters.
    #[cfg_attr(
        feature = "openapi",
        schemars(length(min = 1, max = 100), regex(pattern = r"^[^\u0000-\u001f\u007f-\u009f]*$"))
    )]
    pub product_id: String,
    #[serde(deserialize_with = "crate::http::whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = 1000)))]
    pub quantity: u32,
    /// The price the client was shown: the merchant's product server must ask exactly this.
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
        let characters = self.product_id.chars().count();
        if !(1..=100).contains(&characters) || self.product_id.chars().any(char::is_control) {
            return Err(Problem::new(
                catalogue::INVALID_PRODUCT_ID,
                "product_id must be 1 to 100 printable characters",
            ));
        }
        if !(1..=1000).contains(&self.quantity) {
            return Err(Problem::new(catalogue::INVALID_QUANTITY, "quantity must be from 1 to 1000"));
        }
        Ok(ValidPurchase {
            amount: self.amount.validate()?,
            merchant_id: self.merchant_id,
            product_id: self.product_id,
            quantity: self.quantity,
        })
    }
}

impl ValidPurchase {
    /// Refuses an amount in another currency than `merchant` sells in.
    pub fn check_currency(&self, merchant: &Merchant) -> Result<(), Problem> {
        if self.amount.currency() == merchant.currency {
            return Ok(());
        }
        Err(Problem::new(
            catalogue::CURRENCY_NOT_ACCEPTED,
            format!("merchant {} sells in {}, not {}", merchant.id, merchant.currency, self.amount.currency()),
        ))
    }
}

/// What a merchant decided about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
// Named apart from a payment session's `Decision` (`crate::payment_session::policy`).
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "OrderDecision"))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Confirm,
    Decline,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Confirm => "confirm",
            Decision::Decline => "decline",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Decision::Confirm, Decision::Decline].into_iter().find(|d| d.as_str() == text)
    }
}

/// What settling an order in its current state means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Move the money and the order to `to`.
    Apply { to: OrderState, transfer: Transfer },
    /// The order already reached this outcome: nothing to do, answer as before.
    AlreadyDone,
}

/// Why a decision (or the expiry) cannot settle an order as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    /// The merchant's other decision is recorded on the order and is being carried out.
    #[error("the merchant's {} of order {order} is recorded and is being carried out", recorded.as_str())]
    AlreadyDecided { order: String, recorded: Decision },
    #[error("order {order} is already {}", state.as_str())]
    AlreadySettled { order: String, state: OrderState },
    /// A confirm past the order's `expires_at`, before its expiry check has run.
    #[error("order {0} expired before it was confirmed")]
    Expired(String),
    /// The expiry check ran early.
    #[error("order {0} has not expired yet")]
    NotExpired(String),
    /// The order's own amount and accounts make no transfer: a corrupt order, ours to fix.
    #[error("order {order} makes no transfer: {source}")]
    NoTransfer { order: String, source: crate::ledger::LedgerError },
}

impl SettleError {
    pub fn code(&self) -> &'static Code {
        match self {
            SettleError::AlreadyDecided { .. } => catalogue::ORDER_ALREADY_DECIDED,
            SettleError::AlreadySettled { .. } => catalogue::ORDER_ALREADY_SETTLED,
            SettleError::Expired(_) => catalogue::ORDER_EXPIRED,
            SettleError::NotExpired(_) => catalogue::ORDER_NOT_EXPIRED,
            SettleError::NoTransfer { .. } => catalogue::INTERNAL,
        }
    }
}

impl From<SettleError> for Problem {
    fn from(e: SettleError) -> Self {
        match e {
            SettleError::NoTransfer { .. } => Problem::internal(e),
            _ => Problem::new(e.code(), e.to_string()),
        }
    }
}

/// The outcome of `decision` (or of the expiry, `None`) for `order` at `now`. A decision recorded
/// on the order is the merchant's word: the expiry carries it out, even past the order's expiry,
/// and the opposite decision is refused.
pub fn settle(order: &Order, decision: Option<Decision>, now: i64) -> Result<Settlement, SettleError> {
    if order.state == OrderState::AwaitingMerchant
        && let (Some(recorded), Some(asked)) = (order.decision, decision)
        && recorded != asked
    {
        return Err(SettleError::AlreadyDecided { order: order.id.clone(), recorded });
    }
    let recorded = order.decision.filter(|_| order.state == OrderState::AwaitingMerchant);
    let to = match decision.or(recorded) {
        Some(Decision::Confirm) => OrderState::Paid,
        Some(Decision::Decline) => OrderState::Declined,
        None => OrderState::Expired,
    };
    if order.state == to {
        return Ok(Settlement::AlreadyDone);
    }
    if order.state != OrderState::AwaitingMerchant {
        return Err(SettleError::AlreadySettled { order: order.id.clone(), state: order.state });
    }
    match to {
        OrderState::Paid if now >= order.expires_at && recorded.is_none() => {
            return Err(SettleError::Expired(order.id.clone()));
        }
        OrderState::Expired if now < order.expires_at => {
            return Err(SettleError::NotExpired(order.id.clone()));
        }
        _ => {}
    }
    let transfer =
        settlement(order, to).map_err(|source| SettleError::NoTransfer { order: order.id.clone(), source })?;
    Ok(Settlement::Apply { to, transfer })
}

/// The transfer that settles `order`'s hold as `to`: captured to the merchant if paid, released to
/// the user otherwise. One id for capture and release alike: whichever comes first is the only one
/// that can apply.
fn settlement(order: &Order, to: OrderState) -> Result<Transfer, crate::ledger::LedgerError> {
    let (destination, kind) = match to {
        OrderState::Paid => (AccountId::merchant(&order.merchant_id), "purchase.capture"),
        _ => (AccountId::wallet(&order.user), "purchase.release"),
    };
    Transfer::between(
        format!("{}/settle", order.id),
        order.amount,
        order.hold_account(),
        destination,
        kind,
        format!("order/{}", order.id),
    )
}

/// What an order's expiry check does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtExpiry {
    /// Settled already: nothing to do.
    Settled,
    /// The merchant's decision is recorded (its settlement failed): carry it out now, due or not.
    Recorded(Decision),
    /// Undecided and not due for this many seconds: check again then.
    NotDue(i64),
    /// Undecided and due: release the hold.
    Release,
}

pub fn at_expiry(order: &Order, now: i64) -> AtExpiry {
    match (order.state, order.decision) {
        (OrderState::AwaitingMerchant, Some(recorded)) => AtExpiry::Recorded(recorded),
        (OrderState::AwaitingMerchant, None) if now < order.expires_at => AtExpiry::NotDue(order.expires_at - now),
        (OrderState::AwaitingMerchant, None) => AtExpiry::Release,
        _ => AtExpiry::Settled,
    }
}

/// A transfer as a finding names it.
/// What must hold of each order and the money it moved (`crate::reconcile`; `books` holds at least
/// the orders' hold accounts, and `orders` every order whose money they show): its hold took its
/// amount from its user's wallet; a paid order's hold was captured whole to its merchant, a declined
/// or expired one's released whole to its user, an awaiting one's neither (the hold account holds
/// exactly the amount until it settles, nothing after), and it awaits no longer than `slack`
/// seconds past its expiry (its expiry check is on its way); a paid order's `refundable` is what its
/// refunds left; and no purchase money moved for an order not recorded.
pub fn check_orders(orders: &[Order], books: &Books, now: i64, slack: i64) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let mut refunded: HashMap<&str, Decimal> = HashMap::new();
    for refund in books.transfers.iter().filter(|t| t.kind == "purchase.refund") {
        *refunded.entry(&refund.cause).or_default() += refund.amount();
    }
    let holds: HashMap<&AccountId, Decimal> = books.accounts.iter().map(|a| (&a.id, a.balance)).collect();
    let mut violations = Vec::new();
    for order in orders {
        let mut problem = |text: String| violations.push(Violation::record(format!("order {}", order.id), text));
        let moved = |id: &str| transfers.get(format!("{}/{id}", order.id).as_str()).copied();
        let hold = moved("hold");
        if hold != order.hold().ok().map(|t| TransferRecord::of(&t)).as_ref() {
            problem(format!("has no hold of its amount from its user's wallet (its hold: {})", shown(hold)));
        }
        let settled = moved("settle");
        let expected = match order.state {
            OrderState::AwaitingMerchant => None,
            to => settlement(order, to).ok().map(|t| TransferRecord::of(&t)),
        };
        if settled != expected.as_ref() {
            problem(format!("is {} but its hold's settlement is {}", order.state.as_str(), shown(settled)));
        }
        let held = holds.get(&order.hold_account()).copied().unwrap_or_default();
        let holds_now = if order.state == OrderState::AwaitingMerchant { order.amount.amount() } else { Decimal::ZERO };
        if held != holds_now {
            problem(format!("is {} but its hold account holds {held}", order.state.as_str()));
        }
        if order.state == OrderState::AwaitingMerchant && now > order.expires_at + slack {
            problem(format!("still awaits the merchant {} s after its expiry", now - order.expires_at));
        }
        let left =
            order.amount.amount() - refunded.get(format!("order/{}", order.id).as_str()).copied().unwrap_or_default();
        if order.state == OrderState::Paid && order.refundable != left {
            problem(format!("may refund {} but its refunds left {left}", order.refundable));
        }
    }
    let recorded: std::collections::HashSet<String> = orders.iter().map(|o| format!("order/{}", o.id)).collect();
    for transfer in books.transfers.iter().filter(|t| t.kind.starts_with("purchase.") && !recorded.contains(&t.cause)) {
        violations.push(Violation::record(format!("transfer {}", transfer.id), "moved money for no recorded order"));
    }
    violations
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
            decision: None,
        }
    }

    #[test]
    fn the_hold_account_assumed_before_the_hold_plans_into_the_one_assumed_after_it() {
        let order = order(OrderState::AwaitingMerchant);
        let wallet = Account {
            id: AccountId::wallet("alice"),
            currency: order.amount.currency(),
            balance: Decimal::new(5000, 2),
            sequence: 7,
        };
        let before =
            HashMap::from([(wallet.id.clone(), wallet), (order.hold_account(), order.hold_account_state(false))]);
        let planned = crate::ledger::plan(&order.hold().unwrap(), &before, 100).unwrap();
        let (hold, _) = planned.iter().find(|(update, _)| update.account == order.hold_account()).unwrap();
        // New: the write's condition is that it does not exist yet.
        assert_eq!(hold.expected_sequence, 0);
        let after = order.hold_account_state(true);
        assert_eq!((hold.balance, hold.sequence), (after.balance, after.sequence));
        // And the settlement, planned from it, empties it.
        let capture = settlement(&order, OrderState::Paid).unwrap();
        let current = HashMap::from([(after.id.clone(), after)]);
        let planned = crate::ledger::plan(&capture, &current, 200).unwrap();
        let (hold, _) = planned.iter().find(|(update, _)| update.account == order.hold_account()).unwrap();
        assert_eq!((hold.expected_sequence, hold.balance), (1, Decimal::ZERO));
    }

    fn recorded(decision: Decision) -> Order {
        Order { decision: Some(decision), ..order(OrderState::AwaitingMerchant) }
    }

    /// The books of `order` after its hold, its settlement as `settled` (if any) and refunds of
    /// `refunds` cents: the transfers and the hold account's balance.
    fn books_of(order: &Order, settled: Option<OrderState>, refunds: &[i64]) -> Books {
        let mut transfers = vec![TransferRecord::of(&order.hold().unwrap())];
        transfers.extend(settled.map(|to| TransferRecord::of(&settlement(order, to).unwrap())));
        for (i, cents) in refunds.iter().enumerate() {
            let refund = Transfer::between(
                format!("{}/refund/{i}", order.id),
                Money::new(Decimal::new(*cents, 2), order.amount.currency()).unwrap(),
                AccountId::merchant(&order.merchant_id),
                AccountId::wallet(&order.user),
                "purchase.refund",
                format!("order/{}", order.id),
            );
            transfers.push(TransferRecord::of(&refund.unwrap()));
        }
        let held = if settled.is_some() { Decimal::ZERO } else { order.amount.amount() };
        let hold = crate::ledger::Account {
            id: order.hold_account(),
            currency: order.amount.currency(),
            balance: held,
            sequence: 1 + u64::from(settled.is_some()),
        };
        Books { transfers, accounts: vec![hold], ..Books::default() }
    }

    #[test]
    fn orders_whose_money_agrees_with_their_state_pass_the_check() {
        let paid = Order { refundable: Decimal::new(1000, 2), ..order(OrderState::Paid) };
        let books = books_of(&paid, Some(OrderState::Paid), &[250]);
        assert_eq!(check_orders(&[paid], &books, 10_000, 60), []);
        let declined = order(OrderState::Declined);
        let books = books_of(&declined, Some(OrderState::Declined), &[]);
        assert_eq!(check_orders(&[declined], &books, 10_000, 60), []);
        let waiting = order(OrderState::AwaitingMerchant);
        let books = books_of(&waiting, None, &[]);
        assert_eq!(check_orders(std::slice::from_ref(&waiting), &books, 760, 60), [], "within its expiry's slack");
        assert_eq!(
            check_orders(&[waiting], &books, 761, 60),
            [Violation::record("order o_1", "still awaits the merchant 61 s after its expiry")]
        );
    }

    #[test]
    fn an_order_whose_money_disagrees_with_its_state_is_found() {
        let paid = Order { refundable: Decimal::new(1250, 2), ..order(OrderState::Paid) };
        assert_eq!(
            check_orders(std::slice::from_ref(&paid), &books_of(&paid, Some(OrderState::Declined), &[]), 0, 60),
            [Violation::record(
                "order o_1",
                "is paid but its hold's settlement is purchase.release of 12.50 USD from hold:o_1 to wallet:alice"
            )]
        );
        assert_eq!(
            check_orders(std::slice::from_ref(&paid), &books_of(&paid, Some(OrderState::Paid), &[100]), 0, 60),
            [Violation::record("order o_1", "may refund 12.50 but its refunds left 11.50")]
        );
        // A capture of the right kind but another amount, or to another merchant.
        let mut books = books_of(&paid, Some(OrderState::Paid), &[]);
        books.transfers[1].legs[1].0 = AccountId::merchant("m_2");
        assert_eq!(
            check_orders(std::slice::from_ref(&paid), &books, 0, 60),
            [Violation::record(
                "order o_1",
                "is paid but its hold's settlement is purchase.capture of 12.50 USD from hold:o_1 to merchant:m_2"
            )]
        );
        // Money left in a settled order's hold account.
        let mut books = books_of(&paid, Some(OrderState::Paid), &[]);
        books.accounts[0].balance = Decimal::new(1, 2);
        assert_eq!(
            check_orders(std::slice::from_ref(&paid), &books, 0, 60),
            [Violation::record("order o_1", "is paid but its hold account holds 0.01")]
        );
        let expired = order(OrderState::Expired);
        assert_eq!(
            check_orders(&[expired], &Books::default(), 0, 60),
            [
                Violation::record("order o_1", "has no hold of its amount from its user's wallet (its hold: none)"),
                Violation::record("order o_1", "is expired but its hold's settlement is none"),
            ]
        );
        // Purchase money moved for an order nobody recorded.
        assert_eq!(
            check_orders(&[], &books_of(&paid, None, &[]), 0, 60),
            [Violation::record("transfer o_1/hold", "moved money for no recorded order")]
        );
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
            settle(&order(OrderState::Paid), Some(Decision::Decline), 200).unwrap_err().code(),
            catalogue::ORDER_ALREADY_SETTLED
        );
        assert_eq!(
            settle(&order(OrderState::Declined), None, 800).unwrap_err().code(),
            catalogue::ORDER_ALREADY_SETTLED
        );
        assert_eq!(settle(&waiting, Some(Decision::Confirm), 700).unwrap_err().code(), catalogue::ORDER_EXPIRED);
        assert_eq!(settle(&waiting, None, 699).unwrap_err().code(), catalogue::ORDER_NOT_EXPIRED);
        assert!(matches!(settle(&waiting, None, 700), Ok(Settlement::Apply { to: OrderState::Expired, .. })));
    }

    #[test]
    fn a_recorded_decision_is_carried_out_and_never_reversed() {
        let confirmed = recorded(Decision::Confirm);
        // Due or not, the expiry check carries it out; past the expiry a confirm still captures.
        assert_eq!(at_expiry(&confirmed, 200), AtExpiry::Recorded(Decision::Confirm));
        for now in [200, 700, 10_000] {
            for asked in [None, Some(Decision::Confirm)] {
                let Ok(Settlement::Apply { to, transfer }) = settle(&confirmed, asked, now) else { panic!("{now}") };
                assert_eq!((to, &transfer.legs[1].account), (OrderState::Paid, &AccountId::merchant("m_1")));
            }
        }
        assert_eq!(
            settle(&confirmed, Some(Decision::Decline), 200).unwrap_err().code(),
            catalogue::ORDER_ALREADY_DECIDED
        );

        let declined = recorded(Decision::Decline);
        assert!(matches!(settle(&declined, None, 800), Ok(Settlement::Apply { to: OrderState::Declined, .. })));
        assert_eq!(
            settle(&declined, Some(Decision::Confirm), 200).unwrap_err().code(),
            catalogue::ORDER_ALREADY_DECIDED
        );

        // Once settled, what was recorded no longer matters.
        let paid = Order { state: OrderState::Paid, ..confirmed.clone() };
        assert_eq!(settle(&paid, Some(Decision::Confirm), 800), Ok(Settlement::AlreadyDone));
        assert_eq!(at_expiry(&paid, 800), AtExpiry::Settled);
        assert_eq!(settle(&paid, Some(Decision::Decline), 800).unwrap_err().code(), catalogue::ORDER_ALREADY_SETTLED);
    }

    #[test]
    fn an_undecided_order_waits_for_its_expiry_then_is_released() {
        let waiting = order(OrderState::AwaitingMerchant);
        assert_eq!(at_expiry(&waiting, 200), AtExpiry::NotDue(500));
        assert_eq!(at_expiry(&waiting, 700), AtExpiry::Release);
        assert_eq!(at_expiry(&order(OrderState::Declined), 700), AtExpiry::Settled);
        let Ok(Settlement::Apply { to, transfer }) = settle(&waiting, None, 700) else { panic!() };
        assert_eq!((to, &transfer.legs[1].account), (OrderState::Expired, &AccountId::wallet("alice")));
    }

    #[test]
    fn the_view_shows_the_merchants_decision_once_known() {
        assert_eq!(order(OrderState::AwaitingMerchant).view().decision, None);
        assert_eq!(recorded(Decision::Confirm).view().decision, Some("confirm"));
        assert_eq!(order(OrderState::Paid).view().decision, Some("confirm"));
        assert_eq!(order(OrderState::Declined).view().decision, Some("decline"));
        assert_eq!(order(OrderState::Expired).view().decision, None);
    }

    fn any_decision() -> impl proptest::strategy::Strategy<Value = Option<Decision>> {
        proptest::sample::select(vec![None, Some(Decision::Confirm), Some(Decision::Decline)])
    }

    proptest::proptest! {
        /// Whatever is asked, whenever: an awaiting order with a recorded decision settles only by
        /// it (a recorded confirm is never released), and its expiry check settles it by it.
        #[test]
        fn a_recorded_decision_is_the_only_outcome(
            recorded_decision in proptest::sample::select(vec![Decision::Confirm, Decision::Decline]),
            asked in any_decision(),
            now in 0i64..1_500,
        ) {
            let order = recorded(recorded_decision);
            let AtExpiry::Recorded(by) = at_expiry(&order, now) else {
                return Err(proptest::test_runner::TestCaseError::fail("a recorded decision waits for nothing"));
            };
            proptest::prop_assert_eq!(by, recorded_decision);
            let by_expiry = settle(&order, Some(by), now);
            let carried_out = matches!(&by_expiry, Ok(Settlement::Apply { to, .. }) if to.decision() == Some(recorded_decision));
            proptest::prop_assert!(carried_out, "{:?}", by_expiry);
            match settle(&order, asked, now) {
                Ok(Settlement::Apply { to, transfer }) => {
                    proptest::prop_assert_eq!(to.decision(), Some(recorded_decision));
                    let released = transfer.legs.iter().any(|l| l.account == AccountId::wallet("alice"));
                    proptest::prop_assert_eq!(released, recorded_decision == Decision::Decline);
                }
                Ok(Settlement::AlreadyDone) => proptest::prop_assert!(false, "an awaiting order is not settled"),
                Err(problem) => {
                    proptest::prop_assert_eq!(problem.code(), catalogue::ORDER_ALREADY_DECIDED);
                    proptest::prop_assert!(asked.is_some() && asked != Some(recorded_decision));
                }
            }
        }
    }
}
