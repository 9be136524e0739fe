//! The double-entry ledger every money movement goes through (docs/design.md, "Money and the
//! ledger").
//!
//! A `Transfer` is balanced legs in one currency. `plan` turns it and the current state of its
//! accounts into the exact writes that apply it: each account's new balance, `available` and
//! sequence, and one posting per leg. `store` commits those writes in ONE TransactWriteItems,
//! conditional on each account still being at the sequence that was read and each debit being
//! covered by `available` (a condition cannot do arithmetic, so `available` is stored).
//!
//! Invariants (tested here with properties, and against the emulator under concurrency):
//! - conservation: the legs of every transfer sum to zero, so the sum of all balances never changes;
//! - no balance goes below its account's floor (external funding accounts have none);
//! - a transfer applies once or not at all (its record is written under `attribute_not_exists`);
//! - replaying an account's postings in sequence rebuilds its balance.

pub mod api;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;

use crate::money::{Currency, Money};

/// A transfer as its record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: String,
    pub currency: Currency,
    pub kind: String,
    pub cause: String,
    pub legs: Vec<(AccountId, Decimal)>,
}

/// What the ledger table holds, or the part of it a check is about: some accounts, every posting of
/// theirs and every transfer that touches them (`crate::reconcile` checks them).
#[derive(Debug, Clone, Default)]
pub struct Books {
    pub accounts: Vec<Account>,
    pub postings: Vec<Posting>,
    pub transfers: Vec<TransferRecord>,
}

impl Books {
    /// The transfers by id.
    pub fn transfers_by_id(&self) -> HashMap<&str, &TransferRecord> {
        self.transfers.iter().map(|t| (t.id.as_str(), t)).collect()
    }
}

/// `purchase.hold of 12.50 USD from wallet:alice to hold:o_1`, for the checker's findings.
impl fmt::Display for TransferRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |credit: bool| {
            let accounts = self.legs.iter().filter(|(_, amount)| (*amount > Decimal::ZERO) == credit);
            accounts.map(|(account, _)| account.as_str()).collect::<Vec<_>>().join(", ")
        };
        write!(f, "{} of {} {} from {} to {}", self.kind, self.amount(), self.currency, side(false), side(true))
    }
}

impl TransferRecord {
    /// What it moved: the sum of its credits.
    pub fn amount(&self) -> Decimal {
        self.legs.iter().map(|(_, amount)| amount.max(&Decimal::ZERO)).sum()
    }

    pub fn of(transfer: &Transfer) -> Self {
        TransferRecord {
            id: transfer.id.clone(),
            currency: transfer.currency,
            kind: transfer.kind.to_owned(),
            cause: transfer.cause.clone(),
            legs: transfer.legs.iter().map(|l| (l.account.clone(), l.amount)).collect(),
        }
    }
}

/// A transfer a check found, or `none`.
pub fn shown(transfer: Option<&TransferRecord>) -> String {
    transfer.map_or_else(|| "none".into(), ToString::to_string)
}

/// Most items one TransactWriteItems may hold (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// What kind of money an account holds, which decides its floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A user's wallet: never below zero.
    Wallet,
    /// A merchant's settlement account: never below zero.
    Merchant,
    /// Money held for one order until it is captured or released: never below zero.
    Hold,
    /// A user's external funding source (their bank): outside money, so no floor.
    Funding,
    /// A user's offline reserve: what their offline codes can pay (capability 6). Never below zero.
    Reserve,
}

impl AccountKind {
    fn prefix(self) -> &'static str {
        match self {
            AccountKind::Wallet => "wallet",
            AccountKind::Merchant => "merchant",
            AccountKind::Hold => "hold",
            AccountKind::Funding => "funding",
            AccountKind::Reserve => "reserve",
        }
    }

    /// The lowest balance allowed; `None` for money outside the system.
    pub fn floor(self) -> Option<Decimal> {
        match self {
            AccountKind::Funding => None,
            _ => Some(Decimal::ZERO),
        }
    }
}

