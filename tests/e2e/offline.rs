//! Offline payments through the local stack: a payer's enrolled device makes a code, a merchant
//! terminal (signed) presents it, the settlement queue moves the money from the payer's offline
//! reserve to the merchant exactly once; and the codes and calls that must be refused.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::crypto::{Key, Purpose, Signature, derive};
use superpay::ledger::AccountId;
use superpay::offline::{DeviceKey, OFFLINE_WINDOW_SECONDS, OfflineCode};
use superpay_e2e::{Env, unique};

use crate::notifications::assert_poisoned;
use crate::purchases::{balance, merchant_named};

pub struct Till {
    pub merchant: String,
    id: String,
    key_id: String,
    master: Key,
}

pub struct Phone {
    pub user: String,
    key_id: String,
    key: DeviceKey,
}

impl Phone {
    /// `user`'s phone holding `key`, as its enrollment's answer `device` names it.
    pub fn enrolled(user: String, device: &Value, key: DeviceKey) -> Phone {
        Phone { user, key_id: device["key_id"].as_str().expect("an enrolled device's key id").to_owned(), key }
    }

    /// The enrolled device's id (its key id's owner).
    pub fn device_id(&self) -> &str {
        superpay::device_keys::device_of_key(&self.key_id).expect("an enrolled key id")
    }

    /// Its co-signature of a transfer instruction (`confirmation.device`).
    pub fn cosign(&self, instruction: &superpay::instruction::signed::Instruction) -> Value {
        self.signature_of(
            &superpay::instruction::operation::device_message(instruction).expect("a canonical instruction"),
        )
    }

    /// Its signature of any `message`, as `confirmation.device` carries one.
    pub fn signature_of(&self, message: &[u8]) -> Value {
        let signature = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, self.key.sign(message));
        json!({"key_id": self.key_id, "signature": signature})
    }

    /// Its code number `counter`, made now.
    pub fn code(&self, counter: u64) -> String {
        code(self, counter, superpay::clock::now_epoch_seconds())
    }
}

impl Till {
    /// `merchant`'s terminal, as its creation's answer `terminal` shows it.
    pub fn created(merchant: String, terminal: &Value) -> Till {
        Till {
            merchant,
            id: terminal["id"].as_str().expect("a terminal id").to_owned(),
            key_id: terminal["key_id"].as_str().expect("a terminal key id").to_owned(),
            master: Key::from_base64(terminal["secret"].as_str().expect("a terminal secret")).expect("a key"),
        }
    }

    /// `POST path` with `body`, signed by this terminal now (a retry is signed afresh).
    pub fn post(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        let env = Env::get();
        env.signed(env.http().post(env.url(path)), &self.master, &self.key_id, path, body)
    }

    /// `GET path`, signed by this terminal now.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let env = Env::get();
        let signing = derive(&self.master, Purpose::RequestSigning);
        let signature =
            Signature::create(&self.key_id, &signing, "GET", path, b"", superpay::clock::now_epoch_seconds());
        env.with_signature(env.http().get(env.url(path)), &signature)
    }

    /// The same terminal holding the new key of a rotation's answer.
    fn rotated(&self, rotation: &Value) -> Till {
        Till {
            merchant: self.merchant.clone(),
            id: self.id.clone(),
            key_id: rotation["key_id"].as_str().unwrap().to_owned(),
            master: Key::from_base64(rotation["secret"].as_str().unwrap()).unwrap(),
        }
    }
}

