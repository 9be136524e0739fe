//! `cargo stack bench`: the performance targets (docs/performance.md, docs/decisions.md) measured
//! in one run, as ratios and counts (the machine is noisy, so absolute times only mean something
//! beside each other).
//!
//! - Cold start of every function as built for Lambda (the release profile), `COLD_STARTS` times
//!   each (`--cold-starts K`), one process at a time, whose first event is a sample from `events/` that needs about one read. Beside them, run
//!   the same way: the tuned Rust SDK function (`infra/bench`: aws-config and DynamoDB, SQS and KMS
//!   clients at init, one GetItem) and its Python + boto3 twin (AWS's runtime interface client).
//! - Peak RSS of every process, read after the operations below ran, and the size of every
//!   stripped binary.
//! - The AWS calls each operation makes (counted per function by `crate::aws_proxy`), the DynamoDB
//!   items they touch, and what a million of them cost at us-east-1 list prices.
//!
//! The report is printed and kept in `.superpay/bench.md`; the cold starts are drawn as
//! `docs/cold-starts.svg` (`crate::chart`), which the README shows.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::aws_proxy::CallCount;
use crate::iam::Policy;
use crate::runtime_api::{FunctionHost, Launch, Outcome};
use crate::stack::{ColdStart, Stack};
use crate::template::Function;

/// Cold starts per function (and reference), each a process alone on the machine, its first event
/// alone: on AWS every instance has CPU of its own, so starts measured side by side on these 2
/// cores would time how they share the cores.
pub const COLD_STARTS: usize = 7;
/// What `--cold-starts` may ask for: medians of more settle what a share of a core scatters.
pub const COLD_STARTS_BOUNDS: std::ops::RangeInclusive<usize> = 3..=51;
/// Runs of each operation: the first finds the process cold (its keys not yet unwrapped).
const RUNS: usize = 7;
/// How long a restarted process may take to start and ask for its first event.
const START_WITHIN: Duration = Duration::from_secs(60);

/// Each function's first event: a sample from `events/` that needs about one read.
const COLD_PROBES: &[(&str, &str)] = &[
    ("ConfigFunction", "config/fetch.json"),
    ("MerchantsFunction", "merchants/get.json"),
    ("MiniAppsFunction", "miniapps/request-without-session.json"),
    ("PurchasesFunction", "purchases/get-unknown.json"),
    ("NotifierFunction", "notifier/order-expire.json"),
    ("ConversationsFunction", "conversations/list.json"),
    ("WalletFunction", "wallet/get.json"),
    ("DevicesFunction", "devices/get-unknown.json"),
    ("OfflinePaymentsFunction", "offline-payments/get-unsigned.json"),
    ("SettlementFunction", "settlement/job.json"),
    ("TopUpFunction", "topup/page-unknown.json"),
    ("TransferPlatformFunction", "transfer-platform/get-unknown.json"),
    ("TransferFunction", "transfer/get-unknown.json"),
    ("InstrumentsFunction", "instruments/list.json"),
    ("CashFunction", "cash/get-unknown.json"),
    ("CashChecksFunction", "cash-checks/check-handled.json"),
    ("LinksFunction", "links/list.json"),
    ("FlowsFunction", "flows/dry-run.json"),
    ("PaymentSessionsFunction", "payment-sessions/get-unknown.json"),
    ("HomeFunction", "home/get.json"),
];

/// What the references may call: their one GetItem.
const REFERENCE_POLICY: &str = "Statement: [{Effect: Allow, Action: [dynamodb:GetItem], Resource: '*'}]";

pub const RUST_REFERENCE: &str = "reference: Rust, SDK clients at init";
pub const PYTHON_REFERENCE: &str = "reference: Python + boto3";
/// The Rust reference making `REFERENCE_READS` GetItems in turn, on one connection, and at once, on
/// as many: what a first event's calls cost each way (docs/decisions.md,
/// "A cold start's calls at once").
pub const RUST_READS_IN_TURN: &str = "reference: Rust, 5 GetItems in turn";
pub const RUST_READS_AT_ONCE: &str = "reference: Rust, 5 GetItems at once";
pub const REFERENCE_READS: usize = 5;

/// Whether the cold start named `function` is one of the references'.
pub fn is_reference(function: &str) -> bool {
    function.starts_with("reference: ")
}

