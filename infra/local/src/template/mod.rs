//! Reads the documented subset of SAM/CloudFormation that the local stack understands, and refuses
//! everything else by name, so local and deployed resources cannot silently drift apart.
//!
//! Understood: `Parameters` (String, Number; Default, AllowedValues), `Globals.Function`,
//! the intrinsics `!Ref`, `!GetAtt`, `!Sub` (and their `Ref` / `Fn::GetAtt` / `Fn::Sub` long forms),
//! and these resource types:
//! - `AWS::Serverless::Function` with `HttpApi`, `SQS` and `Schedule` events, and `Policies` in the
//!   subset `crate::iam` enforces;
//! - `AWS::Serverless::HttpApi` with JWT authorizers; its throttling (`RouteSettings`, whose every
//!   key must name a route of the template, and `DefaultRouteSettings`) and access log are not emulated;
//! - `AWS::DynamoDB::Table` with key schema, GSIs and TTL;
//! - `AWS::SQS::Queue` with visibility timeout, redrive policy and FIFO;
//! - `AWS::KMS::Key` (symmetric, HMAC, ECC signing keys);
//! - `AWS::Logs::LogGroup`, `AWS::Logs::MetricFilter` and `AWS::CloudWatch::Alarm`: deploy-only,
//!   read and not emulated (the functions' logs go to `.superpay/logs/`).
//!
//! Properties that only matter once deployed (point-in-time recovery, encryption, log groups and
//! retention, reserved concurrency, tags: the deploy-only list of each type) are read and ignored;
//! any other is refused by name. A resource's `Metadata` is free (checkov's skips live there).
//! `Outputs` are for deployment and are not evaluated here.
//!
//! One module per part: `model` (what is built), `document` (the sections and parameters),
//! `resolver` (intrinsics and local names), `values` (plain values, allowed properties), and one
//! reader per resource type (`function` with its `events`, `http_api`, `table`, `queue`, `key`);
//! log groups and alarms are checked here.

mod document;
mod events;
#[cfg(test)]
mod fixture;
mod function;
mod http_api;
mod key;
mod model;
mod queue;
mod resolver;
mod table;
mod values;

use std::collections::{HashMap, HashSet};

use serde_yaml::Value;

pub use model::{
    Function, GlobalIndex, JwtAuthorizer, Key, Queue, Redrive, Route, RouteAuth, SqsSource, Table, Template,
};
pub use resolver::{ACCOUNT, Naming, REGION, Unresolved, physical_name};

use resolver::Resolver;
use values::check_properties;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template.yaml: {0}")]
    Invalid(String),
    #[error("template.yaml: {0} is outside the subset the local stack understands ({1})")]
    Unsupported(String, &'static str),
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(message.into())
}

impl Template {
    /// The KMS keys to create before the rest can be resolved (their ids are chosen by KMS).
    pub fn keys_to_create(text: &str) -> Result<Vec<Key>, TemplateError> {
        let raw = document::read(text, &HashMap::new(), true)?;
        raw.resources
            .iter()
            .filter(|(_, kind, _)| kind == "AWS::KMS::Key")
            .map(|(id, _, resource)| key::read(id, resource))
            .collect()
    }

