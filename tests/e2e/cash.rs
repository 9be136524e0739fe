//! Capability 9's cash-ins and cash-outs through the local stack and its simulated bank (which
//! answers by an account's last four digits: `0002` declines, `0259` answers too late, `0404` loses
//! the first request): the wallet is credited or debited exactly once whatever the bank did, every
//! refusal moves nothing, and the limits hold under concurrency.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::instruments::assert_never_in_the_clear;
use crate::purchases::balance;
use crate::topup::bank_movements;

const CARD: &str = "4242424242424242";
const DECLINED_CARD: &str = "4000000000000002";
const LAGGING_CARD: &str = "4000000000000259";
const LOSING_CARD: &str = "4000000000040404";
const IBAN: &str = "DE23370400440532017777";
const DECLINED_IBAN: &str = "DE40370400440532010002";
const LAGGING_IBAN: &str = "DE85370400440532010259";
const LOSING_IBAN: &str = "DE50370400440532010404";

/// `user`'s new instrument for `number` (a card or an IBAN): its id.
async fn instrument(user: &str, number: &str) -> String {
    let env = Env::get();
    let body = if number.starts_with("DE") {
        json!({"kind": "bank_account", "iban": number, "holder": "Ada Lovelace"})
    } else {
        json!({"kind": "card", "number": number, "expiry_month": 12, "expiry_year": 2030, "holder": "Ada Lovelace"})
    };
    let (status, added) = env.post_json(&env.token(user, &[]), "/instruments", Some(&body), Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    added["id"].as_str().expect("an id").to_owned()
}

fn body(instrument: &str, amount: &str, currency: &str) -> Value {
    json!({"instrument_id": instrument, "amount": {"amount": amount, "currency": currency}})
}

async fn cash(user: &str, route: &str, body: Value, key: String) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), route, Some(&body), Some(&key)).await
}

