//! The partner platforms' admin routes, served by the merchants function (template.yaml
//! `MerchantsFunction`, whose `main.rs` puts them after the merchants' and mini-apps' tables):
//!
//! - `POST /partners`                register a partner platform; the answer shows its key once
//! - `GET  /partners/{id}`           the partner (never its key)
//! - `POST /partners/{id}/status`    `{"status": "active" | "suspended"}`
//! - `POST /partners/{id}/keys`      rotate its key; the answer shows the new key once
//! - `POST /partners/{id}/keys/end-grace` end the previous key's grace now
//!
//! Issuing, rotating and ending graces is `crate::party_keys`; every change is audited.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::partner::{Partner, PartnerStore, Registration, unknown_partner};
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
    use super::partner::{PartnerView, RegistrationJson};
    use crate::admin::StatusChange;
    use crate::openapi::{Header, RouteDoc, schema};
    use crate::party_keys::{END_GRACE_DOC, ROTATION_DOC, WithSecret};
    &[
        RouteDoc {
            key: "POST /partners",
            summary: "register a partner platform paid into an active merchant's account: the answer shows its key once",
            request: Some(schema::<RegistrationJson>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<WithSecret<PartnerView>>))],
            codes: &[
                catalogue::INVALID_PARTNER_NAME,
                catalogue::INVALID_CALLBACK_URL,
                catalogue::INVALID_ID,
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::PARTNER_EXISTS,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /partners/{id}",
            summary: "a partner platform (never its key)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PartnerView>))],
            codes: &[catalogue::UNKNOWN_PARTNER],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /partners/{id}/status",
            summary: "suspend a partner platform or make it active again",
            request: Some(schema::<StatusChange<MerchantStatus>>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<PartnerView>))],
            codes: &[catalogue::INVALID_STATUS, catalogue::UNKNOWN_PARTNER],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /partners/{id}/keys",
            codes: &[catalogue::UNKNOWN_PARTNER, catalogue::INVALID_GRACE_SECONDS, catalogue::ROTATION_IN_PROGRESS],
            ..ROTATION_DOC
        },
        RouteDoc {
            key: "POST /partners/{id}/keys/end-grace",
            codes: &[catalogue::UNKNOWN_PARTNER, catalogue::NO_ROTATION_IN_GRACE],
            ..END_GRACE_DOC
        },
    ]
};

pub struct PartnerAdmin {
    admin: Admin,
    partners: PartnerStore,
    merchants: MerchantStore,
}

impl PartnerAdmin {
    pub fn from_env(admin: Admin) -> Result<Self, MissingEnv> {
        Ok(PartnerAdmin {
            partners: PartnerStore::new(admin.dynamodb.clone(), aws::env("PARTNERS_TABLE")?),
            merchants: MerchantStore::new(admin.dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            admin,
        })
    }

    /// The answer to an admin's `request` if it is one of these routes; `None` for any other.
    pub async fn route(&self, request: &Request, caller: &Administrator) -> Option<Result<Response<Body>, Problem>> {
        let keys = &self.admin.keys;
        Some(match route_key(request) {
            "POST /partners" => self.register(request, caller).await,
            "GET /partners/{id}" => self.partner(request).await.map(|p| json_response(StatusCode::OK, &p.view())),
            "POST /partners/{id}/status" => self.set_status(request, caller).await,
            "POST /partners/{id}/keys" => {
                keys.change(KeyChange::Rotate, request, caller, self.partners.table(), || self.partner(request)).await
            }
            "POST /partners/{id}/keys/end-grace" => {
                keys.change(KeyChange::EndGrace, request, caller, self.partners.table(), || self.partner(request)).await
            }
            _ => return None,
        })
    }

    /// The partner the path names, as it is now.
    async fn partner(&self, request: &Request) -> Result<Partner, Problem> {
        let id = crate::ids::check("id", path_parameter(request, "id")?)?;
        self.partners.get(id).await?.ok_or_else(|| unknown_partner(id))
    }

    /// A partner platform paid into an active merchant's account: its key id and key (shown once).
    async fn register(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let registration = Registration::parse(json_body(request)?, self.admin.allow_plain_http)?;
        self.admin
            .idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Judged inside the key's run: a replay answers as the first time.
                let merchant = self
                    .merchants
                    .get(&registration.merchant_id)
                    .await?
                    .ok_or_else(|| unknown_merchant(&registration.merchant_id))?;
                if merchant.status != MerchantStatus::Active {
                    return Err(inactive_merchant(&merchant.id));
                }
                let id = format!("pp_{}", &claim.scope.derived_id("partner")[..20]);
                let key = self.admin.keys.generate(&Partner::key_owner(&id)).await?;
                let partner = Partner {
                    key_id: format!("{id}.k1"),
                    id,
                    name: registration.name,
                    callback_url: registration.callback_url,
                    merchant_id: merchant.id.clone(),
                    currency: merchant.currency,
                    status: MerchantStatus::Active,
                    key_ciphertext: key.ciphertext,
                    previous_key: None,
                    created_at: now,
                };
                let issued = KeyIssue {
                    resource: partner.audit_resource(),
                    action: "partner.register",
                    view: partner.view(),
                    location: partner.location(),
                    conflict: already_registered(catalogue::PARTNER_EXISTS, &partner.id),
                };
                self.admin
                    .keys
                    .commit_new_key(&claim, now, issued, &key.key, self.partners.create_item(&partner)?)
                    .await
            })
            .await
    }

    async fn set_status(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let id = crate::ids::check("id", path_parameter(request, "id")?)?;
        let status = requested_status(request, MerchantStatus::parse, "\"active\" or \"suspended\"")?;
        let write = self.partners.status_item(id, status)?;
        let detail = json!({ "status": status.as_str() });
        if self.admin.commit_status(caller, format!("partner/{id}"), "partner.status", detail, write).await? {
            return Err(unknown_partner(id));
        }
        let partner = self.partners.get(id).await?.ok_or_else(|| unknown_partner(id))?;
        Ok(json_response(StatusCode::OK, &partner.view()))
    }
}
