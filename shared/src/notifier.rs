//! The notifier (template.yaml `NotifierFunction`): consumes the notifications queue
//! (`crate::queues::NotificationMessage`) and sweeps the outbox on a schedule. It owns the
//! delivery through `crate::batch` (duplicates skipped, retries with backoff, poison to the
//! dead-letter queue at once) and hands each message to the capability it is about:
//!
//! - `order.*`: `crate::purchase::notices`
//! - `miniapp.outcome`: `crate::miniapp::notices`
//! - `offline.*`: `crate::offline::notices`
//! - `transfer.*`: `crate::instruction::notices`
//! - `link.changed`, `instrument.updated`: `crate::instrument::link::notices`
//!
//! A message is handled once: its outbox item is deleted when its capability is done with it.
//!
//! The sweeper sends again what the outbox holds overdue, whichever queue it is for, and moves
//! what its sweeps never got handled to that queue's dead-letter queue (`crate::outbox`); the same
//! tick sweeps popular merchants' credit sub-accounts into their accounts (`crate::ledger`).

use std::sync::Arc;

use aws_lambda_events::sqs::SqsEvent;
use serde_json::Value;

use crate::aws::{self, MissingEnv};
use crate::batch::{Backoff, Batch, Failure, QueueMessage};
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::instruction::notices::OperationNotices;
use crate::instrument::link::notices::LinkNotices;
use crate::keys::KeyService;
use crate::ledger::store::LedgerStore;
use crate::merchant::directory::MerchantDirectory;
use crate::merchant::store::MerchantStore;
use crate::miniapp::notices::OutcomeNotices;
use crate::offline::notices::OfflineNotices;
use crate::outbox::{DeadLetterQueues, Outbox};
use crate::purchase::notices::OrderNotices;
use crate::queues::NotificationMessage;

/// How long one tick sweeps the outbox, and after it the popular merchants' credit sub-accounts,
/// before leaving the rest to the next: the function's `Timeout` is 30 s.
const SWEEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);
const CREDIT_SWEEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Notifier {
    orders: OrderNotices,
    miniapps: OutcomeNotices,
    offline: OfflineNotices,
    operations: OperationNotices,
    links: LinkNotices,
    outbox: Outbox,
    ledger: LedgerStore,
    batch: Batch,
    sweep_grace_seconds: i64,
    /// How often this process sweeps credit sub-accounts, and when it last did: not at every tick
    /// of the outbox's schedule, which may be seconds apart, and its work is not urgent.
    credit_sweep_every: std::time::Duration,
    last_credit_sweep: std::sync::Mutex<Option<std::time::Instant>>,
    dead_letters: DeadLetterQueues,
}

fn number<T: std::str::FromStr>(name: &str) -> Result<T, MissingEnv> {
    aws::env(name)?.parse().map_err(|_| MissingEnv(format!("{name} (a number)")))
}

