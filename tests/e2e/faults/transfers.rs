//! Signed transfer instructions under faults: a user asks the platform for an instruction and
//! sends it to the transfer side, a few twice at once under two keys; on a two-phase listing the
//! provider (signed by its transfer signer) posts part of the hold, voids it, or leaves it to time
//! out; and for some completed ones refunds part. One client in four pays through a payment
//! session (capability 1): it confirms the session with its PIN from two loading processes at once,
//! every other one of those cancelling at the same moment (which withdraws a consent given while
//! nothing moved), and sends the instruction to the transfer side whatever it was told: only a
//! session confirmed and not cancelled has its instruction carried out.

use std::collections::HashMap;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::crypto::Key;
use superpay::instruction::operation::{OperationState, OperationStore};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use super::{Attempts, Outcomes, created_by_admin, home_kinds, merchant_under_faults};
use crate::purchases::{TestMerchant, balance, funded_user};

/// What a user's wallet holds before.
const FUNDS: Decimal = Decimal::from_parts(5000, 0, 0, false, 2);
/// A listing's price, and what a provider posts of a hold or refunds of a payment.
const PRICE: &str = "12.00";
const PART: &str = "5.00";

/// A provider: its merchant, its transfer signer, and its two listings (one-phase, two-phase).
pub struct Provider {
    signer: TestMerchant,
    listings: [String; 2],
}

