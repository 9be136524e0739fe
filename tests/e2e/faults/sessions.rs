//! Payment sessions under faults: a user sets a payment PIN, starts a session for a purchase (or,
//! one user in three, a charge in a mini-app they verified) and confirms it from two loading
//! processes at once (the payment app came up late while the sheet confirmed), and every fourth user
//! cancels at the same moment. Whatever the faults, the session pays at most once, under the one
//! payment its id derives, and every answer holds.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay::miniapp::Outcome;
use superpay::miniapp::store::RequestStore;
use superpay::purchase::store::OrderStore;
use superpay_e2e::{Env, unique};

use super::{Attempts, Outcomes};
use crate::purchases::{TestMerchant, balance, funded_user};

const FUNDS: Decimal = Decimal::from_parts(2000, 0, 0, false, 2);
const PIN: &str = "482913";

/// What one user did and was told.
#[derive(Debug, Default)]
pub struct Client {
    user: String,
    product: &'static str,
    pub attempts: Attempts,
    session: Option<String>,
    /// What each confirmation was told: the session's state, or the refusal's code.
    confirms: Vec<String>,
    /// What the cancel was told, when one was sent.
    cancel: Option<String>,
}

fn said(answer: &Value) -> String {
    answer["state"].as_str().or(answer["code"].as_str()).unwrap_or_default().to_owned()
}

pub async fn client(shop: &TestMerchant, app: &str, i: usize) -> Client {
    let env = Env::get();
    // A purchase paid or declined, or a mini-app charge of the price its server asks or not.
    let product = ["green-tea", "decline-tea", "jasmine-tea"][i % 3];
    let user = funded_user(&FUNDS.to_string()).await;
    let mut client = Client { user: user.clone(), product, ..Client::default() };
    let token = env.token(&user, &[]);
    let pay = if product == "jasmine-tea" {
        let key = unique("key");
        let verify = || {
            env.http()
                .post(env.url(&format!("/miniapps/{app}/verify")))
                .bearer_auth(&token)
                .header("idempotency-key", &key)
                .send()
        };
        let Some((_, verified)) = client.attempts.call(verify).await else { return client };
        let price = ["4.50", "4.00"][i % 2];
        json!({"kind": "miniapp_charge", "app_id": app, "session_id": verified["session"]["id"], "action": "buy",
               "params": {"item": product}, "amount": {"amount": price, "currency": "USD"}})
    } else {
        json!({"kind": "purchase", "merchant_id": shop.id, "product_id": product, "quantity": 1,
               "amount": {"amount": "7.25", "currency": "USD"}})
    };

    // A first set whose answer was lost is answered 409 when retried: the PIN is set all the same.
    let set = || env.http().put(env.url("/payment-pin")).bearer_auth(&token).json(&json!({"pin": PIN})).send();
    let Some((_, answer)) = client.attempts.call(set).await else { return client };
    assert!(["", "payment_pin_already_set"].contains(&answer["code"].as_str().unwrap_or_default()), "{answer}");

    let key = unique("key");
    let body = json!({
        "pay": pay,
        "client": {"platform": "ios", "payment_app": {"installed": true, "version": "9.0.0"}, "network": "wifi",
                   "free_memory_mb": 4096}});
    let start = || {
        env.http()
            .post(env.url("/payment-sessions"))
            .bearer_auth(&token)
            .header("idempotency-key", &key)
            .json(&body)
            .send()
    };
    let Some((_, session)) = client.attempts.call(start).await else { return client };
    let id = session["id"].as_str().unwrap_or_else(|| panic!("{user}: {session}")).to_owned();
    client.session = Some(id.clone());

    let post = |path: String, body: Value| env.http().post(env.url(&path)).bearer_auth(&token).json(&body).send();
    let confirm = |process: &'static str| {
        let path = format!("/payment-sessions/{id}/confirm");
        let body = json!({"process": process, "pin": PIN});
        async move {
            let mut attempts = Attempts::default();
            let told = attempts.call(|| post(path.clone(), body.clone())).await.map(|(_, answer)| said(&answer));
            (attempts, told)
        }
    };
    let cancel = async {
        let mut attempts = Attempts::default();
        if !i.is_multiple_of(4) {
            return (attempts, None);
        }
        let body = json!({"event": "cancelled", "process": "foreground_app"});
        let path = format!("/payment-sessions/{id}/events");
        let told = attempts
            .call(|| post(path.clone(), body.clone()))
            .await
            .map(|(_, answer)| answer["session"]["state"].as_str().map_or_else(|| said(&answer), str::to_owned));
        (attempts, told)
    };
    let ((app, by_app), (sheet, by_sheet), (cancelling, cancelled)) =
        tokio::join!(confirm("foreground_app"), confirm("simulated_sheet"), cancel);
    for (attempts, told) in [(app, by_app), (sheet, by_sheet)] {
        client.attempts.tries += attempts.tries;
        client.confirms.push(told.unwrap_or_else(|| attempts.gave_up()));
    }
    client.attempts.tries += cancelling.tries;
    client.cancel = cancelled.map(Some).unwrap_or_else(|| i.is_multiple_of(4).then(|| cancelling.gave_up()));
    client
}

