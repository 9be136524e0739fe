//! The settlement function (template.yaml `SettlementFunction`, SQS-triggered): moves an accepted
//! offline payment from the payer's offline reserve to the merchant, in one transaction with the
//! payment's new state. When the reserve does not cover it, the payment waits for funds: a top-up
//! link is made and the payer's message with it (through the outbox, so neither is lost) in one
//! transaction. A payment whose link expires ends `expired`, with the merchant's notice in the same
//! transaction, unless a debit was started on the link: then it waits for the bank's answer
//! (`crate::offline::debit`), whose checks this function also settles.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

use rust_decimal::Decimal;

use super::debit::{DebitOutcome, TopUpDebits};
use super::device::DeviceStore;
use super::payment::{OfflinePaymentView, PAYMENT_UNSETTLED, PAYMENT_WAITING, Payment, PaymentState, PaymentStore};
use super::topup::{AtExpiry, TOPUP_NO_DEBIT, TopUp, at_expiry, key_of, new_token};
use serde_json::json;

use crate::attention::{Action, AttentionStore, Class, Element};
use crate::aws::{self, MissingEnv};
use crate::batch::{Batch, Failure};
use crate::clock::now_epoch_seconds;
use crate::conversation::NewMessage;
use crate::dynamo::{StoreError, TransactError, transact};
use crate::ledger::store::TransferError;
use crate::ledger::{AccountId, LedgerError, Transfer};
use crate::merchant::store::MerchantStore;
use crate::money::{Money, MoneyError};
use crate::outbox::OutboxMessage;
use crate::queues::{NotificationMessage, SettlementJob, SettlementMessage};

pub struct Settlement {
    payments: PaymentStore,
    devices: DeviceStore,
    merchants: MerchantStore,
    /// The payer's home: a payment waiting for funds is their attention item until it settles.
    attention: AttentionStore,
    /// The top-ups' debits, and through them the ledger, the outbox and the links.
    debits: TopUpDebits,
    batch: Batch,
    notifications_queue: String,
    /// How long a payment waits for a top-up (template `TopUpTtlSeconds`).
    topup_ttl_seconds: i64,
    /// Where links to this API's pages start (template `PublicBaseUrl`).
    public_base_url: String,
}

