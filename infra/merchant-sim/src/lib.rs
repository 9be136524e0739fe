//! What the simulated partner servers (`merchant-sim`, `miniapp-sim`) share: the keys they were
//! given, our signature on requests to them with single-use nonces, and their signed answers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use superpay::clock::now_epoch_seconds;
use superpay::crypto::{Key, Signature};
use superpay::keys::PartyKeys;
use superpay::outbound::answer_path;

/// `POST /_sim/...` body: a partner's key, as shown once when it was registered.
#[derive(Deserialize)]
pub struct KeyGrant {
    pub key_id: String,
    pub secret: String,
}

#[derive(Default)]
pub struct PartnerKeys {
    keys: Mutex<HashMap<String, Arc<PartyKeys>>>,
    nonces: Mutex<HashSet<String>>,
}

impl PartnerKeys {
    /// Keeps the key; `false` when the secret is not a base64 256-bit key.
    pub fn grant(&self, grant: &KeyGrant) -> bool {
        let Some(master) = Key::from_base64(&grant.secret) else { return false };
        if let Ok(mut keys) = self.keys.lock() {
            keys.insert(grant.key_id.clone(), Arc::new(PartyKeys::derive(&grant.key_id, &master)));
        }
        true
    }

    /// The keys granted under `key_id`.
    pub fn get(&self, key_id: &str) -> Option<Arc<PartyKeys>> {
        self.keys.lock().ok().and_then(|k| k.get(key_id).cloned())
    }

    /// Our signature on a request to this server: the partner's keys, or why it is refused.
    pub fn verify(&self, path: &str, headers: &HeaderMap, body: &[u8]) -> Result<(Signature, Arc<PartyKeys>), String> {
        let signature = Signature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .map_err(|e| e.to_string())?;
        let keys = self
            .keys
            .lock()
            .ok()
            .and_then(|k| k.get(&signature.key_id).cloned())
            .ok_or_else(|| "unknown key id".to_owned())?;
        signature.check(&keys.signing, "POST", path, body, now_epoch_seconds()).map_err(|e| e.to_string())?;
        let fresh = self.nonces.lock().map(|mut n| n.insert(format!("{}#{}", signature.key_id, signature.nonce)));
        if !fresh.unwrap_or(false) {
            return Err("replayed nonce".into());
        }
        Ok((signature, keys))
    }
}

pub fn refuse(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({ "error": why }))).into_response()
}

/// A JSON answer signed with `signing` under `keys`' key id, bound to the request's path and nonce.
pub fn signed_answer(keys: &PartyKeys, signing: &Key, path: &str, request_nonce: &str, body: Vec<u8>) -> Response {
    let signature = Signature::create(
        &keys.key_id,
        signing,
        "RESPONSE",
        &answer_path(path, request_nonce),
        &body,
        now_epoch_seconds(),
    );
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert("content-type", "application/json".parse().expect("a header value"));
    for (name, value) in signature.headers() {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Serves `app` on 127.0.0.1 at `--port N` (0 or none: any free port).
pub async fn serve(name: &str, app: axum::Router) -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("{name} on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
