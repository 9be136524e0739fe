//! Capability 1, payment sessions, through the local HTTP API: the server decides how the client
//! loads the payment UI from the policy (config group payment-sessions), fixes what is paid, gives
//! the fallback chain of the error-flow table, and moves no money.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::config::publish_over;
use crate::purchases::{TestMerchant, balance, funded_user, merchant, merchant_named};

fn client(installed: bool, network: &str) -> Value {
    json!({"platform": "android", "payment_app": {"installed": installed, "version": installed.then_some("9.1.0")},
           "network": network, "free_memory_mb": 2048})
}

fn purchase(shop: &TestMerchant, amount: &str) -> Value {
    json!({"kind": "purchase", "merchant_id": shop.id, "product_id": "green-tea", "quantity": 2,
           "amount": {"amount": amount, "currency": "USD"}})
}

async fn start(user: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), "/payment-sessions", Some(body), Some(key)).await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_session_decides_the_loading_process_fixes_what_is_paid_and_moves_nothing() {
    let env = Env::get();
    let name = unique("Tea House");
    let shop = merchant_named(&name).await;
    let user = funded_user("20.00").await;

    // No payment app: everything in simulated interfaces, nothing to fall back to.
    let (status, session) =
        start(&user, &json!({"pay": purchase(&shop, "9.00"), "client": client(false, "wifi")}), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(
        (session["loading_process"].as_str(), session["state"].as_str()),
        (Some("simulated_only"), Some("open"))
    );
    assert_eq!(session["fallback_chain"], json!([]));
    assert!(session["reason"].as_str().unwrap().contains("app=missing"), "{session}");
    let screens = &session["processes"]["simulated_only"]["interface"]["screens"];
    assert_eq!(screens[0]["fields"][0]["value"], json!(name), "the payee is the server's");
    assert_eq!(
        (screens[0]["fields"][2]["value"].as_str(), screens[0]["fields"][2]["currency"].as_str()),
        (Some("9.00"), Some("USD"))
    );
    assert_eq!(session["processes"].as_object().unwrap().len(), 1);
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2), "a session moves no money");

    // The session is the user's alone.
    let id = session["id"].as_str().unwrap();
    assert_eq!(env.get_json(&format!("/payment-sessions/{id}"), &env.token(&user, &[])).await["id"], id);
    let theirs = env.get_json(&format!("/payment-sessions/{id}"), &env.token("someone-else", &[])).await;
    assert_eq!(theirs["code"], "unknown_payment_session");

    // The app installed and current, on wifi: the app in the foreground, with its fallbacks.
    let key = unique("key");
    let body = json!({"pay": purchase(&shop, "9.00"), "client": client(true, "wifi")});
    let (status, session) = start(&user, &body, &key).await;
    assert_eq!(
        (status, session["loading_process"].as_str()),
        (StatusCode::CREATED, Some("foreground_app")),
        "{session}"
    );
    assert_eq!(session["fallback_chain"], json!(["simulated_sheet", "simulated_only"]));
    let launch = session["processes"]["foreground_app"]["launch"]["url"].as_str().unwrap();
    assert!(launch.ends_with(session["id"].as_str().unwrap()), "{launch}");
    assert!(session["processes"]["simulated_sheet"]["interface"].is_object());
    assert_eq!(start(&user, &body, &key).await.1["id"], session["id"], "the same key, the same session");
    // Past the key's record (24 hours), the key still names that session, and no other payment.
    env.forget_idempotency_key(&user, "POST /payment-sessions", &key).await;
    assert_eq!(start(&user, &body, &key).await.1["id"], session["id"]);
    env.forget_idempotency_key(&user, "POST /payment-sessions", &key).await;
    let other = json!({"pay": purchase(&shop, "9.50"), "client": client(true, "wifi")});
    let (status, reused) = start(&user, &other, &key).await;
    assert_eq!((status, reused["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    // On cellular the house policy shows the sheet while the app loads, with a longer deadline.
    let (_, cellular) =
        start(&user, &json!({"pay": purchase(&shop, "9.00"), "client": client(true, "cellular")}), &unique("key"))
            .await;
    assert_eq!(
        (cellular["loading_process"].as_str(), cellular["launch_deadline_ms"].as_u64()),
        (Some("simulated_sheet"), Some(12000))
    );
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_session_that_cannot_be_paid_is_refused_with_a_clear_answer() {
    let shop = merchant().await;
    let user = funded_user("5.00").await;
    let mut bad_facts = client(true, "5g");
    let cases = [
        (
            json!({"pay": purchase(&shop, "1.00"), "client": bad_facts.clone()}),
            StatusCode::BAD_REQUEST,
            "invalid_client_facts",
        ),
        (
            json!({"pay": purchase(&shop, "1.00"), "client": {"platform": "android", "payment_app": {"installed": true}, "network": "wifi", "free_memory_mb": 1}}),
            StatusCode::BAD_REQUEST,
            "invalid_client_facts",
        ),
        (
            json!({"pay": {"kind": "purchase", "merchant_id": "m_nobody", "product_id": "t", "quantity": 1, "amount": {"amount": "1.00", "currency": "USD"}}, "client": client(true, "wifi")}),
            StatusCode::NOT_FOUND,
            "unknown_merchant",
        ),
        (
            json!({"pay": {"kind": "purchase", "merchant_id": shop.id, "product_id": "t", "quantity": 1, "amount": {"amount": "1.00", "currency": "EUR"}}, "client": client(true, "wifi")}),
            StatusCode::BAD_REQUEST,
            "currency_not_accepted",
        ),
        (
            json!({"pay": {"kind": "purchase", "merchant_id": shop.id, "product_id": "t", "quantity": 0, "amount": {"amount": "1.00", "currency": "USD"}}, "client": client(true, "wifi")}),
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
        ),
        (
            json!({"pay": {"kind": "teleport"}, "client": client(true, "wifi")}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (body, status, code) in cases {
        let (got, problem) = start(&user, &body, &unique("key")).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body}");
        assert_eq!(problem["flow_control"]["at"], "payment/start", "{problem}");
    }
    bad_facts["network"] = json!("wifi");
    let (status, _) = start(&user, &json!({"pay": purchase(&shop, "1.00"), "client": bad_facts}), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_new_policy_version_decides_the_next_session() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("5.00").await;
    let web = json!({"platform": "web", "payment_app": {"installed": true, "version": "9.1.0"}, "network": "wifi", "free_memory_mb": 2048});
    let body = json!({"pay": purchase(&shop, "1.00"), "client": web});
    let current = env.get_json("/config/payment-sessions", &env.user_token()).await;
    let version = current["version"].as_u64().expect("the seed publishes the house policy");
    let mut policy = current["parameters"].clone();
    // On the web the payment app cannot be invoked: everything in simulated interfaces (a rule no
    // other test's clients meet). Published only if an earlier run did not.
    let rule = json!({"when": {"platform": "web"}, "then": {"process": "simulated_only"}});
    if !policy["rules"].as_array().unwrap().contains(&rule) {
        let (_, before) = start(&user, &body, &unique("key")).await;
        assert_eq!(before["loading_process"], "foreground_app", "{before}");
        policy["rules"].as_array_mut().unwrap().insert(0, rule);
        let (status, published) = publish_over("payment-sessions", &policy, version).await;
        assert_eq!(status, StatusCode::CREATED, "{published}");
    }
    let (_, after) = start(&user, &body, &unique("key")).await;
    assert_eq!(after["loading_process"], "simulated_only", "{after}");
    assert!(after["reason"].as_str().unwrap().starts_with("rule 0 of payment-sessions version"), "{after}");
}
