//! The transfer side's operation routes (template.yaml `TransferFunction`), for signed-in users:
//!
//! - `POST /transfer/operations`  `{"instruction", "signature", "confirmation": {"display_hash"}}`
//!   with an Idempotency-Key: judged (`super::operation::judge`) against this side's own copy of
//!   the listing; then the operation, its ledger transfer payer -> provider, the spent nonce and the
//!   provider's and payer's notice in ONE transaction; 201 the operation
//! - `GET /transfer/operations/{id}`  the caller's own operation
//!
//! The platform's public key is fetched from KMS once per process: no verification calls KMS.
//! A refusal only a faulty or compromised platform (or a client sending what its user did not
//! confirm) can cause is a security event: an audit entry naming what differed and an entry in the
//! user's security events, written before the refusal is answered.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use tokio::sync::OnceCell;

use super::listing::ListingStore;
use super::operation::{CLOCK_SKEW_SECONDS, OPERATION_NEW, Operation, OperationStore, Presented, Refusal, judge};
use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::dynamo::{StoreError, transact};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{CLAIM_HELD, Claim, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight};
use crate::ids;
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::merchant::store::{MERCHANT_ACTIVE, MerchantStore};
use crate::merchant::{MerchantStatus, inactive_merchant, unknown_merchant};
use crate::nonce::{NONCE_UNSPENT, NonceStore};
use crate::outbox::Outbox;
use crate::problem::catalogue;
use crate::queues::NotificationMessage;
use crate::security::SecurityEvent;

pub struct OperationsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    listings: ListingStore,
    operations: OperationStore,
    merchants: MerchantStore,
    ledger: LedgerStore,
    nonces: NonceStore,
    idempotency: IdempotencyStore,
    outbox: Outbox,
    queue_url: String,
    audit_table: String,
    security_events_table: String,
    kms: aws_sdk_kms::Client,
    /// The platform's signing key: the only `kid` instructions may name.
    kid: String,
    public_key: OnceCell<Vec<u8>>,
}

fn unknown_operation(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_OPERATION, format!("no operation {id:?} of yours"))
}

