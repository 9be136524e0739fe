//! The settlement function (template.yaml `SettlementFunction`, SQS-triggered): moves an accepted
//! offline payment from the payer's offline reserve to the merchant, in one transaction with the
//! payment's new state. When the reserve does not cover it, the payment waits for funds and the
//! payer is told in their conversation with the platform. A payment whose top-up link expires
//! unpaid ends `expired`, with the merchant's notice (`OfflineEvent`) in the same transaction; the
//! notifier delivers it with its backoff.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::device::DeviceStore;
use super::payment::{Payment, PaymentState, PaymentStore};
use super::payments_api::SettlementJob;
use super::topup::{TopUp, TopUpStore, new_token};
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::dynamo::{TransactError, transact};
use crate::ledger::store::{LedgerStore, TransferError};
use crate::ledger::{AccountId, LedgerError, Transfer};
use crate::merchant::store::MerchantStore;
use crate::money::Money;
use crate::outbox::Outbox;
use crate::outbox::OutboxMessage;

/// What the notifications queue carries about offline payments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum OfflineEvent {
    /// Tell the merchant (signed webhook) that a payment waiting for funds expired.
    #[serde(rename = "offline.expired")]
    Expired { id: String, payment_id: String },
}

pub struct Settlement {
    dynamodb: aws_sdk_dynamodb::Client,
    payments: PaymentStore,
    devices: DeviceStore,
    ledger: LedgerStore,
    outbox: Outbox,
    conversations: ConversationStore,
    topups: TopUpStore,
    merchants: MerchantStore,
    settlement_queue: String,
    notifications_queue: String,
    /// How long a payment waits for a top-up (template `TopUpTtlSeconds`).
    topup_ttl_seconds: i64,
    /// Where links to this API's pages start (template `PublicBaseUrl`).
    public_base_url: String,
}

/// SQS's longest delay: an expiry further off is re-armed until it is due.
const MAX_DELAY_SECONDS: i64 = 900;

