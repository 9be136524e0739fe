//! What every admin route table needs (`crate::merchant::api`, `crate::miniapp::admin`): the
//! idempotency store its registrations run under, the audit log its status changes are committed
//! with, the admin of its parties' keys (`crate::party_keys`), the rule for partner URLs, and the
//! reading of a status change's body. Built once per function, from its environment.

use lambda_http::Request;
use serde::Deserialize;
use serde_json::Value;

use crate::Problem;
use crate::audit::{AuditEntry, commit_audited};
use crate::auth::Caller;
use crate::aws::{self, MissingEnv};
use crate::dynamo::Write;
use crate::http::json_body;
use crate::idempotency::store::IdempotencyStore;
use crate::party_keys::PartyKeyAdmin;
use crate::problem::catalogue;

/// Cheap to clone (its clients share one connection pool): a function serving several admin route
/// tables builds it once, at cold start, and gives each a clone.
#[derive(Clone)]
pub struct Admin {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub idempotency: IdempotencyStore,
    pub keys: PartyKeyAdmin,
    audit_table: String,
    /// Template `AllowPlainHttpPartners`: true only where partners are local simulators.
    pub allow_plain_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusChange {
    status: String,
}

impl Admin {
    pub fn from_env(config: &aws_config::SdkConfig) -> Result<Self, MissingEnv> {
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let idempotency = IdempotencyStore::new(dynamodb.clone(), aws::env("IDEMPOTENCY_TABLE")?);
        let audit_table = aws::env("AUDIT_TABLE")?;
        Ok(Admin {
            keys: PartyKeyAdmin::from_env(config, dynamodb.clone(), idempotency.clone(), audit_table.clone())?,
            allow_plain_http: aws::env("ALLOW_PLAIN_HTTP_PARTNERS")? == "true",
            dynamodb,
            idempotency,
            audit_table,
        })
    }

    /// Commits `caller`'s status change `write` with its audit entry (`action` on `resource`, with
    /// `detail`); `Ok(true)` when the write's condition refused it (nothing is written then).
    pub async fn commit_status(
        &self,
        caller: &Caller,
        resource: String,
        action: &'static str,
        detail: Value,
        write: Write,
    ) -> Result<bool, Problem> {
        let entry = AuditEntry::now(resource, action, &caller.subject, detail);
        commit_audited(&self.dynamodb, &self.audit_table, entry, write).await
    }
}

/// The status a `POST .../status` body asks for, as `parse` reads it; `expected` names the statuses
/// `parse` accepts, for the refusal's detail.
pub fn requested_status<S>(
    request: &Request,
    parse: impl FnOnce(&str) -> Option<S>,
    expected: &str,
) -> Result<S, Problem> {
    let StatusChange { status } = json_body(request)?;
    parse(&status).ok_or_else(|| Problem::new(catalogue::INVALID_STATUS, format!("status must be {expected}")))
}
