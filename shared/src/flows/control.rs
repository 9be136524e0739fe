//! Every problem+json carries `flow_control`: each HTTP function runs through `serve`, which adds
//! the table's answer for the problem's code at the client's step to each problem answer
//! (replayed ones too) on its way out.
//!
//! The table is held as `config::held` holds a group: never a 500, and a success path here never
//! reads it at all.

use std::future::Future;
use std::sync::Arc;

use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::{Body, Request, Response};
use serde_json::Value;

use super::{FlowTable, GROUP};
use crate::Problem;
use crate::aws::{self, MissingEnv};
use crate::config::GroupName;
use crate::config::held::HeldGroup;
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

/// The error-flow table as a function holds it (`config::held`): read on the first problem, not
/// at cold start, and again once `FLOW_TABLE_MAX_AGE_SECONDS` old.
pub struct FlowControl {
    table: HeldGroup<FlowTable>,
}

impl FlowControl {
    pub fn from_env() -> Result<Self, MissingEnv> {
        let max_age = aws::env("FLOW_TABLE_MAX_AGE_SECONDS")?;
        let max_age_ms = max_age
            .parse::<i64>()
            .ok()
            .and_then(|seconds| seconds.checked_mul(1000))
            .ok_or_else(|| MissingEnv("FLOW_TABLE_MAX_AGE_SECONDS".into()))?;
        let group = GroupName::parse(GROUP).expect("error-flows is a group name (flows::tests)");
        let parse = |json: &Value, version: u64| FlowTable::parse(json, version).map_err(|e| e.to_string());
        Ok(FlowControl { table: HeldGroup::new(aws::env("CONFIG_TABLE")?, group, max_age_ms, parse, FlowTable::house) })
    }

    /// The table, from this process's copy while it is young enough.
    pub async fn table(&self) -> Arc<FlowTable> {
        self.table.get().await
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
