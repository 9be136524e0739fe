//! The listing routes, served by both functions over their own tables (template.yaml
//! `TransferPlatformFunction` under `/platform`, `TransferFunction` under `/transfer`):
//!
//! - `PUT /{side}/listings/{id}`  a merchant (signed) publishes or changes a listing on this side;
//!   201 when created, 200 when changed or unchanged (a retry)
//! - `GET /{side}/listings/{id}`  this side's copy, for any signed-in user
//!
//! A provider publishes to each side separately, numbering the versions itself: neither side's
//! function can write the other's table. The platform checks the merchant's own signature; the
//! transfer side only a transfer signer's (a merchant terminal of kind `transfer`), whose key only
//! it can unwrap, so a platform taken over cannot publish to the transfer side as the merchant.
//! Every change is audited with the side it was made on, in the transaction that makes it, under
//! the signed request's key id and nonce; a refused one that tried to pay another account or name
//! another merchant's listing id (an id starts with its merchant's id and a dot), or came from a
//! suspended merchant, is audited too.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::listing::{LISTING_UNCHANGED, ListingJson, ListingStore, Publication, publish, unknown_listing};
use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::dynamo::transact;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::ids;
use crate::keys::KeyService;
use crate::merchant::directory::MerchantDirectory;
use crate::merchant::store::{MERCHANT_ACTIVE, MerchantStore};
use crate::merchant::terminal::{TerminalDirectory, TerminalKind, TerminalStore};
use crate::merchant::{Merchant, MerchantStatus, inactive_merchant};
use crate::nonce::NonceStore;
use crate::problem::catalogue;
use crate::signed;

/// Which of the two servers a route table serves: its path prefix and name in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Platform,
    Transfer,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Platform => "platform",
            Side::Transfer => "transfer",
        }
    }
}

/// The listing routes' documentation (`crate::openapi`), both sides'.
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::listing::{ListingJson, ListingView};
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "PUT /platform/listings/{id}",
            summary: "a merchant (signed) publishes or changes a listing on the transfer platform; 201 created, 200 changed or unchanged (a retry)",
            request: Some(schema::<ListingJson>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<ListingView>)), (200, Some(schema::<ListingView>))],
            codes: &[
                catalogue::MERCHANT_INACTIVE,
                catalogue::INVALID_LISTING_TITLE,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::LISTING_CURRENCY_MISMATCH,
                catalogue::INVALID_LISTING_VERSION,
                catalogue::PAYEE_NOT_OWN_ACCOUNT,
                catalogue::LISTING_ID_NOT_OWN,
                catalogue::LISTING_VERSION_MISMATCH,
                catalogue::LISTING_CONFLICT,
            ],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /platform/listings/{id}",
            summary: "the transfer platform's copy of a listing",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<ListingView>))],
            codes: &[catalogue::UNKNOWN_LISTING],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "PUT /transfer/listings/{id}",
            summary: "a merchant's transfer signer (signed) publishes or changes a listing on the transfer side; 201 created, 200 changed or unchanged (a retry)",
            request: Some(schema::<ListingJson>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<ListingView>)), (200, Some(schema::<ListingView>))],
            codes: &[
                // The signer's own, then its merchant's.
                catalogue::TERMINAL_INACTIVE,
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::INVALID_LISTING_TITLE,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::LISTING_CURRENCY_MISMATCH,
                catalogue::INVALID_LISTING_VERSION,
                catalogue::PAYEE_NOT_OWN_ACCOUNT,
                catalogue::LISTING_ID_NOT_OWN,
                catalogue::LISTING_VERSION_MISMATCH,
                catalogue::LISTING_CONFLICT,
            ],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /transfer/listings/{id}",
            summary: "the transfer side's copy of a listing",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<ListingView>))],
            codes: &[catalogue::UNKNOWN_LISTING],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

/// How often a publication is judged again when another one changed the copy meanwhile.
const PUBLISH_ATTEMPTS: usize = 3;

pub struct ListingsApi {
    side: Side,
    dynamodb: aws_sdk_dynamodb::Client,
    listings: ListingStore,
    merchants: MerchantDirectory,
    /// The transfer side's publications are signed by a merchant's transfer signer (a terminal of
    /// kind `transfer`), whose key the platform cannot unwrap; the platform's by the merchant's key.
    transfer_signers: Option<TerminalDirectory>,
    nonces: NonceStore,
    audit_table: String,
}

