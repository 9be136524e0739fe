//! Refunds: a merchant (signed) pays back part or all of a paid order, never more than was paid;
//! and the wallet routes show the owner the result.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::{AccountId, AccountKind};
use superpay_e2e::{Env, unique};

use superpay::ledger::store::CreditShardsError;
use superpay::reconcile::Violation;

use crate::purchases::{TestMerchant, balance, buy, funded_user, merchant, purchase};

/// A signed call by `shop` to `path` (`sign_path` lets a test sign for another route).
async fn signed(shop: &TestMerchant, path: &str, sign_path: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    let request = env.http().post(env.url(path)).header("idempotency-key", key);
    let response = env.signed(request, &shop.master, &shop.key_id, sign_path, &body.to_string()).send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

async fn refund(shop: &TestMerchant, order: &str, amount: &str, key: &str) -> (StatusCode, Value) {
    let path = format!("/merchant/orders/{order}/refunds");
    signed(shop, &path, &path, &json!({"amount": {"amount": amount, "currency": "USD"}, "reason": "damaged"}), key)
        .await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn refunds_reverse_a_paid_order_never_beyond_what_was_paid() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("50.00").await;
    let (_, order) = buy(&user, &purchase(&shop, "green-tea", "20.00"), &unique("key")).await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(3000, 2));

    let key = unique("refund");
    let (status, first) = refund(&shop, &id, "5.00", &key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["order"]["refundable"], "15.00");
    // The same refund retried (new signature, same key): answered again, paid once.
    let (status, again) = refund(&shop, &id, "5.00", &key).await;
    assert_eq!((status, again["refund_id"].clone()), (StatusCode::CREATED, first["refund_id"].clone()));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(3500, 2));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(1500, 2));

    let (status, over) = refund(&shop, &id, "15.01", &unique("refund")).await;
    assert_eq!(
        (status, over["code"].as_str(), over["refundable"].as_str()),
        (StatusCode::CONFLICT, Some("refund_exceeds_paid"), Some("15.00"))
    );
    let (status, rest) = refund(&shop, &id, "15.00", &unique("refund")).await;
    assert_eq!((status, rest["order"]["refundable"].as_str()), (StatusCode::CREATED, Some("0.00")));
    let (_, after) = refund(&shop, &id, "0.01", &unique("refund")).await;
    assert_eq!(after["code"], "refund_exceeds_paid");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(5000, 2), "all of it came back");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::ZERO);

    // The owner sees it in the wallet routes.
    let wallet: Value = env.get_json("/wallet", &env.token(&user, &[])).await;
    assert_eq!((wallet["balance"].as_str(), wallet["currency"].as_str()), (Some("50.00"), Some("USD")));
    let history: Value = env.get_json("/wallet/postings", &env.token(&user, &[])).await;
    let kinds: Vec<&str> =
        history["postings"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["purchase.refund", "purchase.refund", "purchase.hold", "test.fund"], "newest first");
    assert_eq!(history["postings"][0]["balance_after"], "50.00");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_refund_key_reused_after_its_record_expired_never_answers_for_another_amount() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("50.00").await;
    let (_, order) = buy(&user, &purchase(&shop, "green-tea", "20.00"), &unique("key")).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let (key, caller, route) =
        (unique("refund"), format!("merchant:{}", shop.id), "POST /merchant/orders/{id}/refunds");
    let (status, first) = refund(&shop, &id, "5.00", &key).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");

    // Its record expired: the same refund again is that refund, paid once.
    env.forget_idempotency_key(&caller, route, &key).await;
    let (status, again) = refund(&shop, &id, "5.00", &key).await;
    assert_eq!((status, &again["refund_id"]), (StatusCode::CREATED, &first["refund_id"]), "{again}");
    // Another amount under the reused key: refused, not answered as if it had been paid.
    env.forget_idempotency_key(&caller, route, &key).await;
    let (status, reused) = refund(&shop, &id, "7.00", &key).await;
    assert_eq!((status, reused["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(3500, 2), "one refund of 5.00 moved");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(1500, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn refunds_of_unpaid_foreign_or_missigned_orders_are_refused() {
    let shop = merchant().await;
    let other = merchant().await;
    let user = funded_user("20.00").await;
    let (_, declined) = buy(&user, &purchase(&shop, "decline-tea", "5.00"), &unique("key")).await;
    let (_, paid) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &unique("key")).await;
    let (declined, paid) = (declined["id"].as_str().unwrap().to_owned(), paid["id"].as_str().unwrap().to_owned());

    assert_eq!(refund(&shop, &declined, "1.00", &unique("r")).await.1["code"], "order_not_paid");
    assert_eq!(refund(&other, &paid, "1.00", &unique("r")).await.1["code"], "unknown_order");
    // A signature made for another route does not authorise this one.
    let decision_path = format!("/merchant/orders/{paid}/decision");
    let refund_path = format!("/merchant/orders/{paid}/refunds");
    let body = json!({"amount": {"amount": "1.00", "currency": "USD"}});
    let (status, problem) = signed(&shop, &refund_path, &decision_path, &body, &unique("r")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("signature_invalid")));
    let (_, problem) = signed(
        &shop,
        &refund_path,
        &refund_path,
        &json!({"amount": {"amount": "1.00", "currency": "EUR"}}),
        &unique("r"),
    )
    .await;
    assert_eq!(problem["code"], "currency_mismatch");
    let (_, problem) = signed(
        &shop,
        &refund_path,
        &refund_path,
        &json!({"amount": {"amount": "1.001", "currency": "USD"}}),
        &unique("r"),
    )
    .await;
    assert_eq!(problem["code"], "amount_too_many_decimals");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(500, 2), "no refusal moved money");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1500, 2));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_suspended_merchant_refunds_nothing() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("20.00").await;
    let (_, paid) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &unique("key")).await;
    let id = paid["id"].as_str().unwrap().to_owned();
    let before_key = unique("refund");
    let (status, before) = refund(&shop, &id, "1.00", &before_key).await;
    assert_eq!(status, StatusCode::CREATED, "{before}");

    let status_path = format!("/merchants/{}/status", shop.id);
    env.admin_post(&status_path, &json!({"status": "suspended"}), None).await;
    let (status, refused) = refund(&shop, &id, "2.00", &unique("refund")).await;
    assert_eq!((status, refused["code"].as_str()), (StatusCode::FORBIDDEN, Some("merchant_inactive")), "{refused}");
    // A retry of the refund made before the suspension is answered as the first time, and pays once.
    let (status, again) = refund(&shop, &id, "1.00", &before_key).await;
    assert_eq!((status, again["refund_id"].clone()), (StatusCode::CREATED, before["refund_id"].clone()));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1600, 2), "no money moved for the refusal");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(400, 2));
    let order = env.get_json(&format!("/purchases/{id}"), &env.token(&user, &[])).await;
    assert_eq!(order["refundable"], "4.00");

    // Active again, it may refund.
    env.admin_post(&status_path, &json!({"status": "active"}), None).await;
    assert_eq!(refund(&shop, &id, "2.00", &unique("refund")).await.0, StatusCode::CREATED);
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1800, 2));
}

