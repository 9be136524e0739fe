//! The transfer side's operation routes (template.yaml `TransferFunction`), for signed-in users:
//!
//! - `POST /transfer/operations`  `{"instruction", "signature", "confirmation": {"display_hash"}}`
//!   with an Idempotency-Key: judged (`super::operation::judge`) against this side's own copy of
//!   the listing; then the operation, its ledger transfer payer -> provider, the spent nonce and the
//!   provider's and payer's notice in ONE transaction; 201 the operation
//! - `GET /transfer/operations/{id}`  the caller's own operation
//!
//! The platform's public key is fetched from KMS once per process: no verification calls KMS. The
//! device co-signature thresholds (`super::threshold`) are the config group's, read at most every
//! `THRESHOLDS_MAX_AGE_SECONDS`, and the payer's own override, read with each operation.
//! A refusal only a faulty or compromised platform (or a client sending what its user did not
//! confirm) can cause is a security event: an audit entry naming what differed and an entry in the
//! user's security events, written before the refusal is answered. When the platform's terms
//! differ from this side's at the same version, the listing is also frozen here (and an alarm
//! raised) until an admin unfreezes it (`super::admin`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};

use super::consent::{SESSION_CONSENTS, SessionConsents, Withheld};
use super::listing::{LISTING_AS_JUDGED, LISTING_FREEZABLE, Listing, ListingStore};
use super::operation::{CLOCK_SKEW_SECONDS, Facts, OPERATION_NEW, Operation, OperationView, Presented, Refusal, judge};
use super::service::OperationService;
use super::signed::{PlatformKey, verify};
use super::threshold::{GROUP, ThresholdStore, Thresholds};
use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::config::GroupName;
use crate::config::store::ConfigStore;
use crate::device_keys::{DEVICE_LIVE, DeviceKeyStore};
use crate::dynamo::{StoreError, transact};
use crate::http::{json_body, json_response, route_key};
use crate::idempotency::store::{CLAIM_HELD, Claim, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight};
use crate::ids;
use crate::ledger::store::{Applied, TransferError};
use crate::merchant::store::{MERCHANT_ACTIVE, MerchantStore};
use crate::merchant::{MerchantStatus, inactive_merchant, unknown_merchant};
use crate::nonce::{NONCE_UNSPENT, NonceStore};
use crate::outbox::Outbox;
use crate::problem::catalogue;
use crate::security::{SecurityEvent, SecurityEvents};

/// How stale the config group's thresholds may be: a change applies within this.
pub const THRESHOLDS_MAX_AGE_SECONDS: u64 = 30;

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /transfer/operations",
            summary: "carry out a platform-signed transfer instruction the user confirmed, on this side's own copy of its listing; 201 carried out now, 200 carried out before (the client is told it paid)",
            request: Some(schema::<Presented>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<OperationView>)), (200, Some(schema::<OperationView>))],
            codes: &[
                // The judgement (`super::operation::judge`).
                catalogue::INSTRUCTION_SIGNATURE_INVALID,
                catalogue::INSTRUCTION_MALFORMED,
                catalogue::INSTRUCTION_LIFETIME_INVALID,
                catalogue::INSTRUCTION_EXPIRED,
                catalogue::INSTRUCTION_NOT_FOR_CALLER,
                catalogue::CONFIRMATION_MISMATCH,
                catalogue::UNKNOWN_LISTING,
                catalogue::INSTRUCTION_LISTING_VERSION,
                catalogue::INSTRUCTION_TERMS_MISMATCH,
                catalogue::LISTING_FROZEN,
                catalogue::DEVICE_SIGNATURE_REQUIRED,
                catalogue::DEVICE_SIGNATURE_INVALID,
                catalogue::DEVICE_TOO_NEW,
                catalogue::INSTRUCTION_ALREADY_USED,
                // The provider, the payment session, the payer's wallet.
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::PAYMENT_SESSION_NOT_CONFIRMED,
                catalogue::PAYMENT_SESSION_EXPIRED,
                catalogue::PAYMENT_SESSION_CLOSED,
                catalogue::INSUFFICIENT_FUNDS,
                catalogue::WALLET_CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /transfer/operations/{id}",
            summary: "one of the caller's operations",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<OperationView>))],
            codes: &[catalogue::UNKNOWN_OPERATION],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

