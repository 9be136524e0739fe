//! A merchant's product server, simulated (`merchant-sim --port N`).
//!
//! - `POST /_sim/merchants {"key_id", "secret"}` gives it a merchant's key (shown once at registration).
//! - `POST <any path>/orders` is the product server: it checks our signature and single-use nonce,
//!   opens the sealed order, remembers it, and answers by the product id's first word:
//!   `decline…` declines, `pending…` answers pending (decide later with the signed callback),
//!   `slow…` answers after 7 s (past our timeout), `garbage…` answers unsigned HTML, `badsig…`
//!   signs with the wrong key, `other…` names another order; anything else confirms.
//! - `POST <any path>/webhooks` takes our signed notifications, each signed by the key of the
//!   merchant that sold the order (the one it received the order under, or the order's own
//!   `merchant_id` if it never received it; for news of an offline payment or a transfer operation,
//!   its `merchant_id`); for an order whose product id starts with `flaky` it fails the first
//!   delivery (HTTP 500) to exercise our retries.
//! - `/bank/...` is a user's bank, started with the key the stack shares with it (`BANK_KEY_ID`,
//!   `BANK_KEY`: base64): `POST /bank/debits` and `POST /bank/payouts` `{"reference", "account",
//!   "amount"}` take money from an account or pay it out to one, `POST /bank/payouts/status
//!   {"reference"}` answers what became of a payout. It checks our signature and single-use nonce
//!   and answers a signed `BankReply` by the account (a user id's first word, or a card number's or
//!   an all-digit IBAN's last four digits): `broke…` or `…0002` declines, anything else approves, and a
//!   reference is answered the same way twice. `badsig…` signs its approval with the wrong key,
//!   `unsigned…` does not sign it, `moved…` redirects (307). `lagging…` or `…0259` approves at once
//!   (the money moved) but, for `BANK_LAG` after a reference is first asked about, answers only
//!   after 7 s, past our timeout: the answer that was lost. `…0404` loses the first request of a
//!   reference (a 503, nothing recorded): the request that never arrived. A payout's status is
//!   final: a reference it never received is declined for good, so that payout can no longer be paid.
//!   `GET /_sim/bank/{account}` lists an account's debits and payouts (reference, kind, amount, status).
//! - It also plays a partner platform ("platform B" of capability 9): `POST /_sim/merchants` takes a
//!   partner's key as well (`pp_….k1`); `POST /_sim/codes {"key_id", "partner_user", "user",
//!   "ttl"?}` answers `{"code"}`, a link code for that user of B's signed with that key (for `user`
//!   of ours); B's webhooks (`<any path>/webhooks`, a `link` event signed by the partner's own key)
//!   are kept by link id. `POST /_sim/partner-calls {"key_id", "method", "path", "body"?,
//!   "idempotency_key"?}` makes a call of B's to the API (`SUPERPAY_API_URL`), signed with that key,
//!   and answers `{"status", "body"}`: a walk in curl plays B without signing in shell.
//! - `GET /_sim/orders/{order_id}` shows what it received (and how often it was forwarded); `GET /_sim/webhooks/{id}` the
//!   notifications about an order, payment or operation it accepted, and how many deliveries it refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use superpay::bank::{BankReply, BankRequest, ReplyStatus, StatusRequest};
use superpay::crypto::Key;
use superpay::money::Money;
use superpay::purchase::relay::{MerchantAnswer, OrderEnvelope, open_order};
use superpay_merchant_sim::{KeyGrant, PartnerKeys, refuse, serve, signed_answer};

#[derive(Default)]
struct Sim {
    /// Merchants' keys.
    keys: PartnerKeys,
    /// The bank's key only, so no merchant's key can sign a debit.
    bank: PartnerKeys,
    orders: Mutex<HashMap<String, Value>>,
    webhooks: Mutex<HashMap<String, Value>>,
    /// Each reference's debit or payout: account, amount, answer, and when it was first asked about.
    movements: Mutex<HashMap<String, Movement>>,
    /// The references whose first request a `…0404` account lost.
    lost: Mutex<std::collections::HashSet<String>>,
}

#[derive(Clone)]
struct Movement {
    /// `debit` or `payout`.
    kind: &'static str,
    /// `None`: a payout it never received, closed by a status request.
    account: Option<String>,
    amount: Option<Money>,
    answer: BankReply,
    first_asked: std::time::Instant,
}

/// How long a `lagging…` bank's answers come too late after a reference is first asked about.
const BANK_LAG: Duration = Duration::from_secs(12);