/// US East (N. Virginia) list prices, USD per million (2026-11): DynamoDB on-demand write and
/// read request units, SQS standard requests, KMS requests, Lambda requests, HTTP API requests.
const PRICE_WRITE_UNIT: f64 = 0.625;
const PRICE_READ_UNIT: f64 = 0.125;
const PRICE_SQS_REQUEST: f64 = 0.40;
const PRICE_KMS_REQUEST: f64 = 3.00;
const PRICE_LAMBDA_REQUEST: f64 = 0.20;
const PRICE_HTTP_API_REQUEST: f64 = 1.00;

/// A reference function, run by the stack's Runtime API like the real ones.
pub async fn start_reference(
    stack: &Stack,
    name: &str,
    binary: &Path,
    args: Vec<String>,
    extra_environment: &[(&str, String)],
) -> Result<Arc<FunctionHost>, String> {
    // Through a proxy of its own behind TLS, as each function's calls go through theirs: the proxy's
    // hop costs a call about a millisecond here, which the references pay too.
    let document: serde_yaml::Value = serde_yaml::from_str(REFERENCE_POLICY).map_err(|e| e.to_string())?;
    let policy = Policy::read(name, Some(&document), false).map_err(|e| e.to_string())?;
    let mut environment = stack.proxied_environment(name, policy).await.map_err(|e| e.to_string())?;
    let table = stack.info.tables.get("MerchantsTable").ok_or("no MerchantsTable in template.yaml")?;
    environment.insert("BENCH_TABLE".into(), table.clone());
    environment.extend(extra_environment.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let function = Function {
        logical_id: name.to_owned(),
        binary: String::new(),
        environment: BTreeMap::new(),
        timeout_seconds: 10,
        memory_mb: 128,
        routes: vec![],
        sqs_sources: vec![],
        schedules: vec![],
        // Enforced by the reference's proxy (`REFERENCE_POLICY`), not here.
        policy: Default::default(),
    };
    let log_file = stack.info.logs.join(format!("{}.log", name.replace([' ', ':', ',', '+'], "_")));
    let launch = Launch {
        binary: binary.to_owned(),
        args,
        instances: 1,
        environment,
        log_file,
        faults: None,
        cpu: stack.cpu.clone(),
    };
    let host = FunctionHost::start(&function, launch, stack.shutdown_signal()).await.map_err(|e| e.to_string())?;
    if !host.ready(Duration::from_secs(60)).await {
        return Err(format!("{name} did not start; see {}", stack.info.logs.display()));
    }
    Ok(host)
}

/// Gives each host's one process its first event, then restarts it cold, `starts` times in all, in
/// rounds (a round starts every host once, one at a time), so that whatever slows the machine for a
/// while slows every function and the references alike. Each first event has its own
/// Idempotency-Key, so that none answers as a replay. Returns what each host's first event was.
pub async fn cold_starts(hosts: &[Arc<FunctionHost>], events: &Path, starts: usize) -> Result<Vec<String>, String> {
    let mut probes = vec![];
    for host in hosts {
        let probe = COLD_PROBES.iter().find(|(function, _)| *function == host.logical_id).map(|(_, file)| *file);
        let event: Value = match probe {
            Some(file) => {
                let text = std::fs::read(events.join(file)).map_err(|e| format!("events/{file}: {e}"))?;
                serde_json::from_slice(&text).map_err(|e| format!("events/{file}: {e}"))?
            }
            None => json!({}),
        };
        probes.push((event, probe.map_or("any event".into(), |f| format!("events/{f}"))));
    }
    for round in 0..starts {
        for (host, (event, _)) in hosts.iter().zip(&probes) {
            if round > 0 && !host.restart(START_WITHIN).await {
                return Err(format!("{} did not start again within {START_WITHIN:?}", host.logical_id));
            }
            let mut event = event.clone();
            if let Some(key) = event["headers"]["idempotency-key"].as_str() {
                event["headers"]["idempotency-key"] = json!(format!("{key}-{}", uuid::Uuid::new_v4()));
            }
            match host.invoke(event.to_string().into()).await {
                Outcome::Response(_) => {}
                other => return Err(format!("{}'s first event failed: {other:?}", host.logical_id)),
            }
        }
    }
    Ok(probes.into_iter().map(|(_, probe)| probe).collect())
}

/// `probe` (a first event), with the AWS calls its `starts` runs made, per run.
pub fn with_calls(probe: String, calls: &BTreeMap<String, CallCount>, starts: usize) -> String {
    let calls = total(calls);
    match calls as usize {
        0 => probe,
        n if n == starts => format!("{probe}, 1 call"),
        n if n % starts == 0 => format!("{probe}, {} calls", n / starts),
        n => format!("{probe}, {:.1} calls", n as f64 / starts as f64),
    }
}

/// One operation's AWS calls: the fewest any run made (the warm path) and the most (a process's
/// first, which also unwraps a key), plus the asynchronous work all `RUNS` runs caused.
pub struct Counted {
    pub name: String,
    pub function: String,
    pub warm: BTreeMap<String, CallCount>,
    pub cold: BTreeMap<String, CallCount>,
    pub follow_up: Option<(String, BTreeMap<String, CallCount>)>,
}

fn total(calls: &BTreeMap<String, CallCount>) -> u64 {
    calls.values().map(|c| c.calls).sum()
}

/// A client of the stack's HTTP API, as a user or an admin.
pub struct Client<'a> {
    stack: &'a Stack,
    http: reqwest::Client,
}

