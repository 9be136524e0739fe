//! Capability 8's operations through the local stack: a user's client sends the platform's signed
//! instruction and the user's confirmation to the transfer side, which moves the money once, from
//! the payer to the provider, only on its own copy of the listing; and what a buggy or compromised
//! platform (simulated by signing with the platform's KMS key directly, or by altering its table),
//! another user or a replay sends is refused, moves nothing and is recorded as a security event.

use aws_sdk_dynamodb::types::AttributeValue;
use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::clock::now_epoch_seconds;
use superpay::instruction::signed::{Display, Instruction, InstructionSigner};
use superpay::ledger::AccountId;
use superpay::money::Money;
use superpay_e2e::{Env, unique};

use crate::instructions::{copy, instruct, publish, room, transfer_signer};
use crate::notifications::{eventually, messages, webhooks};
use crate::purchases::{TestMerchant, balance, funded_user, merchant_named};

/// A shop with listing `<shop>.<room>` published to both sides at version 1 for `price`.
pub async fn listed_shop(price: &str) -> (TestMerchant, String) {
    let shop = merchant_named("Sea Shop").await;
    let signer = transfer_signer(&shop).await;
    let id = format!("{}.{}", shop.id, unique("room"));
    assert_eq!(publish("platform", &shop, &id, &room(1, price)).await.0, StatusCode::CREATED);
    assert_eq!(publish("transfer", &signer, &id, &room(1, price)).await.0, StatusCode::CREATED);
    (shop, id)
}

/// What `user` got from the platform for `quantity` of listing `id`: the instruction and its signature.
pub async fn instruction_for(user: &str, id: &str, quantity: u32) -> (Instruction, String) {
    let (status, answer) = instruct(user, &json!({"listing_id": id, "quantity": quantity}), Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let instruction = serde_json::from_value(answer["instruction"].clone()).expect("an instruction");
    (instruction, answer["signature"].as_str().expect("a signature").to_owned())
}

/// The body a client sends: the instruction, its signature, and the user's confirmation of its text.
pub fn presented(instruction: &Instruction, signature: &str) -> Value {
    json!({"instruction": instruction, "signature": signature,
           "confirmation": {"display_hash": instruction.display_hash}})
}

pub async fn operate(user: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), "/transfer/operations", Some(body), Some(key)).await
}

/// The platform's key id.
fn kid() -> String {
    Env::get().stack.keys.get("InstructionSigningKey").expect("the signing key").clone()
}

/// `instruction` signed with the platform's own KMS key, as a compromised platform would sign it.
pub async fn signed_by_platform(instruction: &Instruction) -> String {
    InstructionSigner::new(Env::get().stack.kms().await, kid()).sign(instruction).await.expect("KMS signs")
}

/// An instruction for `payer` of `amount` USD to `payee` for one of listing `id` (a Sea Shop
/// room) at version 1, shown as the transfer side would show it, for a platform to sign, issued now.
fn forged(id: &str, payer: &str, amount: &str, payee: &str) -> Instruction {
    let now = now_epoch_seconds();
    let amount = Money::parse(amount, "USD").unwrap();
    let merchant = payee.strip_prefix("merchant:").unwrap_or(payee);
    let display = Display::of(amount, "Sea Shop", merchant, 1, "Sea view room, one night");
    Instruction {
        id: instruction_id(),
        listing_id: id.into(),
        listing_version: 1,
        quantity: 1,
        amount,
        payee: payee.into(),
        payer: payer.into(),
        nonce: unique("nonce"),
        issued_at: now,
        expires_at: now + 300,
        display_hash: display.hash(),
        display,
        kid: kid(),
    }
}

/// An instruction id as the platform makes them (`ti_...`), fresh.
fn instruction_id() -> String {
    unique("ti").replacen("ti-", "ti_", 1)
}

