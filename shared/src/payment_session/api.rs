//! The payment sessions function's routes (template.yaml `PaymentSessionsFunction`):
//!
//! - `POST /payment-sessions`       with an Idempotency-Key, `{"pay": {"kind": "purchase", ...},
//!   "client": {...}}`: decides how the client loads the payment UI; 201 the session. No money
//!   moves.
//! - `GET  /payment-sessions/{id}`  the caller's own session

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::PaymentSession;
use super::policy::{ClientFacts, GROUP, Policy};
use super::store::{PaymentSessionStore, SESSION_NEW};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::config::GroupName;
use crate::config::held::HeldGroup;
use crate::dynamo::transact;
use crate::flows::control::FlowControl;
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::store::{CLAIM_HELD, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight, key_reused};
use crate::merchant::require_active;
use crate::merchant::store::MerchantStore;
use crate::problem::catalogue;
use crate::purchase::PurchaseRequest;

pub struct PaymentSessionsApi {
    control: FlowControl,
    sessions: PaymentSessionStore,
    merchants: MerchantStore,
    policy: HeldGroup<Policy>,
    idempotency: IdempotencyStore,
    dynamodb: aws_sdk_dynamodb::Client,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    pay: PayRequest,
    client: ClientFacts,
}

/// What is to be paid. Mini-app charges and transfer instructions are to come.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum PayRequest {
    Purchase { merchant_id: String, product_id: String, quantity: u32, amount: crate::money::MoneyInput },
}

impl PaymentSessionsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(PaymentSessionsApi {
            control: FlowControl::from_env()?,
            sessions: PaymentSessionStore::new(dynamodb.clone(), aws::env("PAYMENT_SESSIONS_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            // Read for each session, so a new version decides the next one; parsed once per version.
            // One that no longer verifies is ours to fix, not the user's: the house policy decides.
            policy: HeldGroup::new(
                aws::env("CONFIG_TABLE")?,
                GroupName::parse(GROUP).expect("payment-sessions is a group name (policy::tests)"),
                0,
                |json, version| Policy::parse(json, version).map_err(|e| e.to_string()),
                Policy::house,
            ),
            idempotency: IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?),
            dynamodb,
        })
    }

    /// The error-flow table this function answers with (the chain comes from it too).
    pub fn control(&self) -> &FlowControl {
        &self.control
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "POST /payment-sessions" => self.create(&request, &caller).await,
            "GET /payment-sessions/{id}" => {
                let id = path_parameter(&request, "id")?;
                let session = self.sessions.get(id).await?.filter(|s| s.user == caller.subject);
                let session = session.ok_or_else(|| {
                    Problem::new(catalogue::UNKNOWN_PAYMENT_SESSION, format!("you have no payment session {id:?}"))
                })?;
                Ok(json_response(StatusCode::OK, &session.view()))
            }
            other => Err(Problem::new(
                catalogue::UNKNOWN_ROUTE,
                format!("the payment sessions function has no route {other:?}"),
            )),
        }
    }

    async fn create(&self, request: &Request, caller: &Caller) -> Result<Response<Body>, Problem> {
        let CreateRequest { pay, client } = json_body(request)?;
        let PayRequest::Purchase { merchant_id, product_id, quantity, amount } = pay;
        let purchase = PurchaseRequest { merchant_id, product_id, quantity, amount }.validate()?;
        self.idempotency
            .run_request(request, &caller.subject, &[], move |claim, now| async move {
                // Judged inside the key's run: a replay answers what was decided then.
                let merchant = require_active(self.merchants.get(&purchase.merchant_id).await?, &purchase.merchant_id)?;
                purchase.check_currency(&merchant)?;
                let policy = self.policy.get().await;
                let decision = policy.decide(&client, &claim.scope.caller)?;
                let table = self.control.table().await;
                let id = format!("ps_{}", claim.scope.derived_id("payment-session"));
                let session = PaymentSession::for_purchase(
                    id,
                    &claim.scope.caller,
                    &purchase,
                    &merchant.name,
                    &decision,
                    &table,
                    now,
                );
                let response = json_response(StatusCode::CREATED, &session.view());
                let writes = vec![
                    self.sessions.create_item(&session)?,
                    self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                ];
                match transact(&self.dynamodb, writes).await {
                    Ok(()) => Ok(response),
                    Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                    // Made by this key before its record expired: that session if this is the same
                    // payment, else the key is another request's.
                    Err(e) if e.broke(SESSION_NEW) => {
                        let made = self.sessions.get(&session.id).await?.filter(|s| s.user == session.user);
                        let made =
                            made.ok_or_else(|| Problem::internal("a payment session's id is taken by another"))?;
                        if made.pay != session.pay {
                            return Err(key_reused());
                        }
                        let response = json_response(StatusCode::CREATED, &made.view());
                        self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                        Ok(response)
                    }
                    Err(e) => Err(Problem::internal(e)),
                }
            })
            .await
    }
}