impl<'a> Client<'a> {
    pub fn new(stack: &'a Stack) -> Self {
        Client { stack, http: reqwest::Client::new() }
    }

    pub async fn call(&self, method: &str, path: &str, subject: &str, body: Option<Value>) -> Result<Value, String> {
        let token =
            self.stack.keys.mint(&self.stack.info.authorizer(), subject, &[], 600).map_err(|e| e.to_string())?;
        let url = format!("{}{path}", self.stack.info.api_url);
        let mut request = match method {
            "POST" => self.http.post(url).header("idempotency-key", uuid::Uuid::new_v4().to_string()),
            _ => self.http.get(url),
        }
        .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{method} {path} answered {status}: {body}"));
        }
        Ok(body)
    }
}

/// Runs `operation` `RUNS` times, counting `function`'s calls each time, then what `follow_up`
/// (an asynchronous consumer) did for them, per run.
pub async fn count<F, Fut>(
    stack: &Stack,
    name: &str,
    function: &str,
    follow_up: Option<&str>,
    mut operation: F,
) -> Result<Counted, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut runs = vec![];
    if let Some(consumer) = follow_up {
        stack.aws_calls.take(consumer);
    }
    for _ in 0..RUNS {
        stack.aws_calls.take(function);
        operation().await?;
        runs.push(stack.aws_calls.take(function));
    }
    let follow_up = match follow_up {
        Some(consumer) => {
            // The queue's consumer finishes within a few seconds locally (visibility timeout 2 s).
            tokio::time::sleep(Duration::from_secs(4)).await;
            Some((consumer.to_owned(), stack.aws_calls.take(consumer)))
        }
        None => None,
    };
    runs.sort_by_key(total);
    Ok(Counted {
        name: name.to_owned(),
        function: function.to_owned(),
        warm: runs.first().cloned().unwrap_or_default(),
        cold: runs.last().cloned().unwrap_or_default(),
        follow_up,
    })
}