impl Notifier {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let sqs = aws_sdk_sqs::Client::new(&config);
        let keys = KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?);
        let outbox = Outbox::new(dynamodb.clone(), sqs.clone(), aws::env("OUTBOX_TABLE")?);
        // One directory, so a merchant's keys are unwrapped once per process whatever the message.
        let merchants = Arc::new(MerchantDirectory::new(
            MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            keys.clone(),
        ));
        let conversations = ConversationStore::new(dynamodb.clone(), aws::env("CONVERSATIONS_TABLE")?);
        Ok(Notifier {
            orders: OrderNotices::from_env(&dynamodb, merchants.clone(), conversations.clone(), outbox.clone())?,
            miniapps: OutcomeNotices::from_env(&dynamodb, keys.clone(), conversations.clone(), outbox.clone())?,
            links: LinkNotices::from_env(&dynamodb, keys)?,
            operations: OperationNotices::from_env(
                &dynamodb,
                merchants.clone(),
                conversations.clone(),
                outbox.clone(),
            )?,
            offline: OfflineNotices::from_env(&dynamodb, merchants, conversations)?,
            batch: Batch::from_env(
                outbox.clone(),
                sqs,
                "NOTIFICATIONS_QUEUE_URL",
                Some(Backoff { base_seconds: number("WEBHOOK_BACKOFF_SECONDS")? }),
            )?,
            outbox,
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            sweep_grace_seconds: number("OUTBOX_SWEEP_GRACE_SECONDS")?,
            credit_sweep_every: std::time::Duration::from_secs(number("CREDIT_SWEEP_SECONDS")?),
            last_credit_sweep: std::sync::Mutex::new(None),
            dead_letters: DeadLetterQueues::parse(&aws::env("OUTBOX_DEAD_LETTER_QUEUES")?)
                .map_err(|e| MissingEnv(format!("OUTBOX_DEAD_LETTER_QUEUES ({e})")))?,
        })
    }

    /// An SQS batch (`Records`) or the schedule's tick (anything else: sweep the outbox, moving what
    /// its sweeps never got handled to its queue's dead-letter queue).
    pub async fn handle(&self, event: Value) -> Result<Value, lambda_runtime::Error> {
        if event.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event)?;
            let response = self.batch.run(batch, |message| self.process(message)).await;
            return Ok(serde_json::to_value(response)?);
        }
        let now = now_epoch_seconds();
        let swept = self.outbox.sweep(now, self.sweep_grace_seconds, &self.dead_letters, SWEEP_BUDGET).await?;
        if swept.cut_short {
            tracing::warn!(sent = swept.sent, dead = swept.dead, "outbox sweep cut short; the next tick goes on");
        }
        // Then, if it is time, the credit sweep: bounded, and its failure only logged.
        let credit_sweeps = if self.credit_sweep_due() {
            match self.ledger.sweep_all_credits(now, CREDIT_SWEEP_BUDGET).await {
                Ok(applied) => applied,
                Err(e) => {
                    tracing::error!(error = %e, "the credit sweep could not list the merchants; it tries again later");
                    0
                }
            }
        } else {
            0
        };
        Ok(serde_json::json!({
            "swept": swept.sent, "dead": swept.dead, "cut_short": swept.cut_short, "credit_sweeps": credit_sweeps,
        }))
    }

    /// Whether this process's credit sweep is due, marking it done if so.
    fn credit_sweep_due(&self) -> bool {
        let Ok(mut last) = self.last_credit_sweep.lock() else { return true };
        let due = last.is_none_or(|at| at.elapsed() >= self.credit_sweep_every);
        if due {
            *last = Some(std::time::Instant::now());
        }
        due
    }

    async fn process(&self, message: NotificationMessage) -> Result<(), Failure> {
        match &message {
            NotificationMessage::OrderSettled { id, order } => self.orders.settled(id, order).await?,
            NotificationMessage::OrderExpire { order_id, .. } => self.orders.expire(order_id).await?,
            NotificationMessage::OrderRefunded { id, order, amount } => self.orders.refunded(id, order, amount).await?,
            NotificationMessage::MiniAppOutcome { id, request_id } => self.miniapps.outcome(id, request_id).await?,
            NotificationMessage::OfflineExpired { id, payment_id } => self.offline.expired(id, payment_id).await?,
            NotificationMessage::OfflineWaitingForFunds { user, message, at, .. } => {
                self.offline.waiting_for_funds(user, message, *at).await?
            }
            NotificationMessage::TransferChanged { id, operation_id, state } => {
                self.operations.changed(id, operation_id, state).await?
            }
            NotificationMessage::TransferRelease { operation_id, .. } => self.operations.release(operation_id).await?,
            NotificationMessage::TransferRefunded { id, operation_id, amount } => {
                self.operations.refunded(id, operation_id, amount).await?
            }
            NotificationMessage::LinkChanged { id, user, link_id, event } => {
                self.links.changed(id, user, link_id, event).await?
            }
            NotificationMessage::InstrumentUpdated { id, user, link_id, instrument_id } => {
                self.links.updated(id, user, link_id, instrument_id).await?
            }
        }
        Ok(self.outbox.done(message.id()).await?)
    }
}
