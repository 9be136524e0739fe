//! The local stack enforces each function's IAM policy from template.yaml: a call through a
//! function's AWS endpoint that its policy does not grant fails as AWS fails it, changes nothing,
//! and is logged with the function, action and resource.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use superpay_e2e::{Env, unique};

/// A DynamoDB client that calls as `function` does: through its proxy.
async fn dynamodb_as(function: &str) -> aws_sdk_dynamodb::Client {
    let env = Env::get();
    let endpoint = env.stack.aws_endpoints.get(function).expect("every function has an AWS endpoint");
    let config = aws_sdk_dynamodb::config::Builder::from(&env.stack.sdk_config().await).endpoint_url(endpoint).build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

#[tokio::test]
async fn a_call_the_policy_does_not_grant_is_refused_as_aws_refuses_it_and_logged() {
    let env = Env::get();
    let wallet = dynamodb_as("WalletFunction").await;
    let ledger = env.table("LedgerTable");
    let pk = unique("iam-probe");

    // WalletFunction may read the ledger (BatchGetItem, Query), never write it.
    let query = wallet
        .query()
        .table_name(ledger)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.clone()))
        .send()
        .await;
    assert!(query.is_ok(), "a granted call goes through: {query:?}");

    let put = wallet
        .put_item()
        .table_name(ledger)
        .item("pk", AttributeValue::S(pk.clone()))
        .item("sk", AttributeValue::S("probe".into()))
        .send()
        .await
        .expect_err("PutItem is not in WalletFunction's policy");
    assert_eq!(put.code(), Some("AccessDeniedException"), "{put:?}");
    let message = put.message().unwrap_or_default();
    assert!(message.contains("dynamodb:PutItem") && message.contains(ledger), "{message}");
    assert!(env.partition("LedgerTable", "pk", &pk).await.is_empty(), "nothing was written");

    // A transaction needs each item's own action: ConfigFunction may PutItem the config table
    // but not write the ledger, so the whole transaction is refused.
    let config = dynamodb_as("ConfigFunction").await;
    let put_in = |table: &str| {
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .put(
                aws_sdk_dynamodb::types::Put::builder()
                    .table_name(table)
                    .item("pk", AttributeValue::S(pk.clone()))
                    .item("sk", AttributeValue::S("probe".into()))
                    .item("group", AttributeValue::S(pk.clone()))
                    .item("version", AttributeValue::N("0".into()))
                    .build()
                    .expect("a put"),
            )
            .build()
    };
    let transaction = config
        .transact_write_items()
        .transact_items(put_in(env.table("ConfigTable")))
        .transact_items(put_in(ledger))
        .send()
        .await
        .expect_err("the ledger item is not ConfigFunction's to write");
    assert_eq!(transaction.code(), Some("AccessDeniedException"), "{transaction:?}");
    assert!(env.partition("LedgerTable", "pk", &pk).await.is_empty(), "nothing was written");

    let log = std::fs::read_to_string(env.stack.logs.join(superpay_local::stack::ACCESS_DENIED_LOG))
        .expect("refusals are logged");
    let logged: Vec<serde_json::Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    for (function, action) in [("WalletFunction", "dynamodb:PutItem"), ("ConfigFunction", "dynamodb:PutItem")] {
        assert!(
            logged.iter().any(|l| l["function"] == function
                && l["action"] == action
                && l["resource"].as_str().is_some_and(|r| r.ends_with(ledger))),
            "{function} {action} on {ledger} is logged: {log}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn neither_transfer_server_may_write_the_other_sides_listings_nor_sessions_the_operations() {
    let env = Env::get();
    // A transfer instruction's session and its operation read each other, and write only their own.
    for (function, theirs) in [
        ("TransferPlatformFunction", "TransferListingsTable"),
        ("TransferFunction", "PlatformListingsTable"),
        ("PaymentSessionsFunction", "TransferOperationsTable"),
        ("TransferFunction", "PaymentSessionsTable"),
    ] {
        let id = unique("forged");
        let put = dynamodb_as(function)
            .await
            .put_item()
            .table_name(env.table(theirs))
            .item("id", AttributeValue::S(id.clone()))
            .send()
            .await
            .expect_err("the other side's table is not this function's to write");
        assert_eq!(put.code(), Some("AccessDeniedException"), "{function}: {put:?}");
        assert!(env.partition(theirs, "id", &id).await.is_empty(), "nothing was written");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_transfer_platform_cannot_unwrap_a_transfer_signers_key() {
    use aws_sdk_kms::primitives::Blob;
    let env = Env::get();
    let shop = crate::purchases::merchant().await;
    let signer = crate::instructions::transfer_signer(&shop).await;
    let id = signer.key_id.split_once('.').map(|(id, _)| id).expect("a terminal key id");
    let item = env.partition("TerminalsTable", "id", id).await.pop().expect("the signer's item");
    let ciphertext = item["key_ciphertext"].as_b().expect("a wrapped key").clone().into_inner();
    let endpoint = env.stack.aws_endpoints.get("TransferPlatformFunction").expect("its AWS endpoint");
    let config = aws_sdk_kms::config::Builder::from(&env.stack.sdk_config().await).endpoint_url(endpoint).build();
    let decrypt = aws_sdk_kms::Client::from_conf(config)
        .decrypt()
        .key_id(env.stack.keys.get("PartyKeysKey").expect("the party keys' key"))
        .ciphertext_blob(Blob::new(ciphertext))
        .encryption_context("owner", format!("transfer-signer/{id}"))
        .send()
        .await
        .expect_err("only the transfer side may unwrap a transfer signer's key");
    assert_eq!(decrypt.code(), Some("AccessDeniedException"), "{decrypt:?}");
}