/// The operations the targets count the AWS calls of, against the seeded stack (`infra/seed.json`).
pub async fn count_operations(stack: &Stack) -> Result<Vec<Counted>, String> {
    let client = Client::new(stack);
    let user = crate::seed::DEMO_USER;
    let purchase = json!({"merchant_id": "m_demo", "product_id": "green-tea", "quantity": 1,
                          "amount": {"amount": "1.00", "currency": "USD"}});
    let mut counted = vec![
        count(stack, "a confirmed purchase: `POST /purchases`", "PurchasesFunction", Some("NotifierFunction"), || {
            let body = purchase.clone();
            let client = &client;
            async move { client.call("POST", "/purchases", user, Some(body)).await.map(|_| ()) }
        })
        .await?,
    ];
    let session = client.call("POST", "/miniapps/a_demo/verify", user, None).await?["session"]["id"].clone();
    let charge = json!({"session_id": session, "action": "buy", "params": {"item": "jasmine-tea"},
                        "approved_amount": {"amount": "4.50", "currency": "USD"}});
    counted.push(
        count(
            stack,
            "a mini-app charge: `POST /miniapps/{id}/requests`",
            "MiniAppsFunction",
            Some("NotifierFunction"),
            || {
                let body = charge.clone();
                let client = &client;
                async move { client.call("POST", "/miniapps/a_demo/requests", user, Some(body)).await.map(|_| ()) }
            },
        )
        .await?,
    );
    counted.push(
        count(stack, "a mini-app verification: `POST /miniapps/{id}/verify`", "MiniAppsFunction", None, || {
            let client = &client;
            async move { client.call("POST", "/miniapps/a_demo/verify", user, None).await.map(|_| ()) }
        })
        .await?,
    );
    // The platform prices and signs an instruction: one KMS Sign each, by design (only KMS holds
    // the key).
    let instruction = json!({"listing_id": "m_demo.sea-view", "quantity": 1});
    counted.push(
        count(
            stack,
            "a signed transfer instruction: `POST /platform/instructions`",
            "TransferPlatformFunction",
            None,
            || {
                let (client, instruction) = (&client, instruction.clone());
                async move { client.call("POST", "/platform/instructions", user, Some(instruction)).await.map(|_| ()) }
            },
        )
        .await?,
    );
    // Each run asks the platform for a fresh instruction (not counted: another function), then
    // sends it: the transfer side's calls, which must hold no KMS call once its process has the key.
    counted.push(
        count(
            stack,
            "a signed transfer instruction carried out: `POST /transfer/operations`",
            "TransferFunction",
            Some("NotifierFunction"),
            || {
                let (client, instruction) = (&client, instruction.clone());
                async move {
                    let mut body = client.call("POST", "/platform/instructions", user, Some(instruction)).await?;
                    body["confirmation"] = json!({"display_hash": body["instruction"]["display_hash"]});
                    client.call("POST", "/transfer/operations", user, Some(body)).await.map(|_| ())
                }
            },
        )
        .await?,
    );
    counted.push(
        count(stack, "a config fetch: `GET /config/payment-ui`", "ConfigFunction", None, || {
            let client = &client;
            async move { client.call("GET", "/config/payment-ui", user, None).await.map(|_| ()) }
        })
        .await?,
    );
    counted.push(
        count(stack, "a wallet read: `GET /wallet`", "WalletFunction", None, || {
            let client = &client;
            async move { client.call("GET", "/wallet", user, None).await.map(|_| ()) }
        })
        .await?,
    );
    // After every operation above: the same reads whatever the user's history.
    counted.push(
        count(stack, "the home: `GET /home`", "HomeFunction", None, || {
            let client = &client;
            async move { client.call("GET", "/home", user, None).await.map(|_| ()) }
        })
        .await?,
    );
    Ok(counted)
}

/// The contention scenario (issue 18): `concurrency` clients at once, each a funded user of its
/// own, make `purchases` confirmed purchases in all from ONE merchant, then as many from
/// `concurrency` merchants (client i buys from merchant i), against a stack running `instances`
/// processes of PurchasesFunction with transaction conflicts on (`crate::conflicts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contention {
    pub concurrency: usize,
    pub instances: usize,
    pub purchases: usize,
    /// The popular merchant's credit sub-accounts in the scenario's middle side.
    pub credit_shards: u32,
}

/// What `cargo stack bench` runs without options: 32 clients at once against 32 processes, the
/// popular merchant's credits spread over 32 sub-accounts.
pub const CONTENTION: Contention = Contention { concurrency: 32, instances: 32, purchases: 256, credit_shards: 32 };
/// Bounds of the scenario's options: more processes than this is more than 2 cores can start.
pub const MAX_CONTENTION_INSTANCES: usize = 128;
pub const MAX_CONTENTION_PURCHASES: usize = 100_000;

/// Each client's wallet: enough for every purchase of the run at `PRICE` (the warm-up's too).
const WALLET: &str = "100000.00";
const PRICE: &str = "1.00";
const HOT_MERCHANT: &str = "m_bench_hot";

