//! Capability 1, payment sessions, through the local HTTP API: the server decides how the client
//! loads the payment UI from the policy (config group payment-sessions), fixes what is paid, gives
//! the fallback chain of the error-flow table and moves no money until the session is confirmed
//! with the user's payment PIN; then it pays once, whichever processes confirm.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::instruction::signed::{Display, Instruction};
use superpay::ledger::AccountId;
use superpay::money::Money;
use superpay_e2e::{Env, unique};

use crate::config::publish_over;
use crate::notifications::{eventually, messages};
use crate::operations::{instruction_for, listed_shop, operate, presented, security_events, signed_by_platform};
use crate::purchases::{TestMerchant, balance, funded_user, merchant, merchant_named, suspend};

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

/// A session of `user` paying `amount` to `shop`, with the payment app installed and current (so
/// it loads `foreground_app` and falls back to both simulated processes): its id.
async fn open_session(user: &str, shop: &TestMerchant, amount: &str) -> String {
    let (status, session) =
        start(user, &json!({"pay": purchase(shop, amount), "client": client(true, "wifi")}), &unique("key")).await;
    assert_eq!(
        (status, session["loading_process"].as_str()),
        (StatusCode::CREATED, Some("foreground_app")),
        "{session}"
    );
    session["id"].as_str().unwrap().to_owned()
}

async fn set_pin(user: &str, body: &Value) -> (StatusCode, Value) {
    let env = Env::get();
    let response = env
        .http()
        .put(env.url("/payment-pin"))
        .bearer_auth(env.token(user, &[]))
        .json(body)
        .send()
        .await
        .expect("the API answers");
    (response.status(), response.json().await.unwrap_or_default())
}

async fn confirm(user: &str, id: &str, process: &str, pin: &str) -> (StatusCode, Value) {
    let env = Env::get();
    let body = json!({"process": process, "pin": pin});
    env.post_json(&env.token(user, &[]), &format!("/payment-sessions/{id}/confirm"), Some(&body), None).await
}

async fn report(user: &str, id: &str, event: &str, process: &str) -> (StatusCode, Value) {
    let env = Env::get();
    let body = json!({"event": event, "process": process});
    env.post_json(&env.token(user, &[]), &format!("/payment-sessions/{id}/events"), Some(&body), None).await
}

