//! The flows function's routes (template.yaml `FlowsFunction`):
//!
//! - `POST /flows/next`     user: `{"instance", "at": "<flow>/<step>", "error_code"}`: what to do next,
//!   with retries counted per instance on the server (`store`), so the user's devices share one cap.
//! - `POST /flows/dry-run`  admin: `{"table"?, "start", "errors": [...], "user"?}`: replays the errors
//!   against a proposed table (verified as a publish would be) or the one in force, and shows the
//!   path a client would take.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::control::FlowControl;
use super::store::AttemptStore;
use super::{FlowAnswer, FlowHop, FlowTable, Kind, Step, is_error_code};
use crate::Problem;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::config::Parameters;
use crate::crypto::random_hex;
use crate::http::{json_body, json_response, route_key};
use crate::ids;
use crate::problem::catalogue;

/// The most errors one dry run replays.
pub const MAX_DRY_RUN_ERRORS: usize = 100;

pub struct FlowsApi {
    control: FlowControl,
    attempts: AttemptStore,
}

/// A step of a flow as `Step::parse` reads it.
#[cfg(feature = "openapi")]
const STEP_PATTERN: &str = "^[a-z0-9_-]{1,64}/[a-z0-9_-]{1,64}$";
/// An error code as `is_error_code` reads it.
#[cfg(feature = "openapi")]
const ERROR_CODE_PATTERN: &str = "^[a-z0-9_]{1,64}$";

/// `POST /flows/next`'s body: an error the client got.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct FlowNextRequest {
    /// The client's try of a whole flow: its retries are counted under it (a new try, a new id).
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::id"))]
    instance: String,
    /// Where the client got it, `<flow>/<step>`: a step of the table's flows.
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = STEP_PATTERN)))]
    at: String,
    /// The problem's `code` (catalogued or not).
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = ERROR_CODE_PATTERN)))]
    error_code: String,
}

/// `POST /flows/next`'s answer: the table's, with the retry counted on the server.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct FlowNextView {
    #[serde(flatten)]
    answer: FlowAnswer,
    /// A retry's number for this instance, step and code (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    /// How long to wait before the retry, jitter drawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    /// The retries spent: the answer is what follows them.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts_spent: Option<u32>,
    instance: String,
    error_code: String,
}

/// `POST /flows/dry-run`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct FlowDryRunRequest {
    /// A proposed table, verified as a publish of the error-flows group would be; absent or null:
    /// the table in force.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(with = "Option<crate::config::Parameters>"))]
    table: Option<Value>,
    /// Where the replay starts, `<flow>/<step>`: a step of the table's flows.
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = STEP_PATTERN)))]
    start: String,
    /// The error codes a client gets one after the other.
    #[cfg_attr(
        feature = "openapi",
        schemars(length(max = MAX_DRY_RUN_ERRORS), inner(regex(pattern = ERROR_CODE_PATTERN)))
    )]
    errors: Vec<String>,
    /// The user whose share of each rule's rollout decides; none: as for the empty id.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(schema_with = "crate::openapi::optional_id"))]
    user: Option<String>,
}

/// `POST /flows/dry-run`'s answer: the path a client following the table would take.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct FlowDryRunView {
    /// The version of the table in force that was replayed; null for a proposed table.
    table_version: Option<u64>,
    start: String,
    /// Each error's answer, until the flow ends (abort, await) or the errors run out.
    path: Vec<FlowHop>,
}

/// The routes' documentation (`crate::openapi`).
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{RouteDoc, schema};
    &[
        RouteDoc {
            key: "POST /flows/next",
            summary: "what the client does after an error at a step of its flow, its retries counted on the server",
            request: Some(schema::<FlowNextRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<FlowNextView>))],
            codes: &[catalogue::INVALID_ID, catalogue::INVALID_ERROR_CODE, catalogue::INVALID_FLOW_STEP],
            headers: &[],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /flows/dry-run",
            summary: "replay errors against a proposed error-flow table (or the one in force): the path a client would take",
            request: Some(schema::<FlowDryRunRequest>),
            path: &[],
            query: &[],
            answers: &[(200, Some(schema::<FlowDryRunView>))],
            codes: &[
                catalogue::DRY_RUN_TOO_LONG,
                catalogue::INVALID_ERROR_CODE,
                catalogue::INVALID_ID,
                catalogue::PARAMETERS_NOT_OBJECT,
                catalogue::PARAMETERS_CONTAIN_NULL,
                catalogue::PARAMETERS_TOO_LARGE,
                catalogue::FLOW_TABLE_INVALID,
                catalogue::FLOW_TABLE_CYCLE,
                catalogue::FLOW_TARGET_UNKNOWN,
                catalogue::INVALID_FLOW_STEP,
            ],
            headers: &[],
            form: None,
            pages: &[],
        },
    ]
};

