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
//!
//! A popular merchant's one account would be a queue: every credit to it is conditional on its
//! sequence, and DynamoDB takes about 1,000 writes a second to one item. So a merchant may have N
//! credit sub-accounts (`credit:<merchant>/<k>`, N its `credit_shards`, which only grows): every
//! credit to the merchant lands on the one its transfer's id picks (`spread_credits`), and a sweep
//! (`sweep`) moves what each holds into the main account, postings on both sides. Debits (refunds,
//! payouts) take from the main account, sweeping first when it is short; the merchant's balance is
//! the sum.

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
    /// The books as the business records that caused the transfers expect them
    /// (`TransferRecord::booked`): for the capabilities' checks, not the ledger's own.
    pub fn booked(&self) -> Books {
        Books { transfers: self.transfers.iter().map(TransferRecord::booked).collect(), ..self.clone() }
    }

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

impl TransferRecord {
    /// The transfer as the business record that caused it expects it: credits that landed on a
    /// merchant's sub-accounts read as credits to the merchant (`AccountId::booked`).
    pub fn booked(&self) -> TransferRecord {
        TransferRecord { legs: self.legs.iter().map(|(a, x)| (a.booked(), *x)).collect(), ..self.clone() }
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
    /// One of a merchant's credit sub-accounts: credits land on it, a sweep empties it into the
    /// merchant's main account. Never below zero.
    Credit,
}

/// Most credit sub-accounts a merchant may have: its balance is one BatchGetItem of them and its
/// main account (100 keys at most), and more spreads 64,000 credits a second.
pub const MAX_CREDIT_SHARDS: u32 = 64;

/// The transfer kind of a sweep, the one transfer that debits a credit sub-account.
pub const SWEEP_KIND: &str = "merchant.sweep";

impl AccountKind {
    fn prefix(self) -> &'static str {
        match self {
            AccountKind::Wallet => "wallet",
            AccountKind::Merchant => "merchant",
            AccountKind::Hold => "hold",
            AccountKind::Funding => "funding",
            AccountKind::Reserve => "reserve",
            AccountKind::Credit => "credit",
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

    /// The merchant's credit sub-account `shard`: `credit:<merchant>/<shard>`.
    pub fn credit(merchant: &str, shard: u32) -> Self {
        Self::new(AccountKind::Credit, &format!("{merchant}/{shard}"))
    }

    pub fn parse(text: &str) -> Option<Self> {
        let (kind, owner) = text.split_once(':')?;
        let kind = [
            AccountKind::Wallet,
            AccountKind::Merchant,
            AccountKind::Hold,
            AccountKind::Funding,
            AccountKind::Reserve,
            AccountKind::Credit,
        ]
        .into_iter()
        .find(|k| k.prefix() == kind)?;
        (!owner.is_empty()).then(|| Self::new(kind, owner))
    }

    /// The merchant whose main account (`merchant:<id>`) or credit sub-account this is.
    pub fn merchant_id(&self) -> Option<&str> {
        let (kind, owner) = self.0.split_once(':')?;
        match kind {
            "merchant" => Some(owner),
            "credit" => owner.rsplit_once('/').map(|(merchant, _)| merchant),
            _ => None,
        }
    }

    /// The account as a business record names it: a credit sub-account is its merchant's account.
    pub fn booked(&self) -> AccountId {
        match (self.kind(), self.merchant_id()) {
            (AccountKind::Credit, Some(merchant)) => AccountId::merchant(merchant),
            _ => self.clone(),
        }
    }

    pub fn kind(&self) -> AccountKind {
        match self.0.split_once(':').map(|(k, _)| k) {
            Some("wallet") => AccountKind::Wallet,
            Some("merchant") => AccountKind::Merchant,
            Some("hold") => AccountKind::Hold,
            Some("reserve") => AccountKind::Reserve,
            Some("credit") => AccountKind::Credit,
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

/// `transfer` with each credit to a merchant whose `credit_shards` (by merchant id; absent: 1) is
/// more than one moved to the sub-account its id picks: a stable hash of the transfer id, so a retry
/// of the same transfer lands on the same sub-account. A sweep is left as it is: it credits the main
/// account. Any N up to the merchant's current one is right (the sub-accounts below it all exist
/// for the sweeps), so a stale N only spreads less.
pub fn spread_credits(transfer: &Transfer, credit_shards: &HashMap<String, u32>) -> Transfer {
    if transfer.kind == SWEEP_KIND {
        return transfer.clone();
    }
    let legs = transfer
        .legs
        .iter()
        .map(|leg| {
            let shards = match (leg.account.kind(), leg.account.merchant_id()) {
                (AccountKind::Merchant, Some(merchant)) if leg.amount > Decimal::ZERO => {
                    credit_shards.get(merchant).copied().filter(|n| *n > 1).map(|n| (merchant, n))
                }
                _ => None,
            };
            match shards {
                Some((merchant, n)) => Leg {
                    account: AccountId::credit(
                        merchant,
                        (crate::crypto::stable_hash(&transfer.id) % u64::from(n)) as u32,
                    ),
                    amount: leg.amount,
                },
                None => leg.clone(),
            }
        })
        .collect();
    Transfer { legs, ..transfer.clone() }
}

/// The sweeps of `merchant`'s sub-accounts as read (`sub_accounts`): one transfer per sub-account
/// holding money, fullest first, each moving its whole balance into the main account. One each:
/// a sweep's write is conditional on its sub-account's sequence from read to commit, and a popular
/// merchant's sub-accounts take credits many times a second, so a transaction over several would
/// seldom find them all unchanged. Its id is a hash of the sub-account at the sequence read, which
/// fixes its balance: two sweepers that read the same state make one transfer, and no other sweep
/// can have its id.
pub fn sweep(merchant: &str, sub_accounts: &[Account]) -> Vec<Transfer> {
    let mut holding: Vec<&Account> = sub_accounts.iter().filter(|a| a.balance > Decimal::ZERO).collect();
    holding.sort_by(|a, b| b.balance.cmp(&a.balance).then_with(|| a.id.cmp(&b.id)));
    holding
        .into_iter()
        .map(|account| Transfer {
            id: format!(
                "{merchant}/sweep/{:016x}",
                crate::crypto::stable_hash(&format!("{}@{}", account.id, account.sequence))
            ),
            currency: account.currency,
            legs: vec![
                Leg { account: account.id.clone(), amount: -account.balance },
                Leg { account: AccountId::merchant(merchant), amount: account.balance },
            ],
            kind: SWEEP_KIND,
            cause: format!("merchant/{merchant}"),
        })
        .collect()
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

    #[test]
    fn credits_to_a_sharded_merchant_spread_by_transfer_id_and_nothing_else_moves() {
        let shards = HashMap::from([("m".to_owned(), 4)]);
        let pay = |id: &str, from: AccountId, to: AccountId| {
            Transfer::between(id.into(), usd("1.00"), from, to, "pay", "x".into()).unwrap()
        };
        let landed: HashSet<AccountId> = (0..64)
            .map(|i| spread_credits(&pay(&format!("t{i}"), AccountId::wallet("u"), AccountId::merchant("m")), &shards))
            .map(|t| t.legs[1].account.clone())
            .collect();
        assert_eq!(landed, (0..4).map(|k| AccountId::credit("m", k)).collect(), "all four, and only them");
        let one = pay("t1", AccountId::wallet("u"), AccountId::merchant("m"));
        assert_eq!(spread_credits(&one, &shards), spread_credits(&one, &shards), "a retry lands where it did");
        assert_eq!(spread_credits(&one, &shards).legs[0], one.legs[0], "the payer's leg is untouched");
        // A debit of the merchant, another merchant, and one with a single account: as they were.
        let refund = pay("t2", AccountId::merchant("m"), AccountId::wallet("u"));
        assert_eq!(spread_credits(&refund, &shards), refund);
        let other = pay("t3", AccountId::wallet("u"), AccountId::merchant("m2"));
        assert_eq!(spread_credits(&other, &shards), other);
        let single = HashMap::from([("m".to_owned(), 1)]);
        assert_eq!(spread_credits(&one, &single), one);
        let credit = AccountId::credit("m_1/x", 3);
        assert_eq!((credit.merchant_id(), credit.booked()), (Some("m_1/x"), AccountId::merchant("m_1/x")));
        assert_eq!(AccountId::parse(credit.as_str()), Some(credit));
    }

    #[test]
    fn a_sweep_empties_each_sub_account_holding_money_into_the_main_account_fullest_first() {
        let account = |k: u32, cents: i64| Account {
            id: AccountId::credit("m", k),
            currency: "USD".parse().unwrap(),
            balance: Decimal::new(cents, 2),
            sequence: 3,
        };
        let subs: Vec<Account> = (0..20).map(|k| account(k, if k % 4 == 0 { 0 } else { 100 + i64::from(k) })).collect();
        let sweeps = sweep("m", &subs);
        assert_eq!(sweeps.len(), 15, "one for each of the 15 holding money");
        assert_eq!(
            sweeps[0].legs[0],
            Leg { account: AccountId::credit("m", 19), amount: Decimal::new(-119, 0) / Decimal::ONE_HUNDRED }
        );
        assert_eq!(sweeps, sweep("m", &subs), "the same state, the same sweeps");
        let ids: HashSet<&str> = sweeps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.len(), 15);
        let moved: Decimal = sweeps.iter().map(|s| s.legs[1].amount).sum();
        assert_eq!(moved, subs.iter().map(|a| a.balance).sum::<Decimal>());
        for transfer in &sweeps {
            assert_eq!(transfer.legs[1].account, AccountId::merchant("m"));
            assert_eq!(spread_credits(transfer, &HashMap::from([("m".to_owned(), 20)])), *transfer, "not spread");
        }
        // One more credit on a sub-account: another sweep of it, the others' unchanged.
        let mut later = subs.clone();
        later[1].balance += Decimal::ONE;
        later[1].sequence += 1;
        let again: HashSet<String> = sweep("m", &later).into_iter().map(|s| s.id).collect();
        assert_eq!(again.iter().filter(|id| !ids.contains(id.as_str())).count(), 1);
        assert!(sweep("m", &[account(0, 0)]).is_empty(), "nothing to sweep: no transfer");
    }

    proptest! {
        /// Credits to a merchant with sub-accounts, debits from its main account that sweep first
        /// when it is short, and sweeps at random: money is conserved, nothing goes below a floor,
        /// the merchant's balance (the sum) is every credit less every debit, and a debit is
        /// refused only when the sum could not cover it.
        #[test]
        fn a_sharded_merchant_keeps_its_money(moves in prop::collection::vec((0u8..3, 1i64..5_000), 1..120), shards in 2u32..12) {
            let by_merchant = HashMap::from([("m".to_owned(), shards)]);
            let (user, main) = (AccountId::funding("u"), AccountId::merchant("m"));
            let mut state = HashMap::new();
            let mut history = Vec::new();
            let mut expected = Decimal::ZERO;
            let merchant_total = |state: &HashMap<AccountId, Account>| -> Decimal {
                state.values().filter(|a| a.id.merchant_id() == Some("m")).map(|a| a.balance).sum()
            };
            for (i, (what, cents)) in moves.into_iter().enumerate() {
                let money = Money::new(Decimal::new(cents, 2), "USD".parse().unwrap()).unwrap();
                let id = format!("t{i}");
                match what {
                    0 => {
                        let pay = Transfer::between(id, money, user.clone(), main.clone(), "pay", "p".into()).unwrap();
                        apply(&mut state, &mut history, &spread_credits(&pay, &by_merchant)).unwrap();
                        expected += money.amount();
                    }
                    1 => {
                        let refund = Transfer::between(id, money, main.clone(), user.clone(), "refund", "p".into()).unwrap();
                        let mut outcome = apply(&mut state, &mut history, &refund);
                        if matches!(outcome, Err(LedgerError::InsufficientFunds { .. })) {
                            sweep_all(&mut state, &mut history, shards);
                            outcome = apply(&mut state, &mut history, &refund);
                        }
                        match outcome {
                            Ok(()) => expected -= money.amount(),
                            Err(_) => prop_assert!(merchant_total(&state) < money.amount(), "refused though the sum covered it"),
                        }
                    }
                    _ => sweep_all(&mut state, &mut history, shards),
                }
                prop_assert_eq!(state.values().map(|a| a.balance).sum::<Decimal>(), Decimal::ZERO);
                prop_assert!(state.values().all(|a| a.available().is_none_or(|x| x >= Decimal::ZERO)));
                prop_assert_eq!(merchant_total(&state), expected);
            }
            for account in state.values() {
                let postings: Vec<Posting> = history.iter().filter(|p| p.account == account.id).cloned().collect();
                prop_assert_eq!(replay(&postings), Some(account.balance));
            }
        }
    }

    fn sweep_all(state: &mut HashMap<AccountId, Account>, history: &mut Vec<Posting>, shards: u32) {
        let subs: Vec<Account> = (0..shards).filter_map(|k| state.get(&AccountId::credit("m", k)).cloned()).collect();
        for transfer in sweep("m", &subs) {
            apply(state, history, &transfer).unwrap();
        }
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
