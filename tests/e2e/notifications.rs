//! Completion messages through the outbox, the notifications queue and the notifier: the merchant's
//! signed webhook, the user's conversation, retries with backoff, order expiry, the outbox sweeper
//! and the dead-letter queue.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::purchases::{balance, buy, funded_user, merchant, purchase};

/// Polls `check` every 250 ms until it returns `Some`, for at most `seconds`.
pub async fn eventually<T, F, Fut>(seconds: u64, what: &str, check: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..seconds * 4 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} did not happen within {seconds} s");
}

async fn webhooks(order: &str) -> Value {
    let env = Env::get();
    let url = format!("{}/_sim/webhooks/{order}", env.stack.merchant_simulator_url);
    env.http().get(url).send().await.unwrap().json().await.unwrap()
}

async fn messages(user: &str, merchant: &str) -> Value {
    let env = Env::get();
    let url = env.url(&format!("/conversations/merchant:{merchant}/messages"));
    env.http().get(url).bearer_auth(env.token(user, &[])).send().await.unwrap().json().await.unwrap()
}

async fn outbox_holds(id: &str) -> bool {
    let env = Env::get();
    let item = env
        .dynamodb()
        .await
        .get_item()
        .table_name(env.table("OutboxTable"))
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id.into()))
        .send()
        .await
        .unwrap();
    item.item.is_some()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_paid_order_notifies_the_merchant_and_the_users_conversation_once() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("40.00").await;
    let (_, order) = buy(&user, &purchase(&shop, "green-tea", "12.50"), &unique("key")).await;
    let id = order["id"].as_str().unwrap().to_owned();

    let hooks = eventually(10, "the webhook", || async {
        let seen = webhooks(&id).await;
        (seen["accepted"].as_array().map(Vec::len) == Some(1)).then_some(seen)
    })
    .await;
    let event = &hooks["accepted"][0];
    assert_eq!((event["kind"].as_str(), event["order"]["state"].as_str()), (Some("order.settled"), Some("paid")));
    assert_eq!(event["event_id"], format!("{id}/settled"));

    let page = eventually(10, "the conversation message", || async {
        let page = messages(&user, &shop.id).await;
        (page["messages"].as_array().map(Vec::len) == Some(1)).then_some(page)
    })
    .await;
    let message = &page["messages"][0];
    assert_eq!(message["text"], "Paid 12.50 USD to Sim Shop for 1 x green-tea.");
    assert_eq!((message["kind"].as_str(), message["sequence"].as_u64()), (Some("purchase.paid"), Some(1)));
    eventually(10, "the outbox item's removal", || async {
        (!outbox_holds(&format!("{id}/settled")).await).then_some(())
    })
    .await;

    let list: Value = env.get_json("/conversations", &env.token(&user, &[])).await;
    assert_eq!(list["conversations"][0]["unread"], 1);
    let read = |up_to: u64| {
        env.http()
            .post(env.url(&format!("/conversations/merchant:{}/read", shop.id)))
            .bearer_auth(env.token(&user, &[]))
            .json(&json!({"up_to": up_to}))
            .send()
    };
    let summary: Value = read(1).await.unwrap().json().await.unwrap();
    assert_eq!((summary["unread"].as_u64(), summary["read_up_to"].as_u64()), (Some(0), Some(1)));
    let beyond = read(5).await.unwrap();
    assert_eq!(beyond.status(), StatusCode::BAD_REQUEST);
    assert_eq!(beyond.json::<Value>().await.unwrap()["code"], "beyond_last_message");
    let bad = env
        .http()
        .get(env.url("/conversations/bank:x/messages"))
        .bearer_auth(env.token(&user, &[]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.json::<Value>().await.unwrap()["code"], "invalid_counterparty");

    // Nothing arrives twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(webhooks(&id).await["accepted"].as_array().map(Vec::len), Some(1));
    assert_eq!(messages(&user, &shop.id).await["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_failed_webhook_is_retried_until_delivered() {
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    let (_, order) = buy(&user, &purchase(&shop, "flaky-tea", "3.00"), &unique("key")).await;
    let id = order["id"].as_str().unwrap().to_owned();
    let seen = eventually(15, "the retried webhook", || async {
        let seen = webhooks(&id).await;
        (seen["accepted"].as_array().map(Vec::len) == Some(1)).then_some(seen)
    })
    .await;
    assert_eq!(seen["refused"], 1, "the first delivery failed and was retried");
    let page = eventually(10, "one conversation message", || async {
        let page = messages(&user, &shop.id).await;
        (page["messages"].as_array().map(Vec::len) == Some(1)).then_some(page)
    })
    .await;
    assert_eq!(page["messages"][0]["kind"], "purchase.paid");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_undecided_order_expires_and_its_hold_is_released() {
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    let (status, order) = buy(&user, &purchase(&shop, "pending-tea", "4.00"), &unique("key")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(600, 2));
    // Local OrderTtlSeconds is 8 (infra/local/parameters.json).
    let expired = eventually(20, "the expiry", || async {
        let order: Value = env
            .http()
            .get(env.url(&format!("/purchases/{id}")))
            .bearer_auth(env.token(&user, &[]))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (order["state"] == "expired").then_some(order)
    })
    .await;
    assert_eq!(expired["refundable"], "0.00");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(1000, 2));
    assert_eq!(balance(AccountId::hold(&id)).await, Decimal::ZERO);
    let page = eventually(10, "the expiry message", || async {
        let page = messages(&user, &shop.id).await;
        (page["messages"].as_array().map(Vec::len) == Some(1)).then_some(page)
    })
    .await;
    assert_eq!(page["messages"][0]["kind"], "purchase.expired");
    let hooks = eventually(10, "the expiry webhook", || async {
        let seen = webhooks(&id).await;
        (seen["accepted"].as_array().map(Vec::len) == Some(1)).then_some(seen)
    })
    .await;
    assert_eq!(hooks["accepted"][0]["order"]["state"], "expired");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_sweeper_sends_what_a_crash_left_in_the_outbox() {
    let env = Env::get();
    // A committed outbox item whose send never happened (the function died right after the commit).
    let id = format!("{}/expire", unique("o_crashed"));
    let body = json!({"kind": "order.expire", "id": id, "order_id": "o_does_not_exist"}).to_string();
    env.dynamodb()
        .await
        .put_item()
        .table_name(env.table("OutboxTable"))
        .item("id", aws_sdk_dynamodb::types::AttributeValue::S(id.clone()))
        .item("queue_url", aws_sdk_dynamodb::types::AttributeValue::S(env.stack.queues["NotificationsQueue"].clone()))
        .item("body", aws_sdk_dynamodb::types::AttributeValue::S(body))
        .item("delay_seconds", aws_sdk_dynamodb::types::AttributeValue::N("0".into()))
        .item(
            "due_at",
            aws_sdk_dynamodb::types::AttributeValue::N((superpay::clock::now_epoch_seconds() - 60).to_string()),
        )
        .send()
        .await
        .unwrap();
    eventually(20, "the sweeper's send and the notifier's handling", || async {
        (!outbox_holds(&id).await).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_poison_notification_ends_in_the_dead_letter_queue() {
    let env = Env::get();
    let sqs = env.stack.sqs().await;
    let poison = format!("poison {}", unique("p"));
    sqs.send_message().queue_url(&env.stack.queues["NotificationsQueue"]).message_body(&poison).send().await.unwrap();
    let dlq = env.stack.queues["NotificationsDeadLetterQueue"].clone();
    eventually(30, "the redrive to the DLQ", || async {
        let received =
            sqs.receive_message().queue_url(&dlq).max_number_of_messages(10).visibility_timeout(0).send().await.ok()?;
        received.messages().iter().any(|m| m.body() == Some(poison.as_str())).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn expiry_captures_a_recorded_confirm_and_releases_an_undecided_order() {
    use aws_sdk_dynamodb::types::AttributeValue::{N, S};
    let env = Env::get();
    let shop = merchant().await;
    let user = funded_user("10.00").await;
    let (_, confirmed) = buy(&user, &purchase(&shop, "pending-tea", "4.00"), &unique("key")).await;
    let (_, undecided) = buy(&user, &purchase(&shop, "pending-tea", "3.00"), &unique("key")).await;
    let (confirmed, undecided) =
        (confirmed["id"].as_str().unwrap().to_owned(), undecided["id"].as_str().unwrap().to_owned());
    // The order as a capture that failed after the merchant's confirm leaves it: still awaiting the
    // merchant, with the confirm recorded on it.
    env.dynamodb()
        .await
        .update_item()
        .table_name(env.table("OrdersTable"))
        .key("id", S(confirmed.clone()))
        .update_expression("SET decision = :confirm, decided_at = :now")
        .expression_attribute_values(":confirm", S("confirm".into()))
        .expression_attribute_values(":now", N(superpay::clock::now_epoch_seconds().to_string()))
        .send()
        .await
        .unwrap();

    // Local OrderTtlSeconds is 8 (infra/local/parameters.json).
    let mine = |id: String| {
        let token = env.token(&user, &[]);
        async move { env.get_json(&format!("/purchases/{id}"), &token).await }
    };
    for (id, state) in [(&confirmed, "paid"), (&undecided, "expired")] {
        let order = eventually(20, "the expiry check", || async {
            let order = mine(id.clone()).await;
            (order["state"] != "awaiting_merchant").then_some(order)
        })
        .await;
        assert_eq!(order["state"], state, "{order}");
        assert_eq!(balance(AccountId::hold(id)).await, Decimal::ZERO);
    }
    assert_eq!(balance(AccountId::merchant(&shop.id)).await, Decimal::new(400, 2), "the confirmed order is paid");
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::new(600, 2), "only the undecided order came back");
    let page = eventually(10, "both messages", || async {
        let page = messages(&user, &shop.id).await;
        (page["messages"].as_array().map(Vec::len) == Some(2)).then_some(page)
    })
    .await;
    let mut kinds: Vec<_> = page["messages"].as_array().unwrap().iter().map(|m| m["kind"].clone()).collect();
    kinds.sort_by_key(|k| k.to_string());
    assert_eq!(kinds, [json!("purchase.expired"), json!("purchase.paid")]);
}
