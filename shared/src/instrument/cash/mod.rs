//! Money in and out of the wallet through the bank port (capability 9): a cash-in debits one of the
//! user's instruments (a card or a bank account) and credits their wallet; a cash-out holds wallet
//! money, pays it out to one of their bank accounts, then captures the hold or releases it.
//!
//! - this module: the rules, pure: a movement and its states, its ledger transfers, the limits
//!   (per movement, and per rolling 24 hours in each direction and currency), and what must hold of
//!   the movements and the money they moved (`check_cash`).
//! - `store`: the movements and their windows (`CashTable`).
//! - `service`: a movement from its start to its settled outcome, never losing what the bank did.
//! - `api`: the user's routes; `checks`: the consumer of `CashQueue`, which settles what the request
//!   could not.
//!
//! A movement's life: `pending` (recorded, with its check in the outbox, BEFORE the bank is asked:
//! from then on its outcome is owed) -> `completed` or `declined`, exactly once (a conditional write
//! on the state, in the transaction of the money it moves). A cash-in's credit is one transfer
//! (`funding:<instrument>` -> `wallet:<user>`: the outside money is the card's or the account's);
//! a cash-out's hold (`wallet:<user>` -> `hold:<id>`) is in its start's transaction, and its capture
//! (to `funding:<instrument>`) and its release (back) share one transfer id, so at most one of them
//! applies. An instrument's funding account is its own, in the wallet's currency (a user's cash
//! movements are all in it), so no other use of outside money can make a settlement not fit.

pub mod api;
pub mod checks;
pub mod service;
pub mod store;

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::ledger::{AccountId, Books, LedgerError, Transfer, TransferRecord, shown};
use crate::money::{Currency, Money};
use crate::reconcile::Violation;

/// The rolling window the per-day limits count over.
pub const WINDOW_SECONDS: i64 = 24 * 60 * 60;

/// The most movements a user starts in one direction and currency per rolling 24 hours (each one
/// asked of the bank counts, declined or not: repeated declined attempts are how stolen cards are
/// tested).
pub const MAX_MOVEMENTS_PER_WINDOW: usize = 20;

/// The most one movement moves: a tenth of the currency's per-operation limit (USD 10,000).
pub fn movement_limit(currency: Currency) -> Decimal {
    currency.rescale(currency.limit() / Decimal::from(10))
}

