//! The invariant checker: what must hold of the books at any quiet moment, whatever crashed,
//! retried or raced before it. Used by the ledger's concurrency test and the fault test, and
//! meant for the operators' reconciliation report. The checks are pure, over what was read from the
//! ledger table (`crate::ledger::Books`, read by `LedgerStore::books`).
//!
//! - money is conserved: in each currency, the balances sum to zero (every transfer's legs do, and
//!   outside money is the funding accounts' negative balance);
//! - no account is below its floor;
//! - every account's postings rebuild its balance, in an unbroken sequence up to the one read, and
//!   none goes beyond it (the books are of a quiet table); every posting has its account;
//! - every transfer is balanced, and has exactly its postings (one per leg, same account and amount);
//!   every posting belongs to a recorded transfer;
//! - a merchant's credit sub-account is debited only by a sweep into that merchant's main account;
//! - every business request moved money at most once: per cause, at most one hold, one settlement
//!   (capture or release), one mini-app charge, one offline settlement; refunds never more than was
//!   captured.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use rust_decimal::Decimal;

use crate::ledger::{AccountId, AccountKind, Books, Posting, SWEEP_KIND, TransferRecord, replay};
use crate::money::Currency;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    NotConserved {
        currency: Currency,
        sum: Decimal,
    },
    BelowFloor {
        account: AccountId,
        balance: Decimal,
    },
    PostingsDoNotRebuild {
        account: AccountId,
        balance: Decimal,
        sequence: u64,
    },
    Unbalanced {
        transfer: String,
    },
    PostingsDiffer {
        transfer: String,
        legs: Vec<(AccountId, Decimal)>,
        postings: Vec<(AccountId, Decimal)>,
    },
    PostingWithoutTransfer {
        account: AccountId,
        sequence: u64,
        transfer: String,
    },
    MovedTwice {
        cause: String,
        kind: &'static str,
        transfers: Vec<String>,
    },
    RefundedMoreThanCaptured {
        cause: String,
        refunded: Decimal,
        captured: Decimal,
    },
    /// A transfer took money from a merchant's credit sub-account other than as a sweep of that
    /// merchant's sub-accounts into its main account.
    CreditNotSwept {
        transfer: String,
        account: AccountId,
    },
    /// A capability's record disagrees with the money it moved, or is stuck (its own checks:
    /// `purchase::check_orders`, `offline::payment::check_payments`, `outbox::check_outbox`).
    Record {
        record: String,
        problem: String,
    },
}

impl Violation {
    pub fn record(record: impl fmt::Display, problem: impl Into<String>) -> Self {
        Violation::Record { record: record.to_string(), problem: problem.into() }
    }

