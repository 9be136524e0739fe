//! The merchant registry through the local HTTP API: registration with a KMS-wrapped key shown
//! once, status changes, and the refusals.

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay::idempotency::{IdempotencyKey, Scope};
use superpay_e2e::{Env, unique};

pub async fn register(body: &Value, key: &str) -> reqwest::Response {
    let env = Env::get();
    env.http()
        .post(env.url("/merchants"))
        .bearer_auth(env.admin_token())
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("the API answers")
}

fn tea_shop() -> Value {
    json!({"name": "Tea Shop", "product_server_url": "http://127.0.0.1:9/shop", "currency": "USD"})
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn registration_shows_the_key_once_and_stores_it_wrapped() {
    let env = Env::get();
    let key = unique("key");
    let first = register(&tea_shop(), &key).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let merchant: Value = first.json().await.unwrap();
    let id = merchant["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (merchant["status"].as_str(), merchant["key_id"].as_str()),
        (Some("active"), Some(format!("{id}.k1").as_str()))
    );
    let secret = merchant["secret"].as_str().expect("the secret, this once").to_owned();
    let plaintext = base64::engine::general_purpose::STANDARD.decode(&secret).unwrap();
    assert_eq!(plaintext.len(), 32);

    // Stored: only KMS's ciphertext, which decrypts (bound to this merchant) to the shown key.
    let item = env
        .dynamodb()
        .await
        .get_item()
        .table_name(env.table("MerchantsTable"))
        .key("id", AttributeValue::S(id.clone()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the merchant item");
    let ciphertext = item["key_ciphertext"].as_b().unwrap().clone();
    assert_ne!(ciphertext.as_ref(), plaintext.as_slice());
    assert!(!format!("{item:?}").contains(&secret));
    let kms = env.stack.kms().await;
    let decrypted = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext.as_ref()))
        .encryption_context("owner", format!("merchant/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(decrypted.plaintext().unwrap().as_ref(), plaintext.as_slice());
    let foreign = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(ciphertext.as_ref()))
        .encryption_context("owner", "merchant/someone-else")
        .send()
        .await;
    assert!(foreign.is_err(), "the key is bound to its merchant");

    // A retry replays the answer without the secret, and the idempotency record never held it.
    let replay = register(&tea_shop(), &key).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!((replayed["id"].as_str(), replayed["secret"].clone()), (Some(id.as_str()), Value::Null));
    let scope = Scope {
        caller: "e2e-admin".into(),
        route: "POST /merchants".into(),
        key: IdempotencyKey::parse(Some(&key)).unwrap(),
    };
    let record = env
        .dynamodb()
        .await
        .get_item()
        .table_name(env.table("IdempotencyTable"))
        .key("id", AttributeValue::S(scope.record_id()))
        .send()
        .await
        .unwrap()
        .item
        .expect("the idempotency record");
    assert!(!format!("{record:?}").contains(&secret), "the secret is not kept in clear");

    let shown: Value = env.get_json(&format!("/merchants/{id}"), &env.admin_token()).await;
    assert_eq!(shown["name"], "Tea Shop");
    assert!(shown.get("secret").is_none());
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn suspension_is_audited_and_bad_registrations_are_refused() {
    let env = Env::get();
    let created: Value = register(&tea_shop(), &unique("key")).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let set = |id: String, body: Value| {
        env.http().post(env.url(&format!("/merchants/{id}/status"))).bearer_auth(env.admin_token()).json(&body).send()
    };
    let suspended: Value = set(id.to_owned(), json!({"status": "suspended"})).await.unwrap().json().await.unwrap();
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(set(id.to_owned(), json!({"status": "closed"})).await.unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(set(unique("m"), json!({"status": "active"})).await.unwrap().status(), StatusCode::NOT_FOUND);
    let audit = env.partition("AuditTable", "resource", &format!("merchant/{id}")).await;
    let actions: Vec<&str> = audit.iter().map(|i| i["action"].as_s().unwrap().as_str()).collect();
    assert_eq!(actions, ["merchant.register", "merchant.status"]);

    for (body, code) in [
        (json!({"name": "x", "product_server_url": "ftp://x", "currency": "USD"}), "invalid_product_server_url"),
        (json!({"name": "x", "product_server_url": "https://x.example", "currency": "ZZZ"}), "unknown_currency"),
        (json!({"name": "", "product_server_url": "https://x.example", "currency": "USD"}), "invalid_merchant_name"),
        (
            json!({"name": "Shop\u{202e}", "product_server_url": "https://x.example", "currency": "USD"}),
            "invalid_merchant_name",
        ),
        (
            json!({"name": "x", "product_server_url": "https://x.example", "currency": "USD", "extra": 1}),
            "malformed_json",
        ),
    ] {
        let response = register(&body, &unique("key")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.json::<Value>().await.unwrap()["code"], code, "{body}");
    }
    let no_key =
        env.http().post(env.url("/merchants")).bearer_auth(env.admin_token()).json(&tea_shop()).send().await.unwrap();
    assert_eq!(no_key.json::<Value>().await.unwrap()["code"], "idempotency_key_missing");
    let as_user = env
        .http()
        .post(env.url("/merchants"))
        .bearer_auth(env.user_token())
        .header("idempotency-key", unique("key"))
        .json(&tea_shop())
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_terminal_gets_its_own_key_once() {
    let env = Env::get();
    let created: Value = register(&tea_shop(), &unique("key")).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let key = unique("key");
    let add = || {
        env.http()
            .post(env.url(&format!("/merchants/{id}/terminals")))
            .bearer_auth(env.admin_token())
            .header("idempotency-key", &key)
            .send()
    };
    let first: Value = add().await.unwrap().json().await.unwrap();
    let terminal = first["id"].as_str().unwrap();
    assert_eq!(first["merchant_id"], id);
    assert_eq!(first["key_id"], format!("{terminal}.k1"));
    let secret = first["secret"].as_str().unwrap();
    assert_ne!(secret, created["secret"].as_str().unwrap(), "its own key, not the merchant's");
    let replay: Value = add().await.unwrap().json().await.unwrap();
    assert_eq!((replay["id"].as_str(), replay["secret"].clone()), (Some(terminal), Value::Null));
    let audit = env.partition("AuditTable", "resource", &format!("merchant/{id}")).await;
    assert!(audit.iter().any(|i| i["action"].as_s().unwrap() == "terminal.register"));
    let unknown = env
        .http()
        .post(env.url("/merchants/m_nobody/terminals"))
        .bearer_auth(env.admin_token())
        .header("idempotency-key", unique("key"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}
