//! The top-up pages (template.yaml `TopUpFunction`), HTML for a phone's browser, usable without
//! JavaScript. The link's token is the page's credential (no user token: the payer may open it
//! from a message on another device) and the form's idempotency key.
//!
//! - `GET  /topup/{token}`   the amount due, the merchant, a form to add funds
//! - `POST /topup/{token}`   asks the bank for the money (bank -> offline reserve), re-queues the
//!   waiting payment's settlement, shows the result. A CSRF token (a cookie that must equal the
//!   form's hidden field, SameSite=Strict) keeps other sites from submitting the form.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use minijinja::{Environment, context};
use serde::Deserialize;

use super::payments_api::SettlementJob;
use super::topup::{TopUp, TopUpStore, new_token};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::bank::{Bank, BankAnswer};
use crate::clock::now_epoch_seconds;
use crate::http::{body_bytes, header as header_of, path_parameter, route_key};
use crate::ledger::store::{Applied, LedgerStore, TransferError};
use crate::ledger::{AccountId, Transfer};
use crate::merchant::store::MerchantStore;
use crate::money::Money;
use crate::outbox::{Outbox, OutboxMessage};

const CSRF_COOKIE: &str = "topup_csrf";

pub struct TopUpApi {
    pages: Environment<'static>,
    topups: TopUpStore,
    ledger: LedgerStore,
    merchants: MerchantStore,
    outbox: Outbox,
    bank: Bank,
    settlement_queue: String,
}

#[derive(Deserialize)]
struct TopUpForm {
    #[serde(default)]
    amount: String,
    #[serde(default)]
    csrf: String,
}

/// The CSRF cookie's value, if the request carries it.
fn csrf_cookie(request: &Request) -> Option<String> {
    let cookies = header_of(request, "cookie").ok().flatten()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == CSRF_COOKIE)
        .map(|(_, v)| v.to_owned())
}