/// One side of the scenario, measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seconds: f64,
    /// Each purchase's latency, as its client saw it.
    pub latencies_ms: Vec<f64>,
    /// Answered 201 `paid`.
    pub paid: u64,
    /// Answered 2xx but not paid: the merchant confirmed, its capture did not commit (the order
    /// stays `awaiting_merchant` with the decision recorded, carried out later).
    pub deferred: u64,
    /// Answered 503 `ledger_busy`: a transfer gave up after its 25 plans.
    pub ledger_busy: u64,
    /// Any other answer, by status and code.
    pub other: BTreeMap<String, u64>,
    /// PurchasesFunction's transactions answered `TransactionCanceledException`: each a transfer
    /// planned again (or given up).
    pub replans: u64,
    /// Of them, conflicts the proxies injected (`crate::conflicts`).
    pub conflicts: u64,
    /// PurchasesFunction's KMS Decrypts (a process's first order of each merchant unwraps its key).
    pub decrypts: u64,
}

/// The value at `share` (0 to 1) of `sorted`, by nearest rank; NaN if empty.
fn percentile(sorted: &[f64], share: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (share * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Scenario {
    pub fn purchases(&self) -> usize {
        self.latencies_ms.len()
    }

    pub fn throughput(&self) -> f64 {
        self.purchases() as f64 / self.seconds
    }

    fn latency(&self, share: f64) -> f64 {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, share)
    }
}

/// What one purchase's answer was, as `Scenario` counts it.
enum Answer {
    Paid,
    Deferred,
    LedgerBusy,
    Other(String),
}

fn classify(status: u16, body: &Value) -> Answer {
    match (status, body["state"].as_str(), body["code"].as_str()) {
        (200..=299, Some("paid"), _) => Answer::Paid,
        (200..=299, _, _) => Answer::Deferred,
        (_, _, Some("ledger_busy")) => Answer::LedgerBusy,
        (_, _, code) => Answer::Other(format!("{status} {}", code.unwrap_or("(no code)"))),
    }
}

/// Runs the scenario against `stack` (started with `settings.instances` processes of
/// PurchasesFunction and conflicts on): registers the merchants and funds the clients, warms
/// every process up, then measures one merchant, then many.
pub async fn contention(stack: &Stack, settings: Contention) -> Result<Vec<Scenario>, String> {
    let ledger = crate::seed::ledger(stack).await?;
    let authorizer = stack.info.authorizer();
    let mut users = vec![];
    for i in 0..settings.concurrency {
        let user = format!("bench-user-{i}");
        let money = superpay::money::Money::parse(WALLET, "USD").map_err(|e| e.to_string())?;
        let wallet = superpay::ledger::AccountId::wallet(&user);
        crate::seed::fund(&ledger, &user, wallet, money, "cargo stack bench").await?;
        users.push(stack.keys.mint(&authorizer, &user, &[], 3600).map_err(|e| e.to_string())?);
    }
    let many: Vec<String> = (0..settings.concurrency).map(|i| format!("m_bench_{i}")).collect();
    // The same popular merchant with its credits spread: one id per count, as a count only grows.
    let sharded_merchant = format!("{HOT_MERCHANT}_{}", settings.credit_shards);
    for id in many.iter().map(String::as_str).chain([HOT_MERCHANT, &sharded_merchant]) {
        crate::seed::merchant(stack, id, format!("Bench shop {id}"), &format!("/m/{id}"), "USD").await?;
    }
    ledger.set_credit_shards(&sharded_merchant, settings.credit_shards).await.map_err(|e| e.to_string())?;
    let users = Arc::new(users);
    // Every process's first event (connections, the seeded merchant's key) is not measured.
    let warm_up = settings.instances * 2;
    run_purchases(stack, &users, warm_up, |_| "m_demo".to_owned()).await?;
    let mut scenarios = vec![];
    // Client i buys from the popular merchant (one account, or its sub-accounts), or from merchant
    // i of the many.
    let sharded = format!("one merchant, {} credit sub-accounts", settings.credit_shards);
    let sides = [
        ("one merchant".to_owned(), HOT_MERCHANT, None),
        (sharded, sharded_merchant.as_str(), None),
        (format!("{} merchants", settings.concurrency), "", Some(&many)),
    ];
    for (name, popular, merchants) in sides {
        let merchant_of =
            |client: usize| merchants.and_then(|m| m.get(client)).map_or_else(|| popular.to_owned(), String::clone);
        quiet(stack).await;
        stack.aws_calls.take("PurchasesFunction");
        let injected_before = injected(stack);
        let (seconds, answers) = run_purchases(stack, &users, settings.purchases, merchant_of).await?;
        let calls = stack.aws_calls.take("PurchasesFunction");
        let mut scenario = Scenario {
            name,
            seconds,
            replans: calls.values().map(|c| c.cancelled).sum(),
            conflicts: injected(stack) - injected_before,
            decrypts: calls.get("TrentService.Decrypt").map_or(0, |c| c.calls),
            ..Scenario::default()
        };
        for (latency, status, body) in answers {
            scenario.latencies_ms.push(latency);
            match classify(status, &body) {
                Answer::Paid => scenario.paid += 1,
                Answer::Deferred => scenario.deferred += 1,
                Answer::LedgerBusy => scenario.ledger_busy += 1,
                Answer::Other(what) => *scenario.other.entry(what).or_default() += 1,
            }
        }
        scenarios.push(scenario);
    }
    Ok(scenarios)
}

/// PurchasesFunction's conflicts injected so far.
fn injected(stack: &Stack) -> u64 {
    stack.conflicts.as_ref().and_then(|c| c.injected().get("PurchasesFunction").copied()).unwrap_or(0)
}

/// Waits (up to 30 s) until the notifier has handled what the last purchases queued, so that its
/// work does not share the cores with the next measurement.
async fn quiet(stack: &Stack) {
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if total(&stack.aws_calls.take("NotifierFunction")) == 0 {
            return;
        }
    }
}