/// A popular merchant: its captures land on its credit sub-accounts, a refund its account cannot
/// cover sweeps them first, and the notifier's schedule sweeps the rest. Its balance is the sum
/// throughout, and its books hold.
#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_popular_merchants_credits_spread_over_sub_accounts_and_sweep_into_its_account() {
    let env = Env::get();
    let ledger = env.ledger().await;
    let shop = merchant().await;
    assert_eq!(ledger.set_credit_shards(&shop.id, 4).await.unwrap(), 4);
    let fewer = ledger.set_credit_shards(&shop.id, 3).await;
    assert!(matches!(fewer, Err(CreditShardsError::OnlyGrows { has: 4, .. })), "{fewer:?}");
    assert!(matches!(ledger.set_credit_shards(&shop.id, 65).await, Err(CreditShardsError::OutOfRange(65))));

    let user = funded_user("100.00").await;
    let mut orders = Vec::new();
    for _ in 0..6 {
        let (status, order) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &unique("key")).await;
        assert_eq!((status, order["state"].as_str()), (StatusCode::CREATED, Some("paid")), "{order}");
        orders.push(order["id"].as_str().unwrap().to_owned());
    }
    // (The stack's own schedule may sweep at any moment: what is asserted holds either way.)
    assert_eq!(ledger.merchant_balance(&shop.id).await.unwrap().total(), Decimal::new(3000, 2));

    // Refunds debit the account; one it cannot cover sweeps the sub-accounts into it first.
    let (status, refunded) = refund(&shop, &orders[0], "5.00", &unique("refund")).await;
    assert_eq!(status, StatusCode::CREATED, "{refunded}");
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(2500, 2));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(7500, 2));

    // Two more captures, then the notifier's schedule sweeps them, through its own IAM policy
    // (each notifier process every CreditSweepSeconds: 5 on the test stack).
    for _ in 0..2 {
        let (status, order) = buy(&user, &purchase(&shop, "green-tea", "5.00"), &unique("key")).await;
        assert_eq!(status, StatusCode::CREATED, "{order}");
    }
    let mut after = ledger.merchant_balance(&shop.id).await.unwrap();
    for _ in 0..60 {
        if after.credits.is_zero() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        after = ledger.merchant_balance(&shop.id).await.unwrap();
    }
    assert_eq!((after.main, after.credits), (Decimal::new(3500, 2), Decimal::ZERO));
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(3500, 2));

    // Its accounts' books: every posting rebuilds its account, every sub-account gave money only
    // to a sweep into its account (the other legs' accounts are not read here, so no sums).
    let books = ledger.books(|account| account.merchant_id() == Some(shop.id.as_str())).await.unwrap();
    let allowed: Vec<AccountId> =
        (0..4).map(|k| AccountId::credit(&shop.id, k)).chain([AccountId::merchant(&shop.id)]).collect();
    assert!(books.accounts.iter().all(|a| allowed.contains(&a.id)), "only its account and four sub-accounts");
    assert!(books.accounts.iter().any(|a| a.id == AccountId::merchant(&shop.id)));
    let violations: Vec<Violation> = superpay::reconcile::check(&books)
        .into_iter()
        .filter(|v| !matches!(v, Violation::NotConserved { .. } | Violation::PostingsDiffer { .. }))
        .collect();
    assert_eq!(violations, []);
    let credited: std::collections::BTreeSet<&AccountId> = books
        .transfers
        .iter()
        .filter(|t| t.kind == "purchase.capture")
        .flat_map(|t| t.legs.iter().filter(|(_, amount)| *amount > Decimal::ZERO).map(|(account, _)| account))
        .collect();
    assert!(credited.len() > 1, "eight captures, spread over sub-accounts: {credited:?}");
    assert!(credited.iter().all(|account| account.kind() == AccountKind::Credit), "{credited:?}");
    let sweeps = books.transfers.iter().filter(|t| t.kind == superpay::ledger::SWEEP_KIND).count();
    assert!(sweeps >= 2, "before the refund and after the last captures: {sweeps}");
}
