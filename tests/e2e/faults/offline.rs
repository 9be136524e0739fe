//! Offline payments under faults: a terminal presents a payer's code. A reserve that covers it
//! settles; one that does not waits, and the payer tops it up from the link in their conversation:
//! their bank approves (`payer…`), declines (`broke…`, the payment expires) or approves but answers
//! late (`lagging…`, the settlement function asks again).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::json;
use superpay::ledger::AccountId;
use superpay::offline::DeviceKey;
use superpay::offline::payment::{PaymentState, PaymentStore};
use superpay_e2e::{Env, unique};

use super::{Attempts, Outcomes, created_by_admin, home_kinds, merchant_under_faults};
use crate::offline::{Phone, Till, presented};
use crate::purchases::balance;
use crate::topup::{bank_movements, browser, csrf_of};

/// What one payer did and was told.
#[derive(Debug, Default)]
pub struct Client {
    user: String,
    reserve: Decimal,
    pub attempts: Attempts,
    /// The payment as the terminal was told of it; `None` if the terminal gave up.
    payment: Option<String>,
    /// The top-up form's answer, when the payer sent it and was answered.
    topped_up: Option<StatusCode>,
}

/// Who pays: the payer's id prefix (their bank answers by it) and their reserve.
const PAYERS: [(&str, &str); 4] = [("payer", "20.00"), ("payer", "2.00"), ("broke", "2.00"), ("lagging", "2.00")];

/// What each payment is for, and what a short reserve's top-up adds.
const AMOUNT: &str = "6.00";
const TOP_UP: &str = "4.00";

/// Two merchants' terminals, registered by the admin (retried with its key).
pub async fn tills() -> Vec<Till> {
    let mut tills = Vec::new();
    for _ in 0..2 {
        let merchant = merchant_under_faults().await.id;
        let terminal = created_by_admin(&format!("/merchants/{merchant}/terminals"), None).await;
        tills.push(Till::created(merchant, &terminal));
    }
    tills
}

pub async fn client(till: &Till, i: usize) -> Client {
    let env = Env::get();
    let (prefix, reserve) = PAYERS[i % PAYERS.len()];
    let user = unique(prefix);
    let mut client = Client { user: user.clone(), reserve: reserve.parse().expect("an amount"), ..Client::default() };
    env.fund(&user, AccountId::reserve(&user), reserve).await;

    // The payer enrolls their phone while online.
    let (token, key, device_key) = (env.token(&user, &[]), unique("key"), DeviceKey::generate());
    let body = json!({"public_key": device_key.public_key(), "offline_limit": {"amount": "50.00", "currency": "USD"}});
    let enroll =
        || env.http().post(env.url("/devices")).bearer_auth(&token).header("idempotency-key", &key).json(&body).send();
    let Some((status, device)) = client.attempts.call(enroll).await else { return client };
    assert_eq!(status, StatusCode::CREATED, "{user} enrolling: {device}");
    let phone = Phone::enrolled(user.clone(), &device, device_key);

    // Offline, the phone shows a code; the terminal presents it, retrying with its key.
    let (key, body) = (unique("key"), presented(AMOUNT, &phone.code(1)));
    let present = || till.post("/offline/payments", &body).header("idempotency-key", &key).send();
    let Some((status, accepted)) = client.attempts.call(present).await else { return client };
    assert!(status.is_success(), "{user} paying offline: {status} {accepted}");
    client.payment = Some(accepted["id"].as_str().expect("a payment id").to_owned());
    if client.reserve >= AMOUNT.parse().expect("an amount") {
        return client;
    }

    // Short: the link comes in the payer's conversation; they open it and add what is due.
    let Some(link) = topup_link(&mut client.attempts, &token).await else { return client };
    let browser = browser();
    let Some((status, page)) = client.attempts.page(|| browser.get(&link).send()).await else { return client };
    if status != StatusCode::OK {
        // Expired before the payer came (a slow run): nothing to send.
        client.topped_up = Some(status);
        return client;
    }
    let csrf = csrf_of(&page);
    let send = || browser.post(&link).form(&[("amount", TOP_UP), ("csrf", csrf.as_str())]).send();
    client.topped_up = client.attempts.page(send).await.map(|(status, _)| status);
    client
}