/// Why a settlement message was not handled (yet).
#[derive(Debug, thiserror::Error)]
pub enum SettlementError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Transaction(#[from] TransactError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error("the message could not be written: {0}")]
    Message(#[from] serde_json::Error),
    #[error("top-up {topup}: the debit is not settled yet: {reason}")]
    DebitPending { topup: String, reason: String },
    /// A started debit's link never expires (its TTL is off while the debit runs): a check naming
    /// none is a fault for an operator, not a debit to forget.
    #[error("the debit check {0} names no top-up")]
    UnknownTopUp(String),
    #[error("payment {0} waits on a debit whose link is gone")]
    DebitWithoutLink(String),
}

/// An unknown reference never resolves: to the dead letters at once. The rest may pass.
impl From<SettlementError> for Failure {
    fn from(e: SettlementError) -> Self {
        match e {
            SettlementError::UnknownTopUp(_) | SettlementError::DebitWithoutLink(_) => Failure::poison(e),
            other => Failure::Retry(other.to_string()),
        }
    }
}

/// SQS's longest delay: an expiry further off is re-armed until it is due.
const MAX_DELAY_SECONDS: i64 = 900;

/// How long an expiry waits before looking again at a link whose debit is running.
const DEBIT_WAIT_SECONDS: i64 = 60;

impl Settlement {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let debits = TopUpDebits::from_env(&config, dynamodb.clone())?;
        Ok(Settlement {
            batch: Batch::from_env(
                debits.outbox.clone(),
                aws_sdk_sqs::Client::new(&config),
                "SETTLEMENT_QUEUE_URL",
                None,
            )?,
            payments: PaymentStore::new(
                dynamodb.clone(),
                aws::env("OFFLINE_PAYMENTS_TABLE")?,
                aws::env("OFFLINE_CODES_TABLE")?,
            ),
            devices: DeviceStore::new(dynamodb.clone(), aws::env("DEVICES_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            attention: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
            debits,
            notifications_queue: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            topup_ttl_seconds: aws::seconds("TOPUP_TTL_SECONDS")?,
            public_base_url: aws::env("PUBLIC_BASE_URL")?.trim_end_matches('/').to_owned(),
        })
    }

    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.batch.run(event, |message| async move { Ok(self.process(&message).await?) }).await
    }

    /// Idempotent by the message: one handled once (its outbox item gone) changes nothing again.
    async fn process(&self, message: &SettlementMessage) -> Result<(), SettlementError> {
        match message {
            SettlementMessage::Settle(job) => self.settle(job).await,
            SettlementMessage::DebitCheck { id, topup } => self.check_debit(id, topup).await,
        }
    }

    /// Settles a debit its page left owed. Still no answer from the bank: SQS asks again.
    async fn check_debit(&self, id: &str, key: &str) -> Result<(), SettlementError> {
        let topup = self.debits.topups.get(key).await?;
        match topup {
            // Settled by its page meanwhile (or a check of an attempt already declined).
            Some(topup) if topup.paid || topup.debit_started_at.is_none() || topup.check_id() != id => {}
            Some(topup) => {
                if let DebitOutcome::Pending(reason) = self.debits.settle(&topup, now_epoch_seconds()).await? {
                    return Err(SettlementError::DebitPending { topup: topup.label().to_owned(), reason });
                }
                return Ok(());
            }
            None => return Err(SettlementError::UnknownTopUp(id.to_owned())),
        }
        Ok(self.debits.outbox.done(id).await?)
    }

    fn job(&self, job: &SettlementJob, delay: i64) -> Result<OutboxMessage, SettlementError> {
        Ok(SettlementMessage::Settle(job.clone())
            .outbox(&self.debits.settlement_queue, delay.clamp(0, MAX_DELAY_SECONDS) as i32)?)
    }

    /// A payment still waiting for funds when its top-up link expires ends `expired`, with the
    /// merchant's notice and the link's end in the same transaction, unless its link was paid (its
    /// settlement is on its way) or a debit was started on it (the job comes back until the bank's
    /// answer is settled). Not due yet: the job comes back later.
    async fn expire(&self, job: &SettlementJob, payment: Payment, expire_at: i64) -> Result<(), SettlementError> {
        let outbox = &self.debits.outbox;
        let now = now_epoch_seconds();
        // Its outbox item is due again then (so the sweeper does not send copies meanwhile); if
        // this send fails, SQS must redeliver this one.
        let come_back = |delay: i64| async move {
            outbox.postpone(&job.id, now + delay).await?;
            Ok(outbox.send_checked(&self.job(job, delay)?).await?)
        };
        if now < expire_at {
            return come_back(expire_at - now).await;
        }
        let superseded = job.link.as_ref().is_some_and(|link| payment.topup_token.as_ref() != Some(link));
        // Otherwise it settled, expired by an earlier delivery of this job (whose transaction
        // carried the notice), or has a newer link, whose own expiry job is on its way.
        if payment.state == PaymentState::WaitingForFunds && !superseded {
            let topup = match &payment.topup_token {
                Some(key) => self.debits.topups.get(key).await?,
                None => None,
            };
            match at_expiry(topup.as_ref()) {
                AtExpiry::Paid => {}
                // The bank may have the money: ask it now (its check may be gone, or the debit may
                // come from before debits were recorded); only a decline lets the payment expire.
                AtExpiry::Wait => {
                    let topup = topup.ok_or_else(|| SettlementError::DebitWithoutLink(payment.id.clone()))?;
                    match self.debits.settle(&topup, now).await? {
                        DebitOutcome::Credited(_) => {}
                        DebitOutcome::Declined(_) => return come_back(0).await,
                        DebitOutcome::Pending(_) => return come_back(DEBIT_WAIT_SECONDS).await,
                    }
                }
                AtExpiry::Expire => {
                    let event = NotificationMessage::OfflineExpired {
                        id: format!("{}/expired", payment.id),
                        payment_id: payment.id.clone(),
                    };
                    let notice = event.outbox(&self.notifications_queue, 0)?;
                    let mut items = vec![
                        self.payments.expire_item(&payment.id)?,
                        outbox.put_item(&notice, now)?,
                        self.attention.put_item(&payment.user, &expired_element(&payment, now))?,
                    ];
                    items.extend(self.devices.release_item(&payment)?);
                    // A link that is gone counts as expired; one paid or started at the last moment wins.
                    if let Some(topup) = &topup {
                        items.push(self.debits.topups.expire_item(&topup.key)?);
                    }
                    match transact(&self.debits.dynamodb, items).await {
                        Ok(()) => outbox.send(&notice).await,
                        Err(e) if e.broke(TOPUP_NO_DEBIT) => return come_back(0).await,
                        // Settled or expired meanwhile.
                        Err(e) if e.broke(PAYMENT_WAITING) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(outbox.done(&job.id).await?)
    }

    /// The payment waits; the payer gets a top-up link in their conversation with the platform.
    /// The link, the payment's new state, its expiry job and the payer's message commit together,
    /// so a redelivered job that finds the payment waiting with an open link has nothing to do.
    async fn ask_for_funds(&self, payment: &Payment, available: Decimal, now: i64) -> Result<(), SettlementError> {
        let outbox = &self.debits.outbox;
        let currency = payment.amount.currency();
        if !matches!(payment.state, PaymentState::Pending | PaymentState::WaitingForFunds) {
            return Ok(());
        }
        // The current link, unless it was paid (its money went in and still was not enough).
        if let Some(key) = &payment.topup_token
            && self.debits.topups.get(key).await?.is_some_and(|t| !t.paid && !t.expired)
        {
            return Ok(());
        }
        let due = Money::new(payment.amount.amount() - available, currency)?;
        let token = new_token();
        let topup = TopUp {
            key: key_of(&token),
            payment_id: payment.id.clone(),
            user: payment.user.clone(),
            merchant_id: payment.merchant_id.clone(),
            amount_due: due,
            payment_amount: payment.amount,
            link_expires_at: now + self.topup_ttl_seconds,
            paid: false,
            expired: false,
            amount: None,
            debit_started_at: None,
            debit_attempt: 0,
        };
        let expire = self.job(
            &SettlementJob {
                id: format!("{}/expire/{}", payment.id, topup.label()),
                payment_id: payment.id.clone(),
                expire_at: Some(topup.link_expires_at),
                link: Some(topup.key.clone()),
            },
            topup.link_expires_at - now,
        )?;
        let link = format!("{}/topup/{token}", self.public_base_url);
        let merchant = self.merchants.get(&payment.merchant_id).await.ok().flatten();
        let merchant = merchant.map_or(payment.merchant_id.clone(), |m| m.name);
        let message = NewMessage {
            id: format!("{}/waiting/{}", payment.id, topup.label()),
            kind: "offline.waiting_for_funds".into(),
            text: format!(
                "A payment of {} to {merchant} is waiting: your offline reserve has {available} {currency}. Add {due} to complete it: {link}",
                payment.amount
            ),
            data: serde_json::json!({ "payment": payment.view(), "amount_due": due, "link": link }),
        };
        let event = NotificationMessage::OfflineWaitingForFunds {
            id: message.id.clone(),
            user: payment.user.clone(),
            message,
            at: now,
        };
        let notice = event.outbox(&self.notifications_queue, 0)?;
        let waiting = waiting_element(payment, &merchant, due, &link, topup.link_expires_at, now);
        let items = vec![
            self.payments.waiting_item(&payment.id, &topup.key, payment.topup_token.as_deref())?,
            self.attention.put_item(&payment.user, &waiting)?,
            self.debits.topups.create_item(&topup)?,
            // Due at the expiry itself, so the sweeper does not re-send it before then.
            outbox.put_item_due(&expire, topup.link_expires_at)?,
            outbox.put_item(&notice, now)?,
        ];
        match transact(&self.debits.dynamodb, items).await {
            Ok(()) => {
                outbox.send(&expire).await;
                outbox.send(&notice).await;
                Ok(())
            }
            // It changed since it was read (settled, or waiting with its own link): nothing to do.
            Err(TransactError::ConditionFailed(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn settle(&self, job: &SettlementJob) -> Result<(), SettlementError> {
        let outbox = &self.debits.outbox;
        let Some(payment) = self.payments.get(&job.payment_id).await? else {
            return Ok(outbox.done(&job.id).await?);
        };
        if let Some(expire_at) = job.expire_at {
            return self.expire(job, payment, expire_at).await;
        }
        if payment.state != PaymentState::Settled {
            let now = now_epoch_seconds();
            let transfer = Transfer::between(
                format!("{}/settle", payment.id),
                payment.amount,
                AccountId::reserve(&payment.user),
                AccountId::merchant(&payment.merchant_id),
                "offline.settle",
                format!("offline-payment/{}", payment.id),
            )?;
            let mut with = vec![
                self.payments.state_item(&payment.id, PaymentState::Settled)?,
                // Settled: nothing more for the payer to do.
                self.attention.delete_item(&payment.user, &attention_id(&payment.id))?,
            ];
            with.extend(self.devices.release_item(&payment)?);
            match self.debits.ledger.apply(&transfer, with, now).await {
                // Settled by an earlier delivery (or expired): nothing to do.
                Ok(_) | Err(TransferError::Rejected(PAYMENT_UNSETTLED)) => {}
                Err(TransferError::Ledger(LedgerError::InsufficientFunds { available, .. })) => {
                    self.ask_for_funds(&payment, available, now).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(outbox.done(&job.id).await?)
    }
}

/// The id of an offline payment's attention item on its payer's home.
pub fn attention_id(payment_id: &str) -> String {
    format!("offline:{payment_id}")
}

/// A payment waiting for `due` more: its payer's most urgent element until it settles or its link
/// (`link`, until `link_expires_at`) expires. Critical: money the payer may lose.
fn waiting_element(
    payment: &Payment,
    merchant: &str,
    due: Money,
    link: &str,
    link_expires_at: i64,
    now: i64,
) -> Element {
    Element {
        id: attention_id(&payment.id),
        kind: "offline.waiting_for_funds".into(),
        class: Class::MoneyAtRisk,
        reason: format!("a payment of {} to {merchant} is waiting for {due} more", payment.amount),
        data: json!({"payment": view_as(payment, PaymentState::WaitingForFunds), "amount_due": due, "link": link}),
        actions: vec![Action::open("top_up", link)],
        deadline: Some(link_expires_at),
        // Shown until the payment settles or expires (those transactions remove or replace it):
        // past the link's expiry a debit may still be on its way.
        expires_at: None,
        at: now,
        critical: true,
        explain: json!({"rule": "an offline payment is waiting for funds", "inputs": {"payment": payment.id, "state": "waiting_for_funds"}}),
    }
}

/// `payment` as it is once the transaction writing its element commits (`state`).
fn view_as(payment: &Payment, state: PaymentState) -> OfflinePaymentView {
    OfflinePaymentView { state: state.as_str(), ..payment.view() }
}

/// How long an expired offline payment is shown to its payer.
const EXPIRED_SHOWN_SECONDS: i64 = 7 * 86_400;

/// A payment that expired unpaid (its merchant was not paid): shown to its payer for a week.
fn expired_element(payment: &Payment, now: i64) -> Element {
    Element {
        id: attention_id(&payment.id),
        kind: "offline.expired".into(),
        class: Class::MoneyAtRisk,
        reason: format!("a payment of {} expired unpaid", payment.amount),
        data: json!({"payment": view_as(payment, PaymentState::Expired)}),
        // What happened is in the payer's conversation with the platform too.
        actions: vec![Action::call("messages", "GET", "/conversations/platform/messages")],
        deadline: None,
        expires_at: Some(now + EXPIRED_SHOWN_SECONDS),
        at: now,
        critical: false,
        explain: json!({"rule": "an offline payment expired unpaid", "inputs": {"payment": payment.id, "state": "expired"}}),
    }
}
