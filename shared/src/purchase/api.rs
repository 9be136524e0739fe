//! The purchases function's HTTP routes (template.yaml `PurchasesFunction`):
//!
//! - `POST /purchases`                        a user buys: hold, forward to the merchant, settle
//! - `GET  /purchases/{id}`                   the user's own order
//! - `POST /merchant/orders/{id}/decision`    the merchant decides later (signed, no JWT)

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::relay::{MerchantClient, MerchantReply, OrderDetails};
use super::store::OrderStore;
use super::{Decision, ORDER_TTL_SECONDS, Order, OrderState, PurchaseRequest, Settlement, settle};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::crypto::Signature;
use crate::http::{body_bytes, header, json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::IdempotencyStore;
use crate::keys::KeyService;
use crate::ledger::LedgerError;
use crate::ledger::store::{LedgerStore, TransferError};
use crate::merchant::Merchant;
use crate::merchant::directory::{MerchantDirectory, MerchantKeys};
use crate::merchant::store::MerchantStore;
use crate::nonce::NonceStore;

pub struct PurchasesApi {
    orders: OrderStore,
    ledger: LedgerStore,
    merchants: MerchantDirectory,
    nonces: NonceStore,
    idempotency: IdempotencyStore,
    relay: MerchantClient,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: Decision,
}

fn unknown_order(id: &str) -> Problem {
    Problem::not_found("unknown_order", format!("no order {id:?}"))
}

/// A ledger refusal as the client should read it.
fn transfer_problem(e: TransferError) -> Problem {
    match e {
        TransferError::Ledger(LedgerError::InsufficientFunds { available, wanted, .. }) => Problem::new(
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_funds",
            format!("the wallet has {available} available; this purchase needs {wanted}"),
        )
        .with("available", available.to_string()),
        TransferError::Ledger(LedgerError::CurrencyMismatch { held, wanted, .. }) => Problem::new(
            StatusCode::CONFLICT,
            "wallet_currency_mismatch",
            format!("the wallet holds {held}; this purchase is in {wanted}"),
        ),
        TransferError::Contention => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ledger_busy",
            "the accounts were too busy to update; nothing moved; retry with the same Idempotency-Key",
        ),
        other => Problem::internal(other),
    }
}