impl Settlement {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(Settlement {
            payments: PaymentStore::new(
                dynamodb.clone(),
                aws::env("OFFLINE_PAYMENTS_TABLE")?,
                aws::env("OFFLINE_CODES_TABLE")?,
            ),
            devices: DeviceStore::new(dynamodb.clone(), aws::env("DEVICES_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(&config), aws::env("OUTBOX_TABLE")?),
            conversations: ConversationStore::new(dynamodb.clone(), aws::env("CONVERSATIONS_TABLE")?),
            topups: TopUpStore::new(dynamodb.clone(), aws::env("TOPUPS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            settlement_queue: aws::env("SETTLEMENT_QUEUE_URL")?,
            notifications_queue: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            topup_ttl_seconds: aws::env("TOPUP_TTL_SECONDS")?
                .parse()
                .map_err(|_| MissingEnv("TOPUP_TTL_SECONDS (a number of seconds)".into()))?,
            public_base_url: aws::env("PUBLIC_BASE_URL")?.trim_end_matches('/').to_owned(),
            dynamodb,
        })
    }

    pub async fn handle(&self, batch: SqsEvent) -> SqsBatchResponse {
        let outcomes = futures_util::future::join_all(batch.records.into_iter().map(|record| async move {
            let outcome = match serde_json::from_str::<SettlementJob>(record.body.as_deref().unwrap_or_default()) {
                Ok(job) => self.settle(&job).await,
                Err(e) => Err(format!("not a settlement job: {e}")),
            };
            (record.message_id.unwrap_or_default(), outcome)
        }))
        .await;
        let mut response = SqsBatchResponse::default();
        for (id, outcome) in outcomes {
            if let Err(reason) = outcome {
                tracing::warn!(message = %id, %reason, "settlement failed; SQS will redeliver it");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    fn job(&self, job: &SettlementJob, delay: i64) -> Result<OutboxMessage, String> {
        Ok(OutboxMessage {
            id: job.id.clone(),
            queue_url: self.settlement_queue.clone(),
            body: serde_json::to_string(job).map_err(|e| e.to_string())?,
            delay_seconds: delay.clamp(0, MAX_DELAY_SECONDS) as i32,
        })
    }

    /// A payment still waiting for funds when its top-up link expires ends `expired`, with the
    /// merchant's notice in the same transaction. Not due yet: the job comes back later.
    async fn expire(&self, job: &SettlementJob, payment: Payment, expire_at: i64) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        let now = now_epoch_seconds();
        if now < expire_at {
            // Not due: the job comes back later. If that send fails, SQS must redeliver this one.
            return self.outbox.send_checked(&self.job(job, expire_at - now)?).await.map_err(|e| fail(&e));
        }
        // Otherwise it settled, was paid for at the last moment, or expired by an earlier delivery
        // of this job, whose transaction carried the notice.
        if payment.state == PaymentState::WaitingForFunds {
            let event = OfflineEvent::Expired { id: format!("{}/expired", payment.id), payment_id: payment.id.clone() };
            let notice = OutboxMessage {
                id: format!("{}/expired", payment.id),
                queue_url: self.notifications_queue.clone(),
                body: serde_json::to_string(&event).map_err(|e| fail(&e))?,
                delay_seconds: 0,
            };
            let mut items = vec![
                self.payments.expire_item(&payment.id).map_err(|e| fail(&e))?,
                self.outbox.put_item(&notice, now).map_err(|e| fail(&e))?,
            ];
            items.extend(self.devices.release_item(&payment).map_err(|e| fail(&e))?);
            // A link paid at the last moment wins: its settlement is on its way.
            if let Some(token) = &payment.topup_token {
                items.push(self.topups.unpaid_check(token).map_err(|e| fail(&e))?);
            }
            match transact(&self.dynamodb, items).await {
                Ok(()) => self.outbox.send(&notice).await,
                Err(TransactError::ConditionFailed(_)) => {}
                Err(e) => return Err(fail(&e)),
            }
        }
        self.outbox.done(&job.id).await.map_err(|e| fail(&e))
    }

    /// The payment waits; the payer gets a top-up link in their conversation with the platform.
    /// A redelivered job finds the payment waiting already and posts the same message (once).
    async fn ask_for_funds(&self, payment: &Payment, available: Decimal, now: i64) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        let currency = payment.amount.currency();
        if !matches!(payment.state, PaymentState::Pending | PaymentState::WaitingForFunds) {
            return Ok(());
        }
        let due = Money::new(payment.amount.amount() - available, currency).map_err(|e| fail(&e))?;
        // The current link, unless it was paid (its money went in and still was not enough).
        let open_link = match &payment.topup_token {
            Some(token) => self.topups.get(token).await.map_err(|e| fail(&e))?.filter(|t| !t.paid).map(|t| t.token),
            None => None,
        };
        let token = match open_link {
            Some(token) => token,
            None => {
                let topup = TopUp {
                    token: new_token(),
                    payment_id: payment.id.clone(),
                    user: payment.user.clone(),
                    merchant_id: payment.merchant_id.clone(),
                    amount_due: due,
                    payment_amount: payment.amount,
                    expires_at: now + self.topup_ttl_seconds,
                    paid: false,
                    amount: None,
                };
                let expire = self.job(
                    &SettlementJob {
                        id: format!("{}/expire/{}", payment.id, &topup.token[..8]),
                        payment_id: payment.id.clone(),
                        expire_at: Some(topup.expires_at),
                    },
                    topup.expires_at - now,
                )?;
                let items = vec![
                    self.payments
                        .waiting_item(&payment.id, &topup.token, payment.topup_token.as_deref())
                        .map_err(|e| fail(&e))?,
                    self.topups.create_item(&topup).map_err(|e| fail(&e))?,
                    // Due at the expiry itself, so the sweeper does not re-send it before then.
                    self.outbox.put_item_due(&expire, topup.expires_at).map_err(|e| fail(&e))?,
                ];
                match transact(&self.dynamodb, items).await {
                    Ok(()) => {
                        self.outbox.send(&expire).await;
                        topup.token
                    }
                    // It changed since it was read (settled, or waiting with its own link): look again.
                    Err(TransactError::ConditionFailed(_)) => {
                        let current = self.payments.get(&payment.id).await.map_err(|e| fail(&e))?;
                        match current.and_then(|p| p.topup_token.filter(|_| p.state == PaymentState::WaitingForFunds)) {
                            Some(token) => token,
                            None => return Ok(()),
                        }
                    }
                    Err(e) => return Err(fail(&e)),
                }
            }
        };
        let link = format!("{}/topup/{token}", self.public_base_url);
        let merchant = self.merchants.get(&payment.merchant_id).await.ok().flatten();
        let merchant = merchant.map_or(payment.merchant_id.clone(), |m| m.name);
        let message = NewMessage {
            id: format!("{}/waiting/{}", payment.id, &token[..8]),
            kind: "offline.waiting_for_funds".into(),
            text: format!(
                "A payment of {} to {merchant} is waiting: your offline reserve has {available} {currency}. Add {due} to complete it: {link}",
                payment.amount
            ),
            data: serde_json::json!({ "payment": payment.view(), "amount_due": due, "link": link }),
        };
        self.conversations.post(&payment.user, &Counterparty::platform(), &message, now).await.map_err(|e| fail(&e))?;
        Ok(())
    }

    /// Idempotent by the job: a job handled once (its outbox item gone) or a payment already
    /// settled moves nothing again.
    async fn settle(&self, job: &SettlementJob) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| e.to_string();
        if !self.outbox.pending(&job.id).await.map_err(|e| fail(&e))? {
            return Ok(());
        }
        let Some(payment) = self.payments.get(&job.payment_id).await.map_err(|e| fail(&e))? else {
            return self.outbox.done(&job.id).await.map_err(|e| fail(&e));
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
            )
            .map_err(|e| fail(&e))?;
            let mut with = vec![self.payments.state_item(&payment.id, PaymentState::Settled).map_err(|e| fail(&e))?];
            with.extend(self.devices.release_item(&payment).map_err(|e| fail(&e))?);
            match self.ledger.apply(&transfer, with, now).await {
                Ok(_) | Err(TransferError::Rejected(_)) => {}
                Err(TransferError::Ledger(LedgerError::InsufficientFunds { available, .. })) => {
                    self.ask_for_funds(&payment, available, now).await?;
                }
                Err(e) => return Err(fail(&e)),
            }
        }
        self.outbox.done(&job.id).await.map_err(|e| fail(&e))
    }
}
