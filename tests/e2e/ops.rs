//! The operator CLI (`cargo ops`, `superpay_ops::run`) against the local stack, as an operator
//! types it: a config group created from a file, published over the version read, diffed,
//! rolled back; a non-admin token and a bad file refused with what to do.

use serde_json::{Value, json};
use superpay_e2e::{Env, unique};

/// `cargo ops --api <stack> --token <token> <args>`.
async fn ops(token: &str, args: &[&str]) -> Result<String, String> {
    let env = Env::get();
    let mut line = vec!["cargo-ops".to_owned(), "--api".into(), env.url(""), "--token".into(), token.to_owned()];
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
    let broken = std::env::temp_dir().join(format!("{group}-broken.json"));
    std::fs::write(&broken, "{not json").unwrap();
    let refused = ops(&admin, &["config", "publish", &group, &broken.display().to_string()]).await.unwrap_err();
    assert!(refused.contains("is not JSON"), "{refused}");
}