    /// What it is about, whatever it says of it: found again a moment later, a violation may read
    /// otherwise (an age, a balance that moved meanwhile), its subject does not.
    pub fn subject(&self) -> String {
        match self {
            Violation::NotConserved { currency, .. } => format!("conservation of {currency}"),
            Violation::BelowFloor { account, .. } => format!("floor of {account}"),
            Violation::PostingsDoNotRebuild { account, .. } => format!("postings of {account}"),
            Violation::Unbalanced { transfer } => format!("legs of {transfer}"),
            Violation::PostingsDiffer { transfer, .. } => format!("postings of transfer {transfer}"),
            Violation::PostingWithoutTransfer { account, sequence, .. } => format!("posting {sequence} of {account}"),
            Violation::MovedTwice { cause, kind, .. } => format!("{kind} of {cause}"),
            Violation::RefundedMoreThanCaptured { cause, .. } => format!("refunds of {cause}"),
            Violation::CreditNotSwept { transfer, .. } => format!("legs of {transfer}"),
            Violation::Record { record, .. } => record.clone(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::NotConserved { currency, sum } => write!(f, "{currency} balances sum to {sum}, not 0"),
            Violation::BelowFloor { account, balance } => write!(f, "{account} is below its floor: {balance}"),
            Violation::PostingsDoNotRebuild { account, balance, sequence } => {
                write!(f, "{account}'s postings do not rebuild its balance {balance} at sequence {sequence}")
            }
            Violation::Unbalanced { transfer } => write!(f, "transfer {transfer}'s legs do not sum to zero"),
            Violation::PostingsDiffer { transfer, legs, postings } => {
                write!(f, "transfer {transfer} has legs {legs:?} but postings {postings:?}")
            }
            Violation::PostingWithoutTransfer { account, sequence, transfer } => {
                write!(f, "{account}'s posting {sequence} names transfer {transfer}, which was never recorded")
            }
            Violation::MovedTwice { cause, kind, transfers } => {
                write!(f, "{cause} moved money more than once as {kind}: {transfers:?}")
            }
            Violation::RefundedMoreThanCaptured { cause, refunded, captured } => {
                write!(f, "{cause} refunded {refunded}, more than the {captured} captured")
            }
            Violation::CreditNotSwept { transfer, account } => {
                write!(
                    f,
                    "transfer {transfer} took money from {account} but is not a sweep into its merchant's account"
                )
            }
            Violation::Record { record, problem } => write!(f, "{record} {problem}"),
        }
    }
}

/// The transfer kinds a cause may make at most once, under the name of what they do. A capture and
/// a release of one order are one settlement: only one of them may ever apply.
fn once_per_cause(kind: &str) -> Option<&'static str> {
    match kind {
        "purchase.hold" => Some("purchase.hold"),
        "purchase.capture" | "purchase.release" => Some("purchase.settlement"),
        "miniapp.charge" => Some("miniapp.charge"),
        "offline.settle" => Some("offline.settle"),
        "cash.in" => Some("cash.in"),
        "cash.out_hold" => Some("cash.out_hold"),
        "cash.out" | "cash.out_release" => Some("cash.out_settlement"),
        "link.charge" => Some("link.charge"),
        "link.refund_hold" => Some("link.refund_hold"),
        "link.refund" | "link.refund_release" => Some("link.refund_settlement"),
        _ => None,
    }
}

/// Every violation of the books' invariants, read from a quiet table; none means they hold.
pub fn check(books: &Books) -> Vec<Violation> {
    check_as_read(books, &HashSet::new())
}

/// Every violation of the books as a live table gives them (`LedgerStore::books_as_read`): each
/// account at the sequence it was read at, and the transfers `in_flight` then (some leg posted only
/// after its account was read). Those are no violation: they are left out of the sums, and their
/// postings are not asked to match their legs yet.
pub fn check_as_read(books: &Books, in_flight: &HashSet<String>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut sums: BTreeMap<&str, (Currency, Decimal)> = BTreeMap::new();
    for account in &books.accounts {
        sums.entry(account.currency.code()).or_insert((account.currency, Decimal::ZERO)).1 += account.balance;
        if account.available().is_some_and(|available| available < Decimal::ZERO) {
            violations.push(Violation::BelowFloor { account: account.id.clone(), balance: account.balance });
        }
    }
    for posting in books.postings.iter().filter(|p| in_flight.contains(&p.transfer_id)) {
        if let Some(account) = books.accounts.iter().find(|a| a.id == posting.account) {
            sums.entry(account.currency.code()).or_insert((account.currency, Decimal::ZERO)).1 -= posting.amount;
        }
    }
    violations.extend(
        sums.into_values()
            .filter(|(_, sum)| !sum.is_zero())
            .map(|(currency, sum)| Violation::NotConserved { currency, sum }),
    );
    // A merchant's credit sub-accounts hold its account's currency: one in another is never swept.
    let merchants: HashMap<&str, Currency> = books
        .accounts
        .iter()
        .filter(|a| a.id.kind() == AccountKind::Merchant)
        .filter_map(|a| Some((a.id.merchant_id()?, a.currency)))
        .collect();
    for account in books.accounts.iter().filter(|a| a.id.kind() == AccountKind::Credit) {
        if let Some(currency) = account.id.merchant_id().and_then(|m| merchants.get(m))
            && *currency != account.currency
        {
            let problem = format!("holds {}, where its merchant's account holds {currency}", account.currency);
            violations.push(Violation::record(&account.id, problem));
        }
    }
    violations.extend(check_postings(books));
    violations.extend(check_transfers(books, in_flight));
    violations
}

