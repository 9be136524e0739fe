//! The floor every function is measured against (docs/decisions.md, "Rust on Lambda"): a Lambda
//! function that builds aws-config and DynamoDB, SQS and KMS clients at init and does one
//! consistent GetItem per invocation (`BENCH_TABLE`, key `m_demo`), with nothing else.

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    // Built and kept, as a function using all three services would.
    let _sqs = aws_sdk_sqs::Client::new(&config);
    let _kms = aws_sdk_kms::Client::new(&config);
    let table = std::env::var("BENCH_TABLE")?;
    let (dynamodb, table) = (&dynamodb, &table);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let key = AttributeValue::S("m_demo".into());
        let item = dynamodb.get_item().table_name(table).key("id", key).consistent_read(true).send().await?;
        Ok::<Value, lambda_runtime::Error>(json!({ "found": item.item.is_some() }))
    }))
    .await
}
