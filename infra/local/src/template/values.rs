//! Plain values in the template: strings, numbers, key pairs, and the check that a resource names
//! only the properties its reader understands or knows to be deploy-only.

use serde_yaml::Value;

use super::{TemplateError, invalid};

pub(super) fn scalar(value: &Value) -> Result<String, TemplateError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(format!("expected a plain value, found {other:?}"))),
    }
}

pub(super) fn check_properties(
    id: &str,
    properties: &Value,
    allowed: &[&str],
    deploy_only: &[&str],
) -> Result<(), TemplateError> {
    for key in properties.as_mapping().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
        let key = key.as_str().unwrap_or_default();
        if !allowed.contains(&key) && !deploy_only.contains(&key) {
            return Err(TemplateError::Unsupported(
                format!("{id}.Properties.{key}"),
                "see infra/local/src/template/mod.rs",
            ));
        }
    }
    Ok(())
}

pub(super) fn text(value: &Value, what: &str) -> Result<String, TemplateError> {
    value.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("{what} must be a string")))
}

pub(super) fn number(value: Option<&Value>, what: &str) -> Result<Option<u64>, TemplateError> {
    value
        .map(|v| match v {
            Value::Number(n) => n.as_u64().ok_or_else(|| invalid(format!("{what} must be a whole number"))),
            Value::String(s) => s.parse().map_err(|_| invalid(format!("{what} = {s:?} is not a whole number"))),
            _ => Err(invalid(format!("{what} must be a number"))),
        })
        .transpose()
}

pub(super) fn pairs(
    value: Option<&Value>,
    name: &str,
    kind: &str,
    what: &str,
) -> Result<Vec<(String, String)>, TemplateError> {
    value
        .and_then(Value::as_sequence)
        .ok_or_else(|| invalid(format!("{what} is missing")))?
        .iter()
        .map(|entry| {
            Ok((
                text(entry.get(name).unwrap_or(&Value::Null), &format!("{what}.{name}"))?,
                text(entry.get(kind).unwrap_or(&Value::Null), &format!("{what}.{kind}"))?,
            ))
        })
        .collect()
}