pub async fn till() -> Till {
    let env = Env::get();
    // Its product server is the simulator, which knows its key to check our webhooks' signatures.
    let merchant = merchant_named("Corner Shop").await.id;
    let terminal: Value = env
        .http()
        .post(env.url(&format!("/merchants/{merchant}/terminals")))
        .bearer_auth(env.admin_token())
        .header("idempotency-key", unique("key"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Till::created(merchant, &terminal)
}

/// A payer with `reserve` USD in their offline reserve and an enrolled phone.
async fn enrolled_phone(reserve: &str) -> Phone {
    enrolled_phone_of("payer", reserve).await
}

/// The same, for a payer whose id starts with `prefix` (the simulated bank declines "broke...").
pub async fn enrolled_phone_of(prefix: &str, reserve: &str) -> Phone {
    let env = Env::get();
    let user = unique(prefix);
    env.fund(&user, AccountId::reserve(&user), reserve).await;
    let key = DeviceKey::generate();
    let device: Value = env
        .http()
        .post(env.url("/devices"))
        .bearer_auth(env.token(&user, &[]))
        .header("idempotency-key", unique("key"))
        .json(&json!({"public_key": key.public_key(), "offline_limit": {"amount": "50.00", "currency": "USD"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Phone::enrolled(user, &device, key)
}

fn code(phone: &Phone, counter: u64, issued_at: i64) -> String {
    OfflineCode { key_id: phone.key_id.clone(), account: phone.user.clone(), counter, issued_at }.sign(&phone.key)
}

async fn present(till: &Till, amount: &str, code: &str) -> (StatusCode, Value) {
    present_with_key(till, amount, code, &unique("key")).await
}

/// The body of a terminal's `POST /offline/payments`.
pub fn presented(amount: &str, code: &str) -> String {
    json!({"amount": {"amount": amount, "currency": "USD"}, "code": code}).to_string()
}

async fn present_with_key(till: &Till, amount: &str, code: &str, key: &str) -> (StatusCode, Value) {
    let response =
        till.post("/offline/payments", &presented(amount, code)).header("idempotency-key", key).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

/// Presents the phone's code number `counter`, made now.
pub async fn present_code(till: &Till, phone: &Phone, amount: &str, counter: u64) -> (StatusCode, Value) {
    present(till, amount, &code(phone, counter, superpay::clock::now_epoch_seconds())).await
}

async fn payment(till: &Till, id: &str) -> Value {
    till.get(&format!("/offline/payments/{id}")).send().await.unwrap().json().await.unwrap()
}

pub async fn until_state(till: &Till, id: &str, state: &str) -> Value {
    for _ in 0..120 {
        let current = payment(till, id).await;
        if current["state"] == state {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("payment {id} never became {state}: {}", payment(till, id).await);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_presented_code_settles_from_the_reserve_exactly_once() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("100.00").await;
    let now = superpay::clock::now_epoch_seconds();
    let (status, accepted) = present(&till, "12.00", &code(&phone, 1, now)).await;
    assert_eq!((status, accepted["state"].as_str()), (StatusCode::ACCEPTED, Some("pending")), "{accepted}");
    let id = accepted["id"].as_str().unwrap().to_owned();
    until_state(&till, &id, "settled").await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(8800, 2));
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(1200, 2));

    // Several payments a minute from one device: each counter once.
    for counter in [2, 3] {
        let (status, more) = present(&till, "1.00", &code(&phone, counter, now)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{more}");
        until_state(&till, more["id"].as_str().unwrap(), "settled").await;
    }
    // The same settlement job delivered again moves nothing.
    let sqs = env.stack.sqs().await;
    let job = json!({"id": format!("{id}/settle"), "payment_id": id}).to_string();
    sqs.send_message().queue_url(&env.stack.queues["SettlementQueue"]).message_body(&job).send().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(8600, 2));
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(1400, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_key_reused_after_its_record_expired_gets_its_own_payment_or_a_refusal_never_another_payment() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("100.00").await;
    let (key, now) = (unique("key"), superpay::clock::now_epoch_seconds());
    let (caller, route) = (format!("terminal:{}", till.id), "POST /offline/payments");
    let (status, first) = present_with_key(&till, "3.00", &code(&phone, 1, now), &key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");

    // Its record expired: the same presentation again is answered with its payment, paid once.
    env.forget_idempotency_key(&caller, route, &key).await;
    let (status, again) = present_with_key(&till, "3.00", &code(&phone, 1, now), &key).await;
    assert_eq!((status, &again["id"]), (StatusCode::ACCEPTED, &first["id"]), "{again}");

    // Another code under the reused key is another request: refused, nothing recorded.
    env.forget_idempotency_key(&caller, route, &key).await;
    let (status, reused) = present_with_key(&till, "4.00", &code(&phone, 2, now), &key).await;
    assert_eq!((status, reused["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    until_state(&till, first["id"].as_str().unwrap(), "settled").await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(9700, 2), "only the first moved");
    // The refused code was not spent: with a key of its own it pays.
    let (status, second) = present(&till, "4.00", &code(&phone, 2, now)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    assert_ne!(second["id"], first["id"]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_revoked_phones_codes_are_refused_and_payments_before_still_settle() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("30.00").await;
    let device = phone.device_id().to_owned();
    let (status, before) = present_code(&till, &phone, "5.00", 1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{before}");

    let revoke = |user: &str| {
        env.http().post(env.url(&format!("/devices/{device}/revoke"))).bearer_auth(env.token(user, &[])).send()
    };
    // Nobody else can revoke it, or learn that it exists.
    assert_eq!(revoke("someone-else").await.unwrap().status(), StatusCode::NOT_FOUND);
    let revoked: Value = revoke(&phone.user).await.unwrap().json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    let again: Value = revoke(&phone.user).await.unwrap().json().await.unwrap();
    assert_eq!(again["revoked_at"], revoked["revoked_at"], "revoking twice keeps the first time");

    let (status, refused) = present_code(&till, &phone, "5.00", 2).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("device_revoked")));
    until_state(&till, before["id"].as_str().unwrap(), "settled").await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(2500, 2));
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(500, 2));
    // The accepted code's counter was spent; the refused one's was not.
    let (first, second) = (format!("{}#1", phone.key_id), format!("{}#2", phone.key_id));
    let spent = |id| env.partition("OfflineCodesTable", "id", id);
    assert_eq!((spent(&first).await.len(), spent(&second).await.len()), (1, 0));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn bad_codes_and_calls_are_refused_and_move_nothing() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("100.00").await;
    let other = enrolled_phone("100.00").await;
    let now = superpay::clock::now_epoch_seconds();
    let first = code(&phone, 1, now);
    assert_eq!(present(&till, "5.00", &first).await.0, StatusCode::ACCEPTED);

    let (status, problem) = present(&till, "5.00", &first).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("offline_code_replayed")));
    // The phone's key id and account, signed by another device.
    let foreign = OfflineCode { key_id: phone.key_id.clone(), account: phone.user.clone(), counter: 9, issued_at: now }
        .sign(&other.key);
    assert_eq!(present(&till, "5.00", &foreign).await.1["code"], "offline_code_invalid");
    let tampered = first.replacen("SP1.", "SP1.x", 1);
    assert_eq!(present(&till, "5.00", &tampered).await.1["code"], "offline_code_malformed");
    let old = code(&phone, 2, now - OFFLINE_WINDOW_SECONDS - 60);
    assert_eq!(present(&till, "5.00", &old).await.1["code"], "offline_code_expired");
    assert_eq!(present(&till, "50.01", &code(&phone, 3, now)).await.1["code"], "over_offline_limit");
    assert_eq!(present(&till, "5.001", &code(&phone, 4, now)).await.1["code"], "amount_too_many_decimals");

    // A forged or replayed terminal signature.
    let body = json!({"amount": {"amount": "1.00", "currency": "USD"}, "code": code(&phone, 5, now)}).to_string();
    let forged = env.signed(
        env.http().post(env.url("/offline/payments")),
        &Key::random(),
        &till.key_id,
        "/offline/payments",
        &body,
    );
    let forged = forged.header("idempotency-key", unique("key")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let signing = derive(&till.master, Purpose::RequestSigning);
    let signature = Signature::create(&till.key_id, &signing, "POST", "/offline/payments", body.as_bytes(), now);
    let send = || {
        env.with_signature(env.http().post(env.url("/offline/payments")).body(body.clone()), &signature)
            .header("idempotency-key", unique("key"))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::ACCEPTED);
    let replay = send().await.unwrap();
    assert_eq!(replay.json::<Value>().await.unwrap()["code"], "signature_replayed");

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(9400, 2), "only the two good codes paid");
    assert_eq!(balance(AccountId::reserve(&other.user)).await, Decimal::new(10000, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payment_the_reserve_cannot_cover_waits_and_the_payer_is_told() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("3.00").await;
    let (_, accepted) = present(&till, "10.00", &code(&phone, 1, superpay::clock::now_epoch_seconds())).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    until_state(&till, &id, "waiting_for_funds").await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(300, 2));
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::ZERO);
    let page = env.get_json("/conversations/platform/messages", &env.token(&phone.user, &[])).await;
    assert_eq!(page["messages"][0]["kind"], "offline.waiting_for_funds", "{page}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payment_never_topped_up_expires_and_the_merchant_is_told() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("1.00").await;
    let (_, accepted) = present(&till, "6.00", &code(&phone, 1, superpay::clock::now_epoch_seconds())).await;
    let id = accepted["id"].as_str().unwrap().to_owned();
    until_state(&till, &id, "waiting_for_funds").await;
    // Local TopUpTtlSeconds is 15 (infra/local/parameters.json).
    until_state(&till, &id, "expired").await;
    let url = format!("{}/_sim/webhooks/{id}", env.stack.merchant_simulator_url);
    let mut told = Value::Null;
    for _ in 0..40 {
        told = env.http().get(&url).send().await.unwrap().json().await.unwrap();
        if told["accepted"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(told["accepted"][0]["kind"], "offline.expired", "{told}");
    assert_eq!(told["accepted"][0]["payment"]["state"], "expired");
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(100, 2), "nothing moved");
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::ZERO);
    let link = crate::topup::topup_link(&phone.user).await;
    assert_eq!(env.http().get(&link).send().await.unwrap().status(), StatusCode::GONE, "the link expired with it");
}

/// What the phone may still pay offline, as its owner sees it online.
async fn available_offline(phone: &Phone) -> String {
    let env = Env::get();
    let device = phone.key_id.split_once('.').unwrap().0;
    let device = env.get_json(&format!("/devices/{device}"), &env.token(&phone.user, &[])).await;
    device["offline_available"].as_str().unwrap().to_owned()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_devices_unsettled_codes_stay_within_its_offline_limit_and_expired_ones_give_their_room_back() {
    let env = Env::get();
    let till = till().await;
    // Its reserve covers none of them: they wait for funds, unsettled, holding the 50.00 limit.
    let phone = enrolled_phone("1.00").await;
    let now = superpay::clock::now_epoch_seconds();
    let mut unsettled = Vec::new();
    for (counter, amount) in [(1, "20.00"), (2, "20.00")] {
        let (status, accepted) = present(&till, amount, &code(&phone, counter, now)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        unsettled.push(accepted["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(available_offline(&phone).await, "10.00");

    // Under the limit itself, but not beside the two: refused with what is left, nothing recorded.
    let (status, refused) = present(&till, "15.00", &code(&phone, 3, now)).await;
    assert_eq!(
        (status, refused["code"].as_str(), refused["available"].as_str()),
        (StatusCode::CONFLICT, Some("offline_limit_exceeded"), Some("10.00")),
        "{refused}"
    );
    assert!(env.partition("OfflineCodesTable", "id", &format!("{}#3", phone.key_id)).await.is_empty(), "not spent");
    assert_eq!(available_offline(&phone).await, "10.00");
    // Exactly up to the limit pays; a cent more does not.
    let (status, last) = present(&till, "10.00", &code(&phone, 4, now)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{last}");
    unsettled.push(last["id"].as_str().unwrap().to_owned());
    let (status, over) = present(&till, "0.01", &code(&phone, 5, now)).await;
    assert_eq!((status, over["available"].as_str()), (StatusCode::CONFLICT, Some("0.00")), "{over}");

    // Never topped up, they expire (local TopUpTtlSeconds is 15) and give their room back: the
    // refused code, never spent, now pays.
    for id in &unsettled {
        until_state(&till, id, "expired").await;
    }
    assert_eq!(available_offline(&phone).await, "50.00");
    let (status, accepted) = present(&till, "15.00", &code(&phone, 3, now)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::ZERO, "nothing was paid");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn settled_payments_give_their_room_back_to_the_device() {
    let till = till().await;
    let phone = enrolled_phone("100.00").await;
    // Together over the 50.00 limit, each presented once the one before settled.
    for counter in 1..=3 {
        let (status, accepted) = present_code(&till, &phone, "30.00", counter).await;
        assert_eq!(status, StatusCode::ACCEPTED, "code {counter}: {accepted}");
        until_state(&till, accepted["id"].as_str().unwrap(), "settled").await;
        assert_eq!(available_offline(&phone).await, "50.00");
    }
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(1000, 2));
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(9000, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_poison_settlement_message_goes_to_the_dead_letter_queue_at_once_and_good_ones_still_settle() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("10.00").await;
    let sqs = env.stack.sqs().await;
    let poison = format!("poison {}", unique("p"));
    sqs.send_message().queue_url(&env.stack.queues["SettlementQueue"]).message_body(&poison).send().await.unwrap();
    // A good payment beside it settles as usual.
    let (_, accepted) = present(&till, "4.00", &code(&phone, 1, superpay::clock::now_epoch_seconds())).await;
    until_state(&till, accepted["id"].as_str().unwrap(), "settled").await;
    assert_poisoned("SettlementDeadLetterQueue", &poison, "not a settlement message: expected value", None).await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_debit_check_naming_no_top_up_is_poison() {
    let env = Env::get();
    let id = format!("topup-debit/{}/0", unique("k_missing"));
    let body = json!({"kind": "topup.debit", "id": id, "topup": "k_missing"}).to_string();
    let queue = &env.stack.queues["SettlementQueue"];
    crate::notifications::put_outbox_item(&id, "SettlementQueue", &body, superpay::clock::now_epoch_seconds() + 600, 0)
        .await;
    env.stack.sqs().await.send_message().queue_url(queue).message_body(&body).send().await.unwrap();
    let reason = format!("the debit check {id} names no top-up");
    assert_poisoned("SettlementDeadLetterQueue", &body, &reason, Some(&id)).await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_terminal_key_rotates_with_a_grace_for_the_old_one() {
    let env = Env::get();
    let old = till().await;
    let phone = enrolled_phone("50.00").await;
    let path = format!("/merchants/{}/terminals/{}/keys", old.merchant, old.id);
    let (_, rotated) = env.admin_post(&path, &json!({"grace_seconds": 3}), Some(&unique("key"))).await;
    assert_eq!(rotated["previous_key_id"], old.key_id.as_str(), "{rotated}");
    let new = old.rotated(&rotated);
    assert_eq!(present_code(&old, &phone, "1.00", 1).await.0, StatusCode::ACCEPTED, "the old key during the grace");
    assert_eq!(present_code(&new, &phone, "1.00", 2).await.0, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, refused) = present_code(&old, &phone, "1.00", 3).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_invalid")));
    assert_eq!(present_code(&new, &phone, "1.00", 4).await.0, StatusCode::ACCEPTED);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn ending_a_terminal_rotations_grace_stops_its_old_key_at_once() {
    let env = Env::get();
    let old = till().await;
    let phone = enrolled_phone("50.00").await;
    let keys = format!("/merchants/{}/terminals/{}/keys", old.merchant, old.id);
    let (_, rotated) = env.admin_post(&keys, &json!({}), Some(&unique("key"))).await;
    let new = old.rotated(&rotated);
    assert_eq!(present_code(&old, &phone, "1.00", 1).await.0, StatusCode::ACCEPTED, "the old key during the grace");

    let (status, ended) = env.admin_post(&format!("{keys}/end-grace"), &json!({}), Some(&unique("key"))).await;
    assert_eq!((status, ended["previous_key_id"].as_str()), (StatusCode::OK, Some(old.key_id.as_str())), "{ended}");
    let (status, refused) = present_code(&old, &phone, "1.00", 2).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_invalid")));
    assert_eq!(present_code(&new, &phone, "1.00", 3).await.0, StatusCode::ACCEPTED);
    let audit = env.partition("AuditTable", "resource", &format!("merchant/{}", old.merchant)).await;
    assert!(audit.iter().any(|i| i["action"].as_s().unwrap() == "terminal.end_key_grace"));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_suspended_terminals_codes_are_refused_and_nothing_is_recorded() {
    let env = Env::get();
    let till = till().await;
    let phone = enrolled_phone("50.00").await;
    let status_path = format!("/merchants/{}/terminals/{}/status", till.merchant, till.id);
    let (status, suspended) = env.admin_post(&status_path, &json!({"status": "suspended"}), None).await;
    assert_eq!((status, suspended["status"].as_str()), (StatusCode::OK, Some("suspended")), "{suspended}");

    // Presented with a known Idempotency-Key, to look for its record afterwards.
    let key = unique("key");
    let now = superpay::clock::now_epoch_seconds();
    let (status, refused) = present_with_key(&till, "5.00", &code(&phone, 1, now), &key).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("terminal_inactive")));
    // Nothing recorded: no answer kept for the key, the code's counter unspent, the reserve whole.
    let scope = superpay::idempotency::Scope {
        caller: format!("terminal:{}", till.id),
        route: "POST /offline/payments".into(),
        key: superpay::idempotency::IdempotencyKey::parse(Some(&key)).unwrap(),
    };
    assert!(env.partition("IdempotencyTable", "id", &scope.record_id()).await.is_empty());
    assert!(env.partition("OfflineCodesTable", "id", &format!("{}#1", phone.key_id)).await.is_empty());
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(5000, 2));

    // Active again, the same code pays: it was never spent.
    let (status, active) = env.admin_post(&status_path, &json!({"status": "active"}), None).await;
    assert_eq!((status, active["status"].as_str()), (StatusCode::OK, Some("active")));
    let (status, accepted) = present_code(&till, &phone, "5.00", 1).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    until_state(&till, accepted["id"].as_str().unwrap(), "settled").await;

    // Another merchant's terminal is unknown; a status must be one of the two.
    let other = merchant_named("Elsewhere").await.id;
    let foreign = format!("/merchants/{other}/terminals/{}/status", till.id);
    let (status, unknown) = env.admin_post(&foreign, &json!({"status": "suspended"}), None).await;
    assert_eq!((status, unknown["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_terminal")));
    let (status, bad) = env.admin_post(&status_path, &json!({"status": "revoked"}), None).await;
    assert_eq!((status, bad["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_status")));
    let audit = env.partition("AuditTable", "resource", &format!("merchant/{}", till.merchant)).await;
    let changes = audit.iter().filter(|i| i["action"].as_s().unwrap() == "terminal.status").count();
    assert_eq!(changes, 2, "each change audited, the refused ones not");
}
