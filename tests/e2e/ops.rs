//! The operator CLI (`cargo ops`, `superpay_ops::run`) against the local stack, as an operator
//! types it: a config group created from a file, published over the version read, diffed,
//! rolled back; a non-admin token and a bad file refused with what to do; the README's walk
//! (a merchant registered, suspended and its key rotated, a dead-letter queue inspected and
//! redriven, the reconciliation report on the live stack, an unswept outbox item given its shard).

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay_e2e::{Env, unique};

use crate::notifications::{eventually, outbox_item, put_unsharded_outbox_item};
use crate::purchases::{buy, funded_user, merchant, purchase};

/// `cargo ops --api <stack> --token <token> <args>`.
async fn ops(token: &str, args: &[&str]) -> Result<String, String> {
    let env = Env::get();
    let stack = std::env::var("SUPERPAY_STACK").unwrap();
    let mut line = vec!["cargo-ops".to_owned(), "--api".into(), env.url(""), "--token".into(), token.to_owned()];
    line.extend(["--local-stack".to_owned(), stack]);
    line.extend(args.iter().map(|a| a.to_string()));
    superpay_ops::run(line).await
}

fn file(name: &str, parameters: &Value) -> String {
    let path = std::env::temp_dir().join(format!("{name}.json"));
    std::fs::write(&path, parameters.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_operator_publishes_diffs_and_rolls_back_a_config_group() {
    let env = Env::get();
    let admin = env.admin_token();
    let group = unique("ops-group").to_lowercase();
    let first = file(&group, &json!({"banner": "hello", "retries": 3}));
    // Publishing over a group that does not exist says how to create it.
    let refused = ops(&admin, &["config", "publish", &group, &first]).await.unwrap_err();
    assert!(refused.contains("404 unknown_group"), "{refused}");
    let created = ops(&admin, &["config", "publish", "--create", &group, &first]).await.unwrap();
    assert_eq!(created, format!("{group}: published version 1 (over version 0)\n"));
    // Run again (a retry), the same request: the same answer, no second version.
    assert_eq!(ops(&admin, &["config", "publish", "--create", &group, &first]).await.unwrap(), created);

    let second = file(&group, &json!({"banner": "hello again", "retries": 3}));
    let published = ops(&admin, &["--json", "config", "publish", &group, &second]).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&published).unwrap()["version"], 2);
    let diff = ops(&admin, &["config", "diff", &group, "1"]).await.unwrap();
    assert!(diff.starts_with(&format!("{group}: from version 1 to 2")), "{diff}");
    assert!(diff.contains("\"banner\": \"hello again\"") && !diff.contains("retries"), "{diff}");

    // Run again after it succeeded: nothing more is published.
    let again = ops(&admin, &["config", "publish", &group, &second]).await.unwrap();
    assert_eq!(again, format!("{group}: version 2 holds these parameters already; nothing published\n"));
    let rolled = ops(&admin, &["config", "rollback", &group, "1"]).await.unwrap();
    assert_eq!(rolled, format!("{group}: version 1's parameters published as version 3 (over version 2)\n"));
    let again = ops(&admin, &["config", "rollback", &group, "1"]).await.unwrap();
    assert_eq!(again, format!("{group}: version 3 holds version 1's parameters already; nothing published\n"));
    // A group's name, never a path: refused before any call.
    let refused = ops(&admin, &["config", "show", "../wallet"]).await.unwrap_err();
    assert!(refused.contains("../wallet"), "{refused}");
    let shown: Value =
        serde_json::from_str(&ops(&admin, &["--json", "config", "show", &group]).await.unwrap()).unwrap();
    assert_eq!((&shown["version"], &shown["parameters"]), (&json!(3), &json!({"banner": "hello", "retries": 3})));
    // Each publish is the admin route's, so each is in the audit log.
    let audited = crate::config::audit(&group).await;
    assert_eq!(audited.len(), 3, "{audited:?}");

    // Help is an answer, not an error.
    assert!(ops(&admin, &["--help"]).await.unwrap().contains("Usage: cargo ops"));
    // A user's token is no operator's; a file that is not JSON is named.
    let refused = ops(&env.user_token(), &["config", "rollback", &group, "2"]).await.unwrap_err();
    assert!(refused.contains("403"), "{refused}");
    // The whole answer of `--json config show` saved as the file: refused, with what to publish.
    let whole = file(&format!("{group}-shown"), &shown);
    let refused = ops(&admin, &["config", "publish", &group, &whole]).await.unwrap_err();
    assert!(refused.contains("publish its parameters alone"), "{refused}");
    let broken = std::env::temp_dir().join(format!("{group}-broken.json"));
    std::fs::write(&broken, "{not json").unwrap();
    let refused = ops(&admin, &["config", "publish", &group, &broken.display().to_string()]).await.unwrap_err();
    assert!(refused.contains("is not JSON"), "{refused}");
}

