//! Mini-app charges under faults: a user verifies the app (a session) and buys in it: the exact
//! approved price (charged), a price the server does not ask (refused, nothing moves), or an item
//! whose server refuses our first telling of the outcome (charged, told again).

use std::collections::HashMap;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::Value;
use superpay::ledger::AccountId;
use superpay::miniapp::store::RequestStore;
use superpay_e2e::{Env, unique};

use super::{Attempts, Outcomes, created_by_admin, merchant_under_faults};
use crate::miniapps::{buy, grant, registration};
use crate::purchases::{balance, funded_user};

/// What one mini-app user did and was told.
#[derive(Debug, Default)]
pub struct Client {
    user: String,
    /// The item asked for and the amount the user approved.
    item: &'static str,
    approved: &'static str,
    pub attempts: Attempts,
    /// The request's id and its answer (`charged` or the refusal's code); `None` if the client
    /// gave up.
    told: Option<(String, String)>,
}

/// What the users buy: (item, approved amount, what the answer must be).
const BUYS: [(&str, &str, &str); 4] = [
    ("jasmine-tea", "4.50", "charged"),
    ("jasmine-tea", "4.50", "charged"),
    ("jasmine-tea", "4.00", "amount_mismatch"),
    ("flaky-oolong", "6.00", "charged"),
];

/// What a user's wallet holds before.
const FUNDS: Decimal = Decimal::from_parts(2000, 0, 0, false, 2);

/// Two apps of two merchants, registered by the admin (retried with its key); their server (the
/// simulator) holds their keys.
pub async fn apps() -> Vec<String> {
    let mut apps = Vec::new();
    for _ in 0..2 {
        let owner = merchant_under_faults().await;
        let (body, _) = registration(&owner.id, &["wallet.charge"]);
        let created = created_by_admin("/miniapps", Some(&body)).await;
        grant(&created).await;
        apps.push(created["id"].as_str().expect("an app id").to_owned());
    }
    apps
}

pub async fn client(app: &str, i: usize) -> Client {
    let env = Env::get();
    let (item, approved, expected) = BUYS[i % BUYS.len()];
    let user = funded_user(&FUNDS.to_string()).await;
    let mut client = Client { user: user.clone(), item, approved, ..Client::default() };
    let token = env.token(&user, &[]);
    let post = |path: String, body: Option<Value>, key: String| {
        let request = env.http().post(env.url(&path)).bearer_auth(&token).header("idempotency-key", key);
        match body {
            Some(body) => request.json(&body).send(),
            None => request.send(),
        }
    };
    let key = unique("key");
    let verify = || post(format!("/miniapps/{app}/verify"), None, key.clone());
    let Some((status, verified)) = client.attempts.call(verify).await else { return client };
    assert_eq!(status, StatusCode::CREATED, "{user} verifying {app}: {verified}");
    let session = verified["session"]["id"].as_str().expect("a session").to_owned();
    let (key, body) = (unique("key"), buy(&session, item, Some(approved)));
    let request = || post(format!("/miniapps/{app}/requests"), Some(body.clone()), key.clone());
    let Some((status, answer)) = client.attempts.call(request).await else { return client };
    let said = answer["outcome"].as_str().or(answer["code"].as_str()).unwrap_or_default().to_owned();
    assert_eq!(said, expected, "{user} buying {item} for {approved}: {status} {answer}");
    client.told = Some((answer["request_id"].as_str().expect("a request id").to_owned(), said));
    client
}

/// Every answer holds: each user's one request is recorded as they were told, their wallet lost
/// exactly what it charged, and the app's server was told its outcome (once: it keeps event ids).
pub async fn judge(clients: &[Client], outcomes: &mut Outcomes) {
    let env = Env::get();
    let requests = RequestStore::new(env.dynamodb().await, env.table("MiniAppRequestsTable")).all().await.unwrap();
    let by_user: HashMap<&str, Vec<_>> = requests.iter().fold(HashMap::new(), |mut by, r| {
        by.entry(r.user.as_str()).or_insert_with(Vec::new).push(r);
        by
    });
    for client in clients {
        let theirs = by_user.get(client.user.as_str()).cloned().unwrap_or_default();
        assert!(theirs.len() <= 1, "{} has {} requests from one buy: {theirs:?}", client.user, theirs.len());
        let charged = theirs.first().and_then(|r| r.outcome.charged()).map_or(Decimal::ZERO, |m| m.amount());
        assert_eq!(balance(AccountId::wallet(&client.user)).await, FUNDS - charged, "{client:?}");
        if let Some(request) = theirs.first() {
            let url = format!("{}/_sim/requests/{}", env.stack.miniapp_simulator_url, request.id);
            let seen: Value = env.http().get(url).send().await.unwrap().json().await.unwrap_or_default();
            let told_server: Vec<&str> =
                seen["outcomes"].as_array().into_iter().flatten().filter_map(|o| o["outcome"].as_str()).collect();
            assert_eq!(told_server, [request.summary()], "the server of {request:?}: {seen}");
        }
        let Some((id, said)) = &client.told else {
            *outcomes.entry(format!("mini-app {}: {}", client.item, client.attempts.gave_up())).or_default() += 1;
            continue;
        };
        let request = theirs.first().unwrap_or_else(|| panic!("{client:?}: the request it was told of is missing"));
        assert_eq!(&request.id, id, "{client:?}");
        let recorded = request.outcome.refusal().map_or(request.summary(), |code| code.code());
        assert_eq!(recorded, said, "{client:?}: recorded {request:?}");
        *outcomes.entry(format!("mini-app {} for {}: told {said}", client.item, client.approved)).or_default() += 1;
    }
}
