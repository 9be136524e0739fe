//! Capability 8's two-phase operations and refunds through the local stack: a two-phase listing's
//! operation holds the amount; its provider (signed by its transfer signer) posts at most the held
//! amount (the rest goes back) or voids it, or the hold times out and goes back; a hold settles
//! exactly once. A provider refunds what reached it, never more.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::instructions::{publish, transfer_signer};
use crate::notifications::{eventually, webhooks};
use crate::operations::{instruction_for, operate, presented};
use crate::purchases::{TestMerchant, balance, funded_user, merchant_named};

/// A shop, its transfer signer, and its two-phase listing at `price` on both sides.
async fn two_phase_shop(price: &str) -> (TestMerchant, TestMerchant, String) {
    let shop = merchant_named("Sea Shop").await;
    let signer = transfer_signer(&shop).await;
    let id = format!("{}.{}", shop.id, unique("room"));
    let body = json!({"listing_version": 1, "title": "Sea view room, one night",
                      "price": {"amount": price, "currency": "USD"}, "two_phase": true});
    assert_eq!(publish("platform", &shop, &id, &body).await.0, StatusCode::CREATED);
    assert_eq!(publish("transfer", &signer, &id, &body).await.0, StatusCode::CREATED);
    (shop, signer, id)
}

/// A held operation of `user`'s for one of listing `id`.
async fn held(user: &str, id: &str) -> Value {
    let (instruction, signature) = instruction_for(user, id, 1).await;
    let (status, held) = operate(user, &presented(&instruction, &signature), &unique("key")).await;
    assert_eq!((status, held["state"].as_str()), (StatusCode::CREATED, Some("held")), "{held}");
    held
}

/// `signer`'s signed `POST /transfer/operations/{operation}/{action}` with `body` (and `key`).
async fn provider(
    signer: &TestMerchant,
    operation: &Value,
    action: &str,
    body: Value,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let env = Env::get();
    let path = format!("/transfer/operations/{}/{action}", operation["id"].as_str().expect("an operation id"));
    let request = env.signed(env.http().post(env.url(&path)), &signer.master, &signer.key_id, &path, &body.to_string());
    let request = match key {
        Some(key) => request.header("idempotency-key", key),
        None => request,
    };
    let response = request.header("content-type", "application/json").send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

fn usd(amount: &str) -> Value {
    json!({"amount": {"amount": amount, "currency": "USD"}})
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_hold_is_posted_at_most_once_and_never_above_what_it_holds() {
    let (shop, signer, id) = two_phase_shop("80.00").await;
    let user = funded_user("500.00").await;
    let hold = held(&user, &id).await;
    let hold_account = AccountId::hold(hold["id"].as_str().unwrap());
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(42_000, 2));
    assert_eq!(balance(hold_account.clone()).await, Decimal::new(8_000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);

    let (status, problem) = provider(&signer, &hold, "post", usd("80.01"), None).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["held"].as_str()),
        (StatusCode::CONFLICT, Some("post_exceeds_hold"), Some("80.00"))
    );
    // Another provider's signer: no such operation, for it.
    let (_, stranger, _) = two_phase_shop("1.00").await;
    let (status, problem) = provider(&stranger, &hold, "post", usd("1.00"), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_operation")));

    let (status, posted) = provider(&signer, &hold, "post", usd("60.00"), None).await;
    assert_eq!(
        (status, posted["state"].as_str(), posted["paid"].as_str()),
        (StatusCode::OK, Some("posted"), Some("60.00")),
        "{posted}"
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(44_000, 2), "the rest came back");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(6_000, 2));
    assert_eq!(balance(hold_account).await, Decimal::ZERO);
    // The provider's retry of its post is answered as the first; a void after it, or another
    // post, is refused.
    assert_eq!(provider(&signer, &hold, "post", usd("60.00"), None).await, (StatusCode::OK, posted.clone()));
    for (action, body) in [("void", json!({})), ("post", usd("10.00").clone())] {
        let (status, problem) = provider(&signer, &hold, action, body, None).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("operation_not_held")), "{action}");
    }
    let hooks = eventually(10, "the webhooks", || async {
        let seen = webhooks(hold["id"].as_str().unwrap()).await;
        seen["accepted"].as_array().filter(|a| a.len() == 2).map(|_| seen.clone())
    })
    .await;
    let kinds: Vec<&str> = hooks["accepted"].as_array().unwrap().iter().filter_map(|h| h["kind"].as_str()).collect();
    assert!(kinds.contains(&"transfer.held") && kinds.contains(&"transfer.posted"), "{kinds:?}");

    // Refunds: never beyond what reached the provider (60.00), the same key the same refund.
    let (status, problem) = provider(&signer, &hold, "refunds", usd("60.01"), Some(&unique("key"))).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["refundable"].as_str()),
        (StatusCode::CONFLICT, Some("refund_exceeds_paid"), Some("60.00"))
    );
    let key = unique("key");
    let (status, refunded) = provider(&signer, &hold, "refunds", usd("20.00"), Some(&key)).await;
    assert_eq!(
        (status, refunded["operation"]["refunded"].as_str()),
        (StatusCode::CREATED, Some("20.00")),
        "{refunded}"
    );
    assert_eq!(provider(&signer, &hold, "refunds", usd("20.00"), Some(&key)).await, (status, refunded));
    let (status, _) = provider(&signer, &hold, "refunds", usd("40.00"), Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, problem) = provider(&signer, &hold, "refunds", usd("0.01"), Some(&unique("key"))).await;
    assert_eq!((status, problem["refundable"].as_str()), (StatusCode::CONFLICT, Some("0.00")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(50_000, 2), "all back");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);
    assert_eq!(crate::reconcile::violations(&[&user]).await, vec![]);
}

