//! The idempotency store's DynamoDB adapter.
//!
//! `begin` claims a key with one conditional PutItem; on a failed condition the old item comes back
//! with the error (ReturnValuesOnConditionCheckFailure), so a replay costs one call, not two.
//! A route's success response is written by `complete_item` inside the route's own transaction, so
//! the business change and its recorded answer commit together or not at all. A route whose
//! refusals come from reads alone checks before it claims (`run_checked`): its refusal is then
//! recorded by one conditional transaction, not a claim and a completion.

use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{Put, ReturnValuesOnConditionCheckFailure};
use lambda_http::{Body, Request, Response};

use super::{
    Decision, IN_PROGRESS_SECONDS, IdempotencyKey, RETENTION_SECONDS, Record, Scope, StoredResponse, decide,
    fingerprint,
};
use crate::Problem;
use crate::clock::now_epoch_seconds;
use crate::crypto::{Key, TokenPurpose, keyed_token};
use crate::dynamo::{Item, StoreError, TransactError, Write, get_n, get_s, n, s, transact};
use crate::http::{body_bytes, header, route_key};

/// Rule: this attempt still holds the key's claim (no other attempt took it over).
pub const CLAIM_HELD: &str = "idempotency.claim_held";
/// Rule: the key is free for a refusal checked before any claim (`run_checked`).
const KEY_FREE: &str = "idempotency.key_free";

#[derive(Clone, Debug)]
pub struct IdempotencyStore {
    client: Client,
    table: String,
}

/// The right to run a request under a key, held between `begin` and the route's transaction.
/// `claim_id` is this attempt's own: if its lock expired and a retry took the key over, nothing
/// this attempt writes later (complete, release) can touch the retry's record.
#[derive(Debug, Clone)]
pub struct Claim {
    pub scope: Scope,
    record_id: String,
    fingerprint: String,
    claim_id: String,
}

impl Claim {
    /// A new attempt's claim on `scope`'s key, for the request `fingerprint` identifies.
    fn new(scope: Scope, fingerprint: String) -> Self {
        let record_id = scope.record_id();
        Claim { scope, record_id, fingerprint, claim_id: uuid::Uuid::new_v4().to_string() }
    }
}

/// `$request` (a PutItem or a transaction's Put) on the condition that the key is free at `$now`
/// for the request `$fingerprint` identifies: never used, its record expired, or claimed by an
/// attempt at the same request whose lock expired (whose later writes, conditional on its own
/// claim, then fail).
macro_rules! if_free {
    ($request:expr, $now:expr, $fingerprint:expr) => {
        $request
            .condition_expression(
                "attribute_not_exists(id) OR expires_at <= :now \
                 OR (#state = :in_progress AND lock_expires_at <= :now AND fingerprint = :fp)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":now", n($now))
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":fp", s($fingerprint))
    };
}

/// `$request` (a transaction's Put, a PutItem or a DeleteItem: SDK builders with the same condition
/// methods and no trait in common) on the condition that `$claim`'s record is still that attempt's,
/// unfinished.
macro_rules! if_still_ours {
    ($request:expr, $claim:expr) => {
        $request
            .condition_expression("#state = :in_progress AND claim_id = :claim")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s("in_progress"))
            .expression_attribute_values(":claim", s(&$claim.claim_id))
    };
}

pub enum Begin {
    Run(Claim),
    Replay(StoredResponse),
    Refuse(Problem),
}

