//! A cash movement from its request to its settled outcome, so that what the bank did is never lost
//! (used by the cash function's routes and by the checks on `CashQueue`).
//!
//! 1. `start`: ONE transaction records the movement `pending`, adds it to its window (the rolling
//!    limits), marks its instrument in use (it cannot be removed while the bank owes an outcome),
//!    pins the wallet's currency for a cash-in (a wallet holds one currency, and the credit must fit
//!    it) and writes the movement's check in the outbox; a cash-out's hold is in it too. All BEFORE
//!    the bank is asked. The check is due at once but not sent: the request asks the bank itself
//!    right after; only if it cannot settle the outcome does it send the check (delayed), and the
//!    outbox sweeper sends it anyway if the request died.
//! 2. `settle`: asks the bank, with the movement's reference. A cash-in asks for its debit (again:
//!    the bank debits a reference once). A cash-out is marked asked, then asks for its payout; a
//!    check asks for the status of a payout marked asked (a status is final: a payout the bank never
//!    received is declined for good), and sends one never asked (the request died before it).
//!    Approved: the credit or the capture, the movement `completed`, the instrument released and
//!    the check removed, in ONE transaction. Declined: the same with the movement `declined` (a
//!    cash-out's hold released). No verified answer: the outcome is unknown, not "nothing
//!    happened": the movement stays pending and its check asks again (SQS delivers it again after
//!    a growing wait, five times, then it waits in the dead-letter queue, whose alarm calls an
//!    operator; meanwhile the outbox sweeper keeps sending copies, so a bank back within its sweeps
//!    settles it anyway).

use aws_sdk_dynamodb::Client;

use super::store::{CASH_NEW, CASH_PENDING, CashStore, WALLET_CURRENCY, WINDOW_CURRENT};
use super::{Caps, CashState, Direction, LimitRefusal, Movement, Window};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::bank::{Bank, BankAnswer};
use crate::crypto::{Secret, open};
use crate::dynamo::{StoreError, TransactError, Write, transact};
use crate::idempotency::key_reused;
use crate::instrument::store::{INSTRUMENT_PRESENT, InstrumentStore};
use crate::instrument::{number_binding, number_key_owner};
use crate::keys::KeyService;
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::ledger::{AccountId, LedgerError, Transfer};
use crate::outbox::{Outbox, OutboxMessage};
use crate::problem::catalogue;
use crate::queues::CashMessage;

/// How long a check waits before asking the bank again, when the request could not settle.
const CHECK_DELAY_SECONDS: i32 = 10;

/// How often a start reads its window again when another movement changed it meanwhile.
const WINDOW_ATTEMPTS: u32 = 8;

/// What asking the bank settled.
#[derive(Debug)]
pub enum Settled {
    /// Completed or declined: the movement as it now stands.
    Decided(Box<Movement>),
    /// No verified answer (or the outcome did not commit yet): it stays pending.
    Unknown(String),
}

/// Who asks the bank: the request (a cash-out asks for its payout) or a check (for its status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Request,
    Check,
}

pub struct CashService {
    dynamodb: Client,
    pub movements: CashStore,
    pub instruments: InstrumentStore,
    /// Unwraps an instrument's data key under `InstrumentsKey` (context `owner=instrument/<id>`).
    numbers: KeyService,
    ledger: LedgerStore,
    pub outbox: Outbox,
    bank: Bank,
    queue: String,
}

/// Where a movement's rolling window is kept and what it admits: the user's own for cash-ins and
/// cash-outs, a link's consent for a partner's charge.
pub trait Allowance {
    /// The window as it stands and its caps; a refusal if the movement may not be made at all now.
    fn window(&self) -> impl std::future::Future<Output = Result<(Window, Caps), Problem>> + Send;

    /// `admitted` written over `read`, only if nobody changed it since (rule `WINDOW_CURRENT`), with
    /// whatever else the allowance keeps of the movement.
    fn writes(&self, read: &Window, admitted: &Window) -> Result<Vec<Write>, StoreError>;

    /// Why the window refused the movement.
    fn refusal(&self, refusal: LimitRefusal) -> Problem;

