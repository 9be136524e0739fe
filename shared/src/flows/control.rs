//! Every problem+json carries `flow_control`: each HTTP function runs through `serve`, which adds
//! the table's answer for the problem's code at the client's step to each problem answer
//! (replayed ones too) on its way out.
//!
//! The table is read on the first problem of a process, not at cold start, and read again after
//! `FLOW_TABLE_MAX_AGE_SECONDS`; each published version is verified once. No published table, or one
//! that no longer verifies (the catalogue changed since), gives the house table. A read that fails
//! or takes over `READ_TIMEOUT` keeps the verified table held (for at most `STALE_FACTOR` ages;
//! then the house table) and is tried again a second later: never a 500, and a success path never
//! reads the table at all.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request, Response};
use serde_json::Value;
use tokio::sync::OnceCell;

use super::{FlowTable, GROUP};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_millis;
use crate::config::GroupName;
use crate::config::store::ConfigStore;
use crate::http::{self, Asked};
use crate::problem;

/// Runs an HTTP function (`http::run`) whose problem answers carry `flow_control`.
pub async fn serve<F, Fut>(handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Result<Response<Body>, Problem>> + Send,
{
    serve_with(&FlowControl::from_env()?, handler).await
}

/// `serve` with a table holder the function's routes use too (the flows function's).
pub async fn serve_with<F, Fut>(control: &FlowControl, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Result<Response<Body>, Problem>> + Send,
{
    http::run(handler, |asked, response| control.finish(asked, response)).await
}

/// How long a problem answer waits for the table's read before answering from what it holds.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed read, how soon the next problem tries again.
const RETRY_AFTER_MS: i64 = 1_000;
/// How many times `FlowTableMaxAgeSeconds` a verified table keeps answering while reads fail;
/// past that, the house table answers: staleness stays bounded.
const STALE_FACTOR: i64 = 10;

/// The table as a function holds it: read when first needed, kept for a bounded time.
pub struct FlowControl {
    table_name: String,
    group: GroupName,
    store: OnceCell<ConfigStore>,
    max_age_ms: i64,
    held: Mutex<Option<Held>>,
}

/// What a process holds: the table it answers with, from which published version, since when.
#[derive(Clone)]
struct Held {
    table: Arc<FlowTable>,
    /// The published version read (0: none), even when it no longer verifies and `table` is the
    /// house table: a version is verified once.
    version: u64,
    /// When it was last read successfully.
    verified_at: i64,
    /// When to read again.
    refresh_at: i64,
}

impl FlowControl {
    pub fn from_env() -> Result<Self, MissingEnv> {
        let max_age = aws::env("FLOW_TABLE_MAX_AGE_SECONDS")?;
        let max_age_ms = max_age
            .parse::<i64>()
            .ok()
            .and_then(|seconds| seconds.checked_mul(1000))
            .ok_or_else(|| MissingEnv("FLOW_TABLE_MAX_AGE_SECONDS".into()))?;
        Ok(FlowControl {
            table_name: aws::env("CONFIG_TABLE")?,
            group: GroupName::parse(GROUP).expect("error-flows is a group name (flows::tests)"),
            store: OnceCell::new(),
            max_age_ms,
            held: Mutex::new(None),
        })
    }

    /// The table, from this process's copy while it is young enough.
    pub async fn table(&self) -> Arc<FlowTable> {
        let now = now_epoch_millis();
        let held = self.held.lock().ok().and_then(|h| h.clone());
        if let Some(held) = held.as_ref().filter(|h| now < h.refresh_at) {
            return held.table.clone();
        }
        let fresh = self.read(held, now).await;
        let table = fresh.table.clone();
        if let Ok(mut held) = self.held.lock() {
            *held = Some(fresh);
        }
        table
    }

    /// Reads the latest version: the table it holds if that is still the latest, else the new one
    /// verified. A read that fails or is slow keeps a verified table up to `STALE_FACTOR` ages,
    /// then the house table answers; either way it is tried again soon, not at every problem.
    async fn read(&self, held: Option<Held>, now: i64) -> Held {
        let latest = async {
            let store = self
                .store
                .get_or_init(|| async {
                    ConfigStore::new(aws_sdk_dynamodb::Client::new(&aws::sdk_config().await), &self.table_name)
                })
                .await;
            store.latest_eventually(&self.group).await
        };
        let fresh = |table, version| Held { table, version, verified_at: now, refresh_at: now + self.max_age_ms };
        let failed = match tokio::time::timeout(READ_TIMEOUT, latest).await {
            Ok(Ok(Some(published))) => {
                if let Some(held) = held.filter(|h| h.version == published.version) {
                    return fresh(held.table, held.version);
                }
                let table = FlowTable::parse(&published.parameters.as_value(), published.version)
                    .map(Arc::new)
                    .unwrap_or_else(|e| {
                        tracing::error!(version = published.version, error = %e, "the published error-flow table no longer verifies; answering with the house table");
                        FlowTable::house()
                    });
                return fresh(table, published.version);
            }
            Ok(Ok(None)) => return fresh(FlowTable::house(), 0),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", READ_TIMEOUT.as_millis()),
        };
        let kept = held.filter(|h| now - h.verified_at < STALE_FACTOR * self.max_age_ms);
        tracing::warn!(error = %failed, kept_version = kept.as_ref().map(|h| h.version), "the error-flow table could not be read");
        let retry = now + RETRY_AFTER_MS.min(self.max_age_ms);
        match kept {
            Some(held) => Held { refresh_at: retry, ..held },
            // The house table is verified by its build; keeping it longer changes nothing.
            None => Held { table: FlowTable::house(), version: 0, verified_at: now, refresh_at: retry },
        }
    }

    /// Adds `flow_control` to a problem answer that has none.
    pub async fn finish(&self, asked: Asked, response: Response<Body>) -> Response<Body> {
        let is_problem =
            response.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes() == problem::CONTENT_TYPE.as_bytes());
        let Body::Text(text) = response.body() else { return response };
        if !is_problem {
            return response;
        }
        let Ok(Value::Object(mut body)) = serde_json::from_str::<Value>(text) else { return response };
        if body.contains_key("flow_control") {
            return response;
        }
        let code = body.get("code").and_then(Value::as_str).unwrap_or_default().to_owned();
        let table = self.table().await;
        let at = table.locate(asked.flow.as_deref(), &asked.route);
        let status = response.status().as_u16();
        let user = asked.user.as_deref().unwrap_or_default();
        body.insert("flow_control".into(), table.flow_control(at.as_ref(), &code, status, user, asked.idempotent));
        let (parts, _) = response.into_parts();
        Response::from_parts(parts, Body::Text(Value::Object(body).to_string()))
    }
}
