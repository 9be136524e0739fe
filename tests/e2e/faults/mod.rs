//! Every way money moves, under injected faults: the fault run of `cargo stack test`, whose stack
//! injects faults into the functions' AWS calls (infra/local/src/faults.rs: throttling, transaction
//! conflicts, writes that commit but lose their answer, SQS and KMS failures, messages delivered
//! twice), kills function processes mid-invocation and restarts DynamoDB. At once: many users buy
//! from a few merchants (paid, declined, decided later by the merchant, expired) and merchants
//! refund part of some paid orders (`purchases`); users pay in mini-apps (`miniapps`); terminals
//! take offline payments, some of which wait for a top-up from the payer's bank, which approves,
//! declines or answers late (`offline`); users pay through signed transfer instructions, some
//! holds posted, voided or left to expire, some payments refunded (`transfers`); users move money
//! into their wallet from a card and out to a bank account, their bank approving, declining,
//! answering late or losing a request, and a partner platform charges a card they linked to it
//! (`cash`); users confirm a payment session from two loading processes at once, some cancelling
//! it meanwhile (`sessions`). Every merchant has credit sub-accounts, which the notifier's
//! schedule and every refund or payout its account cannot cover sweep. A client whose call fails
//! retries with the same Idempotency-Key, as a real one would, then gives up (a client whose
//! request's process was killed finds its key in progress until the key's lock expires, and usually
//! gives up so). Once quiet, the invariant checker finds nothing lost or doubled anywhere in the
//! tables, and every answer a client got still holds.
//! On a stack without faults these tests skip themselves.

mod cash;
mod miniapps;
mod offline;
mod purchases;
mod sessions;
mod transfers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay::instruction::operation::{OperationState, OperationStore};
use superpay::instrument::cash::CashState;
use superpay::instrument::cash::store::CashStore;
use superpay::offline::payment::{PaymentState, PaymentStore};
use superpay::offline::topup::TopUpStore;
use superpay::outbox::Outbox;
use superpay::purchase::store::OrderStore;
use superpay_e2e::{Env, unique};

use crate::merchants::register;
use crate::purchases::{TestMerchant, installed};
use crate::reconcile::violations_everywhere;

/// The credit sub-accounts of every merchant of the fault run.
const CREDIT_SHARDS: u32 = 4;

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

/// A client's calls: how many it tried, and the last failure when it gave up.
#[derive(Debug, Default)]
struct Attempts {
    tries: u32,
    failed: Option<String>,
}

impl Attempts {
    /// The status and body of a call tried as a client would: again after a 5xx, a dropped
    /// connection or a key still in progress, with a growing wait; `None` after `TRIES` tries, the
    /// last failure kept.
    async fn page<F, Fut>(&mut self, call: F) -> Option<(StatusCode, String)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = reqwest::Result<reqwest::Response>>,
    {
        for attempt in 0..TRIES {
            self.tries += 1;
            match call().await {
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    let code =
                        serde_json::from_str::<Value>(&body).ok().and_then(|b| b["code"].as_str().map(str::to_owned));
                    if !status.is_server_error() && code.as_deref() != Some("idempotency_request_in_progress") {
                        return Some((status, body));
                    }
                    self.failed = Some(format!("{status} {}", code.unwrap_or_default()));
                }
                Err(e) => self.failed = Some(e.to_string()),
            }
            tokio::time::sleep(BACKOFF * (attempt + 1)).await;
        }
        None
    }

    /// The same, with the answer read as JSON (`null` when it is not).
    async fn call<F, Fut>(&mut self, call: F) -> Option<(StatusCode, Value)>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = reqwest::Result<reqwest::Response>>,
    {
        let (status, body) = self.page(call).await?;
        Some((status, serde_json::from_str(&body).unwrap_or_default()))
    }

    /// How a client that gave up says so.
    fn gave_up(&self) -> String {
        format!("gave up (last: {})", self.failed.as_deref().unwrap_or_default())
    }
}

