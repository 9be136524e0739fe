//! A top-up's bank debit, from the form to its settled outcome, so that money the bank took is
//! never left uncredited (used by the top-up page and by the settlement function).
//!
//! 1. `start`: one transaction marks the debit started on the link (fixing its amount) and writes
//!    a `DebitCheck` outbox item, BEFORE the bank is asked: from then on the debit's outcome is
//!    owed. The check is due at once but not sent: the page asks the bank itself right after, and
//!    the outbox sweeper sends the check only if the page did not settle it (a crash, a bank that
//!    did not answer).
//! 2. `settle`: asks the bank with the attempt's reference (the bank debits a reference once, so
//!    asking again is safe). Approved: the reserve is credited (funding -> reserve, the link marked
//!    paid, the payment's settlement job and the check's removal in ONE transaction). Declined: the
//!    link opens again and the check goes, in one transaction. No verified answer (a timeout, an
//!    unreadable answer): an unknown outcome, not "nothing happened": the check stays, and the
//!    settlement function asks again (SQS retries, then the sweeper, then the dead-letter queue and
//!    its alarm).

use aws_sdk_dynamodb::Client;

use super::topup::{TOPUP_DEBIT_CURRENT, TOPUP_OPEN, TOPUP_UNPAID, TopUp, TopUpStore};
use crate::bank::{Bank, BankAnswer};
use crate::dynamo::{StoreError, TransactError, transact};
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::ledger::{AccountId, Transfer};
use crate::money::Money;
use crate::outbox::{Outbox, OutboxMessage};
use crate::queues::{SettlementJob, SettlementMessage};

/// How a debit stands after `settle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebitOutcome {
    /// The reserve holds the money (now or before).
    Credited(Money),
    /// The bank said no: nothing moved; the link is open again.
    Declined(String),
    /// Not settled yet (no answer from the bank, or the credit did not commit): the check stays.
    Pending(String),
}

/// Why a debit could not start.
#[derive(Debug)]
pub enum StartError {
    /// The link is no longer open (paid, expired, another debit running or another amount fixed):
    /// look at it again.
    NotOpen,
    Store(StoreError),
}

pub struct TopUpDebits {
    pub dynamodb: Client,
    pub topups: TopUpStore,
    pub ledger: LedgerStore,
    pub outbox: Outbox,
    pub bank: Bank,
    pub settlement_queue: String,
}

impl TopUpDebits {
    pub fn from_env(config: &aws_config::SdkConfig, dynamodb: Client) -> Result<Self, crate::aws::MissingEnv> {
        use crate::aws::env;
        Ok(TopUpDebits {
            topups: TopUpStore::new(dynamodb.clone(), env("TOPUPS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), env("LEDGER_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), env("OUTBOX_TABLE")?),
            bank: Bank::from_env(config)?,
            settlement_queue: env("SETTLEMENT_QUEUE_URL")?,
            dynamodb,
        })
    }

    fn check(&self, topup: &TopUp) -> Result<OutboxMessage, StoreError> {
        let message = SettlementMessage::DebitCheck { id: topup.check_id(), topup: topup.key.clone() };
        message
            .outbox(&self.settlement_queue, 0)
            .map_err(|e| StoreError::caused("the debit check could not be written", e))
    }

    /// Starts a debit of `amount` on `topup` at `now`; answers the link as it now stands.
    pub async fn start(&self, topup: &TopUp, amount: Money, now: i64) -> Result<TopUp, StartError> {
        let items = vec![
            self.topups.start_debit_item(topup, amount, now).map_err(StartError::Store)?,
            self.outbox.put_item(&self.check(topup).map_err(StartError::Store)?, now).map_err(StartError::Store)?,
        ];
        match transact(&self.dynamodb, items).await {
            Ok(()) => Ok(TopUp { amount: Some(amount), debit_started_at: Some(now), ..topup.clone() }),
            Err(e) if e.broke(TOPUP_OPEN) => Err(StartError::NotOpen),
            Err(TransactError::ConditionFailed(rules)) => {
                Err(StartError::Store(StoreError::new(format!("debit start refused by {rules:?}"))))
            }
            Err(TransactError::Store(e)) => Err(StartError::Store(e)),
        }
    }

