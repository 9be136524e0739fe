//! Capability 3, config diffing, through the local HTTP API with real JWTs.

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay::config::merge_patch;
use superpay_e2e::{Env, unique};

pub async fn publish(group: &str, body: &str, precondition: (&str, &str), key: &str) -> reqwest::Response {
    let env = Env::get();
    env.http()
        .post(env.url(&format!("/config/{group}/versions")))
        .bearer_auth(env.admin_token())
        .header(precondition.0, precondition.1)
        .header("idempotency-key", key)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the API answers")
}

/// Publishes `parameters` over `version` of `group` as the admin: the status and the JSON answer.
pub async fn publish_over(group: &str, parameters: &Value, version: u64) -> (StatusCode, Value) {
    let response =
        publish(group, &parameters.to_string(), ("if-match", &format!("\"{version}\"")), &unique("key")).await;
    (response.status(), response.json().await.unwrap_or_default())
}

async fn fetch(group: &str, query: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let env = Env::get();
    let mut request = env.http().get(env.url(&format!("/config/{group}{query}"))).bearer_auth(env.user_token());
    if let Some(tag) = if_none_match {
        request = request.header("if-none-match", tag);
    }
    request.send().await.expect("the API answers")
}

/// The versions stored for `group`, straight from the table.
async fn stored_versions(group: &str) -> Vec<u64> {
    let items = Env::get().partition("ConfigTable", "group", group).await;
    items.iter().filter_map(|i| i.get("version")?.as_n().ok()?.parse().ok()).collect()
}

/// (action, actor) of each audit entry for `group`, oldest first.
pub async fn audit(group: &str) -> Vec<(String, String)> {
    let items = Env::get().partition("AuditTable", "resource", &format!("config/{group}")).await;
    items.iter().map(|i| (i["action"].as_s().unwrap().clone(), i["actor"].as_s().unwrap().clone())).collect()
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "application/problem+json", "status {status}");
    (status, response.json().await.expect("a problem body"))
}

