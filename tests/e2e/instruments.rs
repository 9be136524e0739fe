//! Capability 9's instruments through the local stack: a user adds cards and bank accounts, sees
//! them by brand and last four, removes them; every bad input is refused and stores nothing; and no
//! number sent ever lands in a table item or a log line.

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay_e2e::{Env, unique};

/// The test numbers: whatever else happens, none of them may be stored or logged in the clear.
const VISA: &str = "4111111111111111";
const MASTERCARD: &str = "5555555555554444";
const IBAN: &str = "DE89370400440532013000";
/// Every number the test sends, as sent and as kept: none may be stored or logged in the clear.
const SENT: [&str; 8] = [
    VISA,
    MASTERCARD,
    IBAN,
    "DE89 3704 0044 0532 0130 00",
    "4111 1111 1111 1111",
    "4012888888881881",
    "9012888888881881",
    "DE88370400440532013000",
];

fn card(number: &str) -> Value {
    json!({"kind": "card", "number": number, "expiry_month": 12, "expiry_year": 2030, "holder": "Ada Lovelace"})
}

async fn add(user: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), "/instruments", Some(body), Some(key)).await
}

async fn remove(user: &str, id: &str) -> StatusCode {
    let env = Env::get();
    let url = env.url(&format!("/instruments/{id}"));
    env.http().delete(url).bearer_auth(env.token(user, &[])).send().await.unwrap().status()
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn cards_and_accounts_are_kept_by_brand_and_last_four_and_their_numbers_never_in_the_clear() {
    let env = Env::get();
    let user = unique("holder");
    let token = env.token(&user, &[]);
    let key = unique("key");

    let (status, visa) = add(&user, &card("4111 1111 1111 1111"), &key).await;
    assert_eq!(status, StatusCode::CREATED, "{visa}");
    assert_eq!(
        (visa["kind"].as_str(), visa["brand"].as_str(), visa["last4"].as_str()),
        (Some("card"), Some("visa"), Some("1111"))
    );
    assert_eq!((visa["expiry_month"].as_u64(), visa["expiry_year"].as_u64()), (Some(12), Some(2030)));
    assert!(!visa.to_string().contains(VISA), "{visa}");
    let id = visa["id"].as_str().expect("an id").to_owned();
    // The same request again answers the same; the same number again (however grouped) is refused.
    assert_eq!(add(&user, &card("4111 1111 1111 1111"), &key).await, (status, visa.clone()));
    let (status, problem) = add(&user, &card(VISA), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("instrument_exists")));
    assert_eq!(problem["instrument_id"], id.as_str());

    let account = json!({"kind": "bank_account", "iban": "DE89 3704 0044 0532 0130 00", "holder": "Ada Lovelace"});
    let (status, iban) = add(&user, &account, &unique("key")).await;
    assert_eq!(
        (status, iban["country"].as_str(), iban["last4"].as_str()),
        (StatusCode::CREATED, Some("DE"), Some("3000")),
        "{iban}"
    );
    // The same new number twice at once, under two keys: one instrument.
    let (one, other, keys) = (card(MASTERCARD), card("5555 5555 5555 4444"), [unique("key"), unique("key")]);
    let (first, second) = tokio::join!(add(&user, &one, &keys[0]), add(&user, &other, &keys[1]));
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT], "{first:?} {second:?}");
    let master = if first.0 == StatusCode::CREATED { first.1 } else { second.1 };
    assert_eq!(master["brand"], "mastercard");

    // Bad inputs: refused, nothing stored, the number never repeated.
    let mut with_code = card("4012888888881881");
    with_code["cvc"] = "123".into();
    let mut numeric = card("4012888888881881");
    numeric["number"] = json!(4012888888881881u64);
    let mut expired = card("4012888888881881");
    expired["expiry_year"] = 2025.into();
    let cases = [
        (with_code, StatusCode::BAD_REQUEST, "security_code_not_accepted"),
        (numeric, StatusCode::BAD_REQUEST, "malformed_json"),
        (card("4012888888881882"), StatusCode::BAD_REQUEST, "invalid_card_number"),
        (card("9012888888881881"), StatusCode::BAD_REQUEST, "card_brand_not_accepted"),
        (expired, StatusCode::UNPROCESSABLE_ENTITY, "card_expired"),
        (
            json!({"kind": "bank_account", "iban": "DE88370400440532013000", "holder": "A"}),
            StatusCode::BAD_REQUEST,
            "invalid_iban",
        ),
    ];
    for (body, status, code) in &cases {
        let (got, problem) = add(&user, body, &unique("key")).await;
        assert_eq!((got, problem["code"].as_str()), (*status, Some(*code)), "{body}: {problem}");
        assert!(!problem.to_string().contains("401288888888188"), "{problem}");
    }
    let listed = env.get_json("/instruments", &token).await;
    assert_eq!(listed["instruments"].as_array().map(Vec::len), Some(3), "{listed}");

    // Nobody else sees or removes them.
    let path = format!("/instruments/{id}");
    assert_eq!(env.get_json(&path, &env.token("someone-else", &[])).await["code"], "unknown_instrument");
    assert_eq!(remove("someone-else", &id).await, StatusCode::NOT_FOUND);
    assert_eq!(env.get_json(&path, &token).await, visa);

    // The stored item holds the number sealed, its data key wrapped, and no number in the clear.
    let items = env.partition("InstrumentsTable", "user", &user).await;
    let stored = items.iter().find(|i| i.get("id").and_then(|v| v.as_s().ok()) == Some(&id)).expect("the item");
    assert!(stored.contains_key("sealed") && stored.contains_key("wrapped_key"), "{stored:?}");
    // Removed: gone from the user's view, its sealed number and key dropped for good.
    assert_eq!(remove(&user, &id).await, StatusCode::OK);
    assert_eq!(remove(&user, &id).await, StatusCode::NOT_FOUND);
    assert_eq!(env.get_json(&path, &token).await["code"], "unknown_instrument");
    let items = env.partition("InstrumentsTable", "user", &user).await;
    let removed = items.iter().find(|i| i.get("id").and_then(|v| v.as_s().ok()) == Some(&id)).expect("its record");
    assert!(!removed.contains_key("sealed") && !removed.contains_key("wrapped_key"), "{removed:?}");
    let (status, again) = add(&user, &card(VISA), &unique("key")).await;
    assert_eq!(status, StatusCode::CREATED, "a removed card may be added again: {again}");
    // Each add and removal is one of the owner's security events, naming the card by brand and
    // last four only.
    let events = env.partition("SecurityEventsTable", "user", &user).await;
    let kinds = |kind: &str| {
        events.iter().filter(|e| e.get("kind").and_then(|k| k.as_s().ok()).map(String::as_str) == Some(kind)).count()
    };
    assert_eq!((kinds("instrument.added"), kinds("instrument.removed")), (4, 1), "{events:?}");

    // No test number in the clear in any table item (idempotency records included), log line, or
    // queue message body.
    assert_never_in_the_clear(&SENT, "InstrumentsFunction.log").await;
}