/// The top-up link in the payer's conversation with the platform, once it came (`None` after a minute).
async fn topup_link(attempts: &mut Attempts, token: &str) -> Option<String> {
    let env = Env::get();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let read = || env.http().get(env.url("/conversations/platform/messages")).bearer_auth(token).send();
        if let Some((_, page)) = attempts.call(read).await
            && let Some(link) = page["messages"][0]["data"]["link"].as_str()
        {
            return Some(link.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    attempts.failed = Some("no top-up link in a minute".into());
    None
}

/// The state a payment must end in, by what its payer was told (`None`: settled or expired).
fn must_end(client: &Client) -> Option<PaymentState> {
    let amount: Decimal = AMOUNT.parse().expect("an amount");
    match client.topped_up {
        _ if client.reserve >= amount => Some(PaymentState::Settled),
        // Added, or asked of a bank that approves (late): the money comes, the payment settles.
        Some(StatusCode::OK | StatusCode::ACCEPTED) => Some(PaymentState::Settled),
        Some(StatusCode::PAYMENT_REQUIRED) => Some(PaymentState::Expired),
        _ => None,
    }
}

/// Every answer holds: each payer's one payment exists once and ended as they were told; their
/// reserve holds what it held, plus what their bank approved, less the payment if it settled.
pub async fn judge(clients: &[Client], outcomes: &mut Outcomes) {
    let env = Env::get();
    let store =
        PaymentStore::new(env.dynamodb().await, env.table("OfflinePaymentsTable"), env.table("OfflineCodesTable"));
    let payments = store.all().await.unwrap();
    let by_user: HashMap<&str, Vec<_>> = payments.iter().fold(HashMap::new(), |mut by, p| {
        by.entry(p.user.as_str()).or_insert_with(Vec::new).push(p);
        by
    });
    for client in clients {
        let theirs = by_user.get(client.user.as_str()).cloned().unwrap_or_default();
        assert!(theirs.len() <= 1, "{} has {} payments from one code: {theirs:?}", client.user, theirs.len());
        let approved: Decimal = bank_movements(&client.user)
            .await
            .iter()
            .filter(|d| d["status"] == "approved")
            .map(|d| d["amount"]["amount"].as_str().and_then(|a| a.parse::<Decimal>().ok()).expect("an amount"))
            .sum();
        let settled =
            theirs.first().filter(|p| p.state == PaymentState::Settled).map_or(Decimal::ZERO, |p| p.amount.amount());
        let reserve = balance(AccountId::reserve(&client.user)).await;
        assert_eq!(reserve, client.reserve + approved - settled, "{client:?}: the bank approved {approved}");
        let Some(id) = &client.payment else {
            *outcomes.entry(format!("offline from {}: {}", client.reserve, client.attempts.gave_up())).or_default() +=
                1;
            continue;
        };
        let payment = theirs.first().unwrap_or_else(|| panic!("{client:?}: the payment it was told of is missing"));
        assert_eq!(&payment.id, id, "{client:?}");
        if let Some(state) = must_end(client) {
            assert_eq!(payment.state, state, "{client:?}");
        }
        // The payer's home says what the payment needs, as its state does: the attention item is
        // written and removed in the same transactions as the state.
        let kinds = home_kinds(&client.user, &format!("offline:{id}")).await;
        let expected: &[&str] = match payment.state {
            PaymentState::WaitingForFunds => &["offline.waiting_for_funds"],
            PaymentState::Expired => &["offline.expired"],
            _ => &[],
        };
        assert_eq!(kinds, expected, "{client:?}: {:?}", payment.state);
        let prefix = client.user.split('-').next().unwrap_or_default();
        let form = client.topped_up.map_or_else(|| "no".into(), |s| s.as_u16().to_string());
        let outcome = format!(
            "offline {prefix} from {}: top-up form answered {form}, ended {}",
            client.reserve,
            payment.state.as_str()
        );
        *outcomes.entry(outcome).or_default() += 1;
    }
}