/// `<kind>:<owner>`, e.g. `wallet:alice`, `hold:<order id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    pub fn new(kind: AccountKind, owner: &str) -> Self {
        AccountId(format!("{}:{owner}", kind.prefix()))
    }

    pub fn wallet(user: &str) -> Self {
        Self::new(AccountKind::Wallet, user)
    }

    pub fn merchant(merchant: &str) -> Self {
        Self::new(AccountKind::Merchant, merchant)
    }

    pub fn hold(order: &str) -> Self {
        Self::new(AccountKind::Hold, order)
    }

    pub fn funding(user: &str) -> Self {
        Self::new(AccountKind::Funding, user)
    }

    pub fn reserve(user: &str) -> Self {
        Self::new(AccountKind::Reserve, user)
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (kind, owner) = text.split_once(':')?;
        let kind =
            [AccountKind::Wallet, AccountKind::Merchant, AccountKind::Hold, AccountKind::Funding, AccountKind::Reserve]
                .into_iter()
                .find(|k| k.prefix() == kind)?;
        (!owner.is_empty()).then(|| Self::new(kind, owner))
    }

    pub fn kind(&self) -> AccountKind {
        match self.0.split_once(':').map(|(k, _)| k) {
            Some("wallet") => AccountKind::Wallet,
            Some("merchant") => AccountKind::Merchant,
            Some("hold") => AccountKind::Hold,
            Some("reserve") => AccountKind::Reserve,
            _ => AccountKind::Funding,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account as stored: its balance and how many postings it has had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub currency: Currency,
    pub balance: Decimal,
    pub sequence: u64,
}

impl Account {
    /// What may still be debited: balance minus floor (`None`: unlimited).
    pub fn available(&self) -> Option<Decimal> {
        self.id.kind().floor().map(|floor| self.balance - floor)
    }
}

/// One side of a transfer: a signed amount (negative debits, positive credits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub account: AccountId,
    pub amount: Decimal,
}

/// A movement of money: balanced legs in one currency, identified by an id derived from the
/// business request that caused it (so a retry of the request is the same transfer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub currency: Currency,
    pub legs: Vec<Leg>,
    /// What it is, e.g. `purchase.hold`, `purchase.capture`.
    pub kind: &'static str,
    /// The request that caused it (e.g. `order/<id>`), so every transfer is traceable.
    pub cause: String,
}

impl Transfer {
    /// `money` from one account to another. Moving money to the same account is refused: it would
    /// write one item twice in a transaction, and it is never what a caller meant.
    pub fn between(
        id: String,
        money: Money,
        from: AccountId,
        to: AccountId,
        kind: &'static str,
        cause: String,
    ) -> Result<Self, LedgerError> {
        if from == to {
            return Err(LedgerError::SelfTransfer(from));
        }
        Ok(Transfer {
            id,
            currency: money.currency(),
            legs: vec![Leg { account: from, amount: -money.amount() }, Leg { account: to, amount: money.amount() }],
            kind,
            cause,
        })
    }

    pub fn accounts(&self) -> Vec<AccountId> {
        self.legs.iter().map(|l| l.account.clone()).collect()
    }
}

/// What applying a leg writes to its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountUpdate {
    pub account: AccountId,
    /// The sequence read; the write is conditional on it (0: the account does not exist yet).
    pub expected_sequence: u64,
    /// The balance read, or assumed: an account a caller assumed rather than read
    /// (`LedgerStore::apply_assuming`) has its write conditional on it too.
    pub expected_balance: Decimal,
    pub balance: Decimal,
    pub available: Option<Decimal>,
    pub sequence: u64,
    /// The debit `available` must cover, for the write's condition.
    pub debit: Option<Decimal>,
}

/// One leg as the account's history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: AccountId,
    pub sequence: u64,
    pub amount: Decimal,
    pub balance_after: Decimal,
    pub transfer_id: String,
    pub kind: String,
    pub at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("a transfer needs at least two legs")]
    TooFewLegs,
    #[error("the legs do not balance: they sum to {0}")]
    Unbalanced(Decimal),
    #[error("account {0} appears twice in one transfer")]
    DuplicateAccount(AccountId),
    #[error("cannot move money from {0} to itself")]
    SelfTransfer(AccountId),
    #[error("account {account} holds {held}, not {wanted}")]
    CurrencyMismatch { account: AccountId, held: Currency, wanted: Currency },
    #[error("insufficient funds in {account}: {available} available, {wanted} needed")]
    InsufficientFunds { account: AccountId, available: Decimal, wanted: Decimal },
    #[error("a transfer of {0} items is over DynamoDB's limit of {MAX_TRANSACTION_ITEMS} per transaction")]
    TooManyItems(usize),
}

