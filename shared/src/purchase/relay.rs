//! The purchase relay's protocol with a merchant's product server, and its HTTP client.
//!
//! We `POST <product_server_url>/orders` an `OrderEnvelope`: the order's details sealed with the
//! merchant's order-encryption key (AES-256-GCM; the associated data binds order id, key id and
//! timestamp), the request signed with its request-signing key (DESIGN.md canonical request).
//! The product server answers `MerchantAnswer` (`confirm`, `decline` or `pending`), signed over
//! method `RESPONSE` and the request's path and nonce, so an answer cannot be replayed onto another
//! request. `pending` (or no usable answer) leaves the order waiting for the signed callback
//! `POST /merchant/orders/{id}/decision` or its expiry.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Decision;
use crate::crypto::{Sealed, Signature, open, seal};
use crate::keys::PartyKeys;
use crate::merchant::Merchant;
use crate::money::Money;

/// Well under API Gateway's 30 s, so a slow merchant leaves time to answer the client.
pub const MERCHANT_TIMEOUT: Duration = Duration::from_secs(5);

/// What travels to the product server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEnvelope {
    pub key_id: String,
    pub order_id: String,
    pub timestamp: i64,
    pub sealed: Sealed,
}

/// What the product server reads inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderDetails {
    pub order_id: String,
    /// The buyer's account on this platform.
    pub user: String,
    pub product_id: String,
    pub quantity: u32,
    pub amount: Money,
    pub expires_at: i64,
    /// Where to send a decision made later (signed).
    pub callback_path: String,
}

/// The product server's answer, and the body of its later callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantAnswer {
    pub order_id: String,
    /// `confirm`, `decline` or `pending`.
    pub decision: String,
}

impl MerchantAnswer {
    pub fn decision(&self) -> Option<Decision> {
        match self.decision.as_str() {
            "confirm" => Some(Decision::Confirm),
            "decline" => Some(Decision::Decline),
            _ => None,
        }
    }
}

pub fn associated_data(order_id: &str, key_id: &str, timestamp: i64) -> Vec<u8> {
    format!("superpay-order|{order_id}|{key_id}|{timestamp}").into_bytes()
}

pub fn seal_order(keys: &PartyKeys, details: &OrderDetails, now: i64) -> OrderEnvelope {
    let plaintext = serde_json::to_vec(details).unwrap_or_default();
    OrderEnvelope {
        key_id: keys.key_id.clone(),
        order_id: details.order_id.clone(),
        timestamp: now,
        sealed: seal(&keys.encryption, &plaintext, &associated_data(&details.order_id, &keys.key_id, now)),
    }
}

/// The details, if the envelope was sealed with these keys for the order and time it names.
pub fn open_order(keys: &PartyKeys, envelope: &OrderEnvelope) -> Option<OrderDetails> {
    let associated = associated_data(&envelope.order_id, &envelope.key_id, envelope.timestamp);
    let details: OrderDetails = serde_json::from_slice(&open(&keys.encryption, &envelope.sealed, &associated)?).ok()?;
    (details.order_id == envelope.order_id).then_some(details)
}

/// The path an answer's signature covers: the request's path and nonce.
pub fn answer_path(request_path: &str, request_nonce: &str) -> String {
    format!("{request_path}#{request_nonce}")
}

/// What came back from the product server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantReply {
    Decided(Decision),
    Pending,
    /// No usable answer (timeout, refused connection, garbage, bad signature): the order waits.
    NoAnswer(String),
}

pub struct MerchantClient {
    http: reqwest::Client,
}

impl MerchantClient {
    pub fn new() -> Self {
        let http = reqwest::Client::builder().timeout(MERCHANT_TIMEOUT).build().unwrap_or_default();
        MerchantClient { http }
    }