impl FlowsApi {
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(FlowsApi {
            control: FlowControl::from_env()?,
            attempts: AttemptStore::new(dynamodb, aws::env("FLOW_INSTANCES_TABLE")?),
        })
    }

    /// The table this function answers with, for its own problems too.
    pub fn control(&self) -> &FlowControl {
        &self.control
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        match route_key(&request) {
            "POST /flows/next" => self.next(&caller, json_body(&request)?).await,
            "POST /flows/dry-run" => {
                caller.require_admin()?;
                self.dry_run(json_body(&request)?).await
            }
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the flows function has no route {other:?}"))),
        }
    }

    async fn next(&self, caller: &Caller, request: FlowNextRequest) -> Result<Response<Body>, Problem> {
        let instance = ids::check("instance", &request.instance)?;
        check_error_code(&request.error_code)?;
        let table = self.control.table().await;
        let at = step_of(&table, "at", &request.at)?;
        let (action, rule) = table.decide(Some(&at), &request.error_code, &caller.subject);
        let (answer, attempt, delay_ms, attempts_spent) = match (&action.action, &action.retry) {
            (Kind::Retry, Some(policy)) => {
                let taken = self
                    .attempts
                    .take(&caller.subject, instance, &at, &request.error_code, policy.max_attempts, now_epoch_seconds())
                    .await?;
                match taken {
                    Some(attempt) => {
                        let random = u16::from_str_radix(&random_hex::<2>(), 16).unwrap_or(u16::MAX);
                        let delay_ms = policy.delay_ms(attempt, random);
                        (table.decided(Some(&at), action, rule), Some(attempt), Some(delay_ms), None)
                    }
                    None => {
                        let exhausted = table.decided(Some(&at), &action.exhausted(), rule);
                        (exhausted, None, None, Some(policy.max_attempts))
                    }
                }
            }
            _ => (table.decided(Some(&at), action, rule), None, None, None),
        };
        // The server cannot see the failed request: a money-moving one carried a key, and reusing
        // it is harmless for any other.
        let answer = answer.advised(catalogue::find(&request.error_code).map_or(0, |c| c.status()), true);
        let view = FlowNextView {
            answer,
            attempt,
            delay_ms,
            attempts_spent,
            instance: instance.to_owned(),
            error_code: request.error_code,
        };
        Ok(json_response(StatusCode::OK, &view))
    }

    async fn dry_run(&self, request: FlowDryRunRequest) -> Result<Response<Body>, Problem> {
        if request.errors.len() > MAX_DRY_RUN_ERRORS {
            return Err(Problem::new(
                catalogue::DRY_RUN_TOO_LONG,
                format!("a dry run replays at most {MAX_DRY_RUN_ERRORS} errors; this one has {}", request.errors.len()),
            ));
        }
        for code in &request.errors {
            check_error_code(code)?;
        }
        let user = request.user.as_deref().map(|u| ids::check("user", u)).transpose()?.unwrap_or_default();
        let table = match &request.table {
            // Judged as a publish would be: a group's parameters first, then the table.
            Some(proposed) => {
                let parameters = Parameters::parse(proposed.clone())?;
                std::sync::Arc::new(FlowTable::parse(parameters.as_value(), 0)?)
            }
            None => self.control.table().await,
        };
        let start = step_of(&table, "start", &request.start)?;
        let path = table.hops(Some(start.clone()), &request.errors, user);
        let view = FlowDryRunView {
            table_version: request.table.is_none().then_some(table.version),
            start: start.to_string(),
            path,
        };
        Ok(json_response(StatusCode::OK, &view))
    }
}

fn check_error_code(code: &str) -> Result<(), Problem> {
    if is_error_code(code) {
        return Ok(());
    }
    Err(Problem::new(
        catalogue::INVALID_ERROR_CODE,
        format!("error code {:?} is not 1 to 64 of a-z, 0-9 and _", code.chars().take(80).collect::<String>()),
    ))
}

fn step_of(table: &FlowTable, field: &str, text: &str) -> Result<Step, Problem> {
    table.step(text).ok_or_else(|| {
        Problem::new(
            catalogue::INVALID_FLOW_STEP,
            format!(
                "{field} {:?} is not <flow>/<step> of the error-flow table's flows (version {})",
                text.chars().take(80).collect::<String>(),
                table.version
            ),
        )
        .with("field", field)
    })
}
