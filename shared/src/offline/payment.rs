//! Offline payments (`OfflinePaymentsTable`, partition `id`) and spent codes (`OfflineCodesTable`,
//! partition `<device key id>#<counter>`, expired by TTL once no code that old can be presented).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Put, Update};
use serde::Serialize;

use super::topup::TopUp;
use super::{CLOCK_SKEW_SECONDS, OFFLINE_WINDOW_SECONDS, OfflineCode};
use crate::dynamo::{Item, StoreError, Write, get_decimal, get_n, get_s, n, s, scan_all};
use crate::ledger::Books;
use crate::money::{Currency, Money};
use crate::reconcile::Violation;

/// Rule: the code's (device, counter) was not spent before.
pub const CODE_UNSPENT: &str = "offline_code.unspent";
/// Rule: the payment still waits for funds.
pub const PAYMENT_WAITING: &str = "offline_payment.waiting";
/// Rule: the payment is not settled or expired yet.
pub const PAYMENT_UNSETTLED: &str = "offline_payment.unsettled";
/// Rule: the payment id is new.
pub const PAYMENT_NEW: &str = "offline_payment.new";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentState {
    /// Accepted from the terminal; the settlement job is on its way.
    Pending,
    Settled,
    /// The payer's reserve did not cover it: waiting for a top-up.
    WaitingForFunds,
    /// No top-up came in time; nothing was paid and the merchant was told.
    Expired,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentState::Pending => "pending",
            PaymentState::Settled => "settled",
            PaymentState::WaitingForFunds => "waiting_for_funds",
            PaymentState::Expired => "expired",
        }
    }

    const ALL: [PaymentState; 4] =
        [PaymentState::Pending, PaymentState::Settled, PaymentState::WaitingForFunds, PaymentState::Expired];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn payment(state: PaymentState) -> Payment {
        Payment {
            id: "p_1".into(),
            terminal_id: "t_1".into(),
            merchant_id: "m_1".into(),
            user: "u".into(),
            device_key_id: "d_1.k1".into(),
            counter: 7,
            amount: Money::parse("5.00", "USD").expect("an amount"),
            state,
            created_at: 1,
            topup_token: None,
            counted: true,
        }
    }

    fn settled_books(cents: i64) -> Books {
        let amount = Money::new(rust_decimal::Decimal::new(cents, 2), "USD".parse().unwrap()).unwrap();
        let (reserve, merchant) = (crate::ledger::AccountId::reserve("u"), crate::ledger::AccountId::merchant("m_1"));
        let transfer = crate::ledger::Transfer::between(
            "p_1/settle".into(),
            amount,
            reserve,
            merchant,
            "offline.settle",
            "offline-payment/p_1".into(),
        );
        Books { transfers: vec![crate::ledger::TransferRecord::of(&transfer.unwrap())], ..Books::default() }
    }

    #[test]
    fn a_payment_moved_its_amount_once_if_and_only_if_it_settled() {
        let found = |p: Payment, books: &Books, now: i64| check_payments(&[p], &[], books, now, 60);
        assert_eq!(found(payment(PaymentState::Settled), &settled_books(500), 100), []);
        assert_eq!(found(payment(PaymentState::Expired), &Books::default(), 100), []);
        assert_eq!(found(payment(PaymentState::Pending), &Books::default(), 61), []);
        assert_eq!(
            found(payment(PaymentState::Settled), &settled_books(400), 100),
            [Violation::record("offline payment p_1", "is settled but moved Some(4.00)")]
        );
        assert_eq!(
            found(payment(PaymentState::Expired), &settled_books(500), 100),
            [Violation::record("offline payment p_1", "is expired but moved its amount")]
        );
        assert_eq!(
            found(payment(PaymentState::Pending), &Books::default(), 62),
            [Violation::record("offline payment p_1", "is still pending 61 s after it was accepted")]
        );
        assert_eq!(
            check_payments(&[], &[], &settled_books(500), 0, 60),
            [Violation::record("transfer p_1/settle", "moved money for no recorded payment")]
        );
    }

    #[test]
    fn a_payment_waits_for_funds_only_on_a_live_link_or_a_debit_being_settled() {
        let link = crate::offline::topup::tests::topup();
        let mut waiting = payment(PaymentState::WaitingForFunds);
        waiting.topup_token = Some(link.key.clone());
        let found = |link: &TopUp, now: i64| {
            check_payments(std::slice::from_ref(&waiting), std::slice::from_ref(link), &Books::default(), now, 60)
        };
        assert_eq!(found(&link, 160), [], "within its link's life and the slack");
        assert_eq!(
            found(&link, 161),
            [Violation::record("offline payment p_1", "is still waiting for funds 61 s after its link expired")]
        );
        let debiting = TopUp { debit_started_at: Some(90), ..link.clone() };
        assert_eq!(found(&debiting, 1_000), [], "its debit's outcome comes first");
        let other = TopUp { key: "other".into(), ..link };
        assert_eq!(
            found(&other, 0),
            [Violation::record("offline payment p_1", "is waiting for funds with no top-up link")]
        );
    }

    #[test]
    fn a_payment_is_the_same_request_only_for_the_same_code_terminal_and_amount() {
        let payment = payment(PaymentState::Pending);
        let mut later = payment.clone();
        later.state = PaymentState::Settled;
        later.created_at = 99;
        assert!(payment.same_request(&later), "a retry, whatever became of the payment");
        for change in [
            |p: &mut Payment| p.counter = 8,
            |p: &mut Payment| p.device_key_id = "d_2".into(),
            |p: &mut Payment| p.terminal_id = "t_2".into(),
            |p: &mut Payment| p.amount = Money::parse("5.01", "USD").expect("an amount"),
        ] {
            let mut other = payment.clone();
            change(&mut other);
            assert!(!payment.same_request(&other), "{other:?}");
        }
    }

    #[test]
    fn every_state_reads_back() {
        for state in PaymentState::ALL {
            assert_eq!(PaymentState::parse(state.as_str()), Some(state));
        }
        assert_eq!(PaymentState::parse("paid"), None);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub id: String,
    pub terminal_id: String,
    pub merchant_id: String,
    /// The payer: the account the code named.
    pub user: String,
    pub device_key_id: String,
    pub counter: u64,
    pub amount: Money,
    pub state: PaymentState,
    pub created_at: i64,
    /// The top-up link's token while the payment waits for funds.
    pub topup_token: Option<String>,
    /// Whether its amount counts in its device's `outstanding` until it settles or expires
    /// (payments accepted before devices counted them do not).
    pub counted: bool,
}