async fn add_merchant(State(sim): State<Arc<Sim>>, body: axum::Json<KeyGrant>) -> StatusCode {
    if sim.keys.grant(&body) { StatusCode::NO_CONTENT } else { StatusCode::BAD_REQUEST }
}

#[derive(serde::Deserialize)]
struct CodeRequest {
    key_id: String,
    partner_user: String,
    user: String,
    #[serde(default)]
    ttl: Option<i64>,
}

/// A link code B issues for its user, signed with B's link-code key.
async fn link_code(State(sim): State<Arc<Sim>>, body: axum::Json<CodeRequest>) -> Response {
    let Some(keys) = sim.keys.get(&body.key_id) else { return refuse(StatusCode::NOT_FOUND, "no such key") };
    let now = superpay::clock::now_epoch_seconds();
    let payload = json!({
        "key_id": body.key_id,
        "partner_user": body.partner_user,
        "user": body.user,
        "nonce": superpay::crypto::random_hex::<16>(),
        "issued_at": now,
        "expires_at": now + body.ttl.unwrap_or(120),
    });
    axum::Json(json!({ "code": superpay::instrument::link::issue(&payload, &keys.link_codes) })).into_response()
}

#[derive(serde::Deserialize)]
struct PartnerCall {
    key_id: String,
    method: String,
    path: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// One of B's calls to the API, signed with B's key as B would sign it.
async fn partner_call(State(sim): State<Arc<Sim>>, call: axum::Json<PartnerCall>) -> Response {
    let Some(keys) = sim.keys.get(&call.key_id) else { return refuse(StatusCode::NOT_FOUND, "no such key") };
    let Ok(api) = std::env::var("SUPERPAY_API_URL") else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "SUPERPAY_API_URL is not set");
    };
    let Ok(method) = call.method.parse::<reqwest::Method>() else { return refuse(StatusCode::BAD_REQUEST, "method") };
    let body = call.body.as_ref().map(Value::to_string).unwrap_or_default();
    let now = superpay::clock::now_epoch_seconds();
    let signature = superpay::crypto::Signature::create(
        &call.key_id,
        &keys.signing,
        method.as_str(),
        &call.path,
        body.as_bytes(),
        now,
    );
    let mut request = reqwest::Client::new().request(method, format!("{api}{}", call.path)).body(body);
    if call.body.is_some() {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in signature.headers() {
        request = request.header(name, value);
    }
    if let Some(key) = &call.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            axum::Json(json!({"status": status, "body": body})).into_response()
        }
        Err(e) => refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
}

