//! Idempotency keys (docs/design.md, "Idempotency"): scoped to the caller and the route; a replay
//! returns the first response; the same key with another body is refused; a concurrent duplicate
//! gets 409.
//!
//! This module is the pure part: key validation, request fingerprints, and the decision taken on
//! what the store already holds. `store` is the DynamoDB adapter.

pub mod store;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lambda_http::{Body, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Problem;
use crate::problem::catalogue;

/// How long a first attempt may run before a retry may take over its key (a crashed Lambda).
pub const IN_PROGRESS_SECONDS: i64 = 60;
/// How long a finished response is replayed. Ids derived from the key keep money safe beyond it.
pub const RETENTION_SECONDS: i64 = 24 * 60 * 60;

/// A client's `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(header: Option<&str>) -> Result<Self, Problem> {
        let key = header.ok_or_else(|| {
            Problem::new(catalogue::IDEMPOTENCY_KEY_MISSING,
                "this route creates something: send an Idempotency-Key header (e.g. a UUID) and reuse it when you retry",
            )
        })?;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Problem::new(
                catalogue::IDEMPOTENCY_KEY_INVALID,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(IdempotencyKey(key.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One key of one caller on one route: the unit of idempotency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub caller: String,
    pub route: String,
    pub key: IdempotencyKey,
}

impl Scope {
    /// The record's id: a hash, so no separator inside a caller id or key can make two scopes collide.
    pub fn record_id(&self) -> String {
        let mut hash = Sha256::new();
        for part in [self.caller.as_str(), self.route.as_str(), self.key.as_str()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        hex::encode(hash.finalize())
    }

    /// An id for what this request creates, stable across retries of the same key, so that even a
    /// retry after the record expired cannot create (or pay) twice.
    pub fn derived_id(&self, what: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(self.record_id().as_bytes());
        hash.update(what.as_bytes());
        hex::encode(&hash.finalize()[..16])
    }
}

/// What identifies "the same request": the method, the path and the exact body bytes, plus any
/// headers the route treats as input (e.g. `If-Match`).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(hash.finalize())
}

/// A response kept for replay: what the client saw the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// `body` is base64 of a binary body.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub base64: bool,
}

/// The headers worth replaying; hop-by-hop and per-attempt headers are not.
const REPLAYED_HEADERS: &[&str] = &["content-type", "etag", "location"];

impl StoredResponse {
    pub fn from_response(response: &Response<Body>) -> Self {
        let (body, base64) = match response.body() {
            Body::Text(text) => (text.clone(), false),
            Body::Binary(bytes) => (BASE64.encode(bytes), true),
            _ => (String::new(), false),
        };
        let headers = REPLAYED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        StoredResponse { status: response.status().as_u16(), headers, body, base64 }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut builder = Response::builder().status(self.status).header("idempotent-replayed", "true");
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = match self.base64 {
            true => Body::Binary(BASE64.decode(&self.body).unwrap_or_default()),
            false if self.body.is_empty() => Body::Empty,
            false => Body::Text(self.body),
        };
        builder.body(body).unwrap_or_else(|e| Problem::internal(e).to_response())
    }
}

/// What the store holds under a scope's record id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    InProgress { fingerprint: String, lock_expires_at: i64, expires_at: i64 },
    Completed { fingerprint: String, response: StoredResponse, expires_at: i64 },
}

/// What to do with a request given the record its key already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No live record: this request owns the key and runs.
    Proceed,
    /// Same request, already answered: send the first answer again.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
    /// The same request is running right now.
    InFlight,
}

pub fn decide(existing: Option<&Record>, fingerprint: &str, now: i64) -> Decision {
    match existing {
        None => Decision::Proceed,
        Some(Record::Completed { expires_at, .. } | Record::InProgress { expires_at, .. }) if *expires_at <= now => {
            Decision::Proceed
        }
        Some(Record::Completed { fingerprint: f, .. } | Record::InProgress { fingerprint: f, .. })
            if f != fingerprint =>
        {
            Decision::Mismatch
        }
        Some(Record::Completed { response, .. }) => Decision::Replay(response.clone()),
        Some(Record::InProgress { lock_expires_at, .. }) if *lock_expires_at <= now => Decision::Proceed,
        Some(Record::InProgress { .. }) => Decision::InFlight,
    }
}

