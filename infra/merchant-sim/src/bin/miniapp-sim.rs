//! A mini-app's third-party server, simulated (`miniapp-sim --port N`), for every app registered
//! with a server URL on it (any path prefix, e.g. `http://127.0.0.1:3003/tea`).
//!
//! - `POST /_sim/apps {"key_id", "secret"}` gives it an app's key (shown once at registration).
//! - `GET <prefix>/index.html` is the app's entry page: what the client opens inside the chat.
//! - `POST <prefix>/requests` checks our signature and single-use nonce and answers, signed, what
//!   it will deliver for `params.item` and at what price (`jasmine-tea` 4.50 USD, `oolong` 6.00
//!   USD, `loyalty-points` free, anything else 1.00 USD). A prefix on the item changes how it
//!   answers: `slow-` after 7 s (past our timeout), `garbage-` unsigned HTML, `badsig-` signed
//!   with the wrong key, `other-` about another request, `huge-` 100 KB of signed padding. It
//!   delivers nothing until told.
//! - `POST <prefix>/outcomes` takes our signed outcome notices (`charged`, `completed`, `refused`);
//!   for an item with the prefix `flaky-` it fails the first delivery (HTTP 500).
//! - `GET /_sim/requests/{request_id}` shows what it received: how often the request came, which
//!   key signed it, and the outcomes it was told.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use superpay::crypto::Key;
use superpay::miniapp::ServerAnswer;
use superpay::miniapp::relay::ServerRequest;
use superpay::money::Money;
use superpay_merchant_sim::{KeyGrant, PartnerKeys, refuse, serve, signed_answer};

const CATALOG: &[(&str, Option<&str>, &str)] = &[
    ("jasmine-tea", Some("4.50"), "1 x jasmine tea"),
    ("oolong", Some("6.00"), "1 x oolong tea"),
    ("loyalty-points", None, "your balance is 120 points"),
];

#[derive(Default)]
struct Sim {
    keys: PartnerKeys,
    /// By request id: `{"received": n, "request": ..., "outcomes": [...]}`.
    requests: Mutex<HashMap<String, Value>>,
}

async fn add_app(State(sim): State<Arc<Sim>>, body: axum::Json<KeyGrant>) -> StatusCode {
    if sim.keys.grant(&body) { StatusCode::NO_CONTENT } else { StatusCode::BAD_REQUEST }
}

async fn seen(State(sim): State<Arc<Sim>>, Path(request_id): Path<String>) -> Response {
    match sim.requests.lock().ok().and_then(|r| r.get(&request_id).cloned()) {
        Some(seen) => axum::Json(seen).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The entry page: phone-sized, the catalog and the actions the interface offers.
async fn entry_page(uri: Uri) -> Response {
    if !uri.path().ends_with("/index.html") {
        return refuse(StatusCode::NOT_FOUND, "no such page");
    }
    let items: String = CATALOG
        .iter()
        .map(|(item, price, _)| format!("<li>{item}: {}</li>", price.map_or("free".into(), |p| format!("{p} USD"))))
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta name=viewport content=\"width=device-width\"><title>Tea Corner</title></head>\
         <body><h1>Tea Corner</h1><ul>{items}</ul><p>Choose an item; your super-app asks you to approve its price.</p></body></html>"
    ))
    .into_response()
}

fn record(sim: &Sim, request_id: &str, change: impl FnOnce(&mut Value)) {
    if let Ok(mut requests) = sim.requests.lock() {
        change(requests.entry(request_id.to_owned()).or_insert_with(|| json!({ "received": 0, "outcomes": [] })));
    }
}

async fn server(State(sim): State<Arc<Sim>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let (signature, keys) = match sim.keys.verify(&path, &headers, &body) {
        Ok(verified) => verified,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, &why),
    };
    if path.ends_with("/outcomes") {
        let Ok(notice) = serde_json::from_slice::<Value>(&body) else {
            return refuse(StatusCode::BAD_REQUEST, "not JSON");
        };
        let request_id = notice["request_id"].as_str().unwrap_or_default().to_owned();
        let mut refuse_once = false;
        record(&sim, &request_id, |seen| {
            let flaky = seen["request"]["params"]["item"].as_str().is_some_and(|i| i.starts_with("flaky-"));
            refuse_once = flaky && seen["refused_outcomes"].is_null();
            if refuse_once {
                seen["refused_outcomes"] = json!(1);
            }
        });
        if refuse_once {
            return refuse(StatusCode::INTERNAL_SERVER_ERROR, "flaky: the first delivery fails");
        }
        record(&sim, &request_id, |seen| {
            let outcomes = seen["outcomes"].as_array_mut();
            // At least once on the wire, once here: a repeated event id is already handled.
            if let Some(outcomes) = outcomes.filter(|o| !o.iter().any(|n| n["event_id"] == notice["event_id"])) {
                outcomes.push(notice);
            }
        });
        return StatusCode::NO_CONTENT.into_response();
    }
    if !path.ends_with("/requests") {
        return refuse(StatusCode::NOT_FOUND, "no such endpoint");
    }
    let Ok(request) = serde_json::from_slice::<ServerRequest>(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "not a ServerRequest");
    };
    record(&sim, &request.request_id, |seen| {
        seen["received"] = json!(seen["received"].as_u64().unwrap_or(0) + 1);
        seen["request"] = json!(request);
        seen["key_id"] = json!(signature.key_id);
    });
    let wanted = request.params["item"].as_str().unwrap_or_default();
    let (rule, item) = match wanted.split_once('-') {
        Some((rule @ ("slow" | "garbage" | "badsig" | "other" | "huge" | "flaky"), item)) => (rule, item),
        _ => ("", wanted),
    };
    let (price, deliver) = CATALOG
        .iter()
        .find(|(name, _, _)| *name == item)
        .map(|(_, price, deliver)| (*price, (*deliver).to_owned()))
        .unwrap_or((Some("1.00"), format!("1 x {item}")));
    let answer = ServerAnswer {
        request_id: if rule == "other" { format!("{}x", request.request_id) } else { request.request_id.clone() },
        deliver,
        amount: price.and_then(|p| Money::parse(p, "USD").ok()),
    };
    match rule {
        "garbage" => return (StatusCode::OK, Html("<html>upstream error</html>")).into_response(),
        "slow" => tokio::time::sleep(Duration::from_secs(7)).await,
        _ => {}
    }
    let signing = if rule == "badsig" { Key::random() } else { keys.signing.clone() };
    let mut body = serde_json::to_vec(&answer).unwrap_or_default();
    if rule == "huge" {
        body.extend(std::iter::repeat_n(b' ', 100 * 1024));
    }
    signed_answer(&keys, &signing, &path, &signature.nonce, body)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/_sim/apps", post(add_app))
        .route("/_sim/requests/{request_id}", get(seen))
        .fallback(get(entry_page).post(server))
        .with_state(Arc::new(Sim::default()));
    serve("mini-app server simulator", app).await
}
