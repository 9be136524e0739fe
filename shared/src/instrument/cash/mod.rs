//! Money moved through the bank port with a user's instruments (capability 9): a cash-in debits one
//! of the user's instruments (a card or a bank account) and credits their wallet; a cash-out holds
//! wallet money, pays it out to one of their bank accounts, then captures the hold or releases it;
//! a partner's charge (`crate::instrument::link`) debits a linked instrument as a cash-in does and
//! pays the partner's merchant account.
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
//! (`funding:<instrument>/<currency>` -> `wallet:<user>`: the outside money is the card's or the
//! account's); a cash-out's hold (`wallet:<user>` -> `hold:<id>`) is in its start's transaction,
//! and its capture (to the funding account) and its release (back) share one transfer id, so at
//! most one of them applies. A funding account is the instrument's own in one currency, so no other
//! use of outside money can make a settlement not fit it.

pub mod api;
pub mod checks;
pub mod service;
pub mod store;

use std::collections::{HashMap, HashSet};

use rust_decimal::Decimal;
use serde::Serialize;

use crate::instrument::Instrument;
use crate::ledger::{AccountId, Books, LedgerError, Transfer, TransferRecord, shown};
use crate::money::{Currency, Money};
use crate::problem::catalogue;
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

/// What a window admits: per movement, per rolling 24 hours, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_movement: Decimal,
    pub per_window: Decimal,
    pub count: usize,
}

impl Caps {
    /// A user's own cash-ins or cash-outs in `currency`.
    pub fn cash(currency: Currency) -> Self {
        Caps {
            per_movement: movement_limit(currency),
            per_window: window_limit(currency),
            count: MAX_MOVEMENTS_PER_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From an instrument into the wallet.
    In,
    /// From the wallet out to a bank account.
    Out,
    /// From a linked instrument to the partner that charges it.
    Charge,
    /// A partner's charge paid back, from its merchant account to the instrument.
    Refund,
}

impl Direction {
    const ALL: [Direction; 4] = [Direction::In, Direction::Out, Direction::Charge, Direction::Refund];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Charge => "charge",
            Direction::Refund => "refund",
        }
    }

    /// Whether the bank is asked to pay the instrument (a payout), after a hold; else to debit it.
    pub fn pays_out(self) -> bool {
        matches!(self, Direction::Out | Direction::Refund)
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == text)
    }

    /// A movement's id starts so: `ci_` a cash-in, `co_` a cash-out, `ch_` a partner's charge,
    /// `rf_` its refund.
    pub fn id_prefix(self) -> &'static str {
        match self {
            Direction::In => "ci_",
            Direction::Out => "co_",
            Direction::Charge => "ch_",
            Direction::Refund => "rf_",
        }
    }

    /// The direction of a movement id, by its prefix.
    pub fn of_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| id.starts_with(d.id_prefix()))
    }
}

/// Whom a partner's charge pays, and under which consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeOf {
    pub partner: String,
    pub link: String,
    /// The partner's merchant account, paid the charge.
    pub merchant: String,
    /// The token the partner charged: all it knows the instrument by.
    pub token: String,
    /// The keyed token of the number charged (`crate::instrument::store`): a refund goes back to
    /// that number only, not to one the instrument was replaced by since.
    pub number_token: String,
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
    /// A cash-out or a charge (about to be) sent to the bank: a cash-out's outcome is asked by its
    /// status from then on (one never sent is sent by its check); a charge never sent is not sent
    /// by its check.
    pub asked: bool,
    /// A partner's charge or refund: whom it pays or who pays it back (`None` for the user's own
    /// cash-ins and cash-outs).
    pub charge: Option<ChargeOf>,
    /// A refund: the charge it pays back.
    pub refund_of: Option<String>,
    /// A charge: how much of it its refunds (pending or paid) took back.
    pub refunded: Decimal,
}

impl Movement {
    /// A new movement of `amount` with `user`'s `instrument`, pending from `now` (a charge or a
    /// refund sets whom it pays or pays back).
    pub fn pending(
        id: String,
        user: &str,
        direction: Direction,
        instrument: &Instrument,
        amount: Money,
        now: i64,
    ) -> Self {
        Movement {
            id,
            user: user.to_owned(),
            direction,
            instrument_id: instrument.id.clone(),
            instrument_label: instrument.label(),
            amount,
            state: CashState::Pending,
            created_at: now,
            decided_at: None,
            reason: None,
            asked: false,
            charge: None,
            refund_of: None,
            refunded: Decimal::ZERO,
        }
    }

    /// The bank's reference: the bank moves a reference once, so asking again is safe.
    pub fn reference(&self) -> String {
        self.cause()
    }

    /// What caused the movement's transfers (their `cause`).
    pub fn cause(&self) -> String {
        match self.direction {
            Direction::In => format!("cash-in/{}", self.id),
            Direction::Out => format!("cash-out/{}", self.id),
            Direction::Charge => format!("charge/{}", self.id),
            Direction::Refund => format!("refund/{}", self.id),
        }
    }

