//! Purchases under faults: paid, declined, pending then decided by the merchant's signed callback,
//! pending until the order expires; merchants refund part of every fourth paid order.

use std::collections::HashMap;

use rust_decimal::Decimal;
use serde_json::json;
use superpay::ledger::AccountId;
use superpay::purchase::store::OrderStore;
use superpay_e2e::{Env, unique};

use super::{Attempts, Outcomes, home_kinds, merchant_under_faults};
use crate::purchases::{TestMerchant, balance, funded_user, purchase};

/// An order's state as an answer told it, with the decision recorded on an awaiting one.
type Told = (String, Option<String>);

/// What one client did and was told.
#[derive(Debug, Default)]
pub struct Client {
    user: String,
    product: &'static str,
    pub attempts: Attempts,
    /// The order and its state as the last 2xx answer told them (`awaiting_merchant` may carry a
    /// recorded `decision`); `None` if the client gave up on the purchase.
    order: Option<String>,
    told: Option<Told>,
    /// A later call refused with this code (the merchant's decision).
    refused: Option<String>,
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

/// The merchants the clients buy from.
pub async fn shops() -> Vec<TestMerchant> {
    let mut shops = Vec::new();
    for _ in 0..3 {
        shops.push(merchant_under_faults().await);
    }
    shops
}

/// A client's purchase, then (for every fourth that ended paid) the merchant's partial refund,
/// signed afresh and retried with its own Idempotency-Key.
pub async fn client(shop: &TestMerchant, i: usize) -> Client {
    let mut client = purchase_and_decide(shop, i).await;
    let paid = client.told.as_ref().is_some_and(|told| told.0 == "paid");
    let Some(id) = client.order.clone().filter(|_| paid && i.is_multiple_of(4)) else { return client };
    let env = Env::get();
    let (path, key) = (format!("/merchant/orders/{id}/refunds"), unique("refund"));
    let body = json!({"amount": {"amount": REFUND.to_string(), "currency": "USD"}, "reason": "damaged"}).to_string();
    let refund = || {
        let request = env.http().post(env.url(&path)).header("idempotency-key", &key);
        env.signed(request, &shop.master, &shop.key_id, &path, &body).send()
    };
    client.refunded = Some(match client.attempts.call(refund).await {
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
    let Some((status, order)) = client.attempts.call(buy).await else { return client };
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
    match client.attempts.call(decide).await {
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
fn may_end_as(told: &Told) -> &'static [&'static str] {
    match (told.0.as_str(), told.1.as_deref()) {
        ("paid", _) | ("awaiting_merchant", Some("confirm")) => &["paid"],
        ("declined", _) | ("awaiting_merchant", Some("decline")) => &["declined"],
        ("expired", _) => &["expired"],
        ("awaiting_merchant", _) => &["paid", "declined", "expired"],
        _ => &[],
    }
}

/// Every answer holds: each client's one order exists once, in the state it was told (or the final
/// state a pending one reached), and its wallet lost exactly what was captured less what was refunded.
pub async fn judge(clients: &[Client], outcomes: &mut Outcomes) {
    let env = Env::get();
    let orders = OrderStore::new(env.dynamodb().await, env.table("OrdersTable")).all().await.unwrap();
    let by_user: HashMap<&str, Vec<_>> = orders.iter().fold(HashMap::new(), |mut by, o| {
        by.entry(o.user.as_str()).or_insert_with(Vec::new).push(o);
        by
    });
    for client in clients {
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
            *outcomes.entry(format!("purchase {}: {}", client.product, client.attempts.gave_up())).or_default() += 1;
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
        // The buyer's home says what the order needs, as its state does (written together).
        let expected: &[&str] = match order.state.as_str() {
            "awaiting_merchant" => &["purchase.awaiting_merchant"],
            "declined" => &["purchase.declined"],
            "expired" => &["purchase.expired"],
            _ => &[],
        };
        assert_eq!(home_kinds(&client.user, &format!("order:{id}")).await, expected, "{client:?}");
        let refused = client.refused.as_ref().map(|code| format!(" (decision refused: {code})")).unwrap_or_default();
        let refund = match client.refunded {
            Some(true) => ", refunded",
            Some(false) => ", refund given up",
            None => "",
        };
        let outcome =
            format!("purchase {}: told {}, ended {}{refused}{refund}", client.product, told.0, order.state.as_str());
        *outcomes.entry(outcome).or_default() += 1;
    }
}

/// A user who buys more at once than their wallet holds, and whose merchant then refunds more at
/// once than the first paid order cost: the floor and the refund limit hold under contention.
#[derive(Debug, Default)]
pub struct Spree {
    user: String,
    pub attempts: Attempts,
    /// Each purchase's answer: the order and its state (with a recorded decision), or the
    /// refusal's code.
    bought: Vec<Result<(String, Told), String>>,
    /// Each refund's answer on the first paid order: `Ok` (2xx), the refusal's code, or `None`
    /// given up on.
    refunds: Vec<Option<Result<(), String>>>,
}

/// What a spree's wallet holds, and what each of its purchases and refunds is for.
const SPREE_FUNDS: Decimal = Decimal::from_parts(500, 0, 0, false, 2);
const SPREE_PRICE: &str = "2.00";
const SPREE_REFUND: &str = "1.00";

pub async fn spree(shop: &TestMerchant) -> Spree {
    let env = Env::get();
    let user = funded_user(&SPREE_FUNDS.to_string()).await;
    let token = env.token(&user, &[]);
    let body = purchase(shop, "green-tea", SPREE_PRICE);
    // Four at once, each its own request (its own key): at most two fit in the wallet.
    let buys = (0..4).map(|_| async {
        let (mut attempts, key) = (Attempts::default(), unique("key"));
        let buy = || {
            env.http()
                .post(env.url("/purchases"))
                .bearer_auth(&token)
                .header("idempotency-key", &key)
                .json(&body)
                .send()
        };
        let answer = attempts.call(buy).await;
        (attempts, answer)
    });
    let mut spree = Spree { user: user.clone(), ..Spree::default() };
    for (attempts, answer) in futures_util::future::join_all(buys).await {
        spree.attempts.tries += attempts.tries;
        spree.attempts.failed = spree.attempts.failed.take().or(attempts.failed);
        let Some((status, answer)) = answer else { continue };
        let told = match answer["id"].as_str() {
            Some(id) if status.is_success() => Ok((
                id.to_owned(),
                (answer["state"].as_str().unwrap_or_default().to_owned(), answer["decision"].as_str().map(Into::into)),
            )),
            _ => Err(answer["code"].as_str().unwrap_or_default().to_owned()),
        };
        // Paid, or (a capture that could not commit) awaiting the merchant's decision again.
        assert!(
            told.as_ref().is_ok_and(|(_, told)| may_end_as(told).contains(&"paid"))
                || told == Err("insufficient_funds".into()),
            "{user} on a spree: {status} {answer}"
        );
        spree.bought.push(told);
    }
    let paid = spree.bought.iter().flatten().find(|(_, told)| told.0 == "paid").cloned();
    let Some((id, _)) = paid else { return spree };
    // Three refunds of half the order at once, each its own request: at most two fit.
    let path = format!("/merchant/orders/{id}/refunds");
    let refund_body = json!({"amount": {"amount": SPREE_REFUND, "currency": "USD"}, "reason": "damaged"}).to_string();
    let refunds = (0..3).map(|_| async {
        let (mut attempts, key) = (Attempts::default(), unique("refund"));
        let refund = || {
            let request = env.http().post(env.url(&path)).header("idempotency-key", &key);
            env.signed(request, &shop.master, &shop.key_id, &path, &refund_body).send()
        };
        let answer = attempts.call(refund).await;
        (attempts, answer)
    });
    for (attempts, answer) in futures_util::future::join_all(refunds).await {
        spree.attempts.tries += attempts.tries;
        spree.refunds.push(answer.map(|(status, answer)| {
            let code = answer["code"].as_str().unwrap_or_default().to_owned();
            assert!(status.is_success() || code == "refund_exceeds_paid", "refund of {id}: {status} {answer}");
            if status.is_success() { Ok(()) } else { Err(code) }
        }));
    }
    spree
}

/// Each spree's wallet never went below zero and is what was captured less what was refunded; no
/// order was refunded beyond its price; each answer holds.
pub async fn judge_sprees(sprees: &[Spree], outcomes: &mut Outcomes) {
    let env = Env::get();
    let orders = OrderStore::new(env.dynamodb().await, env.table("OrdersTable")).all().await.unwrap();
    let price: Decimal = SPREE_PRICE.parse().expect("an amount");
    let refund: Decimal = SPREE_REFUND.parse().expect("an amount");
    for spree in sprees {
        let theirs: Vec<_> = orders.iter().filter(|o| o.user == spree.user).collect();
        let paid: Vec<_> = theirs.iter().filter(|o| o.state.as_str() == "paid").collect();
        assert!(paid.len() <= 2, "{spree:?}: {} orders paid from {SPREE_FUNDS}", paid.len());
        let refunded: Decimal = paid.iter().map(|o| o.amount.amount() - o.refundable).sum();
        let wallet = balance(AccountId::wallet(&spree.user)).await;
        assert_eq!(wallet, SPREE_FUNDS - price * Decimal::from(paid.len()) + refunded, "{spree:?}: {theirs:?}");
        for (id, told) in spree.bought.iter().flatten() {
            let order = theirs.iter().find(|o| &o.id == id).unwrap_or_else(|| panic!("{spree:?}: {id} is missing"));
            assert!(may_end_as(told).contains(&order.state.as_str()), "{spree:?}: {order:?}");
        }
        let answered = spree.refunds.iter().filter(|r| matches!(r, Some(Ok(())))).count();
        let given_up = spree.refunds.iter().filter(|r| r.is_none()).count();
        assert!(
            refund * Decimal::from(answered) <= refunded && refunded <= refund * Decimal::from(answered + given_up),
            "{spree:?}: refunded {refunded}"
        );
        let refused = spree.bought.iter().filter(|b| b.is_err()).count();
        let refunds_refused = spree.refunds.iter().filter(|r| matches!(r, Some(Err(_)))).count();
        let outcome = format!(
            "spree of 4 x {SPREE_PRICE} on {SPREE_FUNDS}: {} paid, {refused} refused insufficient_funds; \
             3 x {SPREE_REFUND} refunds: {answered} made, {refunds_refused} refused refund_exceeds_paid",
            paid.len()
        );
        *outcomes.entry(outcome).or_default() += 1;
    }
}