/// `purchases` confirmed purchases, one client per token of `users` at once, client i buying from
/// `merchant_of(i)`: how long they took in all, and each one's latency (ms), status and body.
async fn run_purchases(
    stack: &Stack,
    users: &Arc<Vec<String>>,
    purchases: usize,
    merchant_of: impl Fn(usize) -> String,
) -> Result<(f64, Vec<(f64, u16, Value)>), String> {
    let http = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = format!("{}/purchases", stack.info.api_url);
    let started = std::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for (client, token) in users.iter().enumerate() {
        let (http, next, url, token) = (http.clone(), next.clone(), url.clone(), token.clone());
        let body = json!({"merchant_id": merchant_of(client), "product_id": "green-tea", "quantity": 1,
                          "amount": {"amount": PRICE, "currency": "USD"}});
        clients.spawn(async move {
            let mut answers = vec![];
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < purchases {
                let sent = std::time::Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("POST /purchases: {e}"))?;
                let status = response.status().as_u16();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                answers.push((sent.elapsed().as_secs_f64() * 1000.0, status, body));
            }
            Ok::<_, String>(answers)
        });
    }
    let mut answers = vec![];
    while let Some(outcome) = clients.join_next().await {
        answers.extend(outcome.map_err(|e| e.to_string())??);
    }
    Ok((started.elapsed().as_secs_f64(), answers))
}

/// The scenario's table, and the ratio of the one merchant's throughput to the many's.
pub fn contention_report(settings: Contention, scenarios: &[Scenario]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Contention: {} purchases per scenario, {} clients at once, {} processes of PurchasesFunction, transaction conflicts injected (window {} ms).\n",
        settings.purchases,
        settings.concurrency,
        settings.instances,
        crate::conflicts::WINDOW.as_millis()
    );
    let _ = writeln!(
        out,
        "| scenario | purchases | seconds | purchases/s | p50 ms | p99 ms | paid | capture deferred | re-plans | of which injected conflicts | ledger_busy | other non-2xx | KMS Decrypts |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in scenarios {
        let other = if s.other.is_empty() {
            "0".to_owned()
        } else {
            s.other.iter().map(|(what, n)| format!("{n} x {what}")).collect::<Vec<_>>().join(", ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {other} | {} |",
            s.name,
            s.purchases(),
            s.seconds,
            s.throughput(),
            s.latency(0.5),
            s.latency(0.99),
            s.paid,
            s.deferred,
            s.replans,
            s.conflicts,
            s.ledger_busy,
            s.decrypts
        );
    }
    if let [one, sharded, many] = scenarios {
        let _ = writeln!(
            out,
            "\nOne merchant's throughput is {:.2}x that of {} with one account, {:.2}x with {}.",
            one.throughput() / many.throughput(),
            many.name,
            sharded.throughput() / many.throughput(),
            sharded.name.trim_start_matches("one merchant, "),
        );
    }
    out
}

