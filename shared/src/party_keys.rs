//! Party keys behind one seam: the `KeyedParty` trait that merchants, terminals and mini-apps
//! implement in their own modules, and the admin work on a party's key (issue it at registration,
//! rotate it, end a rotation's grace), each audited and idempotent (docs/design.md, "Keys and
//! rotation").
//!
//! The KMS call (`crate::keys::KeyService`) and the DynamoDB write are kept apart: the write is
//! built here from the party's stored key alone and committed with its audit entry and the
//! idempotency record in one transaction. Whether a rotation may start, the grace's bounds and the
//! next key id are pure, and tested below.

use std::future::Future;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Update};
use lambda_http::http::{StatusCode, header as h};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::crypto::Key;
use crate::dynamo::{StoreError, Write, n, s, transact};
use crate::http::{body_bytes, json_body};
use crate::idempotency::store::{CLAIM_HELD, Claim, IdempotencyStore};
use crate::idempotency::{StoredResponse, in_flight};
use crate::keys::{KeyService, NewKey, PreviousKey, StoredKey};
use crate::problem::{Code, catalogue};

/// A party with a key of its own: it signs its calls with it and we sign ours to it. Its table has
/// partition `id` and keeps the key as `key_id`, `key_ciphertext` and, during a rotation's grace,
/// `previous_key_id`, `previous_key_ciphertext`, `previous_until` (`PreviousKey::from_item`).
pub trait KeyedParty {
    /// The audit actions of a rotation and of ending its grace (`merchant.rotate_key`, ...).
    const ROTATE_ACTION: &'static str;
    const END_GRACE_ACTION: &'static str;

    /// The party's id: its item's partition key.
    fn id(&self) -> &str;

    fn stored_key(&self) -> StoredKey<'_>;

    /// Whom KMS binds the key to (the encryption context's `owner`, e.g. `merchant/m_1`).
    fn kms_owner(&self) -> String;

    /// The audit log's partition for the party's key actions.
    fn audit_resource(&self) -> String;

    /// Where an admin reads the party: the `Location` of a key answer.
    fn location(&self) -> String;
}

/// The longest grace a rotation may give the previous key.
pub const MAX_ROTATION_GRACE_SECONDS: i64 = 7 * 24 * 3600;

/// How long a rotated-out key stays honoured unless the rotation says otherwise.
pub const DEFAULT_ROTATION_GRACE_SECONDS: i64 = 24 * 3600;

/// Rule: the party's previous key is still in its rotation's grace.
pub const GRACE_RUNNING: &str = "keys.grace_running";

/// Rule: the party's key is still the one the rotation read, and no earlier rotation is in its grace.
pub const NO_ROTATION_IN_GRACE: &str = "keys.no_rotation_in_grace";

/// A rotation's body (none: the default grace).
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "KeyRotation"))]
#[serde(deny_unknown_fields)]
struct RotationJson {
    /// How long the previous key stays honoured, in seconds: at most 7 days; absent or null, a day.
    #[serde(default, deserialize_with = "crate::http::optional_whole")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = MAX_ROTATION_GRACE_SECONDS)))]
    grace_seconds: Option<i64>,
}

/// A party's keys after a rotation, or after its grace was ended.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RotatedKey {
    /// The party's id.
    pub id: String,
    /// The current key's id.
    pub key_id: String,
    pub previous_key_id: String,
    /// Until when the previous key is honoured (Unix seconds): now, once its grace is ended.
    pub previous_valid_until: i64,
}

/// What the party's answer says of a new key (a registration's, a rotation's): the secret, base64,
/// in the first answer only; a replay of it carries `null` and a note instead.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "{V}WithSecret"))]
pub struct WithSecret<V> {
    #[serde(flatten)]
    pub party: V,
    /// The new key, base64; `null` in a replay (never kept in clear).
    pub secret: Option<String>,
    /// In a replay only: why `secret` is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_note: Option<&'static str>,
}

/// The grace a rotation request asks for (an empty body: the default).
pub fn requested_grace(request: &Request) -> Result<i64, Problem> {
    let RotationJson { grace_seconds } =
        if body_bytes(request).is_empty() { RotationJson { grace_seconds: None } } else { json_body(request)? };
    grace_within_bounds(grace_seconds)
}