/// What one client did and was told.
#[derive(Debug, Default)]
pub struct Client {
    user: String,
    two_phase: bool,
    pub attempts: Attempts,
    /// The operation and the state it was last told (by the user's call or the provider's).
    told: Option<(String, String)>,
    /// What the provider did after (`post`, `void`, `refund`, or nothing: a hold left to expire),
    /// and whether it was answered 2xx.
    followed: Option<(&'static str, bool)>,
    /// Paid through a payment session: its id, and what its confirmations and cancel were told.
    session: Option<(String, Vec<String>)>,
}

const PIN: &str = "482913";

/// The state a session's answer says, or its refusal's code.
fn said(answer: &Value) -> String {
    answer["state"].as_str().or(answer["code"].as_str()).unwrap_or_default().to_owned()
}

/// A signed call of `signer`'s (signed afresh on every try: each signature's nonce is spent).
fn signed(signer: &TestMerchant, method: &str, path: &str, body: &str, key: Option<&str>) -> reqwest::RequestBuilder {
    let env = Env::get();
    let request = env.signed_as(
        method,
        env.http().request(method.parse().unwrap(), env.url(path)),
        &signer.master,
        &signer.key_id,
        path,
        body,
    );
    let request = request.header("content-type", "application/json");
    match key {
        Some(key) => request.header("idempotency-key", key),
        None => request,
    }
}

/// The fault run's stack is not seeded: the admin publishes the device co-signature thresholds
/// (above every amount here, so no device is asked for), retried with its key.
async fn thresholds() {
    let env = Env::get();
    let (key, body) = (unique("key"), json!({"device_signature_above": {"USD": "200.00"}}));
    let mut attempts = Attempts::default();
    let published = attempts
        .call(|| {
            let request = env.http().post(env.url("/config/transfer-limits/versions")).bearer_auth(env.admin_token());
            request.header("idempotency-key", &key).header("if-none-match", "*").json(&body).send()
        })
        .await;
    assert!(
        matches!(published, Some((StatusCode::CREATED, _))),
        "publishing transfer-limits: {published:?} {attempts:?}"
    );
}

/// Two providers, each with a transfer signer (registered by the admin) and a one-phase and a
/// two-phase listing published to both sides (retried until answered).
pub async fn providers() -> Vec<Provider> {
    thresholds().await;
    let mut providers = Vec::new();
    for _ in 0..2 {
        let shop = merchant_under_faults().await;
        let created =
            created_by_admin(&format!("/merchants/{}/terminals", shop.id), Some(&json!({"kind": "transfer"}))).await;
        let signer = TestMerchant {
            id: shop.id.clone(),
            key_id: created["key_id"].as_str().expect("a key id").to_owned(),
            master: Key::from_base64(created["secret"].as_str().expect("its secret")).expect("a key"),
        };
        let listings = [format!("{}.{}", shop.id, unique("room")), format!("{}.{}", shop.id, unique("hold"))];
        for (listing, two_phase) in listings.iter().zip([false, true]) {
            let body = json!({"listing_version": 1, "title": "Room", "price": {"amount": PRICE, "currency": "USD"},
                              "two_phase": two_phase})
            .to_string();
            for (side, key) in [("platform", &shop), ("transfer", &signer)] {
                let path = format!("/{side}/listings/{listing}");
                let mut attempts = Attempts::default();
                let answered = attempts.call(|| signed(key, "PUT", &path, &body, None).send()).await;
                assert!(
                    matches!(answered, Some((StatusCode::CREATED | StatusCode::OK, _))),
                    "publishing {listing} on {side}: {answered:?} {attempts:?}"
                );
            }
        }
        providers.push(Provider { signer, listings });
    }
    providers
}

pub async fn client(provider: &Provider, i: usize) -> Client {
    let env = Env::get();
    let two_phase = i.is_multiple_of(2);
    let user = funded_user(&FUNDS.to_string()).await;
    let mut client = Client { user: user.clone(), two_phase, ..Client::default() };
    let token = env.token(&user, &[]);
    let post = |path: &'static str, body: Value, key: String| {
        env.http().post(env.url(path)).bearer_auth(&token).header("idempotency-key", key).json(&body).send()
    };
    let asked = json!({"listing_id": provider.listings[usize::from(two_phase)], "quantity": 1});
    let key = unique("key");
    let Some((status, mut instruction)) =
        client.attempts.call(|| post("/platform/instructions", asked.clone(), key.clone())).await
    else {
        return client;
    };
    assert_eq!(status, StatusCode::CREATED, "{user} asking for an instruction: {instruction}");
    if i % 4 == 3 {
        let Some(session) = consent(&mut client, &instruction, i).await else { return client };
        client.session = Some(session);
    }
    instruction["confirmation"] = json!({"display_hash": instruction["instruction"]["display_hash"]});
    // Every fifth client's app sends it twice at once, under two keys: one operation either way.
    let sends = if i.is_multiple_of(5) { 2 } else { 1 };
    let keys: Vec<String> = (0..sends).map(|_| unique("key")).collect();
    let sent = keys.iter().map(|key| async {
        let mut attempts = Attempts::default();
        let answered = attempts.call(|| post("/transfer/operations", instruction.clone(), key.clone())).await;
        (attempts, answered)
    });
    let mut answers = Vec::new();
    for (attempts, answered) in futures_util::future::join_all(sent).await {
        client.attempts.tries += attempts.tries;
        client.attempts.failed = attempts.failed.or(client.attempts.failed.take());
        // A session that was cancelled (or whose confirmations all gave up) keeps it from moving.
        let waits = |refusal: &Value| {
            let code = refusal["code"].as_str().unwrap_or_default();
            let refusals = ["payment_session_not_confirmed", "payment_session_closed", "payment_session_expired"];
            client.session.is_some() && refusals.contains(&code)
        };
        if let Some((status, refusal)) = answered.as_ref().filter(|(status, r)| !status.is_success() && !waits(r)) {
            panic!("{user} sending its instruction: {status} {refusal}");
        }
        answers.push(answered);
    }
    let Some((_, operation)) = answers.into_iter().flatten().find(|(status, _)| status.is_success()) else {
        return client;
    };
    let id = operation["id"].as_str().expect("an operation id").to_owned();
    let state = operation["state"].as_str().unwrap_or_default().to_owned();
    assert_eq!(state, if two_phase { "held" } else { "completed" }, "{user}: {operation}");
    client.told = Some((id.clone(), state));
    // The provider's part: post or void a hold (or leave it to expire), refund part of a payment.
    let (action, body, key) = match (two_phase, i % 3) {
        (true, 0) => ("post", json!({"amount": {"amount": PART, "currency": "USD"}}), None),
        (true, 1) => ("void", json!({}), None),
        (true, _) => return client,
        (false, 0) => ("refunds", json!({"amount": {"amount": PART, "currency": "USD"}}), Some(unique("key"))),
        (false, _) => return client,
    };
    let path = format!("/transfer/operations/{id}/{action}");
    let body = body.to_string();
    let mut attempts = Attempts::default();
    let answered = attempts.call(|| signed(&provider.signer, "POST", &path, &body, key.as_deref()).send()).await;
    client.attempts.tries += attempts.tries;
    match answered {
        Some((status, answer)) => {
            assert!(status.is_success(), "{user}'s provider {action}: {status} {answer}");
            let after = if action == "refunds" { &answer["operation"] } else { &answer };
            client.told = Some((id, after["state"].as_str().unwrap_or_default().to_owned()));
            client.followed = Some((action, true));
        }
        None => client.followed = Some((action, false)),
    }
    client
}

