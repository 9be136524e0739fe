//! The cash checks (template.yaml `CashChecksFunction`, SQS-triggered on `CashQueue`): settles a
//! cash movement whose request could not (no verified answer from the bank, or the request died):
//! a cash-in asks for its debit again, a cash-out for its payout's status. Still no answer: SQS
//! delivers the check again, after a growing wait.

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};

use super::CashState;
use super::service::{Asker, CashService, Settled};
use crate::aws::{self, MissingEnv};
use crate::batch::{Backoff, Batch, Failure};
use crate::clock::now_epoch_seconds;
use crate::queues::CashMessage;

/// The first wait after a check found no answer; it doubles at each delivery.
const BACKOFF: Backoff = Backoff { base_seconds: 5 };

pub struct CashChecks {
    service: CashService,
    batch: Batch,
}

impl CashChecks {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let service = CashService::from_env(&config)?;
        let batch = Batch::from_env(
            service.outbox.clone(),
            aws_sdk_sqs::Client::new(&config),
            "CASH_QUEUE_URL",
            Some(BACKOFF),
        )?;
        Ok(CashChecks { service, batch })
    }

    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.batch.run(event, |message| async move { self.check(&message).await }).await
    }

    /// Idempotent by the message: a movement decided meanwhile only has its check removed.
    async fn check(&self, message: &CashMessage) -> Result<(), Failure> {
        let CashMessage::Check { id, user, movement } = message;
        let Some(movement) = self.service.movements.get(user, movement).await? else {
            // A movement is recorded in the transaction that writes its check: one naming none is a
            // fault for an operator, not a movement to forget.
            return Err(Failure::poison(format!("the cash check {id} names no movement")));
        };
        if movement.state != CashState::Pending {
            return Ok(self.service.outbox.done(id).await?);
        }
        match self.service.settle(&movement, Asker::Check, now_epoch_seconds()).await? {
            Settled::Decided(_) => Ok(()),
            Settled::Unknown(reason) => Err(Failure::Retry(format!("cash movement {}: {reason}", movement.id))),
        }
    }
}
