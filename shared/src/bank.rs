//! The bank port: asks a user's bank for money (a debit: to fund an offline reserve, or a cash-in
//! to the wallet) or to pay money out to a bank account (a cash-out), and for a payout's status.
//!
//! The bank is a signed partner like every other (`crate::outbound`: no redirects, public addresses
//! only, answers up to 64 KB): we `POST {BANK_URL}/debits` or `/payouts` a `BankRequest`, or
//! `/payouts/status` a `StatusRequest`, signed with the bank's key, and the bank answers 200 with a
//! `BankReply` signed with the same key over method `RESPONSE` and the request's path and nonce.
//! A debit and a payout are each idempotent by their reference: asking again answers the first
//! outcome. A payout's status is final once asked: a reference the bank never received is answered
//! declined and stays so, so a payout that arrives after its status was asked is declined too (our
//! hold is released on that answer, and the money must not also leave). An answer that is not
//! signed so, cannot be read or is about another reference is an unknown outcome (`Unavailable`:
//! asked again later with the same reference), never an approval. `BANK_URL` must be https unless
//! plain http partners are allowed (the local stack).
//!
//! The bank's key is a 256-bit secret we share with the bank, named by template parameter
//! `BankKeyId`. It is kept as template parameter `BankKeyCiphertext`: base64 KMS ciphertext under
//! `PartyKeysKey`, encryption context `owner=bank` (`BANK_KEY_OWNER`), the envelope of every party
//! key (`crate::keys`), so the clear key is in no parameter, log or file; each process unwraps it
//! once, on its first call. Locally the stack makes a fresh one at each start and gives it to the
//! simulated bank (`infra/merchant-sim`, `/bank/...`), which declines accounts starting with `broke`
//! or ending in `0002`.

use aws_config::SdkConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::http::partner_url;
use crate::keys::{KeyRing, KeyService, PartyKeys};
use crate::money::Money;
use crate::outbound::{AddressPolicy, CallError, PartnerClient};

/// The owner the bank's key is bound to (its KMS encryption context, `owner=bank`).
pub const BANK_KEY_OWNER: &str = "bank";

/// The longest decline reason we show the payer.
const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankAnswer {
    Approved,
    Declined(String),
    /// No verified answer (down, timeout, unsigned or unreadable answer): the outcome is unknown;
    /// asking again with the same reference is safe.
    Unavailable(String),
}

/// The signed calls this module makes (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const WEBHOOKS: &[crate::openapi::WebhookDoc] = {
    use crate::openapi::{WebhookDoc, schema};
    &[
        WebhookDoc {
            name: "bank.debit",
            summary: "to the bank, <BankUrl>/debits, signed with the bank's key: take the amount from the account (an offline reserve's top-up, a cash-in, a linked partner's charge); asking again with the same reference answers the first outcome, and an unknown outcome is asked again",
            body: schema::<BankRequest>,
            answer: Some(schema::<BankReply>),
        },
        WebhookDoc {
            name: "bank.payout",
            summary: "to the bank, <BankUrl>/payouts, signed with the bank's key: pay the amount out to the account (a cash-out, a partner's charge paid back), approved meaning paid; asking again with the same reference answers the first outcome, and an unknown outcome is asked as bank.payout_status",
            body: schema::<BankRequest>,
            answer: Some(schema::<BankReply>),
        },
        WebhookDoc {
            name: "bank.payout_status",
            summary: "to the bank, <BankUrl>/payouts/status, signed with the bank's key: what became of a payout whose answer we did not get; final once asked (a reference the bank never received is declined, and stays so)",
            body: schema::<StatusRequest>,
            answer: Some(schema::<BankReply>),
        },
    ]
};

/// A debit (money from `account` to us) or a payout (from us to `account`). `account` is the
/// bank's name for it: a user id for a reserve's top-up, a card number or an IBAN for an
/// instrument.
// Never logged: this type has no `Debug`.
#[derive(Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct BankRequest {
    /// Ours, one per movement: the bank moves a reference once.
    pub reference: String,
    pub account: String,
    pub amount: Money,
}

/// What became of a payout: asked by its reference alone.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct StatusRequest {
    pub reference: String,
}

/// The bank's signed answer about one reference (a payout `approved` has been paid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct BankReply {
    /// The request's reference: an answer about another reference is not an answer.
    pub reference: String,
    pub status: ReplyStatus,
    /// Why it was declined, shown to the payer (its first 200 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    Approved,
    Declined,
}

pub struct Bank {
    /// Without a trailing slash.
    url: String,
    /// `None` until the deployment sets `BankKeyCiphertext` (it needs the stack's `PartyKeysKey`
    /// first, README "Deploying"): every call is then `Unavailable`, and nothing moves.
    key: Option<BankKey>,
    partner: PartnerClient,
}

struct BankKey {
    id: String,
    ciphertext: Vec<u8>,
    ring: KeyRing,
}

