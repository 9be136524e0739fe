//! Payment sessions under faults: a user sets a payment PIN, starts a session for a purchase and
//! confirms it from two loading processes at once (the payment app came up late while the sheet
//! confirmed), and every third user cancels at the same moment. Whatever the faults, the session
//! pays at most once, under the one order its id derives, and every answer holds.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay::payment_session::session_order_id;
use superpay::purchase::OrderState;
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

pub async fn client(shop: &TestMerchant, i: usize) -> Client {
    let env = Env::get();
    let product = ["green-tea", "decline-tea"][i % 2];
    let user = funded_user(&FUNDS.to_string()).await;
    let mut client = Client { user: user.clone(), product, ..Client::default() };
    let token = env.token(&user, &[]);

    // A first set whose answer was lost is answered 409 when retried: the PIN is set all the same.
    let set = || env.http().put(env.url("/payment-pin")).bearer_auth(&token).json(&json!({"pin": PIN})).send();
    let Some((_, answer)) = client.attempts.call(set).await else { return client };
    assert!(["", "payment_pin_already_set"].contains(&answer["code"].as_str().unwrap_or_default()), "{answer}");

    let key = unique("key");
    let body = json!({
        "pay": {"kind": "purchase", "merchant_id": shop.id, "product_id": product, "quantity": 1,
                "amount": {"amount": "7.25", "currency": "USD"}},
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
        if !i.is_multiple_of(3) {
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
    client.cancel = cancelled.map(Some).unwrap_or_else(|| (i.is_multiple_of(3)).then(|| cancelling.gave_up()));
    client
}

/// Every answer holds: a user has at most the session's one order; their wallet lost its amount
/// only if it ended paid; a confirmation told `paid` or `declined` saw the order's outcome, and a
/// cancel told `cancelled` left no order.
pub async fn judge(clients: &[Client], outcomes: &mut Outcomes) {
    let env = Env::get();
    let orders = OrderStore::new(env.dynamodb().await, env.table("OrdersTable")).all().await.unwrap();
    for client in clients {
        let theirs: Vec<_> = orders.iter().filter(|o| o.user == client.user).collect();
        assert!(theirs.len() <= 1, "{client:?}: {theirs:?}");
        let order = theirs.first();
        if let Some(order) = order {
            assert_eq!(Some(&order.id), client.session.as_deref().map(session_order_id).as_ref(), "{client:?}");
        }
        let paid = order.filter(|o| o.state == OrderState::Paid).map_or(Decimal::ZERO, |o| o.amount.amount());
        assert_eq!(balance(AccountId::wallet(&client.user)).await, FUNDS - paid, "{client:?}: {order:?}");
        for told in &client.confirms {
            match told.as_str() {
                "paid" | "declined" => assert_eq!(order.map(|o| o.state.as_str()), Some(told.as_str()), "{client:?}"),
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
        let ended = order.map_or("no order", |o| o.state.as_str());
        let cancel = client.cancel.as_deref().map(|c| format!(", cancel told {c}")).unwrap_or_default();
        *outcomes
            .entry(format!("session {}: confirms told {:?}{cancel}; {ended}", client.product, client.confirms))
            .or_default() += 1;
    }
}