    /// The transfer id of a cash-in's credit or a charge's payment, or of a cash-out's capture or
    /// release (one id: at most one of them applies).
    pub fn settlement_id(&self) -> String {
        match self.direction {
            Direction::In | Direction::Charge => self.cause(),
            Direction::Out | Direction::Refund => format!("{}/settle", self.cause()),
        }
    }

    /// The outside money a movement comes from or goes to: its instrument's, in its currency (an
    /// account holds one currency; an instrument may be charged in another than the wallet's).
    pub fn funding(&self) -> AccountId {
        AccountId::funding(&format!("{}/{}", self.instrument_id, self.amount.currency()))
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

    /// Where a payout's money is held from and a declined one's goes back: a cash-out's wallet, a
    /// refund's partner's merchant account.
    fn payer(&self) -> AccountId {
        match (self.direction, &self.charge) {
            (Direction::Refund, Some(charge)) => AccountId::merchant(&charge.merchant),
            _ => AccountId::wallet(&self.user),
        }
    }

    /// A payout's hold: the money set aside for it (a cash-out's from the wallet, a refund's from
    /// the partner's merchant account).
    pub fn hold(&self) -> Result<Transfer, LedgerError> {
        let kind = if self.direction == Direction::Refund { "link.refund_hold" } else { "cash.out_hold" };
        self.transfer(self.hold_id(), self.payer(), AccountId::hold(&self.id), kind)
    }

    /// The transfer the bank's approval makes: a cash-in's credit, a charge's payment to the
    /// partner's merchant account, a cash-out's capture.
    pub fn on_approval(&self) -> Result<Transfer, LedgerError> {
        let (from, to, kind) = match (self.direction, &self.charge) {
            (Direction::Charge, Some(charge)) => (self.funding(), AccountId::merchant(&charge.merchant), "link.charge"),
            (Direction::Out, _) => (AccountId::hold(&self.id), self.funding(), "cash.out"),
            (Direction::Refund, _) => (AccountId::hold(&self.id), self.funding(), "link.refund"),
            _ => (self.funding(), AccountId::wallet(&self.user), "cash.in"),
        };
        self.transfer(self.settlement_id(), from, to, kind)
    }

    /// A declined payout's release of its hold (a declined cash-in or charge moves nothing).
    pub fn release(&self) -> Result<Transfer, LedgerError> {
        let kind = if self.direction == Direction::Refund { "link.refund_release" } else { "cash.out_release" };
        self.transfer(self.settlement_id(), AccountId::hold(&self.id), self.payer(), kind)
    }

    /// A cash-in or a cash-out as its user sees it (a partner sees its charges by `partner_view`).
    pub fn view(&self) -> MovementView {
        MovementView {
            instrument_id: self.instrument_id.clone(),
            instrument: self.instrument_label.clone(),
            facts: self.facts(),
        }
    }

    /// What a partner sees of its charge or refund: the token it charged, never the instrument's id
    /// or label.
    pub fn partner_view(&self) -> PartnerChargeView {
        // Only a partner's charges and refunds are shown to it, and each has its `charge`.
        let (token, partner_id, link_id) = self
            .charge
            .as_ref()
            .map(|charge| (charge.token.clone(), charge.partner.clone(), charge.link.clone()))
            .unwrap_or_default();
        PartnerChargeView {
            token,
            partner_id,
            link_id,
            refunded: (self.direction == Direction::Charge)
                .then(|| self.amount.currency().rescale(self.refunded).to_string()),
            refund_of: self.refund_of.clone(),
            facts: self.facts(),
        }
    }

    fn facts(&self) -> MovementFacts {
        MovementFacts {
            id: self.id.clone(),
            direction: self.direction.as_str(),
            amount: self.amount.amount().to_string(),
            currency: self.amount.currency().code(),
            state: self.state.as_str(),
            created_at: self.created_at,
            decided_at: self.decided_at,
            reason: self.reason.clone(),
            // The bank's own decline (a cash-in is always sent; the others once marked asked), as a
            // code the error-flow table answers: never retried.
            decline_code: (self.state == CashState::Declined && (self.direction == Direction::In || self.asked))
                .then_some(catalogue::BANK_DECLINED.code()),
        }
    }
}

/// A cash-in or a cash-out as its user sees it.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MovementView {
    pub instrument_id: String,
    /// How the instrument shows (`visa 1111`, `DE 3000`), though it may be removed since.
    pub instrument: String,
    #[serde(flatten)]
    pub facts: MovementFacts,
}

/// A partner's charge, or a refund of one, as the partner sees it: the token it charged, never the
/// instrument's id or label.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PartnerChargeView {
    pub token: String,
    pub partner_id: String,
    /// The link it was made under.
    pub link_id: String,
    /// A charge: how much of it its refunds (pending or paid) took back, in the currency's decimals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded: Option<String>,
    /// A refund: the charge it pays back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<String>,
    #[serde(flatten)]
    pub facts: MovementFacts,
}