pub struct OperationsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    listings: ListingStore,
    devices: DeviceKeyStore,
    config: ConfigStore,
    overrides: ThresholdStore,
    /// The group's thresholds and when they were read.
    thresholds: Mutex<Option<(Instant, Thresholds)>>,
    service: OperationService,
    /// Payment sessions, read-only: an instruction with one waits for its confirmation.
    consents: SessionConsents,
    merchants: MerchantStore,
    nonces: NonceStore,
    idempotency: IdempotencyStore,
    /// How long a two-phase operation's hold stands (template `TransferHoldSeconds`).
    hold_seconds: i64,
    /// How long after its enrollment a device may co-sign (template `DeviceCosignDelaySeconds`).
    device_cosign_delay: i64,
    audit_table: String,
    security: SecurityEvents,
    /// The platform's key: the only `kid` instructions may name.
    platform: PlatformKey,
}

impl OperationsApi {
    /// On the function's SDK config (loaded once at cold start, shared with the listing routes).
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        Ok(OperationsApi {
            listings: ListingStore::new(dynamodb.clone(), aws::env("LISTINGS_TABLE")?),
            devices: DeviceKeyStore::new(dynamodb.clone(), aws::env("DEVICES_TABLE")?),
            config: ConfigStore::new(dynamodb.clone(), aws::env("CONFIG_TABLE")?),
            overrides: ThresholdStore::new(dynamodb.clone(), aws::env("THRESHOLDS_TABLE")?),
            thresholds: Mutex::new(None),
            service: OperationService::from_env(
                &dynamodb,
                Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?),
            )?,
            consents: SessionConsents::new(dynamodb.clone(), aws::env("PAYMENT_SESSIONS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            hold_seconds: aws::seconds("TRANSFER_HOLD_SECONDS")?,
            device_cosign_delay: aws::seconds("DEVICE_COSIGN_DELAY_SECONDS")?,
            audit_table: aws::env("AUDIT_TABLE")?,
            security: SecurityEvents::from_env(&dynamodb)?,
            platform: PlatformKey::new(aws_sdk_kms::Client::new(config), aws::env("INSTRUCTION_SIGNING_KEY_ID")?),
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "POST /transfer/operations" => self.operate(&request, &caller).await,
            "GET /transfer/operations/{id}" => {
                let operation = self.service.named(&request, |o| o.payer == caller.subject).await?;
                Ok(json_response(StatusCode::OK, &OperationView::from(&operation)))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the transfer function has no operation route {other:?}"),
            )),
        }
    }

    /// The config group's thresholds, read again once `THRESHOLDS_MAX_AGE_SECONDS` old. A group
    /// that is missing or malformed gives none: every amount needs the device.
    async fn group_thresholds(&self) -> Result<Thresholds, StoreError> {
        let max_age = Duration::from_secs(THRESHOLDS_MAX_AGE_SECONDS);
        if let Ok(cached) = self.thresholds.lock()
            && let Some((read_at, thresholds)) = cached.as_ref()
            && read_at.elapsed() < max_age
        {
            return Ok(thresholds.clone());
        }
        let group = GroupName::parse(GROUP).map_err(|e| StoreError::new(e.to_string()))?;
        let latest = self.config.latest(&group).await?;
        let thresholds = match latest.as_ref().map(|v| Thresholds::from_group(v.parameters.as_value())) {
            Some(Some(thresholds)) => thresholds,
            found => {
                tracing::error!(
                    group = GROUP,
                    present = found.is_some(),
                    "no valid thresholds: every amount needs the device"
                );
                Thresholds::default()
            }
        };
        if let Ok(mut cached) = self.thresholds.lock() {
            *cached = Some((Instant::now(), thresholds.clone()));
        }
        Ok(thresholds)
    }

