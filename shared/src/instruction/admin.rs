//! The transfer side's admin routes (template.yaml `TransferFunction`, scope `superpay/admin`),
//! each audited in the transaction that makes its change:
//!
//! - `PUT /transfer/thresholds/{user}`  `{"device_signature_above": {"USD": "50.00", ...}}`: the
//!   account's own device co-signature thresholds, replacing the config group's for the currencies
//!   it names (`super::threshold`); 200 the override
//! - `POST /transfer/listings/{id}/unfreeze`  ends a divergence freeze: the listing's current
//!   version no longer freezes it (its divergences are still refused); 200 the listing

use std::collections::BTreeMap;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde_json::json;

use super::listing::{ListingStore, unknown_listing};
use super::threshold::{ThresholdStore, ThresholdsJson};
use crate::Problem;
use crate::audit::{AuditEntry, commit_audited};
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::ids;
use crate::problem::catalogue;

/// `PUT /transfer/thresholds/{user}`'s answer: the account's override as set.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct ThresholdOverride {
    user: String,
    /// Per currency code, the amount above which the account's transfers need its device's
    /// co-signature; the config group's for the currencies it does not name.
    device_signature_above: BTreeMap<&'static str, String>,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::listing::ListingView;
    use super::threshold::ThresholdsJson;
    use crate::openapi::{RouteDoc, schema};
    &[
        RouteDoc {
            key: "PUT /transfer/thresholds/{user}",
            summary: "set an account's own device co-signature thresholds, replacing the config group's for the currencies it names",
            request: Some(schema::<ThresholdsJson>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<ThresholdOverride>))],
            codes: &[catalogue::UNKNOWN_CURRENCY, catalogue::INVALID_THRESHOLD],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /transfer/listings/{id}/unfreeze",
            summary: "end a listing's divergence freeze: its current version no longer freezes it (its divergences are still refused)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<ListingView>))],
            codes: &[catalogue::UNKNOWN_LISTING, catalogue::LISTING_NOT_FROZEN],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

pub struct TransferAdminApi {
    dynamodb: aws_sdk_dynamodb::Client,
    listings: ListingStore,
    overrides: ThresholdStore,
    audit_table: String,
}

impl TransferAdminApi {
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        Ok(TransferAdminApi {
            listings: ListingStore::new(dynamodb.clone(), aws::env("LISTINGS_TABLE")?),
            overrides: ThresholdStore::new(dynamodb.clone(), aws::env("THRESHOLDS_TABLE")?),
            audit_table: aws::env("AUDIT_TABLE")?,
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let admin = Caller::from_request(&request)?.require_admin()?;
        match route_key(&request) {
            "PUT /transfer/thresholds/{user}" => {
                let user = ids::check("user", path_parameter(&request, "user")?)?;
                let thresholds = json_body::<ThresholdsJson>(&request)?.validate()?;
                let entry = AuditEntry::now(
                    format!("transfer-threshold/{user}"),
                    "threshold.set",
                    &admin.subject,
                    thresholds.view(),
                );
                let write = self.overrides.put_item(user, &thresholds)?;
                commit_audited(&self.dynamodb, &self.audit_table, entry, write).await?;
                let set = ThresholdOverride { user: user.to_owned(), device_signature_above: thresholds.amounts() };
                Ok(json_response(StatusCode::OK, &set))
            }
            "POST /transfer/listings/{id}/unfreeze" => {
                let id = ids::check("id", path_parameter(&request, "id")?)?;
                let listing = self.listings.get(id).await?.ok_or_else(|| unknown_listing(id))?;
                let detail = json!({"listing_version": listing.version, "frozen_at": listing.freeze.frozen_at});
                let entry =
                    AuditEntry::now(format!("listing/transfer/{id}"), "listing.unfreeze", &admin.subject, detail);
                let unfreeze = self.listings.unfreeze_item(id, listing.version)?;
                if commit_audited(&self.dynamodb, &self.audit_table, entry, unfreeze).await? {
                    return Err(Problem::new(
                        catalogue::LISTING_NOT_FROZEN,
                        format!("listing {id:?} is not frozen (or changed since it was read: look again)"),
                    ));
                }
                let listing = self.listings.get(id).await?.ok_or_else(|| unknown_listing(id))?;
                Ok(json_response(StatusCode::OK, &listing.view()))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the transfer function has no admin route {other:?}"),
            )),
        }
    }
}
