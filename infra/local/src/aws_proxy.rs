//! The proxy between one function and the emulators: it stands where AWS's front door does, so it
//! enforces the function's IAM policy (`crate::iam`: a call the policy does not grant is refused
//! with `AccessDeniedException`, as AWS refuses it, and logged to `access-denied.log` with the
//! function, action and resource), and counts every call for the benchmark (`cargo stack bench`).
//! Each function gets its own, so every AWS call is checked and counted for the function that made
//! it, by operation (`X-Amz-Target`: `DynamoDB_20120810.TransactWriteItems`, `AmazonSQS.SendMessage`,
//! `TrentService.Decrypt`), with the number of DynamoDB items it touched (a transaction's items,
//! a batch's keys), which is what DynamoDB bills. Given a fault plan (`crate::faults`), it also
//! injects the plan's faults into the calls it lets through, restarts DynamoDB at the plan's
//! calls, and counts each fault and logs it to `faults.log` (function, operation, the fault).
//! Given the conflicts registry (`crate::conflicts`, shared by every function's proxy), it cancels
//! a transaction that names an item another transaction in flight holds, as DynamoDB does; it
//! counts every transaction answered `TransactionCanceledException`, whoever cancelled it.
//! Every queue message a function sends is written to `queue-messages.log` as it passes, so that
//! tests can show what never goes on a queue (a card number).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

use crate::conflicts::{self, Conflicts};
use crate::emulators::DynamoDbRestart;
use crate::faults::{DYNAMODB_RESTARTED, Fault, FaultCounts, FaultPlan, LOST_WRITE_RETRIED};
use crate::iam::{self, Policy};
use crate::stack::ACCESS_DENIED_LOG;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallCount {
    pub calls: u64,
    /// DynamoDB items the calls touched (1 per single-item call).
    pub items: u64,
    /// Transactions answered `TransactionCanceledException` (by DynamoDB, or a conflict injected
    /// by `crate::conflicts`): each is a ledger transfer planned again, or given up.
    pub cancelled: u64,
}

/// Calls per function, per operation.
#[derive(Clone, Default)]
pub struct AwsCalls(Arc<Mutex<BTreeMap<String, BTreeMap<String, CallCount>>>>);

impl AwsCalls {
    /// The calls `function` made since the last `take`, and forgets them.
    pub fn take(&self, function: &str) -> BTreeMap<String, CallCount> {
        self.0.lock().ok().and_then(|mut calls| calls.remove(function)).unwrap_or_default()
    }

    pub fn clear(&self) {
        if let Ok(mut calls) = self.0.lock() {
            calls.clear();
        }
    }

    fn count(&self, function: &str, operation: &str, items: u64) {
        if let Ok(mut calls) = self.0.lock() {
            let count = calls.entry(function.to_owned()).or_default().entry(operation.to_owned()).or_default();
            count.calls += 1;
            count.items += items;
        }
    }

    /// Counts one of `function`'s `operation` calls (counted already) as cancelled.
    fn cancelled(&self, function: &str, operation: &str) {
        if let Ok(mut calls) = self.0.lock() {
            calls.entry(function.to_owned()).or_default().entry(operation.to_owned()).or_default().cancelled += 1;
        }
    }
}

/// The DynamoDB items one request body names.
fn items(body: &[u8]) -> u64 {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else { return 1 };
    if let Some(items) = json["TransactItems"].as_array() {
        return items.len() as u64;
    }
    if let Some(tables) = json["RequestItems"].as_object() {
        return tables.values().map(|t| t["Keys"].as_array().or(t.as_array()).map_or(0, |k| k.len() as u64)).sum();
    }
    1
}

/// Whether a DynamoDB error answer is a cancelled transaction.
fn cancellation(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|json| json["__type"].as_str().is_some_and(|t| t.ends_with("TransactionCanceledException")))
}

/// Where the bodies of the queue messages functions send are written, one call per line.
pub const QUEUE_MESSAGES_LOG: &str = "queue-messages.log";

