//! The devices function's HTTP routes (template.yaml `DevicesFunction`), for the device's owner:
//!
//! - `POST /devices`        enroll: `{"public_key", "offline_limit": {amount, currency}}`
//! - `GET  /devices/{id}`   the enrolled device
//! - `POST /devices/{id}/revoke`  a lost phone: codes presented from now on are refused

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::device::{Device, DeviceStore, MAX_DEVICES, OFFLINE_PROFILE};
use super::offline_ceiling;
use super::valid_public_key;
use crate::Problem;
use crate::attention::{AttentionStore, Personal, PersonalKind};
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::dynamo::{TransactError, transact};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{CLAIM_HELD, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight};
use crate::ledger::AccountId;
use crate::ledger::store::LedgerStore;
use crate::money::MoneyInput;
use crate::problem::catalogue;
use crate::security::{SecurityEvent, SecurityEvents};

pub struct DevicesApi {
    dynamodb: aws_sdk_dynamodb::Client,
    devices: DeviceStore,
    security: SecurityEvents,
    home: AttentionStore,
    ledger: LedgerStore,
    idempotency: IdempotencyStore,
}

/// `POST /devices`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct Enrollment {
    /// P-256, the 65-byte uncompressed point, base64.
    public_key: String,
    /// The most its unsettled offline payments may add up to.
    offline_limit: MoneyInput,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::device::DeviceView;
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /devices",
            summary: "enroll a device's public key to pay offline, within an offline limit",
            request: Some(schema::<Enrollment>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<DeviceView>))],
            codes: &[
                catalogue::INVALID_PUBLIC_KEY,
                catalogue::OFFLINE_LIMIT_TOO_HIGH,
                catalogue::OFFLINE_CURRENCY_MISMATCH,
                catalogue::RESERVE_CURRENCY_MISMATCH,
                catalogue::TOO_MANY_DEVICES,
                catalogue::DEVICE_EXISTS,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /devices/{id}",
            summary: "one of the caller's devices",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<DeviceView>))],
            codes: &[catalogue::UNKNOWN_DEVICE],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /devices/{id}/revoke",
            summary: "revoke a lost device: its codes are refused from now on (once however often)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<DeviceView>))],
            codes: &[catalogue::UNKNOWN_DEVICE],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

fn unknown_device(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_DEVICE, format!("no device {id:?}"))
}