/// `cargo ops --json <args>`, read.
async fn ops_json(args: &[&str]) -> Value {
    let mut line = vec!["--json"];
    line.extend(args);
    let out = ops(&Env::get().admin_token(), &line).await.unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_readmes_walk_registers_a_merchant_redrives_a_dead_letter_queue_and_reconciles() {
    let env = Env::get();
    let admin = env.admin_token();
    // A merchant: registered once however often the command runs, its secret shown the first time.
    let url = format!("product_server_url={}/m/{}", env.stack.merchant_simulator_url, unique("ops-shop"));
    let name = format!("name=Ops Tea {}", unique("n"));
    let register = ["merchants", "register", &name, &url, "currency=USD"];
    let registered = ops(&admin, &register).await.unwrap();
    assert!(registered.starts_with("registered merchant m_"), "{registered}");
    assert!(registered.contains("secret (shown this once"), "{registered}");
    let again = ops(&admin, &register).await.unwrap();
    let id = registered.split_whitespace().nth(2).unwrap().to_owned();
    assert!(again.starts_with(&format!("merchant {id} was registered by an earlier run")), "{again}");
    assert!(!again.contains("secret (shown"), "{again}");
    assert_eq!(ops_json(&["merchants", "show", &id]).await["status"], "active");
    let rotated = ops(&admin, &["merchants", "rotate", &id, "--grace-seconds", "60"]).await.unwrap();
    assert!(rotated.starts_with(&format!("{id} now signs with {id}.k2; {id}.k1 is honoured until")), "{rotated}");
    let ended = ops(&admin, &["merchants", "end-grace", &id]).await.unwrap();
    assert_eq!(ended, format!("{id}: {id}.k1 is no longer honoured; {id}.k2 signs\n"));
    let terminal = ops_json(&["terminals", "register", &id]).await;
    assert_eq!((&terminal["merchant_id"], &terminal["kind"]), (&json!(id), &json!("till")));
    assert_eq!(
        ops(&admin, &["merchants", "status", &id, "suspended"]).await.unwrap(),
        format!("merchant {id} is suspended\n")
    );
    let actions: Vec<String> = env
        .partition("AuditTable", "resource", &format!("merchant/{id}"))
        .await
        .iter()
        .map(|i| i["action"].as_s().unwrap().clone())
        .collect();
    assert_eq!(
        actions,
        ["merchant.register", "merchant.rotate_key", "merchant.end_key_grace", "terminal.register", "merchant.status"]
    );
    // An id goes into a path: refused before any call.
    assert!(ops(&admin, &["merchants", "show", "../config"]).await.unwrap_err().contains("id"));

    // The cash queue's dead letters (no other test's): a poison, dead-lettered with its reason, and
    // a message whose cause was fixed (its outbox item handled meanwhile).
    let sqs = env.stack.sqs().await;
    let poison = format!("{{\"kind\":\"cash.check\",\"id\":\"{}\"}}", unique("ops-poison"));
    sqs.send_message().queue_url(&env.stack.queues["CashQueue"]).message_body(&poison).send().await.unwrap();
    let shown = eventually(20, "the poison's dead letter", || async {
        let shown = ops_json(&["dlq", "show", "cash", "--bodies"]).await;
        shown.as_array().unwrap().iter().find(|m| m["body"] == poison.as_str()).cloned()
    })
    .await;
    assert!(shown["reason"].as_str().unwrap().starts_with("not a cash message: missing field `user`"), "{shown}");
    assert_eq!((&shown["kind"], &shown["tries"]), (&json!("cash.check"), &json!("1")));
    let fixed =
        format!("{{\"kind\":\"cash.check\",\"id\":\"{}\",\"user\":\"u\",\"movement\":\"m\"}}", unique("ops-fixed"));
    let dead_letters = &env.stack.queues["CashDeadLetterQueue"];
    sqs.send_message().queue_url(dead_letters).message_body(&fixed).send().await.unwrap();
    let counted = ops_json(&["dlq", "count"]).await;
    assert_eq!(counted["CashDeadLetterQueue"]["source"], "CashQueue");
    assert!(counted["CashDeadLetterQueue"]["messages"].as_u64() >= Some(2), "{counted}");
    let redriven = ops_json(&["dlq", "redrive", "CashDeadLetterQueue"]).await;
    assert_eq!((&redriven["to"], redriven["redriven"].as_array().map(Vec::len)), (&json!("CashQueue"), Some(2)));
    let audited = env.partition("AuditTable", "resource", "queue/CashDeadLetterQueue").await;
    assert!(audited.iter().any(|i| i["detail"].as_s().unwrap().contains(redriven["redriven"][0].as_str().unwrap())));
    // The poison is back with its reason; the fixed one was handled and stays away.
    let back = eventually(20, "the poison back", || async {
        let shown = ops_json(&["dlq", "show", "cash", "--bodies"]).await;
        shown.as_array().unwrap().iter().any(|m| m["body"] == poison.as_str()).then_some(shown)
    })
    .await;
    assert!(!back.as_array().unwrap().iter().any(|m| m["body"] == fixed.as_str()), "{back}");

    // The report on the live stack (other tests run meanwhile): an order whose record lies is found.
    let (shop, payer) = (merchant().await, funded_user("20.00").await);
    let (status, paid) = buy(&payer, &purchase(&shop, "green-tea", "12.50"), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let order = paid["id"].as_str().unwrap();
    crate::reconcile::make_lie_declined(order).await;
    // And an outbox item from before the sweeper's index, which no sweep would ever find.
    let legacy = unique("o_legacy");
    let env = Env::get();
    let (queue, due) = (&env.stack.queues["NotificationsQueue"], superpay::clock::now_epoch_seconds() + 3600);
    put_unsharded_outbox_item(env.table("OutboxTable"), &legacy, queue, due).await;
    let report = ops_json(&["reconcile"]).await;
    let lie = format!("order {order} is declined but its hold's settlement is purchase.capture");
    let violations = report["violations"].as_array().unwrap();
    assert!(violations.iter().any(|v| v.as_str().unwrap().starts_with(&lie)), "{report}");
    let unswept = format!("outbox item {legacy} has no shard");
    assert!(violations.iter().any(|v| v.as_str().unwrap().starts_with(&unswept)), "{report}");
    let indexed = ops_json(&["outbox", "index"]).await;
    assert!(indexed["indexed"].as_u64() >= Some(1), "{indexed}");
    let given = outbox_item(&legacy).await.unwrap();
    assert_eq!(given["due_shard"].as_n().unwrap(), &superpay::outbox::due_shard(&legacy).to_string());
    let key = aws_sdk_dynamodb::types::AttributeValue::S(legacy);
    env.dynamodb().await.delete_item().table_name(env.table("OutboxTable")).key("id", key).send().await.unwrap();
    assert!(report["accounts"].as_u64() > Some(0) && report["records"]["orders"].as_u64() > Some(0), "{report}");
    let text = ops(&admin, &["reconcile"]).await.unwrap();
    assert!(text.starts_with("read ") && text.contains(&lie), "{text}");
}