impl IdempotencyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        IdempotencyStore { client, table: table.into() }
    }

    pub async fn begin(&self, scope: Scope, fingerprint: String, now: i64) -> Result<Begin, StoreError> {
        let claim = Claim::new(scope, fingerprint);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", s(&claim.record_id))
            .item("state", s("in_progress"))
            .item("fingerprint", s(&claim.fingerprint))
            .item("claim_id", s(&claim.claim_id))
            .item("caller", s(&claim.scope.caller))
            .item("route", s(&claim.scope.route))
            .item("lock_expires_at", n(now + IN_PROGRESS_SECONDS))
            .item("expires_at", n(now + RETENTION_SECONDS))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let outcome = if_free!(put, now, &claim.fingerprint).send().await;
        match outcome {
            Ok(_) => Ok(Begin::Run(claim)),
            Err(e) => match e.as_service_error() {
                // Our own claim: the put committed but its answer was lost, and the SDK's retry
                // found it. The key is ours to run, not someone else's request in flight.
                Some(PutItemError::ConditionalCheckFailedException(failed))
                    if failed.item().and_then(|item| item.get("claim_id")) == Some(&s(&claim.claim_id)) =>
                {
                    Ok(Begin::Run(claim))
                }
                // Another attempt's refusal, recorded in a transaction (`run_checked`), is being
                // written to this key: it is in flight.
                Some(PutItemError::TransactionConflictException(_)) => {
                    Ok(Begin::Refuse(Decision::InFlight.problem().unwrap_or_else(|| Problem::internal("decide"))))
                }
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let record = failed.item().map(record_from_item).transpose()?;
                    Ok(match decide(record.as_ref(), &claim.fingerprint, now) {
                        Decision::Replay(response) => Begin::Replay(response),
                        // The condition and `decide` agree on what may proceed; if they ever
                        // disagree, the safe answer is "try again", never a second run.
                        Decision::Proceed => {
                            Begin::Refuse(Decision::InFlight.problem().unwrap_or_else(|| Problem::internal("decide")))
                        }
                        refused => Begin::Refuse(refused.problem().unwrap_or_else(|| Problem::internal("decide"))),
                    })
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Records `refusal` as the answer of a request that was never claimed (`run_checked`), in one
    /// transaction with `guards`, if the key is free (the claim's own condition) and the guards
    /// hold. Whether it did.
    async fn record_refusal(
        &self,
        scope: &Scope,
        fingerprint: &str,
        refusal: &Problem,
        guards: Vec<Write>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let claim = Claim::new(scope.clone(), fingerprint.to_owned());
        let item = self.completed_item(&claim, &StoredResponse::from_response(&refusal.to_response()), now)?;
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let mut writes = vec![Write::put(KEY_FREE, if_free!(put, now, fingerprint).build()?)];
        writes.extend(guards);
        match transact(&self.client, writes).await {
            Ok(()) => Ok(true),
            Err(TransactError::ConditionFailed(_)) => Ok(false),
            Err(TransactError::Store(e)) => Err(e),
        }
    }

    /// The write that records `response` as this key's answer; put it in the route's transaction.
    pub fn complete_item(&self, claim: &Claim, response: &StoredResponse, now: i64) -> Result<Write, StoreError> {
        let put = Put::builder().table_name(&self.table).set_item(Some(self.completed_item(claim, response, now)?));
        Ok(Write::put(CLAIM_HELD, if_still_ours!(put, claim).build()?))
    }

    /// Records an answer that came with no transaction of its own (a refusal).
    pub async fn complete(&self, claim: &Claim, response: &StoredResponse, now: i64) -> Result<(), StoreError> {
        let item = self.completed_item(claim, response, now)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match if_still_ours!(put, claim).send().await {
            // This very answer, recorded by a put whose reply was lost and which the SDK retried.
            Err(e)
                if e.as_service_error().is_some_and(|e| match e {
                    PutItemError::ConditionalCheckFailedException(failed) => already_recorded(failed.item(), &item),
                    _ => false,
                }) =>
            {
                Ok(())
            }
            outcome => outcome.map(|_| ()).map_err(StoreError::from),
        }
    }

    /// Gives the key back after a failure of ours, so the client's retry runs afresh.
    pub async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        let delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", s(&claim.record_id))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match if_still_ours!(delete, claim).send().await {
            // Gone: released by a delete whose reply was lost and which the SDK retried.
            Err(e)
                if e.as_service_error().is_some_and(|e| match e {
                    DeleteItemError::ConditionalCheckFailedException(failed) => failed.item().is_none(),
                    _ => false,
                }) =>
            {
                Ok(())
            }
            outcome => outcome.map(|_| ()).map_err(StoreError::from),
        }
    }

    /// Runs `work` at most once per key. On `Ok` the work has already recorded its response through
    /// `complete_item` in its transaction; a refusal (4xx) is recorded here and replayed; a failure
    /// of ours (5xx) releases the key.
    pub async fn run<F, Fut>(
        &self,
        scope: Scope,
        fingerprint: String,
        now: i64,
        work: F,
    ) -> Result<Response<Body>, Problem>
    where
        F: FnOnce(Claim) -> Fut,
        Fut: Future<Output = Result<Response<Body>, Problem>>,
    {
        let claim = match self.begin(scope, fingerprint, now).await? {
            Begin::Run(claim) => claim,
            Begin::Replay(response) => return Ok(response.into_response()),
            Begin::Refuse(problem) => return Err(problem),
        };
        match work(claim.clone()).await {
            Ok(response) => Ok(response),
            Err(problem) if problem.is_server_error() => {
                if let Err(e) = self.release(&claim).await {
                    tracing::warn!(error = %e, "could not release an idempotency key; it frees itself when its lock expires");
                }
                Err(problem)
            }
            Err(problem) => {
                self.complete(&claim, &StoredResponse::from_response(&problem.to_response()), now).await?;
                Err(problem)
            }
        }
    }

    /// `run` for a request whose refusals come from reads and rules alone: `check` (which must write
    /// nothing) runs before the key is claimed, and a refusal (4xx) it gives is recorded with one
    /// write where `run` would claim and then complete, so a refused request costs a call less.
    /// The refusal is recorded only if the key is free and `guards` hold: conditions on what the
    /// check read that an attempt under this key writes (a mini-app request's record), so that a
    /// refusal read before an earlier attempt committed, and released its claim, is never
    /// recorded over what that attempt did. Otherwise, and after a failure of ours (5xx) in the
    /// check, as `run`: claim (a key recorded or in flight answers as its record says), check
    /// again, work. What passes the check is claimed and given to `work`.
    pub async fn run_checked<C, CFut, T, F, Fut>(
        &self,
        scope: Scope,
        fingerprint: String,
        now: i64,
        guards: Vec<Write>,
        check: C,
        work: F,
    ) -> Result<Response<Body>, Problem>
    where
        C: Fn(&Scope) -> CFut,
        CFut: Future<Output = Result<T, Problem>>,
        F: FnOnce(Claim, T) -> Fut,
        Fut: Future<Output = Result<Response<Body>, Problem>>,
    {
        match check(&scope).await {
            Ok(checked) => self.run(scope, fingerprint, now, |claim| work(claim, checked)).await,
            Err(refusal)
                if !refusal.is_server_error()
                    && self.record_refusal(&scope, &fingerprint, &refusal, guards, now).await? =>
            {
                Err(refusal)
            }
            // A failure of ours (the key's record may answer it), a key taken or a guard that no
            // longer holds: as `run` does.
            Err(_) => {
                self.run(scope, fingerprint, now, |claim| async move {
                    let checked = check(&claim.scope).await?;
                    work(claim, checked).await
                })
                .await
            }
        }
    }

    /// `run` for an HTTP request: the key from `Idempotency-Key`, scoped to `caller` and the route;
    /// "the same request" is the same path, body and `input_headers` (e.g. `If-Match`). `work` gets
    /// the claim and the time the request is taken at.
    pub async fn run_request<F, Fut>(
        &self,
        request: &Request,
        caller: &str,
        input_headers: &[&str],
        work: F,
    ) -> Result<Response<Body>, Problem>
    where
        F: FnOnce(Claim, i64) -> Fut,
        Fut: Future<Output = Result<Response<Body>, Problem>>,
    {
        let (scope, print) = request_scope(request, caller, input_headers)?;
        let now = now_epoch_seconds();
        self.run(scope, print, now, |claim| work(claim, now)).await
    }

    /// `run_request` for a request whose body carries a secret (a card number): its fingerprint is
    /// keyed (an HMAC under a key derived from `secret`), so no record can be searched for a number
    /// by hashing guesses of it.
    pub async fn run_request_keyed<F, Fut>(
        &self,
        request: &Request,
        caller: &str,
        secret: &Key,
        work: F,
    ) -> Result<Response<Body>, Problem>
    where
        F: FnOnce(Claim, i64) -> Fut,
        Fut: Future<Output = Result<Response<Body>, Problem>>,
    {
        let scope = key_scope(request, caller)?;
        let body = String::from_utf8_lossy(body_bytes(request));
        let print = keyed_token(secret, TokenPurpose::RequestFingerprint, &[request.uri().path(), &body]);
        let now = now_epoch_seconds();
        self.run(scope, print, now, |claim| work(claim, now)).await
    }

    fn completed_item(&self, claim: &Claim, response: &StoredResponse, now: i64) -> Result<Item, StoreError> {
        let response = serde_json::to_string(response)
            .map_err(|e| StoreError::caused("the answer could not be written as JSON", e))?;
        Ok(Item::from([
            ("id".to_owned(), s(&claim.record_id)),
            ("state".to_owned(), s("completed")),
            ("fingerprint".to_owned(), s(&claim.fingerprint)),
            ("claim_id".to_owned(), s(&claim.claim_id)),
            ("caller".to_owned(), s(&claim.scope.caller)),
            ("route".to_owned(), s(&claim.scope.route)),
            ("response".to_owned(), s(response)),
            ("expires_at".to_owned(), n(now + RETENTION_SECONDS)),
        ]))
    }
}