/// What every function's proxy shares with the stack: where it logs, what it counts, the faults
/// it injects.
#[derive(Clone)]
pub struct Shared {
    /// The stack's log folder: `access-denied.log` and `queue-messages.log` are written there.
    pub logs: PathBuf,
    pub calls: AwsCalls,
    pub faults: Option<Faults>,
    /// Each table's partition key attribute, by table name: what `dynamodb:LeadingKeys` reads.
    pub partition_keys: Arc<BTreeMap<String, String>>,
    /// Each table's key attributes (partition, then sort), by table name: what names an item.
    pub key_attributes: Arc<BTreeMap<String, Vec<String>>>,
    /// Transactions on one item at once conflict, as on DynamoDB (`crate::conflicts`); off if `None`.
    pub conflicts: Option<Conflicts>,
}

/// The faults every proxy injects, and what they need.
#[derive(Clone)]
pub struct Faults {
    pub plan: FaultPlan,
    pub counts: FaultCounts,
    /// Restarts DynamoDB (file-backed in the fault run) at the plan's calls.
    pub dynamodb: DynamoDbRestart,
    /// The queues some function consumes (their names): the only ones a message is sent twice to.
    pub consumed_queues: Arc<HashSet<String>>,
    /// DynamoDB calls of every function so far, numbering them for the restarts.
    pub dynamodb_calls: Arc<AtomicU64>,
    /// `plan.dynamodb_restarts()`, computed once.
    pub restarts: Arc<Vec<(u64, Duration)>>,
}

impl Faults {
    pub fn new(
        plan: FaultPlan,
        counts: FaultCounts,
        dynamodb: DynamoDbRestart,
        consumed_queues: HashSet<String>,
    ) -> Self {
        Faults {
            plan,
            counts,
            dynamodb,
            consumed_queues: Arc::new(consumed_queues),
            dynamodb_calls: Arc::default(),
            restarts: Arc::new(plan.dynamodb_restarts()),
        }
    }

    /// Numbers a DynamoDB call and restarts DynamoDB if the plan says so at this call; the call
    /// itself then races the restart, as any call would.
    fn number_dynamodb_call(&self, function: &str, operation: &str) {
        let n = self.dynamodb_calls.fetch_add(1, Ordering::SeqCst);
        for (_, down) in self.restarts.iter().filter(|(at, _)| *at == n) {
            tracing::warn!(call = n, down_ms = down.as_millis() as u64, "restarting DynamoDB (injected fault)");
            self.counts.count(function, operation, DYNAMODB_RESTARTED);
            self.dynamodb.restart(*down);
        }
    }
}

struct Proxy {
    function: String,
    policy: Policy,
    shared: Shared,
    /// How many calls of each operation the function made, numbering them for the fault plan.
    numbered: Mutex<HashMap<String, u64>>,
    /// The SDK invocations (`amz-sdk-invocation-id`) of transactions that committed and lost their
    /// answer: their retries fail too (see `forward`).
    lost: Mutex<HashSet<String>>,
    dynamodb: String,
    moto: String,
    http: reqwest::Client,
}

impl Proxy {
    /// The fault the plan gives this call (numbering it), if any.
    fn fault(&self, operation: &str) -> Option<(Fault, u64)> {
        let plan = &self.shared.faults.as_ref()?.plan;
        let n = {
            let mut numbered = self.numbered.lock().ok()?;
            let next = numbered.entry(operation.to_owned()).or_default();
            *next += 1;
            *next - 1
        };
        plan.decide(&self.function, operation, n)
    }

    /// Counts and logs a fault that was injected.
    fn injected(&self, operation: &str, fault: &Fault) {
        if let Some(faults) = &self.shared.faults {
            faults.counts.count(&self.function, operation, fault.kind());
        }
    }