impl Bank {
    /// The bank of template.yaml's `BankUrl` and `BankKeyCiphertext`; refuses to start on a plain http `BANK_URL`
    /// where plain http partners are not allowed, or on a key that is not base64.
    pub fn from_env(config: &SdkConfig) -> Result<Self, MissingEnv> {
        let allow_http = aws::env("ALLOW_PLAIN_HTTP_PARTNERS")? == "true";
        let url = aws::env("BANK_URL")?;
        let url = partner_url(&url, allow_http)
            .ok_or_else(|| {
                MissingEnv(format!(
                    "BANK_URL (an https URL: plain http only where AllowPlainHttpPartners is true; it is {url:?})"
                ))
            })?
            .trim_end_matches('/')
            .to_owned();
        let ciphertext = aws::env("BANK_KEY_CIPHERTEXT")?;
        let key = match ciphertext.trim() {
            "" => {
                tracing::error!(
                    "BankKeyCiphertext is not set: every call to the bank will answer that it could not be asked"
                );
                None
            }
            ciphertext => Some(BankKey {
                id: Some(aws::env("BANK_KEY_ID")?)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| MissingEnv("BANK_KEY_ID (the id of the key BankKeyCiphertext holds)".into()))?,
                ciphertext: BASE64.decode(ciphertext).map_err(|_| {
                    MissingEnv(
                        "BANK_KEY_CIPHERTEXT (the bank's key: base64 KMS ciphertext, README \"Deploying\")".into(),
                    )
                })?,
                ring: KeyRing::new(KeyService::new(aws_sdk_kms::Client::new(config), aws::env("PARTY_KEYS_KEY_ID")?)),
            }),
        };
        Ok(Bank { url, key, partner: PartnerClient::new(AddressPolicy { allow_loopback: allow_http }) })
    }

    /// Takes `amount` from `account` (approved: the money is ours).
    pub async fn debit(&self, reference: &str, account: &str, amount: Money) -> BankAnswer {
        let request = BankRequest { reference: reference.to_owned(), account: account.to_owned(), amount };
        self.call("debits", reference, &serde_json::to_vec(&request).unwrap_or_default()).await
    }

    /// Pays `amount` out to `account` (approved: paid).
    pub async fn payout(&self, reference: &str, account: &str, amount: Money) -> BankAnswer {
        let request = BankRequest { reference: reference.to_owned(), account: account.to_owned(), amount };
        self.call("payouts", reference, &serde_json::to_vec(&request).unwrap_or_default()).await
    }

    /// What became of payout `reference`, for good (see the module comment).
    pub async fn payout_status(&self, reference: &str) -> BankAnswer {
        let request = StatusRequest { reference: reference.to_owned() };
        self.call("payouts/status", reference, &serde_json::to_vec(&request).unwrap_or_default()).await
    }

    async fn call(&self, path: &str, reference: &str, body: &[u8]) -> BankAnswer {
        let Some(key) = &self.key else {
            return BankAnswer::Unavailable(
                "the bank's key is not configured (template parameter BankKeyCiphertext)".into(),
            );
        };
        let keys = match key.ring.keys(&key.id, BANK_KEY_OWNER, &key.ciphertext).await {
            Ok(keys) => keys,
            Err(e) => return BankAnswer::Unavailable(format!("the bank's key could not be unwrapped: {e}")),
        };
        ask(&self.partner, &format!("{}/{path}", self.url), &keys, reference, body, now_epoch_seconds()).await
    }
}

/// Asks the bank at `url` about `reference`, signed with `keys`: what its verified answer says.
async fn ask(
    partner: &PartnerClient,
    url: &str,
    keys: &PartyKeys,
    reference: &str,
    body: &[u8],
    now: i64,
) -> BankAnswer {
    judge(reference, partner.exchange(url, keys, body.to_vec(), now).await)
}

