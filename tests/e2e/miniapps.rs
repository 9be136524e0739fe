//! Capability 2, mini-apps, through the local stack: the admin registry (audited, KMS-wrapped key
//! shown once), verification (descriptor and session, or a chat message saying why), the relay to
//! the simulated third-party server (signed both ways), charges of exactly the approved amount,
//! the outcome told to the server, and every fault changing nothing.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::notifications::eventually;
use crate::purchases::{TestMerchant, balance, funded_user, merchant};

pub struct TestApp {
    pub id: String,
    owner: TestMerchant,
    entry_page: String,
}

fn interface(entry_page: &str, permissions: &[&str]) -> Value {
    json!({
        "title": "Tea Corner",
        "entry_page": entry_page,
        "actions": [{"id": "buy", "title": "Buy"}, {"id": "points", "title": "My points"}],
        "permissions": permissions,
    })
}

/// The admin's registration of a mini-app of `owner` whose server is the simulator, at a fresh
/// address: its body and entry page.
pub fn registration(owner: &str, permissions: &[&str]) -> (Value, String) {
    let base = format!("{}/{}", Env::get().stack.miniapp_simulator_url, unique("app"));
    let entry_page = format!("{base}/index.html");
    let body =
        json!({"owner_merchant_id": owner, "server_url": base, "interface": interface(&entry_page, permissions)});
    (body, entry_page)
}

/// Gives the simulated server the key of the app the admin's answer `created` registered.
pub async fn grant(created: &Value) {
    let env = Env::get();
    let grant = json!({"key_id": created["key_id"], "secret": created["secret"]});
    let granted = env.http().post(format!("{}/_sim/apps", env.stack.miniapp_simulator_url)).json(&grant).send().await;
    assert_eq!(granted.unwrap().status(), StatusCode::NO_CONTENT);
}

/// A mini-app of a fresh merchant whose server is the simulator, which knows the app's key.
async fn app_with(permissions: &[&str]) -> TestApp {
    let owner = merchant().await;
    let (body, entry_page) = registration(&owner.id, permissions);
    let (status, created) = Env::get().admin_post("/miniapps", &body, Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    grant(&created).await;
    TestApp { id: created["id"].as_str().unwrap().into(), owner, entry_page }
}

pub async fn app() -> TestApp {
    app_with(&["wallet.charge", "profile.basic"]).await
}

async fn set_status(app: &str, status: &str) -> (StatusCode, Value) {
    Env::get().admin_post(&format!("/miniapps/{app}/status"), &json!({"status": status}), None).await
}

async fn user_post(user: &str, path: &str, body: Option<&Value>, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), path, body, Some(key)).await
}

async fn verify(user: &str, app: &str) -> (StatusCode, Value) {
    user_post(user, &format!("/miniapps/{app}/verify"), None, &unique("key")).await
}

pub async fn session(user: &str, app: &str) -> String {
    let (status, verified) = verify(user, app).await;
    assert_eq!(status, StatusCode::CREATED, "{verified}");
    verified["session"]["id"].as_str().unwrap().to_owned()
}

pub fn buy(session: &str, item: &str, approved: Option<&str>) -> Value {
    json!({
        "session_id": session,
        "action": "buy",
        "params": {"item": item},
        "approved_amount": approved.map(|a| json!({"amount": a, "currency": "USD"})),
    })
}

pub async fn request(user: &str, app: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    user_post(user, &format!("/miniapps/{app}/requests"), Some(body), key).await
}

async fn messages(user: &str, counterparty: &str) -> Vec<Value> {
    let env = Env::get();
    let page = env.get_json(&format!("/conversations/{counterparty}/messages"), &env.token(user, &[])).await;
    page["messages"].as_array().cloned().unwrap_or_default()
}

/// What the simulated server received for `request_id` (`null` when nothing).
async fn server_saw(request_id: &str) -> Value {
    let env = Env::get();
    let url = format!("{}/_sim/requests/{request_id}", env.stack.miniapp_simulator_url);
    let response = env.http().get(url).send().await.unwrap();
    if response.status() == StatusCode::NOT_FOUND { Value::Null } else { response.json().await.unwrap() }
}

/// What the simulated server received for `request_id`, once it was told the outcome.
async fn told(request_id: &str) -> Value {
    eventually(10, "the outcome at the app's server", || async {
        let seen = server_saw(request_id).await;
        (seen["outcomes"].as_array().map(Vec::len) == Some(1)).then_some(seen)
    })
    .await
}

