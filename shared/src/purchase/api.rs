//! The purchases function's HTTP routes (template.yaml `PurchasesFunction`):
//!
//! - `POST /purchases`                        a user buys: hold, forward to the merchant, settle
//! - `GET  /purchases/{id}`                   the user's own order
//! - `POST /merchant/orders/{id}/decision`    the merchant decides later (signed, no JWT)
//! - `POST /merchant/orders/{id}/refunds`     the merchant refunds a paid order, in part or in full

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use super::checkout::Checkout;
use super::service::{Refund, unknown_order};
use super::{Decision, Order, OrderState, OrderView, PurchaseRequest};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::IdempotencyStore;
use crate::idempotency::{Decision as IdempotencyDecision, StoredResponse};
use crate::merchant::{MerchantStatus, suspended_refund};
use crate::money::{Money, MoneyInput};
use crate::nonce::NonceStore;
use crate::problem::catalogue;

/// The routes' documentation (`crate::openapi`): the buyer's, and the merchant's signed ones.
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /purchases",
            summary: "buy from a merchant: the amount is held, the order sent to its product server; 201 decided, 202 awaiting it",
            request: Some(schema::<PurchaseRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<OrderView>)), (202, Some(schema::<OrderView>))],
            codes: &[
                catalogue::INVALID_ID,
                catalogue::INVALID_PRODUCT_ID,
                catalogue::INVALID_QUANTITY,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::CURRENCY_NOT_ACCEPTED,
                catalogue::UNKNOWN_MERCHANT,
                catalogue::MERCHANT_INACTIVE,
                catalogue::INSUFFICIENT_FUNDS,
                catalogue::WALLET_CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /purchases/{id}",
            summary: "one of the caller's orders",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<OrderView>))],
            codes: &[catalogue::UNKNOWN_ORDER],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /merchant/orders/{id}/decision",
            summary: "the merchant decides on one of its orders later: 200 settled by it, 202 still awaiting it with the decision recorded (it is carried out soon)",
            request: Some(schema::<OrderDecisionRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<OrderView>)), (202, Some(schema::<OrderView>))],
            codes: &[
                catalogue::ORDER_ID_MISMATCH,
                catalogue::MERCHANT_INACTIVE,
                catalogue::UNKNOWN_ORDER,
                catalogue::ORDER_ALREADY_DECIDED,
                catalogue::ORDER_ALREADY_SETTLED,
                catalogue::ORDER_EXPIRED,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::Signed],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /merchant/orders/{id}/refunds",
            summary: "the merchant refunds one of its paid orders, in part or in full, to the buyer's wallet",
            request: Some(schema::<OrderRefundRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<OrderRefundView>))],
            codes: &[
                catalogue::ORDER_ID_MISMATCH,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::INVALID_REASON,
                catalogue::MERCHANT_INACTIVE,
                catalogue::UNKNOWN_ORDER,
                catalogue::ORDER_NOT_PAID,
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

pub struct PurchasesApi {
    checkout: Checkout,
    /// How long a merchant has to decide before the hold is released (template `OrderTtlSeconds`).
    order_ttl_seconds: i64,
    nonces: NonceStore,
    idempotency: IdempotencyStore,
}

/// A merchant's later decision on an order: its product server's answer (`MerchantAnswer`), less
/// `pending`.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct OrderDecisionRequest {
    decision: Decision,
    /// When sent, the order of the path.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::optional_id"))]
    order_id: Option<String>,
}

/// A merchant's refund of a paid order.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct OrderRefundRequest {
    /// In the order's currency, at most what is still refundable.
    amount: MoneyInput,
    /// Why, in at most 200 characters; echoed in the answer.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(length(max = 200)))]
    reason: Option<String>,
    /// When sent, the order of the path.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::optional_id"))]
    order_id: Option<String>,
}

/// A refund of an order, and the order as it leaves it (a retry: as it is).
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct OrderRefundView<'a> {
    /// Derived from the Idempotency-Key: a retry names the same refund.
    refund_id: &'a str,
    amount: Money,
    /// As the merchant sent it.
    reason: Option<&'a str>,
    order: OrderView,
}

fn check_order_id(path: &str, body: Option<&str>) -> Result<(), Problem> {
    match body.map(|named| crate::ids::check("order_id", named)).transpose()? {
        Some(named) if named != path => Err(Problem::new(
            catalogue::ORDER_ID_MISMATCH,
            format!("the body names order {named:?} but the path names {path:?}"),
        )),
        _ => Ok(()),
    }
}