/// `requested` seconds of grace (or the default), if from 1 s to `MAX_ROTATION_GRACE_SECONDS`.
pub fn grace_within_bounds(requested: Option<i64>) -> Result<i64, Problem> {
    let grace = requested.unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
    if !(1..=MAX_ROTATION_GRACE_SECONDS).contains(&grace) {
        return Err(Problem::new(
            catalogue::INVALID_GRACE_SECONDS,
            format!("grace_seconds must be from 1 to {MAX_ROTATION_GRACE_SECONDS}"),
        ));
    }
    Ok(grace)
}

fn rotation_in_progress(id: &str) -> Problem {
    Problem::new(
        catalogue::ROTATION_IN_PROGRESS,
        format!("{id} still honours its previous key; rotate again once its grace has ended"),
    )
}

fn no_rotation_in_grace(id: &str) -> Problem {
    Problem::new(
        catalogue::NO_ROTATION_IN_GRACE,
        format!("{id} honours no previous key: no rotation is in its grace, so there is none to end"),
    )
}

/// The key id after `key_id` (`m_1.k1` -> `m_1.k2`).
pub fn next_key_id(key_id: &str) -> Option<String> {
    let (owner, version) = key_id.rsplit_once(".k")?;
    let next = version.parse::<u32>().ok()?.checked_add(1)?;
    Some(format!("{owner}.k{next}"))
}

/// What a rotation of a party's key makes: the new key's id, and when the current key's grace ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationPlan {
    pub key_id: String,
    pub previous_until: i64,
}

/// Whether party `id`, holding `stored`, may rotate at `now` with `grace` seconds: not while an
/// earlier rotation's previous key is honoured, so a party has at most two keys at a time.
pub fn plan_rotation(id: &str, stored: &StoredKey<'_>, grace: i64, now: i64) -> Result<RotationPlan, Problem> {
    if let Some(previous) = PreviousKey::honoured(stored.previous, now) {
        return Err(rotation_in_progress(id).with("previous_valid_until", previous.until));
    }
    let key_id = next_key_id(stored.key_id)
        .ok_or_else(|| Problem::internal(format!("key id {} has no version", stored.key_id)))?;
    Ok(RotationPlan { key_id, previous_until: now + grace })
}

/// The previous key whose grace an admin may end at `now`: one still honoured.
pub fn grace_to_end<'a>(id: &str, stored: &StoredKey<'a>, now: i64) -> Result<&'a PreviousKey, Problem> {
    PreviousKey::honoured(stored.previous, now).ok_or_else(|| no_rotation_in_grace(id))
}

/// The write that makes `plan`'s key the key of `party` in `table` and keeps its current key as the
/// previous one until the plan's time: only if the current key is still the party's and no earlier
/// previous key is honoured at `now`.
pub fn rotation_write(
    table: &str,
    party: &impl KeyedParty,
    plan: &RotationPlan,
    new_ciphertext: Vec<u8>,
    now: i64,
) -> Result<Write, StoreError> {
    let current = party.stored_key();
    let update = Update::builder()
        .table_name(table)
        .key("id", s(party.id()))
        .update_expression(
            "SET key_id = :key_id, key_ciphertext = :ciphertext, previous_key_id = :current, previous_key_ciphertext = :current_ciphertext, previous_until = :until",
        )
        .condition_expression("key_id = :current AND (attribute_not_exists(previous_until) OR previous_until <= :now)")
        .expression_attribute_values(":key_id", s(&plan.key_id))
        .expression_attribute_values(":ciphertext", AttributeValue::B(Blob::new(new_ciphertext)))
        .expression_attribute_values(":current", s(current.key_id))
        .expression_attribute_values(":current_ciphertext", AttributeValue::B(Blob::new(current.ciphertext)))
        .expression_attribute_values(":until", n(plan.previous_until))
        .expression_attribute_values(":now", n(now))
        .build()?;
    Ok(Write::update(NO_ROTATION_IN_GRACE, update))
}

/// The write that ends the grace of `party`'s `previous` key now (a key suspected stolen need not
/// stay valid until its rotation's grace ends): only if that key is still the previous one and
/// still honoured, so it never touches a later rotation.
pub fn end_grace_write(
    table: &str,
    party: &impl KeyedParty,
    previous: &PreviousKey,
    now: i64,
) -> Result<Write, StoreError> {
    let update = Update::builder()
        .table_name(table)
        .key("id", s(party.id()))
        .update_expression("SET previous_until = :now")
        .condition_expression("previous_key_id = :previous AND previous_until > :now")
        .expression_attribute_values(":previous", s(&previous.key_id))
        .expression_attribute_values(":now", n(now))
        .build()?;
    Ok(Write::update(GRACE_RUNNING, update))
}

