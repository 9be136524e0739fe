//! The config function's HTTP routes (template.yaml `ConfigFunction`):
//!
//! - `GET  /config/{group}`           any user: the latest version, a patch, or 304 Not Modified
//! - `POST /config/{group}/versions`  admin: publish new parameters (If-Match / If-None-Match: *)
//! - `POST /config/{group}/rollback`  admin: republish an earlier version's parameters

use lambda_http::http::{StatusCode, header as h};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::store::{ConfigStore, PublishError};
use super::{
    ConfigError, FetchAnswer, GroupName, GroupVersion, Parameters, Precondition, answer, check_rollback,
    client_version, etag, next_version, pruned_by,
};
use crate::Problem;
use crate::audit::AuditEntry;
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_millis;
use crate::http::{header, json_body, json_response, path_parameter, query_parameter, route_key};
use crate::idempotency::StoredResponse;
use crate::idempotency::store::{Claim, IdempotencyStore};
use crate::problem::catalogue;

pub struct ConfigApi {
    store: ConfigStore,
    idempotency: IdempotencyStore,
    audit_table: String,
    validators: Vec<(&'static str, Validator)>,
}

/// Checks a group's parameters beyond their being JSON (a group that holds rules, by its rules'
/// module): a publish or rollback it refuses changes nothing.
pub type Validator = fn(&Value) -> Result<(), Problem>;

/// `POST /config/{group}/rollback`'s body.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
struct ConfigRollbackRequest {
    /// The earlier version whose parameters are published again, as a new version.
    #[serde(deserialize_with = "crate::http::whole")]
    version: u64,
}

/// A version just published (by a publish or a rollback).
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
struct PublishedVersion<'a> {
    group: &'a GroupName,
    version: u64,
    /// Epoch seconds.
    published_at: i64,
}

/// The routes' documentation (`crate::openapi`). A publish and a rollback name the version they
/// replace with `If-Match: "N"` (or create the group with `If-None-Match: *`), and their answer
/// carries the new version's `ETag` and `Location`: headers `Header` cannot say yet.
#[cfg(feature = "openapi")]
pub const ROUTES: &[crate::openapi::RouteDoc] = {
    use crate::openapi::{Header, Param, RouteDoc, schema, sequence};
    const GROUP: &[Param] = &[Param {
        name: "group",
        description: "1 to 64 of a-z, 0-9 and -, starting with a letter or digit",
        schema: schema::<GroupName>,
    }];
    &[
        RouteDoc {
            key: "GET /config/{group}",
            summary: "a group's latest version: whole, as a patch of the version the client holds, or that it holds it (304 to If-None-Match)",
            request: None,
            path: GROUP,
            query: &[Param {
                name: "version",
                description: "the version the client holds (0: none); If-None-Match: \"N\" may say it instead",
                schema: sequence,
            }],
            answers: &[(200, Some(schema::<FetchAnswer>)), (304, None)],
            codes: &[
                catalogue::INVALID_GROUP_NAME,
                catalogue::MALFORMED_HEADER,
                catalogue::INVALID_VERSION,
                catalogue::CONFLICTING_VERSIONS,
                catalogue::UNKNOWN_GROUP,
                catalogue::VERSION_FROM_FUTURE,
            ],
            headers: &[Header::Revalidated],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /config/{group}/versions",
            summary: "publish a group's parameters as its next version (If-Match: \"N\" names the version replaced, If-None-Match: * creates the group)",
            request: Some(schema::<Parameters>),
            path: GROUP,
            query: &[],
            answers: &[(201, Some(schema::<PublishedVersion>))],
            // The last five: the groups the config function validates (its `main`).
            codes: &[
                catalogue::INVALID_GROUP_NAME,
                catalogue::MALFORMED_HEADER,
                catalogue::PRECONDITION_REQUIRED,
                catalogue::INVALID_PRECONDITION,
                catalogue::INVALID_VERSION,
                catalogue::PARAMETERS_NOT_OBJECT,
                catalogue::PARAMETERS_CONTAIN_NULL,
                catalogue::PARAMETERS_TOO_LARGE,
                catalogue::UNKNOWN_GROUP,
                catalogue::GROUP_EXISTS,
                catalogue::VERSION_CONFLICT,
                catalogue::FLOW_TABLE_INVALID,
                catalogue::FLOW_TABLE_CYCLE,
                catalogue::FLOW_TARGET_UNKNOWN,
                catalogue::PAYMENT_POLICY_INVALID,
                catalogue::HOME_ANNOUNCEMENTS_INVALID,
            ],
            headers: &[Header::IdempotencyKey, Header::Precondition],
            form: None,
            pages: &[],
        },
        RouteDoc {
            key: "POST /config/{group}/rollback",
            summary: "publish an earlier version's parameters again, as the group's next version (If-Match: \"N\" names the version replaced)",
            request: Some(schema::<ConfigRollbackRequest>),
            path: GROUP,
            query: &[],
            answers: &[(201, Some(schema::<PublishedVersion>))],
            // The last five: the groups the config function validates (its `main`).
            codes: &[
                catalogue::INVALID_GROUP_NAME,
                catalogue::MALFORMED_HEADER,
                catalogue::PRECONDITION_REQUIRED,
                catalogue::INVALID_PRECONDITION,
                catalogue::INVALID_VERSION,
                catalogue::UNKNOWN_GROUP,
                catalogue::GROUP_EXISTS,
                catalogue::VERSION_CONFLICT,
                catalogue::ROLLBACK_NOT_EARLIER,
                catalogue::VERSION_NOT_IN_HISTORY,
                catalogue::FLOW_TABLE_INVALID,
                catalogue::FLOW_TABLE_CYCLE,
                catalogue::FLOW_TARGET_UNKNOWN,
                catalogue::PAYMENT_POLICY_INVALID,
                catalogue::HOME_ANNOUNCEMENTS_INVALID,
            ],
            headers: &[Header::IdempotencyKey, Header::Precondition],
            form: None,
            pages: &[],
        },
    ]
};

