//! The purchase relay's protocol with a merchant's product server, over the merchant's signed
//! client (`crate::merchant::client`).
//!
//! We `POST <product_server_url>/orders` an `OrderEnvelope`: the order's details sealed with the
//! merchant's order-encryption key (AES-256-GCM; the associated data binds order id, key id and
//! timestamp), the request signed with its request-signing key (docs/design.md, "Signed calls").
//! The product server answers `MerchantAnswer` (`confirm`, `decline` or `pending`), signed over
//! method `RESPONSE` and the request's path and nonce, so an answer cannot be replayed onto another
//! request. `pending` (or no usable answer) leaves the order waiting for the signed callback
//! `POST /merchant/orders/{id}/decision` or its expiry.

use serde::{Deserialize, Serialize};

use super::Decision;
use crate::crypto::{Sealed, open, seal};
use crate::keys::PartyKeys;
use crate::merchant::Merchant;
use crate::merchant::client::MerchantClient;
use crate::money::Money;

/// The signed call this module makes (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = &[crate::openapi::WebhookDoc {
    name: "order.placed",
    summary: "to the merchant's product server, <product_server_url>/orders, signed with the merchant's key: a user's order, its details sealed with the merchant's order-encryption key, the amount already held; the server answers its decision, signed (pending, or no usable answer: the order waits for POST /merchant/orders/{id}/decision or its expiry)",
    body: crate::openapi::schema::<OrderEnvelope>,
    answer: Some(crate::openapi::schema::<MerchantAnswer>),
}];

/// What travels to the product server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OrderEnvelope {
    /// The merchant's key that signed the request and sealed the order.
    pub key_id: String,
    pub order_id: String,
    /// When it was sealed, Unix seconds.
    pub timestamp: i64,
    /// The order's details, sealed (AES-256-GCM) with the key HKDF derives from the merchant's
    /// secret for `superpay/v1/order-encryption`, over the associated data
    /// `superpay-order|<order_id>|<key_id>|<timestamp>`; `x-superpay-sealed` is what it opens to.
    #[cfg_attr(feature = "openapi", schemars(schema_with = "sealed_details"))]
    pub sealed: Sealed,
}

/// `Sealed`, naming what it opens to: the product server cannot read a sealed order otherwise.
#[cfg(feature = "openapi")]
fn sealed_details(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let sealed = generator.subschema_for::<Sealed>();
    let details = generator.subschema_for::<OrderDetails>();
    schemars::json_schema!({"allOf": [sealed], "x-superpay-sealed": details})
}

/// What the product server reads inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MerchantAnswer {
    /// The order's: an answer about another order is no answer.
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

/// What came back from the product server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MerchantReply {
    Decided(Decision),
    Pending,
    /// No usable answer (timeout, refused connection, garbage, bad signature): the order waits.
    NoAnswer(String),
}

/// Forwards the order `details` to the merchant's product server, sealed and signed, and reads its
/// signed answer.
pub async fn forward(
    client: &MerchantClient,
    merchant: &Merchant,
    keys: &PartyKeys,
    details: &OrderDetails,
    now: i64,
) -> MerchantReply {
    let body = serde_json::to_vec(&seal_order(keys, details, now)).unwrap_or_default();
    let answer = match client.exchange(merchant, "/orders", keys, body, now).await {
        Ok(answer) => answer,
        Err(e) => return MerchantReply::NoAnswer(e),
    };
    match serde_json::from_slice::<MerchantAnswer>(&answer) {
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