    async fn operate(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let presented = json_body::<Presented>(request)?;
        let payer = caller.subject.as_str();
        self.idempotency
            .run_request(request, payer, &[], |claim, now| async move {
                let instruction = &presented.instruction;
                let public_key = self.platform.public_key().await?;
                // Nothing an unsigned instruction names is read: the judgement refuses it first.
                let signed = verify(instruction, &presented.signature, self.platform.kid(), public_key).is_ok();
                let listing_id = Some(instruction.listing_id.as_str()).filter(|id| signed && ids::is_valid(id));
                let device_key = presented.confirmation.device.as_ref().map(|d| d.key_id.as_str());
                let (listed, group, own, device) = tokio::try_join!(
                    async {
                        Ok(match listing_id {
                            Some(id) => self.listings.get(id).await?,
                            None => None,
                        })
                    },
                    self.group_thresholds(),
                    self.overrides.get(payer),
                    async {
                        match device_key.filter(|key| signed && ids::is_valid(key)) {
                            Some(key) => self.devices.by_key_id(key).await,
                            None => Ok(None),
                        }
                    },
                )?;
                let provider = match &listed {
                    Some(listing) => Some(
                        self.merchants
                            .get(&listing.merchant_id)
                            .await?
                            .ok_or_else(|| unknown_merchant(&listing.merchant_id))?,
                    ),
                    None => None,
                };
                let facts = Facts {
                    kid: self.platform.kid(),
                    public_key,
                    caller: payer,
                    listed: listed.as_ref(),
                    provider_name: provider.as_ref().map_or("", |p| p.name.as_str()),
                    threshold: group.of(instruction.amount.currency(), own.as_ref()),
                    device: device.as_ref(),
                    device_cosign_delay: self.device_cosign_delay,
                    now,
                };
                if let Err(refusal) = judge(&presented, &facts) {
                    // An honest client that lost its answer and sends again later (expired, the
                    // listing changed since) is told it paid, not invited to pay again.
                    if !refusal.is_security_event()
                        && let Some(done) = self.service.operations.get(&instruction.id).await?
                        && done.payer == payer
                        && done.nonce == instruction.nonce
                    {
                        let response = json_response(StatusCode::OK, &OperationView::from(&done));
                        self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                        return Ok(response);
                    }
                    return Err(self.refuse(&claim, payer, &presented, listed.as_ref(), &refusal, now).await);
                }
                let (Some(listed), Some(provider)) = (listed, provider) else {
                    return Err(Problem::internal("a judged listing vanished"));
                };
                if provider.status != MerchantStatus::Active {
                    return Err(inactive_merchant(&provider.id));
                }
                let request_id = claim.scope.derived_id("operation");
                let operation = Operation::of(instruction, &listed, request_id, now, self.hold_seconds);
                let transfer = operation.opening().map_err(Problem::internal)?;
                let notice = self.service.changed_notice(&operation)?;
                let response = json_response(StatusCode::CREATED, &OperationView::from(&operation));
                let mut with = vec![
                    self.service.operations.create_item(&operation)?,
                    // Kept a little past the instruction's life: then it is refused as expired.
                    self.nonces.spend_item(
                        &format!("instruction:{}", instruction.kid),
                        &instruction.nonce,
                        instruction.expires_at + CLOCK_SKEW_SECONDS,
                    )?,
                    self.service.outbox.put_item(&notice, now)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                    // A suspension that lands after the check above stops the payment here.
                    self.merchants.active_check(&provider.id)?,
                    // So does a new version or a freeze of the listing.
                    self.listings.as_judged_check(&listed.id, listed.version)?,
                    // Paid through a payment session, it waits for the session's confirmation.
                    self.consents.check_item(instruction)?,
                ];
                // A revocation of the co-signing device that lands meanwhile stops it too.
                if let Some(device) = device.as_ref().filter(|_| presented.confirmation.device.is_some()) {
                    with.push(self.devices.live_check(device)?);
                }
                // A hold not settled by its expiry goes back: the sweeper sends the check when due.
                // Until it is settled, it is its payer's attention item.
                if let Some(expires_at) = operation.hold_expires_at {
                    with.push(self.service.outbox.put_item_due(&self.service.release_notice(&operation)?, expires_at)?);
                    with.push(self.service.home_item(&operation, now)?);
                }
                match self.service.ledger.apply(&transfer, with, now).await {
                    Ok(Applied::Now) => {
                        self.service.outbox.send(&notice).await;
                        Ok(response)
                    }
                    Ok(Applied::Already) | Err(TransferError::Rejected(OPERATION_NEW | NONCE_UNSPENT)) => {
                        self.carried_out(&claim, &presented, &operation, now).await
                    }
                    Err(TransferError::Rejected(MERCHANT_ACTIVE)) => Err(inactive_merchant(&provider.id)),
                    Err(TransferError::Rejected(LISTING_AS_JUDGED)) => Err(self.changed(&presented).await),
                    Err(TransferError::Rejected(SESSION_CONSENTS)) => {
                        match self.consents.withheld(instruction).await? {
                            Withheld::Session(problem) => Err(problem),
                            Withheld::OtherInstruction => {
                                Err(self.refuse(&claim, payer, &presented, None, &Refusal::Reused, now).await)
                            }
                        }
                    }
                    Err(TransferError::Rejected(DEVICE_LIVE)) => Err(Refusal::DeviceSignature.problem(instruction)),
                    Err(TransferError::Rejected(CLAIM_HELD)) => Err(in_flight()),
                    Err(e) => Err(Problem::from(e)),
                }
            })
            .await
    }

    /// Why the listing no longer is as the operation was judged on: frozen, or at another version.
    async fn changed(&self, presented: &Presented) -> Problem {
        let instruction = &presented.instruction;
        let refusal = match self.listings.get(&instruction.listing_id).await {
            Ok(Some(listing)) if listing.freeze.frozen_at.is_some() => Refusal::Frozen,
            Ok(Some(listing)) => Refusal::Version { current: listing.version },
            Ok(None) => Refusal::UnknownListing,
            Err(e) => return e.into(),
        };
        refusal.problem(instruction)
    }