impl DevicesApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(DevicesApi {
            devices: DeviceStore::new(dynamodb.clone(), aws::env("DEVICES_TABLE")?),
            security: SecurityEvents::from_env(&dynamodb)?,
            home: AttentionStore::new(dynamodb.clone(), aws::env("HOME_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "POST /devices" => self.enroll(&request, &caller).await,
            "GET /devices/{id}" => {
                let id = path_parameter(&request, "id")?;
                // Another user's device is as unknown as a missing one.
                let device = self
                    .devices
                    .get(id)
                    .await?
                    .filter(|d| d.user == caller.subject)
                    .ok_or_else(|| unknown_device(id))?;
                Ok(json_response(StatusCode::OK, &device.view()))
            }
            // Revoking twice is revoking once: no Idempotency-Key needed, nothing is created.
            "POST /devices/{id}/revoke" => {
                let id = path_parameter(&request, "id")?;
                let (user, now) = (caller.subject.as_str(), crate::clock::now_epoch_seconds());
                // Its owner sees that a key that spoke for them no longer does (a stolen token
                // could revoke the phone they pay with).
                let revoked = SecurityEvent {
                    user: user.to_owned(),
                    id: format!("device-revoked/{id}"),
                    kind: "device.revoked",
                    at: now,
                    detail: serde_json::json!({"device_id": id}),
                };
                let mut with = self.security.items(&revoked)?;
                with.push(self.home.delete_personal(user, PersonalKind::Device, id)?);
                let device = self.devices.revoke(id, user, now, with).await?.ok_or_else(|| unknown_device(id))?;
                Ok(json_response(StatusCode::OK, &device.view()))
            }
            other => {
                Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the devices function has no route {other:?}")))
            }
        }
    }

    /// Why `user`'s offline profile cannot take a device in `currency`, if it cannot.
    async fn profile_refusal(&self, user: &str, currency: crate::money::Currency) -> Result<(), Problem> {
        match self.devices.profile_of(user).await? {
            Some((fixed, _)) if fixed != currency => Err(offline_currency_mismatch(fixed.code())),
            Some((_, devices)) if devices >= MAX_DEVICES => Err(Problem::new(
                catalogue::TOO_MANY_DEVICES,
                format!("you have {devices} devices for offline payments, the most there may be: revoke one first"),
            )),
            _ => Ok(()),
        }
    }

    async fn enroll(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let Enrollment { public_key, offline_limit } = json_body(request)?;
        if !valid_public_key(&public_key) {
            return Err(Problem::new(
                catalogue::INVALID_PUBLIC_KEY,
                "public_key must be a P-256 public key: the 65-byte uncompressed point, base64",
            ));
        }
        let offline_limit = offline_limit.validate()?;
        // What one device may owe at once is bounded, and so are a payer's devices: a payer's
        // offline exposure is at most MAX_DEVICES x this ceiling.
        let ceiling = offline_ceiling(offline_limit.currency());
        if offline_limit.amount() > ceiling {
            return Err(Problem::new(
                catalogue::OFFLINE_LIMIT_TOO_HIGH,
                format!("a device's offline limit is at most {ceiling} {}", offline_limit.currency()),
            )
            .with("max", ceiling.to_string()));
        }
        self.profile_refusal(&caller.subject, offline_limit.currency()).await?;
        // Its codes are paid from the offline reserve: a reserve in another currency could never pay them.
        if let Some(reserve) = self.ledger.account(&AccountId::reserve(&caller.subject)).await?
            && reserve.currency != offline_limit.currency()
        {
            return Err(Problem::new(
                catalogue::RESERVE_CURRENCY_MISMATCH,
                format!(
                    "your offline reserve holds {}; enroll the device with a limit in {}",
                    reserve.currency, reserve.currency
                ),
            ));
        }
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let id = format!("d_{}", &claim.scope.derived_id("device")[..20]);
                let device = Device {
                    key_id: format!("{id}.k1"),
                    id,
                    user: caller.subject.clone(),
                    public_key,
                    offline_limit,
                    outstanding: rust_decimal::Decimal::ZERO,
                    enrolled_at: now,
                    revoked_at: None,
                };
                let response = json_response(StatusCode::CREATED, &device.view());
                // A new key that speaks for the account is something its owner must see (a stolen
                // token could enroll one).
                let enrolled = SecurityEvent {
                    user: device.user.clone(),
                    id: format!("device-enrolled/{}", device.id),
                    kind: "device.enrolled",
                    at: now,
                    detail: serde_json::json!({"device_id": device.id, "key_id": device.key_id}),
                };
                let mut items = vec![
                    self.devices.create_item(&device)?,
                    self.devices.enroll_item(&device.user, device.offline_limit.currency())?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                items.extend(self.security.items(&enrolled)?);
                let listed = serde_json::json!({
                    "device_id": device.id,
                    "key_id": device.key_id,
                    "offline_limit": device.offline_limit,
                    "enrolled_at": device.enrolled_at,
                });
                let personal = Personal { kind: PersonalKind::Device, id: device.id.clone(), at: now, data: listed };
                items.push(self.home.put_personal(&device.user, &personal)?);
                match transact(&self.dynamodb, items).await {
                    Ok(()) => Ok(response),
                    // Another enrollment fixed another currency, or took the last room, meanwhile.
                    Err(e) if e.broke(OFFLINE_PROFILE) => {
                        self.profile_refusal(&device.user, device.offline_limit.currency()).await?;
                        Err(in_flight())
                    }
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    Err(TransactError::ConditionFailed(_)) => Err(Problem::new(
                        catalogue::DEVICE_EXISTS,
                        format!("device {} was already enrolled with this Idempotency-Key", device.id),
                    )),
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }
}

/// A device in another currency than the payer's first: its codes could meet a reserve in
/// another currency, which could never pay them.
fn offline_currency_mismatch(fixed: &str) -> Problem {
    Problem::new(
        catalogue::OFFLINE_CURRENCY_MISMATCH,
        format!("your offline payments are in {fixed}: enroll the device with a limit in {fixed}"),
    )
}
