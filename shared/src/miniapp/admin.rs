//! The mini-app admin routes, served by the merchants function (template.yaml `MerchantsFunction`,
//! whose `main.rs` puts them after `crate::merchant::api`'s):
//!
//! - `POST /miniapps`                register a merchant's mini-app; the answer shows its key once
//! - `GET  /miniapps/{id}`           the mini-app (never its key)
//! - `POST /miniapps/{id}/status`    `{"status": "active" | "suspended" | "revoked"}` (revoked is final)
//! - `POST /miniapps/{id}/keys`      rotate its key; the answer shows the new key once
//! - `POST /miniapps/{id}/keys/end-grace` end the previous key's grace now
//!
//! Issuing, rotating and ending graces is `crate::party_keys`.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::store::MiniAppStore;
use super::{MiniApp, MiniAppStatus, Registration, unknown_miniapp};
use crate::Problem;
use crate::admin::{Admin, requested_status};
use crate::auth::{Administrator, Caller};
use crate::aws::{self, MissingEnv};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::merchant::store::MerchantStore;
use crate::merchant::{MerchantStatus, inactive_merchant, unknown_merchant};
use crate::party_keys::{KeyChange, KeyIssue, KeyedParty, already_registered};
use crate::problem::catalogue;

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::registry::{MiniAppView, RegistrationJson};
    use crate::admin::StatusChange;
    use crate::openapi::{Header, RouteDoc, schema};
    use crate::party_keys::{END_GRACE_DOC, ROTATION_DOC, WithSecret};
    &[
        RouteDoc {
            key: "POST /miniapps",
            summary: "register an active merchant's mini-app: the answer shows its key once",
            request: Some(schema::<RegistrationJson>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<WithSecret<MiniAppView>>))],
            codes: &[
                catalogue::INVALID_SERVER_URL,
                catalogue::INVALID_ID,
                catalogue::INVALID_INTERFACE,
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::MINIAPP_EXISTS,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /miniapps/{id}",
            summary: "a mini-app (never its key)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<MiniAppView>))],
            codes: &[catalogue::UNKNOWN_MINIAPP],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /miniapps/{id}/status",
            summary: "suspend a mini-app, make it active again, or revoke it (final)",
            request: Some(schema::<StatusChange<MiniAppStatus>>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<MiniAppView>))],
            codes: &[catalogue::INVALID_STATUS, catalogue::UNKNOWN_MINIAPP, catalogue::MINIAPP_REVOKED],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /miniapps/{id}/keys",
            codes: &[catalogue::UNKNOWN_MINIAPP, catalogue::INVALID_GRACE_SECONDS, catalogue::ROTATION_IN_PROGRESS],
            ..ROTATION_DOC
        },
        RouteDoc {
            key: "POST /miniapps/{id}/keys/end-grace",
            codes: &[catalogue::UNKNOWN_MINIAPP, catalogue::NO_ROTATION_IN_GRACE],
            ..END_GRACE_DOC
        },
    ]
};

pub struct MiniAppAdmin {
    admin: Admin,
    apps: MiniAppStore,
    merchants: MerchantStore,
}

impl MiniAppAdmin {
    pub fn from_env(admin: Admin) -> Result<Self, MissingEnv> {
        Ok(MiniAppAdmin {
            apps: MiniAppStore::new(admin.dynamodb.clone(), aws::env("MINIAPPS_TABLE")?),
            merchants: MerchantStore::new(admin.dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            admin,
        })
    }

    /// The answer to an admin's `request` if it is one of these routes; `None` for any other.
    pub async fn route(&self, request: &Request, caller: &Administrator) -> Option<Result<Response<Body>, Problem>> {
        let keys = &self.admin.keys;
        Some(match route_key(request) {
            "POST /miniapps" => self.register(request, caller).await,
            "GET /miniapps/{id}" => self.app(request).await.map(|app| json_response(StatusCode::OK, &app.view())),
            "POST /miniapps/{id}/status" => self.set_status(request, caller).await,
            "POST /miniapps/{id}/keys" => {
                keys.change(KeyChange::Rotate, request, caller, self.apps.table(), || self.app(request)).await
            }
            "POST /miniapps/{id}/keys/end-grace" => {
                keys.change(KeyChange::EndGrace, request, caller, self.apps.table(), || self.app(request)).await
            }
            _ => return None,
        })
    }

    /// The app the path names, as it is now.
    async fn app(&self, request: &Request) -> Result<MiniApp, Problem> {
        let id = path_parameter(request, "id")?;
        self.apps.get(id).await?.ok_or_else(|| unknown_miniapp(id))
    }

    /// A merchant's mini-app: its key id and key (shown once) and its interface descriptor.
    async fn register(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let registration = Registration::parse(json_body(request)?, self.admin.allow_plain_http)?;
        self.admin
            .idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Judged inside the key's run: a replay answers as the first time, whatever the owner became.
                let owner = self
                    .merchants
                    .get(&registration.owner_merchant_id)
                    .await?
                    .ok_or_else(|| unknown_merchant(&registration.owner_merchant_id))?;
                if owner.status != MerchantStatus::Active {
                    return Err(inactive_merchant(&owner.id));
                }
                let id = format!("a_{}", &claim.scope.derived_id("miniapp")[..20]);
                let key = self.admin.keys.generate(&MiniApp::key_owner(&id)).await?;
                let app = MiniApp {
                    key_id: format!("{id}.k1"),
                    id,
                    owner_merchant_id: owner.id.clone(),
                    server_url: registration.server_url,
                    status: MiniAppStatus::Active,
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    interface: registration.interface,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: app.audit_resource(),
                    action: "miniapp.register",
                    view: app.view(),
                    location: app.location(),
                    conflict: already_registered(catalogue::MINIAPP_EXISTS, &app.id),
                };
                self.admin.keys.commit_new_key(&claim, now, issued, &key.key, self.apps.create_item(&app)?).await
            })
            .await
    }

    async fn set_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let id = path_parameter(request, "id")?;
        let status = requested_status(request, MiniAppStatus::parse, "\"active\", \"suspended\" or \"revoked\"")?;
        let write = self.apps.status_item(id, status)?;
        let detail = json!({ "status": status.as_str() });
        let refused =
            self.admin.commit_status(caller, format!("miniapp/{id}"), "miniapp.status", detail, write).await?;
        let app = self.apps.get(id).await?.ok_or_else(|| unknown_miniapp(id))?;
        // The write is refused for a missing app (above) or a revoked one, unless it asked for revoked again.
        if refused && status != MiniAppStatus::Revoked {
            return Err(Problem::alternate(
                catalogue::MINIAPP_REVOKED,
                format!("mini-app {id:?} was revoked; revocation is final"),
            ));
        }
        Ok(json_response(StatusCode::OK, &app.view()))
    }
}