/// The payment session of `client`'s `instruction` (as the platform answered it), confirmed with
/// the PIN from two processes at once, every other one cancelled at the same moment: its id and
/// what each was told; `None` when the session could not be made.
async fn consent(client: &mut Client, instruction: &Value, i: usize) -> Option<(String, Vec<String>)> {
    let env = Env::get();
    let token = env.token(&client.user, &[]);
    let set = || env.http().put(env.url("/payment-pin")).bearer_auth(&token).json(&json!({"pin": PIN})).send();
    let (_, answer) = client.attempts.call(set).await?;
    assert!(["", "payment_pin_already_set"].contains(&answer["code"].as_str().unwrap_or_default()), "{answer}");
    let body = json!({
        "pay": {"kind": "transfer_instruction", "instruction": instruction["instruction"],
                "signature": instruction["signature"]},
        "client": {"platform": "ios", "payment_app": {"installed": true, "version": "9.0.0"}, "network": "wifi",
                   "free_memory_mb": 4096}});
    let key = unique("key");
    let start = || {
        let request = env.http().post(env.url("/payment-sessions")).bearer_auth(&token);
        request.header("idempotency-key", &key).json(&body).send()
    };
    let (status, session) = client.attempts.call(start).await?;
    assert_eq!(status, StatusCode::CREATED, "{}: {session}", client.user);
    let id = session["id"].as_str().expect("a session id").to_owned();
    let post = |path: String, body: Value| env.http().post(env.url(&path)).bearer_auth(&token).json(&body).send();
    let call = |path: String, body: Value, cancel: bool| async move {
        let mut attempts = Attempts::default();
        let told = attempts.call(|| post(path.clone(), body.clone())).await;
        // A cancel answers the session as it then is, or its refusal.
        let told = told.map(|(_, answer)| said(answer.get("session").filter(|_| cancel).unwrap_or(&answer)));
        told.filter(|t| !t.is_empty()).unwrap_or_else(|| attempts.gave_up())
    };
    let confirm =
        |process: &str| call(format!("/payment-sessions/{id}/confirm"), json!({"process": process, "pin": PIN}), false);
    let cancel = async {
        match i % 8 == 7 {
            true => Some(
                call(
                    format!("/payment-sessions/{id}/events"),
                    json!({"event": "cancelled", "process": "foreground_app"}),
                    true,
                )
                .await,
            ),
            false => None,
        }
    };
    let (by_app, by_sheet, cancelled) = tokio::join!(confirm("foreground_app"), confirm("simulated_sheet"), cancel);
    Some((id, [by_app, by_sheet].into_iter().chain(cancelled).collect()))
}