const PIN: &str = "482913";

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

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_failed_launch_falls_back_along_the_chain_and_a_cancel_moves_nothing() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("20.00").await;
    let id = open_session(&user, &shop, "9.00").await;
    // Open, it is on the user's home until it expires: a reminder to finish paying.
    let (elements, _) = crate::home::shown(&user).await;
    let open = crate::home::element(&elements, &format!("payment_session:{id}")).expect("the open session");
    assert_eq!(
        (open["priority_class"].as_str(), open["critical"].as_bool(), &open["deadline"]),
        (Some("time_bound"), Some(false), &open["expires_at"]),
        "{open}"
    );
    assert_eq!(open["data"]["amount"], json!({"amount": "9.00", "currency": "USD"}));

    // The app did not start: the sheet, with its interface; then the sheet's app did not come up
    // in time: simulated interfaces alone; and when they fail too, the chain ends.
    let (status, answer) = report(&user, &id, "launch_failed", "foreground_app").await;
    assert_eq!((status, answer["next"]["process"].as_str()), (StatusCode::OK, Some("simulated_sheet")), "{answer}");
    assert!(answer["next"]["needs"]["interface"]["screens"].is_array(), "{answer}");
    assert_eq!(answer["flow_control"]["to"], "payment/simulated_sheet");
    let (_, answer) = report(&user, &id, "timeout", "simulated_sheet").await;
    assert_eq!(answer["next"]["process"], "simulated_only", "{answer}");
    let (_, answer) = report(&user, &id, "launch_failed", "simulated_only").await;
    assert_eq!((answer["next"].is_null(), answer["flow_control"]["action"].as_str()), (true, Some("abort")));
    // Back from the app without paying: the same process may be tried again.
    let (_, answer) = report(&user, &id, "app_returned", "foreground_app").await;
    assert_eq!(
        (answer["next"]["process"].as_str(), answer["session"]["state"].as_str()),
        (Some("foreground_app"), Some("open"))
    );

    // Bad reports are refused with clear answers.
    let (status, problem) = report(&user, &id, "exploded", "foreground_app").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")), "{problem}");
    let (status, problem) = report(&user, &id, "timeout", "carrier_pigeon").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_payment_process")));
    let (status, problem) = report("someone-else", &id, "timeout", "foreground_app").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_payment_session")));
    // A session without the app offers only simulated interfaces.
    let (_, only) =
        start(&user, &json!({"pay": purchase(&shop, "1.00"), "client": client(false, "wifi")}), &unique("key")).await;
    let (status, problem) = report(&user, only["id"].as_str().unwrap(), "launch_failed", "foreground_app").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_process_not_offered")));

    // The user gives up: cancelled, for good, and nothing moved.
    let (_, answer) = report(&user, &id, "cancelled", "simulated_only").await;
    assert_eq!((answer["session"]["state"].as_str(), answer["next"].is_null()), (Some("cancelled"), true), "{answer}");
    let (_, again) = report(&user, &id, "cancelled", "foreground_app").await;
    assert_eq!(again["session"]["state"], "cancelled", "a cancel is answered again");
    let (elements, _) = crate::home::shown(&user).await;
    assert!(crate::home::element(&elements, &format!("payment_session:{id}")).is_none(), "{elements:?}");
    assert!(crate::home::element(&elements, &format!("payment_session:{}", only["id"].as_str().unwrap())).is_some());
    assert_eq!(set_pin(&user, &json!({"pin": PIN})).await.0, StatusCode::CREATED);
    let (status, problem) = confirm(&user, &id, "simulated_only", PIN).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_session_closed")), "{problem}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2));
    let session = env.get_json(&format!("/payment-sessions/{id}"), &env.token(&user, &[])).await;
    assert_eq!((session["state"].as_str(), session["payment"].is_null()), (Some("cancelled"), true), "{session}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_session_confirmed_on_every_process_at_once_pays_once() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("20.00").await;
    assert_eq!(set_pin(&user, &json!({"pin": PIN})).await, (StatusCode::CREATED, json!({"payment_pin": "set"})));
    let id = open_session(&user, &shop, "9.00").await;

    // The payment app came up late while the sheet and the simulated screens were confirming.
    let confirms = ["foreground_app", "simulated_sheet", "simulated_only", "simulated_sheet"]
        .map(|process| confirm(&user, &id, process, PIN));
    let answers = futures_util::future::join_all(confirms).await;
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        // The one that made the payment saw the merchant confirm; another may have read it first.
        assert!(["paid", "processing"].contains(&answer["state"].as_str().unwrap()), "{answer}");
    }
    assert!(answers.iter().any(|(_, a)| a["state"] == "paid"), "{answers:?}");
    let orders: std::collections::BTreeSet<_> = answers.iter().map(|(_, a)| a["payment"]["id"].as_str()).collect();
    assert_eq!(orders.len(), 1, "one order: {orders:?}");
    let order = orders.first().unwrap().unwrap();
    let seen = env.simulator(&format!("/_sim/orders/{order}")).await;
    assert_eq!(seen["forwarded"], 1, "the merchant was sent the order once: {seen}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1100, 2), "paid once");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(900, 2));

    // GET is the truth; confirming again or cancelling changes nothing.
    let session = env.get_json(&format!("/payment-sessions/{id}"), &env.token(&user, &[])).await;
    assert_eq!(
        (session["state"].as_str(), &session["confirmed"]["payment_id"]),
        (Some("paid"), &session["payment"]["id"])
    );
    assert_eq!(confirm(&user, &id, "simulated_only", PIN).await.1["state"], "paid");
    let (status, problem) = report(&user, &id, "cancelled", "foreground_app").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_session_closed")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1100, 2));
    // The user who never got back to the app reads the outcome in the conversation.
    let page = eventually(10, "the conversation message", || async {
        let page = messages(&user, &shop.id).await;
        (page["messages"].as_array().map(Vec::len) == Some(1)).then_some(page)
    })
    .await;
    assert_eq!(page["messages"][0]["kind"], "purchase.paid");

    // A merchant suspended after the session began is not paid.
    let id = open_session(&user, &shop, "1.00").await;
    suspend(&shop).await;
    let (status, problem) = confirm(&user, &id, "foreground_app", PIN).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("merchant_inactive")), "{problem}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1100, 2));

    // Without the money, nothing moves and the session stays open for a top-up.
    let id = open_session(&user, &merchant().await, "50.00").await;
    let (status, problem) = confirm(&user, &id, "foreground_app", PIN).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")));
    assert_eq!(problem["flow_control"]["to"], "top-up/amount", "{problem}");
    let session = env.get_json(&format!("/payment-sessions/{id}"), &env.token(&user, &[])).await;
    assert_eq!(session["state"], "open");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1100, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_payment_pin_is_set_changed_and_locked_after_five_wrong_tries_until_its_time_passes() {
    let shop = merchant().await;
    let user = funded_user("20.00").await;
    let id = open_session(&user, &shop, "2.00").await;

    // No PIN yet: the flow sends the user to set one.
    let (status, problem) = confirm(&user, &id, "foreground_app", PIN).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_pin_not_set")));
    assert_eq!(problem["flow_control"]["to"], "payment-pin/set", "{problem}");
    for (body, status, code) in [
        (json!({"pin": "12345"}), StatusCode::BAD_REQUEST, "invalid_payment_pin"),
        // A number is refused without being quoted back (nor logged).
        (json!({"pin": 482913}), StatusCode::BAD_REQUEST, "invalid_payment_pin"),
        (json!({"pin": "123456"}), StatusCode::UNPROCESSABLE_ENTITY, "weak_payment_pin"),
        (json!({"pin": "777777"}), StatusCode::UNPROCESSABLE_ENTITY, "weak_payment_pin"),
    ] {
        let (got, problem) = set_pin(&user, &body).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body}");
    }
    assert_eq!(set_pin(&user, &json!({"pin": "135790"})).await.0, StatusCode::CREATED);
    let (status, problem) = set_pin(&user, &json!({"pin": PIN})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_pin_already_set")));
    let (status, problem) = set_pin(&user, &json!({"pin": PIN, "old_pin": "000001"})).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["tries_left"].as_u64()),
        (StatusCode::FORBIDDEN, Some("payment_pin_wrong"), Some(4))
    );
    assert_eq!(
        set_pin(&user, &json!({"pin": PIN, "old_pin": "135790"})).await,
        (StatusCode::OK, json!({"payment_pin": "changed"}))
    );
    // The right PIN started the count again: five wrong tries, raced, take one try each.
    let wrong = (0..8).map(|_| confirm(&user, &id, "foreground_app", "135790"));
    let answers = futures_util::future::join_all(wrong).await;
    let codes: Vec<_> = answers.iter().map(|(_, p)| p["code"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(codes.iter().filter(|c| *c == "payment_pin_wrong").count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| *c == "payment_pin_locked").count(), 3, "{codes:?}");
    // Locked: even the right PIN waits (locally PaymentPinLockoutSeconds is 3), and nothing moved.
    let (status, problem) = confirm(&user, &id, "foreground_app", PIN).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::LOCKED, Some("payment_pin_locked")), "{problem}");
    let first = problem["locked_until"].as_i64().unwrap();
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2));
    // Waited out, five more wrong tries lock it again for twice as long (6 s).
    eventually(8, "the lockout's end", || async {
        let (status, _) = confirm(&user, &id, "foreground_app", "135790").await;
        (status == StatusCode::FORBIDDEN).then_some(())
    })
    .await;
    for left in (0..4).rev() {
        let (_, problem) = confirm(&user, &id, "foreground_app", "135790").await;
        assert_eq!(problem["tries_left"], left, "{problem}");
    }
    let (status, problem) = confirm(&user, &id, "foreground_app", PIN).await;
    assert_eq!(status, StatusCode::LOCKED, "{problem}");
    let second = problem["locked_until"].as_i64().unwrap();
    let now = superpay::clock::now_epoch_seconds();
    assert!(second - now >= 4 && second > first, "a second lockout of 6 s: until {second}, now {now}");
    let paid = eventually(10, "the second lockout's end", || async {
        let (status, answer) = confirm(&user, &id, "foreground_app", PIN).await;
        (status == StatusCode::OK).then_some(answer)
    })
    .await;
    assert_eq!(paid["state"], "paid", "{paid}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1800, 2));

    // Forgotten: support resets it (admins only, audited), and the user sets a new one.
    let env = Env::get();
    let reset = |token: String| {
        let url = env.url(&format!("/payment-pins/{user}"));
        async move {
            let response = env.http().delete(url).bearer_auth(token).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap_or_default())
        }
    };
    assert_eq!(reset(env.token(&user, &[])).await.0, StatusCode::FORBIDDEN, "only an admin resets");
    assert_eq!(reset(env.admin_token()).await, (StatusCode::OK, json!({"user": user, "payment_pin": "reset"})));
    let (status, problem) = reset(env.admin_token()).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_pin_not_set")));
    assert_eq!(env.partition("AuditTable", "resource", &format!("payment-pin/{user}")).await.len(), 1);
    let events = env.partition("SecurityEventsTable", "user", &user).await;
    let kinds: Vec<_> = events.iter().filter_map(|e| e.get("kind").and_then(|k| k.as_s().ok())).collect();
    assert!(
        kinds.contains(&&"payment_pin.reset".to_owned()) && kinds.contains(&&"payment_pin.changed".to_owned()),
        "{kinds:?}"
    );
    assert_eq!(set_pin(&user, &json!({"pin": "135790"})).await.0, StatusCode::CREATED);
}