    /// The refusal a failed rule of `writes` means, if it is one of the allowance's own.
    fn broke(&self, _rules: &[&'static str]) -> Option<Problem> {
        None
    }
}

/// A user's own window in one direction and currency (`CashTable`).
pub struct CashAllowance<'a> {
    store: &'a CashStore,
    movement: &'a Movement,
}

impl Allowance for CashAllowance<'_> {
    async fn window(&self) -> Result<(Window, Caps), Problem> {
        let (user, direction, currency) =
            (&self.movement.user, self.movement.direction, self.movement.amount.currency());
        Ok((self.store.window(user, direction, currency).await?, Caps::cash(currency)))
    }

    fn writes(&self, read: &Window, admitted: &Window) -> Result<Vec<Write>, StoreError> {
        let m = self.movement;
        Ok(vec![self.store.window_item(&m.user, m.direction, m.amount.currency(), read, admitted)?])
    }

    fn refusal(&self, refusal: LimitRefusal) -> Problem {
        limit_problem(refusal, self.movement)
    }
}

fn limit_problem(refusal: LimitRefusal, movement: &Movement) -> Problem {
    let (currency, direction) = (movement.amount.currency(), movement.direction);
    let what = if direction == Direction::In { "cash-ins" } else { "cash-outs" };
    match refusal {
        LimitRefusal::Movement { limit } => Problem::new(
            catalogue::CASH_LIMIT_EXCEEDED,
            format!("one {} moves at most {limit} {currency}", &what[..what.len() - 1]),
        )
        .with("limit", "movement"),
        LimitRefusal::Window { limit, used } => Problem::new(
            catalogue::CASH_LIMIT_EXCEEDED,
            format!("{what} in {currency} add up to at most {limit} per rolling 24 hours; {used} was asked already"),
        )
        .with("limit", "window")
        .with("used", used.to_string()),
        LimitRefusal::Count { limit } => Problem::new(
            catalogue::CASH_LIMIT_EXCEEDED,
            format!("at most {limit} {what} in {currency} per rolling 24 hours"),
        )
        .with("limit", "count"),
    }
}

fn invalid(e: LedgerError) -> StoreError {
    StoreError::caused("the cash movement's transfer is invalid", e)
}

fn unknown_instrument() -> Problem {
    Problem::new(catalogue::UNKNOWN_INSTRUMENT, "no such instrument of yours")
}

