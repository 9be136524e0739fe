//! Cash-ins and cash-outs under faults: a user adds a card and a bank account and moves money in
//! from one and out to the other; they link the card to a partner platform, which charges it. Their
//! bank (the simulator, by the numbers' last four digits) approves, declines (`0002`), answers too
//! late (`0259`) or loses the first request (`0404`); the checks settle what the requests could not.

use std::collections::HashMap;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::instrument::cash::store::CashStore;
use superpay::instrument::cash::{CashState, Movement};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use super::{Attempts, Outcomes, created_by_admin, merchant_under_faults};
use crate::purchases::{TestMerchant, balance, installed};
use crate::topup::bank_movements;

/// Each client's bank: a card and a bank account whose last four digits tell the simulated bank
/// how to answer.
const BANKS: [(&str, &str, &str); 4] = [
    ("approves", "4242424242424242", "DE23370400440532017777"),
    ("declines", "4000000000000002", "DE40370400440532010002"),
    ("answers late", "4000000000000259", "DE85370400440532010259"),
    ("loses the first request", "4000000000040404", "DE50370400440532010404"),
];

const WALLET: &str = "50.00";
const CASH_IN: &str = "10.00";
const CASH_OUT: &str = "15.00";
const CHARGE: &str = "4.00";
const REFUND: &str = "1.50";

/// The partner platform the users link their cards to (paid into a merchant of its own, whose id it
/// carries here), its key given to the simulator, which plays it.
pub async fn partner() -> TestMerchant {
    let shop = merchant_under_faults().await;
    let url = format!("{}/p/{}", Env::get().stack.merchant_simulator_url, unique("b"));
    let body = json!({"name": "Faulty B", "callback_url": url, "merchant_id": shop.id});
    let mut created = created_by_admin("/partners", Some(&body)).await;
    // A replayed registration leaves the key out (it is shown once): a rotation shows a new one.
    let id = created["id"].as_str().expect("a partner id").to_owned();
    while created["secret"].as_str().is_none() {
        let rotated = created_by_admin(&format!("/partners/{id}/keys"), Some(&json!({}))).await;
        created = json!({"id": id, "key_id": rotated["key_id"], "secret": rotated["secret"]});
    }
    let mut partner = installed(&created).await;
    partner.id = shop.id;
    partner
}

/// What one user did and was told.
#[derive(Debug, Default)]
pub struct Client {
    user: String,
    bank: usize,
    pub attempts: Attempts,
    /// The cash-in's and the cash-out's answers, when they came.
    cash_in: Option<(StatusCode, Value)>,
    cash_out: Option<(StatusCode, Value)>,
    /// The partner's charge of the linked card, and its refund of part of it, when answered.
    charge: Option<(StatusCode, Value)>,
    refund: Option<(StatusCode, Value)>,
}

/// `POST path` with `body` as `user`, tried as a client would with one Idempotency-Key.
async fn post(attempts: &mut Attempts, user: &str, path: &str, body: &Value) -> Option<(StatusCode, Value)> {
    let env = Env::get();
    let (token, key) = (env.token(user, &[]), unique("key"));
    let call = || env.http().post(env.url(path)).bearer_auth(&token).header("idempotency-key", &key).json(body).send();
    attempts.call(call).await
}

/// A signed call of `partner`'s, tried as a client would (a fresh signature each try).
async fn signed(
    attempts: &mut Attempts,
    partner: &TestMerchant,
    method: &str,
    path: &str,
    body: &Value,
) -> Option<(StatusCode, Value)> {
    let env = Env::get();
    let (key, text) = (unique("key"), if body.is_null() { String::new() } else { body.to_string() });
    let call = || {
        let request = env.http().request(method.parse().expect("a method"), env.url(path));
        env.signed_as(method, request, &partner.master, &partner.key_id, path, &text)
            .header("idempotency-key", &key)
            .send()
    };
    attempts.call(call).await
}

