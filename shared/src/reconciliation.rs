//! The reconciliation of the whole platform: the books' invariants (`crate::reconcile`) and every
//! capability's records against the money they moved (orders, mini-app requests, offline payments
//! and their top-ups, devices, transfer operations, cash movements, the outbox), read from the
//! tables. The fault run checks a quiet stack with it; the operators' report (`cargo ops
//! reconcile`) reads a live one.

use std::collections::{BTreeMap, HashSet};

use rust_decimal::Decimal;

use crate::dynamo::StoreError;
use crate::instruction::operation::{OperationStore, check_operations};
use crate::instrument::cash::check_cash;
use crate::instrument::cash::store::CashStore;
use crate::ledger::store::LedgerStore;
use crate::ledger::{AccountKind, Books};
use crate::miniapp::check_requests;
use crate::miniapp::store::RequestStore;
use crate::money::Money;
use crate::offline::device::{DeviceStore, check_devices};
use crate::offline::payment::{PaymentStore, check_payments};
use crate::offline::topup::{TopUpStore, check_topups};
use crate::outbox::{Outbox, check_outbox};
use crate::purchase::store::OrderStore;
use crate::purchase::{Order, OrderState, check_orders};
use crate::reconcile::{Violation, check_as_read};

/// How the ledger is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Nothing runs: the books must agree with themselves whole (a posting beyond its account's
    /// sequence is a violation).
    Quiet,
    /// Requests run meanwhile: each account is checked at the sequence it was read at, and a
    /// transfer in flight then is none (`LedgerStore::books_as_read`).
    Live,
}

/// A purchase's hold still held after its order's expiry: the merchant never decided, and the
/// expiry job has not given the money back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleHold {
    pub order: String,
    pub user: String,
    pub merchant: String,
    pub amount: Money,
    /// What its hold account holds.
    pub held: Decimal,
    /// How long ago the order expired, in seconds.
    pub expired_for: i64,
}

/// A merchant whose credits land on sub-accounts: its balance is the sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardedMerchant {
    pub merchant: String,
    pub main: Decimal,
    /// What its credit sub-accounts hold until the next sweep, and how many hold it.
    pub credits: Decimal,
    pub holding: usize,
}

impl ShardedMerchant {
    pub fn balance(&self) -> Decimal {
        self.main + self.credits
    }
}

#[derive(Debug, Default)]
pub struct Findings {
    pub violations: Vec<Violation>,
    pub stale_holds: Vec<StaleHold>,
    /// The merchants with credit sub-accounts, each balance the sum of its accounts.
    pub sharded_merchants: Vec<ShardedMerchant>,
    pub accounts: usize,
    pub transfers: usize,
    /// Transfers in flight at a live read: no violation.
    pub in_flight: usize,
    /// The records read, by kind.
    pub records: BTreeMap<&'static str, usize>,
}

/// The stack's tables, by their template names (`LedgerTable` -> its name).
pub type TableNames<'a> = &'a dyn Fn(&str) -> String;

/// Reads every table and checks it all; `slack`: how long past its deadline a record may still be
/// in flight before it counts.
pub async fn reconcile(
    dynamodb: &aws_sdk_dynamodb::Client,
    sqs: &aws_sdk_sqs::Client,
    table: TableNames<'_>,
    reading: Reading,
    now: i64,
    slack: i64,
) -> Result<Findings, StoreError> {
    let ledger = LedgerStore::new(dynamodb.clone(), table("LedgerTable"));
    // The books first: a record read after them has only moved on, which its own check allows for
    // within `slack`.
    let (books, in_flight) = match reading {
        Reading::Quiet => (ledger.books(|_| true).await?, HashSet::new()),
        Reading::Live => ledger.books_as_read().await?,
    };
    let orders = OrderStore::new(dynamodb.clone(), table("OrdersTable")).all().await?;
    let requests = RequestStore::new(dynamodb.clone(), table("MiniAppRequestsTable")).all().await?;
    let payments =
        PaymentStore::new(dynamodb.clone(), table("OfflinePaymentsTable"), table("OfflineCodesTable")).all().await?;
    let topups = TopUpStore::new(dynamodb.clone(), table("TopUpsTable")).all().await?;
    let devices = DeviceStore::new(dynamodb.clone(), table("DevicesTable")).all().await?;
    let operations = OperationStore::new(dynamodb.clone(), table("TransferOperationsTable")).all().await?;
    let movements = CashStore::new(dynamodb.clone(), table("CashTable")).all().await?;
    let outbox = Outbox::new(dynamodb.clone(), sqs.clone(), table("OutboxTable")).items().await?;

    let mut violations = check_as_read(&books, &in_flight);
    // A capability knows the merchant's account, not which of its credit sub-accounts a credit took.
    let booked = books.booked();
    violations.extend(check_orders(&orders, &booked, now, slack));
    violations.extend(check_requests(&requests, &booked));
    violations.extend(check_payments(&payments, &topups, &booked, now, slack));
    violations.extend(check_topups(&topups, &booked, now, slack));
    violations.extend(check_devices(&devices, &payments));
    violations.extend(check_operations(&operations, &booked, now, slack));
    violations.extend(check_cash(&movements, &booked, now, slack));
    violations.extend(check_outbox(&outbox, now, slack));

    let stale_holds = stale_holds(&orders, &books, now);
    let sharded_merchants = sharded_merchants(&books);
    let records = BTreeMap::from([
        ("orders", orders.len()),
        ("mini-app requests", requests.len()),
        ("offline payments", payments.len()),
        ("top-ups", topups.len()),
        ("devices", devices.len()),
        ("transfer operations", operations.len()),
        ("cash movements", movements.len()),
        ("outbox items", outbox.len()),
    ]);
    Ok(Findings {
        violations,
        stale_holds,
        sharded_merchants,
        accounts: books.accounts.len(),
        transfers: books.transfers.len(),
        in_flight: in_flight.len(),
        records,
    })
}