impl CashService {
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = Client::new(config);
        Ok(CashService {
            movements: CashStore::new(dynamodb.clone(), aws::env("CASH_TABLE")?),
            instruments: InstrumentStore::new(dynamodb.clone(), aws::env("INSTRUMENTS_TABLE")?),
            numbers: KeyService::new(aws_sdk_kms::Client::new(config), aws::env("INSTRUMENTS_KEY_ID")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?),
            bank: Bank::from_env(config)?,
            queue: aws::env("CASH_QUEUE_URL")?,
            dynamodb,
        })
    }

    fn check(&self, movement: &Movement, delay_seconds: i32) -> Result<OutboxMessage, StoreError> {
        let message =
            CashMessage::Check { id: movement.check_id(), user: movement.user.clone(), movement: movement.id.clone() };
        message
            .outbox(&self.queue, delay_seconds)
            .map_err(|e| StoreError::caused("the cash check could not be written", e))
    }

    /// The user's own window for `movement` (a cash-in or a cash-out).
    pub fn cash_allowance<'a>(&'a self, movement: &'a Movement) -> CashAllowance<'a> {
        CashAllowance { store: &self.movements, movement }
    }

    /// Records `wanted` (pending) with its check, its place in `allowance` and (a cash-out) its hold,
    /// before the bank is asked; answers the movement as recorded (an earlier request's, for a retry).
    pub async fn start(&self, wanted: &Movement, allowance: &impl Allowance, now: i64) -> Result<Movement, Problem> {
        let (user, currency) = (wanted.user.as_str(), wanted.amount.currency());
        for _ in 0..WINDOW_ATTEMPTS {
            if let Some(recorded) = self.movements.get(user, &wanted.id).await? {
                return Ok(recorded);
            }
            let (read, caps) = allowance.window().await?;
            let admitted = read.admit(wanted.amount, now, caps).map_err(|refusal| allowance.refusal(refusal))?;
            let mut with = vec![
                self.movements.create_item(wanted)?,
                self.instruments.in_use_item(user, &wanted.instrument_id)?,
                self.outbox.put_item(&self.check(wanted, 0)?, now)?,
            ];
            with.extend(allowance.writes(&read, &admitted)?);
            let rules = match wanted.direction {
                Direction::Charge => match transact(&self.dynamodb, with).await {
                    Ok(()) => return Ok(wanted.clone()),
                    Err(TransactError::ConditionFailed(rules)) => rules,
                    Err(TransactError::Store(e)) => return Err(e.into()),
                },
                Direction::In => {
                    // A wallet holds one currency: the credit the bank's approval makes must fit it.
                    let wallet = AccountId::wallet(user);
                    if let Some(account) = self.ledger.account(&wallet).await? {
                        if account.currency != currency {
                            let mismatch = LedgerError::CurrencyMismatch {
                                account: wallet,
                                held: account.currency,
                                wanted: currency,
                            };
                            return Err(TransferError::Ledger(mismatch).into());
                        }
                    } else if let Some(pinned) = self.movements.pinned_currency(user).await?.filter(|p| *p != currency)
                    {
                        return Err(Problem::new(
                            catalogue::WALLET_CURRENCY_MISMATCH,
                            format!("your first cash-in fixed your wallet's currency: {pinned}; this is in {currency}"),
                        ));
                    }
                    with.push(self.movements.currency_pin_item(user, currency)?);
                    match transact(&self.dynamodb, with).await {
                        Ok(()) => return Ok(wanted.clone()),
                        Err(TransactError::ConditionFailed(rules)) => rules,
                        Err(TransactError::Store(e)) => return Err(e.into()),
                    }
                }
                Direction::Out | Direction::Refund => {
                    match self.ledger.apply(&wanted.hold().map_err(TransferError::from)?, with, now).await {
                        Ok(Applied::Now) => return Ok(wanted.clone()),
                        // Its hold exists: this movement's own (an answer lost), or one a key named
                        // once for another (its record expired since): never a start.
                        Ok(Applied::Already) => {
                            return self.movements.get(user, &wanted.id).await?.ok_or_else(key_reused);
                        }
                        Err(TransferError::Rejected(rule)) => vec![rule],
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            if let Some(refusal) = allowance.broke(&rules) {
                return Err(refusal);
            }
            match () {
                // Recorded meanwhile (this request's own commit whose answer was lost, or a retry's).
                _ if rules.contains(&CASH_NEW) => continue,
                _ if rules.contains(&INSTRUMENT_PRESENT) => return Err(unknown_instrument()),
                // Another movement changed the window, or pinned the wallet's currency: read again.
                _ if rules.contains(&WINDOW_CURRENT) || rules.contains(&WALLET_CURRENCY) => continue,
                _ => return Err(Problem::internal(format!("the cash movement's start was refused by {rules:?}"))),
            }
        }
        Err(Problem::new(
            catalogue::LEDGER_BUSY,
            "the user's other cash movements kept changing at the same time; nothing moved; retry with the same Idempotency-Key",
        ))
    }

    /// Asks the bank about pending `movement` and settles what it answers (see the module comment).
    pub async fn settle(&self, movement: &Movement, asker: Asker, now: i64) -> Result<Settled, StoreError> {
        let reference = movement.reference();
        let answer = match movement.direction {
            // A partner's charge the bank was never asked about is not sent by a check: its consent
            // may have ended since (the partner retries with its key, which looks again).
            Direction::Charge if asker == Asker::Check && !movement.asked => {
                BankAnswer::Declined("the charge never reached the bank".into())
            }
            Direction::In => self.bank.debit(&reference, self.number(movement).await?.expose(), movement.amount).await,
            Direction::Charge => {
                let number = self.number(movement).await?;
                self.movements.mark_asked(movement, now).await?;
                self.bank.debit(&reference, number.expose(), movement.amount).await
            }
            // Sent before (or being sent by the request meanwhile): only its status is asked now.
            Direction::Out | Direction::Refund if asker == Asker::Check && movement.asked => {
                self.bank.payout_status(&reference).await
            }
            Direction::Out | Direction::Refund => {
                let number = self.number(movement).await?;
                self.movements.mark_asked(movement, now).await?;
                self.bank.payout(&reference, number.expose(), movement.amount).await
            }
        };
        match answer {
            BankAnswer::Approved => {
                let transfer = movement.on_approval().map_err(invalid)?;
                self.decide(movement, CashState::Completed, None, Some(transfer), now).await
            }
            BankAnswer::Declined(reason) => {
                let release = match movement.direction {
                    Direction::In | Direction::Charge => None,
                    Direction::Out | Direction::Refund => Some(movement.release().map_err(invalid)?),
                };
                self.decide(movement, CashState::Declined, Some(&reason), release, now).await
            }
            BankAnswer::Unavailable(reason) => {
                tracing::warn!(movement = %movement.id, %reason, "no answer from the bank; the movement stays owed");
                if asker == Asker::Request {
                    self.outbox.send(&self.check(movement, CHECK_DELAY_SECONDS)?).await;
                }
                Ok(Settled::Unknown(reason))
            }
        }
    }

    /// Declines pending `movement` without asking the bank (a charge never sent whose consent ended).
    pub async fn decline_unsent(&self, movement: &Movement, reason: &str, now: i64) -> Result<Settled, StoreError> {
        self.decide(movement, CashState::Declined, Some(reason), None, now).await
    }

    /// The instrument's number, unsealed for the bank (never logged: `Secret`).
    async fn number(&self, movement: &Movement) -> Result<Secret<String>, StoreError> {
        let id = &movement.instrument_id;
        let (sealed, wrapped) = self.instruments.sealed_number(&movement.user, id).await?.ok_or_else(|| {
            StoreError::new(format!("instrument {id} of cash movement {} keeps no number", movement.id))
        })?;
        let key = self.numbers.decrypt(&number_key_owner(id), &wrapped).await?;
        open(&key, &sealed, number_binding(&movement.user, id).as_bytes())
            .and_then(|number| String::from_utf8(number).ok())
            .map(Secret::new)
            .ok_or_else(|| StoreError::new(format!("instrument {id}'s number does not open with its key")))
    }

    /// Decides `movement` once, with the transfer that outcome makes: answers it as it now stands.
    async fn decide(
        &self,
        movement: &Movement,
        state: CashState,
        reason: Option<&str>,
        transfer: Option<Transfer>,
        now: i64,
    ) -> Result<Settled, StoreError> {
        let mut with = vec![
            self.movements.decided_item(movement, state, reason, now)?,
            self.instruments.done_using_item(&movement.user, &movement.instrument_id)?,
            self.outbox.done_item(&movement.check_id())?,
        ];
        if state == CashState::Declined && movement.direction == Direction::Refund {
            with.push(self.movements.refund_returned_item(movement)?);
        }
        let committed = match transfer {
            Some(transfer) => match self.ledger.apply(&transfer, with, now).await {
                // Already: moved before, with this same decision in its transaction.
                Ok(_) | Err(TransferError::Rejected(CASH_PENDING)) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
            None => match transact(&self.dynamodb, with).await {
                Ok(()) => Ok(()),
                Err(e) if e.broke(CASH_PENDING) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        };
        if let Err(reason) = committed {
            tracing::error!(movement = %movement.id, %reason, "the bank answered; the outcome did not commit yet");
            return Ok(Settled::Unknown(reason));
        }
        match self.movements.get(&movement.user, &movement.id).await? {
            // Its settlement's transfer exists but its decision is not recorded: never silently.
            Some(still) if still.state == CashState::Pending => {
                tracing::error!(movement = %movement.id, "the settlement's transfer exists, the movement is still pending");
                Ok(Settled::Unknown("the settlement's transfer exists but its decision did not commit".into()))
            }
            Some(decided) => Ok(Settled::Decided(Box::new(decided))),
            None => Err(StoreError::new(format!("cash movement {} is gone", movement.id))),
        }
    }
}