    /// Settles the outcome of `topup`'s started debit (see the module comment).
    pub async fn settle(&self, topup: &TopUp, now: i64) -> Result<DebitOutcome, StoreError> {
        let amount = topup.amount.ok_or_else(|| StoreError::new(format!("top-up {} has no amount", topup.label())))?;
        let check = topup.check_id();
        match self.bank.debit(&topup.debit_reference(), &topup.user, amount).await {
            BankAnswer::Approved => self.credit(topup, amount, now).await,
            BankAnswer::Declined(reason) => {
                let items = vec![self.topups.declined_item(topup, now)?, self.outbox.done_item(&check)?];
                match transact(&self.dynamodb, items).await {
                    Ok(()) => Ok(DebitOutcome::Declined(reason)),
                    // Settled meanwhile by the other path (the page or the check): the same answer.
                    Err(e) if e.broke(TOPUP_DEBIT_CURRENT) => Ok(DebitOutcome::Declined(reason)),
                    Err(e) => Err(StoreError::caused("the declined debit could not be recorded", e)),
                }
            }
            BankAnswer::Unavailable(reason) => {
                tracing::warn!(topup = topup.label(), %reason, "no answer from the bank; the debit stays owed");
                Ok(DebitOutcome::Pending(reason))
            }
        }
    }

    /// The bank approved: the money goes to the payer's reserve whatever became of the payment, and
    /// the payment's settlement job settles it only if it still waits.
    async fn credit(&self, topup: &TopUp, amount: Money, now: i64) -> Result<DebitOutcome, StoreError> {
        let transfer = Transfer::between(
            topup.transfer_id(),
            amount,
            AccountId::funding(&topup.user),
            AccountId::reserve(&topup.user),
            "offline.topup",
            format!("offline-payment/{}", topup.payment_id),
        )
        .map_err(|e| StoreError::caused("the top-up transfer is invalid", e))?;
        let job = SettlementMessage::Settle(SettlementJob {
            id: format!("{}/settle/{}", topup.payment_id, topup.label()),
            payment_id: topup.payment_id.clone(),
            expire_at: None,
            link: None,
        })
        .outbox(&self.settlement_queue, 0)
        .map_err(|e| StoreError::caused("the settlement job could not be written", e))?;
        let with = vec![
            self.topups.paid_item(topup, now)?,
            self.outbox.put_item(&job, now)?,
            self.outbox.done_item(&topup.check_id())?,
        ];
        match self.ledger.apply(&transfer, with, now).await {
            Ok(Applied::Now) => {
                self.outbox.send(&job).await;
                Ok(DebitOutcome::Credited(amount))
            }
            // Credited before (by the other path): nothing is owed any more.
            Ok(Applied::Already) => {
                self.outbox.done(&topup.check_id()).await?;
                Ok(DebitOutcome::Credited(amount))
            }
            // Paid before, or the link is gone: only the first is a credit.
            Err(TransferError::Rejected(TOPUP_UNPAID)) => match self.topups.get(&topup.key).await? {
                Some(current) if current.paid => {
                    self.outbox.done(&topup.check_id()).await?;
                    Ok(DebitOutcome::Credited(amount))
                }
                _ => {
                    tracing::error!(
                        topup = topup.label(),
                        "the bank approved a debit whose link is gone; it stays owed"
                    );
                    Ok(DebitOutcome::Pending("the link is gone".into()))
                }
            },
            Err(e) => {
                tracing::error!(topup = topup.label(), error = %e, "the bank approved; the credit did not commit yet");
                Ok(DebitOutcome::Pending(e.to_string()))
            }
        }
    }
}
