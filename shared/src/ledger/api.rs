//! The wallet function's HTTP routes (template.yaml `WalletFunction`), for the wallet's owner:
//!
//! - `GET /wallet`                       balance and available funds
//! - `GET /wallet/postings?before=N`     the wallet's history, newest first, 50 a page
//!
//! and where a ledger refusal meets HTTP: `TransferError` as the problem a client reads, for every
//! capability that moves money.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Serialize;

use super::AccountId;
use super::LedgerError;
use super::store::{LedgerStore, TransferError};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::http::{json_response, query_parameter, route_key};
use crate::problem::catalogue;

const PAGE: i32 = 50;

/// `GET /wallet`'s answer: the wallet before its first credit has no currency, and 0.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct WalletView {
    account: String,
    currency: Option<&'static str>,
    balance: String,
    /// The balance less what is held for purchases and transfers not yet settled.
    available: String,
    /// How many postings it has had.
    postings: u64,
}

/// A page of the wallet's postings, newest first; `next_before` asks for the next page.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PostingsPage {
    account: String,
    postings: Vec<PostingView>,
    next_before: Option<u64>,
}

/// A posting, its amounts in the wallet currency's decimals.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PostingView {
    sequence: u64,
    /// Signed: negative when money left the wallet.
    amount: String,
    balance_after: String,
    transfer_id: String,
    kind: String,
    at: i64,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Param, RouteDoc, schema, sequence};
    &[
        RouteDoc {
            key: "GET /wallet",
            summary: "the wallet's balance and available funds",
            request: None,
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<WalletView>))],
            codes: &[],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "GET /wallet/postings",
            summary: "the wallet's postings, newest first, 50 a page",
            request: None,
            path: &[],
            query: &[Param {
                name: "before",
                description: "the page before this posting sequence (the last page's next_before)",
                schema: sequence,
            }],
            answers: &[(200, Some(schema::<PostingsPage>))],
            codes: &[catalogue::INVALID_CURSOR],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

/// A ledger refusal as a client should read it; a capability maps its own rules' refusals
/// (`TransferError::Rejected`) before this.
impl From<TransferError> for Problem {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Ledger(LedgerError::InsufficientFunds { available, wanted, .. }) => Problem::new(
                catalogue::INSUFFICIENT_FUNDS,
                format!("the wallet has {available} available; this needs {wanted}"),
            )
            .with("available", available.to_string()),
            TransferError::Ledger(LedgerError::CurrencyMismatch { held, wanted, .. }) => Problem::new(
                catalogue::WALLET_CURRENCY_MISMATCH,
                format!("the wallet holds {held}; this is in {wanted}"),
            ),
            TransferError::Contention => Problem::new(
                catalogue::LEDGER_BUSY,
                "the accounts were too busy to update; nothing moved; retry with the same Idempotency-Key",
            ),
            other => Problem::internal(other),
        }
    }
}

pub struct WalletApi {
    ledger: LedgerStore,
}

impl WalletApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(WalletApi { ledger: LedgerStore::new(dynamodb, aws::env("LEDGER_TABLE")?) })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let wallet = AccountId::wallet(&caller.subject);
        match route_key(&request) {
            "GET /wallet" => {
                let account = self.ledger.account(&wallet).await?;
                let body = match account {
                    Some(a) => WalletView {
                        account: wallet.as_str().to_owned(),
                        currency: Some(a.currency.code()),
                        balance: a.balance.to_string(),
                        available: a.available().unwrap_or(a.balance).to_string(),
                        postings: a.sequence,
                    },
                    // A wallet exists from its first credit; before that it is empty.
                    None => WalletView {
                        account: wallet.as_str().to_owned(),
                        currency: None,
                        balance: "0".into(),
                        available: "0".into(),
                        postings: 0,
                    },
                };
                Ok(json_response(StatusCode::OK, &body))
            }
            "GET /wallet/postings" => {
                let before = query_parameter(&request, "before")
                    .map(|b| {
                        b.parse::<u64>().map_err(|_| {
                            Problem::new(catalogue::INVALID_CURSOR, "before must be a posting sequence number")
                        })
                    })
                    .transpose()?;
                let postings = self.ledger.postings(&wallet, before, PAGE).await?;
                // Amounts in the wallet's currency's decimals ("5.00", as DynamoDB keeps "5").
                let currency = self.ledger.account(&wallet).await?.map(|a| a.currency);
                let show = |d: rust_decimal::Decimal| currency.map_or(d, |c| c.rescale(d)).to_string();
                let next_before =
                    (postings.len() == PAGE as usize).then(|| postings.last().map(|p| p.sequence)).flatten();
                let postings = postings
                    .iter()
                    .map(|p| PostingView {
                        sequence: p.sequence,
                        amount: show(p.amount),
                        balance_after: show(p.balance_after),
                        transfer_id: p.transfer_id.clone(),
                        kind: p.kind.clone(),
                        at: p.at,
                    })
                    .collect();
                let page = PostingsPage { account: wallet.as_str().to_owned(), postings, next_before };
                Ok(json_response(StatusCode::OK, &page))
            }
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the wallet function has no route {other:?}"))),
        }
    }
}
