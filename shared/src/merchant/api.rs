//! The merchant admin routes (template.yaml `MerchantsFunction`, which also serves the mini-app
//! admin routes, `crate::miniapp::admin`):
//!
//! - `POST /merchants`               register; the answer shows the merchant's key once
//! - `GET  /merchants/{id}`          the merchant (never its key)
//! - `POST /merchants/{id}/status`   `{"status": "active" | "suspended"}`
//! - `POST /merchants/{id}/terminals` register a terminal (`{"kind": "till" | "transfer"}`, no body:
//!   a till); the answer shows its key once
//! - `POST /merchants/{id}/terminals/{terminal}/status` `{"status": "active" | "suspended"}`
//! - `POST /merchants/{id}/keys`, `POST /merchants/{id}/terminals/{terminal}/keys` rotate a key;
//!   the answer shows the new key once
//! - `POST .../keys/end-grace` (each of the two) end the previous key's grace now
//!
//! Issuing, rotating and ending graces is `crate::party_keys`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

use super::store::MerchantStore;
use super::terminal::{Terminal, TerminalKind, TerminalStore, unknown_terminal};
use super::{Merchant, MerchantStatus, Registration, RegistrationJson, unknown_merchant};
use crate::Problem;
use crate::admin::{Admin, requested_status};
use crate::auth::{Administrator, Caller};
use crate::aws::{self, MissingEnv};
use crate::http::{body_bytes, json_body, json_response, path_parameter, route_key};
use crate::party_keys::{KeyChange, KeyIssue, KeyedParty, already_registered};
use crate::problem::catalogue;

/// A terminal registration's body (none: a till).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "TerminalRegistration"))]
#[serde(deny_unknown_fields)]
struct TerminalJson {
    kind: TerminalKind,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::MerchantView;
    use super::terminal::TerminalView;
    use crate::admin::StatusChange;
    use crate::openapi::{Header, RouteDoc, schema};
    use crate::party_keys::{END_GRACE_DOC, ROTATION_DOC, WithSecret};
    &[
        RouteDoc {
            key: "POST /merchants",
            summary: "register a merchant: the answer shows its key once",
            request: Some(schema::<RegistrationJson>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<WithSecret<MerchantView>>))],
            codes: &[
                catalogue::INVALID_MERCHANT_NAME,
                catalogue::INVALID_PRODUCT_SERVER_URL,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::MERCHANT_EXISTS,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /merchants/{id}",
            summary: "a merchant (never its key)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<MerchantView>))],
            codes: &[catalogue::UNKNOWN_MERCHANT],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /merchants/{id}/status",
            summary: "suspend a merchant or make it active again",
            request: Some(schema::<StatusChange<MerchantStatus>>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<MerchantView>))],
            codes: &[catalogue::INVALID_STATUS, catalogue::UNKNOWN_MERCHANT],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /merchants/{id}/terminals",
            summary: "register a merchant's terminal of a kind (no body: a till): the answer shows its key once",
            request: Some(schema::<TerminalJson>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<WithSecret<TerminalView>>))],
            codes: &[catalogue::UNKNOWN_MERCHANT, catalogue::TERMINAL_EXISTS],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /merchants/{id}/terminals/{terminal}/status",
            summary: "suspend a merchant's terminal (a lost till) or make it active again",
            request: Some(schema::<StatusChange<MerchantStatus>>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<TerminalView>))],
            codes: &[catalogue::INVALID_STATUS, catalogue::UNKNOWN_TERMINAL],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /merchants/{id}/keys",
            codes: &[catalogue::UNKNOWN_MERCHANT, catalogue::INVALID_GRACE_SECONDS, catalogue::ROTATION_IN_PROGRESS],
            ..ROTATION_DOC
        },
        RouteDoc {
            key: "POST /merchants/{id}/terminals/{terminal}/keys",
            codes: &[catalogue::UNKNOWN_TERMINAL, catalogue::INVALID_GRACE_SECONDS, catalogue::ROTATION_IN_PROGRESS],
            ..ROTATION_DOC
        },
        RouteDoc {
            key: "POST /merchants/{id}/keys/end-grace",
            codes: &[catalogue::UNKNOWN_MERCHANT, catalogue::NO_ROTATION_IN_GRACE],
            ..END_GRACE_DOC
        },
        RouteDoc {
            key: "POST /merchants/{id}/terminals/{terminal}/keys/end-grace",
            codes: &[catalogue::UNKNOWN_TERMINAL, catalogue::NO_ROTATION_IN_GRACE],
            ..END_GRACE_DOC
        },
    ]
};

pub struct MerchantsApi {
    admin: Admin,
    merchants: MerchantStore,
    terminals: TerminalStore,
}

/// A merchant's or terminal's new status, from the body.
fn parse_status(request: &Request) -> Result<MerchantStatus, Problem> {
    requested_status(request, MerchantStatus::parse, "\"active\" or \"suspended\"")
}

