//! Input validation through the local stack: ids from outside follow one rule (`shared/src/ids.rs`),
//! amounts one grammar (`shared/src/money.rs`), bodies a size limit (the function's 256 KiB, then
//! Lambda's 6 MiB at the gateway). Each refusal is answered before anything is read or written.

use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::idempotency::{IdempotencyKey, Scope};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::purchases::{balance, buy, funded_user, merchant, purchase};

/// Checks that `user`'s purchase with `key` left nothing behind: no idempotency record for the
/// key, no order of the user's, the wallet as funded (one posting, `funded` USD).
async fn nothing_changed(user: &str, key: &str, funded: Decimal) {
    let env = Env::get();
    let scope = Scope {
        caller: user.to_owned(),
        route: "POST /purchases".to_owned(),
        key: IdempotencyKey::parse(Some(key)).unwrap(),
    };
    assert!(env.partition("IdempotencyTable", "id", &scope.record_id()).await.is_empty(), "a record for {key}");
    let orders: Vec<_> = env
        .dynamodb()
        .await
        .scan()
        .table_name(env.table("OrdersTable"))
        .filter_expression("#u = :u")
        .expression_attribute_names("#u", "user")
        .expression_attribute_values(":u", AttributeValue::S(user.to_owned()))
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<_, _>>()
        .await
        .unwrap();
    assert!(orders.is_empty(), "{user} has orders: {orders:?}");
    let wallet = env.ledger().await.account(&AccountId::wallet(user)).await.unwrap().unwrap();
    assert_eq!((wallet.balance, wallet.sequence), (funded, 1), "the wallet moved");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn overlong_ids_are_refused_before_any_read() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    let long = "m".repeat(10_000);

    // In a body: the purchase names a 10,000-character merchant.
    let key = unique("key");
    let mut body = purchase(&shop, "green-tea", "1.00");
    body["merchant_id"] = json!(long);
    let (status, problem) = buy(&user, &body, &key).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_id")), "{problem}");
    assert_eq!(problem["field"], "merchant_id");
    assert!(problem["detail"].as_str().unwrap().contains("1 to 128 characters"), "{problem}");
    nothing_changed(&user, &key, Decimal::new(1000, 2)).await;

    // In a path: a 10,000-character order id; and one with a character no id has.
    for id in [long.as_str(), "o_1%20x"] {
        let response = env
            .http()
            .get(env.url(&format!("/purchases/{id}")))
            .bearer_auth(env.token(&user, &[]))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{id}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            (problem["code"].as_str(), problem["field"].as_str()),
            (Some("invalid_id"), Some("path parameter {id}"))
        );
    }

    // In a signature: a 10,000-character key id, refused before the key is looked up.
    let path = "/merchant/orders/o_1/decision";
    let body = json!({"decision": "confirm"}).to_string();
    let mut signature = superpay::crypto::Signature::create(
        &shop.key_id,
        &superpay::crypto::Key::random(),
        "POST",
        path,
        body.as_bytes(),
        superpay::clock::now_epoch_seconds(),
    );
    // And key ids that name no owner (`.k1`), which would reach a read as an empty key.
    for key_id in [long.as_str(), ".k1", "."] {
        signature.key_id = key_id.to_owned();
        let request = env.http().post(env.url(path)).body(body.clone());
        let response = env.with_signature(request, &signature).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{key_id:.20}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(
            (problem["code"].as_str(), problem["field"].as_str()),
            (Some("invalid_id"), Some("x-superpay-key-id"))
        );
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn amounts_have_one_spelling() {
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    for amount in ["1.", ".5", "+1.00", "01.00", "1.000", " 1.00"] {
        let key = unique("key");
        let (status, problem) = buy(&user, &purchase(&shop, "green-tea", amount), &key).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{amount:?}: {problem}");
        let code = if amount == "1.000" { "amount_too_many_decimals" } else { "amount_not_decimal_string" };
        assert_eq!(problem["code"], code, "{amount:?}");
        nothing_changed(&user, &key, Decimal::new(1000, 2)).await;
    }
    // The canonical spelling buys.
    let (status, order) = buy(&user, &purchase(&shop, "green-tea", "1.00"), &unique("key")).await;
    assert_eq!((status, order["state"].as_str()), (StatusCode::CREATED, Some("paid")), "{order}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(900, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn bodies_over_the_limit_are_refused_unread() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    // A purchase padded to `bytes`, sent with its own key.
    let send_padded = |bytes: usize| {
        let mut body = purchase(&shop, "green-tea", "1.00");
        body["product_id"] = json!("x".repeat(bytes));
        let key = unique("key");
        let request = env.http().post(env.url("/purchases")).bearer_auth(env.token(&user, &[]));
        async move { (request.header("idempotency-key", &key).json(&body).send().await.unwrap(), key) }
    };

    // 300 KB: the function's own limit (256 KiB), stated in the answer.
    let (response, key) = send_padded(300 * 1024).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await.unwrap();
    assert_eq!((problem["code"].as_str(), problem["limit_bytes"].as_u64()), (Some("body_too_large"), Some(262_144)));
    assert!(problem["detail"].as_str().unwrap().contains("at most 262144 bytes"), "{problem}");
    nothing_changed(&user, &key, Decimal::new(1000, 2)).await;

    // 7 MB: over Lambda's payload quota, so the gateway answers, as API Gateway does, and the
    // function never runs.
    let (response, key) = send_padded(7 * 1024 * 1024).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"message": "Request Entity Too Large"}));
    nothing_changed(&user, &key, Decimal::new(1000, 2)).await;
}