/// Every answer holds: each user has at most one operation, in the state they or their provider
/// were last told (a hold left alone has been released since), and their wallet lost exactly
/// what reached the provider less its refunds.
pub async fn judge(clients: &[Client], outcomes: &mut Outcomes) {
    let env = Env::get();
    let operations =
        OperationStore::new(env.dynamodb().await, env.table("TransferOperationsTable")).all().await.unwrap();
    let by_payer: HashMap<&str, Vec<_>> = operations.iter().fold(HashMap::new(), |mut by, o| {
        by.entry(o.payer.as_str()).or_insert_with(Vec::new).push(o);
        by
    });
    for client in clients {
        let theirs = by_payer.get(client.user.as_str()).cloned().unwrap_or_default();
        assert!(theirs.len() <= 1, "{} has {} operations from one instruction: {theirs:?}", client.user, theirs.len());
        let kept = theirs.first().map_or(Decimal::ZERO, |o| o.paid - o.refunded);
        assert_eq!(balance(AccountId::wallet(&client.user)).await, FUNDS - kept, "{client:?}: {theirs:?}");
        if let Some((session, told)) = &client.session {
            // The session is the truth of it: confirmed for this instruction, or no operation.
            let (url, token) = (env.url(&format!("/payment-sessions/{session}")), env.token(&client.user, &[]));
            let read = Attempts::default().call(|| env.http().get(&url).bearer_auth(&token).send()).await;
            let (_, read) = read.unwrap_or_else(|| panic!("{client:?}: the session could not be read"));
            let confirmed = read["confirmed"]["payment_id"].as_str();
            match theirs.first() {
                Some(operation) => {
                    assert_eq!(confirmed, Some(operation.id.as_str()), "{client:?}: {read}");
                    assert_eq!(read["payment"]["state"].as_str(), Some(operation.state.as_str()), "{read}");
                }
                // Confirmed and not carried out only if the client gave up presenting it.
                None => assert!(confirmed.is_none() || client.told.is_none(), "{client:?}: {read}"),
            }
            if told.contains(&"cancelled".to_owned()) {
                assert!(theirs.is_empty(), "{client:?}: cancelled, yet {theirs:?}");
            }
            let ended = read["state"].as_str().unwrap_or_default();
            *outcomes.entry(format!("transfer session: told {told:?}, now {ended}")).or_default() += 1;
        }
        let Some((id, told)) = &client.told else {
            *outcomes.entry(format!("transfer: {}", client.attempts.gave_up())).or_default() += 1;
            continue;
        };
        let operation = theirs.first().unwrap_or_else(|| panic!("{client:?}: the operation it was told of is missing"));
        assert_eq!(&operation.id, id, "{client:?}");
        let now = operation.state.as_str();
        // The payer's home says what the operation holds, as its state does (written together).
        let expected: &[&str] = match now {
            "held" => &["transfer.held"],
            "voided" => &["transfer.voided"],
            "released" => &["transfer.released"],
            _ => &[],
        };
        assert_eq!(home_kinds(&client.user, &format!("transfer:{id}")).await, expected, "{client:?}");
        match (told.as_str(), client.followed) {
            // Told held and nothing (answered) since: the provider's unanswered call may have
            // settled it, or it expired.
            ("held", None | Some((_, false))) => {
                assert_ne!(operation.state, OperationState::Held, "{client:?}: {operation:?}")
            }
            ("completed", Some(("refunds", true))) => {
                assert_eq!(operation.refunded, Decimal::new(500, 2), "{operation:?}")
            }
            ("completed", Some(("refunds", false))) => {}
            _ => assert_eq!(now, told, "{client:?}: {operation:?}"),
        }
        let phase = if client.two_phase { "two-phase" } else { "one-phase" };
        let followed = client.followed.map_or(String::new(), |(action, answered)| {
            format!(", then {action} {}", if answered { "answered" } else { "given up on" })
        });
        *outcomes.entry(format!("transfer {phase}: told {told}{followed}, now {now}")).or_default() += 1;
    }
}
