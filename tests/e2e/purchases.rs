//! Capability 4, the purchase relay, through the local stack: a funded user buys from the
//! simulated merchant; the order travels sealed and signed; the money is held, then captured or
//! released exactly once; merchants' signed callbacks; and the refusals, each moving nothing.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::crypto::{Key, Purpose, Signature, derive};
use superpay::ledger::{AccountId, AccountKind};
use superpay_e2e::{Env, unique};

use crate::merchants::register;
use crate::notifications::eventually;

pub struct TestMerchant {
    pub id: String,
    pub key_id: String,
    pub master: Key,
}

impl TestMerchant {
    /// The merchant holding a rotation's new key, installed in its product server (the simulator).
    async fn installs(&self, rotation: &Value) -> TestMerchant {
        let env = Env::get();
        let grant = json!({"key_id": rotation["key_id"], "secret": rotation["secret"]});
        let url = format!("{}/_sim/merchants", env.stack.merchant_simulator_url);
        env.http().post(url).json(&grant).send().await.unwrap();
        TestMerchant {
            id: self.id.clone(),
            key_id: rotation["key_id"].as_str().unwrap().into(),
            master: Key::from_base64(rotation["secret"].as_str().unwrap()).unwrap(),
        }
    }
}

/// A merchant whose product server is the simulator, which knows its key.
pub async fn merchant() -> TestMerchant {
    merchant_named("Sim Shop").await
}

pub async fn merchant_named(name: &str) -> TestMerchant {
    let env = Env::get();
    let url = format!("{}/m/{}", env.stack.merchant_simulator_url, unique("shop"));
    let created: Value = register(&json!({"name": name, "product_server_url": url, "currency": "USD"}), &unique("key"))
        .await
        .json()
        .await
        .unwrap();
    installed(&created).await
}