async fn create(group: &str, parameters: &Value) {
    let response = publish(group, &parameters.to_string(), ("if-none-match", "*"), &unique("key")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_client_gets_the_data_then_up_to_date_then_a_patch() {
    let group = unique("e2e");
    let v1 = json!({"loading_process": "simulated_sheet", "limits": {"daily": "500.00", "single": "100.00"}, "copy": "x".repeat(200)});
    let v2 = json!({"loading_process": "foreground_app", "limits": {"daily": "500.00", "single": "150.00"}, "copy": "x".repeat(200)});
    create(&group, &v1).await;

    let first = fetch(&group, "", None).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["etag"], "\"1\"");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body, json!({"group": group, "version": 1, "parameters": v1}));

    let current = fetch(&group, "", Some("\"1\"")).await;
    assert_eq!(current.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(current.headers()["etag"], "\"1\"");
    assert!(current.bytes().await.unwrap().is_empty());
    // Without If-None-Match the request is not conditional: a small 200 says "up to date".
    let by_query = fetch(&group, "?version=1", None).await;
    assert_eq!(by_query.status(), StatusCode::OK);
    assert_eq!(by_query.json::<Value>().await.unwrap(), json!({"group": group, "version": 1, "up_to_date": true}));

    let published = publish(&group, &v2.to_string(), ("if-match", "\"1\""), &unique("key")).await;
    assert_eq!(published.status(), StatusCode::CREATED);
    assert_eq!(published.headers()["etag"], "\"2\"");

    let stale = fetch(&group, "", Some("\"1\"")).await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.headers()["cache-control"], "no-store", "a patch must never be cached as the document");
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["version"], 2);
    assert_eq!(body["base_version"], 1);
    assert_eq!(body["patch"], json!({"loading_process": "foreground_app", "limits": {"single": "150.00"}}));
    assert_eq!(merge_patch::apply(&v1, &body["patch"]), v2);
    assert_eq!(fetch(&group, "", Some("W/\"2\"")).await.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(stored_versions(&group).await, vec![1, 2]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn two_admins_cannot_overwrite_each_other() {
    let group = unique("e2e");
    create(&group, &json!({"a": 1})).await;
    // Both read version 1 and publish at once: exactly one wins.
    let (left_key, right_key) = (unique("key"), unique("key"));
    let (left, right) = tokio::join!(
        publish(&group, r#"{"a": 2}"#, ("if-match", "\"1\""), &left_key),
        publish(&group, r#"{"a": 3}"#, ("if-match", "\"1\""), &right_key),
    );
    let mut statuses = [left.status(), right.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::PRECONDITION_FAILED]);
    let loser = if left.status() == StatusCode::PRECONDITION_FAILED { left } else { right };
    let (_, body) = problem(loser).await;
    assert_eq!(body["code"], "version_conflict");
    assert_eq!(stored_versions(&group).await, vec![1, 2]);

    let (status, body) = problem(publish(&group, r#"{"a": 4}"#, ("if-match", "\"1\""), &unique("key")).await).await;
    assert_eq!(
        (status, body["code"].as_str(), body["current_version"].as_u64()),
        (StatusCode::PRECONDITION_FAILED, Some("version_conflict"), Some(2))
    );
    let (status, body) = problem(publish(&group, r#"{"a": 4}"#, ("if-none-match", "*"), &unique("key")).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PRECONDITION_FAILED, Some("group_exists")));
    assert_eq!(stored_versions(&group).await, vec![1, 2]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_retried_publish_is_replayed_and_a_reused_key_is_refused() {
    let group = unique("e2e");
    create(&group, &json!({"a": 1})).await;
    let key = unique("key");
    let first = publish(&group, r#"{"a": 2}"#, ("if-match", "\"1\""), &key).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first_body = first.text().await.unwrap();

    let replay = publish(&group, r#"{"a": 2}"#, ("if-match", "\"1\""), &key).await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.text().await.unwrap(), first_body);

    let (status, body) = problem(publish(&group, r#"{"a": 3}"#, ("if-match", "\"1\""), &key).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));

    // The same key from another admin is another request.
    let env = Env::get();
    let other = env
        .http()
        .post(env.url(&format!("/config/{group}/versions")))
        .bearer_auth(env.token("another-admin", &[superpay::auth::ADMIN_SCOPE]))
        .header("if-match", "\"2\"")
        .header("idempotency-key", &key)
        .body(r#"{"a": 5}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert_eq!(stored_versions(&group).await, vec![1, 2, 3]);
    assert_eq!(audit(&group).await.len(), 3, "one audit entry per version, none for the replay");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn concurrent_duplicates_publish_once() {
    let group = unique("e2e");
    create(&group, &json!({"a": 1})).await;
    let key = unique("key");
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (group, key) = (group.clone(), key.clone());
        attempts.spawn(async move { publish(&group, r#"{"a": 2}"#, ("if-match", "\"1\""), &key).await.status() });
    }
    let responses = attempts.join_all().await;
    let created = responses.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert!(created >= 1, "{responses:?}");
    assert!(
        responses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "duplicates are replayed (201) or told the first is in progress (409): {responses:?}"
    );
    assert_eq!(stored_versions(&group).await, vec![1, 2]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn rollback_republishes_an_earlier_version_and_is_audited() {
    let group = unique("e2e");
    create(&group, &json!({"theme": "light"})).await;
    assert_eq!(
        publish(&group, r#"{"theme": "dark"}"#, ("if-match", "\"1\""), &unique("key")).await.status(),
        StatusCode::CREATED
    );
    let env = Env::get();
    let rollback = |body: &'static str, tag: &'static str| {
        env.http()
            .post(env.url(&format!("/config/{group}/rollback")))
            .bearer_auth(env.admin_token())
            .header("if-match", tag)
            .header("idempotency-key", unique("key"))
            .body(body)
            .send()
    };
    let (status, body) = problem(rollback(r#"{"version": 2}"#, "\"2\"").await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("rollback_not_earlier")));
    let (status, body) = problem(rollback(r#"{"version": "one"}"#, "\"2\"").await.unwrap()).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
    assert_eq!(rollback(r#"{"version": 1}"#, "\"2\"").await.unwrap().status(), StatusCode::CREATED);

    let latest: Value = fetch(&group, "", None).await.json().await.unwrap();
    assert_eq!(latest, json!({"group": group, "version": 3, "parameters": {"theme": "light"}}));
    let actions: Vec<String> = audit(&group)
        .await
        .into_iter()
        .map(|(action, actor)| {
            assert_eq!(actor, "e2e-admin");
            action
        })
        .collect();
    assert_eq!(actions, ["config.publish", "config.publish", "config.rollback"]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let group = unique("e2e");
    create(&group, &json!({"a": 1})).await;

    for (query, code) in
        [("?version=-1", "invalid_version"), ("?version=abc", "invalid_version"), ("?version=9", "version_from_future")]
    {
        let (status, body) = problem(fetch(&group, query, None).await).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{query}");
    }
    let (status, body) = problem(fetch(&group, "", Some("not-an-etag")).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_version")));
    let (status, body) = problem(fetch(&unique("missing"), "", None).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_group")));
    let (status, body) = problem(fetch("Not_A_Group", "", None).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_group_name")));

    let cases = [
        ("[1, 2]", ("if-match", "\"1\""), Some("k"), StatusCode::BAD_REQUEST, "parameters_not_object"),
        (r#"{"a": {"b": null}}"#, ("if-match", "\"1\""), Some("k"), StatusCode::BAD_REQUEST, "parameters_contain_null"),
        (r#"{"a": "#, ("if-match", "\"1\""), Some("k"), StatusCode::BAD_REQUEST, "malformed_json"),
        (r#"{"a": 2}"#, ("if-match", "\"1\""), None, StatusCode::BAD_REQUEST, "idempotency_key_missing"),
        (r#"{"a": 2}"#, ("x-none", "1"), Some("k"), StatusCode::PRECONDITION_REQUIRED, "precondition_required"),
        (r#"{"a": 2}"#, ("if-match", "*"), Some("k"), StatusCode::BAD_REQUEST, "invalid_precondition"),
        (r#"{"a": 2}"#, ("if-match", "\"9\""), Some("k"), StatusCode::PRECONDITION_FAILED, "version_conflict"),
    ];
    let env = Env::get();
    for (body, precondition, key, expected_status, expected_code) in cases {
        let mut request = env
            .http()
            .post(env.url(&format!("/config/{group}/versions")))
            .bearer_auth(env.admin_token())
            .header(precondition.0, precondition.1)
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", unique(key));
        }
        let (status, problem) = problem(request.send().await.unwrap()).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (expected_status, Some(expected_code)),
            "{body} {precondition:?}"
        );
        assert!(!problem["detail"].as_str().unwrap_or_default().is_empty());
    }
    let too_big = json!({"k": "x".repeat(70 * 1024)}).to_string();
    let (status, body) = problem(publish(&group, &too_big, ("if-match", "\"1\""), &unique("key")).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("parameters_too_large")));
    let (status, body) =
        problem(publish(&unique("missing"), r#"{"a": 1}"#, ("if-match", "\"1\""), &unique("key")).await).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_group")));

    assert_eq!(stored_versions(&group).await, vec![1], "no refused request wrote a version");
    assert_eq!(audit(&group).await.len(), 1, "no refused request wrote an audit entry");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_authorizer_guards_every_route() {
    let env = Env::get();
    let readable = unique("e2e");
    create(&readable, &json!({"a": 1})).await;
    let path = format!("/config/{readable}");
    let get = |token: Option<String>| {
        let mut request = env.http().get(env.url(&path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some("not.a.jwt".into())).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let mut forged = env.user_token();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    assert_eq!(get(Some(forged)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get(Some(env.user_token())).await.unwrap().status(), StatusCode::OK);

    // Publishing needs the admin scope: the user's token is refused before the function runs.
    let group = unique("e2e");
    let response = env
        .http()
        .post(env.url(&format!("/config/{group}/versions")))
        .bearer_auth(env.user_token())
        .header("if-none-match", "*")
        .header("idempotency-key", unique("key"))
        .body(r#"{"a": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(stored_versions(&group).await.is_empty());
    assert_eq!(env.http().get(env.url("/no/such/route")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn function_logs_are_json_lines_with_the_request_id_and_no_secrets() {
    let env = Env::get();
    let group = unique("missing");
    let token = env.user_token();
    let response = env.http().get(env.url(&format!("/config/{group}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let log = std::fs::read_to_string(env.stack.logs.join("ConfigFunction.log")).expect("the function's log");
    let line = log.lines().find(|l| l.contains(&group)).expect("a log line about the request");
    let event: Value = serde_json::from_str(line).expect("one JSON object per line");
    assert_eq!((event["level"].as_str(), event["code"].as_str()), (Some("INFO"), Some("unknown_group")));
    assert!(!event["span"]["requestId"].as_str().unwrap_or_default().is_empty(), "{line}");
    assert!(log.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "every line is JSON");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "no bearer token is ever logged");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_payment_sessions_policy_is_validated_at_publish() {
    let env = Env::get();
    let current = env.get_json("/config/payment-sessions", &env.user_token()).await;
    let version = current["version"].as_u64().expect("the seed publishes the house policy");
    let mut policy = current["parameters"].clone();
    policy["rules"] = json!([{"when": {"app": "instaled"}, "then": {"process": "simulated_only"}}]);
    let (status, refused) = problem(
        publish("payment-sessions", &policy.to_string(), ("if-match", &format!("\"{version}\"")), &unique("key")).await,
    )
    .await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("payment_policy_invalid")));
    assert!(refused["detail"].as_str().unwrap().contains("app is never \"instaled\""), "{refused}");
    // Nothing was published (payment_sessions' test may publish meanwhile: never this rule).
    let now = env.get_json("/config/payment-sessions", &env.user_token()).await;
    assert!(!now.to_string().contains("instaled"), "{now}");
}