impl PurchasesApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(PurchasesApi {
            checkout: Checkout::from_env(&config, &dynamodb)?,
            order_ttl_seconds: aws::seconds("ORDER_TTL_SECONDS")?,
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        match route_key(&request) {
            "POST /purchases" => self.create(&request, &Caller::from_request(&request)?).await,
            "GET /purchases/{id}" => {
                let caller = Caller::from_request(&request)?;
                let id = path_parameter(&request, "id")?;
                // Someone else's order is as unknown as a missing one.
                let order = self
                    .checkout
                    .service
                    .orders
                    .get(id)
                    .await?
                    .filter(|o| o.user == caller.subject)
                    .ok_or_else(|| unknown_order(id))?;
                Ok(json_response(StatusCode::OK, &order.view()))
            }
            "POST /merchant/orders/{id}/decision" => self.decision(&request).await,
            "POST /merchant/orders/{id}/refunds" => self.refund(&request).await,
            other => {
                Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the purchases function has no route {other:?}")))
            }
        }
    }

    async fn create(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let purchase = json_body::<PurchaseRequest>(request)?.validate()?;
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                // Judged inside the key's run: a retry after the merchant changed is answered as before.
                let merchant = self.checkout.merchants.active(&purchase.merchant_id).await?;
                purchase.check_currency(&merchant)?;
                let wanted = Order {
                    // Derived from the key: a retry, even after its record expired, is this order.
                    id: format!("o_{}", &claim.scope.derived_id("order")[..20]),
                    user: caller.subject.clone(),
                    merchant_id: merchant.id.clone(),
                    product_id: purchase.product_id,
                    quantity: purchase.quantity,
                    amount: purchase.amount,
                    state: OrderState::AwaitingMerchant,
                    created_at: now,
                    expires_at: now + self.order_ttl_seconds,
                    refundable: rust_decimal::Decimal::ZERO,
                    decision: None,
                };
                let (order, _) = self.checkout.service.create(&wanted, Vec::new(), now).await?;
                let same_purchase = order.merchant_id == wanted.merchant_id
                    && order.product_id == wanted.product_id
                    && order.quantity == wanted.quantity
                    && order.amount == wanted.amount;
                if !same_purchase {
                    // The key named another purchase once (its record has expired since).
                    return Err(IdempotencyDecision::Mismatch
                        .problem()
                        .unwrap_or_else(|| Problem::internal("mismatch")));
                }
                let respond = |order: &Order| {
                    let status = if order.state == OrderState::AwaitingMerchant {
                        StatusCode::ACCEPTED
                    } else {
                        StatusCode::CREATED
                    };
                    json_response(status, &order.view())
                };
                // A settlement records the answer with the money, in the same transaction.
                let record = |order: &Order| -> Result<_, Problem> {
                    Ok(self.idempotency.complete_item(&claim, &StoredResponse::from_response(&respond(order)), now)?)
                };
                let (order, recorded) = self.checkout.forward(&merchant, order, now, Some(&record)).await;
                let response = respond(&order);
                if !recorded
                    && let Err(e) =
                        self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await
                {
                    // The order is as answered whatever happens to the record: a retry finds it by
                    // the id its key derives and answers it as it stands.
                    tracing::warn!(order = %order.id, error = %e, "the answer could not be recorded");
                }
                Ok(response)
            })
            .await
    }

    /// A merchant's signed decision on one of its orders: 200 with the order settled by it, or 202
    /// with the order still `awaiting_merchant` and the decision recorded on it when its
    /// transaction failed (a retry of the call, or the order's expiry check, carries it out).
    async fn decision(&self, request: &Request) -> Result<Response<Body>, Problem> {
        let now = now_epoch_seconds();
        let merchant = self.checkout.merchants.signer(request, &self.nonces, now).await?;
        let id = path_parameter(request, "id")?;
        let OrderDecisionRequest { decision, order_id } = json_body(request)?;
        check_order_id(id, order_id.as_deref())?;
        // A suspended merchant may still decline (the user gets the money back), never capture.
        if decision == Decision::Confirm && merchant.status != MerchantStatus::Active {
            return Err(crate::merchant::inactive_merchant(&merchant.id));
        }
        // Another merchant's order is as unknown as a missing one.
        let order = self
            .checkout
            .service
            .orders
            .get(id)
            .await?
            .filter(|o| o.merchant_id == merchant.id)
            .ok_or_else(|| unknown_order(id))?;
        let order = self.checkout.service.settle(order, Some(decision), now).await?;
        let status = if order.state == OrderState::AwaitingMerchant { StatusCode::ACCEPTED } else { StatusCode::OK };
        Ok(json_response(status, &order.view()))
    }

    /// A merchant's signed refund of one of its paid orders; its Idempotency-Key names the refund.
    async fn refund(&self, request: &Request) -> Result<Response<Body>, Problem> {
        let merchant = self.checkout.merchants.signer(request, &self.nonces, now_epoch_seconds()).await?;
        let id = path_parameter(request, "id")?;
        let OrderRefundRequest { amount, reason, order_id } = json_body(request)?;
        check_order_id(id, order_id.as_deref())?;
        let amount = amount.validate()?;
        if reason.as_ref().is_some_and(|r| r.chars().count() > 200) {
            return Err(Problem::new(catalogue::INVALID_REASON, "reason must be at most 200 characters"));
        }
        let caller = format!("merchant:{}", merchant.id);
        self.idempotency
            .run_request(request, &caller, &[], |claim, now| async move {
                // Judged inside the key's run: a retry of a refund made before the suspension is
                // answered as the first time.
                if merchant.status != MerchantStatus::Active {
                    return Err(suspended_refund(&merchant.id));
                }
                let order = self
                    .checkout
                    .service
                    .orders
                    .get(id)
                    .await?
                    .filter(|o| o.merchant_id == merchant.id)
                    .ok_or_else(|| unknown_order(id))?;
                let refund_id = claim.scope.derived_id("refund")[..16].to_owned();
                let respond = |order: &Order| {
                    let view = OrderRefundView {
                        refund_id: &refund_id,
                        amount,
                        reason: reason.as_deref(),
                        order: order.view(),
                    };
                    json_response(StatusCode::CREATED, &view)
                };
                let finish = |after: &Order| -> Result<_, Problem> {
                    Ok(self.idempotency.complete_item(&claim, &StoredResponse::from_response(&respond(after)), now)?)
                };
                let active = self.checkout.merchants.active_check(&merchant.id)?;
                match self.checkout.service.refund(&order, amount, &refund_id, now, active, finish).await? {
                    // Recorded with the money, in the same transaction.
                    Refund::Done(after) => Ok(respond(&after)),
                    Refund::Already(current) => {
                        let response = respond(&current);
                        self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                        Ok(response)
                    }
                }
            })
            .await
    }
}