/// The merchant `created` (its registration's answer), its key installed in the simulator.
pub async fn installed(created: &Value) -> TestMerchant {
    let env = Env::get();
    let (id, key_id, secret) =
        (created["id"].as_str().unwrap(), created["key_id"].as_str().unwrap(), created["secret"].as_str().unwrap());
    let granted = env
        .http()
        .post(format!("{}/_sim/merchants", env.stack.merchant_simulator_url))
        .json(&json!({"key_id": key_id, "secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), StatusCode::NO_CONTENT);
    TestMerchant { id: id.into(), key_id: key_id.into(), master: Key::from_base64(secret).unwrap() }
}

/// A user with `amount` USD in their wallet, from their bank (funding account).
pub async fn funded_user(amount: &str) -> String {
    let user = unique("buyer");
    Env::get().fund(&user, AccountId::wallet(&user), amount).await;
    user
}

/// The admin suspends `merchant`.
pub async fn suspend(merchant: &TestMerchant) {
    let env = Env::get();
    let path = format!("/merchants/{}/status", merchant.id);
    let response = env.http().post(env.url(&path)).bearer_auth(env.admin_token()).json(&json!({"status": "suspended"}));
    assert!(response.send().await.unwrap().status().is_success());
}

/// An account's balance; a merchant's is its main account's and its credit sub-accounts' sum.
pub async fn balance(account: AccountId) -> Decimal {
    let ledger = Env::get().ledger().await;
    if account.kind() == AccountKind::Merchant
        && let Some(merchant) = account.merchant_id()
    {
        return ledger.merchant_balance(merchant).await.unwrap().total();
    }
    ledger.account(&account).await.unwrap().map(|a| a.balance).unwrap_or_default()
}

pub async fn buy(user: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), "/purchases", Some(body), Some(key)).await
}

pub fn purchase(merchant: &TestMerchant, product: &str, amount: &str) -> Value {
    json!({"merchant_id": merchant.id, "product_id": product, "quantity": 1, "amount": {"amount": amount, "currency": "USD"}})
}

/// The merchant's signed decision on an order, as its product server would send it later.
pub async fn callback(
    merchant: &TestMerchant,
    order: &str,
    decision: &str,
    sign: impl Fn(&Signature) -> Signature,
) -> (StatusCode, Value) {
    let env = Env::get();
    let path = format!("/merchant/orders/{order}/decision");
    let body = json!({"decision": decision}).to_string();
    let now = superpay::clock::now_epoch_seconds();
    let signing = derive(&merchant.master, Purpose::RequestSigning);
    let signature = sign(&Signature::create(&merchant.key_id, &signing, "POST", &path, body.as_bytes(), now));
    let response = env.with_signature(env.http().post(env.url(&path)).body(body), &signature).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_confirmed_purchase_pays_the_merchant_exactly_once() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("100.00").await;
    let key = unique("key");
    let (status, order) = buy(&user, &purchase(&shop, "green-tea", "12.50"), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["state"], "paid");
    let id = order["id"].as_str().unwrap();
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(8750, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(1250, 2));
    assert_eq!(balance(AccountId::hold(id)).await, Decimal::ZERO);

    // The merchant received the order sealed with its key, and opened it.
    let seen: Value = env
        .http()
        .get(format!("{}/_sim/orders/{id}", env.stack.merchant_simulator_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["details"]["user"], user.as_str());
    assert_eq!(seen["details"]["amount"], json!({"amount": "12.50", "currency": "USD"}));
    assert_eq!(seen["forwarded"], 1, "forwarded once");

    // A retry replays the answer and moves nothing.
    let (again, replayed) = buy(&user, &purchase(&shop, "green-tea", "12.50"), &key).await;
    assert_eq!((again, replayed["id"].as_str()), (StatusCode::CREATED, Some(id)));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(8750, 2));
    // A late, duplicate confirmation changes nothing; a decline now is refused.
    assert_eq!(callback(&shop, id, "confirm", Clone::clone).await.0, StatusCode::OK);
    assert_eq!(callback(&shop, id, "decline", Clone::clone).await.1["code"], "order_already_settled");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(1250, 2));

    let history = Env::get().ledger().await.postings(&AccountId::wallet(&user), None, 10).await.unwrap();
    assert_eq!(history.len(), 2, "funded once, held once");
    let mine: Value = env.get_json(&format!("/purchases/{id}"), &env.token(&user, &[])).await;
    assert_eq!(mine["state"], "paid");
    let theirs =
        env.http().get(env.url(&format!("/purchases/{id}"))).bearer_auth(env.user_token()).send().await.unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND, "another user's order is not visible");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_decline_releases_the_hold() {
    let shop = merchant().await;
    let user = funded_user("20.00").await;
    let (status, order) = buy(&user, &purchase(&shop, "decline-me", "15.00"), &unique("key")).await;
    assert_eq!(
        (status, order["state"].as_str(), order["decline_code"].as_str()),
        (StatusCode::CREATED, Some("declined"), Some("merchant_declined"))
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);
    assert_eq!(balance(AccountId::hold(order["id"].as_str().unwrap())).await, Decimal::ZERO);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_pending_order_waits_for_the_merchants_signed_callback() {
    let shop = merchant().await;
    let other = merchant().await;
    let user = funded_user("50.00").await;
    let (status, order) = buy(&user, &purchase(&shop, "pending-tea", "30.00"), &unique("key")).await;
    assert_eq!((status, order["state"].as_str()), (StatusCode::ACCEPTED, Some("awaiting_merchant")));
    let id = order["id"].as_str().unwrap();
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2), "held while waiting");
    assert_eq!(balance(AccountId::hold(id)).await, Decimal::new(3000, 2));

    // Forged, stale, foreign and unsigned callbacks are refused and move nothing.
    let (status, body) =
        callback(&shop, id, "confirm", |s| Signature { signature: "00".repeat(32), ..s.clone() }).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_invalid")));
    let (status, body) = callback(&shop, id, "confirm", |s| {
        let stale = s.timestamp - 600;
        let signing = derive(&shop.master, Purpose::RequestSigning);
        let canonical = superpay::crypto::canonical_request(
            "POST",
            &format!("/merchant/orders/{id}/decision"),
            stale,
            &s.nonce,
            &s.key_id,
            json!({"decision": "confirm"}).to_string().as_bytes(),
        );
        Signature { timestamp: stale, signature: superpay::crypto::sign(&signing, &canonical), ..s.clone() }
    })
    .await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_stale")));
    let (status, body) = callback(&other, id, "confirm", Clone::clone).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_order")),
        "another merchant's order"
    );
    let env = Env::get();
    let unsigned = env
        .http()
        .post(env.url(&format!("/merchant/orders/{id}/decision")))
        .body(r#"{"decision":"confirm"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(balance(AccountId::hold(id)).await, Decimal::new(3000, 2));

    // The real confirmation pays; replaying its exact request (same nonce) is refused.
    let signing = derive(&shop.master, Purpose::RequestSigning);
    let path = format!("/merchant/orders/{id}/decision");
    let body = json!({"decision": "confirm"}).to_string();
    let signature =
        Signature::create(&shop.key_id, &signing, "POST", &path, body.as_bytes(), superpay::clock::now_epoch_seconds());
    let send = || env.with_signature(env.http().post(env.url(&path)).body(body.clone()), &signature).send();
    let paid: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(paid["state"], "paid");
    let replay = send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(replay.json::<Value>().await.unwrap()["code"], "signature_replayed");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(3000, 2));
    assert_eq!(balance(AccountId::hold(id)).await, Decimal::ZERO);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_merchant_that_times_out_or_answers_garbage_leaves_the_order_waiting() {
    let shop = merchant().await;
    let user = funded_user("30.00").await;
    for product in ["slow-tea", "garbage-tea", "badsig-tea", "other-order"] {
        let (status, order) = buy(&user, &purchase(&shop, product, "5.00"), &unique("key")).await;
        assert_eq!((status, order["state"].as_str()), (StatusCode::ACCEPTED, Some("awaiting_merchant")), "{product}");
    }
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1000, 2), "four holds of 5.00");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO, "nothing was paid");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn bad_purchases_are_refused_and_move_nothing() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    let cases = [
        (
            json!({"merchant_id": shop.id, "product_id": "t", "quantity": 1, "amount": {"amount": 5, "currency": "USD"}}),
            StatusCode::BAD_REQUEST,
            "amount_not_decimal_string",
        ),
        (purchase(&shop, "t", "0.00"), StatusCode::BAD_REQUEST, "amount_not_positive"),
        (purchase(&shop, "t", "1.001"), StatusCode::BAD_REQUEST, "amount_too_many_decimals"),
        (purchase(&shop, "t", "-1.00"), StatusCode::BAD_REQUEST, "amount_not_decimal_string"),
        (purchase(&shop, "t", "100000.01"), StatusCode::BAD_REQUEST, "amount_over_limit"),
        (json!({"merchant_id": shop.id}), StatusCode::BAD_REQUEST, "malformed_json"),
        (purchase(&shop, "", "1.00"), StatusCode::BAD_REQUEST, "invalid_product_id"),
        (
            json!({"merchant_id": shop.id, "product_id": "t", "quantity": 0, "amount": {"amount": "1.00", "currency": "USD"}}),
            StatusCode::BAD_REQUEST,
            "invalid_quantity",
        ),
        (
            json!({"merchant_id": shop.id, "product_id": "t", "quantity": 1, "amount": {"amount": "1.00", "currency": "EUR"}}),
            StatusCode::BAD_REQUEST,
            "currency_not_accepted",
        ),
        (
            json!({"merchant_id": "m_nobody", "product_id": "t", "quantity": 1, "amount": {"amount": "1.00", "currency": "USD"}}),
            StatusCode::NOT_FOUND,
            "unknown_merchant",
        ),
        (purchase(&shop, "t", "10.01"), StatusCode::PAYMENT_REQUIRED, "insufficient_funds"),
    ];
    for (body, status, code) in cases {
        let (got, problem) = buy(&user, &body, &unique("key")).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body}");
    }
    // Amount errors name the exact rule in the detail.
    let (_, problem) = buy(&user, &purchase(&shop, "t", "1.001"), &unique("key")).await;
    assert!(problem["detail"].as_str().unwrap().contains("decimal places"), "{problem}");

    // One key, two bodies: the second is refused. The same key from another user is theirs.
    let key = unique("key");
    assert_eq!(buy(&user, &purchase(&shop, "t", "1.00"), &key).await.0, StatusCode::CREATED);
    assert_eq!(buy(&user, &purchase(&shop, "t", "2.00"), &key).await.1["code"], "idempotency_key_reused");
    let neighbour = funded_user("5.00").await;
    assert_eq!(buy(&neighbour, &purchase(&shop, "t", "1.00"), &key).await.0, StatusCode::CREATED);
    let missing_key = env
        .http()
        .post(env.url("/purchases"))
        .bearer_auth(env.token(&user, &[]))
        .json(&purchase(&shop, "t", "1.00"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing_key.json::<Value>().await.unwrap()["code"], "idempotency_key_missing");

    // A suspended merchant sells nothing.
    suspend(&shop).await;
    assert_eq!(buy(&user, &purchase(&shop, "t", "1.00"), &unique("key")).await.1["code"], "merchant_inactive");

    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(900, 2), "only the one good purchase moved money");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(200, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_suspended_merchant_cannot_capture_but_replays_and_releases_still_work() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("30.00").await;
    let paid_key = unique("key");
    let (status, paid) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &paid_key).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, waiting) = buy(&user, &purchase(&shop, "pending-a", "5.00"), &unique("key")).await;
    let (_, waiting_too) = buy(&user, &purchase(&shop, "pending-b", "5.00"), &unique("key")).await;
    let (waiting, waiting_too) =
        (waiting["id"].as_str().unwrap().to_owned(), waiting_too["id"].as_str().unwrap().to_owned());

    // The callback's body may name its order (MerchantAnswer's shape), but only its own.
    let path = format!("/merchant/orders/{waiting}/decision");
    let mismatch = json!({"order_id": waiting_too, "decision": "confirm"}).to_string();
    let response =
        env.signed(env.http().post(env.url(&path)), &shop.master, &shop.key_id, &path, &mismatch).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["code"], "order_id_mismatch");

    suspend(&shop).await;
    // A retry of the paid purchase is answered as the first time, merchant suspended or not.
    let (status, replay) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &paid_key).await;
    assert_eq!((status, replay["id"].clone()), (StatusCode::CREATED, paid["id"].clone()));
    // No capture by a suspended merchant; a decline (money back to the user) is still taken.
    assert_eq!(callback(&shop, &waiting, "confirm", Clone::clone).await.1["code"], "merchant_inactive");
    let named = json!({"order_id": waiting, "decision": "decline"}).to_string();
    let response =
        env.signed(env.http().post(env.url(&path)), &shop.master, &shop.key_id, &path, &named).send().await.unwrap();
    assert_eq!(response.json::<Value>().await.unwrap()["state"], "declined");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(500, 2), "only the first purchase paid");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(2000, 2), "one hold still waits");
}

