//! Signed calls we make to a partner's server (a merchant's product server, a mini-app's server):
//! the request is signed with the partner's request-signing key (DESIGN.md canonical request), and
//! an answer counts only if it is signed with the same key over method `RESPONSE` and the
//! request's path and nonce, so an answer cannot be replayed onto another request.

use std::sync::OnceLock;
use std::time::Duration;

use crate::crypto::{Signature, SignatureError};
use crate::keys::PartyKeys;

/// Well under API Gateway's 30 s, so a slow partner leaves time to answer the client.
pub const PARTNER_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer read from a partner; every answer of the protocols is a few hundred bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a partner's answer is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the server did not answer within {} s", PARTNER_TIMEOUT.as_secs())]
    Timeout,
    #[error("the server could not be reached: {0}")]
    Unreachable(String),
    #[error("the server answered HTTP {0}")]
    Status(u16),
    #[error("the answer is not signed: {0}")]
    Unsigned(String),
    #[error("the answer's signature does not verify")]
    BadSignature,
}

/// The path an answer's signature covers: the request's path and nonce.
pub fn answer_path(request_path: &str, request_nonce: &str) -> String {
    format!("{request_path}#{request_nonce}")
}

/// The path part of an absolute URL, which is what signatures cover.
pub fn url_path(url: &str) -> String {
    url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())).unwrap_or_else(|| "/".into())
}

/// The process's one HTTP client for partners (product servers, mini-app servers, banks), built
/// on the first call that needs it: building one reads the TLS roots (2-5 ms, `cargo stack bench`),
/// which a cold start whose request calls no partner should not pay, and two would pay twice.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    // Building fails only if the TLS backend cannot start, which no request could survive either.
    CLIENT.get_or_init(|| reqwest::Client::builder().timeout(PARTNER_TIMEOUT).build().expect("the HTTP client builds"))
}

#[derive(Default)]
pub struct PartnerClient;

impl PartnerClient {
    /// POSTs `body` signed to `url` and sends the response back, or why there is none.
    async fn post(
        &self,
        url: &str,
        keys: &PartyKeys,
        body: Vec<u8>,
        now: i64,
    ) -> Result<(Signature, reqwest::Response), CallError> {
        let signature = Signature::create(&keys.key_id, &keys.signing, "POST", &url_path(url), &body, now);
        let request = signature
            .headers()
            .into_iter()
            .fold(http().post(url).header("content-type", "application/json").body(body), |r, (name, value)| {
                r.header(name, value)
            });
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok((signature, response)),
            Ok(response) => Err(CallError::Status(response.status().as_u16())),
            Err(e) if e.is_timeout() => Err(CallError::Timeout),
            Err(e) => Err(CallError::Unreachable(e.to_string())),
        }
    }

    /// A signed request whose answer must be signed by the same key: the answer's body.
    pub async fn exchange(&self, url: &str, keys: &PartyKeys, body: Vec<u8>, now: i64) -> Result<Vec<u8>, CallError> {
        let (signature, mut response) = self.post(url, keys, body, now).await?;
        let headers = response.headers().clone();
        // Read before its signature can be checked, so bounded: a runaway answer must not exhaust memory.
        let mut answer = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() <= MAX_ANSWER_BYTES => answer.extend_from_slice(&chunk),
                Ok(Some(_)) => return Err(CallError::Unsigned(format!("the answer is over {MAX_ANSWER_BYTES} bytes"))),
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(CallError::Timeout),
                Err(e) => return Err(CallError::Unreachable(format!("the answer was cut off: {e}"))),
            }
        }
        let answer_signature = Signature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok()))
            .map_err(|e| match e {
                SignatureError::Missing(header) => CallError::Unsigned(format!("header {header} is missing")),
                other => CallError::Unsigned(other.to_string()),
            })?;
        if answer_signature.key_id != keys.key_id
            || answer_signature
                .check(&keys.signing, "RESPONSE", &answer_path(&url_path(url), &signature.nonce), &answer, now)
                .is_err()
        {
            return Err(CallError::BadSignature);
        }
        Ok(answer)
    }

    /// A signed notification (a webhook): delivered when the server answers 2xx.
    pub async fn deliver(&self, url: &str, keys: &PartyKeys, body: Vec<u8>, now: i64) -> Result<(), CallError> {
        self.post(url, keys, body, now).await.map(|_| ())
    }
}
