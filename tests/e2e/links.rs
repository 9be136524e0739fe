//! Capability 9's identity linking through the local stack, the merchant simulator playing the
//! partner platform B: B issues a link code for its user, the user links it to instruments with a
//! grant, B is told by signed webhook and reads and charges within the caps (exact under
//! concurrency); unlinking stops it at once; every bad code, cap or token is refused and changes
//! nothing.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::purchases::{TestMerchant, balance, installed, merchant};

/// A partner platform registered by the admin, paid into a new merchant's account, its key given
/// to the simulator (which plays it).
async fn partner() -> (TestMerchant, String) {
    let env = Env::get();
    let shop = merchant().await;
    let url = format!("{}/p/{}", env.stack.merchant_simulator_url, unique("b"));
    let body = json!({"name": "Platform B", "callback_url": url, "merchant_id": shop.id});
    let (status, registered) = env.admin_post("/partners", &body, Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    (installed(&registered).await, shop.id)
}

/// A link code B issues for its user `partner_user`, for our `user`.
async fn code(partner: &TestMerchant, partner_user: &str, user: &str, ttl: i64) -> String {
    let env = Env::get();
    let answer: Value = env
        .http()
        .post(format!("{}/_sim/codes", env.stack.merchant_simulator_url))
        .json(&json!({"key_id": partner.key_id, "partner_user": partner_user, "user": user, "ttl": ttl}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["code"].as_str().expect("a code").to_owned()
}

async fn card(user: &str, number: &str) -> String {
    let env = Env::get();
    let body = json!({"kind": "card", "number": number, "expiry_month": 12, "expiry_year": 2030, "holder": "Ada"});
    let (status, added) = env.post_json(&env.token(user, &[]), "/instruments", Some(&body), Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    added["id"].as_str().unwrap().to_owned()
}

fn usd(amount: &str) -> Value {
    json!({"amount": amount, "currency": "USD"})
}

async fn link(user: &str, code: &str, instruments: &[&str], grant: Value) -> (StatusCode, Value) {
    let env = Env::get();
    let body = json!({"code": code, "instrument_ids": instruments, "grant": grant});
    env.post_json(&env.token(user, &[]), "/links", Some(&body), Some(&unique("key"))).await
}

/// A signed call of `partner`'s: the status and JSON answer.
async fn call(
    partner: &TestMerchant,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let env = Env::get();
    let text = body.map(Value::to_string).unwrap_or_default();
    let request = env.http().request(method.parse().unwrap(), env.url(path));
    let mut request = env.signed_as(method, request, &partner.master, &partner.key_id, path, &text);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

async fn charge(partner: &TestMerchant, token: &str, amount: &str) -> (StatusCode, Value) {
    let body = json!({"token": token, "amount": usd(amount)});
    call(partner, "POST", "/partner/charges", Some(&body), Some(&unique("key"))).await
}

/// The webhooks the simulated partner accepted about `link_id`, once `count` came (10 s at most).
async fn webhooks(link_id: &str, count: usize) -> Vec<Value> {
    let env = Env::get();
    for _ in 0..40 {
        let seen = env.simulator(&format!("/_sim/webhooks/{link_id}")).await;
        let accepted = seen["accepted"].as_array().cloned().unwrap_or_default();
        if accepted.len() >= count {
            return accepted;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the partner was not told {count} times about {link_id}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_linked_partner_reads_and_charges_within_the_grant_until_the_user_unlinks() {
    let env = Env::get();
    let (b, shop) = partner().await;
    let user = unique("linker");
    let (visa, other_card) = (card(&user, "4242424242424242").await, card(&user, "5555555555554444").await);
    let b_user = unique("b-user");

    let grant = json!({"read": true, "charge": {"per_charge": usd("50.00"), "per_day": usd("80.00")}});
    let the_code = code(&b, &b_user, &user, 120).await;
    let (status, linked) = link(&user, &the_code, &[&visa], grant.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{linked}");
    let link_id = linked["id"].as_str().expect("a link id").to_owned();
    assert_eq!(
        (linked["partner_name"].as_str(), linked["partner_user"].as_str(), linked["state"].as_str()),
        (Some("Platform B"), Some(b_user.as_str()), Some("active"))
    );
    assert_eq!(linked["instruments"][0]["instrument"], "visa 4242", "{linked}");
    assert!(!linked.to_string().contains("pt_"), "the user's view holds no token: {linked}");
    // The user's home lists it while it is active.
    assert_eq!(
        crate::home::shown(&user).await.1["linked_platforms"],
        json!([{"link_id": link_id, "partner_id": linked["partner_id"], "partner_name": "Platform B",
                "grant": linked["grant"], "linked_at": linked["created_at"]}])
    );
    // The code is single use: sent again (under another key), refused, nothing linked twice.
    let (status, problem) = link(&user, &the_code, &[&other_card], grant.clone()).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("link_code_used")), "{problem}");

    // B is told, signed with its key: a token and display data per instrument, never the number.
    let told = webhooks(&link_id, 1).await;
    assert_eq!(told[0]["kind"], "link.created");
    let token = told[0]["link"]["instruments"][0]["token"].as_str().expect("a token").to_owned();
    assert_eq!(told[0]["link"]["instruments"][0]["last4"], "4242");
    assert!(!told[0].to_string().contains("4242424242424242") && !told[0].to_string().contains(&visa));
    let (status, read) = call(&b, "GET", &format!("/partner/users/{b_user}/link"), None, None).await;
    assert_eq!((status, read["instruments"][0]["token"].as_str()), (StatusCode::OK, Some(token.as_str())), "{read}");

    // Charges pull from the card into B's merchant account, within the caps.
    let (status, charged) = charge(&b, &token, "30.00").await;
    assert_eq!((status, charged["state"].as_str()), (StatusCode::CREATED, Some("completed")), "{charged}");
    assert_eq!(balance(AccountId::merchant(&shop)).await, Decimal::new(3000, 2));
    assert_eq!(balance(AccountId::wallet(&user)).await, Decimal::ZERO, "never the wallet");
    let (status, seen) =
        call(&b, "GET", &format!("/partner/charges/{}", charged["id"].as_str().unwrap()), None, None).await;
    assert_eq!(
        (status, seen["state"].as_str(), seen["token"].as_str()),
        (StatusCode::OK, Some("completed"), Some(token.as_str()))
    );
    assert!(seen.get("instrument_id").is_none() && !seen.to_string().contains(&visa), "no id of ours: {seen}");
    let (status, problem) = charge(&b, &token, "50.01").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("link_cap_exceeded")));
    assert_eq!(problem["limit"], "per_charge");
    // Two racing for the last 50 of the day's 80: one is paid.
    let (one, two) = tokio::join!(charge(&b, &token, "30.00"), charge(&b, &token, "30.00"));
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY], "{one:?} {two:?}");
    assert_eq!(balance(AccountId::merchant(&shop)).await, Decimal::new(6000, 2));

    // B pays part of its first charge back to the card, never beyond it (also when two race), then
    // voids the rest; the money leaves B's account to the card's funding account.
    let first = charged["id"].as_str().unwrap();
    let refunds = format!("/partner/charges/{first}/refunds");
    let (status, refunded) =
        call(&b, "POST", &refunds, Some(&json!({"amount": usd("10.00")})), Some(&unique("key"))).await;
    assert_eq!((status, refunded["state"].as_str()), (StatusCode::CREATED, Some("completed")), "{refunded}");
    assert!(refunded["id"].as_str().is_some_and(|id| id.starts_with("rf_")) && refunded.get("instrument_id").is_none());
    let body = json!({"amount": usd("15.00")});
    let keys = [unique("key"), unique("key")];
    let (one, two) = tokio::join!(
        call(&b, "POST", &refunds, Some(&body), Some(&keys[0])),
        call(&b, "POST", &refunds, Some(&body), Some(&keys[1]))
    );
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "20 left, two of 15: {one:?} {two:?}");
    let void = format!("/partner/charges/{first}/void");
    let (status, voided) = call(&b, "POST", &void, None, Some(&unique("key"))).await;
    assert_eq!((status, voided["amount"].as_str()), (StatusCode::CREATED, Some("5.00")), "{voided}");
    let (status, problem) = call(&b, "POST", &void, None, Some(&unique("key"))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("refund_exceeds_charge")));
    assert_eq!(balance(AccountId::merchant(&shop)).await, Decimal::new(3000, 2), "60 charged, 30 paid back");
    let (status, seen) = call(&b, "GET", &format!("/partner/charges/{first}"), None, None).await;
    assert_eq!((status, seen["refunded"].as_str()), (StatusCode::OK, Some("30.00")), "{seen}");

    // Another partner cannot use B's token; a partner cannot read a user it has not linked.
    let (c, _) = partner().await;
    let (status, problem) = charge(&c, &token, "1.00").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_token")));
    let (status, _) = call(&c, "GET", &format!("/partner/users/{b_user}/link"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The user's record of the consent: what it allows and its use.
    let listed = env.get_json("/links", &env.token(&user, &[])).await;
    let mine = &listed["links"][0];
    assert_eq!((mine["use"]["charges_24h"].as_u64(), mine["use"]["asked_24h"].as_str()), (Some(2), Some("60.00")));

    // The card is replaced (reissued, a new number and expiry): B is told under the same token.
    let replacement =
        json!({"kind": "card", "number": "4000056655665556", "expiry_month": 6, "expiry_year": 2032, "holder": "Ada"});
    let url = env.url(&format!("/instruments/{visa}"));
    let replaced = env
        .http()
        .put(url)
        .bearer_auth(env.token(&user, &[]))
        .header("idempotency-key", unique("key"))
        .json(&replacement)
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(
        (replaced["id"].as_str(), replaced["last4"].as_str()),
        (Some(visa.as_str()), Some("5556")),
        "{replaced}"
    );
    let told = webhooks(&link_id, 2).await;
    assert_eq!(
        (told[1]["kind"].as_str(), told[1]["instrument"]["token"].as_str()),
        (Some("instrument.updated"), Some(token.as_str()))
    );
    assert_eq!(
        (told[1]["instrument"]["last4"].as_str(), told[1]["instrument"]["expiry_year"].as_u64()),
        (Some("5556"), Some(2032))
    );
    assert!(!told[1].to_string().contains("4000056655665556") && !told[1].to_string().contains(&visa));
    // A charge of the card replaced since is never paid back to the new number.
    let (status, problem) =
        call(&b, "POST", &refunds, Some(&json!({"amount": usd("1.00")})), Some(&unique("key"))).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::GONE, Some("instrument_removed")), "{problem}");

    // Unlinked by the user: at once, reads and charges are refused, and B is told.
    let url = env.url(&format!("/links/{link_id}"));
    let ended: Value =
        env.http().delete(url).bearer_auth(env.token(&user, &[])).send().await.unwrap().json().await.unwrap();
    assert_eq!((ended["state"].as_str(), ended["ended_by"].as_str()), (Some("unlinked"), Some("user")), "{ended}");
    let (status, problem) = charge(&b, &token, "1.00").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::GONE, Some("link_ended")));
    let (status, _) = call(&b, "GET", &format!("/partner/users/{b_user}/link"), None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(webhooks(&link_id, 3).await[2]["link"]["state"], "unlinked");
    let (elements, personal) = crate::home::shown(&user).await;
    assert_eq!(personal["linked_platforms"], json!([]));
    assert!(elements.iter().any(|e| e["kind"] == "security.link.ended"), "{elements:?}");
    assert_eq!(balance(AccountId::merchant(&shop)).await, Decimal::new(3000, 2));
    let found = crate::reconcile::violations(&[&user]).await;
    assert!(found.is_empty(), "{}", found.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn bad_codes_someone_else_s_instruments_and_a_taken_identity_are_refused_and_link_nothing() {
    let env = Env::get();
    let (b, _) = partner().await;
    let (user, mallory) = (unique("linker"), unique("mallory"));
    let visa = card(&user, "4242424242424242").await;
    let b_user = unique("b-user");
    let read = json!({"read": true});

    let fresh = code(&b, &b_user, &user, 120).await;
    let (payload, signature) = fresh.split_once('.').unwrap();
    let forged = format!("{payload}.{}", signature.replace(|c: char| c != '0', "0"));
    let cases = [
        (forged, StatusCode::BAD_REQUEST, "link_code_invalid"),
        ("not-a-code".to_owned(), StatusCode::BAD_REQUEST, "link_code_invalid"),
        (code(&b, &b_user, &user, 301).await, StatusCode::GONE, "link_code_expired"),
        (code(&b, &b_user, &mallory, 120).await, StatusCode::FORBIDDEN, "link_code_not_yours"),
    ];
    for (the_code, status, problem_code) in &cases {
        let (got, problem) = link(&user, the_code, &[&visa], read.clone()).await;
        assert_eq!((got, problem["code"].as_str()), (*status, Some(*problem_code)), "{problem}");
    }
    // A code for someone else's card; a grant that allows nothing.
    let theirs = card(&mallory, "4242424242424242").await;
    let (status, problem) = link(&user, &fresh, &[&theirs], read.clone()).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_instrument")));
    let (status, problem) = link(&user, &fresh, &[&visa], json!({"read": false})).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(env.get_json("/links", &env.token(&user, &[])).await["links"], json!([]), "nothing linked");

    // One B identity links to one user: linked to ours, Mallory's own code for it is refused.
    let (status, _) = link(&user, &fresh, &[&visa], read.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, problem) = link(&mallory, &code(&b, &b_user, &mallory, 120).await, &[&theirs], read.clone()).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("partner_identity_linked")));
    // Unlinked by B: the identity may be linked again.
    let (status, ended) = call(&b, "DELETE", &format!("/partner/users/{b_user}/link"), None, None).await;
    assert_eq!((status, ended["state"].as_str()), (StatusCode::OK, Some("unlinked")), "{ended}");
    let listed = env.get_json("/links", &env.token(&user, &[])).await;
    assert_eq!(listed["links"][0]["ended_by"], "partner");
    // A charge-only grant: B gets the tokens (what it charges) but no display data.
    let charge_only = json!({"charge": {"per_charge": usd("5.00"), "per_day": usd("5.00")}});
    let (status, relinked) = link(&mallory, &code(&b, &b_user, &mallory, 120).await, &[&theirs], charge_only).await;
    assert_eq!(status, StatusCode::CREATED, "{relinked}");
    let told = webhooks(relinked["id"].as_str().unwrap(), 1).await;
    let shown = told[0]["link"]["instruments"][0].clone();
    assert!(shown["token"].as_str().is_some_and(|t| t.starts_with("pt_")) && shown.get("last4").is_none(), "{shown}");
    let (status, read_refused) = call(&b, "GET", &format!("/partner/users/{b_user}/link"), None, None).await;
    assert_eq!((status, read_refused["instruments"][0].get("last4")), (StatusCode::OK, None), "{read_refused}");
    // A suspended partner may only end its links.
    let (status, _) =
        env.admin_post(&format!("/partners/{}/status", b.id), &json!({"status": "suspended"}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = charge(&b, shown["token"].as_str().unwrap(), "1.00").await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("partner_inactive")));
    let (status, _) = call(&b, "DELETE", &format!("/partner/users/{b_user}/link"), None, None).await;
    assert_eq!(status, StatusCode::OK);
    // An unsigned call of B's is refused before anything is read.
    let url = env.url(&format!("/partner/users/{b_user}/link"));
    assert_eq!(env.http().get(url).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