/// What the simulated product server saw of `order`: which key signed it, how often it came.
async fn seen_by_merchant(order: &str) -> Value {
    let env = Env::get();
    let url = format!("{}/_sim/orders/{order}", env.stack.merchant_simulator_url);
    env.http().get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_rotated_key_takes_over_without_downtime() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("50.00").await;
    let path = format!("/merchants/{}/keys", shop.id);
    let (_, rotated) = env.admin_post(&path, &json!({"grace_seconds": 3}), Some(&unique("key"))).await;
    assert_eq!(
        (rotated["key_id"].as_str(), rotated["previous_key_id"].as_str()),
        (Some(format!("{}.k2", shop.id).as_str()), Some(shop.key_id.as_str()))
    );
    // The merchant installs the new key beside the old one (the simulator is told).
    let new_key = shop.installs(&rotated).await;
    let (status, again) = env.admin_post(&path, &json!({"grace_seconds": 3}), Some(&unique("key"))).await;
    assert_eq!((status, again["code"].as_str()), (StatusCode::CONFLICT, Some("rotation_in_progress")));

    // During the grace both keys sign the merchant's calls, and ours still use the old key.
    let (_, during) = buy(&user, &purchase(&shop, "pending-tea", "2.00"), &unique("key")).await;
    let during = during["id"].as_str().unwrap().to_owned();
    assert_eq!(seen_by_merchant(&during).await["key_id"], shop.key_id.as_str());
    assert_eq!(callback(&new_key, &during, "confirm", Clone::clone).await.0, StatusCode::OK);
    let (_, other) = buy(&user, &purchase(&shop, "pending-tea", "2.00"), &unique("key")).await;
    assert_eq!(callback(&shop, other["id"].as_str().unwrap(), "decline", Clone::clone).await.0, StatusCode::OK);

    // After it, only the new key: ours sign with it, the old one is refused.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    let (status, after) = buy(&user, &purchase(&shop, "green-tea", "3.00"), &unique("key")).await;
    assert_eq!((status, after["state"].as_str()), (StatusCode::CREATED, Some("paid")), "{after}");
    assert_eq!(seen_by_merchant(after["id"].as_str().unwrap()).await["key_id"], new_key.key_id.as_str());
    let (_, late) = buy(&user, &purchase(&shop, "pending-tea", "2.00"), &unique("key")).await;
    let late = late["id"].as_str().unwrap().to_owned();
    assert_eq!(callback(&shop, &late, "confirm", Clone::clone).await.1["code"], "signature_invalid");
    assert_eq!(callback(&new_key, &late, "confirm", Clone::clone).await.0, StatusCode::OK);
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(700, 2));
    let audit = env.partition("AuditTable", "resource", &format!("merchant/{}", shop.id)).await;
    assert!(
        audit
            .iter()
            .any(|i| i.get("action").and_then(|a| a.as_s().ok()).map(String::as_str) == Some("merchant.rotate_key"))
    );
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn ending_a_rotations_grace_stops_the_old_key_at_once() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("50.00").await;
    let keys = format!("/merchants/{}/keys", shop.id);
    let end = format!("{keys}/end-grace");
    let (status, none) = env.admin_post(&end, &json!({}), Some(&unique("key"))).await;
    assert_eq!((status, none["code"].as_str()), (StatusCode::CONFLICT, Some("no_rotation_in_grace")), "{none}");

    // A rotation with the default grace (a day), the new key installed beside the old one.
    let (_, rotated) = env.admin_post(&keys, &json!({}), Some(&unique("key"))).await;
    let new_key = shop.installs(&rotated).await;
    let (_, waiting) = buy(&user, &purchase(&shop, "pending-tea", "2.00"), &unique("key")).await;
    let waiting = waiting["id"].as_str().unwrap().to_owned();
    assert_eq!(seen_by_merchant(&waiting).await["key_id"], shop.key_id.as_str(), "ours sign with the old key");

    let key = unique("key");
    let (status, ended) = env.admin_post(&end, &json!({}), Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(
        (ended["key_id"].as_str(), ended["previous_key_id"].as_str()),
        (Some(new_key.key_id.as_str()), Some(shop.key_id.as_str()))
    );
    assert!(ended["previous_valid_until"].as_i64().unwrap() <= superpay::clock::now_epoch_seconds());

    // At once, not after the day: the old key is refused, the new one taken, ours sign with it.
    assert_eq!(callback(&shop, &waiting, "confirm", Clone::clone).await.1["code"], "signature_invalid");
    assert_eq!(callback(&new_key, &waiting, "confirm", Clone::clone).await.0, StatusCode::OK);
    let (status, after) = buy(&user, &purchase(&shop, "green-tea", "3.00"), &unique("key")).await;
    assert_eq!((status, after["state"].as_str()), (StatusCode::CREATED, Some("paid")), "{after}");
    assert_eq!(seen_by_merchant(after["id"].as_str().unwrap()).await["key_id"], new_key.key_id.as_str());
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(500, 2));

    // A retry replays the answer; there is no grace left to end; the next rotation may start.
    let (status, replay) = env.admin_post(&end, &json!({}), Some(&key)).await;
    assert_eq!((status, &replay), (StatusCode::OK, &ended));
    let (status, again) = env.admin_post(&end, &json!({}), Some(&unique("key"))).await;
    assert_eq!((status, again["code"].as_str()), (StatusCode::CONFLICT, Some("no_rotation_in_grace")));
    let (status, next) = env.admin_post(&keys, &json!({"grace_seconds": 60}), Some(&unique("key"))).await;
    assert_eq!((status, next["previous_key_id"].as_str()), (StatusCode::CREATED, Some(new_key.key_id.as_str())));
    let audit = env.partition("AuditTable", "resource", &format!("merchant/{}", shop.id)).await;
    let ends = audit.iter().filter(|i| i["action"].as_s().unwrap() == "merchant.end_key_grace").count();
    assert_eq!(ends, 1, "one end, however often it was asked");
}