impl LedgerError {
    /// The account whose state refused the transfer, if it was one.
    pub fn account(&self) -> Option<&AccountId> {
        match self {
            LedgerError::CurrencyMismatch { account, .. } | LedgerError::InsufficientFunds { account, .. } => {
                Some(account)
            }
            _ => None,
        }
    }
}

/// The writes that apply `transfer` to accounts in the state `current` (absent: never used).
pub fn plan(
    transfer: &Transfer,
    current: &HashMap<AccountId, Account>,
    at: i64,
) -> Result<Vec<(AccountUpdate, Posting)>, LedgerError> {
    if transfer.legs.len() < 2 {
        return Err(LedgerError::TooFewLegs);
    }
    let sum: Decimal = transfer.legs.iter().map(|l| l.amount).sum();
    if !sum.is_zero() {
        return Err(LedgerError::Unbalanced(sum));
    }
    let mut seen = HashSet::new();
    let mut writes = Vec::with_capacity(transfer.legs.len());
    for leg in &transfer.legs {
        if !seen.insert(&leg.account) {
            return Err(LedgerError::DuplicateAccount(leg.account.clone()));
        }
        let account = current.get(&leg.account).cloned().unwrap_or(Account {
            id: leg.account.clone(),
            currency: transfer.currency,
            balance: Decimal::ZERO,
            sequence: 0,
        });
        if account.currency != transfer.currency {
            return Err(LedgerError::CurrencyMismatch {
                account: leg.account.clone(),
                held: account.currency,
                wanted: transfer.currency,
            });
        }
        let debit = (leg.amount < Decimal::ZERO).then(|| -leg.amount);
        if let (Some(wanted), Some(available)) = (debit, account.available())
            && available < wanted
        {
            return Err(LedgerError::InsufficientFunds { account: leg.account.clone(), available, wanted });
        }
        let balance = account.balance + leg.amount;
        let sequence = account.sequence + 1;
        let update = AccountUpdate {
            account: leg.account.clone(),
            expected_sequence: account.sequence,
            expected_balance: account.balance,
            balance,
            available: leg.account.kind().floor().map(|floor| balance - floor),
            sequence,
            debit: debit.filter(|_| account.available().is_some()),
        };
        let posting = Posting {
            account: leg.account.clone(),
            sequence,
            amount: leg.amount,
            balance_after: balance,
            transfer_id: transfer.id.clone(),
            kind: transfer.kind.to_owned(),
            at,
        };
        writes.push((update, posting));
    }
    // Each leg: the account and its posting; plus the transfer record.
    let items = writes.len() * 2 + 1;
    if items > MAX_TRANSACTION_ITEMS {
        return Err(LedgerError::TooManyItems(items));
    }
    Ok(writes)
}

