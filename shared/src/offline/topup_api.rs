//! The top-up pages (template.yaml `TopUpFunction`), HTML for a phone's browser, usable without
//! JavaScript. The link's token is the page's credential (no user token: the payer may open it
//! from a message on another device) and the form's idempotency key.
//!
//! - `GET  /topup/{token}`   the amount due, the merchant, a form to add funds (or where a debit
//!   already asked for stands)
//! - `POST /topup/{token}`   starts the bank debit, then asks the bank (`crate::offline::debit`:
//!   a debit started is owed until its outcome is settled, so no answer from the bank is "we are
//!   waiting for your bank", never "nothing happened"); the credit re-queues the waiting payment's
//!   settlement. A CSRF token (a cookie that must equal the form's hidden field, SameSite=Strict)
//!   keeps other sites from submitting the form.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use minijinja::{Environment, context};
use serde::Deserialize;

use super::debit::{DebitOutcome, StartError, TopUpDebits};
use super::topup::{AmountRefusal, TopUp, judge_amount, new_token};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::http::{body_bytes, header as header_of, path_parameter, route_key};
use crate::merchant::store::MerchantStore;
use crate::money::Money;
use crate::problem::catalogue;

const CSRF_COOKIE: &str = "topup_csrf";

pub struct TopUpApi {
    pages: Environment<'static>,
    merchants: MerchantStore,
    debits: TopUpDebits,
}

/// `POST /topup/{token}`'s form (application/x-www-form-urlencoded).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct TopUpForm {
    /// What to add, a decimal string in the link's currency: at least what is due, at most the
    /// link's ceiling.
    #[serde(default)]
    amount: String,
    /// The form's hidden field: equal to the `topup_csrf` cookie its page set.
    #[serde(default)]
    csrf: String,
}

/// The routes' documentation (`crate::openapi`): a person's pages, so every answer that is not a
/// problem is an HTML page, and the form is posted as application/x-www-form-urlencoded
/// (`TopUpForm`, with the `topup_csrf` cookie its page set).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Param, RouteDoc, schema};
    const TOKEN: &[Param] =
        &[Param { name: "token", description: "the link's token, as the payer's message carries it", schema: token }];
    &[
        RouteDoc {
            key: "GET /topup/{token}",
            summary: "a top-up link's page: the amount due and a form to add it from the payer's bank, or where the link stands (a debit awaited, used, expired, unknown)",
            request: None,
            path: TOKEN,
            query: &[],
            answers: &[],
            codes: &[],
            headers: &[],
            form: None,
            pages: &[200, 202, 404, 410],
        },
        RouteDoc {
            key: "POST /topup/{token}",
            summary: "the top-up form: starts the bank debit and shows its outcome (funds added, declined, awaited), or the form again with what was wrong",
            request: None,
            path: TOKEN,
            query: &[],
            answers: &[],
            codes: &[],
            headers: &[],
            form: Some(schema::<TopUpForm>),
            pages: &[200, 202, 400, 402, 403, 404, 410],
        },
    ]
};

