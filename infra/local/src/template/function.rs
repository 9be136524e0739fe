//! `AWS::Serverless::Function`: its binary, settings merged over `Globals.Function`, environment,
//! events (read by `super::events`) and `Policies` (read by `crate::iam`).

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::events;
use super::model::Function;
use super::resolver::Resolver;
use super::values::{check_properties, number, scalar};
use super::{TemplateError, invalid};
use crate::iam::Policy;

pub(super) fn read(
    id: &str,
    resource: &Value,
    properties: &Value,
    globals: &serde_yaml::Mapping,
    resolver: &Resolver,
) -> Result<Function, TemplateError> {
    const ALLOWED: &[&str] = &[
        "CodeUri",
        "Handler",
        "Runtime",
        "Architectures",
        "MemorySize",
        "Timeout",
        "Environment",
        "Events",
        "Description",
        "Policies",
    ];
    const DEPLOY_ONLY: &[&str] = &["ReservedConcurrentExecutions", "Tags", "LoggingConfig"];
    check_properties(id, properties, ALLOWED, DEPLOY_ONLY)?;
    let globals = resolver.eval(&Value::Mapping(globals.clone()))?;
    // SAM's Globals have no Policies: each function's role is its own.
    let global_settings: Vec<&str> = ALLOWED.iter().copied().filter(|p| *p != "Policies").collect();
    check_properties("Globals.Function", &globals, &global_settings, DEPLOY_ONLY)?;
    let setting = |name: &str| properties.get(name).or_else(|| globals.get(name));
    let binary = resource
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{id}: Metadata.BuildProperties.Binary names no cargo binary")))?;
    let mut environment = BTreeMap::new();
    for source in [&globals, properties] {
        if let Some(vars) = source.get("Environment").and_then(|e| e.get("Variables")).and_then(Value::as_mapping) {
            for (k, v) in vars {
                environment.insert(scalar(k)?, scalar(v)?);
            }
        }
    }
    let mut routes = Vec::new();
    let mut sqs_sources = Vec::new();
    let mut schedules = Vec::new();
    let mut sqs_event = false;
    for (name, event) in properties.get("Events").and_then(Value::as_mapping).into_iter().flatten() {
        let name = format!("{id}.Events.{}", name.as_str().unwrap_or("?"));
        let props = event.get("Properties").unwrap_or(&Value::Null);
        match event.get("Type").and_then(Value::as_str) {
            Some("HttpApi") => routes.push(events::route(&name, props, resolver)?),
            Some("SQS") => {
                sqs_event = true;
                sqs_sources.extend(events::sqs_source(&name, props, resolver)?);
            }
            Some("Schedule") => schedules.extend(events::schedule(&name, props)?),
            other => {
                return Err(TemplateError::Unsupported(
                    format!("{name} of type {other:?}"),
                    "HttpApi, SQS and Schedule events",
                ));
            }
        }
    }
    sqs_sources.sort_by(|a, b| a.queue.cmp(&b.queue));
    Ok(Function {
        logical_id: id.to_owned(),
        binary: binary.to_owned(),
        environment,
        timeout_seconds: number(setting("Timeout"), "Timeout")?.unwrap_or(3),
        memory_mb: number(setting("MemorySize"), "MemorySize")?.unwrap_or(128),
        routes,
        sqs_sources,
        schedules,
        policy: Policy::read(id, properties.get("Policies"), sqs_event)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{base, refused};

    #[test]
    fn reads_settings_over_the_globals() {
        let t = base();
        let f = &t.functions[0];
        assert_eq!((f.binary.as_str(), f.timeout_seconds, f.memory_mb), ("fn-bin", 7, 256));
        assert_eq!(f.environment["SHARED"], "mine", "a function's variable overrides the global one");
    }

    #[test]
    fn refuses_other_properties_by_name() {
        assert!(refused("MemorySize: 256", "MemorySize: 256\n      Layers: [x]").contains("Fn.Properties.Layers"));
    }
}
