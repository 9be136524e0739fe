//! What moves an operation's money after it was carried out, for the provider's routes
//! (`super::provider_api`) and the hold's timeout (`super::notices`): a hold's one settlement and
//! the provider's refunds, each with the operation's new state and its notice in ONE transaction.

use lambda_http::Request;

use super::operation::{
    OPERATION_HELD, OPERATION_REFUNDS_AS_READ, Operation, OperationState, OperationStore, SettleRefusal, Settlement,
};
use serde_json::json;

use crate::Problem;
use crate::attention::{AttentionStore, Held, HeldMoney};
use crate::aws::{self, MissingEnv};
use crate::dynamo::{StoreError, Write};
use crate::http::path_parameter;
use crate::idempotency::store::CLAIM_HELD;
use crate::ids;
use crate::ledger::LedgerError;
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::merchant::store::MERCHANT_ACTIVE;
use crate::merchant::{inactive_merchant, suspended_refund};
use crate::money::Money;
use crate::outbox::{Outbox, OutboxMessage};
use crate::problem::catalogue;
use crate::queues::NotificationMessage;

/// How often a refund is judged again when another refund changed the operation meanwhile.
const REFUND_ATTEMPTS: usize = 3;

pub struct OperationService {
    pub operations: OperationStore,
    pub ledger: LedgerStore,
    pub outbox: Outbox,
    pub queue_url: String,
    /// The payer's home: a held operation is their attention item until it is settled.
    attention: AttentionStore,
}

/// How a settlement or refund went: this call moved the money, or it had moved before (a retry,
/// or another settlement first); either way the operation as it now stands.
pub enum Moved {
    Now(Operation),
    Before(Operation),
}

pub fn unknown_operation(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_OPERATION, format!("no operation {id:?} of yours"))
}