/// The most a user moves in one direction and currency per rolling 24 hours, every movement asked
/// of the bank counting: a quarter of the currency's per-operation limit (USD 25,000).
pub fn window_limit(currency: Currency) -> Decimal {
    currency.rescale(currency.limit() / Decimal::from(4))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From an instrument into the wallet.
    In,
    /// From the wallet out to a bank account.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Direction::In, Direction::Out].into_iter().find(|d| d.as_str() == text)
    }

    /// A movement's id starts so: `ci_` a cash-in, `co_` a cash-out.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Direction::In => "ci_",
            Direction::Out => "co_",
        }
    }

    /// The direction of a movement id, by its prefix.
    pub fn of_id(id: &str) -> Option<Self> {
        [Direction::In, Direction::Out].into_iter().find(|d| id.starts_with(d.id_prefix()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CashState {
    /// Recorded and owed: the bank is being asked, or its answer is being had.
    Pending,
    /// A cash-in credited, a cash-out paid.
    Completed,
    /// The bank said no: a cash-in moved nothing, a cash-out's hold went back.
    Declined,
}

impl CashState {
    pub fn as_str(self) -> &'static str {
        match self {
            CashState::Pending => "pending",
            CashState::Completed => "completed",
            CashState::Declined => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [CashState::Pending, CashState::Completed, CashState::Declined].into_iter().find(|s| s.as_str() == text)
    }
}

/// One cash-in or cash-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub id: String,
    pub user: String,
    pub direction: Direction,
    pub instrument_id: String,
    /// How the instrument shows (`visa 1111`, `DE 3000`): the movement's record outlives it.
    pub instrument_label: String,
    pub amount: Money,
    pub state: CashState,
    pub created_at: i64,
    pub decided_at: Option<i64>,
    /// The bank's reason, for a declined movement.
    pub reason: Option<String>,
    /// A cash-out whose payout was (about to be) sent to the bank: what became of it is asked by
    /// its status from then on. One never sent is sent by its check.
    pub asked: bool,
}

impl Movement {
    /// The bank's reference: the bank moves a reference once, so asking again is safe.
    pub fn reference(&self) -> String {
        self.cause()
    }

    /// What caused the movement's transfers (their `cause`).
    pub fn cause(&self) -> String {
        match self.direction {
            Direction::In => format!("cash-in/{}", self.id),
            Direction::Out => format!("cash-out/{}", self.id),
        }
    }

    /// The transfer id of a cash-in's credit, or of a cash-out's capture or release (one id: at most
    /// one of them applies).
    pub fn settlement_id(&self) -> String {
        match self.direction {
            Direction::In => self.cause(),
            Direction::Out => format!("{}/settle", self.cause()),
        }
    }

    /// The outside money a movement comes from or goes to: its instrument's.
    pub fn funding(&self) -> AccountId {
        AccountId::funding(&self.instrument_id)
    }

    /// The transfer id of a cash-out's hold.
    pub fn hold_id(&self) -> String {
        format!("{}/hold", self.cause())
    }

    /// The outbox item (and `CashQueue` message) that keeps the movement's outcome from being lost.
    pub fn check_id(&self) -> String {
        format!("{}/check", self.cause())
    }

    fn transfer(
        &self,
        id: String,
        from: AccountId,
        to: AccountId,
        kind: &'static str,
    ) -> Result<Transfer, LedgerError> {
        Transfer::between(id, self.amount, from, to, kind, self.cause())
    }

    /// A cash-out's hold: the wallet's money set aside for the payout.
    pub fn hold(&self) -> Result<Transfer, LedgerError> {
        self.transfer(self.hold_id(), AccountId::wallet(&self.user), AccountId::hold(&self.id), "cash.out_hold")
    }

    /// The transfer the bank's approval makes: a cash-in's credit, a cash-out's capture.
    pub fn on_approval(&self) -> Result<Transfer, LedgerError> {
        match self.direction {
            Direction::In => {
                self.transfer(self.settlement_id(), self.funding(), AccountId::wallet(&self.user), "cash.in")
            }
            Direction::Out => {
                self.transfer(self.settlement_id(), AccountId::hold(&self.id), self.funding(), "cash.out")
            }
        }
    }

    /// A declined cash-out's release of its hold (a declined cash-in moves nothing).
    pub fn release(&self) -> Result<Transfer, LedgerError> {
        self.transfer(
            self.settlement_id(),
            AccountId::hold(&self.id),
            AccountId::wallet(&self.user),
            "cash.out_release",
        )
    }

    pub fn view(&self) -> Value {
        let mut view = json!({
            "id": self.id,
            "direction": self.direction.as_str(),
            "instrument_id": self.instrument_id,
            "instrument": self.instrument_label,
            "amount": self.amount.amount().to_string(),
            "currency": self.amount.currency().code(),
            "state": self.state.as_str(),
            "created_at": self.created_at,
        });
        if let Some(at) = self.decided_at {
            view["decided_at"] = at.into();
        }
        if let Some(reason) = &self.reason {
            view["reason"] = reason.as_str().into();
        }
        view
    }
}

/// What one user started in one direction and currency over the last `WINDOW_SECONDS`: the
/// movements' times and amounts, oldest first. Kept on one item written conditionally on its
/// `version`, so two movements racing for the last of a limit cannot both pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    /// 0: never written.
    pub version: u64,
    pub entries: Vec<(i64, Decimal)>,
}

/// Why a movement is over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitRefusal {
    /// Over what one movement may move.
    Movement { limit: Decimal },
    /// Over what the rolling 24 hours allow: `used` of `limit` already.
    Window { limit: Decimal, used: Decimal },
    /// As many movements as the rolling 24 hours allow.
    Count { limit: usize },
}