impl MerchantsApi {
    pub fn from_env(admin: Admin) -> Result<Self, MissingEnv> {
        Ok(MerchantsApi {
            merchants: MerchantStore::new(admin.dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            terminals: TerminalStore::new(admin.dynamodb.clone(), aws::env("TERMINALS_TABLE")?),
            admin,
        })
    }

    /// The answer to an admin's `request` if it is one of these routes; `None` for any other.
    pub async fn route(&self, request: &Request, caller: &Administrator) -> Option<Result<Response<Body>, Problem>> {
        let keys = &self.admin.keys;
        Some(match route_key(request) {
            "POST /merchants" => self.register(request, caller).await,
            "GET /merchants/{id}" => self.merchant(request).await.map(|m| json_response(StatusCode::OK, &m.view())),
            "POST /merchants/{id}/status" => self.set_status(request, caller).await,
            "POST /merchants/{id}/terminals" => self.register_terminal(request, caller).await,
            "POST /merchants/{id}/terminals/{terminal}/status" => self.set_terminal_status(request, caller).await,
            "POST /merchants/{id}/keys" => {
                keys.change(KeyChange::Rotate, request, caller, self.merchants.table(), || self.merchant(request)).await
            }
            "POST /merchants/{id}/terminals/{terminal}/keys" => {
                keys.change(KeyChange::Rotate, request, caller, self.terminals.table(), || self.terminal(request)).await
            }
            "POST /merchants/{id}/keys/end-grace" => {
                keys.change(KeyChange::EndGrace, request, caller, self.merchants.table(), || self.merchant(request))
                    .await
            }
            "POST /merchants/{id}/terminals/{terminal}/keys/end-grace" => {
                keys.change(KeyChange::EndGrace, request, caller, self.terminals.table(), || self.terminal(request))
                    .await
            }
            _ => return None,
        })
    }

    /// The merchant the path names, as it is now.
    async fn merchant(&self, request: &Request) -> Result<Merchant, Problem> {
        let id = path_parameter(request, "id")?;
        self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))
    }

    /// The terminal the path names, as it is now.
    async fn terminal(&self, request: &Request) -> Result<Terminal, Problem> {
        self.terminal_of(path_parameter(request, "id")?, path_parameter(request, "terminal")?).await
    }

    async fn register(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let registration = Registration::parse(json_body::<RegistrationJson>(request)?, self.admin.allow_plain_http)?;
        self.admin
            .idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Derived from the key: a retry, even after the idempotency record expired, names
                // the same merchant and cannot register it twice.
                let id = format!("m_{}", &claim.scope.derived_id("merchant")[..20]);
                let key = self.admin.keys.generate(&Merchant::key_owner(&id)).await?;
                let merchant = Merchant {
                    key_id: format!("{id}.k1"),
                    id,
                    name: registration.name,
                    product_server_url: registration.product_server_url,
                    currency: registration.currency,
                    status: MerchantStatus::Active,
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: merchant.audit_resource(),
                    action: "merchant.register",
                    view: merchant.view(),
                    location: merchant.location(),
                    conflict: already_registered(catalogue::MERCHANT_EXISTS, &merchant.id),
                };
                self.admin
                    .keys
                    .commit_new_key(&claim, now, issued, &key.key, self.merchants.create_item(&merchant)?)
                    .await
            })
            .await
    }

    /// Terminal `id` of `merchant_id`: another merchant's terminal is as unknown as a missing one.
    async fn terminal_of(&self, merchant_id: &str, id: &str) -> Result<Terminal, Problem> {
        self.terminals.get(id).await?.filter(|t| t.merchant_id == merchant_id).ok_or_else(|| unknown_terminal(id))
    }

    /// Suspends a terminal (a lost or stolen till) or makes it active again. A suspended terminal's
    /// calls are refused where its key is verified (`crate::offline::payments_api`).
    async fn set_terminal_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let (merchant_id, id) = (path_parameter(request, "id")?, path_parameter(request, "terminal")?);
        let status = parse_status(request)?;
        let write = self.terminals.status_item(id, merchant_id, status)?;
        let detail = json!({ "terminal": id, "status": status.as_str() });
        let resource = format!("merchant/{merchant_id}");
        if self.admin.commit_status(caller, resource, "terminal.status", detail, write).await? {
            return Err(unknown_terminal(id));
        }
        Ok(json_response(StatusCode::OK, &self.terminal_of(merchant_id, id).await?.view()))
    }

    /// A merchant's terminal of the kind the body names (`{"kind": "till" | "transfer"}`; no body:
    /// a till): its own key id and key, shown once.
    async fn register_terminal(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let merchant = self.merchant(request).await?;
        let kind =
            if body_bytes(request).is_empty() { TerminalKind::Till } else { json_body::<TerminalJson>(request)?.kind };
        self.admin
            .idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let id = format!("t_{}", &claim.scope.derived_id("terminal")[..20]);
                let key = self.admin.keys.generate(&Terminal::key_owner(kind, &id)).await?;
                let terminal = Terminal {
                    key_id: format!("{id}.k1"),
                    id,
                    merchant_id: merchant.id.clone(),
                    kind,
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    status: MerchantStatus::Active,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: terminal.audit_resource(),
                    action: "terminal.register",
                    view: terminal.view(),
                    location: terminal.location(),
                    conflict: already_registered(catalogue::TERMINAL_EXISTS, &terminal.id),
                };
                self.admin
                    .keys
                    .commit_new_key(&claim, now, issued, &key.key, self.terminals.create_item(&terminal)?)
                    .await
            })
            .await
    }

    async fn set_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let id = path_parameter(request, "id")?;
        let status = parse_status(request)?;
        let write = self.merchants.status_item(id, status)?;
        let detail = json!({ "status": status.as_str() });
        if self.admin.commit_status(caller, format!("merchant/{id}"), "merchant.status", detail, write).await? {
            return Err(unknown_merchant(id));
        }
        let merchant = self.merchants.get(id).await?.ok_or_else(|| unknown_merchant(id))?;
        Ok(json_response(StatusCode::OK, &merchant.view()))
    }
}