    pub fn parse(
        text: &str,
        stack: &str,
        overrides: &HashMap<String, String>,
        naming: &dyn Naming,
    ) -> Result<Self, TemplateError> {
        let raw = document::read(text, overrides, false)?;
        let kinds: HashMap<&str, &str> =
            raw.resources.iter().map(|(id, kind, _)| (id.as_str(), kind.as_str())).collect();
        let fifo_queues: HashSet<&str> = raw
            .resources
            .iter()
            .filter(|(_, kind, r)| {
                kind == "AWS::SQS::Queue"
                    && r.get("Properties").and_then(|p| p.get("FifoQueue")).and_then(Value::as_bool) == Some(true)
            })
            .map(|(id, _, _)| id.as_str())
            .collect();
        let resolver =
            Resolver { parameters: &raw.parameters, kinds: &kinds, stack, naming, fifo_queues: &fifo_queues };
        let mut template = Template { stack: stack.to_owned(), ..Template::default() };
        for (id, kind, resource) in &raw.resources {
            let properties = resolver.eval(resource.get("Properties").unwrap_or(&Value::Null))?;
            match kind.as_str() {
                "AWS::Serverless::Function" => {
                    template.functions.push(function::read(id, resource, &properties, &raw.globals, &resolver)?)
                }
                "AWS::Serverless::HttpApi" => http_api::read(id, &properties, &mut template)?,
                "AWS::DynamoDB::Table" => template.tables.push(table::read(id, &properties, &resolver)?),
                "AWS::SQS::Queue" => template.queues.push(queue::read(id, &properties, &resolver)?),
                "AWS::KMS::Key" => template.keys.push(key::read(id, resource)?),
                "AWS::Logs::LogGroup" => check_properties(id, &properties, &[], &["RetentionInDays", "Tags"])?,
                "AWS::Logs::MetricFilter" | "AWS::CloudWatch::Alarm" => {}
                other => {
                    return Err(TemplateError::Unsupported(format!("resource {id} of type {other}"), SUPPORTED_TYPES));
                }
            }
        }
        http_api::settle_routes(&mut template)?;
        Ok(template)
    }
}

const SUPPORTED_TYPES: &str = "AWS::Serverless::Function, AWS::Serverless::HttpApi, AWS::DynamoDB::Table, AWS::SQS::Queue, \
     AWS::KMS::Key, AWS::Logs::LogGroup, AWS::Logs::MetricFilter, AWS::CloudWatch::Alarm";

#[cfg(test)]
pub(crate) mod tests {
    use super::fixture::{Names, refused};
    use super::*;

    /// The project's template, as the stack reads it.
    pub(crate) fn project_template() -> Template {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
        let mut parameters: HashMap<String, String> =
            serde_json::from_str(include_str!("../../parameters.json")).expect("parameters.json");
        // Filled in by the running stack (its own URLs).
        for url in ["BankUrl", "PublicBaseUrl"] {
            parameters.insert(url.into(), "http://127.0.0.1".into());
        }
        Template::parse(&text, "superpay", &parameters, &Names).unwrap()
    }

    #[test]
    fn refuses_other_resource_types_and_log_group_properties_by_name() {
        assert!(refused("Type: AWS::KMS::Key", "Type: AWS::SNS::Topic").contains("AWS::SNS::Topic"));
        assert!(refused("RetentionInDays: 365", "LogGroupName: x").contains("Logs.Properties.LogGroupName"));
    }

    #[test]
    fn the_project_template_is_in_the_subset() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
        let t = project_template();
        assert!(t.functions.iter().any(|f| f.binary == "config"));
        for f in &t.functions {
            // A live attempt must never lose its idempotency lock to a retry.
            assert!(
                (f.timeout_seconds as i64) < superpay::idempotency::IN_PROGRESS_SECONDS,
                "{} Timeout",
                f.logical_id
            );
        }
        assert!(t.table("ConfigTable").is_some());
        for route in t.functions.iter().flat_map(|f| &f.routes) {
            assert!(
                route.auth != RouteAuth::Open || t.throttled_routes.contains(&route.key()),
                "{} takes no JWT: throttle it in HttpApi.RouteSettings",
                route.key()
            );
        }
        // Without a group of its own, a function logs to one Lambda creates, kept forever.
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        for (id, resource) in doc["Resources"].as_mapping().unwrap() {
            if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
                let group = match &resource["Properties"]["LoggingConfig"]["LogGroup"] {
                    Value::Tagged(reference) if reference.tag == "Ref" => reference.value.as_str(),
                    _ => None,
                };
                assert!(
                    group.is_some_and(|g| doc["Resources"][g]["Type"].as_str() == Some("AWS::Logs::LogGroup")),
                    "{}: LoggingConfig.LogGroup must be !Ref its AWS::Logs::LogGroup",
                    id.as_str().unwrap_or_default()
                );
            }
        }
    }
}