/// A version change about to be committed: what it is and how the audit log will describe it.
struct Change {
    new: GroupVersion,
    /// What the publish required of the current version, to explain a lost race.
    precondition: Precondition,
    action: &'static str,
    detail: Value,
}

impl ConfigApi {
    /// Built once at cold start from the environment template.yaml gives the function.
    pub async fn from_env() -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws::sdk_config().await);
        Ok(ConfigApi {
            store: ConfigStore::new(dynamodb.clone(), aws::env("CONFIG_TABLE")?),
            idempotency: IdempotencyStore::new(dynamodb, aws::env("IDEMPOTENCY_TABLE")?),
            audit_table: aws::env("AUDIT_TABLE")?,
            validators: Vec::new(),
        })
    }

    /// Validates `group`'s parameters with `validate` before any version of it is published or
    /// rolled back to. The function's `main` names them, so this module knows no capability.
    pub fn validating(mut self, group: &'static str, validate: Validator) -> Self {
        self.validators.push((group, validate));
        self
    }

    fn validate(&self, group: &GroupName, parameters: &Parameters) -> Result<(), Problem> {
        let value = parameters.as_value();
        self.validators.iter().filter(|(name, _)| *name == group.as_str()).try_for_each(|(_, validate)| validate(value))
    }

    pub async fn handle(&self, request: Request) -> Result<Response<Body>, Problem> {
        let caller = Caller::from_request(&request)?;
        let group = GroupName::parse(path_parameter(&request, "group")?)?;
        match route_key(&request) {
            "GET /config/{group}" => self.fetch(&request, group).await,
            "POST /config/{group}/versions" => self.publish(&request, &caller, group).await,
            "POST /config/{group}/rollback" => self.rollback(&request, &caller, group).await,
            other => Err(Problem::new(catalogue::UNKNOWN_ROUTE, format!("the config function has no route {other:?}"))),
        }
    }

    async fn fetch(&self, request: &Request, group: GroupName) -> Result<Response<Body>, Problem> {
        let if_none_match = header(request, "if-none-match")?;
        let held = client_version(query_parameter(request, "version"), if_none_match)?;
        let latest = self.store.latest(&group).await?.ok_or(ConfigError::UnknownGroup(group.clone()))?;
        let base = match held {
            Some(v) if v < latest.version => self.store.version(&group, v).await?,
            _ => None,
        };
        let answer = answer(&latest, held, base.as_ref())?;
        let (mut response, cache) = match &answer {
            // 304 answers a conditional request only (RFC 9110); `?version=N` gets a small 200.
            FetchAnswer::UpToDate { .. } if if_none_match.is_some() => {
                let mut r = Response::new(Body::Empty);
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                (r, "private, no-cache")
            }
            // A patch is only meaningful to the client that holds its base: never cache it, or a
            // cache could later serve it as the whole document after a 304.
            FetchAnswer::Patch { .. } => (json_response(StatusCode::OK, &answer), "no-store"),
            FetchAnswer::UpToDate { .. } | FetchAnswer::Full { .. } => {
                (json_response(StatusCode::OK, &answer), "private, no-cache")
            }
        };
        let headers = response.headers_mut();
        headers.insert(h::ETAG, header_value(&etag(latest.version))?);
        headers.insert(h::CACHE_CONTROL, h::HeaderValue::from_static(cache));
        headers.insert(h::VARY, h::HeaderValue::from_static("If-None-Match"));
        Ok(response)
    }

    async fn publish(&self, request: &Request, caller: &Caller, group: GroupName) -> Result<Response<Body>, Problem> {
        caller.require_admin()?;
        let precondition = Precondition::parse(header(request, "if-match")?, header(request, "if-none-match")?)?;
        let parameters = Parameters::parse(json_body::<Value>(request)?)?;
        self.idempotently(request, caller, move |claim, now| async move {
            // Inside the key's run: a replay answers what was decided, even if the rules changed since.
            self.validate(&group, &parameters)?;
            let current = self.store.latest(&group).await?;
            let version = next_version(&group, current.map(|c| c.version), precondition)?;
            let change = Change {
                new: GroupVersion {
                    group,
                    version,
                    parameters,
                    published_at: now,
                    published_by: claim.scope.caller.clone(),
                },
                precondition,
                action: "config.publish",
                detail: json!({ "version": version }),
            };
            self.commit(&claim, change, now).await
        })
        .await
    }

    async fn rollback(&self, request: &Request, caller: &Caller, group: GroupName) -> Result<Response<Body>, Problem> {
        caller.require_admin()?;
        let precondition = Precondition::parse(header(request, "if-match")?, header(request, "if-none-match")?)?;
        let ConfigRollbackRequest { version: target } = json_body(request)?;
        self.idempotently(request, caller, move |claim, now| async move {
            let current = self.store.latest(&group).await?.ok_or(ConfigError::UnknownGroup(group.clone()))?;
            let version = next_version(&group, Some(current.version), precondition)?;
            check_rollback(target, current.version)?;
            let source = self.store.version(&group, target).await?.ok_or(ConfigError::VersionNotInHistory(target))?;
            // What was valid when published may not be now (the catalogue changed since).
            self.validate(&group, &source.parameters)?;
            let change = Change {
                new: GroupVersion {
                    group,
                    version,
                    parameters: source.parameters,
                    published_at: now,
                    published_by: claim.scope.caller.clone(),
                },
                precondition,
                action: "config.rollback",
                detail: json!({ "version": version, "parameters_of": target, "replaced": current.version }),
            };
            self.commit(&claim, change, now).await
        })
        .await
    }

    /// Runs a publishing route once per Idempotency-Key. The preconditions are part of the
    /// request: the same body sent against another version is another request.
    async fn idempotently<F, Fut>(&self, request: &Request, caller: &Caller, work: F) -> Result<Response<Body>, Problem>
    where
        F: FnOnce(Claim, i64) -> Fut,
        Fut: std::future::Future<Output = Result<Response<Body>, Problem>>,
    {
        self.idempotency.run_request(request, &caller.subject, &["if-match", "if-none-match"], work).await
    }

    /// One transaction: the new version (only if its number is free), the pruned old one, the
    /// audit entry and the idempotency record with the response the client is about to get.
    async fn commit(&self, claim: &Claim, change: Change, now: i64) -> Result<Response<Body>, Problem> {
        let Change { new, precondition, action, detail } = change;
        let published = PublishedVersion { group: &new.group, version: new.version, published_at: new.published_at };
        let mut response = json_response(StatusCode::CREATED, &published);
        response.headers_mut().insert(h::ETAG, header_value(&etag(new.version))?);
        response.headers_mut().insert(h::LOCATION, header_value(&format!("/config/{}", new.group.as_str()))?);
        let audit = AuditEntry {
            resource: format!("config/{}", new.group.as_str()),
            action,
            actor: claim.scope.caller.clone(),
            at_ms: now_epoch_millis(),
            detail,
        };
        let with = vec![
            audit.put_item(&self.audit_table, &claim.scope.derived_id("audit"))?,
            self.idempotency.complete_item(claim, &StoredResponse::from_response(&response), now)?,
        ];
        match self.store.publish(&new, pruned_by(new.version), with).await {
            Ok(()) => {
                tracing::info!(group = new.group.as_str(), version = new.version, action, "config version published");
                Ok(response)
            }
            Err(PublishError::VersionTaken) => {
                // Another publish won the race since we read: explain it against what won.
                let current = self.store.latest(&new.group).await?.map(|v| v.version);
                let lost = next_version(&new.group, current, precondition)
                    .err()
                    .unwrap_or(ConfigError::VersionConflict { expected: new.version - 1, current: new.version });
                Err(lost.into())
            }
            Err(PublishError::Store(e)) => Err(e.into()),
        }
    }
}

fn header_value(text: &str) -> Result<h::HeaderValue, Problem> {
    h::HeaderValue::from_str(text).map_err(Problem::internal)
}
