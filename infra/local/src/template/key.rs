//! `AWS::KMS::Key`: its spec and usage (symmetric, HMAC, ECC signing keys). KMS chooses the ids, so
//! the keys are read before anything else (`Template::keys_to_create`) and created first.

use serde_yaml::Value;

use super::TemplateError;
use super::model::Key;
use super::values::check_properties;

pub(super) fn read(id: &str, resource: &Value) -> Result<Key, TemplateError> {
    let properties = resource.get("Properties").unwrap_or(&Value::Null);
    check_properties(
        id,
        properties,
        &["KeySpec", "KeyUsage", "Description"],
        &["KeyPolicy", "EnableKeyRotation", "Tags", "PendingWindowInDays"],
    )?;
    let spec = properties.get("KeySpec").and_then(Value::as_str).unwrap_or("SYMMETRIC_DEFAULT").to_owned();
    let usage = properties.get("KeyUsage").and_then(Value::as_str).unwrap_or("ENCRYPT_DECRYPT").to_owned();
    Ok(Key { logical_id: id.to_owned(), spec, usage })
}

#[cfg(test)]
mod tests {
    use super::super::Template;
    use super::super::fixture::{BASE, base};

    #[test]
    fn reads_the_key_spec_with_its_default() {
        assert_eq!(base().keys[0].spec, "SYMMETRIC_DEFAULT");
        let keys = Template::keys_to_create(BASE).unwrap();
        assert_eq!((keys[0].logical_id.as_str(), keys[0].usage.as_str()), ("Secrets", "ENCRYPT_DECRYPT"));
    }
}