/// Every answer holds: a user has at most the session's one payment (an order, a mini-app request);
/// their wallet lost its amount only if it ended paid; a confirmation told `paid`, `declined` or
/// `failed` saw the payment's outcome, and a cancel told `cancelled` left no payment.
pub async fn judge(clients: &[Client], outcomes: &mut Outcomes) {
    let env = Env::get();
    let orders = OrderStore::new(env.dynamodb().await, env.table("OrdersTable")).all().await.unwrap();
    let requests = RequestStore::new(env.dynamodb().await, env.table("MiniAppRequestsTable")).all().await.unwrap();
    // Each payment as (id, the session state it makes, what it took from the wallet).
    let payments: Vec<(String, &str, String, Decimal)> = orders
        .iter()
        .map(|o| {
            let paid = if o.state.as_str() == "paid" { o.amount.amount() } else { Decimal::ZERO };
            (o.user.clone(), o.state.as_str(), o.id.clone(), paid)
        })
        .chain(requests.iter().map(|r| {
            let charged = r.outcome.charged().map(|m| m.amount());
            let state = match (&r.outcome, charged) {
                // Relayed while the session was cancelled: recorded so, and never the session's.
                (Outcome::Withdrawn, _) => "withdrawn",
                (_, Some(_)) => "paid",
                (_, None) => "failed",
            };
            (r.user.clone(), state, r.id.clone(), charged.unwrap_or_default())
        }))
        .collect();
    for client in clients {
        let theirs: Vec<_> = payments.iter().filter(|p| p.0 == client.user).collect();
        assert!(theirs.len() <= 1, "{client:?}: {theirs:?}");
        let withdrawn = theirs.first().is_some_and(|p| p.1 == "withdrawn");
        if withdrawn {
            assert!(client.cancel.is_some(), "{client:?}: withdrawn without a cancel: {theirs:?}");
        }
        let order = theirs.first().filter(|p| p.1 != "withdrawn").map(|p| Paid { state: p.1, id: &p.2, amount: p.3 });
        // The session is the truth: confirmed under its one payment, or not confirmed and none.
        if let Some(id) = &client.session {
            // Read as a client would: the stack still injects faults.
            let (url, token) = (env.url(&format!("/payment-sessions/{id}")), env.token(&client.user, &[]));
            let read = Attempts::default().call(|| env.http().get(&url).bearer_auth(&token).send()).await;
            let (_, session) = read.unwrap_or_else(|| panic!("{client:?}: the session could not be read"));
            assert_eq!(session["confirmed"]["payment_id"].as_str(), order.map(|o| o.id), "{client:?}: {session}");
            let state = session["state"].as_str().unwrap_or_default();
            match order {
                Some(order) => assert_eq!(state, order.state, "{session}"),
                None => assert!(["open", "cancelled"].contains(&state), "{session}"),
            }
        }
        let paid = order.map_or(Decimal::ZERO, |o| o.amount);
        assert_eq!(balance(AccountId::wallet(&client.user)).await, FUNDS - paid, "{client:?}: {order:?}");
        for told in &client.confirms {
            match told.as_str() {
                "paid" | "declined" | "failed" => assert_eq!(order.map(|o| o.state), Some(told.as_str()), "{client:?}"),
                "processing" => assert!(order.is_some(), "{client:?}"),
                // Cancelled first (its answer may have been lost).
                "payment_session_closed" => assert!(order.is_none(), "{client:?}: {order:?}"),
                _ => {}
            }
        }
        match client.cancel.as_deref() {
            Some("cancelled") => assert!(order.is_none(), "{client:?}: cancelled, yet {order:?}"),
            Some("payment_session_closed") => assert!(order.is_some(), "{client:?}: refused, yet no order"),
            _ => {}
        }
        let ended = order.map_or("no payment", |o| o.state);
        let cancel = client.cancel.as_deref().map(|c| format!(", cancel told {c}")).unwrap_or_default();
        *outcomes
            .entry(format!("session {}: confirms told {:?}{cancel}; {ended}", client.product, client.confirms))
            .or_default() += 1;
    }
}

/// A user's one payment as the judge sees it.
#[derive(Debug, Clone, Copy)]
struct Paid<'a> {
    /// The session state it makes (`paid`, `declined`, `expired`, `failed`).
    state: &'a str,
    id: &'a str,
    /// What it took from the wallet.
    amount: Decimal,
}