/// A fault the test injects: the merchant's account (not yet used) is made to hold another
/// currency, so the ledger refuses to credit it and a capture's transaction fails after the
/// merchant confirmed, as contention or an outage would make it fail. Deleting the item (it has no
/// balance and no postings) puts the account back as it was.
async fn merchant_account_refuses_credits(merchant: &str, refuses: bool) {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let env = Env::get();
    let (pk, sk) = (S(format!("account#{}", AccountId::merchant(merchant))), S("account".into()));
    let client = env.dynamodb().await;
    if refuses {
        let put = client.put_item().table_name(env.table("LedgerTable")).item("pk", pk).item("sk", sk);
        let put = put.item("currency", S("EUR".into())).item("balance", N("0".into())).item("sequence", N("0".into()));
        put.condition_expression("attribute_not_exists(pk)").send().await.expect("the account is new");
    } else {
        client.delete_item().table_name(env.table("LedgerTable")).key("pk", pk).key("sk", sk).send().await.unwrap();
    }
}

async fn order_of(user: &str, id: &str) -> Value {
    let env = Env::get();
    env.get_json(&format!("/purchases/{id}"), &env.token(user, &[])).await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_recorded_confirm_survives_a_failed_capture_and_is_paid_later() {
    let shop = merchant().await;
    let user = funded_user("30.00").await;
    let (_, later) = buy(&user, &purchase(&shop, "pending-tea", "7.00"), &unique("key")).await;
    let later = later["id"].as_str().unwrap().to_owned();
    merchant_account_refuses_credits(&shop.id, true).await;

    // The product server confirms at once, but the capture cannot commit: the confirm is recorded.
    let (status, at_once) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &unique("key")).await;
    assert_eq!(
        (status, at_once["state"].as_str(), at_once["decision"].as_str()),
        (StatusCode::ACCEPTED, Some("awaiting_merchant"), Some("confirm")),
        "{at_once}"
    );
    let at_once = at_once["id"].as_str().unwrap().to_owned();
    // The same for the merchant's signed callback.
    let (status, body) = callback(&shop, &later, "confirm", Clone::clone).await;
    assert_eq!(
        (status, body["state"].as_str(), body["decision"].as_str()),
        (StatusCode::ACCEPTED, Some("awaiting_merchant"), Some("confirm")),
        "{body}"
    );
    // A confirm stands: the merchant may have shipped. The opposite decision is refused.
    let (status, body) = callback(&shop, &later, "decline", Clone::clone).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("order_already_decided")), "{body}");
    assert_eq!(balance(AccountId::hold(&at_once)).await, Decimal::new(500, 2), "nothing moved yet");
    assert_eq!(balance(AccountId::hold(&later)).await, Decimal::new(700, 2));
    // An order nobody decides, for contrast: its hold is released at expiry.
    let (_, undecided) = buy(&user, &purchase(&shop, "pending-tea", "3.00"), &unique("key")).await;
    let undecided = undecided["id"].as_str().unwrap().to_owned();

    // The fault clears. Without another call from anyone, the recorded confirms are captured (by a
    // retry soon after, at the latest by the orders' expiry checks), never released.
    merchant_account_refuses_credits(&shop.id, false).await;
    for (id, state) in [(&at_once, "paid"), (&later, "paid"), (&undecided, "expired")] {
        let order = eventually(30, "the settlement", || async {
            let order = order_of(&user, id).await;
            (order["state"] != "awaiting_merchant").then_some(order)
        })
        .await;
        assert_eq!(order["state"], state, "{order}");
        assert_eq!(balance(AccountId::hold(id)).await, Decimal::ZERO);
    }
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(1200, 2), "both confirms paid, once");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1800, 2), "only the undecided order came back");
}
