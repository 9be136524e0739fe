//! Every problem+json carries `flow_control`: each HTTP function runs through `serve`, which adds
//! the table's answer for the problem's code at the client's step to each problem answer
//! (replayed ones too) on its way out.
//!
//! The table is read on the first problem of a process, not at cold start, and kept at most
//! `FLOW_TABLE_MAX_AGE_SECONDS` (verified once per version); a read that fails or takes over
//! `READ_TIMEOUT`, finds no published table, or finds one that no longer verifies (the catalogue
//! changed since) gives the house table for that long instead: never a 500, and a success path
//! never reads it at all.

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

/// How long a problem answer waits for the table before the house table answers instead.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

/// The table as a function holds it: read when first needed, kept for a bounded time.
pub struct FlowControl {
    table_name: String,
    group: GroupName,
    store: OnceCell<ConfigStore>,
    max_age_ms: i64,
    cached: Mutex<Option<(i64, Arc<FlowTable>)>>,
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
            cached: Mutex::new(None),
        })
    }

    /// The table, from this process's copy while it is young enough.
    pub async fn table(&self) -> Arc<FlowTable> {
        let now = now_epoch_millis();
        let held = self.cached.lock().ok().and_then(|c| c.clone());
        let table = match held {
            Some((read_at, table)) if now - read_at < self.max_age_ms => return table,
            Some((_, table)) => self.read(Some(table)).await,
            None => self.read(None).await,
        };
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((now, table.clone()));
        }
        table
    }

    /// The latest published table, or the house table; `held` is reused while it is the latest,
    /// so a table is verified once per version, not at every refresh.
    async fn read(&self, held: Option<Arc<FlowTable>>) -> Arc<FlowTable> {
        let latest = async {
            let client = || async { aws_sdk_dynamodb::Client::new(&aws::sdk_config().await) };
            let store = self.store.get_or_init(|| async { ConfigStore::new(client().await, &self.table_name) }).await;
            store.latest(&self.group).await
        };
        match tokio::time::timeout(READ_TIMEOUT, latest).await {
            Ok(Ok(Some(published))) => {
                if let Some(held) = held.filter(|h| h.version > 0 && h.version == published.version) {
                    return held;
                }
                match FlowTable::parse(&published.parameters.as_value(), published.version) {
                    Ok(table) => Arc::new(table),
                    Err(e) => {
                        tracing::error!(version = published.version, error = %e, "the published error-flow table no longer verifies; answering with the house table");
                        FlowTable::house()
                    }
                }
            }
            Ok(Ok(None)) => FlowTable::house(),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the error-flow table could not be read; answering with the house table");
                FlowTable::house()
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = READ_TIMEOUT.as_millis() as u64,
                    "the error-flow table took too long to read; answering with the house table"
                );
                FlowTable::house()
            }
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
