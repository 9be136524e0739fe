//! `AWS::DynamoDB::Table`: on-demand billing, key schema, global secondary indexes and TTL.

use serde_yaml::Value;

use super::TemplateError;
use super::model::{GlobalIndex, Table};
use super::resolver::{Resolver, physical_name};
use super::values::{check_properties, pairs, scalar, text};

pub(super) fn read(id: &str, properties: &Value, resolver: &Resolver) -> Result<Table, TemplateError> {
    check_properties(
        id,
        properties,
        &["BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "TimeToLiveSpecification"],
        &["PointInTimeRecoverySpecification", "SSESpecification", "Tags", "DeletionProtectionEnabled"],
    )?;
    if properties.get("BillingMode").and_then(Value::as_str) != Some("PAY_PER_REQUEST") {
        return Err(TemplateError::Unsupported(format!("{id}: provisioned capacity"), "BillingMode: PAY_PER_REQUEST"));
    }
    let global_indexes = properties
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(|index| {
            let projection = index.get("Projection");
            Ok(GlobalIndex {
                name: text(index.get("IndexName").unwrap_or(&Value::Null), &format!("{id} IndexName"))?,
                key_schema: pairs(
                    index.get("KeySchema"),
                    "AttributeName",
                    "KeyType",
                    &format!("{id} index KeySchema"),
                )?,
                projection: projection
                    .and_then(|p| p.get("ProjectionType"))
                    .and_then(Value::as_str)
                    .unwrap_or("ALL")
                    .to_owned(),
                non_key_attributes: projection
                    .and_then(|p| p.get("NonKeyAttributes"))
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().map(scalar).collect::<Result<_, _>>())
                    .transpose()?
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<_, TemplateError>>()?;
    let ttl = properties.get("TimeToLiveSpecification");
    Ok(Table {
        logical_id: id.to_owned(),
        name: physical_name(resolver.stack, id),
        attributes: pairs(
            properties.get("AttributeDefinitions"),
            "AttributeName",
            "AttributeType",
            &format!("{id}.AttributeDefinitions"),
        )?,
        key_schema: pairs(properties.get("KeySchema"), "AttributeName", "KeyType", &format!("{id}.KeySchema"))?,
        global_indexes,
        ttl_attribute: ttl
            .filter(|t| t.get("Enabled").and_then(Value::as_bool) == Some(true))
            .map(|t| text(t.get("AttributeName").unwrap_or(&Value::Null), "TimeToLiveSpecification.AttributeName"))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{base, refused};

    #[test]
    fn reads_indexes_and_ttl() {
        let t = base();
        let table = t.table("Things").unwrap();
        assert_eq!(table.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(table.global_indexes[0].projection, "KEYS_ONLY");
    }

    #[test]
    fn refuses_provisioned_capacity() {
        assert!(refused("BillingMode: PAY_PER_REQUEST", "BillingMode: PROVISIONED").contains("PAY_PER_REQUEST"));
    }
}
