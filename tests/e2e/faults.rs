//! Purchases under injected faults: the fault run of `cargo stack test`, whose stack injects faults
//! into the functions' AWS calls (infra/local/src/faults.rs: throttling, transaction conflicts,
//! writes that commit but lose their answer, SQS and KMS failures, messages delivered twice), kills
//! function processes mid-invocation and restarts DynamoDB. Many users buy at once and merchants
//! refund part of some paid orders; a client whose call fails retries with the same Idempotency-Key, as a real one would, then gives up (a client
//! whose request's process was killed finds its key in progress until the key's lock expires, and
//! usually gives up so). Once quiet, nothing was lost or doubled, and every answer a client got
//! still holds.
//! On a stack without faults these tests skip themselves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::clock::now_epoch_seconds;
use superpay::ledger::AccountId;
use superpay::outbox::{Outbox, check_outbox};
use superpay::purchase::store::OrderStore;
use superpay_e2e::{Env, unique};

use crate::merchants::register;
use crate::purchases::{TestMerchant, balance, funded_user, installed, purchase};
use crate::reconcile::violations;

/// How often a client tries one call before it gives up, and the first wait between tries.
const TRIES: u32 = 6;
const BACKOFF: Duration = Duration::from_millis(250);

/// Whether the stack injects faults; says why the test does nothing when it does not.
fn faults_on() -> bool {
    let on = Env::get().stack.faults.is_some();
    if !on {
        eprintln!("skipped: the stack injects no faults (the fault run of `cargo stack test` runs this)");
    }
    on
}

/// The status and JSON answer of a call tried as a client would: again after a 5xx, a dropped
/// connection or a key still in progress, with a growing wait; `None` after `TRIES` tries, the
/// last failure in `client.failed`.
async fn tried<F, Fut>(client: &mut Client, call: F) -> Option<(StatusCode, Value)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = reqwest::Result<reqwest::Response>>,
{
    for attempt in 0..TRIES {
        client.tries += 1;
        match call().await {
            Ok(response) => {
                let status = response.status();
                let body: Value = response.json().await.unwrap_or_default();
                let in_progress = body["code"] == "idempotency_request_in_progress";
                if !status.is_server_error() && !in_progress {
                    return Some((status, body));
                }
                client.failed = Some(format!("{status} {}", body["code"].as_str().unwrap_or_default()));
            }
            Err(e) => client.failed = Some(e.to_string()),
        }
        tokio::time::sleep(BACKOFF * (attempt + 1)).await;
    }
    None
}

/// A merchant registered (retried with its key) and installed in the simulator.
async fn merchant_under_faults() -> TestMerchant {
    let env = Env::get();
    let url = format!("{}/m/{}", env.stack.merchant_simulator_url, unique("shop"));
    let body = json!({"name": "Faulty Shop", "product_server_url": url, "currency": "USD"});
    let key = unique("key");
    for attempt in 0..TRIES * 2 {
        let response = register(&body, &key).await;
        if response.status() == StatusCode::CREATED {
            return installed(&response.json().await.unwrap()).await;
        }
        tokio::time::sleep(BACKOFF * (attempt + 1)).await;
    }
    panic!("the merchant could not be registered in {} tries", TRIES * 2);
}

/// What one client did and was told.
#[derive(Debug, Default)]
struct Client {
    user: String,
    product: &'static str,
    tries: u32,
    /// The order and its state as the last 2xx answer told them (`awaiting_merchant` may carry a
    /// recorded `decision`); `None` if the client gave up on the purchase.
    order: Option<String>,
    told: Option<(String, Option<String>)>,
    /// A later call refused with this code (the merchant's decision).
    refused: Option<String>,
    /// The last failed try's answer, when the client gave up.
    failed: Option<String>,
    /// The merchant's refund of part of a paid order: `Some(true)` answered 2xx, `Some(false)`
    /// given up on (it may or may not have moved the money).
    refunded: Option<bool>,
}

/// What a merchant refunds of every fourth paid order (clients `i % 4 == 0`).
const REFUND: Decimal = Decimal::from_parts(50, 0, 0, false, 2);

/// The products the clients buy, by the simulator's answer: paid, declined, pending then decided
/// by the merchant's signed callback, pending until the order expires.
const PRODUCTS: [&str; 6] =
    ["green-tea", "green-tea", "decline-me", "pending-confirm", "pending-decline", "pending-tea"];