    /// Whether a SendMessage `body` names a queue some function consumes (a duplicate is only
    /// worth sending to one).
    fn to_consumed_queue(&self, body: &[u8]) -> bool {
        let Some(faults) = &self.shared.faults else { return false };
        let queue = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|json| {
            let name = json["QueueUrl"].as_str()?.rsplit('/').next()?;
            Some(faults.consumed_queues.contains(name))
        });
        queue.unwrap_or(false)
    }
}

/// A fault's own answer in place of the emulator's.
fn fault_answer(fault: &Fault, items: u64, draw: u64) -> Response {
    match fault.answer(items, draw) {
        Some((status, content_type, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, [("content-type", content_type)], body).into_response()
        }
        // The answer starts, then its connection drops before the body is complete.
        None => {
            let broken = futures_util::stream::once(async {
                Err::<Bytes, _>(std::io::Error::other("connection dropped by an injected fault"))
            });
            (StatusCode::OK, [("content-type", "application/x-amz-json-1.0")], axum::body::Body::from_stream(broken))
                .into_response()
        }
    }
}

async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_owned();
    if let Some(refusal) = refusal(&proxy, &target, &body) {
        return refusal;
    }
    if target.starts_with("AmazonSQS.SendMessage") {
        let line = serde_json::json!({ "function": proxy.function, "call": String::from_utf8_lossy(&body) });
        if let Ok(mut log) =
            std::fs::OpenOptions::new().create(true).append(true).open(proxy.shared.logs.join(QUEUE_MESSAGES_LOG))
        {
            let _ = writeln!(log, "{line}");
        }
    }
    let dynamodb = target.starts_with("DynamoDB_");
    let items = if dynamodb { items(&body) } else { 0 };
    proxy.shared.calls.count(&proxy.function, &target, items);
    if let Some(faults) = proxy.shared.faults.as_ref().filter(|_| dynamodb) {
        faults.number_dynamodb_call(&proxy.function, &target);
    }
    // The SDK retries a transaction with its `ClientRequestToken`, which DynamoDB (and dynoxide)
    // answers with the first outcome: a lost answer would never reach the function. Failing every
    // retry of that invocation makes the SDK give up, so the function meets the unknown outcome, as
    // it does on AWS when the retries run out.
    let invocation = headers.get("amz-sdk-invocation-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(invocation) = &invocation
        && proxy.lost.lock().is_ok_and(|lost| lost.contains(invocation))
    {
        if let Some(faults) = &proxy.shared.faults {
            faults.counts.count(&proxy.function, &target, LOST_WRITE_RETRIED);
        }
        return fault_answer(&Fault::CommittedAnswered500, items, 0);
    }
    let fault = proxy.fault(&target);
    match fault {
        Some((fault, draw)) if !fault.forwards() => {
            proxy.injected(&target, &fault);
            if fault == Fault::TransactionConflict {
                proxy.shared.calls.cancelled(&proxy.function, &target);
            }
            return fault_answer(&fault, items, draw);
        }
        Some((fault @ Fault::SqsDelay(delay), _)) => {
            proxy.injected(&target, &fault);
            tokio::time::sleep(delay).await;
        }
        _ => {}
    }
    let transaction = target.ends_with(".TransactWriteItems");
    // Held until the answer is read: the items stay claimed while the transaction runs.
    let _claim = match proxy.shared.conflicts.as_ref().filter(|_| transaction) {
        Some(registry) => {
            let named = conflicts::transaction_items(&body, &proxy.shared.key_attributes);
            match registry.claim(&proxy.function, &named, std::time::Instant::now()) {
                Ok(claim) => Some(claim),
                Err(position) => {
                    proxy.shared.calls.cancelled(&proxy.function, &target);
                    return fault_answer(&Fault::TransactionConflict, items, position as u64);
                }
            }
        }
        None => None,
    };
    let upstream = if dynamodb { &proxy.dynamodb } else { &proxy.moto };
    let url = format!("{upstream}{}", uri.path_and_query().map_or("/", |p| p.as_str()));
    // The SigV4 signature was made for the proxy's host; the emulators do not check signatures.
    let request = || {
        let mut request = proxy.http.request(method.clone(), &url).body(body.clone());
        for (name, value) in headers.iter().filter(|(name, _)| *name != "host" && *name != "content-length") {
            request = request.header(name, value);
        }
        request
    };
    // The copy goes first and its answer is dropped: the function is told of the second, as if
    // SQS had stored the message once and delivered it twice.
    if let Some((fault @ Fault::SqsDuplicate, _)) = fault
        && proxy.to_consumed_queue(&body)
        && request().send().await.is_ok_and(|answer| answer.status().is_success())
    {
        proxy.injected(&target, &fault);
    }
    let answer = match request().send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let (status, headers) = (answer.status(), answer.headers().clone());
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if transaction && status == StatusCode::BAD_REQUEST && cancellation(&body) {
        proxy.shared.calls.cancelled(&proxy.function, &target);
    }
    // A write that committed, whose answer is then lost: the caller cannot know it took effect.
    if let Some((fault @ (Fault::CommittedAnswered500 | Fault::CommittedConnectionDropped), draw)) = fault
        && status.is_success()
    {
        proxy.injected(&target, &fault);
        if target.ends_with(".TransactWriteItems")
            && let (Some(invocation), Ok(mut lost)) = (invocation, proxy.lost.lock())
        {
            lost.insert(invocation);
        }
        return fault_answer(&fault, items, draw);
    }
    let mut response = (status, body).into_response();
    for (name, value) in headers.iter().filter(|(name, _)| *name != "content-length" && *name != "transfer-encoding") {
        response.headers_mut().append(name, value.clone());
    }
    response
}