/// The kinds of `user`'s home element `id` as stored (none, or one: an element per source).
async fn home_kinds(user: &str, id: &str) -> Vec<String> {
    let items = Env::get().partition("HomeTable", "user", user).await;
    items
        .iter()
        .filter(|item| item["id"].as_s().is_ok_and(|key| *key == format!("element#{id}")))
        .map(|item| serde_json::from_str::<Value>(item["element"].as_s().expect("its element")).expect("JSON"))
        .map(|element| element["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A merchant registered (retried with its key) and installed in the simulator.
async fn merchant_under_faults() -> TestMerchant {
    let env = Env::get();
    let url = format!("{}/m/{}", env.stack.merchant_simulator_url, unique("shop"));
    let body = json!({"name": "Faulty Shop", "product_server_url": url, "currency": "USD"});
    let mut key = unique("key");
    for attempt in 0..TRIES * 2 {
        let response = register(&body, &key).await;
        if response.status() == StatusCode::CREATED {
            let created: Value = response.json().await.unwrap();
            // A replay (the first answer was lost) leaves the key out, shown once: a new merchant.
            if created["secret"].is_string() {
                let shop = installed(&created).await;
                // Every merchant of the fault run is a popular one: its credits spread over
                // sub-accounts, and its refunds and payouts sweep them first.
                env.ledger().await.set_credit_shards(&shop.id, CREDIT_SHARDS).await.unwrap();
                return shop;
            }
            key = unique("key");
        }
        tokio::time::sleep(BACKOFF * (attempt + 1)).await;
    }
    panic!("the merchant could not be registered in {} tries", TRIES * 2);
}

/// An admin's `POST path` (retried with its key until it is answered 201): the answer.
async fn created_by_admin(path: &str, body: Option<&Value>) -> Value {
    let env = Env::get();
    let key = unique("key");
    let mut attempts = Attempts::default();
    let call = || {
        let request = env.http().post(env.url(path)).bearer_auth(env.admin_token()).header("idempotency-key", &key);
        match body {
            Some(body) => request.json(body).send(),
            None => request.send(),
        }
    };
    for _ in 0..2 {
        if let Some((StatusCode::CREATED, created)) = attempts.call(call).await {
            return created;
        }
    }
    panic!("POST {path} was not answered 201 in {} tries: {:?}", attempts.tries, attempts.failed);
}

/// What the clients were told and what became of it, counted by outcome.
type Outcomes = BTreeMap<String, usize>;

/// A client of any of the loads, as it ended.
enum Client {
    Purchase(purchases::Client),
    Spree(purchases::Spree),
    MiniApp(miniapps::Client),
    Offline(offline::Client),
    Transfer(transfers::Client),
    Cash(cash::Client),
    Session(sessions::Client),
}

/// Waits until nothing is in flight: no order awaiting its merchant, no offline payment pending or
/// waiting for funds, no top-up debit unsettled, no transfer hold standing, no cash movement
/// pending, every outbox message due by now delivered or dead.
async fn quiet() {
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    let orders = OrderStore::new(dynamodb.clone(), env.table("OrdersTable"));
    let payments =
        PaymentStore::new(dynamodb.clone(), env.table("OfflinePaymentsTable"), env.table("OfflineCodesTable"));
    let topups = TopUpStore::new(dynamodb.clone(), env.table("TopUpsTable"));
    let operations = OperationStore::new(dynamodb.clone(), env.table("TransferOperationsTable"));
    let movements = CashStore::new(dynamodb.clone(), env.table("CashTable"));
    let outbox = Outbox::new(dynamodb, env.stack.sqs().await, env.table("OutboxTable"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let orders = orders.all().await.unwrap().iter().filter(|o| o.state.as_str() == "awaiting_merchant").count();
        let payments = payments
            .all()
            .await
            .unwrap()
            .iter()
            .filter(|p| matches!(p.state, PaymentState::Pending | PaymentState::WaitingForFunds))
            .count();
        let debits = topups.all().await.unwrap().iter().filter(|t| t.debit_started_at.is_some()).count();
        let holds = operations.all().await.unwrap().iter().filter(|o| o.state == OperationState::Held).count();
        let cash = movements.all().await.unwrap().iter().filter(|m| m.state == CashState::Pending).count();
        // A message due later (a linked card's expiry notice) is not in flight.
        let now = superpay::clock::now_epoch_seconds();
        let messages =
            outbox.items().await.unwrap().iter().filter(|i| i.dead_reason.is_none() && i.due_at <= now).count();
        if orders + payments + debits + holds + cash + messages == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not quiet after 120 s: {orders} orders awaiting, {payments} offline payments unsettled, \
             {debits} top-up debits unsettled, {holds} transfer holds standing, {cash} cash movements pending, \
             {messages} messages undelivered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "fault run: cargo stack test"]
async fn concurrent_payments_under_faults_lose_and_double_nothing() {
    if !faults_on() {
        return;
    }
    let env = Env::get();
    let started = Instant::now();
    let purchases: usize = std::env::var("SUPERPAY_FAULT_PURCHASES").ok().and_then(|n| n.parse().ok()).unwrap_or(150);
    let (shops, apps, tills, providers, partner) =
        tokio::join!(purchases::shops(), miniapps::apps(), offline::tills(), transfers::providers(), cash::partner());
    let (shops, apps, tills, providers, partner) =
        (Arc::new(shops), Arc::new(apps), Arc::new(tills), Arc::new(providers), Arc::new(partner));

    // Many clients at once, of every kind interleaved, a bounded number in flight (the stack runs
    // two instances a function): for every 60 purchases, 6 sprees, 20 mini-app charges, 15
    // offline payments, 20 transfers, 12 users' cash-ins and cash-outs and 12 payment sessions.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(24));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..purchases {
        let (sellers, turn) = (shops.clone(), in_flight.clone());
        clients.spawn(async move {
            let _turn = turn.acquire_owned().await;
            Client::Purchase(purchases::client(&sellers[i % sellers.len()], i).await)
        });
        if i % 10 == 0 {
            let (shops, turn) = (shops.clone(), in_flight.clone());
            clients.spawn(async move {
                let _turn = turn.acquire_owned().await;
                Client::Spree(purchases::spree(&shops[i % shops.len()]).await)
            });
        }
        if i % 3 == 0 {
            let (apps, turn) = (apps.clone(), in_flight.clone());
            clients.spawn(async move {
                let _turn = turn.acquire_owned().await;
                Client::MiniApp(miniapps::client(&apps[i % apps.len()], i / 3).await)
            });
        }
        if i % 4 == 0 {
            let (tills, turn) = (tills.clone(), in_flight.clone());
            clients.spawn(async move {
                let _turn = turn.acquire_owned().await;
                Client::Offline(offline::client(&tills[i % tills.len()], i / 4).await)
            });
        }
        if i % 3 == 1 {
            let (providers, turn) = (providers.clone(), in_flight.clone());
            clients.spawn(async move {
                let _turn = turn.acquire_owned().await;
                Client::Transfer(transfers::client(&providers[i % providers.len()], i / 3).await)
            });
        }
        if i % 5 == 2 {
            let (partner, turn) = (partner.clone(), in_flight.clone());
            clients.spawn(async move {
                let _turn = turn.acquire_owned().await;
                Client::Cash(cash::client(&partner, i / 5).await)
            });
        }
        if i % 5 == 4 {
            let (shops, apps, turn) = (shops.clone(), apps.clone(), in_flight.clone());
            clients.spawn(async move {
                let _turn = turn.acquire_owned().await;
                Client::Session(sessions::client(&shops[i % shops.len()], &apps[i % apps.len()], i / 5).await)
            });
        }
    }
    let (mut bought, mut sprees, mut charged, mut paid, mut transferred, mut cashed, mut sessions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for client in clients.join_all().await {
        match client {
            Client::Purchase(c) => bought.push(c),
            Client::Spree(c) => sprees.push(c),
            Client::MiniApp(c) => charged.push(c),
            Client::Offline(c) => paid.push(c),
            Client::Transfer(c) => transferred.push(c),
            Client::Cash(c) => cashed.push(c),
            Client::Session(c) => sessions.push(c),
        }
    }
    let busy = started.elapsed();
    quiet().await;

    let found = violations_everywhere().await;
    assert!(found.is_empty(), "{}", found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
    // Every fault here passes: a message that died is a notice lost (a webhook, a top-up link).
    let outbox = Outbox::new(env.dynamodb().await, env.stack.sqs().await, env.table("OutboxTable"));
    let dead: Vec<_> = outbox.items().await.unwrap().into_iter().filter(|i| i.dead_reason.is_some()).collect();
    assert!(dead.is_empty(), "messages that died of passing faults: {dead:?}");
    let mut outcomes = Outcomes::new();
    purchases::judge(&bought, &mut outcomes).await;
    purchases::judge_sprees(&sprees, &mut outcomes).await;
    miniapps::judge(&charged, &mut outcomes).await;
    offline::judge(&paid, &mut outcomes).await;
    transfers::judge(&transferred, &mut outcomes).await;
    cash::judge(&cashed, &partner, &mut outcomes).await;
    sessions::judge(&sessions, &mut outcomes).await;

    let tries: u32 = bought.iter().map(|c| c.attempts.tries).sum::<u32>()
        + sprees.iter().map(|c| c.attempts.tries).sum::<u32>()
        + charged.iter().map(|c| c.attempts.tries).sum::<u32>()
        + paid.iter().map(|c| c.attempts.tries).sum::<u32>()
        + transferred.iter().map(|c| c.attempts.tries).sum::<u32>()
        + cashed.iter().map(|c| c.attempts.tries).sum::<u32>()
        + sessions.iter().map(|c| c.attempts.tries).sum::<u32>();
    eprintln!(
        "{} purchases, {} sprees (4 purchases and 3 refunds at once), {} mini-app charges, {} offline payments, {} \
         transfers, {} users' cash-ins and cash-outs, {} payment sessions by as many users in {:.0} s ({tries} calls with the clients' \
         retries), quiet after {:.0} s:",
        bought.len(),
        sprees.len(),
        charged.len(),
        paid.len(),
        transferred.len(),
        cashed.len(),
        sessions.len(),
        busy.as_secs_f64(),
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
