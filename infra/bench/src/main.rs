//! The floor every function is measured against (docs/decisions.md, "Rust on Lambda"): a Lambda
//! function that builds aws-config and DynamoDB, SQS and KMS clients at init and does one
//! consistent GetItem per invocation (`BENCH_TABLE`, key `m_demo`), with nothing else.
//!
//! `BENCH_READS=n` makes it n GetItems, one after another, or all at once with `BENCH_AT_ONCE=1`:
//! what a first event's calls cost made in turn on one connection, against at once on as many.

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
    let reads: usize = std::env::var("BENCH_READS").map_or(Ok(1), |n| n.parse())?;
    let at_once = std::env::var("BENCH_AT_ONCE").is_ok_and(|v| v == "1");
    let (dynamodb, table) = (&dynamodb, &table);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let mut found = true;
        if at_once {
            // Polled together in this one task, as `tokio::join!` polls a function's reads: spawned,
            // they could spread over the machine's cores.
            let reads = (0..reads).map(|_| read(dynamodb, table));
            for read in futures_util::future::join_all(reads).await {
                found &= read?;
            }
        } else {
            for _ in 0..reads {
                found &= read(dynamodb, table).await?;
            }
        }
        Ok::<Value, lambda_runtime::Error>(json!({ "found": found }))
    }))
    .await
}

async fn read(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> Result<bool, lambda_runtime::Error> {
    let key = AttributeValue::S("m_demo".into());
    let item = dynamodb.get_item().table_name(table).key("id", key).consistent_read(true).send().await?;
    Ok(item.item.is_some())
}