impl OperationService {
    /// Over the function's tables (`OPERATIONS_TABLE`, `LEDGER_TABLE`, `NOTIFICATIONS_QUEUE_URL`)
    /// and its outbox.
    pub fn from_env(dynamodb: &aws_sdk_dynamodb::Client, outbox: Outbox) -> Result<Self, MissingEnv> {
        Ok(OperationService {
            operations: OperationStore::new(dynamodb.clone(), aws::env("OPERATIONS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            outbox,
            queue_url: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            attention: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
        })
    }

    /// The write that puts `operation`'s element on its payer's home (a hold awaiting its provider,
    /// then what came of it), or removes it (the money reached the provider).
    pub fn home_item(&self, operation: &Operation, now: i64) -> Result<Write, StoreError> {
        let id = format!("transfer:{}", operation.id);
        let (kind, reason, held) = match operation.state {
            OperationState::Held => (
                "transfer.held",
                format!("{} is held until {} settles it", operation.amount, operation.merchant_id),
                Held::Until(operation.hold_expires_at),
            ),
            OperationState::Voided => (
                "transfer.voided",
                format!("{} voided the hold: {} is back in your wallet", operation.merchant_id, operation.amount),
                Held::GivenBack,
            ),
            OperationState::Released => (
                "transfer.released",
                format!("nobody settled the hold in time: {} is back in your wallet", operation.amount),
                Held::GivenBack,
            ),
            OperationState::Completed | OperationState::Posted => {
                return self.attention.delete_item(&operation.payer, &id);
            }
        };
        let element = HeldMoney {
            id,
            kind,
            reason,
            data: json!({"operation": operation.view()}),
            path: format!("/transfer/operations/{}", operation.id),
            held,
            explain: json!({"rule": "a transfer held, or given back", "inputs": {"operation": operation.id, "state": operation.state.as_str()}}),
        }
        .element(now);
        self.attention.put_item(&operation.payer, &element)
    }

    /// The notice telling the provider and the payer that `operation` reached its state.
    pub fn changed_notice(&self, operation: &Operation) -> Result<OutboxMessage, Problem> {
        let state = operation.state.as_str();
        NotificationMessage::TransferChanged {
            id: format!("{}/{state}", operation.id),
            operation_id: operation.id.clone(),
            state: state.to_owned(),
        }
        .outbox(&self.queue_url, 0)
        .map_err(Problem::internal)
    }

    /// The check that releases `operation`'s hold if it still stands at its expiry.
    pub fn release_notice(&self, operation: &Operation) -> Result<OutboxMessage, Problem> {
        NotificationMessage::TransferRelease {
            id: format!("{}/release", operation.id),
            operation_id: operation.id.clone(),
        }
        .outbox(&self.queue_url, 0)
        .map_err(Problem::internal)
    }

    /// The operation the request's path names, if it is the caller's (`is_theirs`): another's does
    /// not exist, for them.
    pub async fn named(&self, request: &Request, is_theirs: impl Fn(&Operation) -> bool) -> Result<Operation, Problem> {
        let id = ids::check("id", path_parameter(request, "id")?)?;
        self.operations.get(id).await?.filter(is_theirs).ok_or_else(|| unknown_operation(id))
    }

    async fn current(&self, id: &str) -> Result<Operation, Problem> {
        self.operations.get(id).await?.ok_or_else(|| unknown_operation(id))
    }

    /// Settles `operation`'s hold as `settlement` says, with `with` (a route's checks and records).
    pub async fn settle(
        &self,
        operation: &Operation,
        settlement: Settlement,
        with: Vec<Write>,
        now: i64,
    ) -> Result<Moved, Problem> {
        let (transfer, after) = match operation.settle(settlement, now) {
            Ok(settled) => settled,
            Err(SettleRefusal::NotHeld { .. }) => return Ok(Moved::Before(operation.clone())),
            Err(refusal) => return Err(refusal.into()),
        };
        let notice = self.changed_notice(&after)?;
        let mut writes = vec![
            self.operations.settle_item(&after, now)?,
            self.outbox.put_item(&notice, now)?,
            self.home_item(&after, now)?,
        ];
        writes.extend(with);
        match self.ledger.apply(&transfer, writes, now).await {
            Ok(Applied::Now) => {
                self.outbox.send(&notice).await;
                Ok(Moved::Now(after))
            }
            // Settled meanwhile (this settlement's own earlier attempt, or another one first).
            Ok(Applied::Already) | Err(TransferError::Rejected(OPERATION_HELD)) => {
                let current = self.current(&operation.id).await?;
                // Still held: the post came after the hold's expiry (checked by the write itself).
                if let (OperationState::Held, Settlement::Post(_)) = (current.state, settlement) {
                    return Err(current
                        .settle(settlement, now)
                        .err()
                        .map_or_else(|| Problem::internal("a post refused while its hold stood"), Problem::from));
                }
                Ok(Moved::Before(current))
            }
            // Suspended after the route's check: nothing reaches it.
            Err(TransferError::Rejected(MERCHANT_ACTIVE)) => Err(inactive_merchant(&operation.merchant_id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Pays `amount` of what reached the provider back to the payer, as refund `refund_id` (from
    /// the provider's Idempotency-Key: a retried refund is the same transfer), with `finish`'s
    /// record of the answer for the operation as the refund leaves it and `with`.
    pub async fn refund(
        &self,
        id: &str,
        amount: Money,
        refund_id: &str,
        with: Vec<Write>,
        now: i64,
        finish: impl Fn(&Operation) -> Result<Write, Problem>,
    ) -> Result<Moved, Problem> {
        let transfer_id = format!("{id}/refund/{refund_id}");
        for _ in 0..REFUND_ATTEMPTS {
            let before = self.current(id).await?;
            // A retry of a refund that already moved (its answer's record expired) is that refund.
            if let Some(moved) = self.ledger.transfer_amount(&transfer_id).await? {
                return match moved == amount {
                    true => Ok(Moved::Before(before)),
                    false => Err(crate::idempotency::key_reused()),
                };
            }
            let (transfer, after) = before.refund(amount, refund_id)?;
            let notice =
                NotificationMessage::TransferRefunded { id: transfer_id.clone(), operation_id: id.to_owned(), amount }
                    .outbox(&self.queue_url, 0)
                    .map_err(Problem::internal)?;
            let mut writes = vec![
                self.operations.refund_item(&before, &after)?,
                self.outbox.put_item(&notice, now)?,
                finish(&after)?,
            ];
            writes.extend(with.iter().cloned());
            match self.ledger.apply(&transfer, writes, now).await {
                Ok(Applied::Now) => {
                    self.outbox.send(&notice).await;
                    return Ok(Moved::Now(after));
                }
                Ok(Applied::Already) => return Ok(Moved::Before(self.current(id).await?)),
                // Another refund changed it since it was read: judge again.
                Err(TransferError::Rejected(OPERATION_REFUNDS_AS_READ)) => continue,
                Err(TransferError::Rejected(MERCHANT_ACTIVE)) => return Err(suspended_refund(&before.merchant_id)),
                Err(TransferError::Rejected(CLAIM_HELD)) => return Err(crate::idempotency::in_flight()),
                Err(TransferError::Ledger(LedgerError::InsufficientFunds { available, .. })) => {
                    return Err(Problem::new(
                        catalogue::MERCHANT_INSUFFICIENT_FUNDS,
                        format!("the merchant's account holds {available}, not enough for this refund; nothing moved"),
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Other refunds kept changing it: nothing moved, and a retry (with the same key) is safe.
        Err(Problem::new(
            catalogue::LEDGER_BUSY,
            format!(
                "other refunds of operation {id} kept changing it; nothing moved: retry with the same Idempotency-Key"
            ),
        ))
    }
}

/// Whether `current` is what `settlement` would have left: a provider's retry of its own post or
/// void (a new signed request, the hold settled by its first).
pub fn settled_as(current: &Operation, settlement: Settlement) -> bool {
    match settlement {
        Settlement::Post(posted) => current.state == OperationState::Posted && current.paid == posted.amount(),
        Settlement::Void => current.state == OperationState::Voided,
        Settlement::Release => current.state != OperationState::Held,
    }
}
