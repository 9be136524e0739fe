//! The flows function's routes (template.yaml `FlowsFunction`):
//!
//! - `POST /flows/next`     user: `{"instance", "at": "<flow>/<step>", "error_code"}`: what to do next,
//!   with retries counted per instance on the server (`store`), so the user's devices share one cap.
//! - `POST /flows/dry-run`  admin: `{"table"?, "start", "errors": [...], "user"?}`: replays the errors
//!   against a proposed table (verified as a publish would be) or the one in force, and shows the
//!   path a client would take.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::control::FlowControl;
use super::store::AttemptStore;
use super::{FlowTable, Kind, Step, advise, is_error_code};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NextRequest {
    instance: String,
    at: String,
    error_code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunRequest {
    #[serde(default)]
    table: Option<Value>,
    start: String,
    errors: Vec<String>,
    #[serde(default)]
    user: Option<String>,
}

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

    async fn next(&self, caller: &Caller, request: NextRequest) -> Result<Response<Body>, Problem> {
        let instance = ids::check("instance", &request.instance)?;
        check_error_code(&request.error_code)?;
        let table = self.control.table().await;
        let at = step_of(&table, "at", &request.at)?;
        let (action, rule) = table.decide(Some(&at), &request.error_code, &caller.subject);
        let mut answer = match (&action.action, &action.retry) {
            (Kind::Retry, Some(policy)) => {
                let taken = self
                    .attempts
                    .take(&caller.subject, instance, &at, &request.error_code, policy.max_attempts, now_epoch_seconds())
                    .await?;
                match taken {
                    Some(attempt) => {
                        let random = u16::from_str_radix(&random_hex::<2>(), 16).unwrap_or(u16::MAX);
                        let mut answer = table.answer(Some(&at), action, rule);
                        answer["attempt"] = attempt.into();
                        answer["delay_ms"] = policy.delay_ms(attempt, random).into();
                        answer
                    }
                    None => {
                        let mut answer = table.answer(Some(&at), &action.exhausted(), rule);
                        answer["attempts_spent"] = policy.max_attempts.into();
                        answer
                    }
                }
            }
            _ => table.answer(Some(&at), action, rule),
        };
        // The server cannot see the failed request: a money-moving one carried a key, and reusing
        // it is harmless for any other.
        advise(&mut answer, catalogue::find(&request.error_code).map_or(0, |c| c.status()), true);
        answer["instance"] = instance.into();
        answer["error_code"] = request.error_code.into();
        Ok(json_response(StatusCode::OK, &answer))
    }

    async fn dry_run(&self, request: DryRunRequest) -> Result<Response<Body>, Problem> {
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
                std::sync::Arc::new(FlowTable::parse(&parameters.as_value(), 0)?)
            }
            None => self.control.table().await,
        };
        let start = step_of(&table, "start", &request.start)?;
        let path = table.replay(Some(start.clone()), &request.errors, user);
        let version = request.table.is_none().then_some(table.version);
        Ok(json_response(StatusCode::OK, &json!({"table_version": version, "start": start.to_string(), "path": path})))
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