/// The scope of `request`'s `Idempotency-Key`: `caller`'s, on the request's route.
fn key_scope(request: &Request, caller: &str) -> Result<Scope, Problem> {
    let key = IdempotencyKey::parse(header(request, "idempotency-key")?)?;
    Ok(Scope { caller: caller.to_owned(), route: route_key(request).to_owned(), key })
}

/// `request`'s key scope and its fingerprint, for `run` or `run_checked`: "the same request" is the
/// same path, body and `input_headers` (e.g. `If-Match`).
pub fn request_scope(request: &Request, caller: &str, input_headers: &[&str]) -> Result<(Scope, String), Problem> {
    let scope = key_scope(request, caller)?;
    let mut parts: Vec<&[u8]> = vec![request.uri().path().as_bytes()];
    for name in input_headers {
        parts.push(header(request, name)?.unwrap_or_default().as_bytes());
    }
    parts.push(body_bytes(request));
    Ok((scope, fingerprint(&parts)))
}

/// Whether `found` (the record as a failed condition found it) is the completed record `ours`
/// would have written: the same attempt's, with the same answer.
fn already_recorded(found: Option<&Item>, ours: &Item) -> bool {
    found.is_some_and(|found| ["state", "claim_id", "response"].iter().all(|name| found.get(*name) == ours.get(*name)))
}