/// A link's token as `TopUpStore::find` reads one (any other id opens no link).
#[cfg(feature = "openapi")]
fn token(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "pattern": "^[0-9A-Fa-f]{64}$"})
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
            merchants: MerchantStore::new(dynamodb.clone(), aws::env("MERCHANTS_TABLE")?),
            debits: TopUpDebits::from_env(&config, dynamodb.clone())?,
        })
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let token = path_parameter(&request, "token")?.to_owned();
        let now = now_epoch_seconds();
        let Some(topup) = self.debits.topups.find(&token).await? else {
            return self.result(
                StatusCode::NOT_FOUND,
                "Unknown link",
                "This top-up link is not one of ours. Open the link from your message again.",
            );
        };
        if let Some(page) = self.closed(&request, &topup, now).await? {
            return Ok(page);
        }
        match route_key(&request) {
            "GET /topup/{token}" => self.form(&request, &topup, None, None, StatusCode::OK).await,
            "POST /topup/{token}" => self.submit(&request, &topup, now).await,
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the top-up function has no route {other:?}"))),
        }
    }

    /// The page of a link on which no form can start a debit, if it is one: used, with a debit
    /// running (settled whatever the time: the money may have left the bank), or expired.
    async fn closed(&self, request: &Request, topup: &TopUp, now: i64) -> Result<Option<Response<Body>>, Problem> {
        if topup.paid {
            return self
                .result(
                    StatusCode::GONE,
                    "Already topped up",
                    "This link was used already: the funds were added and the payment is being completed.",
                )
                .map(Some);
        }
        if topup.debit_started_at.is_some() {
            return match route_key(request) {
                "POST /topup/{token}" => self.settle(topup, now).await.map(Some),
                _ => self.waiting(topup).map(Some),
            };
        }
        if topup.expired || now >= topup.link_expires_at {
            return self.expired().map(Some);
        }
        Ok(None)
    }

    fn expired(&self) -> Result<Response<Body>, Problem> {
        self.result(
            StatusCode::GONE,
            "Link expired",
            "This top-up link has expired. The merchant has been told the payment did not complete.",
        )
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
        let asked = match Money::parse(form.amount.trim(), currency.code()) {
            Ok(asked) => asked,
            Err(e) => {
                return self
                    .form(request, topup, Some(&form.amount), Some(&e.to_string()), StatusCode::BAD_REQUEST)
                    .await;
            }
        };
        // The first form sent fixes the amount: the bank's debit and the ledger's credit are one.
        let amount = match (topup.amount, judge_amount(asked, topup.amount_due)) {
            (Some(fixed), _) => fixed,
            (None, Ok(amount)) => amount,
            (None, Err(refusal)) => {
                let why = match refusal {
                    AmountRefusal::BelowDue(due) => format!("Please add at least {due}."),
                    AmountRefusal::AboveCeiling(most) => format!("This link adds at most {most}."),
                };
                return self.form(request, topup, Some(&form.amount), Some(&why), StatusCode::BAD_REQUEST).await;
            }
        };
        match self.debits.start(topup, amount, now).await {
            Ok(started) => self.settle(&started, now).await,
            // Paid, expired or started by another form meanwhile: show where it stands.
            Err(StartError::NotOpen) => match self.debits.topups.get(&topup.key).await? {
                Some(current) => self.closed(request, &current, now).await?.map_or_else(|| self.expired(), Ok),
                None => self.expired(),
            },
            Err(StartError::Store(e)) => Err(e.into()),
        }
    }

    /// Asks the bank for the started debit's outcome and shows it.
    async fn settle(&self, topup: &TopUp, now: i64) -> Result<Response<Body>, Problem> {
        match self.debits.settle(topup, now).await? {
            DebitOutcome::Credited(amount) => {
                let detail = format!(
                    "{amount} was added to your offline reserve. Your payment of {} is being completed.",
                    topup.payment_amount
                );
                self.result(StatusCode::OK, "Funds added", &detail)
            }
            DebitOutcome::Declined(reason) => {
                let detail = format!(
                    "Your bank declined the top-up ({reason}). Nothing was charged and nothing moved. You can try again from this link."
                );
                self.result(StatusCode::PAYMENT_REQUIRED, "Your bank declined", &detail)
            }
            DebitOutcome::Pending(_) => self.waiting(topup),
        }
    }

    /// A debit whose outcome is not settled yet: nothing to send again, nothing charged twice.
    fn waiting(&self, topup: &TopUp) -> Result<Response<Body>, Problem> {
        let amount = topup.amount.map_or_else(|| topup.amount_due.to_string(), |a| a.to_string());
        let detail = format!(
            "We asked your bank for {amount} and are waiting for its answer. If it approves, the money goes to your offline reserve and your payment of {} completes; you will get a message. Nothing is charged twice: you need not send the form again.",
            topup.payment_amount
        );
        self.result(StatusCode::ACCEPTED, "Waiting for your bank", &detail)
    }
}