impl Window {
    /// The window with `amount` added at `now`, its entries older than the window dropped; or why
    /// it may not be added.
    pub fn admit(&self, amount: Money, now: i64) -> Result<Window, LimitRefusal> {
        let currency = amount.currency();
        if amount.amount() > movement_limit(currency) {
            return Err(LimitRefusal::Movement { limit: movement_limit(currency) });
        }
        let mut entries: Vec<(i64, Decimal)> =
            self.entries.iter().copied().filter(|(at, _)| *at > now - WINDOW_SECONDS).collect();
        if entries.len() >= MAX_MOVEMENTS_PER_WINDOW {
            return Err(LimitRefusal::Count { limit: MAX_MOVEMENTS_PER_WINDOW });
        }
        let used: Decimal = entries.iter().map(|(_, a)| *a).sum();
        if used + amount.amount() > window_limit(currency) {
            return Err(LimitRefusal::Window { limit: window_limit(currency), used });
        }
        entries.push((now, amount.amount()));
        Ok(Window { version: self.version + 1, entries })
    }
}

/// What must hold of cash movements and the money they moved (`crate::reconcile`; `books` holds at
/// least the cash-outs' hold accounts, and `movements` every movement whose money they show): a
/// cash-in credited its user's wallet from its instrument's funding account exactly its amount if
/// and only if it completed; a cash-out held exactly its amount from the wallet, and its hold was
/// captured whole to its instrument's funding account if it completed, released whole to the wallet if declined, neither while
/// pending (its hold account holds the amount until then, nothing after); no movement stays pending
/// more than `slack` seconds after it started; and no cash transfer was made for a movement that is
/// not recorded.
pub fn check_cash(movements: &[Movement], books: &Books, now: i64, slack: i64) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let balances: HashMap<&AccountId, Decimal> = books.accounts.iter().map(|a| (&a.id, a.balance)).collect();
    let mut violations = Vec::new();
    for movement in movements {
        let mut problem = |text: String| violations.push(Violation::record(format!("cash {}", movement.id), text));
        let record = |transfer: Result<Transfer, LedgerError>| transfer.ok().map(|t| TransferRecord::of(&t));
        if movement.direction == Direction::Out {
            let hold = transfers.get(movement.hold_id().as_str()).copied();
            if hold != record(movement.hold()).as_ref() {
                problem(format!("has no hold of its amount from its user's wallet (its hold: {})", shown(hold)));
            }
            let held = balances.get(&AccountId::hold(&movement.id)).copied().unwrap_or_default();
            let holds_now = if movement.state == CashState::Pending { movement.amount.amount() } else { Decimal::ZERO };
            if held != holds_now {
                problem(format!("is {} but its hold account holds {held}", movement.state.as_str()));
            }
        }
        let expected = match (movement.state, movement.direction) {
            (CashState::Completed, _) => record(movement.on_approval()),
            (CashState::Declined, Direction::Out) => record(movement.release()),
            _ => None,
        };
        let settled = transfers.get(movement.settlement_id().as_str()).copied();
        if settled != expected.as_ref() {
            problem(format!("is {} but it moved {}", movement.state.as_str(), shown(settled)));
        }
        if movement.state == CashState::Pending && now > movement.created_at + slack {
            problem(format!("is still pending {} s after it started", now - movement.created_at));
        }
    }
    let recorded: HashSet<String> = movements.iter().map(Movement::cause).collect();
    for transfer in books.transfers.iter().filter(|t| t.kind.starts_with("cash.") && !recorded.contains(&t.cause)) {
        violations.push(Violation::record(format!("transfer {}", transfer.id), "moved cash for no recorded movement"));
    }
    violations
}

#[cfg(test)]
mod tests;