impl PurchasesApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let keys = KeyService::new(aws_sdk_kms::Client::new(&config), aws::env("PARTY_KEYS_KEY_ID")?);
        Ok(PurchasesApi {
            orders: OrderStore::new(dynamodb.clone(), aws::env("ORDERS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            merchants: MerchantDirectory::new(MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?), keys),
            nonces: NonceStore::new(dynamodb.clone(), aws::env("NONCE_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
            relay: MerchantClient::new(),
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        match route_key(&request) {
            "POST /purchases" => self.create(&request, &Caller::from_request(&request)?).await,
            "GET /purchases/{id}" => {
                let caller = Caller::from_request(&request)?;
                let id = path_parameter(&request, "id")?;
                // Someone else's order is as unknown as a missing one.
                let order =
                    self.orders.get(id).await?.filter(|o| o.user == caller.subject).ok_or_else(|| unknown_order(id))?;
                Ok(json_response(StatusCode::OK, &order.view()))
            }
            "POST /merchant/orders/{id}/decision" => self.decision(&request).await,
            other => Err(Problem::not_found("unknown_route", format!("the purchases function has no route {other:?}"))),
        }
    }

    async fn create(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let purchase = json_body::<PurchaseRequest>(request)?.validate()?;
        let merchant = self.merchants.active(&purchase.merchant_id).await?;
        if purchase.amount.currency() != merchant.currency {
            return Err(Problem::bad_request(
                "currency_not_accepted",
                format!("merchant {} sells in {}, not {}", merchant.id, merchant.currency, purchase.amount.currency()),
            ));
        }
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let order = Order {
                    // Derived from the key: a retry, even after its record expired, is this order.
                    id: format!("o_{}", &claim.scope.derived_id("order")[..20]),
                    user: caller.subject.clone(),
                    merchant_id: merchant.id.clone(),
                    product_id: purchase.product_id,
                    quantity: purchase.quantity,
                    amount: purchase.amount,
                    state: OrderState::AwaitingMerchant,
                    created_at: now,
                    expires_at: now + ORDER_TTL_SECONDS,
                    refundable: rust_decimal::Decimal::ZERO,
                };
                let hold = order.hold().map_err(Problem::internal)?;
                match self.ledger.apply(&hold, vec![self.orders.create_item(&order)?], now).await {
                    // Already: an earlier attempt held the money and created the order.
                    Ok(_) | Err(TransferError::Rejected(0)) => {}
                    Err(e) => return Err(transfer_problem(e)),
                }
                let mut order = self.orders.get(&order.id).await?.unwrap_or(order);
                if order.state == OrderState::AwaitingMerchant {
                    let keys = self.merchants.keys(&merchant).await?;
                    order = self.forward(&merchant, &keys, order, now).await?;
                }
                let status = if order.state == OrderState::AwaitingMerchant {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::CREATED
                };
                let response = json_response(status, &order.view());
                self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                Ok(response)
            })
            .await
    }

    /// Sends the order to the product server and settles it if the merchant decided at once.
    async fn forward(
        &self,
        merchant: &Merchant,
        keys: &MerchantKeys,
        order: Order,
        now: i64,
    ) -> Result<Order, Problem> {
        let details = OrderDetails {
            order_id: order.id.clone(),
            user: order.user.clone(),
            product_id: order.product_id.clone(),
            quantity: order.quantity,
            amount: order.amount,
            expires_at: order.expires_at,
            callback_path: format!("/merchant/orders/{}/decision", order.id),
        };
        match self.relay.forward(merchant, keys, &details, now).await {
            MerchantReply::Decided(decision) => self.settle(order, Some(decision), now).await,
            MerchantReply::Pending => Ok(order),
            MerchantReply::NoAnswer(reason) => {
                tracing::warn!(order = %order.id, merchant = %merchant.id, %reason, "no usable answer from the product server; the order waits");
                Ok(order)
            }
        }
    }

    /// Moves the money and the order's state in one transaction; a settlement that already
    /// happened (a retry, a duplicate callback) answers with the order as it is.
    async fn settle(&self, order: Order, decision: Option<Decision>, now: i64) -> Result<Order, Problem> {
        let Settlement::Apply { to, transfer } = settle(&order, decision, now)? else { return Ok(order) };
        match self.ledger.apply(&transfer, vec![self.orders.settle_item(&order, to, now)?], now).await {
            Ok(_) | Err(TransferError::Rejected(0)) => {
                let current = self.orders.get(&order.id).await?.ok_or_else(|| unknown_order(&order.id))?;
                // Another settlement won the race: this one is refused unless it was the same.
                if current.state != to {
                    settle(&current, decision, now)?;
                }
                Ok(current)
            }
            Err(e) => Err(transfer_problem(e)),
        }
    }

    /// A merchant's signed decision on one of its orders.
    async fn decision(&self, request: &Request) -> Result<Response<Body>, Problem> {
        let now = now_epoch_seconds();
        let merchant = self.verify_merchant(request, now).await?;
        let id = path_parameter(request, "id")?;
        let DecisionBody { decision } = json_body(request)?;
        // Another merchant's order is as unknown as a missing one.
        let order =
            self.orders.get(id).await?.filter(|o| o.merchant_id == merchant.id).ok_or_else(|| unknown_order(id))?;
        let order = self.settle(order, Some(decision), now).await?;
        Ok(json_response(StatusCode::OK, &order.view()))
    }

    /// The merchant whose key signed this request: signature, time window and single-use nonce.
    async fn verify_merchant(&self, request: &Request, now: i64) -> Result<Merchant, Problem> {
        let signature = Signature::from_headers(|name| header(request, name).ok().flatten())?;
        let (merchant, keys) = self.merchants.by_key_id(&signature.key_id).await?;
        signature.check(&keys.signing, request.method().as_str(), request.uri().path(), body_bytes(request), now)?;
        self.nonces.use_once(&signature.key_id, &signature.nonce, now).await??;
        Ok(merchant)
    }
}