/// The movement once its check settled it (at most a minute).
async fn settled(user: &str, route: &str, id: &str) -> Value {
    let env = Env::get();
    for _ in 0..120 {
        let movement = env.get_json(&format!("{route}/{id}"), &env.token(user, &[])).await;
        if movement["state"] != "pending" {
            return movement;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("cash movement {id} is still pending after a minute");
}

fn usd(text: &str) -> Decimal {
    text.parse().expect("a decimal")
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_cash_in_credits_the_wallet_once_and_a_refused_or_declined_one_moves_nothing() {
    let env = Env::get();
    let user = unique("saver");
    let card = instrument(&user, CARD).await;
    let key = unique("key");

    let (status, credited) = cash(&user, "/wallet/cash-ins", body(&card, "25.00", "USD"), key.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{credited}");
    assert_eq!(
        (credited["state"].as_str(), credited["instrument"].as_str(), credited["direction"].as_str()),
        (Some("completed"), Some("visa 4242"), Some("in"))
    );
    let id = credited["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("ci_"), "{id}");
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("25.00"));
    // Sent again: the same answer, nothing moved again; the bank was asked once.
    assert_eq!(
        cash(&user, "/wallet/cash-ins", body(&card, "25.00", "USD"), key.clone()).await,
        (status, credited.clone())
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("25.00"));
    let asked = bank_movements(CARD).await;
    let ours: Vec<&Value> = asked.iter().filter(|m| m["reference"] == format!("cash-in/{id}")).collect();
    assert_eq!(ours.len(), 1, "{asked:?}");
    assert_eq!((ours[0]["kind"].as_str(), ours[0]["status"].as_str()), (Some("debit"), Some("approved")));
    let path = format!("/wallet/cash-ins/{id}");
    assert_eq!(env.get_json(&path, &env.token(&user, &[])).await, credited);
    assert_eq!(env.get_json(&path, &env.token("someone-else", &[])).await["code"], "unknown_cash_movement");
    assert_eq!(
        env.get_json(&format!("/wallet/cash-outs/{id}"), &env.token(&user, &[])).await["code"],
        "unknown_cash_movement",
        "a cash-in is not a cash-out"
    );

    // Declined by the bank: recorded with its reason, nothing credited.
    let declined_card = instrument(&user, DECLINED_CARD).await;
    let (status, declined) = cash(&user, "/wallet/cash-ins", body(&declined_card, "10.00", "USD"), unique("key")).await;
    assert_eq!(
        (status, declined["state"].as_str(), declined["reason"].as_str(), declined["decline_code"].as_str()),
        (StatusCode::CREATED, Some("declined"), Some("insufficient funds at the bank"), Some("bank_declined")),
        "{declined}"
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("25.00"));

    // Refused before the bank is asked: nothing recorded, nothing moved.
    let iban = instrument(&user, IBAN).await;
    let someone_elses = instrument(&unique("other"), CARD).await;
    let cases = [
        (body(&card, "10000.01", "USD"), StatusCode::UNPROCESSABLE_ENTITY, "cash_limit_exceeded"),
        (body(&card, "5.00", "EUR"), StatusCode::CONFLICT, "wallet_currency_mismatch"),
        (body(&card, "5.001", "USD"), StatusCode::BAD_REQUEST, "amount_too_many_decimals"),
        (body(&someone_elses, "5.00", "USD"), StatusCode::NOT_FOUND, "unknown_instrument"),
        (body("in_nobody", "5.00", "USD"), StatusCode::NOT_FOUND, "unknown_instrument"),
        (body("../x", "5.00", "USD"), StatusCode::BAD_REQUEST, "invalid_id"),
        (
            json!({"instrument_id": card, "amount": {"amount": "5.00", "currency": "USD"}, "cvv": "123"}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (body, status, code) in &cases {
        let (got, problem) = cash(&user, "/wallet/cash-ins", body.clone(), unique("key")).await;
        assert_eq!((got, problem["code"].as_str()), (*status, Some(*code)), "{body}: {problem}");
    }
    // A cash-out goes to a bank account only.
    let (status, problem) = cash(&user, "/wallet/cash-outs", body(&card, "5.00", "USD"), unique("key")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("instrument_cannot_receive"))
    );
    // A bank account can fund the wallet too (a direct debit).
    let (status, from_account) = cash(&user, "/wallet/cash-ins", body(&iban, "5.00", "USD"), unique("key")).await;
    assert_eq!((status, from_account["instrument"].as_str()), (StatusCode::CREATED, Some("DE 7777")), "{from_account}");
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("30.00"));
    let movements = env.partition("CashTable", "user", &user).await;
    let recorded =
        movements.iter().filter(|m| m.get("id").and_then(|v| v.as_s().ok()).is_some_and(|id| id.starts_with("ci_")));
    assert_eq!(recorded.count(), 3, "the refusals recorded nothing: {movements:?}");

    // The first request sent again a day later (its key's record expired), after its card was
    // removed: the same movement, nothing moved again; the key with another amount is refused.
    env.forget_idempotency_key(&user, "POST /wallet/cash-ins", &key).await;
    let removal = env.http().delete(env.url(&format!("/instruments/{card}"))).bearer_auth(env.token(&user, &[]));
    assert_eq!(removal.send().await.unwrap().status(), StatusCode::OK);
    let (status, again) = cash(&user, "/wallet/cash-ins", body(&card, "25.00", "USD"), key.clone()).await;
    assert_eq!((status, again["id"].as_str()), (StatusCode::CREATED, Some(id.as_str())), "{again}");
    env.forget_idempotency_key(&user, "POST /wallet/cash-ins", &key).await;
    let (status, problem) = cash(&user, "/wallet/cash-ins", body(&card, "26.00", "USD"), key.clone()).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("30.00"));
    assert_reconciled(&user).await;
}

/// `user`'s books and cash movements agree (`superpay::instrument::cash::check_cash`).
async fn assert_reconciled(user: &str) {
    let found = crate::reconcile::violations(&[user]).await;
    assert!(found.is_empty(), "{}", found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_cash_out_holds_pays_out_and_captures_or_gives_the_hold_back() {
    let env = Env::get();
    let user = unique("spender");
    env.fund(&user, AccountId::wallet(&user), "100.00").await;
    let iban = instrument(&user, IBAN).await;

    let (status, paid) = cash(&user, "/wallet/cash-outs", body(&iban, "30.00", "USD"), unique("key")).await;
    assert_eq!((status, paid["state"].as_str()), (StatusCode::CREATED, Some("completed")), "{paid}");
    let id = paid["id"].as_str().expect("an id");
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("70.00"));
    assert_eq!(balance(AccountId::hold(id)).await, Decimal::ZERO, "the hold was captured whole");
    assert_eq!(balance(AccountId::funding(&format!("{iban}/USD"))).await, usd("30.00"), "paid out to the account");

    // Declined (the account is closed): the hold goes back.
    let closed = instrument(&user, DECLINED_IBAN).await;
    let (status, declined) = cash(&user, "/wallet/cash-outs", body(&closed, "20.00", "USD"), unique("key")).await;
    assert_eq!(
        (status, declined["state"].as_str(), declined["reason"].as_str(), declined["decline_code"].as_str()),
        (StatusCode::CREATED, Some("declined"), Some("the account is closed"), Some("bank_declined")),
        "{declined}"
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("70.00"));
    assert_eq!(balance(AccountId::hold(declined["id"].as_str().unwrap())).await, Decimal::ZERO);

    // More than the wallet holds: refused, nothing held. Two racing for the last of it: one pays.
    let (status, problem) = cash(&user, "/wallet/cash-outs", body(&iban, "70.01", "USD"), unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::PAYMENT_REQUIRED, Some("insufficient_funds")));
    let (one, other) = tokio::join!(
        cash(&user, "/wallet/cash-outs", body(&iban, "50.00", "USD"), unique("key")),
        cash(&user, "/wallet/cash-outs", body(&iban, "50.00", "USD"), unique("key")),
    );
    let mut statuses = [one.0, other.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::PAYMENT_REQUIRED], "{one:?} {other:?}");
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("20.00"));
    assert_reconciled(&user).await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_movement_whose_answer_was_lost_is_settled_by_its_check_once() {
    let env = Env::get();
    let user = unique("patient");
    env.fund(&user, AccountId::wallet(&user), "100.00").await;
    let lagging_card = instrument(&user, LAGGING_CARD).await;
    let losing_card = instrument(&user, LOSING_CARD).await;
    let lagging_iban = instrument(&user, LAGGING_IBAN).await;
    let losing_iban = instrument(&user, LOSING_IBAN).await;
    let ask = |route: &'static str, instrument: String, amount: &'static str| {
        let user = user.clone();
        async move { cash(&user, route, body(&instrument, amount, "USD"), unique("key")).await }
    };
    // The bank took the money (or paid it out) but its answer came too late; or it never got the
    // first request. Each is pending, and owed.
    let answers = tokio::join!(
        ask("/wallet/cash-ins", lagging_card.clone(), "7.00"),
        ask("/wallet/cash-ins", losing_card, "3.00"),
        ask("/wallet/cash-outs", lagging_iban, "11.00"),
        ask("/wallet/cash-outs", losing_iban, "13.00"),
    );
    let answers = [answers.0, answers.1, answers.2, answers.3];
    for (status, movement) in &answers {
        assert_eq!((*status, movement["state"].as_str()), (StatusCode::ACCEPTED, Some("pending")), "{movement}");
    }
    // The card of a movement still owed cannot go (the lagging bank answers nothing for 12 s).
    let url = env.url(&format!("/instruments/{lagging_card}"));
    let removal = env.http().delete(url).bearer_auth(env.token(&user, &[])).send().await.unwrap();
    assert_eq!(removal.status(), StatusCode::CONFLICT);
    assert_eq!(removal.json::<Value>().await.unwrap()["code"], "instrument_in_use");

    let routes = ["/wallet/cash-ins", "/wallet/cash-ins", "/wallet/cash-outs", "/wallet/cash-outs"];
    let mut states = Vec::new();
    for ((_, movement), route) in answers.iter().zip(routes) {
        states.push(settled(&user, route, movement["id"].as_str().unwrap()).await["state"].clone());
    }
    // The late debit and the lost-then-repeated one are credited; the late payout is captured; the
    // payout the bank never received is declined for good (its status says so) and released.
    assert_eq!(states, ["completed", "completed", "completed", "declined"]);
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("99.00"), "100 + 7 + 3 - 11");
    for (account, reference) in [(LAGGING_CARD, &answers[0].1), (LOSING_CARD, &answers[1].1)] {
        let asked = bank_movements(account).await;
        assert_eq!(asked.len(), 1, "one debit, asked again under its reference: {asked:?}");
        assert_eq!(asked[0]["reference"], format!("cash-in/{}", reference["id"].as_str().unwrap()));
    }
    let removal =
        env.http().delete(env.url(&format!("/instruments/{lagging_card}"))).bearer_auth(env.token(&user, &[]));
    assert_eq!(removal.send().await.unwrap().status(), StatusCode::OK, "settled, the card may go");
    let numbers = [CARD, DECLINED_CARD, LAGGING_CARD, LOSING_CARD, IBAN, DECLINED_IBAN, LAGGING_IBAN, LOSING_IBAN];
    assert_never_in_the_clear(&numbers, "CashChecksFunction.log").await;
    assert_reconciled(&user).await;
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_rolling_limit_holds_exactly_under_concurrency() {
    let user = unique("whale");
    Env::get().fund(&user, AccountId::wallet(&user), "40000.00").await;
    let iban = instrument(&user, IBAN).await;
    // USD 25,000 per rolling 24 hours: three of 10,000 at once, and exactly two are paid.
    let go = || cash(&user, "/wallet/cash-outs", body(&iban, "10000", "USD"), unique("key"));
    let (a, b, c) = tokio::join!(go(), go(), go());
    let mut outcomes: Vec<(StatusCode, Option<&str>)> =
        [&a, &b, &c].iter().map(|(status, body)| (*status, body["code"].as_str().or(body["state"].as_str()))).collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (StatusCode::CREATED, Some("completed")),
            (StatusCode::CREATED, Some("completed")),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("cash_limit_exceeded"))
        ],
        "{a:?} {b:?} {c:?}"
    );
    assert_eq!(balance(AccountId::wallet(&user)).await, usd("20000.00"));
    let (status, problem) = go().await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("cash_limit_exceeded")));
    assert_eq!((problem["limit"].as_str(), problem["used"].as_str()), (Some("window"), Some("20000.00")), "{problem}");
    assert_reconciled(&user).await;
}