/// `user`'s security events, newest last by time.
pub async fn security_events(user: &str) -> Vec<Value> {
    let items = Env::get().partition("SecurityEventsTable", "user", user).await;
    let mut events: Vec<Value> = items
        .iter()
        .map(|item| {
            let detail = item.get("detail").and_then(|d| d.as_s().ok()).expect("a detail");
            let mut event: Value = serde_json::from_str(detail).expect("JSON");
            event["kind"] = item.get("kind").and_then(|k| k.as_s().ok()).cloned().into();
            event["at"] = item.get("at").and_then(|a| a.as_n().ok()).and_then(|a| a.parse::<i64>().ok()).into();
            event
        })
        .collect();
    events.sort_by_key(|e| e["at"].as_i64());
    events
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_confirmed_instruction_moves_the_money_once_from_its_payer_to_the_provider() {
    let env = Env::get();
    let (shop, id) = listed_shop("80.00").await;
    let user = funded_user("500.00").await;
    let (instruction, signature) = instruction_for(&user, &id, 2).await;
    let key = unique("key");

    let (status, done) = operate(&user, &presented(&instruction, &signature), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!((done["id"].as_str(), done["state"].as_str()), (Some(instruction.id.as_str()), Some("completed")));
    assert_eq!(done["amount"], json!({"amount": "160.00", "currency": "USD"}));
    assert_eq!(done["payee"], format!("merchant:{}", shop.id));
    assert_eq!((done["listing_id"].as_str(), done["quantity"].as_u64()), (Some(id.as_str()), Some(2)));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(34_000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(16_000, 2));
    // Its nonce is spent, in the transaction that moved the money.
    let nonce = format!("instruction:{}#{}", kid(), instruction.nonce);
    assert_eq!(env.partition("NonceTable", "id", &nonce).await.len(), 1);

    // The same request again: the same answer. The same instruction under another key (a client
    // that lost its key): told it paid, 200, and nothing moves again.
    assert_eq!(operate(&user, &presented(&instruction, &signature), &key).await, (status, done.clone()));
    assert_eq!(
        operate(&user, &presented(&instruction, &signature), &unique("key")).await,
        (StatusCode::OK, done.clone())
    );
    // Another instruction carrying the spent nonce (only a faulty platform signs one): refused,
    // and a security event.
    let reused = Instruction { id: instruction_id(), ..instruction.clone() };
    let (status, problem) =
        operate(&user, &presented(&reused, &signed_by_platform(&reused).await), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("instruction_already_used")));
    assert_eq!(security_events(&user).await.iter().map(|e| e["reason"].clone()).collect::<Vec<_>>(), ["reused"]);
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(34_000, 2), "moved once");

    // The payer reads it; nobody else does.
    let path = format!("/transfer/operations/{}", instruction.id);
    assert_eq!(env.get_json(&path, &env.token(&user, &[])).await, done);
    assert_eq!(env.get_json(&path, &env.token("someone-else", &[])).await["code"], "unknown_operation");

    // The provider gets a signed webhook, the payer a message in their conversation with it.
    let hooks = eventually(10, "the webhook", || async {
        let seen = webhooks(&instruction.id).await;
        seen["accepted"].as_array().filter(|a| !a.is_empty()).map(|_| seen.clone())
    })
    .await;
    assert_eq!(hooks["accepted"][0]["kind"], "transfer.completed");
    assert_eq!(hooks["accepted"][0]["operation"], done);
    let message = eventually(10, "the message", || async {
        let listed = messages(&user, &shop.id).await;
        listed["messages"].as_array().and_then(|m| m.first().cloned())
    })
    .await;
    assert_eq!(message["kind"], "transfer.completed");
    assert_eq!(message["text"], "Paid 160.00 USD to Sea Shop for 2 x Sea view room, one night.");
    assert_eq!(crate::reconcile::violations(&[&user]).await, vec![]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_same_instruction_sent_at_once_under_several_keys_moves_money_once() {
    let (shop, id) = listed_shop("10.00").await;
    let user = funded_user("100.00").await;
    let (instruction, signature) = instruction_for(&user, &id, 1).await;
    let body = presented(&instruction, &signature);
    let keys: Vec<String> = (0..4).map(|_| unique("key")).collect();
    let answers = futures_util::future::join_all(keys.iter().map(|key| operate(&user, &body, key))).await;
    let created = answers.iter().filter(|(status, _)| *status == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{answers:?}");
    // The others are told it was carried out, by another request.
    for (status, done) in answers.iter().filter(|(status, _)| *status != StatusCode::CREATED) {
        assert_eq!((*status, done["id"].as_str()), (StatusCode::OK, Some(instruction.id.as_str())), "{done}");
    }
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(9_000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(1_000, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn what_a_compromised_platform_or_another_user_sends_is_refused_moves_nothing_and_is_recorded() {
    let env = Env::get();
    let (shop, id) = listed_shop("80.00").await;
    let user = funded_user("500.00").await;
    let payee = format!("merchant:{}", shop.id);
    let (instruction, signature) = instruction_for(&user, &id, 1).await;

    // Changed after signing: the amount, or what the user is shown.
    let cheaper = Instruction { amount: Money::parse("0.80", "USD").unwrap(), ..instruction.clone() };
    let mut shown = instruction.clone();
    shown.display.text = "Pay 0.80 USD to Sea Shop.".into();
    // Signed by another key, under the platform's kid.
    let kms = env.stack.kms().await;
    let other = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .unwrap();
    let other_key = other.key_metadata().unwrap().key_id().to_owned();
    let by_other_key = InstructionSigner::new(kms, other_key).sign(&instruction).await.unwrap();
    // Signed by the platform's key, and still not what this side would carry out: another payee
    // or amount than its own copy's, another payer, a lifetime longer than allowed, a text the
    // user did not confirm.
    let elsewhere = forged(&id, &user, "80.00", "merchant:m_demo");
    let underpriced = forged(&id, &user, "8.00", &payee);
    let owner = unique("owner");
    let for_another = forged(&id, &owner, "80.00", &payee);
    let long_lived = Instruction { expires_at: now_epoch_seconds() + 3_600, ..forged(&id, &user, "80.00", &payee) };
    let mut unconfirmed = presented(&instruction, &signature);
    unconfirmed["confirmation"]["display_hash"] = superpay::crypto::sha256_hex(b"Pay 0.80 USD").into();

    let cases = [
        (presented(&cheaper, &signature), StatusCode::FORBIDDEN, "instruction_signature_invalid", "signature"),
        (presented(&shown, &signature), StatusCode::FORBIDDEN, "instruction_signature_invalid", "signature"),
        (presented(&instruction, &by_other_key), StatusCode::FORBIDDEN, "instruction_signature_invalid", "signature"),
        (
            presented(&elsewhere, &signed_by_platform(&elsewhere).await),
            StatusCode::FORBIDDEN,
            "instruction_terms_mismatch",
            "terms",
        ),
        (
            presented(&underpriced, &signed_by_platform(&underpriced).await),
            StatusCode::FORBIDDEN,
            "instruction_terms_mismatch",
            "terms",
        ),
        (
            presented(&for_another, &signed_by_platform(&for_another).await),
            StatusCode::FORBIDDEN,
            "instruction_not_for_caller",
            "payer",
        ),
        (
            presented(&long_lived, &signed_by_platform(&long_lived).await),
            StatusCode::UNPROCESSABLE_ENTITY,
            "instruction_lifetime_invalid",
            "lifetime",
        ),
        (unconfirmed, StatusCode::UNPROCESSABLE_ENTITY, "confirmation_mismatch", "confirmation"),
    ];
    for (body, status, code, reason) in &cases {
        let (got, problem) = operate(&user, body, &unique("key")).await;
        assert_eq!((got, problem["code"].as_str()), (*status, Some(*code)), "{reason}: {problem}");
    }
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(50_000, 2), "nothing moved");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);

    // Each one is in the user's security events, naming what differed, and in the audit log.
    let events = security_events(&user).await;
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    let expected: Vec<&str> = cases.iter().map(|(.., reason)| *reason).collect();
    assert_eq!(reasons.len(), expected.len(), "{events:?}");
    for reason in &expected {
        assert!(reasons.contains(reason), "{reason} in {reasons:?}");
    }
    assert!(events.iter().all(|e| e["kind"] == "transfer.refused"));
    let payee_event =
        events.iter().find(|e| e["code"] == "instruction_terms_mismatch" && e["differences"][0]["field"] == "payee");
    let payee_event = payee_event.expect("the swapped payee is named");
    assert_eq!(payee_event["differences"][0]["instructed"], "merchant:m_demo");
    assert_eq!(payee_event["differences"][0]["listed"], payee.as_str());
    // Signed refusals are kept with the listing's history; unsigned ones (whose listing id is
    // whatever their sender wrote) with the caller's.
    let refusals = |resource: String| async move {
        let audited = env.partition("AuditTable", "resource", &resource).await;
        audited.iter().filter(|e| e.get("action") == Some(&AttributeValue::S("operation.refused".into()))).count()
    };
    assert_eq!(refusals(format!("listing/transfer/{id}")).await, expected.len() - 3);
    assert_eq!(refusals(format!("transfer-caller/{user}")).await, 3);
    // The payer an instruction was made for learns that someone else presented it.
    assert_eq!(security_events(&owner).await.len(), 1);

    // A platform that signed other terms than this side's at one version froze the listing here:
    // even the real instruction waits for an admin.
    let (status, problem) = operate(&user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::LOCKED, Some("listing_frozen")));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_platform_copy_altered_behind_the_providers_back_cannot_change_what_moves() {
    let env = Env::get();
    let (shop, id) = listed_shop("80.00").await;
    let user = funded_user("500.00").await;
    // Someone with write access to the platform's table lowers the price and redirects the money,
    // keeping the version: the platform prices and signs from its altered copy.
    env.dynamodb()
        .await
        .update_item()
        .table_name(env.table("PlatformListingsTable"))
        .key("id", AttributeValue::S(id.clone()))
        .update_expression("SET price = :price, merchant_id = :m")
        .expression_attribute_values(":price", AttributeValue::N("1.00".into()))
        .expression_attribute_values(":m", AttributeValue::S("m_demo".into()))
        .send()
        .await
        .unwrap();
    let (instruction, signature) = instruction_for(&user, &id, 1).await;
    assert_eq!((instruction.amount.to_string().as_str(), instruction.payee.as_str()), ("1.00 USD", "merchant:m_demo"));
    let (status, problem) = operate(&user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("instruction_terms_mismatch")));
    assert_eq!(problem["fields"], json!(["amount", "payee", "display"]));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(50_000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);
    assert_eq!(security_events(&user).await[0]["reason"], "terms");

    // The two copies disagree at one version: the transfer side froze its own, and refuses even
    // an instruction on its own terms until an admin unfreezes it.
    let (_, listing) = copy("transfer", &id).await;
    assert_eq!(listing["frozen"], true);
    let payee = format!("merchant:{}", shop.id);
    let honest = forged(&id, &user, "80.00", &payee);
    let (status, problem) =
        operate(&user, &presented(&honest, &signed_by_platform(&honest).await), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::LOCKED, Some("listing_frozen")));
    let unfreeze = format!("/transfer/listings/{id}/unfreeze");
    let (status, unfrozen) = env.post_json(&env.admin_token(), &unfreeze, None, None).await;
    assert_eq!((status, unfrozen["frozen"].as_bool()), (StatusCode::OK, Some(false)), "{unfrozen}");
    let (status, problem) = env.post_json(&env.admin_token(), &unfreeze, None, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("listing_not_frozen")));
    let (status, problem) = env.post_json(&env.token(&user, &[]), &unfreeze, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    // The buggy platform cannot freeze it again at this version: still refused, not frozen.
    let (instruction, signature) = instruction_for(&user, &id, 1).await;
    let (status, _) = operate(&user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(copy("transfer", &id).await.1["frozen"], false);
    let (status, done) = operate(&user, &presented(&honest, &signed_by_platform(&honest).await), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    let audited = env.partition("AuditTable", "resource", &format!("listing/transfer/{id}")).await;
    let actions: Vec<&str> = audited.iter().filter_map(|e| e.get("action")?.as_s().ok().map(String::as_str)).collect();
    assert!(actions.contains(&"listing.unfreeze"), "{actions:?}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn above_the_threshold_the_payers_own_device_must_co_sign() {
    let env = Env::get();
    // The seed's group: 200.00 USD.
    let (shop, id) = listed_shop("250.00").await;
    let phone = crate::offline::enrolled_phone_of("cosigner", "10.00").await;
    let user = phone.user.clone();
    env.fund(&user, AccountId::wallet(&user), "600.00").await;
    let (instruction, signature) = instruction_for(&user, &id, 1).await;

    let (status, problem) = operate(&user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("device_signature_required")));
    assert_eq!(problem["threshold"], "200.00");
    // A device enrolled a moment ago (as a stolen token could enroll one) may not co-sign yet (2 s
    // locally, a day deployed); its enrollment is among its owner's security events.
    let mut cosigned = presented(&instruction, &signature);
    cosigned["confirmation"]["device"] = phone.cosign(&instruction);
    let (status, problem) = operate(&user, &cosigned, &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("device_too_new")), "{problem}");
    let enrolled = security_events(&user).await;
    assert_eq!(enrolled.iter().map(|e| e["kind"].clone()).collect::<Vec<_>>(), ["device.enrolled"]);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    // Another payer's device; the payer's device over the instruction's canonical form without the
    // domain line (bytes it might sign for something else): refused, and security events.
    let other = crate::offline::enrolled_phone_of("other", "10.00").await;
    let mut by_other = presented(&instruction, &signature);
    by_other["confirmation"]["device"] = other.cosign(&instruction);
    let mut undomained = presented(&instruction, &signature);
    undomained["confirmation"]["device"] = phone.signature_of(&instruction.canonical().expect("canonical"));
    for body in [by_other, undomained] {
        let (status, problem) = operate(&user, &body, &unique("key")).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("device_signature_invalid")));
    }
    let refused = security_events(&user).await.into_iter().filter(|e| e["kind"] == "transfer.refused").count();
    assert_eq!(refused, 2);
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(60_000, 2), "nothing moved");

    let mut cosigned = presented(&instruction, &signature);
    cosigned["confirmation"]["device"] = phone.cosign(&instruction);
    let (status, done) = operate(&user, &cosigned, &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(25_000, 2));

    // An admin lowers this payer's threshold: now 80.00 needs the device too; a revoked one
    // confirms nothing.
    let path = format!("/transfer/thresholds/{user}");
    let response = env
        .http()
        .put(env.url(&path))
        .bearer_auth(env.admin_token())
        .json(&json!({"device_signature_above": {"USD": "10.00"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let by_user = env
        .http()
        .put(env.url(&path))
        .bearer_auth(env.token(&user, &[]))
        .json(&json!({"device_signature_above": {"USD": "9999.00"}}));
    assert_eq!(by_user.send().await.unwrap().status(), StatusCode::FORBIDDEN, "only an admin sets thresholds");
    let (_, cheap) = listed_shop("80.00").await;
    let (instruction, signature) = instruction_for(&user, &cheap, 1).await;
    let (status, problem) = operate(&user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!((status, problem["threshold"].as_str()), (StatusCode::FORBIDDEN, Some("10.00")), "{problem}");
    let revoke = format!("/devices/{}/revoke", phone.device_id());
    let (status, _) = env.post_json(&env.token(&user, &[]), &revoke, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let mut cosigned = presented(&instruction, &signature);
    cosigned["confirmation"]["device"] = phone.cosign(&instruction);
    let (status, problem) = operate(&user, &cosigned, &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::FORBIDDEN, Some("device_signature_invalid")));
    let audited = env.partition("AuditTable", "resource", &format!("transfer-threshold/{user}")).await;
    assert_eq!(audited.len(), 1);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_stale_expired_or_unaffordable_instruction_is_refused_and_can_be_asked_for_again() {
    let (shop, id) = listed_shop("80.00").await;
    let signer = transfer_signer(&shop).await;
    let user = funded_user("100.00").await;

    // The price changed on both sides after the instruction was made: it names the old version.
    let (old, old_signature) = instruction_for(&user, &id, 1).await;
    assert_eq!(publish("platform", &shop, &id, &room(2, "90.00")).await.0, StatusCode::OK);
    assert_eq!(publish("transfer", &signer, &id, &room(2, "90.00")).await.0, StatusCode::OK);
    let (status, problem) = operate(&user, &presented(&old, &old_signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("instruction_listing_version")));
    assert_eq!(problem["current_version"], 2);

    // Expired (signed by the platform as it was five minutes ago).
    let expired = Instruction {
        issued_at: now_epoch_seconds() - 400,
        expires_at: now_epoch_seconds() - 100,
        listing_version: 2,
        ..forged(&id, &user, "90.00", &format!("merchant:{}", shop.id))
    };
    let (status, problem) =
        operate(&user, &presented(&expired, &signed_by_platform(&expired).await), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("instruction_expired")));
    // Neither is a security event: they happen to honest clients.
    assert_eq!(security_events(&user).await, Vec::<Value>::new());

    // More than the wallet holds: refused, and the instruction stays unspent.
    let (dear, dear_signature) = instruction_for(&user, &id, 2).await;
    let (status, problem) = operate(&user, &presented(&dear, &dear_signature), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")));
    Env::get().fund(&user, AccountId::wallet(&user), "80.00").await;
    let (status, done) = operate(&user, &presented(&dear, &dear_signature), &unique("key")).await;
    assert_eq!((status, done["amount"]["amount"].as_str()), (StatusCode::CREATED, Some("180.00")), "{done}");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::ZERO);
    // Its client lost the answer and its key, and sends it again after the price changed: it is
    // told it paid (200, the operation), not that the instruction is stale.
    assert_eq!(publish("transfer", &signer, &id, &room(3, "95.00")).await.0, StatusCode::OK);
    let (status, again) = operate(&user, &presented(&dear, &dear_signature), &unique("key")).await;
    assert_eq!((status, again), (StatusCode::OK, done));
}