impl Payment {
    /// Whether `other` asks for this payment: the same code (device key and counter) presented by
    /// the same terminal for the same amount. Its state and times may differ.
    pub fn same_request(&self, other: &Payment) -> bool {
        (&self.device_key_id, self.counter, &self.terminal_id, self.amount)
            == (&other.device_key_id, other.counter, &other.terminal_id, other.amount)
    }

    pub fn view(&self) -> OfflinePaymentView {
        OfflinePaymentView {
            id: self.id.clone(),
            merchant_id: self.merchant_id.clone(),
            terminal_id: self.terminal_id.clone(),
            amount: self.amount,
            state: self.state.as_str(),
            created_at: self.created_at,
        }
    }
}

/// An offline payment as its merchant's terminal (and its payer) sees it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OfflinePaymentView {
    pub id: String,
    pub merchant_id: String,
    /// The terminal that presented the payer's code.
    pub terminal_id: String,
    pub amount: Money,
    /// `pending` (accepted, being settled), `settled`, `waiting_for_funds` (the payer's offline
    /// reserve fell short: they were sent a top-up link) or `expired` (no top-up came in time:
    /// nothing was paid).
    pub state: &'static str,
    /// When the terminal presented the code, Unix seconds.
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct PaymentStore {
    client: Client,
    payments: String,
    codes: String,
}

impl PaymentStore {
    pub fn new(client: Client, payments: impl Into<String>, codes: impl Into<String>) -> Self {
        PaymentStore { client, payments: payments.into(), codes: codes.into() }
    }

    pub async fn get(&self, id: &str) -> Result<Option<Payment>, StoreError> {
        let output =
            self.client.get_item().table_name(&self.payments).key("id", s(id)).consistent_read(true).send().await?;
        output.item().map(payment_from_item).transpose()
    }

    /// Spends a code: each (device, counter) pays once, however the device's clock was set.
    /// Every payment, for the invariant checker (`crate::offline::payment::check_payments`).
    pub async fn all(&self) -> Result<Vec<Payment>, StoreError> {
        scan_all(&self.client, &self.payments).await?.iter().map(payment_from_item).collect()
    }