/// The documentation (`crate::openapi`) of a route that rotates a party's key, but for its `key`
/// and `codes`: the party's lookup's, `INVALID_GRACE_SECONDS` and `ROTATION_IN_PROGRESS`.
#[cfg(feature = "openapi")]
pub const ROTATION_DOC: crate::openapi::RouteDoc = crate::openapi::RouteDoc {
    key: "",
    summary: "rotate the party's key: the answer shows the new key once; the previous key stays honoured for the grace asked (a day unless said)",
    request: Some(crate::openapi::schema::<RotationJson>),
    path: &[],
    query: &[],
    answers: &[(201, Some(crate::openapi::schema::<WithSecret<RotatedKey>>))],
    codes: &[],
    headers: &[crate::openapi::Header::IdempotencyKey],
    form: None,
    pages: &[],
};

/// The documentation (`crate::openapi`) of a route that ends a rotation's grace, but for its `key`
/// and `codes`: the party's lookup's and `NO_ROTATION_IN_GRACE`.
#[cfg(feature = "openapi")]
pub const END_GRACE_DOC: crate::openapi::RouteDoc = crate::openapi::RouteDoc {
    key: "",
    summary: "end the previous key's grace now: from then on only the current key is honoured",
    request: None,
    path: &[],
    query: &[],
    answers: &[(200, Some(crate::openapi::schema::<RotatedKey>))],
    codes: &[],
    headers: &[crate::openapi::Header::IdempotencyKey],
    form: None,
    pages: &[],
};

/// A new key about to be committed (a registration or a rotation), and how the audit log and the
/// answer describe it.
pub struct KeyIssue<V> {
    pub resource: String,
    pub action: &'static str,
    pub view: V,
    pub location: String,
    /// The problem when the write's condition fails (its id exists, its key changed meanwhile).
    pub conflict: (&'static Code, String),
}

/// The conflict of a registration whose id exists: a retry after its idempotency record expired.
pub fn already_registered(code: &'static Code, id: &str) -> (&'static Code, String) {
    (code, format!("{id} was already registered with this Idempotency-Key"))
}

/// What an admin changes in a party's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// A new key, shown once; the answer kept for replays has no secret. The previous key stays
    /// honoured for the requested grace (default a day): the party may still sign with it, and we
    /// keep signing our calls to the party with it, so the party has that long to install the new one.
    Rotate,
    /// The previous key's grace ends now: from then on only the current key verifies, and we sign
    /// our calls to the party with that key. For a previous key that may have leaked, which a
    /// rotation alone leaves valid until its grace ends (up to 7 days).
    EndGrace,
}

/// Issues, rotates and ends the graces of parties' keys: the KMS adapter, and the transaction that
/// stores a key with its audit entry and its request's idempotency record.
#[derive(Clone)]
pub struct PartyKeyAdmin {
    dynamodb: aws_sdk_dynamodb::Client,
    kms: KeyService,
    idempotency: IdempotencyStore,
    audit_table: String,
}

impl PartyKeyAdmin {
    /// The admin of the keys of an admin route table's parties, on its store and audit log
    /// (`crate::admin::Admin`), with the KMS key the environment names.
    pub fn from_env(
        config: &aws_config::SdkConfig,
        dynamodb: aws_sdk_dynamodb::Client,
        idempotency: IdempotencyStore,
        audit_table: String,
    ) -> Result<Self, MissingEnv> {
        let kms = KeyService::new(aws_sdk_kms::Client::new(config), aws::env("PARTY_KEYS_KEY_ID")?);
        Ok(PartyKeyAdmin { dynamodb, kms, idempotency, audit_table })
    }

    /// A fresh master key for `owner` (a party being registered).
    pub async fn generate(&self, owner: &str) -> Result<NewKey, Problem> {
        Ok(self.kms.generate(owner).await?)
    }