impl Decision {
    /// The refusal a client gets for a key it cannot use now.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            Decision::Mismatch => Some(key_reused()),
            Decision::InFlight => Some(in_flight()),
            Decision::Proceed | Decision::Replay(_) => None,
        }
    }
}

/// The key was used for another request: also what a key reused after its record expired gets
/// when what it created differs from this request.
pub fn key_reused() -> Problem {
    Problem::new(
        catalogue::IDEMPOTENCY_KEY_REUSED,
        "this Idempotency-Key was already used for a different request; use a new key for a new request",
    )
}

/// Another attempt with the same key runs (or took this attempt's claim over).
pub fn in_flight() -> Problem {
    Problem::new(
        catalogue::IDEMPOTENCY_REQUEST_IN_PROGRESS,
        "a request with this Idempotency-Key is still being processed; retry shortly",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn response() -> StoredResponse {
        StoredResponse { status: 201, headers: vec![], body: "{}".into(), base64: false }
    }

    #[test]
    fn decisions_follow_the_record() {
        let now = 1_000;
        let done = Record::Completed { fingerprint: "a".into(), response: response(), expires_at: now + 10 };
        let running = Record::InProgress { fingerprint: "a".into(), lock_expires_at: now + 5, expires_at: now + 10 };
        let abandoned = Record::InProgress { fingerprint: "a".into(), lock_expires_at: now, expires_at: now + 10 };
        let expired = Record::Completed { fingerprint: "b".into(), response: response(), expires_at: now };
        assert_eq!(decide(None, "a", now), Decision::Proceed);
        assert_eq!(decide(Some(&done), "a", now), Decision::Replay(response()));
        assert_eq!(decide(Some(&done), "b", now), Decision::Mismatch);
        assert_eq!(decide(Some(&running), "a", now), Decision::InFlight);
        assert_eq!(decide(Some(&running), "b", now), Decision::Mismatch);
        assert_eq!(decide(Some(&abandoned), "a", now), Decision::Proceed);
        assert_eq!(decide(Some(&expired), "a", now), Decision::Proceed);
        assert_eq!(Decision::InFlight.problem().unwrap().status().as_u16(), 409);
        assert_eq!(Decision::Mismatch.problem().unwrap().status().as_u16(), 422);
    }

    #[test]
    fn a_stored_response_replays_status_body_and_chosen_headers() {
        let original = Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("etag", "\"4\"")
            .header("x-request-id", "not replayed")
            .body(Body::Text("{\"version\":4}".into()))
            .unwrap();
        let replay = StoredResponse::from_response(&original).into_response();
        assert_eq!(replay.status(), 201);
        assert_eq!(replay.headers()["etag"], "\"4\"");
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert!(replay.headers().get("x-request-id").is_none());
        assert_eq!(replay.body(), &Body::Text("{\"version\":4}".into()));
        let binary = Response::builder().status(200).body(Body::Binary(vec![0, 159, 146, 150])).unwrap();
        let stored = StoredResponse::from_response(&binary);
        let back: StoredResponse = serde_json::from_str(&serde_json::to_string(&stored).unwrap()).unwrap();
        assert_eq!(back.into_response().body(), &Body::Binary(vec![0, 159, 146, 150]));
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(IdempotencyKey::parse(None).unwrap_err().code, "idempotency_key_missing");
        for bad in ["", "has space", "é", &"k".repeat(256)] {
            assert_eq!(IdempotencyKey::parse(Some(bad)).unwrap_err().code, "idempotency_key_invalid", "{bad:?}");
        }
        assert_eq!(IdempotencyKey::parse(Some("4f1c-9")).unwrap().as_str(), "4f1c-9");
    }

    proptest! {
        #[test]
        fn scopes_differing_in_any_part_never_share_a_record(
            a in "[a-z#]{0,6}", b in "[a-z#]{0,6}", c in "[a-z#]{1,6}",
            x in "[a-z#]{0,6}", y in "[a-z#]{0,6}", z in "[a-z#]{1,6}",
        ) {
            let scope = |caller: &str, route: &str, key: &str| Scope {
                caller: caller.into(), route: route.into(), key: IdempotencyKey::parse(Some(key)).unwrap(),
            };
            let same = (a.as_str(), b.as_str(), c.as_str()) == (x.as_str(), y.as_str(), z.as_str());
            prop_assert_eq!(scope(&a, &b, &c).record_id() == scope(&x, &y, &z).record_id(), same);
        }
    }
}