/// What a movement's user, or its partner, sees of it alike.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MovementFacts {
    pub id: String,
    /// `in` (a cash-in), `out` (a cash-out), `charge` (a partner's) or `refund` (of a charge).
    pub direction: &'static str,
    /// In the currency's decimals.
    pub amount: String,
    pub currency: &'static str,
    /// `pending` (the bank's answer is owed: its check settles it; GET it again), `completed` or
    /// `declined`.
    pub state: &'static str,
    pub created_at: i64,
    /// When it was completed or declined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<i64>,
    /// Why it was declined, in the bank's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `bank_declined` when the bank itself declined it: a code the error-flow table answers,
    /// never retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decline_code: Option<&'static str>,
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
    /// The window with `amount` added at `now` within `caps`, its entries older than the window
    /// dropped; or why it may not be added.
    pub fn admit(&self, amount: Money, now: i64, caps: Caps) -> Result<Window, LimitRefusal> {
        if amount.amount() > caps.per_movement {
            return Err(LimitRefusal::Movement { limit: caps.per_movement });
        }
        let mut entries = self.recent(now);
        if entries.len() >= caps.count {
            return Err(LimitRefusal::Count { limit: caps.count });
        }
        let used: Decimal = entries.iter().map(|(_, a)| *a).sum();
        if used + amount.amount() > caps.per_window {
            return Err(LimitRefusal::Window { limit: caps.per_window, used });
        }
        entries.push((now, amount.amount()));
        Ok(Window { version: self.version + 1, entries })
    }

    /// The entries of the 24 hours before `now`.
    pub fn recent(&self, now: i64) -> Vec<(i64, Decimal)> {
        self.entries.iter().copied().filter(|(at, _)| *at > now - WINDOW_SECONDS).collect()
    }
}

/// What must hold of cash movements and the money they moved (`crate::reconcile`; `books` holds at
/// least the payouts' hold accounts, and `movements` every movement whose money they show): a
/// cash-in (a charge) credited its user's wallet (its partner's merchant account) from its
/// instrument's funding account exactly its amount if and only if it completed; a payout (a
/// cash-out, a refund) held exactly its amount from the wallet (the partner's account), and its
/// hold was captured whole to the instrument's funding account if it completed, released whole if
/// declined, neither while pending (its hold account holds the amount until then, nothing after); a
/// charge's `refunded` is what its refunds not declined add up to, never more than the charge, and
/// only a completed charge has any; no movement stays pending more than `slack` seconds after it
/// started; and no cash transfer was made for a movement that is not recorded.
pub fn check_cash(movements: &[Movement], books: &Books, now: i64, slack: i64) -> Vec<Violation> {
    let transfers = books.transfers_by_id();
    let balances: HashMap<&AccountId, Decimal> = books.accounts.iter().map(|a| (&a.id, a.balance)).collect();
    let mut violations = Vec::new();
    for movement in movements {
        let mut problem = |text: String| violations.push(Violation::record(format!("cash {}", movement.id), text));
        let record = |transfer: Result<Transfer, LedgerError>| transfer.ok().map(|t| TransferRecord::of(&t));
        if movement.direction.pays_out() {
            let hold = transfers.get(movement.hold_id().as_str()).copied();
            if hold != record(movement.hold()).as_ref() {
                problem(format!("has no hold of its amount from its payer (its hold: {})", shown(hold)));
            }
            let held = balances.get(&AccountId::hold(&movement.id)).copied().unwrap_or_default();
            let holds_now = if movement.state == CashState::Pending { movement.amount.amount() } else { Decimal::ZERO };
            if held != holds_now {
                problem(format!("is {} but its hold account holds {held}", movement.state.as_str()));
            }
        }
        let expected = match (movement.state, movement.direction) {
            (CashState::Completed, _) => record(movement.on_approval()),
            (CashState::Declined, Direction::Out | Direction::Refund) => record(movement.release()),
            _ => None,
        };
        let settled = transfers.get(movement.settlement_id().as_str()).copied();
        if settled != expected.as_ref() {
            problem(format!("is {} but it moved {}", movement.state.as_str(), shown(settled)));
        }
        if movement.state == CashState::Pending && now > movement.created_at + slack {
            problem(format!("is still pending {} s after it started", now - movement.created_at));
        }
        if movement.direction == Direction::Charge {
            let refunds: Decimal = movements
                .iter()
                .filter(|r| r.refund_of.as_deref() == Some(movement.id.as_str()) && r.state != CashState::Declined)
                .map(|r| r.amount.amount())
                .sum();
            let most = if movement.state == CashState::Completed { movement.amount.amount() } else { Decimal::ZERO };
            if movement.refunded != refunds || refunds > most {
                problem(format!(
                    "is {} with {} refunded but its refunds add up to {refunds}",
                    movement.state.as_str(),
                    movement.refunded
                ));
            }
        }
    }
    let recorded: HashSet<String> = movements.iter().map(Movement::cause).collect();
    let ours = |kind: &str| kind.starts_with("cash.") || kind.starts_with("link.");
    for transfer in books.transfers.iter().filter(|t| ours(&t.kind) && !recorded.contains(&t.cause)) {
        violations.push(Violation::record(format!("transfer {}", transfer.id), "moved cash for no recorded movement"));
    }
    violations
}

#[cfg(test)]
mod tests;