    /// Makes `change` to the key of the party `read` returns, read inside the key's run so that a
    /// replay answers as the first time.
    pub async fn change<P, F, Fut>(
        &self,
        change: KeyChange,
        request: &Request,
        caller: &Caller,
        table: &str,
        read: F,
    ) -> Result<Response<Body>, Problem>
    where
        P: KeyedParty,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<P, Problem>>,
    {
        // A rotation's grace is checked before the key is claimed, so a refused one claims nothing.
        let grace = match change {
            KeyChange::Rotate => Some(requested_grace(request)?),
            KeyChange::EndGrace => None,
        };
        self.idempotency
            .run_request(request, &caller.subject, &[], |claim, now| async move {
                let party = read().await?;
                let current = party.stored_key();
                match grace {
                    // A rotation, the one change with a grace.
                    Some(grace) => {
                        let plan = plan_rotation(party.id(), &current, grace, now)?;
                        let key = self.kms.generate(&party.kms_owner()).await?;
                        let write = rotation_write(table, &party, &plan, key.ciphertext, now)?;
                        let issued = KeyIssue {
                            resource: party.audit_resource(),
                            action: P::ROTATE_ACTION,
                            view: RotatedKey {
                                id: party.id().to_owned(),
                                key_id: plan.key_id,
                                previous_key_id: current.key_id.to_owned(),
                                previous_valid_until: plan.previous_until,
                            },
                            location: party.location(),
                            conflict: (
                                catalogue::ROTATION_IN_PROGRESS,
                                "the key changed meanwhile; read it again and retry".into(),
                            ),
                        };
                        self.commit_new_key(&claim, now, issued, &key.key, write).await
                    }
                    None => {
                        let previous = grace_to_end(party.id(), &current, now)?;
                        let ended = RotatedKey {
                            id: party.id().to_owned(),
                            key_id: current.key_id.to_owned(),
                            previous_key_id: previous.key_id.clone(),
                            previous_valid_until: now,
                        };
                        let response = crate::http::json_response(StatusCode::OK, &ended);
                        let detail = serde_json::to_value(&ended).map_err(Problem::internal)?;
                        let audit =
                            AuditEntry::now(party.audit_resource(), P::END_GRACE_ACTION, &claim.scope.caller, detail);
                        let items = vec![
                            end_grace_write(table, &party, previous, now)?,
                            audit.put_item(&self.audit_table, &claim.scope.derived_id("audit"))?,
                            self.idempotency.complete_item(&claim, &StoredResponse::from_response(&response), now)?,
                        ];
                        match transact(&self.dynamodb, items).await {
                            Ok(()) => Ok(response),
                            // The grace ended meanwhile (its time came, or another call ended it).
                            Err(e) if e.broke(GRACE_RUNNING) => Err(no_rotation_in_grace(party.id())),
                            Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
                            Err(e) => Err(Problem::internal(e)),
                        }
                    }
                }
            })
            .await
    }

