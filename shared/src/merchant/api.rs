//! The merchants function's HTTP routes (template.yaml `MerchantsFunction`), all admin:
//!
//! - `POST /merchants`               register; the answer shows the merchant's key once
//! - `GET  /merchants/{id}`          the merchant (never its key)
//! - `POST /merchants/{id}/status`   `{"status": "active" | "suspended"}`

use lambda_http::http::{StatusCode, header as h};
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::store::MerchantStore;
use super::{Merchant, MerchantStatus, Registration, RegistrationJson, unknown_merchant};
use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_millis;
use crate::dynamo::{TransactError, transact};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::IdempotencyStore;
use crate::keys::KeyService;

pub struct MerchantsApi {
    dynamodb: aws_sdk_dynamodb::Client,
    merchants: MerchantStore,
    keys: KeyService,
    idempotency: IdempotencyStore,
    audit_table: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
}

/// What an admin sees of a merchant: everything but its key.
fn view(merchant: &Merchant) -> Value {
    json!({
        "id": merchant.id,
        "name": merchant.name,
        "product_server_url": merchant.product_server_url,
        "currency": merchant.currency.code(),
        "status": merchant.status.as_str(),
        "key_id": merchant.key_id,
        "created_at": merchant.created_at,
    })
}

impl MerchantsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(MerchantsApi {
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            keys: KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            audit_table: aws::env("AUDIT_TABLE")?,
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        caller.require_admin()?;
        match route_key(&request) {
            "POST /merchants" => self.register(&request, &caller).await,
            "GET /merchants/{id}" => {
                let id = path_parameter(&request, "id")?;
                let merchant = self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
                Ok(json_response(StatusCode::OK, &view(&merchant)))
            }
            "POST /merchants/{id}/status" => self.set_status(&request, &caller).await,
            other => Err(Problem::not_found("unknown_route", format!("the merchants function has no route {other:?}"))),
        }
    }

    async fn register(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let registration = Registration::parse(json_body::<RegistrationJson>(request)?)?;
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Derived from the key: a retry, even after the idempotency record expired, names
                // the same merchant and cannot register it twice.
                let id = format!("m_{}", &claim.scope.derived_id("merchant")[..20]);
                let key = self.keys.generate(&Merchant::key_owner(&id)).await?;
                let merchant = Merchant {
                    key_id: format!("{id}.k1"),
                    id,
                    name: registration.name,
                    product_server_url: registration.product_server_url,
                    currency: registration.currency,
                    status: MerchantStatus::Active,
                    key_ciphertext: key.ciphertext,
                    created_at: now,
                };
                let mut shown = view(&merchant);
                shown["secret"] = json!(key.key.to_base64().expose());
                let mut kept = view(&merchant);
                // A secret shown once is never kept in clear, not even for a replay.
                kept["secret"] = Value::Null;
                kept["secret_note"] = json!("the secret is shown only in the first answer; it is not stored in clear");
                let location = format!("/merchants/{}", merchant.id);
                let respond = |body: &Value| {
                    let mut response = json_response(StatusCode::CREATED, body);
                    if let Ok(value) = h::HeaderValue::from_str(&location) {
                        response.headers_mut().insert(h::LOCATION, value);
                    }
                    response
                };
                let audit = AuditEntry {
                    resource: format!("merchant/{}", merchant.id),
                    action: "merchant.register",
                    actor: claim.scope.caller.clone(),
                    at_ms: now_epoch_millis(),
                    detail: view(&merchant),
                };
                let items = vec![
                    self.merchants.create_item(&merchant)?,
                    audit.put_item(&self.audit_table, &claim.scope.derived_id("audit"))?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&respond(&kept)), now)?,
                ];
                match transact(&self.dynamodb, items).await {
                    Ok(()) => Ok(respond(&shown)),
                    Err(TransactError::ConditionFailed(failed)) if failed.contains(&0) => Err(Problem::new(
                        StatusCode::CONFLICT,
                        "merchant_exists",
                        format!("merchant {} was already registered with this Idempotency-Key", merchant.id),
                    )),
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }

    async fn set_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let id = path_parameter(request, "id")?;
        let StatusChange { status } = json_body(request)?;
        let status = MerchantStatus::parse(&status)
            .ok_or_else(|| Problem::bad_request("invalid_status", "status must be \"active\" or \"suspended\""))?;
        let audit = AuditEntry {
            resource: format!("merchant/{id}"),
            action: "merchant.status",
            actor: caller.subject.clone(),
            at_ms: now_epoch_millis(),
            detail: json!({ "status": status.as_str() }),
        };
        let items = vec![
            self.merchants.status_item(id, status)?,
            audit.put_item(&self.audit_table, &uuid::Uuid::new_v4().to_string())?,
        ];
        match transact(&self.dynamodb, items).await {
            Ok(()) => {}
            Err(TransactError::ConditionFailed(_)) => return Err(unknown_merchant(id)),
            Err(e) => return Err(Problem::internal(e)),
        }
        let merchant = self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
        Ok(json_response(StatusCode::OK, &view(&merchant)))
    }
}
