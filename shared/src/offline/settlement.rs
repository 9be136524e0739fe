//! The settlement function (template.yaml `SettlementFunction`, SQS-triggered): moves an accepted
//! offline payment from the payer's offline reserve to the merchant, in one transaction with the
//! payment's new state. When the reserve does not cover it, the payment waits for funds and the
//! payer is told in their conversation with the platform.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};

use super::payment::{PaymentState, PaymentStore};
use super::payments_api::SettlementJob;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::conversation::store::ConversationStore;
use crate::conversation::{Counterparty, NewMessage};
use crate::dynamo::transact;
use crate::ledger::store::{LedgerStore, TransferError};
use crate::ledger::{AccountId, LedgerError, Transfer};
use crate::outbox::Outbox;

pub struct Settlement {
    dynamodb: aws_sdk_dynamodb::Client,
    payments: PaymentStore,
    ledger: LedgerStore,
    outbox: Outbox,
    conversations: ConversationStore,
}

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
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(&config), aws::env("OUTBOX_TABLE")?),
            conversations: ConversationStore::new(dynamodb.clone(), aws::env("CONVERSATIONS_TABLE")?),
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
            let settled = self.payments.state_item(&payment.id, PaymentState::Settled).map_err(|e| fail(&e))?;
            match self.ledger.apply(&transfer, vec![settled], now).await {
                Ok(_) | Err(TransferError::Rejected(_)) => {}
                Err(TransferError::Ledger(LedgerError::InsufficientFunds { available, .. })) => {
                    let waiting =
                        self.payments.state_item(&payment.id, PaymentState::WaitingForFunds).map_err(|e| fail(&e))?;
                    // Refused only if it settled meanwhile: then there is nothing to wait for.
                    let _ = transact(&self.dynamodb, vec![waiting]).await;
                    let message = NewMessage {
                        id: format!("{}/waiting", payment.id),
                        kind: "offline.waiting_for_funds".into(),
                        text: format!(
                            "A payment of {} to {} is waiting: your offline reserve has {available}. Top up to complete it.",
                            payment.amount, payment.merchant_id
                        ),
                        data: payment.view(),
                    };
                    self.conversations
                        .post(&payment.user, &Counterparty::platform(), &message, now)
                        .await
                        .map_err(|e| fail(&e))?;
                }
                Err(e) => return Err(fail(&e)),
            }
        }
        self.outbox.done(&job.id).await.map_err(|e| fail(&e))
    }
}
