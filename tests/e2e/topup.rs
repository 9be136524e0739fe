//! Top-up pages over plain HTTP (the browser test drives the same pages in Chromium): a payment the
//! reserve could not cover waits; its link's page funds the reserve from the bank and the payment
//! completes, once; declines, bad forms, used and unknown links each get a clear page.

use reqwest::StatusCode;
use rust_decimal::Decimal;
use superpay::ledger::AccountId;
use superpay_e2e::Env;

use crate::offline::{Phone, Till, enrolled_phone_of, present_code, till, until_state};
use crate::purchases::balance;

/// The top-up link posted to `user`'s conversation with the platform.
pub async fn topup_link(user: &str) -> String {
    let env = Env::get();
    for _ in 0..40 {
        let page = env.get_json("/conversations/platform/messages", &env.token(user, &[])).await;
        if let Some(link) = page["messages"][0]["data"]["link"].as_str() {
            return link.to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("no top-up link for {user}");
}

/// A payer whose id starts with `prefix` (the simulated bank answers by it), with `reserve` USD in
/// their offline reserve, whose phone's first code for `amount` the till presented: the payment
/// waits for funds. Returns the phone and the payment's id.
pub async fn waiting_payment(till: &Till, prefix: &str, reserve: &str, amount: &str) -> (Phone, String) {
    let phone = enrolled_phone_of(prefix, reserve).await;
    let (_, accepted) = present_code(till, &phone, amount, 1).await;
    let payment = accepted["id"].as_str().unwrap().to_owned();
    until_state(till, &payment, "waiting_for_funds").await;
    (phone, payment)
}

/// A cookie-keeping client, as a browser would be.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).build().unwrap()
}

pub fn csrf_of(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[start..start + 64].to_owned()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_top_up_completes_the_waiting_payment_once() {
    let till = till().await;
    let (phone, payment) = waiting_payment(&till, "payer", "3.00", "10.00").await;
    let link = topup_link(&phone.user).await;

    let client = browser();
    let page = client.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["cache-control"], "no-store");
    let html = page.text().await.unwrap();
    assert!(html.contains("7.00 USD"), "the amount due: {html}");
    assert!(html.contains("Corner Shop"));
    let csrf = csrf_of(&html);

    // Without the CSRF cookie (another site's form): refused, nothing moves.
    let forged =
        reqwest::Client::new().post(&link).form(&[("amount", "7.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let short = client.post(&link).form(&[("amount", "6.99"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    assert!(short.text().await.unwrap().contains("at least 7.00 USD"));
    // A link completes its payment with something to spare, not a deposit: 1% of USD's limit.
    let deposit = client.post(&link).form(&[("amount", "1000.01"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(deposit.status(), StatusCode::BAD_REQUEST);
    assert!(deposit.text().await.unwrap().contains("at most 1000.00 USD"));
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(300, 2));

    let done = client.post(&link).form(&[("amount", "7.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert!(done.text().await.unwrap().contains("Funds added"));
    until_state(&till, &payment, "settled").await;
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(1000, 2));
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::ZERO);
    // The link is spent: sending the form again moves nothing.
    let again = client.post(&link).form(&[("amount", "7.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(1000, 2));
    let unknown = client.get(format!("{}/topup/{}", Env::get().stack.api_url, "0".repeat(64))).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_bank_decline_shows_a_clear_page_and_moves_nothing() {
    let till = till().await;
    // The simulated bank declines accounts whose id starts with "broke".
    let (phone, _) = waiting_payment(&till, "broke", "1.00", "5.00").await;
    let link = topup_link(&phone.user).await;
    let client = browser();
    let csrf = csrf_of(&client.get(&link).send().await.unwrap().text().await.unwrap());
    let declined = client.post(&link).form(&[("amount", "4.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(declined.text().await.unwrap().contains("declined"));
    // The link is open again; the next try is another debit (the bank answers a reference once).
    let again = client.post(&link).form(&[("amount", "4.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::PAYMENT_REQUIRED);
    let debits = bank_movements(&phone.user).await;
    assert_eq!(debits.len(), 2, "{debits:?}");
    assert!(debits.iter().all(|d| d["status"] == "declined" && d["amount"]["amount"] == "4.00"), "{debits:?}");
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(100, 2));
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::ZERO);
}

/// The debits and payouts the simulated bank made or refused for `account`.
pub async fn bank_movements(account: &str) -> Vec<serde_json::Value> {
    let env = Env::get();
    let url = format!("{}/_sim/bank/{account}", env.stack.merchant_simulator_url);
    env.http().get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_debit_whose_answer_was_lost_is_credited_once_even_after_its_link_expired() {
    let till = till().await;
    // The simulated bank takes "lagging..." payers' money at once but answers too late for 12 s.
    let (phone, payment) = waiting_payment(&till, "lagging", "3.00", "10.00").await;
    let link = topup_link(&phone.user).await;
    // Late in the link's life (local TopUpTtlSeconds is 15), so it expires before the bank answers.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let client = browser();
    let csrf = csrf_of(&client.get(&link).send().await.unwrap().text().await.unwrap());
    let sent = client.post(&link).form(&[("amount", "7.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(sent.status(), StatusCode::ACCEPTED, "no answer is not 'nothing happened'");
    assert!(sent.text().await.unwrap().contains("Waiting for your bank"));
    // The page says where it stands, and sending again asks the same debit.
    assert_eq!(client.get(&link).send().await.unwrap().status(), StatusCode::ACCEPTED);

    // The settlement function asks the bank again through the outbox: the payment completes,
    // although its link expired meanwhile, and the bank and the ledger each moved 7.00 once.
    for _ in 0..240 {
        if balance(AccountId::merchant(&till.merchant)).await == Decimal::new(1000, 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    until_state(&till, &payment, "settled").await;
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(1000, 2));
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::ZERO);
    assert_eq!(balance(AccountId::funding(&phone.user)).await, Decimal::new(-1000, 2), "3.00 seeded + 7.00 topped up");
    let debits = bank_movements(&phone.user).await;
    assert_eq!(debits.len(), 1, "one debit, however often it was asked about: {debits:?}");
    assert_eq!(client.get(&link).send().await.unwrap().status(), StatusCode::GONE, "the link is spent");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payment_whose_link_is_gone_still_expires_and_is_never_taken_for_paid() {
    let env = Env::get();
    let till = till().await;
    let (phone, payment) = waiting_payment(&till, "payer", "1.00", "6.00").await;
    // The link's item disappears (deleted by hand, restored from an old backup...).
    let items = env.partition("OfflinePaymentsTable", "id", &payment).await;
    let key = items[0]["topup_token"].as_s().unwrap().clone();
    env.dynamodb()
        .await
        .delete_item()
        .table_name(env.table("TopUpsTable"))
        .key("token", aws_sdk_dynamodb::types::AttributeValue::S(key))
        .send()
        .await
        .unwrap();
    until_state(&till, &payment, "expired").await;
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(100, 2), "nothing moved");
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::ZERO);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_bank_answer_we_cannot_verify_approves_nothing() {
    let till = till().await;
    // The simulated bank approves these accounts' debits, but signs with the wrong key, does not
    // sign, or redirects: no verified answer, so the debit stays owed (and the settlement function
    // keeps asking, until the dead-letter queue's alarm calls an operator); nothing is credited.
    for account in ["badsig", "unsigned", "moved"] {
        let (phone, _) = waiting_payment(&till, account, "1.00", "5.00").await;
        let link = topup_link(&phone.user).await;
        let client = browser();
        let csrf = csrf_of(&client.get(&link).send().await.unwrap().text().await.unwrap());
        let unknown = client.post(&link).form(&[("amount", "4.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
        assert_eq!(unknown.status(), StatusCode::ACCEPTED, "{account}");
        assert!(unknown.text().await.unwrap().contains("Waiting for your bank"), "{account}");
        assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::new(100, 2), "{account}");
    }
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::ZERO);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_links_expiry_does_not_expire_its_payment_once_a_newer_link_replaced_it() {
    use aws_sdk_dynamodb::types::AttributeValue::S;
    let env = Env::get();
    let till = till().await;
    let (_, payment) = waiting_payment(&till, "payer", "1.00", "6.00").await;
    // As when the first link was paid and still fell short: the payment now waits on a newer link,
    // whose own expiry comes later.
    let newer = superpay::offline::topup::key_of(&superpay::offline::topup::new_token());
    env.dynamodb()
        .await
        .update_item()
        .table_name(env.table("OfflinePaymentsTable"))
        .key("id", S(payment.clone()))
        .update_expression("SET topup_token = :newer")
        .expression_attribute_values(":newer", S(newer))
        .send()
        .await
        .unwrap();
    // The first link's end (local TopUpTtlSeconds is 15) passes: its job leaves the payment waiting.
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let items = env.partition("OfflinePaymentsTable", "id", &payment).await;
    assert_eq!(items[0]["state"].as_s().unwrap(), "waiting_for_funds");
}
