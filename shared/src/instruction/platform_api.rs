//! The transfer platform's instruction route (template.yaml `TransferPlatformFunction`):
//!
//! - `POST /platform/instructions`  a user (JWT, `Idempotency-Key`) asks to pay for a listing:
//!   `{"listing_id", "quantity"}`; 201 the instruction priced from the platform's copy of the
//!   listing, and its signature (`crate::instruction::signed`). Nothing moves here: the transfer
//!   side moves the money when the user's client sends the instruction there.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::listing::{ListingStore, unknown_listing};
use super::signed::{Display, Instruction, InstructionSigner, MAX_LIFETIME_SECONDS};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::http::{json_body, json_response};
use crate::idempotency::store::IdempotencyStore;
use crate::ids;
use crate::merchant::store::MerchantStore;
use crate::merchant::{MerchantStatus, inactive_merchant, unknown_merchant};
use crate::money::Money;
use crate::problem::catalogue;

/// The most of one listing an instruction may be for.
pub const MAX_QUANTITY: u32 = 1000;

/// `POST /platform/instructions`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct InstructionRequest {
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    listing_id: String,
    #[serde(deserialize_with = "crate::http::whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = MAX_QUANTITY)))]
    quantity: u32,
}

/// `POST /platform/instructions`'s answer: what the client shows its user and, once they confirm,
/// sends to the transfer side as it is.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct SignedInstruction {
    instruction: Instruction,
    /// The platform's signature of the instruction's canonical form (base64 of ASN.1 DER).
    signature: String,
}

/// The route's documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[RouteDoc {
        key: "POST /platform/instructions",
        summary: "a transfer instruction for a quantity of a listing, priced from the platform's copy and signed",
        request: Some(schema::<InstructionRequest>),
        path: &[],
        query: &[],
        answers: &[(201, Some(schema::<SignedInstruction>))],
        codes: &[
            catalogue::INVALID_ID,
            catalogue::INVALID_QUANTITY,
            catalogue::UNKNOWN_LISTING,
            // The price times the quantity is over the currency's limit.
            catalogue::AMOUNT_OVER_LIMIT,
            catalogue::UNKNOWN_MERCHANT,
            catalogue::MERCHANT_INACTIVE,
        ],
        headers: &[Header::IdempotencyKey],
        form: None,
        pages: &[],
    }]
};

pub struct InstructionsApi {
    listings: ListingStore,
    merchants: MerchantStore,
    idempotency: IdempotencyStore,
    signer: InstructionSigner,
}

impl InstructionsApi {
    /// On the function's SDK config (loaded once at cold start, shared with the listing routes).
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        Ok(InstructionsApi {
            listings: ListingStore::new(dynamodb.clone(), aws::env("LISTINGS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
            signer: InstructionSigner::new(aws_sdk_kms::Client::new(config), aws::env("INSTRUCTION_SIGNING_KEY_ID")?),
        })
    }

    /// `POST /platform/instructions`.
    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let input = json_body::<InstructionRequest>(&request)?;
        let listing_id = ids::check("listing_id", &input.listing_id)?.to_owned();
        if !(1..=MAX_QUANTITY).contains(&input.quantity) {
            return Err(Problem::new(
                catalogue::INVALID_QUANTITY,
                format!("quantity must be from 1 to {MAX_QUANTITY}"),
            ));
        }
        if caller.subject.chars().any(char::is_control) {
            return Err(Problem::new(catalogue::UNAUTHENTICATED, "the token's subject holds a control character"));
        }
        let payer = &caller.subject;
        self.idempotency
            .run_request(&request, payer, &[], |claim, now| async move {
                let listing = self.listings.get(&listing_id).await?.ok_or_else(|| unknown_listing(&listing_id))?;
                let price = listing.terms.price;
                let amount =
                    Money::new(price.amount() * rust_decimal::Decimal::from(input.quantity), price.currency())?;
                let provider = self
                    .merchants
                    .get(&listing.merchant_id)
                    .await?
                    .ok_or_else(|| unknown_merchant(&listing.merchant_id))?;
                if provider.status != MerchantStatus::Active {
                    return Err(inactive_merchant(&provider.id));
                }
                let display = Display::of(amount, &provider.name, &provider.id, input.quantity, &listing.terms.title);
                let instruction = Instruction {
                    id: format!("ti_{}", &claim.scope.derived_id("instruction")[..20]),
                    listing_id: listing.id.clone(),
                    listing_version: listing.version,
                    quantity: input.quantity,
                    amount,
                    payee: listing.payee().as_str().to_owned(),
                    payer: payer.clone(),
                    // Derived like the id: one key names one instruction, even one signed again
                    // after the key's record expired (the transfer side spends the nonce once).
                    nonce: claim.scope.derived_id("nonce"),
                    issued_at: now,
                    expires_at: now + MAX_LIFETIME_SECONDS,
                    display_hash: display.hash(),
                    display,
                    kid: self.signer.kid().to_owned(),
                };
                let signature = self.signer.sign(&instruction).await?;
                let response = json_response(StatusCode::CREATED, &SignedInstruction { instruction, signature });
                self.idempotency
                    .complete(&claim, &crate::idempotency::StoredResponse::from_response(&response), now)
                    .await?;
                Ok(response)
            })
            .await
    }
}