    /// Commits the write that stores the new key (first), its audit entry, and an idempotency
    /// record that keeps the answer without the secret: a secret shown once is never kept in clear.
    pub async fn commit_new_key<V: Serialize>(
        &self,
        claim: &Claim,
        now: i64,
        issued: KeyIssue<V>,
        secret: &Key,
        write: Write,
    ) -> Result<Response<Body>, Problem> {
        let detail = serde_json::to_value(&issued.view).map_err(Problem::internal)?;
        let mut answer = WithSecret {
            party: issued.view,
            secret: None,
            secret_note: Some("the secret is shown only in the first answer; it is not stored in clear"),
        };
        let respond = |body: &WithSecret<V>| {
            let mut response = crate::http::json_response(StatusCode::CREATED, body);
            if let Ok(value) = h::HeaderValue::from_str(&issued.location) {
                response.headers_mut().insert(h::LOCATION, value);
            }
            response
        };
        let audit = AuditEntry::now(issued.resource, issued.action, &claim.scope.caller, detail);
        let key_rule = write.rule;
        let items = vec![
            write,
            audit.put_item(&self.audit_table, &claim.scope.derived_id("audit"))?,
            self.idempotency.complete_item(claim, &StoredResponse::from_response(&respond(&answer)), now)?,
        ];
        match transact(&self.dynamodb, items).await {
            Ok(()) => {
                // The first answer, the only one that shows the secret.
                answer.secret = Some(secret.to_base64().expose().clone());
                answer.secret_note = None;
                Ok(respond(&answer))
            }
            Err(e) if e.broke(key_rule) => Err(Problem::new(issued.conflict.0, issued.conflict.1)),
            Err(e) if e.broke(CLAIM_HELD) => Err(in_flight()),
            Err(e) => Err(Problem::internal(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn previous(until: i64) -> PreviousKey {
        PreviousKey { key_id: "m_1.k1".into(), ciphertext: vec![], until }
    }

    fn stored<'a>(key_id: &'a str, previous: Option<&'a PreviousKey>) -> StoredKey<'a> {
        StoredKey { key_id, ciphertext: &[], previous }
    }

    #[test]
    fn key_ids_count_up() {
        assert_eq!(next_key_id("m_1.k1").as_deref(), Some("m_1.k2"));
        assert_eq!(next_key_id("m_a.b.k9").as_deref(), Some("m_a.b.k10"));
        assert_eq!(next_key_id("m_1"), None);
        assert_eq!(next_key_id("m_1.kx"), None);
    }

    #[test]
    fn a_grace_is_a_day_unless_asked_and_at_most_a_week() {
        assert_eq!(grace_within_bounds(None), Ok(DEFAULT_ROTATION_GRACE_SECONDS));
        assert_eq!(grace_within_bounds(Some(1)), Ok(1));
        assert_eq!(grace_within_bounds(Some(MAX_ROTATION_GRACE_SECONDS)), Ok(MAX_ROTATION_GRACE_SECONDS));
        for refused in [0, -1, MAX_ROTATION_GRACE_SECONDS + 1] {
            assert_eq!(grace_within_bounds(Some(refused)).unwrap_err().code, "invalid_grace_seconds", "{refused}");
        }
    }

    #[test]
    fn a_grace_is_a_whole_number_of_seconds_as_json_writes_it() {
        let read = |body: &str| serde_json::from_str::<RotationJson>(body).map(|r| r.grace_seconds).ok();
        assert_eq!(read(r#"{"grace_seconds": 60}"#), Some(Some(60)));
        assert_eq!(read(r#"{"grace_seconds": 60.0}"#), Some(Some(60)), "the document's integer");
        assert_eq!(read(r#"{"grace_seconds": null}"#), Some(None));
        assert_eq!(read("{}"), Some(None));
        for refused in ["60.5", "\"60\"", "-1"] {
            assert_eq!(read(&format!(r#"{{"grace_seconds": {refused}}}"#)), None, "{refused}");
        }
    }

    #[test]
    fn a_new_key_is_shown_in_the_first_answer_and_a_replay_says_why_not() {
        let rotated = || RotatedKey {
            id: "m_1".into(),
            key_id: "m_1.k2".into(),
            previous_key_id: "m_1.k1".into(),
            previous_valid_until: 160,
        };
        let keys = json!({"id": "m_1", "key_id": "m_1.k2", "previous_key_id": "m_1.k1", "previous_valid_until": 160});
        let mut shown = keys.clone();
        shown["secret"] = json!("c2VjcmV0");
        let first = WithSecret { party: rotated(), secret: Some("c2VjcmV0".into()), secret_note: None };
        assert_eq!(serde_json::to_value(first).ok(), Some(shown));
        let mut kept = keys;
        kept["secret"] = json!(null);
        kept["secret_note"] = json!("not stored");
        let replay = WithSecret { party: rotated(), secret: None, secret_note: Some("not stored") };
        assert_eq!(serde_json::to_value(replay).ok(), Some(kept));
    }

    #[test]
    fn a_rotation_waits_for_the_previous_grace_to_end() {
        let running = previous(100);
        let refused = plan_rotation("m_1", &stored("m_1.k2", Some(&running)), 60, 99).unwrap_err();
        assert_eq!(refused.code, "rotation_in_progress");
        assert_eq!(refused.extensions.get("previous_valid_until"), Some(&json!(100)));
        let plan = plan_rotation("m_1", &stored("m_1.k2", Some(&running)), 60, 100).unwrap();
        assert_eq!(plan, RotationPlan { key_id: "m_1.k3".into(), previous_until: 160 });
        assert_eq!(plan_rotation("m_1", &stored("m_1.k1", None), 60, 0).unwrap().key_id, "m_1.k2");
        assert!(plan_rotation("m_1", &stored("m_1", None), 60, 0).unwrap_err().is_server_error());
    }

    #[test]
    fn only_a_grace_still_running_can_be_ended() {
        let running = previous(100);
        assert_eq!(grace_to_end("m_1", &stored("m_1.k2", Some(&running)), 99), Ok(&running));
        assert_eq!(
            grace_to_end("m_1", &stored("m_1.k2", Some(&running)), 100).unwrap_err().code,
            "no_rotation_in_grace"
        );
        assert_eq!(grace_to_end("m_1", &stored("m_1.k1", None), 0).unwrap_err().code, "no_rotation_in_grace");
    }
}