impl OperationsApi {
    /// On the function's SDK config (loaded once at cold start, shared with the listing routes).
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        Ok(OperationsApi {
            listings: ListingStore::new(dynamodb.clone(), aws::env("LISTINGS_TABLE")?),
            operations: OperationStore::new(dynamodb.clone(), aws::env("OPERATIONS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            outbox: Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?),
            queue_url: aws::env("NOTIFICATIONS_QUEUE_URL")?,
            audit_table: aws::env("AUDIT_TABLE")?,
            security_events_table: aws::env("SECURITY_EVENTS_TABLE")?,
            kms: aws_sdk_kms::Client::new(config),
            kid: aws::env("INSTRUCTION_SIGNING_KEY_ID")?,
            public_key: OnceCell::new(),
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "POST /transfer/operations" => self.operate(&request, &caller).await,
            "GET /transfer/operations/{id}" => {
                let id = ids::check("id", path_parameter(&request, "id")?)?;
                let operation = self
                    .operations
                    .get(id)
                    .await?
                    .filter(|o| o.payer == caller.subject)
                    .ok_or_else(|| unknown_operation(id))?;
                Ok(json_response(StatusCode::OK, &operation.view()))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the transfer function has no operation route {other:?}"),
            )),
        }
    }

    /// The platform's public key (DER SubjectPublicKeyInfo), from KMS on this process's first use.
    async fn public_key(&self) -> Result<&[u8], StoreError> {
        let key =
            self.public_key
                .get_or_try_init(|| async {
                    let output =
                        self.kms.get_public_key().key_id(&self.kid).send().await.map_err(|e| {
                            StoreError::caused("KMS could not give the instruction key's public key", e)
                        })?;
                    let key = output.public_key().ok_or_else(|| StoreError::new("KMS answered no public key"))?;
                    Ok::<_, StoreError>(key.as_ref().to_vec())
                })
                .await?;
        Ok(key)
    }

    async fn operate(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let presented = json_body::<Presented>(request)?;
        let payer = caller.subject.as_str();
        self.idempotency
            .run_request(request, payer, &[], |claim, now| async move {
                let instruction = &presented.instruction;
                let public_key = self.public_key().await?;
                // An id that breaks the rule is never read with; the judgement refuses it.
                let listed = match ids::is_valid(&instruction.listing_id) {
                    true => self.listings.get(&instruction.listing_id).await?,
                    false => None,
                };
                if let Err(refusal) = judge(&presented, &self.kid, public_key, payer, listed.as_ref(), now) {
                    return Err(self.refuse(&claim, payer, &presented, &refusal, now).await);
                }
                let listed = listed.ok_or_else(|| Problem::internal("a judged listing vanished"))?;
                let provider = self
                    .merchants
                    .get(&listed.merchant_id)
                    .await?
                    .ok_or_else(|| unknown_merchant(&listed.merchant_id))?;
                if provider.status != MerchantStatus::Active {
                    return Err(inactive_merchant(&provider.id));
                }
                let operation = Operation::of(instruction, &listed, claim.scope.derived_id("operation"), now);
                let transfer = operation.transfer().map_err(Problem::internal)?;
                let notice = NotificationMessage::TransferCompleted {
                    id: format!("{}/completed", operation.id),
                    operation_id: operation.id.clone(),
                }
                .outbox(&self.queue_url, 0)
                .map_err(Problem::internal)?;
                let response = json_response(StatusCode::CREATED, &operation.view());
                let with = vec![
                    self.operations.create_item(&operation)?,
                    // Kept a little past the instruction's life: then it is refused as expired.
                    self.nonces.spend_item(
                        &format!("instruction:{}", instruction.kid),
                        &instruction.nonce,
                        instruction.expires_at + CLOCK_SKEW_SECONDS,
                    )?,
                    self.outbox.put_item(&notice, now)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                    // A suspension that lands after the check above stops the payment here.
                    self.merchants.active_check(&provider.id)?,
                ];
                match self.ledger.apply(&transfer, with, now).await {
                    Ok(Applied::Now) => {
                        self.outbox.send(&notice).await;
                        Ok(response)
                    }
                    Ok(Applied::Already) | Err(TransferError::Rejected(OPERATION_NEW | NONCE_UNSPENT)) => {
                        self.carried_out(&claim, &operation, now).await
                    }
                    Err(TransferError::Rejected(MERCHANT_ACTIVE)) => Err(inactive_merchant(&provider.id)),
                    Err(TransferError::Rejected(CLAIM_HELD)) => Err(in_flight()),
                    Err(e) => Err(Problem::from(e)),
                }
            })
            .await
    }

    /// The answer when the instruction, or its nonce, was already spent: the operation, if this
    /// very request spent it (its record lost or expired); refused otherwise.
    async fn carried_out(&self, claim: &Claim, attempt: &Operation, now: i64) -> Result<Response<Body>, Problem> {
        match self.operations.get(&attempt.id).await? {
            Some(done) if done.request == attempt.request => {
                let response = json_response(StatusCode::CREATED, &done.view());
                self.idempotency.complete(claim, &StoredResponse::from_response(&response), now).await?;
                Ok(response)
            }
            _ => Err(Problem::new(
                catalogue::INSTRUCTION_ALREADY_USED,
                format!(
                    "instruction {:?} (or another carrying its nonce) was already carried out; nothing moved",
                    attempt.id
                ),
            )),
        }
    }

    /// `refusal`'s answer, after recording it if it is a security event: in the audit log under the
    /// listing it names, and in the caller's security events (and the named payer's, when a signed
    /// instruction of theirs was presented by someone else). If that record cannot be written the
    /// answer is a failure of ours, so the client retries and the event is not lost.
    async fn refuse(&self, claim: &Claim, caller: &str, presented: &Presented, refusal: &Refusal, now: i64) -> Problem {
        let instruction = &presented.instruction;
        let problem = refusal.problem(instruction);
        if !refusal.is_security_event() {
            return problem;
        }
        let mut detail = refusal.detail();
        detail["code"] = problem.code.into();
        detail["instruction_id"] = crate::text::head(&instruction.id, 80).into();
        detail["listing_id"] = crate::text::head(&instruction.listing_id, 80).into();
        let resource = match ids::is_valid(&instruction.listing_id) {
            true => format!("listing/transfer/{}", instruction.listing_id),
            false => "listing/transfer".to_owned(),
        };
        // Derived from the request: its retry writes the same events again, not new ones.
        let source = claim.scope.derived_id("refusal");
        let mut users = vec![caller];
        if *refusal == Refusal::NotPayer && ids::is_valid(&instruction.payer) {
            users.push(&instruction.payer);
        }
        let written = async {
            let mut writes = vec![
                AuditEntry::now(resource, "operation.refused", caller, detail.clone())
                    .put_item(&self.audit_table, &source)?,
            ];
            for user in users {
                let event = SecurityEvent {
                    user: user.to_owned(),
                    id: format!("transfer-refused/{source}"),
                    kind: "transfer.refused",
                    at: now,
                    detail: detail.clone(),
                };
                writes.push(event.put_item(&self.security_events_table)?);
            }
            transact(&self.dynamodb, writes).await.map_err(|e| StoreError::new(e.to_string()))
        };
        match written.await {
            Ok(()) => problem,
            Err(error) => {
                tracing::error!(%error, code = problem.code, "a refused operation could not be recorded");
                Problem::internal(error)
            }
        }
    }
}
