//! Completion messages through the outbox, the notifications queue and the notifier: the merchant's
//! signed webhook, the user's conversation, retries with backoff, order expiry, the outbox sweeper
//! and the dead-letter queues (a poison message; an outbox item its sweeps never got handled).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::clock::now_epoch_seconds;
use superpay::ledger::AccountId;
use superpay::outbox::MAX_SWEEPS;
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

pub async fn webhooks(order: &str) -> Value {
    let env = Env::get();
    let url = format!("{}/_sim/webhooks/{order}", env.stack.merchant_simulator_url);
    env.http().get(url).send().await.unwrap().json().await.unwrap()
}

pub async fn messages(user: &str, merchant: &str) -> Value {
    let env = Env::get();
    let url = env.url(&format!("/conversations/merchant:{merchant}/messages"));
    env.http().get(url).bearer_auth(env.token(user, &[])).send().await.unwrap().json().await.unwrap()
}

pub async fn outbox_item(id: &str) -> Option<HashMap<String, AttributeValue>> {
    let env = Env::get();
    let item = env
        .dynamodb()
        .await
        .get_item()
        .table_name(env.table("OutboxTable"))
        .key("id", AttributeValue::S(id.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    item.item
}

async fn outbox_holds(id: &str) -> bool {
    outbox_item(id).await.is_some()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> i64 {
    item[name].as_n().unwrap().parse().unwrap()
}

/// An outbox item as a commit writes it, with the sweeps it has had so far.
pub async fn put_outbox_item(id: &str, queue: &str, body: &str, due_at: i64, sweeps: i64) {
    let env = Env::get();
    env.dynamodb()
        .await
        .put_item()
        .table_name(env.table("OutboxTable"))
        .item("id", AttributeValue::S(id.into()))
        .item("queue_url", AttributeValue::S(env.stack.queues[queue].clone()))
        .item("body", AttributeValue::S(body.into()))
        .item("delay_seconds", AttributeValue::N("0".into()))
        .item("due_at", AttributeValue::N(due_at.to_string()))
        .item("sweeps", AttributeValue::N(sweeps.to_string()))
        .item("due_shard", AttributeValue::N(superpay::outbox::due_shard(id).to_string()))
        .send()
        .await
        .unwrap();
}

/// An outbox item as a release before the sweeper's index wrote it: no `due_shard`.
pub async fn put_unsharded_outbox_item(table: &str, id: &str, queue_url: &str, due_at: i64) {
    let env = Env::get();
    let put = env.dynamodb().await.put_item().table_name(table).item("id", AttributeValue::S(id.into()));
    let put = put
        .item("queue_url", AttributeValue::S(queue_url.into()))
        .item("body", AttributeValue::S(json!({"id": id}).to_string()));
    put.item("delay_seconds", AttributeValue::N("0".into()))
        .item("due_at", AttributeValue::N(due_at.to_string()))
        .send()
        .await
        .unwrap();
}

/// The first message left in a dead-letter queue that `matches`.
pub async fn dead_letter_where(
    dead_letter_queue: &str,
    matches: impl Fn(&aws_sdk_sqs::types::Message) -> bool,
) -> Option<aws_sdk_sqs::types::Message> {
    let env = Env::get();
    let received = env
        .stack
        .sqs()
        .await
        .receive_message()
        .queue_url(&env.stack.queues[dead_letter_queue])
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .visibility_timeout(0)
        .send()
        .await
        .ok()?;
    received.messages.unwrap_or_default().into_iter().find(matches)
}

/// A dead letter's attribute, as text.
pub fn attribute(letter: &aws_sdk_sqs::types::Message, name: &str) -> Option<String> {
    letter.message_attributes()?.get(name)?.string_value().map(str::to_owned)
}

/// The dead letter sent for an outbox item (by the sweeper, or by a consumer that found it poison).
async fn dead_letter(dead_letter_queue: &str, outbox_id: &str) -> Option<aws_sdk_sqs::types::Message> {
    dead_letter_where(dead_letter_queue, |m| attribute(m, "outbox_id").as_deref() == Some(outbox_id)).await
}

/// A poison message is in its queue's dead-letter queue after one delivery, not after every retry,
/// with its reason; a message with an outbox item has that item marked dead with the same reason,
/// so the sweeper does not send it again.
pub async fn assert_poisoned(dead_letter_queue: &str, body: &str, reason: &str, outbox_id: Option<&str>) {
    let letter =
        eventually(15, "the poison's dead letter", || dead_letter_where(dead_letter_queue, |m| m.body() == Some(body)))
            .await;
    let text = |name: &str| attribute(&letter, name);
    assert!(text("reason").is_some_and(|r| r.starts_with(reason)), "{:?}", text("reason"));
    assert_eq!(text("receive_count").as_deref(), Some("1"), "dead-lettered at its first delivery");
    assert!(text("message_id").is_some_and(|id| !id.is_empty()));
    assert_eq!(text("outbox_id").as_deref(), outbox_id);
    if let Some(id) = outbox_id {
        let item =
            eventually(10, "the dead mark", || async { outbox_item(id).await.filter(|i| i.contains_key("dead_at")) })
                .await;
        assert_eq!(item["dead_reason"].as_s().ok(), text("reason").as_ref());
    }
}

fn dead_reason() -> String {
    format!("never handled after {MAX_SWEEPS} sends by the outbox sweeper")
}

fn assert_dead_letter(letter: &aws_sdk_sqs::types::Message, body: &str) {
    assert_eq!(letter.body(), Some(body));
    assert_eq!(attribute(letter, "sweeps"), Some(MAX_SWEEPS.to_string()));
    assert_eq!(attribute(letter, "reason"), Some(dead_reason()));
}

/// The item is marked dead with its reason, kept longer than the dead-letter queue keeps its
/// message (14 days), and no sweep touches it any more.
async fn assert_dead_and_left_alone(id: &str) {
    let dead =
        eventually(10, "the dead mark", || async { outbox_item(id).await.filter(|i| i.contains_key("dead_at")) }).await;
    assert_eq!(dead["dead_reason"].as_s().unwrap(), &dead_reason());
    assert!(number(&dead, "expires_at") > now_epoch_seconds() + 14 * 24 * 3600);
    // Local sweeps run every 2 s (infra/local/parameters.json).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(outbox_item(id).await, Some(dead), "a dead item is not swept");
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
    let read = |up_to: f64| {
        env.http()
            .post(env.url(&format!("/conversations/merchant:{}/read", shop.id)))
            .bearer_auth(env.token(&user, &[]))
            .json(&json!({"up_to": up_to}))
            .send()
    };
    // `1.0` is the whole number 1, as JSON and the OpenAPI document have it (found by schemathesis).
    let summary: Value = read(1.0).await.unwrap().json().await.unwrap();
    assert_eq!((summary["unread"].as_u64(), summary["read_up_to"].as_u64()), (Some(0), Some(1)));
    let beyond = read(5.0).await.unwrap();
    // A well-formed request the conversation's state refuses (found by schemathesis: it was a 400).
    assert_eq!(beyond.status(), StatusCode::CONFLICT);
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
    // A committed outbox item whose send never happened (the function died right after the commit).
    let id = format!("{}/expire", unique("o_crashed"));
    let body = json!({"kind": "order.expire", "id": id, "order_id": "o_does_not_exist"}).to_string();
    put_outbox_item(&id, "NotificationsQueue", &body, now_epoch_seconds() - 60, 0).await;
    eventually(20, "the sweeper's send and the notifier's handling", || async {
        (!outbox_holds(&id).await).then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_poison_notification_goes_to_the_dead_letter_queue_at_once_with_its_reason() {
    let env = Env::get();
    let poison = format!("poison {}", unique("p"));
    let queue = &env.stack.queues["NotificationsQueue"];
    env.stack.sqs().await.send_message().queue_url(queue).message_body(&poison).send().await.unwrap();
    assert_poisoned("NotificationsDeadLetterQueue", &poison, "not a notification: expected value", None).await;

    // A kind this consumer does not know (a producer deployed first): its outbox item, named by its
    // id, is marked dead too, so the sweeper does not send copies; a redrive still gets it handled.
    let id = unique("n_unknown_kind");
    let body = json!({"kind": "order.teleported", "id": id}).to_string();
    put_outbox_item(&id, "NotificationsQueue", &body, now_epoch_seconds() + 600, 0).await;
    env.stack.sqs().await.send_message().queue_url(queue).message_body(&body).send().await.unwrap();
    let reason = "not a notification: unknown variant `order.teleported`";
    assert_poisoned("NotificationsDeadLetterQueue", &body, reason, Some(&id)).await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_notification_naming_an_unknown_request_is_poison() {
    // Well formed, with its outbox item (due later, so the sweeper leaves it to the consumer), but
    // about a request that does not exist: no delivery can ever succeed.
    let env = Env::get();
    let id = format!("{}/outcome", unique("r_missing"));
    let body = json!({"kind": "miniapp.outcome", "id": id, "request_id": "r_missing"}).to_string();
    put_outbox_item(&id, "NotificationsQueue", &body, now_epoch_seconds() + 600, 0).await;
    let queue = &env.stack.queues["NotificationsQueue"];
    env.stack.sqs().await.send_message().queue_url(queue).message_body(&body).send().await.unwrap();
    assert_poisoned("NotificationsDeadLetterQueue", &body, "unknown mini-app request \"r_missing\"", Some(&id)).await;
    let letter = dead_letter("NotificationsDeadLetterQueue", &id).await.unwrap();
    assert_eq!(attribute(&letter, "kind").as_deref(), Some("miniapp.outcome"));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_outbox_item_never_handled_ends_in_its_queues_dead_letter_queue() {
    let env = Env::get();
    // Its message names another id, so the notifier takes every delivery for a duplicate of a
    // message handled already and never deletes this item. All its sweeps but the last are spent.
    let id = format!("{}/expire", unique("o_unhandled"));
    let body = json!({"kind": "order.expire", "id": unique("o_other"), "order_id": "o_does_not_exist"}).to_string();
    put_outbox_item(&id, "NotificationsQueue", &body, now_epoch_seconds() - 60, MAX_SWEEPS - 1).await;

    // The last sweep sends it once more and waits for it, MAX_SWEEPS times the grace ...
    let swept = eventually(15, "the last sweep", || async {
        outbox_item(&id).await.filter(|i| number(i, "sweeps") == MAX_SWEEPS)
    })
    .await;
    assert!(!swept.contains_key("dead_at"), "the last send is waited for");
    // ... 30 s locally, which the test skips.
    env.dynamodb()
        .await
        .update_item()
        .table_name(env.table("OutboxTable"))
        .key("id", AttributeValue::S(id.clone()))
        .update_expression("SET due_at = :past")
        .condition_expression("due_at = :due")
        .expression_attribute_values(":past", AttributeValue::N((now_epoch_seconds() - 60).to_string()))
        .expression_attribute_values(":due", swept["due_at"].clone())
        .send()
        .await
        .unwrap();

    let letter = eventually(15, "the dead letter", || dead_letter("NotificationsDeadLetterQueue", &id)).await;
    assert_dead_letter(&letter, &body);
    assert_dead_and_left_alone(&id).await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_exhausted_settlement_job_ends_in_the_settlement_dead_letter_queue() {
    // A settlement job still in the outbox after every sweep and its wait: each queue the outbox
    // sends to has its own dead-letter queue.
    let id = format!("{}/settle", unique("op_unhandled"));
    let body = json!({"id": id, "payment_id": "op_does_not_exist"}).to_string();
    put_outbox_item(&id, "SettlementQueue", &body, now_epoch_seconds() - 60, MAX_SWEEPS).await;
    let letter = eventually(15, "the dead letter", || dead_letter("SettlementDeadLetterQueue", &id)).await;
    assert_dead_letter(&letter, &body);
    assert_dead_and_left_alone(&id).await;
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

/// A private copy of the stack's outbox table, as the template made it (key, attributes, the
/// sweeper's index): the stack's own sweeper runs every 2 s on the shared one and would race a test.
async fn private_outbox_table() -> String {
    use aws_sdk_dynamodb::types::{BillingMode, GlobalSecondaryIndex};
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    let described = dynamodb.describe_table().table_name(env.table("OutboxTable")).send().await.unwrap();
    let stack_table = described.table().unwrap();
    let name = unique("outbox-copy");
    let indexes = stack_table.global_secondary_indexes().iter().map(|index| {
        GlobalSecondaryIndex::builder()
            .index_name(index.index_name().unwrap())
            .set_key_schema(Some(index.key_schema().to_vec()))
            .set_projection(index.projection().cloned())
            .build()
            .unwrap()
    });
    dynamodb
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(stack_table.key_schema().to_vec()))
        .set_attribute_definitions(Some(stack_table.attribute_definitions().to_vec()))
        .set_global_secondary_indexes(Some(indexes.collect()))
        .send()
        .await
        .unwrap();
    name
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_sweeper_queries_each_shard_for_what_is_due_and_acts_on_nothing_else() {
    use superpay::outbox::{DUE_SHARDS, DeadLetterQueues, Outbox, OutboxMessage, due_shard};
    let env = Env::get();
    let (dynamodb, sqs) = (env.dynamodb().await, env.stack.sqs().await);
    let table = private_outbox_table().await;
    let queue = sqs.create_queue().queue_name(unique("sweep-probe")).send().await.unwrap().queue_url.unwrap();
    let outbox = Outbox::new(dynamodb.clone(), sqs.clone(), &table);
    let now = now_epoch_seconds();
    let message = |id: String| OutboxMessage {
        body: json!({"id": id}).to_string(),
        id,
        queue_url: queue.clone(),
        delay_seconds: 0,
    };

    // Written as every commit writes them: 80 overdue, over most shards; 5 due in an hour; one
    // overdue but dead (a consumer found it poison).
    let due: Vec<String> = (0..80).map(|i| format!("{}/{i}", unique("o_due"))).collect();
    let later: Vec<String> = (0..5).map(|i| format!("{}/{i}", unique("o_later"))).collect();
    let dead = unique("o_dead");
    let mut writes = Vec::new();
    for id in due.iter().chain([&dead]) {
        writes.push(outbox.put_item_due(&message(id.clone()), now - 600).unwrap());
    }
    for id in &later {
        writes.push(outbox.put_item_due(&message(id.clone()), now + 3600).unwrap());
    }
    for chunk in writes.chunks(25) {
        superpay::dynamo::transact(&dynamodb, chunk.to_vec()).await.unwrap();
    }
    // And one written before the index existed: overdue, but with no shard.
    let legacy = unique("o_legacy");
    put_unsharded_outbox_item(&table, &legacy, &queue, now - 600).await;
    let shards: std::collections::BTreeSet<u32> = due.iter().map(|id| due_shard(id)).collect();
    assert!(shards.len() > DUE_SHARDS as usize / 2, "the items spread over the shards: {shards:?}");
    outbox.poisoned(&dead, "poison", now).await.unwrap();

    let item = |id: String| {
        let (dynamodb, table) = (dynamodb.clone(), table.clone());
        async move {
            let got = dynamodb.get_item().table_name(table).key("id", AttributeValue::S(id)).consistent_read(true);
            got.send().await.unwrap().item.unwrap()
        }
    };
    let dead_before = item(dead.clone()).await;
    assert!(!dead_before.contains_key("due_shard"), "a dead item leaves the index");
    let dead_letters = DeadLetterQueues::default();
    let budget = Duration::from_secs(20);

    // The index is read eventually consistently: the emulator's is at once, as AWS's is within a second.
    let swept = outbox.sweep(now, 120, &dead_letters, budget).await.unwrap();
    assert_eq!((swept.sent, swept.dead, swept.cut_short), (80, 0, false));
    let mut sent = Vec::new();
    while sent.len() < 81 {
        let page = sqs.receive_message().queue_url(&queue).max_number_of_messages(10).wait_time_seconds(1).send();
        let page = page.await.unwrap().messages.unwrap_or_default();
        if page.is_empty() {
            break;
        }
        for m in page {
            let body: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            sent.push(body["id"].as_str().unwrap().to_owned());
            sqs.delete_message().queue_url(&queue).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
    }
    sent.sort();
    let mut expected = due.clone();
    expected.sort();
    assert_eq!(sent, expected, "exactly the overdue live messages were sent, each once");
    for id in &due {
        let swept_item = item(id.clone()).await;
        assert_eq!((number(&swept_item, "sweeps"), number(&swept_item, "due_at")), (1, now + 120), "{id}");
    }
    for id in &later {
        let waiting = item(id.clone()).await;
        assert!(!waiting.contains_key("sweeps") && number(&waiting, "due_at") == now + 3600, "{id}: not touched");
    }
    assert_eq!(item(dead.clone()).await, dead_before, "a dead item is not swept");

    // Claimed items are due again only after their wait: the same tick again sends nothing.
    assert_eq!(outbox.sweep(now, 120, &dead_letters, budget).await.unwrap().sent, 0);
    // The legacy item was not swept; the reconciliation says why, and indexing it puts it in reach.
    let unswept = superpay::outbox::check_outbox(&outbox.items().await.unwrap(), now, 60);
    assert_eq!(unswept.iter().map(|v| v.subject()).collect::<Vec<_>>(), [format!("outbox item {legacy}")]);
    assert_eq!(outbox.index_unsharded().await.unwrap(), 1);
    assert_eq!(outbox.index_unsharded().await.unwrap(), 0, "once");
    // A sweep whose budget is spent starts nothing and says so; the next tick takes them.
    let cut = outbox.sweep(now + 4000, 120, &dead_letters, Duration::ZERO).await.unwrap();
    assert_eq!((cut.sent, cut.cut_short), (0, true));
    assert_eq!(outbox.sweep(now + 4000, 120, &dead_letters, budget).await.unwrap().sent, 80 + later.len() + 1);

    dynamodb.delete_table().table_name(&table).send().await.unwrap();
    sqs.delete_queue().queue_url(&queue).send().await.unwrap();
}