/// A client's purchase, then (for every fourth that ended paid) the merchant's partial refund,
/// signed afresh and retried with its own Idempotency-Key.
async fn client(shop: Arc<TestMerchant>, i: usize) -> Client {
    let mut client = purchase_and_decide(&shop, i).await;
    let paid = client.told.as_ref().is_some_and(|told| told.0 == "paid");
    let Some(id) = client.order.clone().filter(|_| paid && i.is_multiple_of(4)) else { return client };
    let env = Env::get();
    let (path, key) = (format!("/merchant/orders/{id}/refunds"), unique("refund"));
    let body = json!({"amount": {"amount": REFUND.to_string(), "currency": "USD"}, "reason": "damaged"}).to_string();
    let refund = || {
        let request = env.http().post(env.url(&path)).header("idempotency-key", &key);
        env.signed(request, &shop.master, &shop.key_id, &path, &body).send()
    };
    client.refunded = Some(match tried(&mut client, refund).await {
        Some((status, answer)) => {
            assert!(status.is_success(), "refund of {id}: {status} {answer}");
            true
        }
        None => false,
    });
    client
}

async fn purchase_and_decide(shop: &TestMerchant, i: usize) -> Client {
    let env = Env::get();
    let product = PRODUCTS[i % PRODUCTS.len()];
    let amount = Decimal::new(100 + (i as i64 % 7) * 25, 2);
    let user = funded_user("100.00").await;
    let mut client = Client { user: user.clone(), product, ..Client::default() };
    let (key, token) = (unique("key"), env.token(&user, &[]));
    let body = purchase(shop, product, &amount.to_string());
    let buy = || {
        env.http().post(env.url("/purchases")).bearer_auth(&token).header("idempotency-key", &key).json(&body).send()
    };
    let Some((status, order)) = tried(&mut client, buy).await else { return client };
    assert!(status.is_success(), "{user} buying {product}: {status} {order}");
    let id = order["id"].as_str().expect("an order id").to_owned();
    client.order = Some(id.clone());
    client.told =
        Some((order["state"].as_str().unwrap_or_default().into(), order["decision"].as_str().map(Into::into)));
    let decision = match product {
        "pending-confirm" => "confirm",
        "pending-decline" => "decline",
        _ => return client,
    };
    if order["state"] != "awaiting_merchant" {
        return client;
    }
    // The merchant decides; each try is signed afresh (a nonce is taken once).
    let path = format!("/merchant/orders/{id}/decision");
    let body = json!({"decision": decision}).to_string();
    let decide = || env.signed(env.http().post(env.url(&path)), &shop.master, &shop.key_id, &path, &body).send();
    match tried(&mut client, decide).await {
        Some((status, answer)) if status.is_success() => {
            client.told =
                Some((answer["state"].as_str().unwrap_or_default().into(), answer["decision"].as_str().map(Into::into)))
        }
        Some((_, problem)) => {
            client.refused = problem["code"].as_str().map(Into::into);
        }
        None => {}
    }
    client
}

