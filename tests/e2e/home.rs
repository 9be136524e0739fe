//! Capability 5, the home, through the local HTTP API: what a source needs its user for is first
//! (an offline payment waiting for funds, until the top-up settles it), announcements show on
//! their platform only, dismissals hold, and the answer carries an ETag a client revalidates.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use superpay_e2e::{Env, unique};

use crate::config::{publish, publish_over};
use crate::offline::{till, until_state};
use crate::purchases::{buy, callback, funded_user, merchant, purchase};
use crate::topup::{browser, csrf_of, topup_link, waiting_payment};

/// `GET /home` as `user`, from `platform` if given, revalidating `etag` if given.
pub async fn home(user: &str, platform: Option<&str>, etag: Option<&str>) -> (StatusCode, HeaderMap, Value) {
    let env = Env::get();
    let mut request = env.http().get(env.url("/home")).bearer_auth(env.token(user, &[]));
    if let Some(platform) = platform {
        request = request.header("x-superpay-platform", platform).header("x-superpay-app-version", "9.1.0");
    }
    if let Some(etag) = etag {
        request = request.header("if-none-match", etag);
    }
    let response = request.send().await.expect("the API answers");
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap_or_default())
}

/// Every element `user`'s home shows now (the primary first, then each placement's), and what
/// it lists as theirs (`personalized`).
pub async fn shown(user: &str) -> (Vec<Value>, Value) {
    let (status, _, mut answer) = home(user, None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let placed = answer["placements"].as_object().cloned().unwrap_or_default();
    let elements = std::iter::once(answer["primary"].take())
        .chain(placed.into_values().flat_map(|p| p.as_array().cloned().unwrap_or_default()))
        .collect();
    (elements, answer["personalized"].take())
}

/// The element `id` among `elements`, if shown.
pub fn element<'a>(elements: &'a [Value], id: &str) -> Option<&'a Value> {
    elements.iter().find(|e| e["id"] == id)
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_stack_serves_the_committed_openapi_document_with_the_home_in_it() {
    let env = Env::get();
    let served: Value = env.http().get(env.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    let committed: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(served, committed);
    assert_eq!(
        served["paths"]["/home"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/HomeView"
    );
}

pub async fn dismiss(user: &str, id: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), &format!("/home/elements/{id}/dismiss"), None, None).await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payment_waiting_for_funds_is_first_until_its_top_up_settles_it() {
    let till = till().await;
    let (phone, payment) = waiting_payment(&till, "payer", "3.00", "10.00").await;
    let user = phone.user.as_str();
    // The payer's message with the link comes through the notifier: once it is there, nothing
    // more changes until the top-up (its unread count is part of the home).
    let link = topup_link(user).await;
    let (status, headers, answer) = home(user, None, None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let primary = &answer["primary"];
    assert_eq!(primary["id"], format!("offline:{payment}"), "{answer}");
    assert_eq!(
        (primary["priority_class"].as_str(), primary["kind"].as_str()),
        (Some("money_at_risk"), Some("offline.waiting_for_funds"))
    );
    assert_eq!(primary["data"]["amount_due"], json!({"amount": "7.00", "currency": "USD"}));
    assert_eq!(primary["actions"][0], json!({"id": "top_up", "url": link}));
    // Until the payment settles or expires: its link's expiry is a deadline, not an end.
    assert_eq!((primary["critical"].as_bool(), primary["deadline"].is_i64()), (Some(true), true));
    assert_eq!(
        (&primary["expires_at"], &primary["data"]["payment"]["state"]),
        (&Value::Null, &json!("waiting_for_funds"))
    );
    assert_eq!(primary["explain"]["inputs"]["payment"], payment.as_str());
    assert_eq!(answer["personalized"]["reserve"], json!({"amount": "3.00", "currency": "USD"}));
    // The phone's enrollment is a security event of the user's, below the money at risk, in
    // its own placement; the phone is listed as theirs.
    let security = &answer["placements"]["security"];
    assert_eq!(
        (security[0]["kind"].as_str(), security[0]["priority_class"].as_str()),
        (Some("security.device.enrolled"), Some("security"))
    );
    let enrolled = security[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["personalized"]["devices"][0]["device_id"], phone.device_id());
    let refresh = answer["refresh_after_seconds"].as_i64().unwrap();
    assert!((15..=300).contains(&refresh), "{refresh}");
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert!(headers["vary"].to_str().unwrap().contains("X-Superpay-Platform"), "{headers:?}");

    // Nothing changed: 304. Money the user may lose cannot be dismissed.
    assert_eq!(home(user, None, Some(&etag)).await.0, StatusCode::NOT_MODIFIED);
    let (status, problem) = dismiss(user, &format!("offline:{payment}")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("home_element_not_dismissable")));

    // The top-up settles the payment: in the very next call nothing of money is at risk, and the
    // balance card is the first of what needs nothing (after the phone's enrollment, shown its
    // week: a security event outranks the card).
    let client = browser();
    let csrf = csrf_of(&client.get(&link).send().await.unwrap().text().await.unwrap());
    let paid = client.post(&link).form(&[("amount", "7.00"), ("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(paid.status(), StatusCode::OK);
    until_state(&till, &payment, "settled").await;
    let (status, _, answer) = home(user, None, Some(&etag)).await;
    assert_eq!((status, answer["primary"]["id"].as_str()), (StatusCode::OK, Some(enrolled.as_str())), "{answer}");
    let placed: Vec<&String> = answer["placements"].as_object().unwrap().keys().collect();
    assert_eq!(placed, ["balance"], "{answer}");
    assert_eq!(answer["placements"]["balance"][0]["data"]["wallet"], answer["personalized"]["wallet"]);
    assert_eq!(answer["personalized"]["reserve"], json!({"amount": "0.00", "currency": "USD"}));
    // A security event is shown its week whatever the token says: a stolen one cannot hide it.
    let (status, problem) = dismiss(user, &enrolled).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("home_element_not_dismissable")));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_announcement_shows_on_its_platform_only_and_a_dismissal_holds() {
    let env = Env::get();
    let group = json!({
        "announcements": [{"id": "tv-launch", "title": "superpay on your TV", "body": "Pay from the couch.",
                           "url": "https://example.com/tv"}],
        "rules": [{"when": {"platform": "e2e-tv"}, "then": "tv-launch"}]});
    let current = env.get_json("/config/home-announcements", &env.user_token()).await;
    let (status, published) = match current["version"].as_u64() {
        Some(version) => publish_over("home-announcements", &group, version).await,
        None => {
            let response =
                publish("home-announcements", &group.to_string(), ("if-none-match", "*"), &unique("key")).await;
            (response.status(), response.json().await.unwrap_or_default())
        }
    };
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let mut unknown = group.clone();
    unknown["default"] = json!("nothing");
    let version = published["version"].as_u64().unwrap();
    let (status, refused) = publish_over("home-announcements", &unknown, version).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("home_announcements_invalid"))
    );

    let user = unique("home-user");
    let (_, tv_headers, on_tv) = home(&user, Some("e2e-tv"), None).await;
    assert_eq!(on_tv["primary"]["id"], "announcement:tv-launch", "{on_tv}");
    assert_eq!(on_tv["primary"]["explain"]["inputs"], json!({"app_version": "9.1.0", "platform": "e2e-tv"}));
    let (_, phone_headers, on_phone) = home(&user, Some("android"), None).await;
    assert_eq!((on_phone["primary"]["id"].as_str(), &on_phone["placements"]), (Some("balance"), &json!({})));
    assert_ne!(tv_headers["etag"], phone_headers["etag"], "the ETag varies with the platform");

    // Dismissed (twice: the same answer), it is gone on the next call; an unknown id is not.
    for _ in 0..2 {
        assert_eq!(
            dismiss(&user, "announcement:tv-launch").await,
            (StatusCode::OK, json!({"id": "announcement:tv-launch", "dismissed": true}))
        );
    }
    assert_eq!(home(&user, Some("e2e-tv"), None).await.2["primary"]["id"], "balance");
    assert_eq!(dismiss(&user, "announcement:never-published").await.0, StatusCode::NOT_FOUND);
    let (status, problem) = dismiss(&user, "offline:p_nothing").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_home_element")));
    assert_eq!(dismiss(&user, "balance").await.0, StatusCode::CONFLICT);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_hold_awaiting_its_merchant_shows_until_settled_then_a_decline_says_the_money_is_back() {
    let shop = merchant().await;
    let user = funded_user("50.00").await;
    let (status, order) = buy(&user, &purchase(&shop, "pending-tea", "30.00"), &unique("key")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{order}");
    let id = order["id"].as_str().unwrap();
    let (_, _, answer) = home(&user, None, None).await;
    let primary = &answer["primary"];
    assert_eq!(
        (primary["id"].as_str(), primary["kind"].as_str()),
        (Some(format!("order:{id}").as_str()), Some("purchase.awaiting_merchant"))
    );
    assert_eq!((primary["critical"].as_bool(), primary["deadline"].is_i64()), (Some(true), true));
    assert_eq!(primary["actions"][0], json!({"id": "view", "method": "GET", "path": format!("/purchases/{id}")}));
    assert_eq!(answer["personalized"]["wallet"]["amount"], "20.00", "the hold is out of the wallet");

    // The merchant declines: in the next call the element says the money is back.
    let identity = |s: &superpay::crypto::Signature| s.clone();
    assert_eq!(callback(&shop, id, "decline", identity).await.0, StatusCode::OK);
    let (_, _, answer) = home(&user, None, None).await;
    assert_eq!(
        (answer["primary"]["kind"].as_str(), answer["primary"]["expires_at"].is_i64()),
        (Some("purchase.declined"), true)
    );
    assert_eq!(answer["personalized"]["wallet"]["amount"], "50.00");

    // A confirmed order needs nothing of its buyer: its element goes with the settlement.
    let (_, paid) = buy(&user, &purchase(&shop, "pending-tea", "5.00"), &unique("key")).await;
    let paid = paid["id"].as_str().unwrap();
    assert_eq!(home(&user, None, None).await.2["primary"]["id"], format!("order:{paid}"), "held, it comes first");
    assert_eq!(callback(&shop, paid, "confirm", identity).await.0, StatusCode::OK);
    let (elements, _) = shown(&user).await;
    assert!(element(&elements, &format!("order:{paid}")).is_none(), "{elements:?}");
}