async fn received(State(sim): State<Arc<Sim>>, Path(order_id): Path<String>) -> Response {
    match sim.orders.lock().ok().and_then(|o| o.get(&order_id).cloned()) {
        Some(order) => axum::Json(order).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn webhooks_seen(State(sim): State<Arc<Sim>>, Path(order_id): Path<String>) -> Response {
    let seen = sim.webhooks.lock().ok().and_then(|w| w.get(&order_id).cloned());
    axum::Json(seen.unwrap_or_else(|| json!({ "accepted": [], "refused": 0 }))).into_response()
}

async fn webhook(sim: &Sim, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let signature = match sim.keys.verify(path, headers, body) {
        Ok((signature, _)) => signature,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
    };
    let Ok(event) = serde_json::from_slice::<Value>(body) else { return refuse(StatusCode::BAD_REQUEST, "not JSON") };
    // News about an order, an offline payment or a transfer operation: only its own merchant's key
    // may sign it.
    let (order_id, signed_by_seller) = if let Some(link) = event["link"].as_object() {
        let partner = link.get("partner_id").and_then(Value::as_str).unwrap_or_default();
        (
            link.get("link_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            !partner.is_empty() && signature.key_id.starts_with(&format!("{partner}.")),
        )
    } else if let Some(payment) = event["payment"].as_object().or_else(|| event["operation"].as_object()) {
        let merchant = payment.get("merchant_id").and_then(Value::as_str).unwrap_or_default();
        (
            payment.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
            signature.key_id.starts_with(&format!("{merchant}.")),
        )
    } else {
        let order_id = event["order"]["id"].as_str().unwrap_or_default().to_owned();
        let sold_by = sim.orders.lock().ok().and_then(|o| o.get(&order_id).map(|seen| seen["key_id"].clone()));
        let seller = match sold_by {
            Some(key_id) => key_id == json!(signature.key_id),
            // An order it never received (the purchase died before forwarding it, and the order
            // expired): news of it is checked against the merchant it names, as a payment's is.
            None => {
                let merchant = event["order"]["merchant_id"].as_str().unwrap_or_default();
                !merchant.is_empty() && signature.key_id.starts_with(&format!("{merchant}."))
            }
        };
        (order_id, seller)
    };
    if !signed_by_seller {
        return refuse(StatusCode::UNAUTHORIZED, "signed by a key other than the seller's");
    }
    let flaky = event["order"]["product_id"].as_str().is_some_and(|p| p.starts_with("flaky"));
    let Ok(mut webhooks) = sim.webhooks.lock() else { return refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock") };
    let seen = webhooks.entry(order_id).or_insert_with(|| json!({ "accepted": [], "refused": 0 }));
    if flaky && seen["refused"] == 0 {
        seen["refused"] = json!(1);
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "flaky: the first delivery fails");
    }
    if let Some(accepted) = seen["accepted"].as_array_mut() {
        accepted.push(event);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn product_server(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    if path.ends_with("/webhooks") {
        return webhook(&sim, &path, &headers, &body).await;
    }
    if !path.ends_with("/orders") {
        return refuse(StatusCode::NOT_FOUND, "no such endpoint");
    }
    let (signature, keys) = match sim.keys.verify(&path, &headers, &body) {
        Ok(verified) => verified,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
    };
    let Ok(envelope) = serde_json::from_slice::<OrderEnvelope>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "not an order envelope");
    };
    let Some(details) = open_order(&keys, &envelope) else {
        return refuse(StatusCode::BAD_REQUEST, "the order does not open with this merchant's key");
    };
    if let Ok(mut orders) = sim.orders.lock() {
        let seen = orders.entry(details.order_id.clone()).or_insert_with(|| json!({ "forwarded": 0 }));
        seen["details"] = json!(details);
        seen["key_id"] = json!(signature.key_id);
        seen["forwarded"] = json!(seen["forwarded"].as_u64().unwrap_or(0) + 1);
    }
    let rule = details.product_id.split(['-', '_', ' ']).next().unwrap_or_default().to_owned();
    let (decision, order_id) = match rule.as_str() {
        "decline" => ("decline", details.order_id.clone()),
        "pending" => ("pending", details.order_id.clone()),
        "other" => ("confirm", format!("{}x", details.order_id)),
        "garbage" => return (StatusCode::OK, "<html>upstream error</html>").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(7)).await;
            ("confirm", details.order_id.clone())
        }
        _ => ("confirm", details.order_id.clone()),
    };
    let answer = serde_json::to_vec(&MerchantAnswer { order_id, decision: decision.into() }).unwrap_or_default();
    let signing_key = if rule == "badsig" { Key::random() } else { keys.signing.clone() };
    signed_answer(&keys, &signing_key, &path, &signature.nonce, answer)
}

async fn bank_movements_of(State(sim): State<Arc<Sim>>, Path(account): Path<String>) -> Response {
    let Ok(movements) = sim.movements.lock() else { return refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock") };
    let list: Vec<Value> = movements
        .iter()
        .filter(|(_, m)| m.account.as_deref() == Some(account.as_str()))
        .map(|(reference, m)| {
            json!({ "reference": reference, "kind": m.kind, "amount": m.amount, "status": m.answer.status })
        })
        .collect();
    axum::Json(list).into_response()
}

/// The rule an account's bank follows (see the module comment). The last four digits decide only
/// for a number (a card's digits, an IBAN's digits after its country), never for a user id.
fn bank_rule(account: &str) -> &'static str {
    let by_word = ["broke", "badsig", "unsigned", "moved", "lagging"].into_iter().find(|r| account.starts_with(r));
    let number = account.len() >= 12 && account.bytes().skip(2).all(|b| b.is_ascii_digit());
    let by_digits = [("0002", "broke"), ("0259", "lagging"), ("0404", "lost")]
        .into_iter()
        .find(|(last4, _)| number && account.ends_with(last4))
        .map(|(_, rule)| rule);
    by_word.or(by_digits).unwrap_or_default()
}

async fn bank_debit(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    bank_movement(&sim, "debit", uri.path(), &headers, &body).await
}

async fn bank_payout(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    bank_movement(&sim, "payout", uri.path(), &headers, &body).await
}

async fn bank_movement(sim: &Sim, kind: &'static str, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let (answer, late) = answer_movement(sim, kind, path, headers, body);
    if late {
        tokio::time::sleep(Duration::from_secs(7)).await;
    }
    answer
}

/// The bank's answer to a debit or a payout, and whether it comes too late (a lagging account).
fn answer_movement(sim: &Sim, kind: &'static str, path: &str, headers: &HeaderMap, body: &[u8]) -> (Response, bool) {
    let (signature, keys) = match sim.bank.verify(path, headers, body) {
        Ok(verified) => verified,
        Err(why) => return (refuse(StatusCode::UNAUTHORIZED, &why), false),
    };
    let Ok(request) = serde_json::from_slice::<BankRequest>(body) else {
        return (refuse(StatusCode::BAD_REQUEST, "not a bank request"), false);
    };
    let rule = bank_rule(&request.account);
    let Ok(mut movements) = sim.movements.lock() else {
        return (refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock"), false);
    };
    if rule == "lost"
        && !movements.contains_key(&request.reference)
        && sim.lost.lock().is_ok_and(|mut l| l.insert(request.reference.clone()))
    {
        return (refuse(StatusCode::SERVICE_UNAVAILABLE, "lost on its way"), false);
    }
    let answer = match rule {
        "broke" => BankReply {
            reference: request.reference.clone(),
            status: ReplyStatus::Declined,
            reason: Some(
                if kind == "debit" { "insufficient funds at the bank" } else { "the account is closed" }.into(),
            ),
        },
        _ => BankReply { reference: request.reference.clone(), status: ReplyStatus::Approved, reason: None },
    };
    let new = Movement {
        kind,
        account: Some(request.account.clone()),
        amount: Some(request.amount),
        answer,
        first_asked: std::time::Instant::now(),
    };
    let movement = movements.entry(request.reference.clone()).or_insert(new).clone();
    drop(movements);
    // A payout whose status was asked before it arrived stays declined; the same reference for
    // another movement is a client's bug.
    let closed = movement.account.is_none() && kind == "payout";
    if !closed
        && (movement.kind != kind
            || movement.amount != Some(request.amount)
            || movement.account.as_deref() != Some(request.account.as_str()))
    {
        return (refuse(StatusCode::CONFLICT, "this reference was used for another movement"), false);
    }
    let late = rule == "lagging" && movement.first_asked.elapsed() < BANK_LAG;
    let answer = serde_json::to_vec(&movement.answer).unwrap_or_default();
    let response = match rule {
        "badsig" => signed_answer(&keys, &Key::random(), path, &signature.nonce, answer),
        "unsigned" => (StatusCode::OK, answer).into_response(),
        "moved" => (StatusCode::TEMPORARY_REDIRECT, [("location", path.to_owned())]).into_response(),
        _ => signed_answer(&keys, &keys.signing, path, &signature.nonce, answer),
    };
    (response, late)
}

/// What became of a payout, for good: one it never received is declined, and stays so.
async fn bank_payout_status(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path();
    let (signature, keys) = match sim.bank.verify(path, &headers, &body) {
        Ok(verified) => verified,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
    };
    let Ok(request) = serde_json::from_slice::<StatusRequest>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "not a status request");
    };
    let Ok(mut movements) = sim.movements.lock() else { return refuse(StatusCode::INTERNAL_SERVER_ERROR, "lock") };
    let closed = Movement {
        kind: "payout",
        account: None,
        amount: None,
        answer: BankReply {
            reference: request.reference.clone(),
            status: ReplyStatus::Declined,
            reason: Some("no such payout was received".into()),
        },
        first_asked: std::time::Instant::now(),
    };
    let movement = movements.entry(request.reference.clone()).or_insert(closed).clone();
    drop(movements);
    if movement.kind != "payout" {
        return refuse(StatusCode::CONFLICT, "this reference is not a payout");
    }
    signed_answer(
        &keys,
        &keys.signing,
        path,
        &signature.nonce,
        serde_json::to_vec(&movement.answer).unwrap_or_default(),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let sim = Sim::default();
    let bank_key = KeyGrant {
        key_id: std::env::var("BANK_KEY_ID").unwrap_or_default(),
        secret: std::env::var("BANK_KEY").unwrap_or_default(),
    };
    if bank_key.key_id.is_empty() || !sim.bank.grant(&bank_key) {
        return Err(std::io::Error::other(
            "BANK_KEY_ID and BANK_KEY (a base64 256-bit key) must be set: the local stack sets them",
        ));
    }
    let app = Router::new()
        .route("/_sim/merchants", post(add_merchant))
        .route("/_sim/codes", post(link_code))
        .route("/_sim/partner-calls", post(partner_call))
        .route("/bank/debits", post(bank_debit))
        .route("/bank/payouts", post(bank_payout))
        .route("/bank/payouts/status", post(bank_payout_status))
        .route("/_sim/bank/{account}", get(bank_movements_of))
        .route("/_sim/orders/{order_id}", get(received))
        .route("/_sim/webhooks/{order_id}", get(webhooks_seen))
        .fallback(post(product_server))
        .with_state(Arc::new(sim));
    serve("merchant simulator", app).await
}
