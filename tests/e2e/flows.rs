//! Capability 7, the error-flow table, through the local HTTP API: every problem carries what the
//! client does next; `POST /flows/next` counts retries per flow instance on the server; a table
//! that loops or names what it does not define is refused at publish; a rollback restores the old
//! decisions. The stack keeps the table at most 1 s per process (`FlowTableMaxAgeSeconds`).

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay_e2e::{Env, unique};

use crate::config::publish_over;
use crate::miniapps;
use crate::purchases::{buy, funded_user, merchant, purchase};

async fn next(user: &str, instance: &str, at: &str, code: &str) -> (StatusCode, Value) {
    let env = Env::get();
    let body = json!({"instance": instance, "at": at, "error_code": code});
    env.post_json(&env.token(user, &[]), "/flows/next", Some(&body), None).await
}

/// The table in force: its version and parameters, as a client fetches it.
async fn current_table() -> (u64, Value) {
    let env = Env::get();
    let fetched = env.get_json("/config/error-flows", &env.user_token()).await;
    (fetched["version"].as_u64().expect("the seed publishes the house table"), fetched["parameters"].clone())
}

async fn publish(table: &Value, version: u64) -> (StatusCode, Value) {
    publish_over("error-flows", table, version).await
}

/// Asks until the answer for `code` at `at` has `message_key` (each function re-reads the table
/// within a second), and returns it.
async fn eventually(at: &str, code: &str, message_key: &str) -> Value {
    let user = unique("flow-user");
    for _ in 0..40 {
        let (status, answer) = next(&user, &unique("fi"), at, code).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        if answer["message_key"] == message_key {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("{code} at {at} never got {message_key}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn insufficient_funds_sends_the_client_to_the_top_up_flow() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    let (status, problem) = buy(&user, &purchase(&shop, "t", "10.01"), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")));
    let control = &problem["flow_control"];
    assert_eq!(
        (control["action"].as_str(), control["to"].as_str(), control["at"].as_str()),
        (Some("switch_flow"), Some("top-up/amount"), Some("purchase/pay")),
        "{problem}"
    );
    // The published table's version, or 0 if this process answered from the house table (a slow
    // read on a busy stack): the same decisions either way.
    assert!(control["table_version"].as_u64().is_some(), "{control}");
    // Not a retry: nothing about reusing the key.
    assert_eq!(control.get("reuse_idempotency_key"), None);

    // The client says where it is: the answer is judged there (a mini-app paying from the wallet).
    let response = env
        .http()
        .post(env.url("/purchases"))
        .bearer_auth(env.token(&user, &[]))
        .header("idempotency-key", unique("key"))
        .header("superpay-flow", "miniapp/request")
        .json(&purchase(&shop, "t", "10.01"))
        .send()
        .await
        .unwrap();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["flow_control"]["at"], "miniapp/request", "{problem}");
    assert_eq!(problem["flow_control"]["to"], "top-up/amount");

    // Another route's refusal is judged at that route's step.
    let (status, problem) = env
        .post_json(
            &env.token(&user, &[]),
            "/wallet/cash-outs",
            Some(&json!({"instrument_id": "in_nothing", "amount": {"amount": "1.00", "currency": "USD"}})),
            Some(&unique("key")),
        )
        .await;
    assert_eq!(problem["flow_control"]["at"], "cash-out/amount", "{status} {problem}");

    // Every problem carries it, even one refused before the handler: a body too large.
    let response = env
        .http()
        .post(env.url("/purchases"))
        .bearer_auth(env.token(&user, &[]))
        .header("idempotency-key", unique("key"))
        .body("x".repeat(300 * 1024))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let problem: Value = response.json().await.unwrap();
    assert_eq!((status, problem["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large")));
    assert_eq!(
        (problem["flow_control"]["action"].as_str(), problem["flow_control"]["rule"].as_u64()),
        (Some("abort"), None)
    );
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_merchant_timeout_is_retried_with_backoff_then_switches_flow() {
    let app = miniapps::app().await;
    let user = funded_user("20.00").await;
    let session = miniapps::session(&user, &app.id).await;
    let key = unique("key");
    let (status, problem) =
        miniapps::request(&user, &app.id, &miniapps::buy(&session, "slow-jasmine-tea", Some("4.50")), &key).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::GATEWAY_TIMEOUT, Some("miniapp_server_timeout")));
    let control = &problem["flow_control"];
    assert_eq!(
        (control["action"].as_str(), control["at"].as_str()),
        (Some("retry"), Some("miniapp/request")),
        "{problem}"
    );
    // It moved money if it went through: the same key, and its status read first after a 504.
    assert_eq!(
        (control["reuse_idempotency_key"].as_bool(), control["read_status_first"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(control["retry"]["max_attempts"], 3);
    assert_eq!(control["after_retries"]["to"], "support/contact");

    // Asking the server: three retries, each waiting at most twice the last, then the switch.
    let instance = unique("fi");
    let mut answers = Vec::new();
    for _ in 0..4 {
        let (status, answer) = next(&user, &instance, "miniapp/request", "miniapp_server_timeout").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        answers.push(answer);
    }
    let seen: Vec<(Option<&str>, Option<u64>)> =
        answers.iter().map(|a| (a["action"].as_str(), a["attempt"].as_u64())).collect();
    assert_eq!(
        seen,
        [(Some("retry"), Some(1)), (Some("retry"), Some(2)), (Some("retry"), Some(3)), (Some("switch_flow"), None)]
    );
    for (attempt, answer) in answers[..3].iter().enumerate() {
        // The server cannot see the request: reuse its key, and read its status first after a 504.
        assert_eq!(
            (answer["reuse_idempotency_key"].as_bool(), answer["read_status_first"].as_bool()),
            (Some(true), Some(true))
        );
        let cap = 1000 * 2u64.pow(attempt as u32);
        assert!(answer["delay_ms"].as_u64().is_some_and(|d| d <= cap), "attempt {}: {answer}", attempt + 1);
    }
    assert_eq!((answers[3]["to"].as_str(), answers[3]["attempts_spent"].as_u64()), (Some("support/contact"), Some(3)));
    // At support the flow ends.
    let (_, answer) = next(&user, &instance, "support/contact", "miniapp_server_timeout").await;
    assert_eq!(answer["action"], "abort");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_unknown_code_gets_the_default_and_bad_questions_a_clear_answer() {
    let user = unique("flow-user");
    let (status, answer) = next(&user, &unique("fi"), "purchase/pay", "no_such_code").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (answer["action"].as_str(), answer["rule"].as_u64(), answer["message_key"].as_str()),
        (Some("abort"), None, Some("errors.generic"))
    );

    let cases = [
        ("purchase/pay", "Not-A-Code", StatusCode::BAD_REQUEST, "invalid_error_code"),
        ("purchase/nowhere", "internal", StatusCode::BAD_REQUEST, "invalid_flow_step"),
        ("purchase", "internal", StatusCode::BAD_REQUEST, "invalid_flow_step"),
    ];
    for (at, code, status, expected) in cases {
        let (got, problem) = next(&user, &unique("fi"), at, code).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(expected)), "{at} {code}");
        // Its own problem carries flow_control too (no step: the default).
        assert_eq!(problem["flow_control"]["action"], "abort", "{problem}");
    }
    let env = Env::get();
    let (status, problem) = env
        .post_json(
            &env.token(&user, &[]),
            "/flows/next",
            Some(&json!({"instance": "a b", "at": "purchase/pay", "error_code": "internal"})),
            None,
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_id")));
    // The dry run is an admin's: API Gateway refuses the scope before the function runs.
    let body = json!({"start": "purchase/pay", "errors": []});
    let (status, _) = env.post_json(&env.token(&user, &[]), "/flows/dry-run", Some(&body), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_retry_cap_holds_across_two_devices_of_one_user() {
    let user = unique("flow-user");
    let instance = unique("fi");
    // ledger_busy: five retries, then abort. Two phones ask at once, six times each.
    let asks = (0..12).map(|_| next(&user, &instance, "purchase/pay", "ledger_busy"));
    let answers = futures_util::future::join_all(asks).await;
    let mut attempts: Vec<u64> = answers
        .iter()
        .inspect(|(status, answer)| assert_eq!(*status, StatusCode::OK, "{answer}"))
        .filter_map(|(_, answer)| answer["attempt"].as_u64())
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [1, 2, 3, 4, 5], "{answers:?}");
    let spent = answers.iter().filter(|(_, a)| a["action"] == "abort" && a["attempts_spent"] == 5).count();
    assert_eq!(spent, 7);
    let items = Env::get().partition("FlowInstancesTable", "user", &user).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["attempts"].as_n().unwrap(), "5");
    // The same instance id of another user is theirs; another step of it, or another error with
    // its own policy, counts apart.
    assert_eq!(next(&unique("flow-user"), &instance, "purchase/pay", "ledger_busy").await.1["attempt"], 1);
    assert_eq!(next(&user, &instance, "top-up/amount", "ledger_busy").await.1["attempt"], 1);
    assert_eq!(next(&user, &instance, "purchase/pay", "internal").await.1["attempt"], 1);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_table_that_loops_or_names_an_undefined_step_is_refused_at_publish_and_at_dry_run() {
    let env = Env::get();
    let (version, table) = current_table().await;
    let mut looping = table.clone();
    // support/contact ends every flow; switching it to purchase/pay, which a timeout sends to
    // support, would loop for as long as the mini-app server is down.
    looping["rules"].as_array_mut().unwrap().insert(
        0,
        json!({"when": {"flow": "support", "error_code": "miniapp_server_timeout"}, "then": {"action": "switch_flow", "to": "miniapp/request", "message_key": "x"}}),
    );
    let (status, problem) = publish(&looping, version).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("flow_table_cycle")),
        "{problem}"
    );
    let cycle: Vec<&str> = problem["cycle"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(cycle.contains(&"support/contact (miniapp_server_timeout)"), "{cycle:?}");
    assert_eq!(cycle.last(), Some(&"support/contact"), "{cycle:?}");

    let mut undefined = table.clone();
    undefined["rules"].as_array_mut().unwrap().insert(
        0,
        json!({"when": {"flow": "purchase", "error_code": "merchant_declined"}, "then": {"action": "switch_flow", "to": "checkout/retry", "message_key": "x"}}),
    );
    let (status, problem) = publish(&undefined, version).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("flow_target_unknown")),
        "{problem}"
    );
    assert!(problem["detail"].as_str().unwrap().contains("checkout/retry"), "{problem}");

    let mut retries_a_decline = table.clone();
    retries_a_decline["rules"].as_array_mut().unwrap().insert(
        0,
        json!({"when": {"error_code": "bank_declined"}, "then": {"action": "retry", "message_key": "x",
               "retry": {"max_attempts": 2, "interval_ms": 100, "backoff_rate": 2.0, "max_delay_ms": 400, "jitter": "full"}}}),
    );
    let (status, problem) = publish(&retries_a_decline, version).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("flow_table_invalid")),
        "{problem}"
    );
    // Nothing was published (the rollback test may publish meanwhile: its tables have none of these).
    let now = current_table().await.1.to_string();
    assert!(!now.contains(r#""message_key":"x""#), "{now}");

    // The dry run refuses what publishing refuses, and replays a proposed table's path.
    let (status, problem) = env
        .admin_post(
            "/flows/dry-run",
            &json!({"table": looping, "start": "miniapp/request", "errors": ["internal"]}),
            None,
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("flow_table_cycle")));
    let errors = [
        "miniapp_server_timeout",
        "miniapp_server_timeout",
        "miniapp_server_timeout",
        "miniapp_server_timeout",
        "internal",
    ];
    let (status, run) = env
        .admin_post("/flows/dry-run", &json!({"table": table, "start": "miniapp/request", "errors": errors}), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    let path: Vec<(&str, Option<&str>)> =
        run["path"].as_array().unwrap().iter().map(|h| (h["action"].as_str().unwrap(), h["at"].as_str())).collect();
    assert_eq!(
        path,
        [
            ("retry", Some("miniapp/request")),
            ("retry", Some("miniapp/request")),
            ("retry", Some("miniapp/request")),
            ("switch_flow", Some("miniapp/request")),
            ("abort", Some("support/contact")),
        ]
    );
    assert_eq!(run["table_version"], Value::Null, "a proposed table has no version");
    let (status, run) = env
        .admin_post("/flows/dry-run", &json!({"start": "purchase/pay", "errors": ["insufficient_funds"]}), None)
        .await;
    assert_eq!((status, run["path"][0]["to"].as_str()), (StatusCode::OK, Some("top-up/amount")), "{run}");
    assert!(run["table_version"].as_u64().is_some(), "{run}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_rollback_of_the_table_restores_the_old_decisions() {
    let env = Env::get();
    let (version, table) = current_table().await;
    let before = eventually("purchase/status", "merchant_declined", "errors.merchant_declined").await;
    assert_eq!(before["action"], "abort");

    // The one test that publishes: a merchant's decline now sends the user to support.
    let changed_key = unique("e2e.declined");
    let mut changed = table.clone();
    for rule in changed["rules"].as_array_mut().unwrap() {
        if rule["when"] == json!({"error_code": "merchant_declined"}) {
            rule["then"] = json!({"action": "switch_flow", "to": "support/contact", "message_key": changed_key});
        }
    }
    let (status, published) = publish(&changed, version).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let after = eventually("purchase/status", "merchant_declined", &changed_key).await;
    assert_eq!(
        (after["action"].as_str(), after["to"].as_str(), after["table_version"].as_u64()),
        (Some("switch_flow"), Some("support/contact"), Some(version + 1))
    );

    let (status, rolled) = env
        .http()
        .post(env.url("/config/error-flows/rollback"))
        .bearer_auth(env.admin_token())
        .header("if-match", format!("\"{}\"", version + 1))
        .header("idempotency-key", unique("key"))
        .json(&json!({"version": version}))
        .send()
        .await
        .map(|r| (r.status(), r))
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{:?}", rolled.text().await);
    let restored = eventually("purchase/status", "merchant_declined", "errors.merchant_declined").await;
    assert_eq!((restored["action"].as_str(), restored["table_version"].as_u64()), (Some("abort"), Some(version + 2)));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payment_app_that_fails_to_launch_falls_back_along_the_loading_processes() {
    let user = unique("flow-user");
    let instance = unique("fi");
    let mut at = "payment/foreground_app".to_owned();
    let mut path = vec![at.clone()];
    for _ in 0..3 {
        let (status, answer) = next(&user, &instance, &at, "payment_app_launch_failed").await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        match answer["to"].as_str() {
            Some(to) => at = to.to_owned(),
            None => {
                assert_eq!(answer["action"], "abort", "{answer}");
                break;
            }
        }
        path.push(at.clone());
    }
    assert_eq!(path, ["payment/foreground_app", "payment/simulated_sheet", "payment/simulated_only"]);
}
