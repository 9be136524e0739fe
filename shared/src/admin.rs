//! What every admin route table needs (`crate::merchant::api`, `crate::miniapp::admin`): the
//! idempotency store its registrations run under, the audit log its status changes are committed
//! with, the admin of its parties' keys (`crate::party_keys`), the rule for partner URLs, and the
//! reading of a status change's body. Built once per function, from its environment. With the
//! `openapi` feature, also the schemas of the text rules its bodies follow.

use std::marker::PhantomData;

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

/// A status change: the status the party is to have.
// Generic over the statuses' type for its schema only: the status is read as text, so that another
// is refused as `invalid_status`, not as malformed JSON.
#[derive(Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(rename = "{S}Change"))]
#[serde(deny_unknown_fields)]
pub struct StatusChange<S> {
    #[cfg_attr(feature = "openapi", schemars(with = "S"))]
    status: String,
    #[serde(skip)]
    asked: PhantomData<S>,
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
    let StatusChange::<S> { status, .. } = json_body(request)?;
    parse(&status).ok_or_else(|| Problem::new(catalogue::INVALID_STATUS, format!("status must be {expected}")))
}

/// The characters of the Basic Multilingual Plane that `holds`, as the inside of a pattern's
/// character class (`\u0009-\u000d\u0020...`). None past that plane: ECMA-262 (without its `u`
/// flag) and Python's `re` would each read such an escape their own way.
#[cfg(feature = "openapi")]
pub fn bmp_class(holds: impl Fn(char) -> bool) -> String {
    let points: Vec<u32> = (0..=0xFFFF).filter(|&p| char::from_u32(p).is_some_and(&holds)).collect();
    let mut class = String::new();
    for (i, &point) in points.iter().enumerate() {
        let starts = i == 0 || points[i - 1] + 1 != point;
        let ends = points.get(i + 1) != Some(&(point + 1));
        if starts {
            class.push_str(&format!("\\u{point:04x}"));
        } else if ends {
            class.push_str(&format!("-\\u{point:04x}"));
        }
    }
    class
}

/// The schema of a name that is `crate::text::is_plain` once trimmed, 1 to `MAX` characters (a
/// merchant's, a partner's). Exact but for the characters past the Basic Multilingual Plane
/// that do not show as themselves (`bmp_class`): the schema lets them through, the route refuses them.
#[cfg(feature = "openapi")]
pub fn plain_name<const MAX: usize>(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let space = bmp_class(char::is_whitespace);
    let hidden = bmp_class(|c| !crate::text::shows_as_itself(c));
    let inner = MAX - 2;
    let pattern = format!("^[{space}]*[^{space}{hidden}]([^{hidden}]{{0,{inner}}}[^{space}{hidden}])?[{space}]*$");
    schemars::json_schema!({
        "type": "string",
        "pattern": pattern,
        "description": format!("1 to {MAX} characters once trimmed, each showing as itself (no control, invisible or direction-changing character)"),
    })
}

/// The schema of a partner's URL (`crate::http::partner_url`): absolute, with a host, without
/// whitespace, credentials, query or fragment. Two rules are only said in words: plain http is
/// accepted only where the deployment allows it (`AllowPlainHttpPartners`, the local stack), and
/// the trimmed URL's 2048 bytes, which a pattern without lookahead (one that generators can
/// follow) cannot count.
#[cfg(feature = "openapi")]
pub fn partner_url(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let space = bmp_class(char::is_whitespace);
    // After the scheme, the authority (up to the first `/`) has no `@`; a URL whose rest starts
    // with `://` has no host.
    let authority = format!("([^{space}/?#@:][^{space}/?#@]*|:[^{space}/?#@]+)(/[^{space}?#]*)?");
    let colon = format!(":(/([^{space}?#/][^{space}?#]*)?)?");
    let pattern = format!("^[{space}]*https?://({authority}|{colon})[{space}]*$");
    schemars::json_schema!({
        "type": "string",
        "pattern": pattern,
        "description": "an absolute https URL without credentials, query or fragment, at most 2048 bytes, e.g. https://shop.example/superpay (plain http only where the deployment allows it: the local stack)",
    })
}