impl TopUpApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let config = aws::sdk_config().await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let mut pages = Environment::new();
        for (name, source) in [
            ("layout.html", include_str!("templates/layout.html")),
            ("topup_form.html", include_str!("templates/topup_form.html")),
            ("topup_result.html", include_str!("templates/topup_result.html")),
        ] {
            pages.add_template(name, source).map_err(|e| MissingEnv(format!("template {name}: {e}")))?;
        }
        Ok(TopUpApi {
            pages,
            topups: TopUpStore::new(dynamodb.clone(), aws::env("TOPUPS_TABLE")?),
            ledger: LedgerStore::new(dynamodb.clone(), aws::env("LEDGER_TABLE")?),
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            outbox: Outbox::new(dynamodb, aws_sdk_sqs::Client::new(&config), aws::env("OUTBOX_TABLE")?),
            bank: Bank::from_env(&config)?,
            settlement_queue: aws::env("SETTLEMENT_QUEUE_URL")?,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let token = path_parameter(&request, "token")?.to_owned();
        let now = now_epoch_seconds();
        let Some(topup) = self.topups.get(&token).await? else {
            return self.result(
                StatusCode::NOT_FOUND,
                "Unknown link",
                "This top-up link is not one of ours. Open the link from your message again.",
            );
        };
        if topup.paid {
            return self.result(
                StatusCode::GONE,
                "Already topped up",
                "This link was used already: the funds were added and the payment is being completed.",
            );
        }
        if now >= topup.expires_at {
            return self.result(
                StatusCode::GONE,
                "Link expired",
                "This top-up link has expired. The merchant has been told the payment did not complete.",
            );
        }
        match route_key(&request) {
            "GET /topup/{token}" => self.form(&request, &topup, None, None, StatusCode::OK).await,
            "POST /topup/{token}" => self.submit(&request, &topup, now).await,
            other => Err(Problem::not_found("unknown_route", format!("the top-up function has no route {other:?}"))),
        }
    }

    fn html(&self, status: StatusCode, template: &str, values: minijinja::Value) -> Result<Response<Body>, Problem> {
        let page = self.pages.get_template(template).and_then(|t| t.render(values)).map_err(Problem::internal)?;
        let mut response = Response::new(Body::Text(page));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/html; charset=utf-8"));
        // The page shows someone's debt: never cached, never framed.
        headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        headers.insert("x-frame-options", header::HeaderValue::from_static("DENY"));
        headers.insert("referrer-policy", header::HeaderValue::from_static("no-referrer"));
        Ok(response)
    }

    fn result(&self, status: StatusCode, title: &str, detail: &str) -> Result<Response<Body>, Problem> {
        self.html(status, "topup_result.html", context! { title, detail })
    }

    async fn form(
        &self,
        request: &Request,
        topup: &TopUp,
        amount: Option<&str>,
        error: Option<&str>,
        status: StatusCode,
    ) -> Result<Response<Body>, Problem> {
        let merchant =
            self.merchants.get(&topup.merchant_id).await?.map(|m| m.name).unwrap_or_else(|| topup.merchant_id.clone());
        let csrf = csrf_cookie(request).filter(|c| c.len() == 64).unwrap_or_else(new_token);
        let mut response = self.html(
            status,
            "topup_form.html",
            context! {
                merchant,
                due => topup.amount_due.to_string(),
                payment_amount => topup.payment_amount.to_string(),
                currency => topup.amount_due.currency().code(),
                amount => amount.map(str::to_owned).unwrap_or_else(|| topup.amount_due.amount().to_string()),
                csrf => csrf.clone(),
                // The page posts to itself, which works behind any base path.
                action => "",
                error,
            },
        )?;
        let secure = header_of(request, "x-forwarded-proto").ok().flatten() == Some("https");
        let cookie = format!(
            "{CSRF_COOKIE}={csrf}; Path={}; HttpOnly; SameSite=Strict{}",
            request.uri().path(),
            if secure { "; Secure" } else { "" }
        );
        response
            .headers_mut()
            .insert(header::SET_COOKIE, header::HeaderValue::from_str(&cookie).map_err(Problem::internal)?);
        Ok(response)
    }

    async fn submit(&self, request: &Request, topup: &TopUp, now: i64) -> Result<Response<Body>, Problem> {
        let form: TopUpForm = serde_urlencoded::from_bytes(body_bytes(request))
            .unwrap_or(TopUpForm { amount: String::new(), csrf: String::new() });
        if form.csrf.is_empty() || csrf_cookie(request).as_deref() != Some(form.csrf.as_str()) {
            return self
                .form(
                    request,
                    topup,
                    Some(&form.amount),
                    Some("This form expired. Please check the amount and send it again."),
                    StatusCode::FORBIDDEN,
                )
                .await;
        }
        let currency = topup.amount_due.currency();
        let amount = match Money::parse(form.amount.trim(), currency.code()) {
            Ok(amount) if amount.amount() >= topup.amount_due.amount() => amount,
            Ok(_) => {
                let why = format!("Please add at least {}.", topup.amount_due);
                return self.form(request, topup, Some(&form.amount), Some(&why), StatusCode::BAD_REQUEST).await;
            }
            Err(e) => {
                return self
                    .form(request, topup, Some(&form.amount), Some(&e.to_string()), StatusCode::BAD_REQUEST)
                    .await;
            }
        };
        // Both the bank's reference and the transfer's id derive from the link, and the amount is
        // fixed by the first form sent: the bank is debited and the reserve credited once, alike.
        let amount = self.topups.fix_amount(&topup.token, amount).await?;
        let reference = format!("topup/{}", topup.token);
        match self.bank.debit(&reference, &topup.user, amount).await {
            BankAnswer::Approved => {}
            BankAnswer::Declined(reason) => {
                let detail =
                    format!("Your bank declined the top-up ({reason}). Nothing was charged and nothing moved.");
                return self.result(StatusCode::PAYMENT_REQUIRED, "Your bank declined", &detail);
            }
            BankAnswer::Unavailable(reason) => {
                tracing::warn!(%reason, "the bank could not be asked");
                let detail = format!(
                    "We could not get an answer from your bank. Please send the form again: it asks for {amount} once, however often you send it."
                );
                return self.result(StatusCode::SERVICE_UNAVAILABLE, "Please send it again", &detail);
            }
        }
        let transfer = Transfer::between(
            reference.clone(),
            amount,
            AccountId::funding(&topup.user),
            AccountId::reserve(&topup.user),
            "offline.topup",
            format!("offline-payment/{}", topup.payment_id),
        )
        .map_err(Problem::internal)?;
        let job_id = format!("{}/settle/{}", topup.payment_id, &topup.token[..8]);
        let job = OutboxMessage {
            body: serde_json::to_string(&SettlementJob {
                id: job_id.clone(),
                payment_id: topup.payment_id.clone(),
                expire_at: None,
            })
            .map_err(Problem::internal)?,
            id: job_id,
            queue_url: self.settlement_queue.clone(),
            delay_seconds: 0,
        };
        // The money is the payer's whatever became of the payment: it goes to their reserve, and the
        // settlement job settles the payment only if it still waits.
        let with = vec![self.topups.paid_item(&topup.token)?, self.outbox.put_item(&job, now)?];
        match self.ledger.apply(&transfer, with, now).await {
            Ok(Applied::Now) => self.outbox.send(&job).await,
            Ok(Applied::Already) | Err(TransferError::Rejected(_)) => {}
            Err(e) => {
                tracing::error!(error = %e, "the bank approved but the reserve was not credited yet");
                let detail = format!(
                    "Your bank approved {amount}, but we could not finish. Please send the form again: it completes without charging twice."
                );
                return self.result(StatusCode::SERVICE_UNAVAILABLE, "Please send it again", &detail);
            }
        }
        let detail = format!(
            "{amount} was added to your offline reserve. Your payment of {} is being completed.",
            topup.payment_amount
        );
        self.result(StatusCode::OK, "Funds added", &detail)
    }
}
