//! The document's sections before any resource is read: the top level (no `Conditions`, `Mappings`
//! or `Rules`), `Parameters` with their local values, `Globals.Function`, and each resource's
//! logical id, type and attributes.

use std::collections::HashMap;

use serde_yaml::Value;

use super::values::scalar;
use super::{TemplateError, invalid};

pub(super) struct Raw {
    pub(super) parameters: HashMap<String, String>,
    pub(super) globals: serde_yaml::Mapping,
    pub(super) resources: Vec<(String, String, Value)>,
}

pub(super) fn read(
    text: &str,
    overrides: &HashMap<String, String>,
    lenient_parameters: bool,
) -> Result<Raw, TemplateError> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let top = doc.as_mapping().ok_or_else(|| invalid("the document is not a mapping"))?;
    for key in top.keys() {
        let key = key.as_str().unwrap_or_default();
        if ![
            "AWSTemplateFormatVersion",
            "Transform",
            "Description",
            "Parameters",
            "Globals",
            "Resources",
            "Outputs",
            "Metadata",
        ]
        .contains(&key)
        {
            return Err(TemplateError::Unsupported(
                format!("top-level section {key}"),
                "no Conditions, Mappings or Rules",
            ));
        }
    }
    let mut parameters = HashMap::new();
    if let Some(declared) = doc.get("Parameters").and_then(Value::as_mapping) {
        for (name, spec) in declared {
            let name = name.as_str().ok_or_else(|| invalid("a parameter name is not a string"))?;
            let kind = spec.get("Type").and_then(Value::as_str).unwrap_or_default();
            if !["String", "Number"].contains(&kind) {
                return Err(TemplateError::Unsupported(
                    format!("parameter {name} of type {kind:?}"),
                    "String and Number parameters",
                ));
            }
            let value = match overrides.get(name) {
                Some(v) => Some(v.clone()),
                None => spec.get("Default").map(scalar).transpose()?,
            };
            let Some(value) = value else {
                if lenient_parameters {
                    continue;
                }
                return Err(invalid(format!(
                    "parameter {name} has no Default and no local value (infra/local/parameters.json)"
                )));
            };
            if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_sequence) {
                let allowed: Vec<String> = allowed.iter().map(scalar).collect::<Result<_, _>>()?;
                if !allowed.contains(&value) {
                    return Err(invalid(format!("parameter {name} = {value:?} is not one of {allowed:?}")));
                }
            }
            if kind == "Number" && value.parse::<f64>().is_err() {
                return Err(invalid(format!("parameter {name} = {value:?} is not a number")));
            }
            parameters.insert(name.to_owned(), value);
        }
    }
    let globals = match doc.get("Globals") {
        None => serde_yaml::Mapping::new(),
        Some(globals) => {
            let globals = globals.as_mapping().ok_or_else(|| invalid("Globals is not a mapping"))?;
            for key in globals.keys() {
                if key.as_str() != Some("Function") {
                    return Err(TemplateError::Unsupported(
                        format!("Globals.{}", key.as_str().unwrap_or("?")),
                        "Globals.Function only",
                    ));
                }
            }
            globals.get("Function").and_then(Value::as_mapping).cloned().unwrap_or_default()
        }
    };
    let mut resources = Vec::new();
    for (id, resource) in doc.get("Resources").and_then(Value::as_mapping).ok_or_else(|| invalid("no Resources"))? {
        let id = id.as_str().ok_or_else(|| invalid("a resource id is not a string"))?.to_owned();
        for key in resource.as_mapping().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
            let key = key.as_str().unwrap_or_default();
            if !["Type", "Properties", "Metadata", "DependsOn", "DeletionPolicy", "UpdateReplacePolicy"].contains(&key)
            {
                return Err(TemplateError::Unsupported(
                    format!("{id}.{key}"),
                    "Type, Properties, Metadata, DependsOn, DeletionPolicy, UpdateReplacePolicy",
                ));
            }
        }
        let kind = resource.get("Type").and_then(Value::as_str).ok_or_else(|| invalid(format!("{id} has no Type")))?;
        resources.push((id, kind.to_owned(), resource.clone()));
    }
    Ok(Raw { parameters, globals, resources })
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{BASE, base, parse, refused};

    #[test]
    fn parameters_take_their_default_or_local_value() {
        assert_eq!(base().functions[0].environment["LEVEL"], "info");
    }

    #[test]
    fn refuses_other_sections_and_parameters_without_a_valid_value() {
        assert!(refused("Transform:", "Conditions: {}\nTransform:").contains("Conditions"));
        assert!(refused("Default: info,", "Default: loud,").contains("not one of"));
        assert!(
            parse(&BASE.replace("  Issuer: {Type: String}\n", "  Issuer: {Type: String}\n  Missing: {Type: String}\n"))
                .unwrap_err()
                .to_string()
                .contains("Missing")
        );
    }
}