/// A client on iOS with a payment app version no other test uses, so its launches are its own.
fn client_of_its_own() -> Value {
    let minor = u32::from_str_radix(&unique("v")[2..8], 16).unwrap_or(7) % 100_000;
    json!({"platform": "ios", "payment_app": {"installed": true, "version": format!("9.{minor}.0")},
           "network": "wifi", "free_memory_mb": 4096})
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_circuit_breaker_demotes_a_failing_process_and_tries_it_again_when_its_window_passes() {
    let shop = merchant().await;
    let body = json!({"pay": purchase(&shop, "1.00"), "client": client_of_its_own()});
    let session = |user: String| {
        let body = body.clone();
        async move { (start(&user, &body, &unique("key")).await.1, user) }
    };
    let user = unique("launcher");

    // Four users on this app version fail to launch the app (locally PaymentBreakerMinSamples is
    // 4 and the window 2 s); one user's reports count once, however many sessions they start.
    for _ in 0..3 {
        let (first, _) = session(user.clone()).await;
        report(&user, first["id"].as_str().unwrap(), "launch_failed", "foreground_app").await;
    }
    assert_eq!(session(user.clone()).await.0["loading_process"], "foreground_app", "one user counted once");
    let failing = futures_util::future::join_all((0..3).map(|_| session(unique("launcher")))).await;
    let reports = failing.iter().map(|(s, user)| report(user, s["id"].as_str().unwrap(), "timeout", "foreground_app"));
    futures_util::future::join_all(reports).await;
    let session = || async { session(user.clone()).await.0 };

    // The next session starts at the sheet, and says why.
    let demoted = session().await;
    assert_eq!(
        (demoted["loading_process"].as_str(), demoted["fallback_chain"].clone()),
        (Some("simulated_sheet"), json!(["simulated_only"])),
        "{demoted}"
    );
    let reason = demoted["reason"].as_str().unwrap();
    assert!(
        reason.contains("foreground_app demoted by the circuit breaker (")
            && reason.contains("launches failed on ios 9."),
        "{reason}"
    );

    // No launches meanwhile: two windows on, the app is tried again, and a launch that works counts.
    let again = eventually(10, "the breaker's recovery", || async {
        let next = session().await;
        (next["loading_process"] == "foreground_app").then_some(next)
    })
    .await;
    assert!(!again["reason"].as_str().unwrap().contains("demoted"), "{again}");
    let (status, _) = report(&user, again["id"].as_str().unwrap(), "app_returned", "foreground_app").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_admin_forces_a_process_for_one_user_audited_until_it_ends() {
    let env = Env::get();
    let shop = merchant().await;
    let (user, other) = (funded_user("5.00").await, funded_user("5.00").await);
    let body = json!({"pay": purchase(&shop, "1.00"), "client": client(true, "wifi")});
    let path = format!("/payment-forces/{user}");
    let force = |token: String, body: Value| {
        let path = path.clone();
        async move {
            let response = env.http().put(env.url(&path)).bearer_auth(token).json(&body).send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, _) = force(env.token(&user, &[]), json!({"process": "simulated_only"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only an admin forces");
    let (status, problem) = force(env.admin_token(), json!({"process": "simulated_only", "minutes": 0})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_force_duration")));
    let (status, forced) = force(env.admin_token(), json!({"process": "simulated_only", "minutes": 5})).await;
    assert_eq!((status, forced["forced"]["process"].as_str()), (StatusCode::OK, Some("simulated_only")), "{forced}");

    let (_, session) = start(&user, &body, &unique("key")).await;
    assert_eq!(session["loading_process"], "simulated_only", "{session}");
    assert!(session["reason"].as_str().unwrap().starts_with("forced to simulated_only for this user by an admin"));
    let (_, theirs) = start(&other, &body, &unique("key")).await;
    assert_eq!(theirs["loading_process"], "foreground_app", "another user is not forced");
    let audit = env.partition("AuditTable", "resource", &format!("payment-force/{user}")).await;
    assert_eq!(audit.len(), 1, "the force is audited: {audit:?}");

    let end = || env.http().delete(env.url(&path)).bearer_auth(env.admin_token()).send();
    assert_eq!(end().await.unwrap().status(), StatusCode::OK);
    let (_, session) = start(&user, &body, &unique("key")).await;
    assert_eq!(session["loading_process"], "foreground_app", "{session}");
    let ended: Value = end().await.unwrap().json().await.unwrap();
    assert_eq!(ended["code"], "unknown_payment_force");
    assert_eq!(env.partition("AuditTable", "resource", &format!("payment-force/{user}")).await.len(), 2);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_mini_app_charge_session_relays_once_whichever_processes_confirm() {
    let env = Env::get();
    let app = crate::miniapps::app().await;
    let user = funded_user("20.00").await;
    assert_eq!(set_pin(&user, &json!({"pin": PIN})).await.0, StatusCode::CREATED);
    let verified = crate::miniapps::session(&user, &app.id).await;
    let charge = |item: &str, amount: &str| {
        json!({"pay": {"kind": "miniapp_charge", "app_id": app.id, "session_id": verified, "action": "buy",
                       "params": {"item": item}, "amount": {"amount": amount, "currency": "USD"}},
               "client": client(true, "wifi")})
    };
    let (status, session) = start(&user, &charge("jasmine-tea", "4.50"), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let review = &session["processes"]["simulated_sheet"]["interface"]["screens"][0]["fields"];
    assert_eq!((review[0]["value"].as_str(), review[2]["value"].as_str()), (Some("Tea Corner"), Some("4.50")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2), "nothing moves before confirming");

    // The sheet and the late app confirm at once: one request (the server may be asked it more
    // than once, as a retried mini-app request is), told its outcome once, charged once.
    let id = session["id"].as_str().unwrap();
    let confirms =
        ["foreground_app", "simulated_sheet", "simulated_only"].map(|process| confirm(&user, id, process, PIN));
    let answers = futures_util::future::join_all(confirms).await;
    for (status, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        assert!(["paid", "processing"].contains(&answer["state"].as_str().unwrap()), "{answer}");
    }
    let session = env.get_json(&format!("/payment-sessions/{id}"), &env.token(&user, &[])).await;
    assert_eq!((session["state"].as_str(), session["payment"]["outcome"].as_str()), (Some("paid"), Some("charged")));
    let (elements, _) = crate::home::shown(&user).await;
    assert!(crate::home::element(&elements, &format!("payment_session:{id}")).is_none(), "confirmed: {elements:?}");
    let request = session["payment"]["id"].as_str().unwrap();
    let url = format!("{}/_sim/requests/{request}", env.stack.miniapp_simulator_url);
    let seen = eventually(10, "the outcome told to the app's server", || async {
        let seen: Value = env.http().get(&url).send().await.unwrap().json().await.unwrap();
        (seen["outcomes"].as_array().map(Vec::len) == Some(1)).then_some(seen)
    })
    .await;
    assert_eq!(seen["outcomes"][0]["outcome"], "charged", "{seen}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1550, 2));

    // A price the server does not ask: refused, nothing moved, the session failed for good.
    let (_, mismatch) = start(&user, &charge("jasmine-tea", "4.00"), &unique("key")).await;
    let (status, failed) = confirm(&user, mismatch["id"].as_str().unwrap(), "simulated_only", PIN).await;
    assert_eq!(
        (status, failed["state"].as_str(), failed["payment"]["reason"].as_str()),
        (StatusCode::OK, Some("failed"), Some("amount_mismatch")),
        "{failed}"
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1550, 2));
    // The payment the user approved and did not make is on their home for a few days, and may
    // be dismissed (nothing is held).
    let failed_id = format!("miniapp_request:{}", failed["payment"]["id"].as_str().unwrap());
    let (elements, _) = crate::home::shown(&user).await;
    let shown = crate::home::element(&elements, &failed_id).expect("the failed payment");
    assert_eq!(
        (shown["kind"].as_str(), shown["priority_class"].as_str(), shown["critical"].as_bool()),
        (Some("miniapp.payment_failed"), Some("money_at_risk"), Some(false)),
        "{shown}"
    );
    assert_eq!(shown["data"]["reason"], "amount_mismatch");
    assert_eq!(crate::home::dismiss(&user, &failed_id).await.0, StatusCode::OK);
    assert!(crate::home::element(&crate::home::shown(&user).await.0, &failed_id).is_none());
    // Cancelled while the app's server is being asked (it answers too late, in 5 s): the request
    // is recorded withdrawn, nothing moves, the server is told, the session stays cancelled.
    let (_, slow) = start(&user, &charge("slow-jasmine-tea", "4.50"), &unique("key")).await;
    let slow = slow["id"].as_str().unwrap();
    let (confirmed, cancelled) = tokio::join!(confirm(&user, slow, "simulated_only", PIN), async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        report(&user, slow, "cancelled", "foreground_app").await
    });
    assert_eq!(cancelled.1["session"]["state"], "cancelled", "{cancelled:?}");
    assert_eq!(
        (confirmed.0, confirmed.1["code"].as_str()),
        (StatusCode::CONFLICT, Some("payment_session_closed")),
        "{confirmed:?}"
    );
    // Its request's id derives from the session's (docs/api/payment-sessions.md).
    let request = format!("r_{}", &superpay::crypto::sha256_hex(format!("{slow}/miniapp-request").as_bytes())[..20]);
    let url = format!("{}/_sim/requests/{request}", env.stack.miniapp_simulator_url);
    let seen = eventually(10, "the withdrawal told to the app's server", || async {
        let seen: Value = env.http().get(&url).send().await.unwrap().json().await.unwrap();
        (seen["outcomes"].as_array().map(Vec::len) == Some(1)).then_some(seen)
    })
    .await;
    assert_eq!(
        (seen["outcomes"][0]["outcome"].as_str(), seen["outcomes"][0]["reason"].as_str()),
        (Some("refused"), Some("payment_session_closed")),
        "{seen}"
    );
    let session = env.get_json(&format!("/payment-sessions/{slow}"), &env.token(&user, &[])).await;
    assert_eq!((session["state"].as_str(), session["payment"].is_null()), (Some("cancelled"), true), "{session}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1550, 2));
    // The user withdrew it: nothing to tell them on their home.
    let (elements, _) = crate::home::shown(&user).await;
    assert!(crate::home::element(&elements, &format!("miniapp_request:{request}")).is_none(), "{elements:?}");
    assert!(crate::home::element(&elements, &format!("payment_session:{slow}")).is_none(), "{elements:?}");

    // Someone else's mini-app session pays nothing for them.
    let (status, problem) = start(&funded_user("5.00").await, &charge("jasmine-tea", "4.50"), &unique("key")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("miniapp_session_invalid")),
        "{problem}"
    );
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_transfer_instruction_session_records_the_pin_checked_consent_and_the_transfer_side_pays_it_once() {
    let env = Env::get();
    let (shop, listing) = listed_shop("30.00").await;
    let user = funded_user("130.00").await;
    assert_eq!(set_pin(&user, &json!({"pin": PIN})).await.0, StatusCode::CREATED);
    let (instruction, signature) = instruction_for(&user, &listing, 2).await;
    let pay = json!({"kind": "transfer_instruction", "instruction": instruction, "signature": signature});
    let body = json!({"pay": pay, "client": client(true, "wifi")});

    // The session fixes what the platform signed: the sheet shows the instruction's own text.
    let (status, session) = start(&user, &body, &unique("key")).await;
    assert_eq!((status, session["state"].as_str()), (StatusCode::CREATED, Some("open")), "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let review = &session["processes"]["simulated_sheet"]["interface"]["screens"][0]["fields"];
    assert_eq!(review[0]["value"], format!("merchant:{}", shop.id));
    assert_eq!(review[1]["value"], instruction.display.text);
    assert_eq!((review[2]["value"].as_str(), review[2]["currency"].as_str()), (Some("60.00"), Some("USD")));
    assert!(session["expires_at"].as_i64() <= Some(instruction.expires_at), "no longer than the instruction");
    // One session per instruction: another key answers the same one.
    let (status, again) = start(&user, &body, &unique("key")).await;
    assert_eq!((status, again["id"].as_str()), (StatusCode::CREATED, Some(id.as_str())), "{again}");
    // Someone else's instruction, or one altered after it was signed, opens nothing; the first is a
    // security event of both users', as on the transfer side.
    let other = funded_user("1.00").await;
    let (status, problem) = start(&other, &body, &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("instruction_not_for_caller")));
    for who in [&other, &user] {
        let events = security_events(who).await;
        let refused: Vec<_> = events.iter().filter(|e| e["kind"] == "payment_session.refused").collect();
        let said: Vec<_> = refused.iter().map(|e| (e["reason"].clone(), e["instruction_id"].clone())).collect();
        assert_eq!(said, [(json!("payer"), json!(instruction.id))], "{who}: {events:?}");
    }
    let mut altered = body.clone();
    altered["pay"]["instruction"]["amount"]["amount"] = json!("0.60");
    let (status, problem) = start(&user, &altered, &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("instruction_signature_invalid")));

    // The transfer side carries it out only with the session's consent.
    let (status, problem) = operate(&user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_session_not_confirmed")));
    assert_eq!((&problem["payment_session"], &problem["flow_control"]["to"]), (&json!(id), &json!("payment/confirm")));
    let (status, problem) = confirm(&user, &id, "simulated_sheet", "000000").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("payment_pin_wrong")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(13_000, 2), "nothing moved");

    // Confirmed on two processes at once: one consent, and still no money moved by it.
    let answers =
        futures_util::future::join_all(["simulated_sheet", "simulated_only"].map(|p| confirm(&user, &id, p, PIN)))
            .await;
    for (status, answer) in &answers {
        assert_eq!((*status, answer["state"].as_str()), (StatusCode::OK, Some("processing")), "{answer}");
        assert_eq!(answer["confirmed"]["payment_id"], instruction.id.as_str());
        assert_eq!(answer["present"]["body"], presented(&instruction, &signature), "what the client sends");
    }
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(13_000, 2));

    // Presented twice at once under two keys: the transfer side moves the money once.
    let present = &answers[0].1["present"];
    assert_eq!(present["path"], "/transfer/operations");
    let keys = [unique("key"), unique("key")];
    let sent = futures_util::future::join_all(keys.iter().map(|key| operate(&user, &present["body"], key))).await;
    let mut statuses: Vec<_> = sent.iter().map(|(status, _)| *status).collect();
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED], "{sent:?}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(7_000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(6_000, 2));

    // GET is the truth: paid, by the transfer side's operation; a cancel now changes nothing.
    let session = env.get_json(&format!("/payment-sessions/{id}"), &env.token(&user, &[])).await;
    assert_eq!((session["state"].as_str(), session["payment"]["state"].as_str()), (Some("paid"), Some("completed")));
    assert_eq!((session["payment"]["id"].as_str(), &session["present"]), (Some(instruction.id.as_str()), &Value::Null));
    let (status, problem) = report(&user, &id, "cancelled", "simulated_sheet").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_session_closed")));
    // The transfer side's message tells the user who never got back to the app.
    let message = eventually(10, "the message", || async {
        messages(&user, &shop.id).await["messages"].as_array().and_then(|m| m.first().cloned())
    })
    .await;
    assert_eq!(message["kind"], "transfer.completed");

    // A cancelled session's instruction is not carried out around it.
    let (cancelled, signature) = instruction_for(&user, &listing, 1).await;
    let pay = json!({"kind": "transfer_instruction", "instruction": cancelled, "signature": signature});
    let (status, session) = start(&user, &json!({"pay": pay, "client": client(true, "wifi")}), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["id"].as_str().unwrap();
    assert_eq!(report(&user, id, "cancelled", "foreground_app").await.1["session"]["state"], "cancelled");
    let (status, problem) = operate(&user, &presented(&cancelled, &signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_session_closed")));
    assert!(problem["detail"].as_str().unwrap().contains("cancelled"), "{problem}");

    // A consent is withdrawn by a cancel while nothing moved; the instruction is then not carried out.
    let (withdrawn, signature) = instruction_for(&user, &listing, 1).await;
    let pay = json!({"kind": "transfer_instruction", "instruction": withdrawn, "signature": signature});
    let (_, session) = start(&user, &json!({"pay": pay, "client": client(true, "wifi")}), &unique("key")).await;
    let id = session["id"].as_str().unwrap();
    assert_eq!(confirm(&user, id, "foreground_app", PIN).await.1["state"], "processing");
    assert_eq!(report(&user, id, "cancelled", "foreground_app").await.1["session"]["state"], "cancelled");
    let (status, problem) = operate(&user, &presented(&withdrawn, &signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("payment_session_closed")));

    // A platform that signs one id twice, with other terms, cannot spend the first one's consent.
    let (first, signature) = instruction_for(&user, &listing, 1).await;
    let pay = json!({"kind": "transfer_instruction", "instruction": first, "signature": signature});
    let (_, session) = start(&user, &json!({"pay": pay, "client": client(true, "wifi")}), &unique("key")).await;
    let id = session["id"].as_str().unwrap();
    assert_eq!(confirm(&user, id, "foreground_app", PIN).await.1["state"], "processing");
    let text = first.display.text.replace("Pay 30.00 USD", "Pay 60.00 USD").replace(" 1 x ", " 2 x ");
    let display = Display { text };
    let amount = Money::parse("60.00", "USD").unwrap();
    let second = Instruction {
        quantity: 2,
        amount,
        display_hash: display.hash(),
        display,
        nonce: unique("nonce"),
        ..first.clone()
    };
    let resigned = signed_by_platform(&second).await;
    let (status, problem) = operate(&user, &presented(&second, &resigned), &unique("key")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("instruction_already_used")),
        "{problem}"
    );
    let pay = json!({"kind": "transfer_instruction", "instruction": second, "signature": resigned});
    let (status, problem) = start(&user, &json!({"pay": pay, "client": client(true, "wifi")}), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("instruction_already_used")));
    let reused = security_events(&user).await.into_iter().filter(|e| e["reason"] == "reused").count();
    assert_eq!(reused, 2, "both refusals are the user's security events");
    assert_eq!(operate(&user, &presented(&first, &signature), &unique("key")).await.0, StatusCode::CREATED);

    // An instruction carried out without a session gets none afterwards.
    let (direct, signature) = instruction_for(&user, &listing, 1).await;
    assert_eq!(operate(&user, &presented(&direct, &signature), &unique("key")).await.0, StatusCode::CREATED);
    let pay = json!({"kind": "transfer_instruction", "instruction": direct, "signature": signature});
    let (status, problem) = start(&user, &json!({"pay": pay, "client": client(true, "wifi")}), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("instruction_already_used")));
    assert_eq!(
        balance(AccountId::wallet(&user)).await,
        Decimal::new(1_000, 2),
        "60.00, 30.00 and 30.00 moved, once each"
    );
    assert_eq!(crate::reconcile::violations(&[&user]).await, vec![]);
}