/// USD per million operations: the AWS calls at list prices (each DynamoDB item up to 1 KB; a
/// transaction's items cost twice), the Lambda requests and the HTTP API request.
/// `calls` pairs each function's calls with how many operations made them.
pub fn cost_per_million(calls: &[(&BTreeMap<String, CallCount>, usize)]) -> f64 {
    let mut cost = PRICE_HTTP_API_REQUEST;
    for (function_calls, operations) in calls {
        let mut function_cost = PRICE_LAMBDA_REQUEST * *operations as f64;
        for (operation, count) in function_calls.iter() {
            let items = count.items as f64;
            function_cost += match operation.split_once('.').map_or(operation.as_str(), |(_, op)| op) {
                "TransactWriteItems" => 2.0 * items * PRICE_WRITE_UNIT,
                "TransactGetItems" => 2.0 * items * PRICE_READ_UNIT,
                "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" => items * PRICE_WRITE_UNIT,
                "GetItem" | "Query" | "Scan" | "BatchGetItem" => items * PRICE_READ_UNIT,
                _ if operation.starts_with("AmazonSQS.") => count.calls as f64 * PRICE_SQS_REQUEST,
                _ if operation.starts_with("TrentService.") => count.calls as f64 * PRICE_KMS_REQUEST,
                _ => 0.0,
            };
        }
        cost += function_cost / (*operations).max(1) as f64;
    }
    cost
}