/// The states an order whose client was told `told` (state, recorded decision) may end in.
fn may_end_as(told: &(String, Option<String>)) -> &'static [&'static str] {
    match (told.0.as_str(), told.1.as_deref()) {
        ("paid", _) | ("awaiting_merchant", Some("confirm")) => &["paid"],
        ("declined", _) | ("awaiting_merchant", Some("decline")) => &["declined"],
        ("expired", _) => &["expired"],
        ("awaiting_merchant", _) => &["paid", "declined", "expired"],
        _ => &[],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fault run: cargo stack test"]
async fn concurrent_purchases_under_faults_lose_and_double_nothing() {
    if !faults_on() {
        return;
    }
    let env = Env::get();
    let started = std::time::Instant::now();
    let purchases: usize = std::env::var("SUPERPAY_FAULT_PURCHASES").ok().and_then(|n| n.parse().ok()).unwrap_or(150);
    let mut shops = Vec::new();
    for _ in 0..3 {
        shops.push(Arc::new(merchant_under_faults().await));
    }
    // Many clients at once, a bounded number in flight (the stack runs two instances a function).
    let in_flight = Arc::new(tokio::sync::Semaphore::new(24));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..purchases {
        let (shop, in_flight) = (shops[i % shops.len()].clone(), in_flight.clone());
        clients.spawn(async move {
            let _turn = in_flight.acquire_owned().await;
            client(shop, i).await
        });
    }
    let clients = clients.join_all().await;
    let bought = started.elapsed();

    // Quiet: every order settled (pending ones expired), every message delivered or dead.
    let users: Vec<&str> = clients.iter().map(|c| c.user.as_str()).collect();
    let orders = OrderStore::new(env.dynamodb().await, env.table("OrdersTable"));
    let outbox = Outbox::new(env.dynamodb().await, env.stack.sqs().await, env.table("OutboxTable"));
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mine = loop {
        let mine: Vec<_> =
            orders.all().await.unwrap().into_iter().filter(|o| users.contains(&o.user.as_str())).collect();
        let settling = mine.iter().filter(|o| o.state.as_str() == "awaiting_merchant").count();
        let live = outbox.items().await.unwrap().iter().filter(|i| i.dead_reason.is_none()).count();
        if settling == 0 && live == 0 {
            break mine;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not quiet after 90 s: {settling} orders awaiting, {live} messages undelivered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let mut found = violations(&users).await;
    found.extend(check_outbox(&outbox.items().await.unwrap(), now_epoch_seconds(), 60));
    assert!(found.is_empty(), "{}", found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));

    // Every answer holds: each client's one order exists once, in the state it was told (or the
    // final state a pending one reached), and its wallet lost exactly what was captured.
    let by_user: HashMap<&str, Vec<_>> = mine.iter().fold(HashMap::new(), |mut by, o| {
        by.entry(o.user.as_str()).or_insert_with(Vec::new).push(o);
        by
    });
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for client in &clients {
        let theirs = by_user.get(client.user.as_str()).cloned().unwrap_or_default();
        assert!(theirs.len() <= 1, "{} has {} orders from one purchase: {theirs:?}", client.user, theirs.len());
        let paid = theirs.first().filter(|o| o.state.as_str() == "paid").map_or(Decimal::ZERO, |o| o.amount.amount());
        // A refund answered 2xx moved its amount back; one given up on may have.
        let wallet = balance(AccountId::wallet(&client.user)).await;
        let before_refund = Decimal::new(10_000, 2) - paid;
        match client.refunded {
            Some(true) => assert_eq!(wallet, before_refund + REFUND, "{client:?}"),
            Some(false) => assert!(wallet == before_refund || wallet == before_refund + REFUND, "{client:?}"),
            None => assert_eq!(wallet, before_refund, "{client:?}"),
        }
        let (Some(id), Some(told)) = (&client.order, &client.told) else {
            let last = client.failed.as_deref().unwrap_or_default();
            *outcomes.entry(format!("{}: gave up (last: {last})", client.product)).or_default() += 1;
            continue;
        };
        let order = theirs.first().unwrap_or_else(|| panic!("{client:?}: the order it was told of is missing"));
        assert_eq!(&order.id, id, "{client:?}");
        let allowed = may_end_as(told);
        assert!(
            allowed.contains(&order.state.as_str()),
            "{client:?} ended {}, may end {allowed:?}",
            order.state.as_str()
        );
        let refused = client.refused.as_ref().map(|code| format!(" (decision refused: {code})")).unwrap_or_default();
        let refund = match client.refunded {
            Some(true) => ", refunded",
            Some(false) => ", refund given up",
            None => "",
        };
        let outcome = format!("{}: told {}, ended {}{refused}{refund}", client.product, told.0, order.state.as_str());
        *outcomes.entry(outcome).or_default() += 1;
    }

    let tries: u32 = clients.iter().map(|c| c.tries).sum();
    eprintln!(
        "{purchases} purchases by {purchases} users from {} merchants in {:.0} s ({tries} calls with the clients' retries), quiet after {:.0} s:",
        shops.len(),
        bought.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for (outcome, count) in &outcomes {
        eprintln!("  {count:>4} x {outcome}");
    }
    let log = std::fs::read_to_string(env.stack.logs.join(superpay_local::faults::FAULTS_LOG)).unwrap_or_default();
    let injected = log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).fold(
        BTreeMap::<String, usize>::new(),
        |mut by, fault| {
            *by.entry(format!(
                "{} {}",
                fault["function"].as_str().unwrap_or("?"),
                fault["fault"].as_str().unwrap_or("?")
            ))
            .or_default() += 1;
            by
        },
    );
    eprintln!("faults injected so far, by function and kind:");
    for (fault, count) in &injected {
        eprintln!("  {count:>4} x {fault}");
    }
    assert!(!injected.is_empty(), "the run injected faults");
}
