//! The cash function's routes (template.yaml `CashFunction`), for signed-in users:
//!
//! - `POST /wallet/cash-ins`       with an Idempotency-Key, `{"instrument_id", "amount": {"amount",
//!   "currency"}}`: debits one of the caller's cards or bank accounts and credits their wallet.
//! - `POST /wallet/cash-outs`      the same shape: pays wallet money out to one of their bank accounts.
//! - `GET /wallet/cash-ins/{id}`, `GET /wallet/cash-outs/{id}`   one of the caller's movements.
//!
//! A movement the bank decided at once answers 201 (`completed` or `declined`, with the bank's
//! reason); one whose answer did not come answers 202 `pending`, and its check settles it (GET it
//! again). Limits: `super::movement_limit` per movement, `super::window_limit` and
//! `super::MAX_MOVEMENTS_PER_WINDOW` per rolling 24 hours in each direction and currency.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;

use super::service::{Asker, CashService, Settled};
use super::{CashState, Direction, Movement};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::http::{json_body, json_response, path_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::key_reused;
use crate::idempotency::store::IdempotencyStore;
use crate::ids;
use crate::instrument::{Details, Expiry, year_month};
use crate::money::{Money, MoneyInput};
use crate::problem::catalogue;

pub struct CashApi {
    service: CashService,
    idempotency: IdempotencyStore,
}

/// `POST /wallet/cash-ins`' and `POST /wallet/cash-outs`' body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct CashRequest {
    /// One of the caller's instruments: a card or a bank account to cash in from, a bank account
    /// to cash out to.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    instrument_id: String,
    amount: MoneyInput,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use super::MovementView;
    use crate::openapi::{Header, RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /wallet/cash-ins",
            summary: "move money from one of the caller's cards or bank accounts into their wallet; 201 the bank decided (completed or declined), 202 pending its answer",
            request: Some(schema::<CashRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<MovementView>)), (202, Some(schema::<MovementView>))],
            codes: &[
                catalogue::INVALID_ID,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::UNKNOWN_INSTRUMENT,
                catalogue::CARD_EXPIRED,
                catalogue::CASH_LIMIT_EXCEEDED,
                catalogue::WALLET_CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /wallet/cash-ins/{id}",
            summary: "one of the caller's cash-ins",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<MovementView>))],
            codes: &[catalogue::UNKNOWN_CASH_MOVEMENT],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /wallet/cash-outs",
            summary: "pay wallet money out to one of the caller's bank accounts; 201 the bank decided (completed, or declined and the money back in the wallet), 202 pending its answer",
            request: Some(schema::<CashRequest>),
            path: &[],
            query: &[],
            answers: &[(201, Some(schema::<MovementView>)), (202, Some(schema::<MovementView>))],
            codes: &[
                catalogue::INVALID_ID,
                catalogue::AMOUNT_NOT_DECIMAL_STRING,
                catalogue::AMOUNT_NOT_POSITIVE,
                catalogue::AMOUNT_TOO_MANY_DECIMALS,
                catalogue::AMOUNT_OVER_LIMIT,
                catalogue::UNKNOWN_CURRENCY,
                catalogue::UNKNOWN_INSTRUMENT,
                catalogue::INSTRUMENT_CANNOT_RECEIVE,
                catalogue::CASH_LIMIT_EXCEEDED,
                catalogue::INSUFFICIENT_FUNDS,
                catalogue::WALLET_CURRENCY_MISMATCH,
                catalogue::LEDGER_BUSY,
            ],
            headers: &[Header::IdempotencyKey],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /wallet/cash-outs/{id}",
            summary: "one of the caller's cash-outs",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<MovementView>))],
            codes: &[catalogue::UNKNOWN_CASH_MOVEMENT],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

fn unknown_movement(id: &str) -> Problem {
    Problem::new(catalogue::UNKNOWN_CASH_MOVEMENT, format!("no cash movement {id:?} of yours"))
}