fn calls_text(calls: &BTreeMap<String, CallCount>) -> String {
    if calls.is_empty() {
        return "none".into();
    }
    calls
        .iter()
        .map(|(operation, count)| {
            let name = operation.split_once('.').map_or(operation.as_str(), |(_, op)| op);
            let items = if operation.starts_with("DynamoDB_") && count.items != count.calls {
                format!(" ({} items)", count.items)
            } else {
                String::new()
            };
            format!("{} {name}{items}", count.calls)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report, as Markdown, of medians of `starts` cold starts each.
pub fn report(
    cold: &[(ColdStart, String)],
    starts: usize,
    sizes: &BTreeMap<String, u64>,
    counted: &[Counted],
) -> String {
    let find =
        |name: &str| cold.iter().find(|(c, _)| c.function == name).map(|(c, _)| c.init_ms + c.first_invocation_ms);
    let rust = find(RUST_REFERENCE).unwrap_or(f64::NAN);
    let python = find(PYTHON_REFERENCE).unwrap_or(f64::NAN);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| function | first event | init ms | first invocation ms | cold start ms | x Rust reference | Python reference / this | peak RSS MB | binary MB |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (c, probe) in cold {
        let cold_start = c.init_ms + c.first_invocation_ms;
        let size = sizes.get(&c.function).map_or("-".into(), |b| format!("{:.1}", *b as f64 / 1e6));
        let _ = writeln!(
            out,
            "| {} | {probe} | {:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {:.1} | {size} |",
            c.function,
            c.init_ms,
            c.first_invocation_ms,
            cold_start,
            cold_start / rust,
            python / cold_start,
            c.peak_rss_mb
        );
    }
    let _ = writeln!(
        out,
        "\nMedians of {starts} cold starts each, one process at a time; every AWS endpoint behind TLS (a local CA).\n"
    );
    if counted.is_empty() {
        return out;
    }
    let _ =
        writeln!(out, "| operation | AWS calls, warm | a process's first | then, asynchronously | USD per million |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for c in counted {
        let mut billed = vec![(&c.warm, 1)];
        let follow = match &c.follow_up {
            Some((consumer, calls)) => {
                billed.push((calls, RUNS));
                format!("{consumer}, for all {RUNS}: {}", calls_text(calls))
            }
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {}: {} | {} | {follow} | {:.2} |",
            c.name,
            c.function,
            calls_text(&c.warm),
            calls_text(&c.cold),
            cost_per_million(&billed)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_by_nearest_rank() {
        let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 100.0);
        assert_eq!(percentile(&sorted, 0.99), 198.0);
        assert_eq!(percentile(&sorted[..1], 0.99), 1.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn answers_are_classified_by_status_state_and_code() {
        assert!(matches!(classify(201, &json!({"state": "paid"})), Answer::Paid));
        assert!(matches!(
            classify(202, &json!({"state": "awaiting_merchant", "decision": "confirm"})),
            Answer::Deferred
        ));
        assert!(matches!(classify(503, &json!({"code": "ledger_busy"})), Answer::LedgerBusy));
        assert!(
            matches!(classify(500, &json!({"message": "Internal Server Error"})), Answer::Other(w) if w == "500 (no code)")
        );
    }

    #[test]
    fn the_contention_report_gives_each_scenario_and_the_ratio() {
        let scenario = |name: &str, seconds: f64, latencies: Vec<f64>| Scenario {
            name: name.into(),
            seconds,
            paid: latencies.len() as u64 - 1,
            deferred: 1,
            replans: 7,
            conflicts: 5,
            latencies_ms: latencies,
            ..Scenario::default()
        };
        let mut one = scenario("one merchant", 4.0, vec![30.0, 10.0, 20.0, 40.0]);
        one.other.insert("500 (no code)".into(), 2);
        let sharded = scenario("one merchant, 8 credit sub-accounts", 2.5, vec![5.0, 6.0, 7.0, 8.0]);
        let many = scenario("2 merchants", 2.0, vec![5.0, 6.0, 7.0, 8.0]);
        let settings = Contention { concurrency: 2, instances: 4, purchases: 4, credit_shards: 8 };
        let report = contention_report(settings, &[one, sharded, many]);
        assert!(report.contains("4 purchases per scenario, 2 clients at once, 4 processes of PurchasesFunction"));
        assert!(
            report.contains("| one merchant | 4 | 4.0 | 1.0 | 20 | 40 | 3 | 1 | 7 | 5 | 0 | 2 x 500 (no code) | 0 |"),
            "{report}"
        );
        assert!(report.contains("| 2 merchants | 4 | 2.0 | 2.0 | 6 | 8 | 3 | 1 | 7 | 5 | 0 | 0 | 0 |"), "{report}");
        assert!(
            report.ends_with(
                "One merchant's throughput is 0.50x that of 2 merchants with one account, 0.80x with 8 credit sub-accounts.\n"
            ),
            "{report}"
        );
    }

    #[test]
    fn costs_follow_the_price_list() {
        let calls = BTreeMap::from([
            ("DynamoDB_20120810.TransactWriteItems".to_owned(), CallCount { calls: 1, items: 4, ..Default::default() }),
            ("DynamoDB_20120810.GetItem".to_owned(), CallCount { calls: 2, items: 2, ..Default::default() }),
            ("AmazonSQS.SendMessage".to_owned(), CallCount { calls: 1, items: 0, ..Default::default() }),
        ]);
        let expected = PRICE_HTTP_API_REQUEST
            + PRICE_LAMBDA_REQUEST
            + 8.0 * PRICE_WRITE_UNIT
            + 2.0 * PRICE_READ_UNIT
            + PRICE_SQS_REQUEST;
        assert!((cost_per_million(&[(&calls, 1)]) - expected).abs() < 1e-9);
        // Calls made for several operations are shared among them; each operation is one invocation.
        let shared = PRICE_HTTP_API_REQUEST
            + PRICE_LAMBDA_REQUEST
            + (expected - PRICE_HTTP_API_REQUEST - PRICE_LAMBDA_REQUEST) / 2.0;
        assert!((cost_per_million(&[(&calls, 2)]) - shared).abs() < 1e-9);
        assert_eq!(calls_text(&calls), "1 SendMessage, 2 GetItem, 1 TransactWriteItems (4 items)");
    }

    #[test]
    fn a_first_event_says_how_many_calls_each_of_its_runs_made() {
        let made = |calls: usize| {
            let count = CallCount { calls: calls as u64, ..Default::default() };
            BTreeMap::from([("DynamoDB_20120810.GetItem".to_owned(), count)])
        };
        let probe = || "events/x.json".to_owned();
        assert_eq!(with_calls(probe(), &made(0), 7), "events/x.json", "nothing counted");
        assert_eq!(with_calls(probe(), &made(7), 7), "events/x.json, 1 call");
        assert_eq!(with_calls(probe(), &made(3 * 21), 21), "events/x.json, 3 calls");
        assert_eq!(with_calls(probe(), &made(8), 7), "events/x.json, 1.1 calls");
    }
}