async fn wallet(user: &str) -> Decimal {
    balance(AccountId::wallet(user)).await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_user_verifies_an_app_opens_it_buys_once_and_the_conversation_shows_it() {
    let env = Env::get();
    let app = app().await;
    let user = funded_user("20.00").await;

    let (status, verified) = verify(&user, &app.id).await;
    assert_eq!(status, StatusCode::CREATED, "{verified}");
    assert_eq!(verified["verified"], true);
    assert_eq!(verified["app"]["interface"]["entry_page"], app.entry_page.as_str());
    assert_eq!(verified["app"]["interface"]["actions"][0]["id"], "buy");
    let session = verified["session"]["id"].as_str().unwrap().to_owned();
    assert!(verified["session"]["expires_at"].as_i64().unwrap() > superpay::clock::now_epoch_seconds());

    // The client opens the app's interface: the entry page the descriptor names.
    let page = env.http().get(&app.entry_page).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("jasmine-tea: 4.50 USD"));

    let key = unique("key");
    let (status, bought) = request(&user, &app.id, &buy(&session, "jasmine-tea", Some("4.50")), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{bought}");
    assert_eq!((bought["outcome"].as_str(), bought["directive"].as_str()), (Some("charged"), Some("close_interface")));
    assert_eq!(bought["charged"], json!({"amount": "4.50", "currency": "USD"}));
    assert_eq!(bought["message"]["text"], "Paid 4.50 USD to Tea Corner: 1 x jasmine tea.");
    assert_eq!(bought["message"]["sequence"], 1);
    assert_eq!(wallet(&user).await, Decimal::new(1550, 2));
    assert_eq!(balance(AccountId::merchant(&app.owner.id)).await, Decimal::new(450, 2));

    // The server got the request once, signed, about a pseudonym, and is told the outcome.
    let request_id = bought["request_id"].as_str().unwrap().to_owned();
    let seen = told(&request_id).await;
    assert_eq!(seen["received"], 1);
    let pseudonym = seen["request"]["user"].as_str().unwrap();
    assert!(pseudonym.starts_with("u_") && !pseudonym.contains(&user), "{pseudonym}");
    assert_eq!(seen["request"]["approved_amount"], json!({"amount": "4.50", "currency": "USD"}));
    assert_eq!(
        (seen["outcomes"][0]["outcome"].as_str(), seen["outcomes"][0]["amount"]["amount"].as_str()),
        (Some("charged"), Some("4.50"))
    );

    // A replay of the same request answers the same and charges nothing more.
    let (status, again) = request(&user, &app.id, &buy(&session, "jasmine-tea", Some("4.50")), &key).await;
    assert_eq!((status, &again), (StatusCode::CREATED, &bought));
    assert_eq!(wallet(&user).await, Decimal::new(1550, 2));
    assert_eq!(server_saw(&request_id).await["received"], 1);

    // The conversation with the app holds the outcome once, unread, in the shape of every message.
    let thread = messages(&user, &format!("miniapp:{}", app.id)).await;
    assert_eq!(thread.len(), 1);
    assert_eq!(thread[0], bought["message"]);
    let list = env.get_json("/conversations", &env.token(&user, &[])).await;
    let summary = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["counterparty"] == format!("miniapp:{}", app.id))
        .cloned()
        .unwrap();
    assert_eq!(summary["unread"], 1);

    // A free action: nothing approved, nothing asked, nothing moves.
    let points = json!({"session_id": session, "action": "points", "params": {"item": "loyalty-points"}});
    let (status, answered) = request(&user, &app.id, &points, &unique("key")).await;
    assert_eq!((status, answered["outcome"].as_str()), (StatusCode::CREATED, Some("completed")));
    assert_eq!(answered["charged"], Value::Null);
    assert_eq!(wallet(&user).await, Decimal::new(1550, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_outcome_the_server_fails_to_take_is_delivered_again_once() {
    let app = app().await;
    let user = funded_user("10.00").await;
    let session = session(&user, &app.id).await;
    let (status, bought) = request(&user, &app.id, &buy(&session, "flaky-oolong", Some("6.00")), &unique("key")).await;
    assert_eq!((status, bought["outcome"].as_str()), (StatusCode::CREATED, Some("charged")), "{bought}");
    let seen = told(bought["request_id"].as_str().unwrap()).await;
    assert_eq!(
        (seen["refused_outcomes"].as_u64(), seen["outcomes"][0]["outcome"].as_str()),
        (Some(1), Some("charged"))
    );
    assert_eq!(wallet(&user).await, Decimal::new(400, 2), "charged once");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn unknown_suspended_and_revoked_apps_answer_with_a_chat_message_and_no_session() {
    let env = Env::get();
    let app = app().await;
    let user = funded_user("5.00").await;

    let (status, unknown) = verify(&user, "a_nosuchapp").await;
    assert_eq!((status, unknown["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_miniapp")));
    assert_eq!(unknown["verified"], false);
    assert_eq!(messages(&user, "platform").await, vec![unknown["message"].clone()]);

    assert_eq!(set_status(&app.id, "suspended").await.0, StatusCode::OK);
    let (status, suspended) = verify(&user, &app.id).await;
    assert_eq!((status, suspended["code"].as_str()), (StatusCode::FORBIDDEN, Some("miniapp_suspended")));
    assert_eq!(suspended["message"]["kind"], "miniapp.unavailable");
    assert_eq!(suspended["message"]["data"]["reason"], "miniapp_suspended");

    let (status, revoked_view) = set_status(&app.id, "revoked").await;
    assert_eq!((status, revoked_view["status"].as_str()), (StatusCode::OK, Some("revoked")));
    let (status, revoked) = verify(&user, &app.id).await;
    assert_eq!((status, revoked["code"].as_str()), (StatusCode::GONE, Some("miniapp_revoked")));
    assert_eq!(revoked["message"]["text"], "Tea Corner was removed from the platform and can no longer be opened.");
    assert!(revoked.get("session").is_none());
    let thread = messages(&user, &format!("miniapp:{}", app.id)).await;
    assert_eq!(thread.len(), 2);
    assert_eq!(thread[0], revoked["message"], "newest first");

    // Revocation is final; the registry's changes are audited.
    let (status, refused) = set_status(&app.id, "active").await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::CONFLICT, Some("miniapp_revoked")));
    let audit = env.partition("AuditTable", "resource", &format!("miniapp/{}", app.id)).await;
    let actions: Vec<&str> =
        audit.iter().filter_map(|i| i.get("action").and_then(|a| a.as_s().ok()).map(String::as_str)).collect();
    assert_eq!(actions.iter().filter(|a| **a == "miniapp.status").count(), 2, "{actions:?}");
    assert!(actions.contains(&"miniapp.register"));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn sessions_serve_only_their_user_and_app_and_a_suspended_app_gets_nothing() {
    let app = app().await;
    let other_app = self::app().await;
    let (alice, bob) = (funded_user("20.00").await, funded_user("20.00").await);
    let alices = session(&alice, &app.id).await;

    for (user, app_id, session_id, code) in [
        (&bob, &app.id, alices.as_str(), "miniapp_session_invalid"),
        (&alice, &other_app.id, alices.as_str(), "miniapp_session_invalid"),
        (&alice, &app.id, "s_nosuchsession", "miniapp_session_invalid"),
    ] {
        let (status, refused) =
            request(user, app_id, &buy(session_id, "jasmine-tea", Some("4.50")), &unique("key")).await;
        assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some(code)), "{refused}");
    }

    // Suspended after the session was issued: refused before anything reaches the server.
    assert_eq!(set_status(&app.id, "suspended").await.0, StatusCode::OK);
    let (status, refused) = request(&alice, &app.id, &buy(&alices, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("miniapp_suspended")));

    assert_eq!((wallet(&alice).await, wallet(&bob).await), (Decimal::new(2000, 2), Decimal::new(2000, 2)));
    assert!(messages(&alice, &format!("miniapp:{}", app.id)).await.is_empty());
    assert_eq!(balance(AccountId::merchant(&app.owner.id)).await, Decimal::ZERO);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_expired_session_is_refused_and_changes_nothing() {
    let app = app().await;
    let user = funded_user("20.00").await;
    let (_, verified) = verify(&user, &app.id).await;
    let expires_at = verified["session"]["expires_at"].as_i64().unwrap();
    let wait = (expires_at - superpay::clock::now_epoch_seconds() + 1).max(0) as u64;
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let session = verified["session"]["id"].as_str().unwrap();
    let key = unique("key");
    let (status, refused) = request(&user, &app.id, &buy(session, "jasmine-tea", Some("4.50")), &key).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("miniapp_session_expired")));
    // Refused by the checks before any claim, and recorded all the same: the key answers it again,
    // and is not the key of another request.
    let (status, again) = request(&user, &app.id, &buy(session, "jasmine-tea", Some("4.50")), &key).await;
    assert_eq!(
        (status, again["code"].as_str(), &again["detail"]),
        (StatusCode::FORBIDDEN, Some("miniapp_session_expired"), &refused["detail"])
    );
    let (status, reused) = request(&user, &app.id, &buy(session, "jasmine-tea", Some("1.00")), &key).await;
    assert_eq!((status, reused["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    assert_eq!(wallet(&user).await, Decimal::new(2000, 2));
    assert!(messages(&user, &format!("miniapp:{}", app.id)).await.is_empty());
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn server_faults_and_other_amounts_charge_nothing_and_say_so_in_the_chat() {
    let app = app().await;
    let user = funded_user("20.00").await;
    let session = session(&user, &app.id).await;
    let cases = [
        ("slow-jasmine-tea", "4.50", StatusCode::GATEWAY_TIMEOUT, "miniapp_server_timeout", "did not answer in time"),
        ("garbage-jasmine-tea", "4.50", StatusCode::BAD_GATEWAY, "miniapp_server_invalid_answer", "could not read"),
        ("badsig-jasmine-tea", "4.50", StatusCode::BAD_GATEWAY, "miniapp_server_bad_signature", "could not verify"),
        ("other-jasmine-tea", "4.50", StatusCode::BAD_GATEWAY, "miniapp_server_invalid_answer", "could not read"),
        ("huge-jasmine-tea", "4.50", StatusCode::BAD_GATEWAY, "miniapp_server_invalid_answer", "could not read"),
        (
            "jasmine-tea",
            "4.00",
            StatusCode::CONFLICT,
            "amount_mismatch",
            "asked for 4.50 USD but you approved 4.00 USD",
        ),
    ];
    for (item, approved, status, code, says) in &cases {
        let (got, answer) = request(&user, &app.id, &buy(&session, item, Some(approved)), &unique("key")).await;
        assert_eq!((got, answer["code"].as_str()), (*status, Some(*code)), "{item}: {answer}");
        assert_eq!(answer["directive"], "close_interface");
        let text = answer["message"]["text"].as_str().unwrap();
        assert!(text.contains(says) && text.contains("nothing was charged"), "{item}: {text}");
        // The server is told not to deliver.
        let request_id = answer["request_id"].as_str().unwrap().to_owned();
        let seen = told(&request_id).await;
        assert_eq!(
            (seen["outcomes"][0]["outcome"].as_str(), seen["outcomes"][0]["reason"].as_str()),
            (Some("refused"), Some(*code))
        );
    }
    assert_eq!(wallet(&user).await, Decimal::new(2000, 2));
    assert_eq!(balance(AccountId::merchant(&app.owner.id)).await, Decimal::ZERO);
    assert_eq!(messages(&user, &format!("miniapp:{}", app.id)).await.len(), cases.len());

    // More than the wallet holds: the server asked the approved amount, the ledger refuses it.
    let poor = funded_user("0.50").await;
    let poor_session = self::session(&poor, &app.id).await;
    let (status, short) =
        request(&poor, &app.id, &buy(&poor_session, "big-teapot", Some("1.00")), &unique("key")).await;
    assert_eq!((status, short["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")));
    assert_eq!(
        short["message"]["text"],
        "Your wallet does not have 1.00 USD available for Tea Corner; nothing was charged."
    );
    assert_eq!(wallet(&poor).await, Decimal::new(50, 2));
    let request_id = short["request_id"].as_str().unwrap().to_owned();
    let seen = told(&request_id).await;
    assert_eq!(seen["outcomes"][0]["reason"], "insufficient_funds");

    // A wallet in another currency: the ledger refuses the charge, the server is told.
    let euro = unique("euro");
    let eur = superpay::money::Money::parse("10.00", "EUR").unwrap();
    let fund = superpay::ledger::Transfer::between(
        unique("fund"),
        eur,
        AccountId::funding(&euro),
        AccountId::wallet(&euro),
        "test.fund",
        "e2e".into(),
    )
    .unwrap();
    Env::get().ledger().await.apply(&fund, vec![], 0).await.unwrap();
    let euro_session = self::session(&euro, &app.id).await;
    let (status, refused) =
        request(&euro, &app.id, &buy(&euro_session, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::CONFLICT, Some("wallet_currency_mismatch")));
    assert_eq!(told(refused["request_id"].as_str().unwrap()).await["outcomes"][0]["outcome"], "refused");
    assert_eq!(balance(AccountId::wallet(&euro)).await, Decimal::new(1000, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_server_at_the_metadata_address_is_never_called() {
    let env = Env::get();
    let owner = merchant().await;
    // Plain http passes registration locally (AllowPlainHttpPartners), as it would a name that
    // resolves there: the address is judged when we call.
    let page = format!("{}/tea/index.html", env.stack.miniapp_simulator_url);
    let body = json!({"owner_merchant_id": owner.id, "server_url": "http://169.254.169.254/latest", "interface": interface(&page, &["wallet.charge"])});
    let (status, created) = env.admin_post("/miniapps", &body, Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let app = created["id"].as_str().unwrap().to_owned();
    let user = funded_user("20.00").await;
    let session = session(&user, &app).await;

    let (status, refused) = request(&user, &app, &buy(&session, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::BAD_GATEWAY, Some("miniapp_server_unreachable")));
    assert!(refused["message"]["text"].as_str().unwrap().contains("nothing was charged"));
    assert_eq!(wallet(&user).await, Decimal::new(2000, 2));
    let log = std::fs::read_to_string(env.stack.logs.join("MiniAppsFunction.log")).expect("the function's log");
    assert!(log.contains("169.254.169.254 is the cloud metadata address"), "the log says why");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn bad_registrations_and_requests_are_refused_with_clear_problems() {
    let env = Env::get();
    let owner = merchant().await;
    let page = "https://tea.example/app/index.html";
    for (body, code) in [
        (
            json!({"owner_merchant_id": "m_nosuch", "server_url": "https://tea.example", "interface": interface(page, &[])}),
            "unknown_merchant",
        ),
        (
            json!({"owner_merchant_id": owner.id, "server_url": "tea.example", "interface": interface(page, &[])}),
            "invalid_server_url",
        ),
        (
            json!({"owner_merchant_id": owner.id, "server_url": "https://tea.example", "interface": interface(page, &["contacts"])}),
            "invalid_interface",
        ),
    ] {
        let (status, refused) = Env::get().admin_post("/miniapps", &body, Some(&unique("key"))).await;
        assert_eq!(refused["code"], code, "{refused}");
        assert!(status.is_client_error());
    }
    let user_registers = env
        .http()
        .post(env.url("/miniapps"))
        .bearer_auth(env.user_token())
        .header("idempotency-key", unique("key"))
        .json(&json!({"owner_merchant_id": owner.id, "server_url": "https://tea.example", "interface": interface(page, &[])}))
        .send()
        .await
        .unwrap();
    assert_eq!(user_registers.status(), StatusCode::FORBIDDEN);

    let app = app_with(&["profile.basic"]).await;
    let user = funded_user("20.00").await;
    let session = session(&user, &app.id).await;
    for (body, code) in [
        (buy(&session, "jasmine-tea", Some("4.50")), "miniapp_may_not_charge"),
        (json!({"session_id": session, "action": "sell"}), "unknown_action"),
        (
            json!({"session_id": session, "action": "buy", "approved_amount": {"amount": 4.5, "currency": "USD"}}),
            "amount_not_decimal_string",
        ),
        (json!({"session_id": session, "action": "buy", "params": "tea"}), "invalid_params"),
        (json!({"session_id": session, "action": "buy", "tip": "1.00"}), "malformed_json"),
    ] {
        let (status, refused) = request(&user, &app.id, &body, &unique("key")).await;
        assert!(status.is_client_error(), "{refused}");
        assert_eq!(refused["code"], code, "{refused}");
    }
    let charging = self::app().await;
    let charging_session = self::session(&user, &charging.id).await;
    let eur = json!({"session_id": charging_session, "action": "buy", "approved_amount": {"amount": "1.00", "currency": "EUR"}});
    let (_, refused) = request(&user, &charging.id, &eur, &unique("key")).await;
    assert_eq!(refused["code"], "currency_not_accepted");
    let no_key = env
        .http()
        .post(env.url(&format!("/miniapps/{}/requests", app.id)))
        .bearer_auth(env.token(&user, &[]))
        .json(&json!({"session_id": session, "action": "points"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.json::<Value>().await.unwrap()["code"], "idempotency_key_missing");
    assert_eq!(wallet(&user).await, Decimal::new(2000, 2));
    assert!(messages(&user, &format!("miniapp:{}", app.id)).await.is_empty());
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_app_key_rotates_and_our_calls_switch_after_the_grace() {
    let env = Env::get();
    let app = app().await;
    let old_key_id = env.get_json(&format!("/miniapps/{}", app.id), &env.admin_token()).await["key_id"].clone();
    let (status, rotated) = Env::get()
        .admin_post(&format!("/miniapps/{}/keys", app.id), &json!({"grace_seconds": 3}), Some(&unique("key")))
        .await;
    assert_eq!((status, &rotated["previous_key_id"]), (StatusCode::CREATED, &old_key_id), "{rotated}");
    // The app's server installs the new key beside the old one.
    let grant = json!({"key_id": rotated["key_id"], "secret": rotated["secret"]});
    env.http().post(format!("{}/_sim/apps", env.stack.miniapp_simulator_url)).json(&grant).send().await.unwrap();

    let user = funded_user("20.00").await;
    let session = session(&user, &app.id).await;
    let (_, during) = request(&user, &app.id, &buy(&session, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!(server_saw(during["request_id"].as_str().unwrap()).await["key_id"], old_key_id, "{during}");
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (status, after) = request(&user, &app.id, &buy(&session, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{after}");
    assert_eq!(server_saw(after["request_id"].as_str().unwrap()).await["key_id"], rotated["key_id"]);
    assert_eq!(wallet(&user).await, Decimal::new(1100, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn ending_an_app_rotations_grace_switches_our_calls_to_the_new_key_at_once() {
    let env = Env::get();
    let app = app().await;
    let keys = format!("/miniapps/{}/keys", app.id);
    let (_, rotated) = env.admin_post(&keys, &json!({}), Some(&unique("key"))).await;
    let grant = json!({"key_id": rotated["key_id"], "secret": rotated["secret"]});
    env.http().post(format!("{}/_sim/apps", env.stack.miniapp_simulator_url)).json(&grant).send().await.unwrap();
    let user = funded_user("20.00").await;
    let session = session(&user, &app.id).await;
    let (_, during) = request(&user, &app.id, &buy(&session, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!(server_saw(during["request_id"].as_str().unwrap()).await["key_id"], rotated["previous_key_id"]);

    let (status, ended) = env.admin_post(&format!("{keys}/end-grace"), &json!({}), Some(&unique("key"))).await;
    assert_eq!((status, &ended["previous_key_id"]), (StatusCode::OK, &rotated["previous_key_id"]), "{ended}");
    let (status, after) = request(&user, &app.id, &buy(&session, "jasmine-tea", Some("4.50")), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{after}");
    assert_eq!(server_saw(after["request_id"].as_str().unwrap()).await["key_id"], rotated["key_id"]);
    assert_eq!(wallet(&user).await, Decimal::new(1100, 2));
    let (status, again) = env.admin_post(&format!("{keys}/end-grace"), &json!({}), Some(&unique("key"))).await;
    assert_eq!((status, again["code"].as_str()), (StatusCode::CONFLICT, Some("no_rotation_in_grace")));
    let audit = env.partition("AuditTable", "resource", &format!("miniapp/{}", app.id)).await;
    assert!(audit.iter().any(|i| i["action"].as_s().unwrap() == "miniapp.end_key_grace"));
}

/// The user as `app`'s server saw them in a free request.
async fn pseudonym(user: &str, app: &str) -> String {
    let points =
        json!({"session_id": session(user, app).await, "action": "points", "params": {"item": "loyalty-points"}});
    let (status, answered) = request(user, app, &points, &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{answered}");
    server_saw(answered["request_id"].as_str().unwrap()).await["request"]["user"].as_str().unwrap().to_owned()
}

/// The pseudonym as it was before issue 9: an unkeyed hash anyone could recompute from a user id.
fn unkeyed_pseudonym(app: &str, user: &str) -> String {
    let mut input = Vec::new();
    for part in [app, user] {
        input.extend((part.len() as u64).to_be_bytes());
        input.extend(part.as_bytes());
    }
    format!("u_{}", &superpay::crypto::sha256_hex(&input)[..24])
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn pseudonyms_are_keyed_stable_per_app_and_differ_across_apps_and_users() {
    let (first, second) = (app().await, app().await);
    let (user, other) = (funded_user("1.00").await, funded_user("1.00").await);
    let seen = pseudonym(&user, &first.id).await;
    assert_eq!(seen, pseudonym(&user, &first.id).await, "stable for one app and user");
    assert_ne!(seen, pseudonym(&user, &second.id).await, "another app cannot link the user");
    assert_ne!(seen, pseudonym(&other, &first.id).await);
    assert!(seen.starts_with("u_") && seen.len() == 34 && !seen.contains(&user), "{seen}");
    assert!(!seen.starts_with(&unkeyed_pseudonym(&first.id, &user)), "keyed, not the old recomputable hash");
}