    pub async fn forward(
        &self,
        merchant: &Merchant,
        keys: &PartyKeys,
        details: &OrderDetails,
        now: i64,
    ) -> MerchantReply {
        let url = format!("{}/orders", merchant.product_server_url);
        let path = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or_else(|| "/orders".into());
        let body = serde_json::to_vec(&seal_order(keys, details, now)).unwrap_or_default();
        let signature = Signature::create(&keys.key_id, &keys.signing, "POST", &path, &body, now);
        let mut request = self.http.post(&url).header("content-type", "application/json").body(body);
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return MerchantReply::NoAnswer("the product server did not answer in time".into());
            }
            Err(e) => return MerchantReply::NoAnswer(format!("the product server could not be reached: {e}")),
        };
        let headers = response.headers().clone();
        let Ok(body) = response.bytes().await else {
            return MerchantReply::NoAnswer("the product server's answer was cut off".into());
        };
        let answer_signature = match Signature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok())) {
            Ok(s) => s,
            Err(e) => return MerchantReply::NoAnswer(format!("unsigned answer: {e}")),
        };
        if answer_signature.key_id != keys.key_id
            || answer_signature
                .check(&keys.signing, "RESPONSE", &answer_path(&path, &signature.nonce), &body, now)
                .is_err()
        {
            return MerchantReply::NoAnswer("the answer's signature does not verify".into());
        }
        match serde_json::from_slice::<MerchantAnswer>(&body) {
            Ok(answer) if answer.order_id != details.order_id => {
                MerchantReply::NoAnswer("the answer is about another order".into())
            }
            Ok(answer) => match answer.decision() {
                Some(decision) => MerchantReply::Decided(decision),
                None if answer.decision == "pending" => MerchantReply::Pending,
                None => MerchantReply::NoAnswer(format!("unknown decision {:?}", answer.decision)),
            },
            Err(e) => MerchantReply::NoAnswer(format!("the answer is not a decision: {e}")),
        }
    }
}

impl MerchantClient {
    /// Delivers a signed webhook to `<product_server_url>/webhooks`; `Err` says why it must be retried.
    pub async fn webhook(&self, merchant: &Merchant, keys: &PartyKeys, body: &[u8], now: i64) -> Result<(), String> {
        let url = format!("{}/webhooks", merchant.product_server_url);
        let signature = Signature::create(&keys.key_id, &keys.signing, "POST", &url_path(&url), body, now);
        let mut request = self.http.post(&url).header("content-type", "application/json").body(body.to_vec());
        for (name, value) in signature.headers() {
            request = request.header(name, value);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("the product server answered {}", response.status())),
            Err(e) => Err(format!("the product server could not be reached: {e}")),
        }
    }
}

/// The path part of an absolute URL, which is what signatures cover.
pub fn url_path(url: &str) -> String {
    url.split("://").nth(1).and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned())).unwrap_or_else(|| "/".into())
}

impl Default for MerchantClient {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Key;

    #[test]
    fn an_order_opens_only_as_sealed() {
        let keys = PartyKeys::derive("m_1.k1", &Key::random());
        let details = OrderDetails {
            order_id: "o_1".into(),
            user: "alice".into(),
            product_id: "tea".into(),
            quantity: 2,
            amount: Money::parse("9.00", "USD").unwrap(),
            expires_at: 1_800_000_600,
            callback_path: "/merchant/orders/o_1/decision".into(),
        };
        let envelope = seal_order(&keys, &details, 1_800_000_000);
        assert_eq!(open_order(&keys, &envelope), Some(details.clone()));
        for tamper in [
            |e: &mut OrderEnvelope| e.order_id = "o_2".into(),
            |e: &mut OrderEnvelope| e.timestamp += 1,
            |e: &mut OrderEnvelope| e.key_id = "m_1.k2".into(),
        ] {
            let mut changed = envelope.clone();
            tamper(&mut changed);
            assert_eq!(open_order(&keys, &changed), None);
        }
        let other = PartyKeys::derive("m_1.k1", &Key::random());
        assert_eq!(open_order(&other, &envelope), None);
    }
}
