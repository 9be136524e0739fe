//! `cargo stack bench`: the performance targets (docs/performance.md, docs/decisions.md) measured
//! in one run, as ratios and counts (the machine is noisy, so absolute times only mean something
//! beside each other).
//!
//! - Cold start of every function as built for Lambda (the release profile), `PROCESSES` processes
//!   each, whose first event is a sample from `events/` that needs about one read. Beside them, run
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
use crate::runtime_api::{FunctionHost, Launch, Outcome};
use crate::stack::{ColdStart, Stack};
use crate::template::Function;

/// Processes per function, each cold once.
pub const PROCESSES: usize = 3;
/// Runs of each operation: with `PROCESSES` processes, most runs find the keys already unwrapped.
const RUNS: usize = 7;

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

pub const RUST_REFERENCE: &str = "reference: Rust, SDK clients at init";
pub const PYTHON_REFERENCE: &str = "reference: Python + boto3";

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
    let mut environment: BTreeMap<String, String> = stack.info.sdk_environment().into_iter().collect();
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
        // The references call the emulators directly, as on AWS with a role that allows their GetItem.
        policy: Default::default(),
    };
    let log_file = stack.info.logs.join(format!("{}.log", name.replace([' ', ':', ',', '+'], "_")));
    let launch = Launch { binary: binary.to_owned(), args, instances: PROCESSES, environment, log_file, faults: None };
    let host = FunctionHost::start(&function, launch, stack.shutdown_signal()).await.map_err(|e| e.to_string())?;
    if !host.ready(Duration::from_secs(60)).await {
        return Err(format!("{name} did not start; see {}", stack.info.logs.display()));
    }
    Ok(host)
}

/// Gives every process of every host its first event, one host at a time (so cold starts do not
/// compete for the cores), all processes of a host at once (so each takes one). Each process gets
/// its own Idempotency-Key, so that none of them answers as a replay. Returns what each host's
/// first event was.
pub async fn cold_starts(hosts: &[Arc<FunctionHost>], events: &Path) -> Result<Vec<String>, String> {
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
        let mut invocations = tokio::task::JoinSet::new();
        for process in 0..PROCESSES {
            let mut event = event.clone();
            if let Some(key) = event["headers"]["idempotency-key"].as_str() {
                event["headers"]["idempotency-key"] = json!(format!("{key}-{}", uuid::Uuid::new_v4()));
            }
            let host = host.clone();
            invocations.spawn(async move { (process, host.invoke(event.to_string().into()).await) });
        }
        while let Some(outcome) = invocations.join_next().await {
            match outcome.map_err(|e| e.to_string())?.1 {
                Outcome::Response(_) => {}
                other => return Err(format!("{}'s first event failed: {other:?}", host.logical_id)),
            }
        }
        probes.push(probe.map_or("any event: one GetItem".into(), |f| format!("events/{f}")));
    }
    Ok(probes)
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

/// The report, as Markdown.
pub fn report(cold: &[(ColdStart, String)], sizes: &BTreeMap<String, u64>, counted: &[Counted]) -> String {
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
    let _ = writeln!(out, "\nMedians over {PROCESSES} processes each.\n");
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
    fn costs_follow_the_price_list() {
        let calls = BTreeMap::from([
            ("DynamoDB_20120810.TransactWriteItems".to_owned(), CallCount { calls: 1, items: 4 }),
            ("DynamoDB_20120810.GetItem".to_owned(), CallCount { calls: 2, items: 2 }),
            ("AmazonSQS.SendMessage".to_owned(), CallCount { calls: 1, items: 0 }),
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
}