impl ListingsApi {
    /// `side`'s routes over its own table (`LISTINGS_TABLE`), on the function's SDK config.
    pub fn from_env(side: Side, config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let keys = KeyService::new(aws_sdk_kms::Client::new(config), aws::env("PARTY_KEYS_KEY_ID")?);
        let transfer_signers = match side {
            Side::Platform => None,
            Side::Transfer => Some(TerminalDirectory::new(
                TerminalStore::new(dynamodb.clone(), aws::env("TERMINALS_TABLE")?),
                keys.clone(),
            )),
        };
        Ok(ListingsApi {
            side,
            transfer_signers,
            listings: ListingStore::new(dynamodb.clone(), aws::env("LISTINGS_TABLE")?),
            merchants: MerchantDirectory::new(MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?), keys),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            audit_table: aws::env("AUDIT_TABLE")?,
            dynamodb,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let id = ids::check("id", path_parameter(&request, "id")?)?;
        match route_key(&request).split_once(' ').map(|(method, _)| method) {
            Some("PUT") => self.publish(&request, id).await,
            Some("GET") => {
                Caller::from_request(&request)?;
                let listing = self.listings.get(id).await?.ok_or_else(|| unknown_listing(id))?;
                Ok(json_response(StatusCode::OK, &listing.view()))
            }
            _ => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("no listing route {:?}", route_key(&request)))),
        }
    }

    async fn publish(&self, request: &Request, id: &str) -> Result<Response<Body>, Problem> {
        let now = now_epoch_seconds();
        let merchant = match &self.transfer_signers {
            None => self.merchants.signer(request, &self.nonces, now).await?,
            Some(signers) => {
                let signer = signers.signer(request, &self.nonces, now, TerminalKind::Transfer).await?;
                self.merchants.get(&signer.merchant_id).await?
            }
        };
        // The signed request's own id (its key id and single-use nonce) names its audit entries.
        let signature = signed::signature(request)?;
        let request_id = format!("{}#{}", signature.key_id, signature.nonce);
        let resource = format!("listing/{}/{id}", self.side.name());
        let outcome = self.judge_and_write(request, id, &merchant, &resource, &request_id, now).await;
        // A signed publication that tries to pay another account or name another merchant's
        // listing, or comes from a suspended merchant, is a security event: kept with the listing's
        // history.
        if let Err(refused) = &outcome
            && [catalogue::PAYEE_NOT_OWN_ACCOUNT, catalogue::LISTING_ID_NOT_OWN, catalogue::MERCHANT_INACTIVE]
                .iter()
                .any(|code| code.code() == refused.code)
        {
            let detail = json!({"code": refused.code, "detail": refused.detail, "key_id": signature.key_id});
            let entry = AuditEntry::now(resource, "listing.refused", &merchant.id, detail);
            // The refusal is the answer whether or not its record could be written.
            let recorded = match entry.put_item(&self.audit_table, &request_id) {
                Ok(item) => transact(&self.dynamodb, vec![item]).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = recorded {
                tracing::error!(%error, code = refused.code, "a refused publication could not be audited");
            }
        }
        outcome
    }

    async fn judge_and_write(
        &self,
        request: &Request,
        id: &str,
        merchant: &Merchant,
        resource: &str,
        request_id: &str,
        now: i64,
    ) -> Result<Response<Body>, Problem> {
        if merchant.status != MerchantStatus::Active {
            return Err(inactive_merchant(&merchant.id));
        }
        let published = json_body::<ListingJson>(request)?.validate(&merchant.id, merchant.currency)?;
        for _ in 0..PUBLISH_ATTEMPTS {
            let current = self.listings.get(id).await?;
            let before = current.as_ref().map(|c| c.version);
            let (status, action, listing) = match publish(current.as_ref(), id, &merchant.id, published.clone(), now)? {
                Publication::Created(listing) => (StatusCode::CREATED, "listing.publish", listing),
                Publication::Updated(listing) => (StatusCode::OK, "listing.update", listing),
                Publication::Unchanged(listing) => return Ok(json_response(StatusCode::OK, &listing.view())),
            };
            let entry = AuditEntry::now(resource.to_owned(), action, &merchant.id, json!(listing.view()));
            let writes = vec![
                self.listings.put_item(&listing, before)?,
                entry.put_item(&self.audit_table, request_id)?,
                // A suspension that lands after the check above stops the publication here.
                self.merchants.active_check(&merchant.id)?,
            ];
            match transact(&self.dynamodb, writes).await {
                Ok(()) => return Ok(json_response(status, &listing.view())),
                // Changed meanwhile (or by this very publication, its answer lost): judge again.
                Err(e) if e.broke(LISTING_UNCHANGED) => continue,
                Err(e) if e.broke(MERCHANT_ACTIVE) => return Err(inactive_merchant(&merchant.id)),
                Err(e) => return Err(Problem::internal(e)),
            }
        }
        Err(Problem::new(
            catalogue::LISTING_CONFLICT,
            format!("listing {id:?} kept changing while this publication was judged; send it again"),
        ))
    }
}