/// What the bank's answer about `reference` means: only a verified, readable answer about this
/// reference approves or declines it; anything else leaves its outcome unknown.
pub fn judge(reference: &str, answer: Result<Vec<u8>, CallError>) -> BankAnswer {
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return BankAnswer::Unavailable(format!("the bank: {e}")),
    };
    match serde_json::from_slice::<BankReply>(&answer) {
        Ok(answer) if answer.reference != reference => {
            BankAnswer::Unavailable(format!("the bank answered about {:?}", answer.reference))
        }
        Ok(BankReply { status: ReplyStatus::Approved, .. }) => BankAnswer::Approved,
        Ok(BankReply { status: ReplyStatus::Declined, reason, .. }) => BankAnswer::Declined(
            reason.map_or_else(|| "declined by the bank".into(), |r| r.chars().take(MAX_REASON_CHARS).collect()),
        ),
        Err(e) => BankAnswer::Unavailable(format!("the bank's answer is not a bank reply: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::{IntoResponse, Response};

    use super::*;
    use crate::crypto::{Key, Signature};
    use crate::outbound::tests::local_server;
    use crate::outbound::{MAX_ANSWER_BYTES, answer_path};

    const NOW: i64 = 1_800_000_000;

    fn answer(reference: &str, status: ReplyStatus, reason: Option<&str>) -> Vec<u8> {
        let answer = BankReply { reference: reference.into(), status, reason: reason.map(Into::into) };
        serde_json::to_vec(&answer).expect("JSON")
    }

    #[test]
    fn only_a_verified_answer_about_this_debit_decides_it() {
        let approved = answer("t_1", ReplyStatus::Approved, None);
        assert_eq!(judge("t_1", Ok(approved.clone())), BankAnswer::Approved);
        assert_eq!(
            judge("t_1", Ok(answer("t_1", ReplyStatus::Declined, Some("insufficient funds")))),
            BankAnswer::Declined("insufficient funds".into())
        );
        assert_eq!(
            judge("t_1", Ok(answer("t_1", ReplyStatus::Declined, None))),
            BankAnswer::Declined("declined by the bank".into())
        );
        let long = "x".repeat(1000);
        let BankAnswer::Declined(reason) = judge("t_1", Ok(answer("t_1", ReplyStatus::Declined, Some(&long)))) else {
            panic!("a decline")
        };
        assert_eq!(reason.len(), MAX_REASON_CHARS);
        for unknown in [
            judge("t_2", Ok(approved)),
            judge("t_1", Ok(br#"{"reference":"t_1","status":"approved-ish"}"#.to_vec())),
            judge("t_1", Ok(b"<html>approved</html>".to_vec())),
            judge("t_1", Err(CallError::BadSignature)),
            judge("t_1", Err(CallError::Unsigned("header x-superpay-signature is missing".into()))),
            judge("t_1", Err(CallError::Status(307))),
            judge("t_1", Err(CallError::Refused("10.0.0.1 is a private address".into()))),
        ] {
            assert!(matches!(unknown, BankAnswer::Unavailable(_)), "{unknown:?}");
        }
    }

    /// A bank that checks our signature with `keys` and answers by the account's first word:
    /// `declined` declines; `forged` approves signed with another key, `unsigned` without a
    /// signature, `replayed` bound to another request's nonce, `huge` over the size limit, `moved`
    /// redirects; anything else approves, signed as it must be.
    async fn bank(keys: Arc<PartyKeys>) -> String {
        let app = axum::Router::new().route(
            "/bank/debits",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| async move { debits(&keys, &headers, &body) }),
        );
        format!("http://{}/bank", local_server(app).await)
    }

    fn debits(keys: &PartyKeys, headers: &HeaderMap, body: &[u8]) -> Response {
        let Ok(ours) = Signature::from_headers(|name| headers.get(name).and_then(|v| v.to_str().ok())) else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        if ours.key_id != keys.key_id || ours.check(&keys.signing, "POST", "/bank/debits", body, NOW).is_err() {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let request: BankRequest = serde_json::from_slice(body).expect("a debit request");
        let rule = request.account.split('-').next().unwrap_or_default();
        let huge = "x".repeat(MAX_ANSWER_BYTES);
        let (status, reason) = match rule {
            "declined" => (ReplyStatus::Declined, Some("insufficient funds")),
            "huge" => (ReplyStatus::Declined, Some(huge.as_str())),
            _ => (ReplyStatus::Approved, None),
        };
        let body = answer(&request.reference, status, reason);
        let (signing, nonce) = match rule {
            "forged" => (Key::random(), ours.nonce),
            "replayed" => (keys.signing.clone(), "0123456789abcdef".to_owned()),
            _ => (keys.signing.clone(), ours.nonce),
        };
        let signature =
            Signature::create(&keys.key_id, &signing, "RESPONSE", &answer_path("/bank/debits", &nonce), &body, NOW);
        match rule {
            "unsigned" => body.into_response(),
            "moved" => (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/bank/debits")]).into_response(),
            _ => {
                let mut response = body.into_response();
                for (name, value) in signature.headers() {
                    response.headers_mut().insert(name, value.parse().expect("a header value"));
                }
                response
            }
        }
    }

    async fn debit(url: &str, keys: &PartyKeys, account: &str) -> BankAnswer {
        let request = BankRequest {
            reference: format!("t_{account}"),
            account: account.into(),
            amount: Money::parse("7.00", "USD").expect("an amount"),
        };
        let body = serde_json::to_vec(&request).expect("JSON");
        let client = PartnerClient::new(AddressPolicy { allow_loopback: true });
        ask(&client, &format!("{url}/debits"), keys, &request.reference, &body, NOW).await
    }

    #[tokio::test]
    async fn only_an_answer_signed_by_the_bank_for_this_request_approves() {
        let keys = Arc::new(PartyKeys::derive("bank.k1", &Key::random()));
        let url = bank(keys.clone()).await;
        assert_eq!(debit(&url, &keys, "alice").await, BankAnswer::Approved);
        assert_eq!(debit(&url, &keys, "declined-bob").await, BankAnswer::Declined("insufficient funds".into()));
        for account in ["forged-carol", "unsigned-dan", "replayed-erin", "huge-frank", "moved-grace"] {
            let answer = debit(&url, &keys, account).await;
            assert!(matches!(answer, BankAnswer::Unavailable(_)), "{account}: {answer:?}");
        }
        // The bank refuses what we did not sign with its key: no approval either.
        let other = PartyKeys::derive("bank.k1", &Key::random());
        assert!(matches!(debit(&url, &other, "alice").await, BankAnswer::Unavailable(_)));
    }
}