/// `user`'s home as their client reads it.
#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_voided_or_forgotten_hold_goes_back_once() {
    let env = Env::get();
    let (shop, signer, id) = two_phase_shop("30.00").await;
    let user = funded_user("100.00").await;

    let hold = held(&user, &id).await;
    // Held money is its payer's first element on the home until it is settled.
    let element = format!("transfer:{}", hold["id"].as_str().unwrap());
    let (shown, _) = crate::home::shown(&user).await;
    assert_eq!((shown[0]["id"].as_str(), shown[0]["kind"].as_str()), (Some(element.as_str()), Some("transfer.held")));
    assert_eq!(shown[0]["critical"], true);
    let (status, voided) = provider(&signer, &hold, "void", json!({}), None).await;
    assert_eq!((status, voided["state"].as_str()), (StatusCode::OK, Some("voided")), "{voided}");
    let (shown, _) = crate::home::shown(&user).await;
    assert_eq!((shown[0]["id"].as_str(), shown[0]["kind"].as_str()), (Some(element.as_str()), Some("transfer.voided")));
    let (status, problem) = provider(&signer, &hold, "post", usd("30.00"), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("operation_not_held")));
    let (status, problem) = provider(&signer, &hold, "refunds", usd("1.00"), Some(&unique("key"))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("operation_not_paid")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(10_000, 2));

    // Nobody settles this one: at its expiry (8 s locally) it goes back, and stays settled.
    let forgotten = held(&user, &id).await;
    let path = format!("/transfer/operations/{}", forgotten["id"].as_str().unwrap());
    let released = eventually(30, "the release", || async {
        let current = env.get_json(&path, &env.token(&user, &[])).await;
        (current["state"] == "released").then_some(current)
    })
    .await;
    assert_eq!(released["paid"], "0.00");
    let forgotten_element = format!("transfer:{}", forgotten["id"].as_str().unwrap());
    let (elements, _) = crate::home::shown(&user).await;
    let released = crate::home::element(&elements, &forgotten_element).expect("the released hold");
    assert_eq!(released["kind"], "transfer.released");
    let (status, problem) = provider(&signer, &forgotten, "post", usd("30.00"), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("operation_not_held")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(10_000, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);
    assert_eq!(crate::reconcile::violations(&[&user]).await, vec![]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_post_and_a_void_sent_at_once_settle_the_hold_once() {
    let (shop, signer, id) = two_phase_shop("40.00").await;
    let user = funded_user("200.00").await;
    for _ in 0..3 {
        let hold = held(&user, &id).await;
        let (posted, voided) = tokio::join!(
            provider(&signer, &hold, "post", usd("40.00"), None),
            provider(&signer, &hold, "void", json!({}), None),
        );
        let won: Vec<&str> = [&posted, &voided]
            .iter()
            .filter(|(status, _)| *status == StatusCode::OK)
            .filter_map(|(_, operation)| operation["state"].as_str())
            .collect();
        assert_eq!(won.len(), 1, "{posted:?} {voided:?}");
        let lost = if posted.0 == StatusCode::OK { &voided } else { &posted };
        assert_eq!((lost.0, lost.1["code"].as_str()), (StatusCode::CONFLICT, Some("operation_not_held")));
    }
    let (wallet, merchant) = (balance(AccountId::wallet(&user)).await, balance(AccountId::merchant(&shop.id)).await);
    assert_eq!(wallet + merchant, Decimal::new(20_000, 2), "each hold went one way, whole");
    assert_eq!(crate::reconcile::violations(&[&user]).await, vec![]);
}