/// AWS's answer to a call that the function's policy does not grant, logged; `None` when granted.
fn refusal(proxy: &Proxy, target: &str, body: &[u8]) -> Option<Response> {
    let refuse = |action: &str, resource: &str, status: u16, body: String| {
        tracing::warn!(function = %proxy.function, action, resource, "AWS call refused by the function's IAM policy");
        let line = serde_json::json!({ "function": proxy.function, "action": action, "resource": resource });
        let denials = proxy.shared.logs.join(ACCESS_DENIED_LOG);
        if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(denials) {
            let _ = writeln!(log, "{line}");
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, [("content-type", "application/x-amz-json-1.0")], body).into_response()
    };
    match iam::needs(target, body, &proxy.shared.partition_keys) {
        Err(reason) => {
            let body = serde_json::json!({ "__type": "AccessDeniedException", "message": reason }).to_string();
            Some(refuse(target, "(not understood locally)", 400, body))
        }
        Ok(needs) => needs.iter().find(|need| !proxy.policy.allows(need)).map(|need| {
            let (status, body) = iam::access_denied(&proxy.function, need);
            refuse(&need.action, &need.resource, status, body)
        }),
    }
}

/// Starts `function`'s proxy to the emulators; its URL is what the function's SDK endpoints name.
pub async fn start(
    function: &str,
    policy: Policy,
    shared: Shared,
    dynamodb: &str,
    moto: &str,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<String> {
    let proxy = Arc::new(Proxy {
        function: function.to_owned(),
        policy,
        shared,
        numbered: Mutex::new(HashMap::new()),
        lost: Mutex::new(HashSet::new()),
        dynamodb: dynamodb.to_owned(),
        moto: moto.to_owned(),
        http: reqwest::Client::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move {
        let _ = axum::serve(crate::stack::without_nagle(listener), app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    });
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_counted_as_dynamodb_bills_them() {
        assert_eq!(items(br#"{"TableName":"t","Key":{"id":{"S":"x"}}}"#), 1);
        assert_eq!(items(br#"{"TransactItems":[{"Put":{}},{"Update":{}},{"ConditionCheck":{}}]}"#), 3);
        assert_eq!(items(br#"{"RequestItems":{"a":{"Keys":[{},{}]},"b":{"Keys":[{}]}}}"#), 3);
        assert_eq!(items(br#"{"RequestItems":{"a":[{"PutRequest":{}},{"DeleteRequest":{}}]}}"#), 2);
    }
}