    /// The answer when the instruction, or its nonce, was already spent: the operation if this
    /// instruction was carried out (201 for this very request, its answer lost; 200 for an earlier
    /// one: a client that lost its key is told it paid, not invited to pay again). Another
    /// instruction with its id or nonce is a faulty platform's: refused and recorded.
    async fn carried_out(
        &self,
        claim: &Claim,
        presented: &Presented,
        attempt: &Operation,
        now: i64,
    ) -> Result<Response<Body>, Problem> {
        let response = match self.service.operations.get(&attempt.id).await? {
            Some(done) if done.request == attempt.request => {
                json_response(StatusCode::CREATED, &OperationView::from(&done))
            }
            Some(done) if done.same_instruction(attempt) => json_response(StatusCode::OK, &OperationView::from(&done)),
            _ => return Err(self.refuse(claim, &attempt.payer, presented, None, &Refusal::Reused, now).await),
        };
        self.idempotency.complete(claim, &StoredResponse::from_response(&response), now).await?;
        Ok(response)
    }

    /// `refusal`'s answer, after recording it if it is a security event: in the audit log under the
    /// listing it names, and in the caller's security events (and the named payer's, when a signed
    /// instruction of theirs was presented by someone else). If that record cannot be written the
    /// answer is a failure of ours, so the client retries and the event is not lost.
    async fn refuse(
        &self,
        claim: &Claim,
        caller: &str,
        presented: &Presented,
        listed: Option<&Listing>,
        refusal: &Refusal,
        now: i64,
    ) -> Problem {
        let instruction = &presented.instruction;
        let problem = refusal.problem(instruction);
        if !refusal.is_security_event() {
            return problem;
        }
        let mut detail = refusal.detail();
        detail["code"] = problem.code.into();
        // Only ids are quoted, and kept under a listing's history only once the platform's
        // signature holds: an unsigned body names whatever its sender likes.
        let signed = !matches!(refusal, Refusal::Signature(_));
        for (field, value) in [("instruction_id", &instruction.id), ("listing_id", &instruction.listing_id)] {
            if ids::is_valid(value) {
                detail[field] = value.as_str().into();
            }
        }
        let resource = match signed && ids::is_valid(&instruction.listing_id) {
            true => format!("listing/transfer/{}", instruction.listing_id),
            false => format!("transfer-caller/{caller}"),
        };
        // Derived from the request: its retry writes the same events again, not new ones.
        let source = claim.scope.derived_id("refusal");
        // The payer a signed instruction names, when someone else presented it: one event per
        // presenter and instruction, however often it is presented.
        let payers_event = (*refusal == Refusal::NotPayer && ids::is_valid(&instruction.payer))
            .then(|| (instruction.payer.as_str(), format!("transfer-presented/{caller}/{}", instruction.id)));
        let events = std::iter::once((caller, format!("transfer-refused/{source}"))).chain(payers_event);
        // The platform's terms differ from this side's at the same version: its copy diverged (or
        // it lies). The listing is frozen here with the record, unless an admin cleared that version.
        let freeze = match (refusal, listed) {
            (Refusal::Terms(_), Some(listing)) if listing.freezes_at(listing.version) => Some(listing),
            _ => None,
        };
        let written = async {
            let mut records = vec![
                AuditEntry::now(resource, "operation.refused", caller, detail.clone())
                    .put_item(&self.audit_table, &source)?,
            ];
            for (user, id) in events {
                let event = SecurityEvent {
                    user: user.to_owned(),
                    id,
                    kind: "transfer.refused",
                    at: now,
                    detail: detail.clone(),
                };
                records.extend(self.security.items(&event)?);
            }
            if let Some(listing) = freeze {
                let mut with_freeze = records.clone();
                with_freeze.push(self.listings.freeze_item(&listing.id, listing.version, now)?);
                match transact(&self.dynamodb, with_freeze).await {
                    Ok(()) => {
                        // The alarm's metric filter (template.yaml `ListingFrozenAlarm`) counts this line.
                        tracing::error!(
                            alarm = "listing_frozen",
                            listing = %listing.id,
                            version = listing.version,
                            "the platform's copy of a listing disagrees with this side's: frozen until an admin unfreezes it"
                        );
                        return Ok(());
                    }
                    // Frozen meanwhile by another refusal, or cleared: the records alone.
                    Err(e) if e.broke(LISTING_FREEZABLE) => {}
                    Err(e) => return Err(StoreError::new(e.to_string())),
                }
            }
            transact(&self.dynamodb, records).await.map_err(|e| StoreError::new(e.to_string()))
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
