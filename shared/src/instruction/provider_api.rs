//! The provider's routes on its operations (template.yaml `TransferFunction`), signed by one of
//! its transfer signers (a merchant terminal of kind `transfer`, as its listings are):
//!
//! - `POST /transfer/operations/{id}/post`     `{"amount"}`: takes at most the held amount of a
//!   two-phase operation; the rest goes back to the payer
//! - `POST /transfer/operations/{id}/void`     gives the whole hold back
//! - `POST /transfer/operations/{id}/refunds`  `{"amount"}` with an Idempotency-Key: pays back
//!   part or all of what reached the provider, never more
//!
//! A hold is settled once: a post, a void and the hold's timeout share one settlement, and a
//! provider's retry of its own post or void (a new signed request) is answered as the first.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::operation::{Operation, OperationView, Settlement};
use super::service::{Moved, OperationService, settled_as};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::http::{json_body, json_response, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::IdempotencyStore;
use crate::keys::KeyService;
use crate::merchant::store::MerchantStore;
use crate::merchant::terminal::{TerminalDirectory, TerminalKind, TerminalStore};
use crate::merchant::{MerchantStatus, inactive_merchant, suspended_refund};
use crate::money::{Money, MoneyInput};
use crate::nonce::NonceStore;
use crate::outbox::Outbox;
use crate::problem::catalogue;

/// The body of a post (at most the held amount) or a refund (at most what is still refundable).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct OperationAmount {
    /// In the operation's currency.
    amount: MoneyInput,
}

/// A refund's answer: the refund, and the operation as it leaves it.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct OperationRefund {
    /// Derived from the refund's Idempotency-Key: a retry is this refund.
    refund_id: String,
    amount: Money,
    operation: OperationView,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /transfer/operations/{id}/post",
            summary: "the provider (signed) takes at most the held amount of a two-phase operation; the rest goes back to the payer (a retry is answered as the first)",
            request: Some(schema::<OperationAmount>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<OperationView>))],
            codes: &[
                catalogue::TERMINAL_INACTIVE,
                catalogue::UNKNOWN_OPERATION,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::MERCHANT_INACTIVE,
                catalogue::OPERATION_NOT_HELD,
                catalogue::POST_EXCEEDS_HOLD,
                catalogue::HOLD_EXPIRED,
                catalogue::CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /transfer/operations/{id}/void",
            summary: "the provider (signed) gives a two-phase operation's whole hold back to the payer (a retry is answered as the first)",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<OperationView>))],
            codes: &[
                catalogue::TERMINAL_INACTIVE,
                catalogue::UNKNOWN_OPERATION,
                catalogue::OPERATION_NOT_HELD,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /transfer/operations/{id}/refunds",
            summary: "the provider (signed) pays back part or all of what reached it, never more",
            request: Some(schema::<OperationAmount>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<OperationRefund>))],
            codes: &[
                catalogue::TERMINAL_INACTIVE,
                catalogue::UNKNOWN_OPERATION,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                // 403: a suspended provider refunds nothing.
                catalogue::MERCHANT_INACTIVE,
                catalogue::OPERATION_NOT_PAID,
                catalogue::CURRENCY_MISMATCH,
                catalogue::REFUND_EXCEEDS_PAID,
                catalogue::MERCHANT_INSUFFICIENT_FUNDS,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::Signed, Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
    ]
};

pub struct ProviderApi {
    service: OperationService,
    signers: TerminalDirectory,
    merchants: MerchantStore,
    nonces: NonceStore,
    idempotency: IdempotencyStore,
}

impl ProviderApi {
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let keys = KeyService::new(aws_sdk_kms::Client::new(config), aws::env("PARTY_KEYS_KEY_ID")?);
        Ok(ProviderApi {
            service: OperationService::from_env(
                &dynamodb,
                Outbox::new(dynamodb.clone(), aws_sdk_sqs::Client::new(config), aws::env("OUTBOX_TABLE")?),
            )?,
            signers: TerminalDirectory::new(TerminalStore::new(dynamodb.clone(), aws::env("TERMINALS_TABLE")?), keys),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let signer = self.signers.signer(&request, &self.nonces, now_epoch_seconds(), TerminalKind::Transfer).await?;
        let operation = self.service.named(&request, |o| o.merchant_id == signer.merchant_id).await?;
        match route_key(&request) {
            "POST /transfer/operations/{id}/post" => {
                let OperationAmount { amount } = json_body(&request)?;
                self.settle(&operation, Settlement::Post(amount.validate()?)).await
            }
            "POST /transfer/operations/{id}/void" => self.settle(&operation, Settlement::Void).await,
            "POST /transfer/operations/{id}/refunds" => self.refund(&request, &operation).await,
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the transfer function has no provider route {other:?}"),
            )),
        }
    }

    /// A post or void gives money back to the payer, so a suspended provider may still make one:
    /// only the posted part reaches it, and only while it is active.
    async fn settle(&self, operation: &Operation, settlement: Settlement) -> Result<Response<Body>, Problem> {
        let mut with = vec![];
        if let Settlement::Post(_) = settlement {
            let provider = self.merchants.get(&operation.merchant_id).await?;
            if provider.is_none_or(|p| p.status != MerchantStatus::Active) {
                return Err(inactive_merchant(&operation.merchant_id));
            }
            with.push(self.merchants.active_check(&operation.merchant_id)?);
        }
        match self.service.settle(operation, settlement, with, now_epoch_seconds()).await {
            Ok(Moved::Now(after)) => Ok(json_response(StatusCode::OK, &OperationView::from(&after))),
            Ok(Moved::Before(current)) if settled_as(&current, settlement) => {
                Ok(json_response(StatusCode::OK, &OperationView::from(&current)))
            }
            Ok(Moved::Before(current)) => Err(Problem::new(
                catalogue::OPERATION_NOT_HELD,
                format!(
                    "operation {} is {}: its hold was settled already; nothing moved",
                    current.id,
                    current.state.as_str()
                ),
            )),
            Err(problem) => Err(problem),
        }
    }

    async fn refund(&self, request: &Request, operation: &Operation) -> Result<Response<Body>, Problem> {
        let OperationAmount { amount } = json_body(request)?;
        let amount = amount.validate()?;
        let caller = format!("merchant:{}", operation.merchant_id);
        self.idempotency
            .run_request(request, &caller, &[], |claim, now| async move {
                // Judged inside the key's run: a retry of a refund made before a suspension is
                // answered as the first time.
                let provider = self.merchants.get(&operation.merchant_id).await?;
                if provider.is_none_or(|p| p.status != MerchantStatus::Active) {
                    return Err(suspended_refund(&operation.merchant_id));
                }
                let refund_id = claim.scope.derived_id("refund")[..16].to_owned();
                let respond = |after: &Operation| {
                    let refund =
                        OperationRefund { refund_id: refund_id.clone(), amount, operation: OperationView::from(after) };
                    json_response(StatusCode::CREATED, &refund)
                };
                let finish = |after: &Operation| -> Result<_, Problem> {
                    Ok(self.idempotency.complete_item(&claim, &StoredResponse::from_response(&respond(after)), now)?)
                };
                let with = vec![self.merchants.active_check(&operation.merchant_id)?];
                match self.service.refund(&operation.id, amount, &refund_id, with, now, finish).await? {
                    // Recorded with the money, in the same transaction.
                    Moved::Now(after) => Ok(respond(&after)),
                    Moved::Before(current) => {
                        let response = respond(&current);
                        self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                        Ok(response)
                    }
                }
            })
            .await
    }
}