fn check_postings(books: &Books) -> Vec<Violation> {
    let mut by_account: HashMap<&AccountId, Vec<Posting>> = HashMap::new();
    for posting in &books.postings {
        by_account.entry(&posting.account).or_default().push(posting.clone());
    }
    let mut violations = Vec::new();
    // The books are of a quiet table: a posting beyond its account's sequence is a leg written
    // without its balance, as much a violation as a missing one.
    for account in &books.accounts {
        let mut postings = by_account.remove(&account.id).unwrap_or_default();
        postings.sort_by_key(|p| p.sequence);
        if replay(&postings) != Some(account.balance) || postings.len() as u64 != account.sequence {
            violations.push(Violation::PostingsDoNotRebuild {
                account: account.id.clone(),
                balance: account.balance,
                sequence: account.sequence,
            });
        }
    }
    // Postings of an account that has no balance at all.
    let mut orphans: Vec<&AccountId> = by_account.into_keys().collect();
    orphans.sort();
    violations.extend(orphans.into_iter().map(|account| Violation::PostingsDoNotRebuild {
        account: account.clone(),
        balance: Decimal::ZERO,
        sequence: 0,
    }));
    violations
}

fn check_transfers(books: &Books, in_flight: &HashSet<String>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut postings_of: HashMap<&str, Vec<(AccountId, Decimal)>> = HashMap::new();
    for posting in &books.postings {
        postings_of.entry(&posting.transfer_id).or_default().push((posting.account.clone(), posting.amount));
    }
    let mut once: BTreeMap<(&str, &'static str), Vec<String>> = BTreeMap::new();
    let mut refunds: BTreeMap<&str, (Decimal, Decimal)> = BTreeMap::new();
    for transfer in &books.transfers {
        if transfer.legs.iter().map(|(_, amount)| *amount).sum::<Decimal>() != Decimal::ZERO {
            violations.push(Violation::Unbalanced { transfer: transfer.id.clone() });
        }
        let mut legs = transfer.legs.clone();
        let mut postings = postings_of.remove(transfer.id.as_str()).unwrap_or_default();
        legs.sort();
        postings.sort();
        if legs != postings && !in_flight.contains(&transfer.id) {
            violations.push(Violation::PostingsDiffer { transfer: transfer.id.clone(), legs, postings });
        }
        violations.extend(
            credits_taken_unswept(transfer)
                .map(|account| Violation::CreditNotSwept { transfer: transfer.id.clone(), account: account.clone() }),
        );
        if let Some(kind) = once_per_cause(&transfer.kind) {
            once.entry((&transfer.cause, kind)).or_default().push(transfer.id.clone());
        }
        match transfer.kind.as_str() {
            "purchase.capture" => refunds.entry(&transfer.cause).or_default().1 += transfer.amount(),
            "purchase.refund" => refunds.entry(&transfer.cause).or_default().0 += transfer.amount(),
            _ => {}
        }
    }
    for ((cause, kind), transfers) in once {
        if transfers.len() > 1 {
            violations.push(Violation::MovedTwice { cause: cause.to_owned(), kind, transfers });
        }
    }
    for (cause, (refunded, captured)) in refunds {
        if refunded > captured {
            violations.push(Violation::RefundedMoreThanCaptured { cause: cause.to_owned(), refunded, captured });
        }
    }
    // Postings whose transfer was never recorded (each once, at its first posting).
    let mut orphans: Vec<&Posting> =
        books.postings.iter().filter(|p| postings_of.contains_key(p.transfer_id.as_str())).collect();
    orphans.sort_by(|a, b| (&a.transfer_id, &a.account, a.sequence).cmp(&(&b.transfer_id, &b.account, b.sequence)));
    orphans.dedup_by(|a, b| a.transfer_id == b.transfer_id);
    violations.extend(orphans.into_iter().map(|p| Violation::PostingWithoutTransfer {
        account: p.account.clone(),
        sequence: p.sequence,
        transfer: p.transfer_id.clone(),
    }));
    violations
}

/// The credit sub-accounts `transfer` takes money from that it may not: any, unless it is a sweep
/// whose one credit is the main account of the merchant every sub-account it debits belongs to.
fn credits_taken_unswept(transfer: &TransferRecord) -> impl Iterator<Item = &AccountId> {
    let credits: Vec<&AccountId> =
        transfer.legs.iter().filter(|(_, amount)| *amount > Decimal::ZERO).map(|(account, _)| account).collect();
    let into = match credits.as_slice() {
        [main] if transfer.kind == SWEEP_KIND && main.kind() == AccountKind::Merchant => main.merchant_id(),
        _ => None,
    };
    transfer.legs.iter().filter_map(move |(account, amount)| {
        let taken = *amount < Decimal::ZERO && account.kind() == AccountKind::Credit;
        (taken && (into.is_none() || account.merchant_id() != into)).then_some(account)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Account, Transfer, TransferRecord, plan};
    use crate::money::Money;
    use proptest::prelude::*;

    /// The books after applying `transfers` the way the store does (planned against the current
    /// state; a refused one moves nothing).
    fn books_after(transfers: &[Transfer]) -> Books {
        let mut state: HashMap<AccountId, Account> = HashMap::new();
        let mut books = Books::default();
        for transfer in transfers {
            let Ok(writes) = plan(transfer, &state, 0) else { continue };
            for (update, posting) in writes {
                let account = Account {
                    id: update.account,
                    currency: transfer.currency,
                    balance: update.balance,
                    sequence: update.sequence,
                };
                state.insert(account.id.clone(), account);
                books.postings.push(posting);
            }
            books.transfers.push(TransferRecord::of(transfer));
        }
        books.accounts = state.into_values().collect();
        books
    }

    fn usd(cents: i64) -> Money {
        Money::new(Decimal::new(cents, 2), "USD".parse().unwrap()).unwrap()
    }

    fn transfer(id: &str, cents: i64, from: AccountId, to: AccountId, kind: &'static str, cause: &str) -> Transfer {
        Transfer::between(id.to_owned(), usd(cents), from, to, kind, cause.to_owned()).unwrap()
    }

    /// A funded wallet, a purchase's hold and its capture, a refund.
    fn purchase() -> Vec<Transfer> {
        let (wallet, hold, merchant) = (AccountId::wallet("u"), AccountId::hold("o"), AccountId::merchant("m"));
        vec![
            transfer("fund", 10_000, AccountId::funding("u"), wallet.clone(), "test.fund", "fund"),
            transfer("o/hold", 2_500, wallet.clone(), hold.clone(), "purchase.hold", "order/o"),
            transfer("o/settle", 2_500, hold, merchant.clone(), "purchase.capture", "order/o"),
            transfer("o/refund/1", 1_000, merchant, wallet, "purchase.refund", "order/o"),
        ]
    }

    #[test]
    fn books_kept_by_the_planner_hold_every_invariant() {
        assert_eq!(check(&books_after(&purchase())), []);
    }

    /// The books of `purchase()` as a live read finds them when the merchant's account is read
    /// before the refund and the wallet's after: the refund posted on one side only.
    fn read_mid_refund() -> Books {
        let mut books = books_after(&purchase());
        let merchant = AccountId::merchant("m");
        let refund =
            books.postings.iter().position(|p| p.account == merchant && p.transfer_id == "o/refund/1").unwrap();
        let posting = books.postings.remove(refund);
        let account = books.accounts.iter_mut().find(|a| a.id == merchant).unwrap();
        account.balance -= posting.amount;
        account.sequence -= 1;
        books
    }

    #[test]
    fn a_transfer_in_flight_at_a_live_read_is_no_violation_but_the_same_books_quiet_are() {
        let books = read_mid_refund();
        assert_eq!(check_as_read(&books, &HashSet::from(["o/refund/1".to_owned()])), []);
        let found = check(&books);
        assert!(found.iter().any(|v| matches!(v, Violation::NotConserved { .. })), "{found:?}");
        assert!(
            found.iter().any(|v| matches!(v, Violation::PostingsDiffer { transfer, .. } if transfer == "o/refund/1"))
        );
        // In flight excuses only its own transfer: another's lost posting is found.
        let mut books = read_mid_refund();
        let hold = books.postings.iter().position(|p| p.transfer_id == "o/hold").unwrap();
        books.postings.remove(hold);
        let found = check_as_read(&books, &HashSet::from(["o/refund/1".to_owned()]));
        assert!(found.iter().any(|v| matches!(v, Violation::PostingsDiffer { transfer, .. } if transfer == "o/hold")));
    }

    #[test]
    fn a_violation_found_again_later_has_the_same_subject_whatever_it_says() {
        let (first, later) = (
            Violation::record("order o_1", "still awaits the merchant 70 s after its expiry"),
            Violation::record("order o_1", "still awaits the merchant 74 s after its expiry"),
        );
        assert_eq!(first.subject(), later.subject());
        let wallet = AccountId::wallet("u");
        let below = |balance| Violation::BelowFloor { account: wallet.clone(), balance };
        assert_eq!(below(Decimal::NEGATIVE_ONE).subject(), below(-Decimal::TEN).subject());
        assert_ne!(first.subject(), below(Decimal::NEGATIVE_ONE).subject());
    }

    #[test]
    fn a_lost_posting_is_found_twice_over() {
        let mut books = books_after(&purchase());
        let lost = books.postings.iter().position(|p| p.transfer_id == "o/hold").unwrap();
        let posting = books.postings.remove(lost);
        let found = check(&books);
        assert!(
            found
                .iter()
                .any(|v| matches!(v, Violation::PostingsDoNotRebuild { account, .. } if *account == posting.account))
        );
        assert!(found.iter().any(|v| matches!(v, Violation::PostingsDiffer { transfer, .. } if transfer == "o/hold")));
    }

    #[test]
    fn a_leg_written_without_its_balance_and_postings_of_no_account_are_found() {
        // Both legs of the refund posted, neither account updated: the sums still balance.
        let mut books = books_after(&purchase());
        for account in books.accounts.iter_mut().filter(|a| a.id.as_str() != "hold:o" && a.id.as_str() != "funding:u") {
            let refund = books.postings.iter().find(|p| p.account == account.id && p.transfer_id == "o/refund/1");
            account.balance -= refund.map_or(Decimal::ZERO, |p| p.amount);
            account.sequence -= 1;
        }
        let mut rebuilt: Vec<_> = check(&books)
            .into_iter()
            .filter_map(|v| match v {
                Violation::PostingsDoNotRebuild { account, .. } => Some(account),
                _ => None,
            })
            .collect();
        rebuilt.sort();
        assert_eq!(rebuilt, [AccountId::merchant("m"), AccountId::wallet("u")]);
        let mut books = books_after(&purchase());
        books.accounts.retain(|a| a.id != AccountId::hold("o"));
        assert!(check(&books).contains(&Violation::PostingsDoNotRebuild {
            account: AccountId::hold("o"),
            balance: Decimal::ZERO,
            sequence: 0
        }));
    }

    #[test]
    fn money_made_from_nothing_is_not_conserved() {
        let mut books = books_after(&purchase());
        let wallet = books.accounts.iter_mut().find(|a| a.id == AccountId::wallet("u")).unwrap();
        wallet.balance += Decimal::ONE;
        let found = check(&books);
        assert!(found.contains(&Violation::NotConserved { currency: "USD".parse().unwrap(), sum: Decimal::ONE }));
        assert!(found.iter().any(|v| matches!(v, Violation::PostingsDoNotRebuild { .. })));
    }

    #[test]
    fn a_capture_and_a_release_of_one_order_is_money_moved_twice() {
        let mut transfers = purchase();
        transfers.truncate(3);
        // A release under another id: the hold is already empty, so a second hold is needed to apply it.
        let (wallet, hold) = (AccountId::wallet("u"), AccountId::hold("o"));
        transfers.push(transfer("o/hold-again", 2_500, wallet.clone(), hold.clone(), "purchase.hold", "order/o"));
        transfers.push(transfer("o/release", 2_500, hold, wallet, "purchase.release", "order/o"));
        let found = check(&books_after(&transfers));
        assert!(found.contains(&Violation::MovedTwice {
            cause: "order/o".into(),
            kind: "purchase.settlement",
            transfers: vec!["o/settle".into(), "o/release".into()],
        }));
        assert!(found.iter().any(|v| matches!(v, Violation::MovedTwice { kind: "purchase.hold", .. })));
    }

    #[test]
    fn refunds_beyond_the_capture_are_found() {
        let mut transfers = purchase();
        let (merchant, wallet) = (AccountId::merchant("m"), AccountId::wallet("u"));
        // The merchant's other sales pay for it.
        transfers.push(transfer("sales", 5_000, AccountId::funding("m"), merchant.clone(), "test.fund", "sales"));
        transfers.push(transfer("o/refund/2", 1_600, merchant, wallet, "purchase.refund", "order/o"));
        assert_eq!(
            check(&books_after(&transfers)),
            [Violation::RefundedMoreThanCaptured {
                cause: "order/o".into(),
                refunded: Decimal::new(2_600, 2),
                captured: Decimal::new(2_500, 2),
            }]
        );
    }

    #[test]
    fn a_posting_of_no_recorded_transfer_and_an_overdrawn_account_are_found() {
        let mut books = books_after(&purchase());
        books.transfers.retain(|t| t.id != "o/refund/1");
        let wallet = books.accounts.iter_mut().find(|a| a.id == AccountId::merchant("m")).unwrap();
        wallet.balance = Decimal::NEGATIVE_ONE;
        let found = check(&books);
        assert!(
            found
                .iter()
                .any(|v| matches!(v, Violation::PostingWithoutTransfer { transfer, .. } if transfer == "o/refund/1"))
        );
        assert!(
            found
                .contains(&Violation::BelowFloor { account: AccountId::merchant("m"), balance: Decimal::NEGATIVE_ONE })
        );
    }

    #[test]
    fn a_credit_sub_account_gives_money_only_to_a_sweep_into_its_merchant() {
        let sub = AccountId::credit("m", 1);
        let record = |id: &str, kind: &str, legs: &[(&AccountId, i64)]| TransferRecord {
            id: id.into(),
            currency: "USD".parse().unwrap(),
            kind: kind.into(),
            cause: "c".into(),
            legs: legs.iter().map(|(a, cents)| ((*a).clone(), Decimal::new(*cents, 2))).collect(),
        };
        let (main, other, wallet) = (AccountId::merchant("m"), AccountId::merchant("m2"), AccountId::wallet("u"));
        let sweep = record("s", SWEEP_KIND, &[(&sub, -100), (&AccountId::credit("m", 2), -50), (&main, 150)]);
        let credit = record("c", "purchase.capture", &[(&wallet, -100), (&sub, 100)]);
        assert_eq!(credits_taken_unswept(&sweep).count() + credits_taken_unswept(&credit).count(), 0);
        for wrong in [
            record("r", "purchase.refund", &[(&sub, -100), (&wallet, 100)]),
            record("s", SWEEP_KIND, &[(&sub, -100), (&other, 100)]),
            record("s", SWEEP_KIND, &[(&sub, -100), (&main, 50), (&wallet, 50)]),
            record("s", SWEEP_KIND, &[(&AccountId::credit("m2", 0), -100), (&sub, -100), (&main, 200)]),
        ] {
            assert_eq!(credits_taken_unswept(&wrong).count(), 1, "{wrong}");
        }
    }

    proptest! {
        /// Whatever transfers are tried (many refused for want of funds), the planner's books hold.
        #[test]
        fn any_sequence_of_planned_transfers_keeps_the_books(
            moves in proptest::collection::vec((0usize..5, 0usize..5, 1i64..5_000), 1..60),
        ) {
            let accounts = [
                AccountId::funding("bank"),
                AccountId::wallet("a"),
                AccountId::wallet("b"),
                AccountId::merchant("m"),
                AccountId::reserve("a"),
            ];
            let transfers: Vec<Transfer> = moves
                .iter()
                .enumerate()
                .filter(|(_, (from, to, _))| from != to)
                .map(|(i, (from, to, cents))| {
                    transfer(&format!("t{i}"), *cents, accounts[*from].clone(), accounts[*to].clone(), "test.move", &format!("c{i}"))
                })
                .collect();
            prop_assert_eq!(check(&books_after(&transfers)), vec![]);
        }
    }
}