pub async fn client(partner: &TestMerchant, i: usize) -> Client {
    let env = Env::get();
    let bank = i % BANKS.len();
    let (_, card, iban) = BANKS[bank];
    let user = unique("casher");
    let mut client = Client { user: user.clone(), bank, ..Client::default() };
    env.fund(&user, AccountId::wallet(&user), WALLET).await;
    let card = json!({"kind": "card", "number": card, "expiry_month": 12, "expiry_year": 2030, "holder": "A B"});
    let iban = json!({"kind": "bank_account", "iban": iban, "holder": "A B"});
    let mut ids = Vec::new();
    for instrument in [card, iban] {
        let Some((status, added)) = post(&mut client.attempts, &user, "/instruments", &instrument).await else {
            return client;
        };
        assert_eq!(status, StatusCode::CREATED, "{user} adding an instrument: {added}");
        ids.push(added["id"].as_str().expect("an id").to_owned());
    }
    let movement = |instrument: &str, amount: &str| json!({"instrument_id": instrument, "amount": {"amount": amount, "currency": "USD"}});
    client.cash_in = post(&mut client.attempts, &user, "/wallet/cash-ins", &movement(&ids[0], CASH_IN)).await;
    client.cash_out = post(&mut client.attempts, &user, "/wallet/cash-outs", &movement(&ids[1], CASH_OUT)).await;

    // The user links the card to the partner (a code from B's simulator), which reads its token and
    // charges it.
    let b_user = unique("b");
    let code: Value = env
        .http()
        .post(format!("{}/_sim/codes", env.stack.merchant_simulator_url))
        .json(&json!({"key_id": partner.key_id, "partner_user": b_user, "user": user, "ttl": 300}))
        .send()
        .await
        .expect("the simulator answers")
        .json()
        .await
        .expect("a code");
    let caps =
        json!({"per_charge": {"amount": CHARGE, "currency": "USD"}, "per_day": {"amount": "20.00", "currency": "USD"}});
    let linking = json!({"code": code.get("code"), "instrument_ids": [ids[0]], "grant": {"charge": caps}});
    let Some((status, linked)) = post(&mut client.attempts, &user, "/links", &linking).await else { return client };
    assert_eq!(status, StatusCode::CREATED, "{user} linking: {linked}");
    let path = format!("/partner/users/{b_user}/link");
    let Some((_, link)) = signed(&mut client.attempts, partner, "GET", &path, &Value::Null).await else {
        return client;
    };
    let token = link["instruments"][0]["token"].as_str().expect("a token").to_owned();
    let body = json!({"token": token, "amount": {"amount": CHARGE, "currency": "USD"}});
    client.charge = signed(&mut client.attempts, partner, "POST", "/partner/charges", &body).await;
    // B pays part of a completed charge back.
    let completed = client.charge.as_ref().filter(|(_, c)| c["state"] == "completed").map(|(_, c)| c["id"].clone());
    if let Some(id) = completed.as_ref().and_then(Value::as_str) {
        let path = format!("/partner/charges/{id}/refunds");
        let body = json!({"amount": {"amount": REFUND, "currency": "USD"}});
        client.refund = signed(&mut client.attempts, partner, "POST", &path, &body).await;
    }
    client
}

/// Whether the bank's own record says it moved the money of `movement`.
async fn bank_moved(number: &str, movement: &Movement) -> bool {
    let asked = bank_movements(number).await;
    let ours: Vec<&Value> = asked.iter().filter(|m| m["reference"] == movement.reference()).collect();
    assert!(ours.len() <= 1, "the bank moved {} twice: {ours:?}", movement.id);
    ours.first().is_some_and(|m| m["status"] == "approved")
}

/// Every answer holds: a movement a client was told of exists and ended as it was told (a pending
/// one, as its bank decided); each ended as the bank's own record says it moved money; and each
/// wallet holds what it was funded with, plus the cash-ins the bank approved, less the payouts it made.
pub async fn judge(clients: &[Client], partner: &TestMerchant, outcomes: &mut Outcomes) {
    let env = Env::get();
    let movements = CashStore::new(env.dynamodb().await, env.table("CashTable")).all().await.unwrap();
    let by_user: HashMap<&str, Vec<&Movement>> = movements.iter().fold(HashMap::new(), |mut by, m| {
        by.entry(m.user.as_str()).or_default().push(m);
        by
    });
    let mut charged = Decimal::ZERO;
    for client in clients {
        let (name, card, iban) = BANKS[client.bank];
        let theirs = by_user.get(client.user.as_str()).cloned().unwrap_or_default();
        let mut wallet: Decimal = WALLET.parse().expect("an amount");
        for movement in &theirs {
            let number = if movement.id.starts_with("co_") { iban } else { card };
            let moved = bank_moved(number, movement).await;
            assert_eq!(movement.state == CashState::Completed, moved, "{client:?}: {movement:?}");
            match &movement.id[..3] {
                "ci_" if moved => wallet += movement.amount.amount(),
                "co_" if moved => wallet -= movement.amount.amount(),
                "ch_" if moved => charged += movement.amount.amount(),
                "rf_" if moved => charged -= movement.amount.amount(),
                _ => {}
            }
        }
        assert_eq!(balance(AccountId::wallet(&client.user)).await, wallet, "{client:?}: {theirs:?}");
        let told =
            [(&client.cash_in, "ci_"), (&client.cash_out, "co_"), (&client.charge, "ch_"), (&client.refund, "rf_")];
        for (told, prefix) in told {
            if prefix == "rf_"
                && told.is_none()
                && client.charge.as_ref().is_none_or(|(_, c)| c["state"] != "completed")
            {
                continue;
            }
            let outcome = match told {
                Some((status, body)) if status.is_success() => {
                    let id = body["id"].as_str().expect("a movement id");
                    assert!(id.starts_with(prefix), "{body}");
                    let movement =
                        theirs.iter().find(|m| m.id == id).unwrap_or_else(|| panic!("{client:?}: {id} is missing"));
                    if *status == StatusCode::CREATED {
                        assert_eq!(
                            body["state"],
                            movement.state.as_str(),
                            "{client:?}: told {body}, ended {movement:?}"
                        );
                    }
                    format!("{} answered {status}, ended {}", body["direction"], movement.state.as_str())
                }
                Some((status, body)) => format!("{prefix} refused {status} {}", body["code"]),
                None => format!("{prefix} {}", client.attempts.gave_up()),
            };
            *outcomes.entry(format!("cash with a bank that {name}: {outcome}")).or_default() += 1;
        }
    }
    // The partner's account holds exactly the charges the bank approved, less the refunds it paid.
    assert_eq!(balance(AccountId::merchant(&partner.id)).await, charged, "the partner was paid what the bank took");
}