/// No `numbers` in the clear in any table item (idempotency records included), log line, or queue
/// message body (every one any function sent is in the logs' `queue-messages.log`, written by its
/// proxy as it passed); and `log` (a function's log file) was among those read, not empty.
pub async fn assert_never_in_the_clear(numbers: &[&str], log: &str) {
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    for table in env.stack.tables.values() {
        for item in superpay::dynamo::scan_all(&dynamodb, table).await.unwrap() {
            let text = format!("{item:?}");
            for number in numbers {
                assert!(!text.contains(number), "{number} in the clear in {table}: {text}");
            }
        }
    }
    let mut read = 0;
    for entry in std::fs::read_dir(&env.stack.logs).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for number in numbers {
            assert!(!text.contains(number), "{number} in the clear in {}", path.display());
        }
        if path.ends_with(log) {
            read = text.lines().count();
        }
    }
    assert!(read > 0, "{log} was read");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_partner_platform_is_registered_by_an_admin_with_a_key_shown_once_and_rotated_audited() {
    let env = Env::get();
    let shop = crate::purchases::merchant().await;
    let url = format!("{}/p/{}", env.stack.merchant_simulator_url, unique("b"));
    let body = json!({"name": "Platform B", "callback_url": url, "merchant_id": shop.id});
    let key = unique("key");

    let (status, registered) = env.admin_post("/partners", &body, Some(&key)).await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    let id = registered["id"].as_str().expect("an id").to_owned();
    assert!(id.starts_with("pp_"), "{id}");
    assert_eq!(
        (registered["merchant_id"].as_str(), registered["currency"].as_str()),
        (Some(shop.id.as_str()), Some("USD"))
    );
    assert!(registered["secret"].as_str().is_some_and(|s| !s.is_empty()), "the key, shown once: {registered}");
    // Shown once: a replay of the registration and a read both leave it out.
    let (status, replayed) = env.admin_post("/partners", &body, Some(&key)).await;
    assert_eq!((status, replayed["secret"].is_null()), (StatusCode::CREATED, true), "{replayed}");
    let read = env.get_json(&format!("/partners/{id}"), &env.admin_token()).await;
    assert_eq!((read["status"].as_str(), read.get("secret")), (Some("active"), None), "{read}");

    let keys = format!("/partners/{id}/keys");
    let (status, rotated) = env.admin_post(&keys, &json!({}), Some(&unique("key"))).await;
    assert_eq!(
        (status, rotated["previous_key_id"].as_str()),
        (StatusCode::CREATED, Some(format!("{id}.k1").as_str())),
        "{rotated}"
    );
    let (status, _) = env.admin_post(&format!("{keys}/end-grace"), &json!({}), Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, suspended) =
        env.admin_post(&format!("/partners/{id}/status"), &json!({"status": "suspended"}), None).await;
    assert_eq!((status, suspended["status"].as_str()), (StatusCode::OK, Some("suspended")), "{suspended}");
    let audit = env.partition("AuditTable", "resource", &format!("partner/{id}")).await;
    let actions: Vec<&str> = audit.iter().filter_map(|e| e.get("action")?.as_s().ok().map(String::as_str)).collect();
    for action in ["partner.register", "partner.rotate_key", "partner.end_key_grace", "partner.status"] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }

    // Refused: an unknown or suspended merchant's account, a name or URL that will not do, a
    // non-admin, an unknown partner.
    let (status, problem) = env
        .admin_post(
            "/partners",
            &json!({"name": "B", "callback_url": "https://b.example", "merchant_id": "m_nobody"}),
            Some(&unique("key")),
        )
        .await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_merchant")));
    for (body, code) in [
        (
            json!({"name": "B\u{202e}", "callback_url": "https://b.example", "merchant_id": shop.id}),
            "invalid_partner_name",
        ),
        (json!({"name": "B", "callback_url": "ftp://b.example", "merchant_id": shop.id}), "invalid_callback_url"),
    ] {
        let (status, problem) = env.admin_post("/partners", &body, Some(&unique("key"))).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
    }
    let (status, _) = env.post_json(&env.user_token(), "/partners", Some(&body), Some(&unique("key"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(env.get_json("/partners/pp_nobody", &env.admin_token()).await["code"], "unknown_partner");
    let (status, problem) = env.admin_post("/partners/pp_nobody/status", &json!({"status": "active"}), None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::NOT_FOUND, Some("unknown_partner")));
}