fn record_from_item(item: &Item) -> Result<Record, StoreError> {
    let fingerprint = get_s(item, "fingerprint")?.to_owned();
    let expires_at = get_n(item, "expires_at")?;
    Ok(match get_s(item, "state")? {
        "completed" => Record::Completed {
            fingerprint,
            response: serde_json::from_str(get_s(item, "response")?)
                .map_err(|e| StoreError::caused("a recorded answer is not JSON", e))?,
            expires_at,
        },
        _ => Record::InProgress { fingerprint, lock_expires_at: get_n(item, "lock_expires_at")?, expires_at },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_attempts_recorded_answer_counts_as_its_own() {
        let record = |state: &str, claim: &str, response: &str| {
            Item::from([
                ("state".to_owned(), s(state)),
                ("claim_id".to_owned(), s(claim)),
                ("response".to_owned(), s(response)),
            ])
        };
        let ours = record("completed", "c1", "{\"id\":1}");
        assert!(already_recorded(Some(&ours.clone()), &ours), "our put, whose reply was lost");
        assert!(!already_recorded(Some(&record("completed", "c0", "{\"id\":1}")), &ours), "another attempt's");
        assert!(!already_recorded(Some(&record("completed", "c1", "{\"id\":2}")), &ours), "another answer");
        assert!(!already_recorded(Some(&record("in_progress", "c1", "{\"id\":1}")), &ours), "not completed");
        assert!(!already_recorded(None, &ours));
    }
}