    pub fn spend_item(&self, code: &OfflineCode) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.codes)
            .item("id", s(format!("{}#{}", code.key_id, code.counter)))
            .item("expires_at", n(code.issued_at + OFFLINE_WINDOW_SECONDS + CLOCK_SKEW_SECONDS + 86_400))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(CODE_UNSPENT, put))
    }

    pub fn create_item(&self, payment: &Payment) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.payments)
            .item("id", s(&payment.id))
            .item("terminal_id", s(&payment.terminal_id))
            .item("merchant_id", s(&payment.merchant_id))
            .item("user", s(&payment.user))
            .item("device_key_id", s(&payment.device_key_id))
            .item("counter", n(payment.counter))
            .item("amount", n(payment.amount.amount()))
            .item("currency", s(payment.amount.currency().code()))
            .item("state", s(payment.state.as_str()))
            .item("created_at", n(payment.created_at))
            .item("counted", AttributeValue::Bool(payment.counted))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put(PAYMENT_NEW, put))
    }

    /// A payment waits for funds with the top-up link `token`: a pending one (its first link), or
    /// a waiting one whose link `previous` was paid and still fell short.
    pub fn waiting_item(&self, id: &str, token: &str, previous: Option<&str>) -> Result<Write, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.payments)
            .key("id", s(id))
            .update_expression("SET #state = :waiting, topup_token = :token")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":waiting", s(PaymentState::WaitingForFunds.as_str()))
            .expression_attribute_values(":token", s(token));
        update = match previous {
            None => update
                .condition_expression("#state = :pending")
                .expression_attribute_values(":pending", s(PaymentState::Pending.as_str())),
            Some(previous) => update
                .condition_expression("#state = :waiting AND topup_token = :previous")
                .expression_attribute_values(":previous", s(previous)),
        };
        Ok(Write::update("offline_payment.may_wait", update.build()?))
    }

    /// A waiting payment expires, only if it still waits.
    pub fn expire_item(&self, id: &str) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.payments)
            .key("id", s(id))
            .update_expression("SET #state = :expired")
            .condition_expression("#state = :waiting")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":expired", s(PaymentState::Expired.as_str()))
            .expression_attribute_values(":waiting", s(PaymentState::WaitingForFunds.as_str()))
            .build()?;
        Ok(Write::update(PAYMENT_WAITING, update))
    }

    /// Moves a payment that is not yet settled to `to`.
    pub fn state_item(&self, id: &str, to: PaymentState) -> Result<Write, StoreError> {
        let update = Update::builder()
            .table_name(&self.payments)
            .key("id", s(id))
            .update_expression("SET #state = :to")
            .condition_expression("#state IN (:pending, :waiting)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":pending", s(PaymentState::Pending.as_str()))
            .expression_attribute_values(":waiting", s(PaymentState::WaitingForFunds.as_str()))
            .build()?;
        Ok(Write::update(PAYMENT_UNSETTLED, update))
    }
}

fn payment_from_item(item: &Item) -> Result<Payment, StoreError> {
    let corrupt = |what: &str| StoreError::new(format!("stored payment is corrupt: {what}"));
    let currency: Currency = get_s(item, "currency")?.parse().map_err(|_| corrupt("currency"))?;
    Ok(Payment {
        id: get_s(item, "id")?.to_owned(),
        terminal_id: get_s(item, "terminal_id")?.to_owned(),
        merchant_id: get_s(item, "merchant_id")?.to_owned(),
        user: get_s(item, "user")?.to_owned(),
        device_key_id: get_s(item, "device_key_id")?.to_owned(),
        counter: get_n(item, "counter")?,
        amount: Money::new(get_decimal(item, "amount")?, currency).map_err(|_| corrupt("amount"))?,
        state: PaymentState::parse(get_s(item, "state")?).ok_or_else(|| corrupt("state"))?,
        created_at: get_n(item, "created_at")?,
        topup_token: item.get("topup_token").map(|_| get_s(item, "topup_token").map(str::to_owned)).transpose()?,
        counted: matches!(item.get("counted"), Some(AttributeValue::Bool(true))),
    })
}

/// What must hold of each offline payment and the money it moved (`crate::reconcile`): a settled
/// payment moved its amount once from the payer's reserve, an unsettled or expired one nothing; a
/// pending one is settled (or waiting for funds) within `slack` seconds of its acceptance, and one
/// waiting for funds has a live link (`topups`: the links of these payments), or one whose debit's
/// outcome is still being had (`crate::offline::topup::check_topups` bounds that); and no offline
/// settlement moved money for a payment not recorded (`payments`: all those of these books).
pub fn check_payments(payments: &[Payment], topups: &[TopUp], books: &Books, now: i64, slack: i64) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let links: HashMap<&str, &TopUp> = topups.iter().map(|t| (t.key.as_str(), t)).collect();
    let mut violations = Vec::new();
    for payment in payments {
        let mut problem =
            |text: String| violations.push(Violation::record(format!("offline payment {}", payment.id), text));
        let settle = transfers.get(format!("{}/settle", payment.id).as_str());
        match (payment.state, settle) {
            (PaymentState::Settled, Some(t)) if t.kind == "offline.settle" && t.amount() == payment.amount.amount() => {
            }
            (PaymentState::Settled, _) => problem(format!("is settled but moved {:?}", settle.map(|t| t.amount()))),
            (_, Some(_)) => problem(format!("is {} but moved its amount", payment.state.as_str())),
            (_, None) => {}
        }
        match payment.state {
            PaymentState::Pending if now > payment.created_at + slack => {
                problem(format!("is still pending {} s after it was accepted", now - payment.created_at))
            }
            PaymentState::WaitingForFunds => match payment.topup_token.as_deref().and_then(|key| links.get(key)) {
                Some(link) if link.debit_started_at.is_some() || now <= link.link_expires_at + slack => {}
                Some(link) => problem(format!(
                    "is still waiting for funds {} s after its link expired",
                    now - link.link_expires_at
                )),
                None => problem("is waiting for funds with no top-up link".into()),
            },
            _ => {}
        }
    }
    let recorded: std::collections::HashSet<String> = payments.iter().map(|p| format!("{}/settle", p.id)).collect();
    for settle in books.transfers.iter().filter(|t| t.kind == "offline.settle" && !recorded.contains(&t.id)) {
        violations.push(Violation::record(format!("transfer {}", settle.id), "moved money for no recorded payment"));
    }
    violations
}
