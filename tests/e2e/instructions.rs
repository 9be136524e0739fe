//! Capability 8 (signed transfer instructions) through the local stack: a merchant publishes a
//! listing to the transfer platform (signed with its own key) and to the transfer side (signed by
//! its transfer signer, a key the platform cannot unwrap), each keeping its own copy (audited,
//! versioned); and the publications that must be refused.

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay::crypto::Key;
use superpay_e2e::{Env, unique};

use crate::purchases::{TestMerchant, merchant};

/// A publication of listing `id` on `side` (`platform` or `transfer`), signed with `signer`'s key
/// (a merchant's own, or its transfer signer's).
pub async fn publish(side: &str, signer: &TestMerchant, id: &str, body: &Value) -> (StatusCode, Value) {
    let env = Env::get();
    let (path, body) = (format!("/{side}/listings/{id}"), body.to_string());
    let request = env.signed_as("PUT", env.http().put(env.url(&path)), &signer.master, &signer.key_id, &path, &body);
    let response = request.header("content-type", "application/json").send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

/// A terminal of `shop`'s registered by the admin (`{"kind": ...}`, or none for a till): the
/// registration's answer (its key shown once) and the terminal as a signer.
async fn terminal(shop: &TestMerchant, kind: Option<&str>) -> (Value, TestMerchant) {
    let env = Env::get();
    let path = format!("/merchants/{}/terminals", shop.id);
    let request =
        env.http().post(env.url(&path)).bearer_auth(env.admin_token()).header("idempotency-key", unique("key"));
    let request = match kind {
        Some(kind) => request.json(&json!({"kind": kind})),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let created: Value = response.json().await.unwrap();
    assert_eq!((status, created["kind"].as_str()), (StatusCode::CREATED, Some(kind.unwrap_or("till"))), "{created}");
    let master = Key::from_base64(created["secret"].as_str().expect("the secret, shown once")).expect("a key");
    let key_id = created["key_id"].as_str().expect("a key id").to_owned();
    (created, TestMerchant { id: shop.id.clone(), key_id, master })
}

/// `shop`'s transfer signer (a terminal of kind `transfer`, registered by the admin): it signs the
/// shop's calls to the transfer side.
pub async fn transfer_signer(shop: &TestMerchant) -> TestMerchant {
    terminal(shop, Some("transfer")).await.1
}

pub fn room(version: u64, price: &str) -> Value {
    json!({"listing_version": version, "title": "Sea view room, one night", "price": {"amount": price, "currency": "USD"}})
}

/// `side`'s copy of listing `id`, as a signed-in user reads it.
pub async fn copy(side: &str, id: &str) -> (StatusCode, Value) {
    let env = Env::get();
    let response =
        env.http().get(env.url(&format!("/{side}/listings/{id}"))).bearer_auth(env.user_token()).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_listing_is_published_to_each_side_separately_and_its_version_goes_up_on_every_change() {
    let env = Env::get();
    let shop = merchant().await;
    let signer = transfer_signer(&shop).await;
    let id = format!("{}.{}", shop.id, unique("room"));

    let (status, created) = publish("platform", &shop, &id, &room(1, "80.00")).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["listing_version"], 1);
    assert_eq!(created["payee_account"], format!("merchant:{}", shop.id));
    assert_eq!(created["price"], json!({"amount": "80.00", "currency": "USD"}));
    // The same version and terms again (a retry): nothing changes.
    let (status, again) = publish("platform", &shop, &id, &room(1, "80.00")).await;
    assert_eq!((status, &again), (StatusCode::OK, &created));
    let (status, changed) = publish("platform", &shop, &id, &room(2, "85.00")).await;
    assert_eq!((status, changed["listing_version"].as_u64()), (StatusCode::OK, Some(2)), "{changed}");
    assert_eq!(copy("platform", &id).await, (StatusCode::OK, changed.clone()));
    // Only the next version changes it: a late retry of version 1 or a skipped version is refused.
    for body in [room(1, "80.00"), room(2, "90.00"), room(4, "90.00")] {
        let (status, problem) = publish("platform", &shop, &id, &body).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::CONFLICT, Some("listing_version_mismatch")),
            "{body}"
        );
        assert_eq!(problem["current_version"], 2);
    }

    // The transfer side has its own copy: none until the merchant publishes there too, at its
    // own number for these terms, through its transfer signer. The merchant's own key, which the
    // platform can unwrap, is unknown there, and the transfer signer's is unknown on the platform.
    assert_eq!(copy("transfer", &id).await.1["code"], "unknown_listing");
    for (side, key) in [("transfer", &shop), ("platform", &signer)] {
        let (status, problem) = publish(side, key, &id, &room(2, "85.00")).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_invalid")), "{side}");
    }
    // Nor is a till's key; and a transfer signer cannot present offline payments.
    let (_, till) = terminal(&shop, None).await;
    let (status, problem) = publish("transfer", &till, &id, &room(2, "85.00")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_invalid")), "a till");
    let (created, _) = terminal(&shop, Some("transfer")).await;
    let as_till = crate::offline::Till::created(shop.id.clone(), &created);
    let body = crate::offline::presented("1.00", "not-a-code");
    let presented =
        as_till.post("/offline/payments", &body).header("idempotency-key", unique("key")).send().await.unwrap();
    assert_eq!(presented.status(), StatusCode::UNAUTHORIZED, "a transfer signer at a till");

    let (status, theirs) = publish("transfer", &signer, &id, &room(2, "85.00")).await;
    assert_eq!((status, theirs["listing_version"].as_u64()), (StatusCode::CREATED, Some(2)), "{theirs}");

    // Every change is audited, with the side it was made on.
    let audited = env.partition("AuditTable", "resource", &format!("listing/platform/{id}")).await;
    let actions: Vec<String> = audited.iter().filter_map(|e| e.get("action")?.as_s().ok().cloned()).collect();
    assert_eq!(actions, ["listing.publish", "listing.update"]);
    assert_eq!(env.partition("AuditTable", "resource", &format!("listing/transfer/{id}")).await.len(), 1);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn publications_that_name_another_payee_or_listing_or_come_unsigned_are_refused() {
    let env = Env::get();
    let (shop, other) = (merchant().await, merchant().await);
    let (shop_signer, other_signer) = (transfer_signer(&shop).await, transfer_signer(&other).await);
    let id = format!("{}.{}", shop.id, unique("room"));
    assert_eq!(publish("transfer", &shop_signer, &id, &room(1, "80.00")).await.0, StatusCode::CREATED);

    let mut payee = room(2, "80.00");
    payee["payee_account"] = json!(format!("merchant:{}", other.id));
    let mut unknown_field = room(2, "80.00");
    unknown_field["payee"] = json!("wallet:someone");
    let cases = [
        (&shop_signer, id.as_str(), payee, StatusCode::FORBIDDEN, "payee_not_own_account"),
        (&other_signer, id.as_str(), room(2, "1.00"), StatusCode::FORBIDDEN, "listing_id_not_own"),
        (
            &shop_signer,
            id.as_str(),
            json!({"listing_version": 2, "title": "Room", "price": {"amount": "80.00", "currency": "EUR"}}),
            StatusCode::BAD_REQUEST,
            "listing_currency_mismatch",
        ),
        (
            &shop_signer,
            id.as_str(),
            json!({"listing_version": 2, "title": "Room \u{202e}00.1", "price": {"amount": "80.00", "currency": "USD"}}),
            StatusCode::BAD_REQUEST,
            "invalid_listing_title",
        ),
        (&shop_signer, id.as_str(), unknown_field, StatusCode::BAD_REQUEST, "malformed_json"),
        (&shop_signer, "not an id", room(1, "80.00"), StatusCode::BAD_REQUEST, "invalid_id"),
    ];
    for (who, listing, body, status, code) in cases {
        let (got, problem) = publish("transfer", who, listing, &body).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body}: {problem}");
    }
    assert_eq!(copy("transfer", &id).await.1["listing_version"], 1, "nothing changed the copy");

    let unsigned = env
        .http()
        .put(env.url(&format!("/transfer/listings/{id}")))
        .bearer_auth(env.user_token())
        .json(&room(2, "0.01"))
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unsigned.json::<Value>().await.unwrap()["code"], "signature_missing");

    // A suspended merchant publishes nothing more.
    let (status, _) =
        env.admin_post(&format!("/merchants/{}/status", shop.id), &json!({"status": "suspended"}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = publish("transfer", &shop_signer, &id, &room(2, "0.01")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("merchant_inactive")), "{problem}");
    assert_eq!(copy("transfer", &id).await.1["price"]["amount"], "80.00");

    // The refusals that try to pay another account, take another's listing or come from a
    // suspended merchant are kept with the listing's history, naming the key that signed.
    let history = env.partition("AuditTable", "resource", &format!("listing/transfer/{id}")).await;
    let refused: Vec<(String, String)> = history
        .iter()
        .filter(|e| e.get("action").and_then(|a| a.as_s().ok()).is_some_and(|a| a == "listing.refused"))
        .filter_map(|e| {
            let detail: Value = serde_json::from_str(e.get("detail")?.as_s().ok()?).ok()?;
            Some((detail["code"].as_str()?.to_owned(), detail["key_id"].as_str()?.to_owned()))
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("payee_not_own_account".to_owned(), shop_signer.key_id.clone()),
            ("listing_id_not_own".to_owned(), other_signer.key_id.clone()),
            ("merchant_inactive".to_owned(), shop_signer.key_id.clone()),
        ]
    );
}

/// `user` asks the platform for an instruction (`POST /platform/instructions`) with `key`.
pub async fn instruct(user: &str, body: &Value, key: Option<&str>) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), "/platform/instructions", Some(body), key).await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_platform_prices_and_signs_an_instruction_from_its_own_copy_and_any_change_voids_it() {
    let env = Env::get();
    let shop = crate::purchases::merchant_named("Sea Shop").await;
    let id = format!("{}.{}", shop.id, unique("room"));
    assert_eq!(publish("platform", &shop, &id, &room(1, "80.00")).await.0, StatusCode::CREATED);
    let (user, key) = (unique("payer"), unique("key"));

    let (status, answer) = instruct(&user, &json!({"listing_id": id, "quantity": 2}), Some(&key)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let shown = &answer["instruction"];
    assert_eq!(shown["amount"], json!({"amount": "160.00", "currency": "USD"}));
    assert_eq!((shown["listing_id"].as_str(), shown["listing_version"].as_u64()), (Some(id.as_str()), Some(1)));
    assert_eq!(shown["payee"], format!("merchant:{}", shop.id));
    assert_eq!(shown["payer"], user.as_str());
    assert_eq!(shown["expires_at"].as_i64().unwrap() - shown["issued_at"].as_i64().unwrap(), 300);
    let text = format!("Pay 160.00 USD to Sea Shop ({}) for 2 x Sea view room, one night.", shop.id);
    assert_eq!(shown["display"]["text"], text.as_str());
    assert_eq!(shown["display_hash"], superpay::crypto::sha256_hex(text.as_bytes()));
    let kid = env.stack.keys.get("InstructionSigningKey").expect("the signing key");
    assert_eq!(shown["kid"], kid.as_str());

    // Signed by the platform's KMS key: it verifies with the public key alone, and any change
    // (another amount, another payee, what was shown) voids it.
    use superpay::instruction::signed::{Instruction, verify};
    let public_key = env.stack.kms().await.get_public_key().key_id(kid).send().await.unwrap();
    let public_key = public_key.public_key().expect("a public key").as_ref().to_vec();
    let signature = answer["signature"].as_str().expect("a signature");
    let instruction: Instruction = serde_json::from_value(shown.clone()).expect("an instruction");
    assert_eq!(verify(&instruction, signature, kid, &public_key), Ok(()));
    for tampered in [
        Instruction { amount: superpay::money::Money::parse("1.60", "USD").unwrap(), ..instruction.clone() },
        Instruction { payee: "merchant:m_other".into(), ..instruction.clone() },
        Instruction { payer: "mallory".into(), ..instruction.clone() },
        Instruction { display_hash: superpay::crypto::sha256_hex(b"Pay 1.60 USD"), ..instruction.clone() },
        Instruction {
            display: superpay::instruction::signed::Display { text: "Pay 1.60 USD to Sea Shop.".into() },
            ..instruction.clone()
        },
    ] {
        assert!(verify(&tampered, signature, kid, &public_key).is_err(), "{tampered:?}");
    }

    // The same request again answers the same instruction (the same nonce: one instruction).
    assert_eq!(instruct(&user, &json!({"listing_id": id, "quantity": 2}), Some(&key)).await, (status, answer));

    let cases = [
        (json!({"listing_id": "no-such-room", "quantity": 1}), StatusCode::NOT_FOUND, "unknown_listing"),
        (json!({"listing_id": id, "quantity": 0}), StatusCode::BAD_REQUEST, "invalid_quantity"),
        (json!({"listing_id": id, "quantity": 1001}), StatusCode::BAD_REQUEST, "invalid_quantity"),
        (json!({"listing_id": "not an id", "quantity": 1}), StatusCode::BAD_REQUEST, "invalid_id"),
        (json!({"listing_id": id, "quantity": 1, "amount": "0.01"}), StatusCode::BAD_REQUEST, "malformed_json"),
    ];
    for (body, status, code) in cases {
        let (got, problem) = instruct(&user, &body, Some(&unique("key"))).await;
        assert_eq!((got, problem["code"].as_str()), (status, Some(code)), "{body}: {problem}");
    }
    let (status, problem) = instruct(&user, &json!({"listing_id": id, "quantity": 1}), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("idempotency_key_missing")));

    // A suspended merchant's listings are not offered.
    let (status, _) =
        env.admin_post(&format!("/merchants/{}/status", shop.id), &json!({"status": "suspended"}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = instruct(&user, &json!({"listing_id": id, "quantity": 1}), Some(&unique("key"))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("merchant_inactive")), "{problem}");
}