/// Every merchant with a credit sub-account in `books`, with its main account's balance and what
/// its sub-accounts hold.
pub fn sharded_merchants(books: &Books) -> Vec<ShardedMerchant> {
    let mut merchants: BTreeMap<&str, ShardedMerchant> = BTreeMap::new();
    let credits = books.accounts.iter().filter(|a| a.id.kind() == AccountKind::Credit);
    for account in credits {
        let Some(merchant) = account.id.merchant_id() else { continue };
        let entry = merchants.entry(merchant).or_insert_with(|| ShardedMerchant {
            merchant: merchant.to_owned(),
            main: Decimal::ZERO,
            credits: Decimal::ZERO,
            holding: 0,
        });
        entry.credits += account.balance;
        entry.holding += usize::from(account.balance > Decimal::ZERO);
    }
    for account in &books.accounts {
        if account.id.kind() == AccountKind::Merchant
            && let Some(entry) = account.id.merchant_id().and_then(|m| merchants.get_mut(m))
        {
            entry.main = account.balance;
        }
    }
    merchants.into_values().collect()
}

/// The holds of `orders` still awaiting their merchant after their expiry, with what each holds.
pub fn stale_holds(orders: &[Order], books: &Books, now: i64) -> Vec<StaleHold> {
    let held: BTreeMap<_, Decimal> = books.accounts.iter().map(|a| (&a.id, a.balance)).collect();
    orders
        .iter()
        .filter(|o| o.state == OrderState::AwaitingMerchant && now > o.expires_at)
        .map(|o| StaleHold {
            order: o.id.clone(),
            user: o.user.clone(),
            merchant: o.merchant_id.clone(),
            amount: o.amount,
            held: held.get(&o.hold_account()).copied().unwrap_or_default(),
            expired_for: now - o.expires_at,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Account, AccountId};

    fn order(id: &str, state: OrderState, expires_at: i64) -> Order {
        Order {
            id: id.into(),
            user: "alice".into(),
            merchant_id: "m_1".into(),
            product_id: "tea".into(),
            quantity: 1,
            amount: Money::new(Decimal::new(1250, 2), "USD".parse().unwrap()).unwrap(),
            state,
            created_at: 0,
            expires_at,
            refundable: Decimal::ZERO,
            decision: None,
        }
    }

    #[test]
    fn a_hold_is_stale_once_its_awaiting_order_has_expired() {
        let books = Books {
            accounts: vec![Account {
                id: AccountId::hold("o_late"),
                currency: "USD".parse().unwrap(),
                balance: Decimal::new(1250, 2),
                sequence: 1,
            }],
            ..Books::default()
        };
        let orders = [
            order("o_late", OrderState::AwaitingMerchant, 100),
            order("o_waiting", OrderState::AwaitingMerchant, 200),
            order("o_paid", OrderState::Paid, 100),
        ];
        let stale = stale_holds(&orders, &books, 150);
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert_eq!(
            (stale[0].order.as_str(), stale[0].held, stale[0].expired_for),
            ("o_late", Decimal::new(1250, 2), 50)
        );
    }
}