impl CashApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        Ok(CashApi {
            service: CashService::from_env(&config)?,
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let user = caller.subject.as_str();
        match route_key(&request) {
            "POST /wallet/cash-ins" => self.create(&request, user, Direction::In).await,
            "POST /wallet/cash-outs" => self.create(&request, user, Direction::Out).await,
            "GET /wallet/cash-ins/{id}" => self.show(&request, user, Direction::In).await,
            "GET /wallet/cash-outs/{id}" => self.show(&request, user, Direction::Out).await,
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the cash function has no route {other:?}"))),
        }
    }

    async fn show(&self, request: &Request, user: &str, direction: Direction) -> Result<Response<Body>, Problem> {
        let id = ids::check("id", path_parameter(request, "id")?)?;
        let movement = match Direction::of_id(id) {
            Some(of) if of == direction => self.service.movements.get(user, id).await?,
            _ => None,
        };
        let movement = movement.ok_or_else(|| unknown_movement(id))?;
        Ok(json_response(StatusCode::OK, &movement.view()))
    }

    /// Starts a new movement with `user`'s instrument `instrument_id`, if it may be used so.
    async fn start(
        &self,
        user: &str,
        id: String,
        direction: Direction,
        instrument_id: &str,
        amount: Money,
        now: i64,
    ) -> Result<Movement, Problem> {
        let instrument =
            self.service.instruments.get(user, instrument_id).await?.ok_or_else(|| {
                Problem::new(catalogue::UNKNOWN_INSTRUMENT, "instrument_id names no instrument of yours")
            })?;
        match (direction, &instrument.details) {
            (Direction::Out, Details::Card { .. }) => {
                return Err(Problem::new(
                    catalogue::INSTRUMENT_CANNOT_RECEIVE,
                    "money is paid out to a bank account only; this instrument is a card",
                ));
            }
            (Direction::In, Details::Card { expiry, .. }) => {
                Expiry::check(expiry.month, expiry.year, year_month(now))?;
            }
            _ => {}
        }
        let wanted = Movement::pending(id, user, direction, &instrument, amount, now);
        self.service.start(&wanted, &self.service.cash_allowance(&wanted), now).await
    }

    async fn create(&self, request: &Request, user: &str, direction: Direction) -> Result<Response<Body>, Problem> {
        let body = json_body::<CashRequest>(request)?;
        let instrument_id = ids::check("instrument_id", &body.instrument_id)?;
        let amount = body.amount.validate()?;
        self.idempotency
            .run_request(request, user, &[], |claim, now| async move {
                // Derived from the key: a retry, even after its record expired, is this movement
                // (found before its instrument is looked at: it may be gone since).
                let id = format!("{}{}", direction.id_prefix(), &claim.scope.derived_id("cash")[..20]);
                let recorded = match self.service.movements.get(user, &id).await? {
                    Some(recorded) => recorded,
                    None => self.start(user, id, direction, instrument_id, amount, now).await?,
                };
                if recorded.instrument_id != instrument_id || recorded.amount != amount {
                    // The key named another movement once (its record has expired since).
                    return Err(key_reused());
                }
                let movement = if recorded.state == CashState::Pending {
                    match self.service.settle(&recorded, Asker::Request, now).await {
                        Ok(Settled::Decided(movement)) => *movement,
                        Ok(Settled::Unknown(_)) => recorded,
                        Err(e) => {
                            tracing::error!(movement = %recorded.id, error = %e, "the movement stays owed to its check");
                            recorded
                        }
                    }
                } else {
                    recorded
                };
                let status = if movement.state == CashState::Pending { StatusCode::ACCEPTED } else { StatusCode::CREATED };
                let response = json_response(status, &movement.view());
                self.idempotency.complete(&claim, &StoredResponse::from_response(&response), now).await?;
                Ok(response)
            })
            .await
    }
}
