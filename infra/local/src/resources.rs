//! Creates the template's tables, queues and keys in the emulators, with the same key schemas,
//! indexes, TTL, visibility timeouts and redrive policies the deployed stack gets.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TableStatus, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::template::{GlobalIndex, Key, Queue, Table};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ResourceError(pub String);

fn err(context: &str, e: impl std::fmt::Display) -> ResourceError {
    ResourceError(format!("{context}: {e}"))
}

fn keys(schema: &[(String, String)]) -> Result<Vec<KeySchemaElement>, ResourceError> {
    schema
        .iter()
        .map(|(name, kind)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind.as_str()))
                .build()
                .map_err(|e| err("key schema", e))
        })
        .collect()
}

fn attribute_definitions(table: &Table) -> Result<Vec<AttributeDefinition>, ResourceError> {
    table
        .attributes
        .iter()
        .map(|(name, kind)| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()
                .map_err(|e| err("attribute definition", e))
        })
        .collect()
}

fn global_index(index: &GlobalIndex) -> Result<GlobalSecondaryIndex, ResourceError> {
    let projection = Projection::builder()
        .projection_type(ProjectionType::from(index.projection.as_str()))
        .set_non_key_attributes((!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()))
        .build();
    GlobalSecondaryIndex::builder()
        .index_name(&index.name)
        .set_key_schema(Some(keys(&index.key_schema)?))
        .projection(projection)
        .build()
        .map_err(|e| err("index", e))
}

/// Creates `table` unless it exists (a persistent local database keeps it across runs); a table
/// that exists gets the indexes the template added since, as CloudFormation would add them.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &Table) -> Result<(), ResourceError> {
    if let Ok(described) = client.describe_table().table_name(&table.name).send().await {
        let existing: Vec<&str> = described
            .table()
            .map(|t| t.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect())
            .unwrap_or_default();
        for index in table.global_indexes.iter().filter(|i| !existing.contains(&i.name.as_str())) {
            let create = CreateGlobalSecondaryIndexAction::builder()
                .index_name(&index.name)
                .set_key_schema(Some(keys(&index.key_schema)?))
                .set_projection(global_index(index)?.projection)
                .build()
                .map_err(|e| err("index", e))?;
            client
                .update_table()
                .table_name(&table.name)
                .set_attribute_definitions(Some(attribute_definitions(table)?))
                .global_secondary_index_updates(GlobalSecondaryIndexUpdate::builder().create(create).build())
                .send()
                .await
                .map_err(|e| {
                    err(
                        &format!("adding index {} to {} (a local database older than template.yaml: delete .superpay/data to start afresh)", index.name, table.name),
                        aws_sdk_dynamodb::error::DisplayErrorContext(e),
                    )
                })?;
        }
        return Ok(());
    }
    let mut request = client
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys(&table.key_schema)?))
        .set_attribute_definitions(Some(attribute_definitions(table)?));
    for index in &table.global_indexes {
        request = request.global_secondary_indexes(global_index(index)?);
    }
    request
        .send()
        .await
        .map_err(|e| err(&format!("CreateTable {}", table.name), aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    // CreateTable answers CREATING, as AWS does: wait for ACTIVE.
    for _ in 0..100 {
        let described =
            client.describe_table().table_name(&table.name).send().await.map_err(|e| err("DescribeTable", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(attribute) = &table.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&table.name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .map_err(|e| err("TTL", e))?,
            )
            .send()
            .await
            .map_err(|e| err("UpdateTimeToLive", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// Creates every queue, dead-letter queues first so redrive policies can name them.
pub async fn create_queues(
    client: &aws_sdk_sqs::Client,
    queues: &[Queue],
) -> Result<HashMap<String, String>, ResourceError> {
    let mut urls = HashMap::new();
    let mut ordered: Vec<&Queue> = queues.iter().collect();
    ordered.sort_by_key(|q| q.redrive.is_some());
    for queue in ordered {
        let mut request = client.create_queue().queue_name(&queue.name);
        if let Some(seconds) = queue.visibility_timeout {
            request = request.attributes(QueueAttributeName::VisibilityTimeout, seconds.to_string());
        }
        if let Some(seconds) = queue.message_retention {
            request = request.attributes(QueueAttributeName::MessageRetentionPeriod, seconds.to_string());
        }
        if queue.fifo {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        if queue.content_based_deduplication {
            request = request.attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        }
        if let Some(redrive) = &queue.redrive {
            let dlq = queues.iter().find(|q| q.logical_id == redrive.dead_letter_queue).ok_or_else(|| {
                ResourceError(format!("{}: no queue {}", queue.logical_id, redrive.dead_letter_queue))
            })?;
            let policy = serde_json::json!({
                "deadLetterTargetArn": format!("arn:aws:sqs:{}:{}:{}", crate::template::REGION, crate::template::ACCOUNT, dlq.name),
                "maxReceiveCount": redrive.max_receive_count,
            });
            request = request.attributes(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let created = request
            .send()
            .await
            .map_err(|e| err(&format!("CreateQueue {}", queue.name), aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        urls.insert(queue.logical_id.clone(), created.queue_url().unwrap_or_default().to_owned());
    }
    Ok(urls)
}

/// Creates each KMS key and returns logical id -> key id.
pub async fn create_keys(client: &aws_sdk_kms::Client, keys: &[Key]) -> Result<HashMap<String, String>, ResourceError> {
    let mut ids = HashMap::new();
    for key in keys {
        let created = client
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::from(key.spec.as_str()))
            .key_usage(aws_sdk_kms::types::KeyUsageType::from(key.usage.as_str()))
            .description(format!("superpay local {}", key.logical_id))
            .send()
            .await
            .map_err(|e| err(&format!("CreateKey {}", key.logical_id), aws_sdk_kms::error::DisplayErrorContext(e)))?;
        let id = created.key_metadata().map(|m| m.key_id().to_owned()).unwrap_or_default();
        ids.insert(key.logical_id.clone(), id);
    }
    Ok(ids)
}