/// Rebuilds a balance from an account's postings, checking they form an unbroken sequence.
pub fn replay(postings: &[Posting]) -> Option<Decimal> {
    let mut balance = Decimal::ZERO;
    for (i, posting) in postings.iter().enumerate() {
        if posting.sequence != i as u64 + 1 || posting.balance_after != balance + posting.amount {
            return None;
        }
        balance = posting.balance_after;
    }
    Some(balance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd(amount: &str) -> Money {
        Money::parse(amount, "USD").unwrap()
    }

    fn apply(
        state: &mut HashMap<AccountId, Account>,
        history: &mut Vec<Posting>,
        transfer: &Transfer,
    ) -> Result<(), LedgerError> {
        for (update, posting) in plan(transfer, state, 0)? {
            state.insert(
                update.account.clone(),
                Account {
                    id: update.account,
                    currency: transfer.currency,
                    balance: update.balance,
                    sequence: update.sequence,
                },
            );
            history.push(posting);
        }
        Ok(())
    }

    #[test]
    fn a_transfer_moves_money_and_writes_postings() {
        let mut state = HashMap::new();
        let mut history = Vec::new();
        let fund = Transfer::between(
            "t1".into(),
            usd("50.00"),
            AccountId::funding("al"),
            AccountId::wallet("al"),
            "top_up",
            "test".into(),
        )
        .unwrap();
        apply(&mut state, &mut history, &fund).unwrap();
        assert_eq!(state[&AccountId::wallet("al")].balance, Decimal::new(5000, 2));
        assert_eq!(state[&AccountId::funding("al")].balance, Decimal::new(-5000, 2), "funding has no floor");
        let pay = Transfer::between(
            "t2".into(),
            usd("20.00"),
            AccountId::wallet("al"),
            AccountId::merchant("m"),
            "pay",
            "test".into(),
        )
        .unwrap();
        let writes = plan(&pay, &state, 0).unwrap();
        assert_eq!(writes[0].0.expected_sequence, 1);
        assert_eq!(writes[0].0.debit, Some(Decimal::new(2000, 2)));
        assert_eq!(writes[0].0.available, Some(Decimal::new(3000, 2)));
        assert_eq!(writes[1].0.expected_sequence, 0, "a new account");
        assert_eq!(writes[1].1.balance_after, Decimal::new(2000, 2));
    }

    #[test]
    fn refusals() {
        let state = HashMap::new();
        let w = AccountId::wallet("al");
        assert_eq!(
            Transfer::between("t".into(), usd("1.00"), w.clone(), w.clone(), "pay", "x".into()),
            Err(LedgerError::SelfTransfer(w.clone()))
        );
        let pay =
            Transfer::between("t".into(), usd("1.00"), w.clone(), AccountId::merchant("m"), "pay", "x".into()).unwrap();
        assert!(matches!(plan(&pay, &state, 0), Err(LedgerError::InsufficientFunds { .. })));
        let mut eur = HashMap::new();
        eur.insert(
            w.clone(),
            Account { id: w.clone(), currency: "EUR".parse().unwrap(), balance: Decimal::TEN, sequence: 3 },
        );
        assert!(matches!(plan(&pay, &eur, 0), Err(LedgerError::CurrencyMismatch { .. })));
        let mut unbalanced = pay.clone();
        unbalanced.legs[1].amount = Decimal::TWO;
        assert!(matches!(plan(&unbalanced, &eur, 0), Err(LedgerError::Unbalanced(_))));
        let mut twice = pay.clone();
        twice.legs.push(Leg { account: w.clone(), amount: Decimal::ZERO });
        let mut usd_wallet = HashMap::new();
        usd_wallet.insert(
            w.clone(),
            Account { id: w.clone(), currency: "USD".parse().unwrap(), balance: Decimal::TEN, sequence: 3 },
        );
        assert!(matches!(plan(&twice, &usd_wallet, 0), Err(LedgerError::DuplicateAccount(_))));
        assert_eq!(AccountId::parse("hold:o-1").map(|a| a.kind()), Some(AccountKind::Hold));
        assert_eq!(AccountId::parse("bank:o-1"), None);
    }

    proptest! {
        /// Random transfers among a few accounts: money is conserved, no floor is broken, and every
        /// account's postings replay to its balance, whatever was refused along the way.
        #[test]
        fn conservation_floors_and_replay(moves in prop::collection::vec((0usize..5, 0usize..5, 1i64..5_000), 1..80)) {
            let accounts = [
                AccountId::funding("u1"), AccountId::wallet("u1"), AccountId::wallet("u2"),
                AccountId::merchant("m1"), AccountId::hold("o1"),
            ];
            let mut state = HashMap::new();
            let mut history = Vec::new();
            for (i, (from, to, cents)) in moves.into_iter().enumerate() {
                let money = Money::new(Decimal::new(cents, 2), "USD".parse().unwrap()).unwrap();
                match Transfer::between(format!("t{i}"), money, accounts[from].clone(), accounts[to].clone(), "test", "p".into()) {
                    Ok(transfer) => { let _ = apply(&mut state, &mut history, &transfer); }
                    Err(e) => prop_assert_eq!(e, LedgerError::SelfTransfer(accounts[from].clone())),
                }
                let total: Decimal = state.values().map(|a| a.balance).sum();
                prop_assert_eq!(total, Decimal::ZERO);
                for account in state.values() {
                    if let Some(available) = account.available() {
                        prop_assert!(available >= Decimal::ZERO, "{} below its floor", account.id);
                    }
                }
            }
            for account in state.values() {
                let postings: Vec<Posting> = history.iter().filter(|p| p.account == account.id).cloned().collect();
                prop_assert_eq!(replay(&postings), Some(account.balance));
            }
        }
    }
}
