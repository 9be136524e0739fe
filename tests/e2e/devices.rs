//! Offline payments, first part: devices enroll their public keys, and the `superpay-device` tool
//! (a payer's phone on the command line) makes codes that verify against the enrolled key.

use reqwest::StatusCode;
use serde_json::{Value, json};
use superpay::offline::{DeviceKey, OfflineCode};
use superpay_e2e::{Env, unique};

async fn enroll(user: &str, body: &Value, key: &str) -> (StatusCode, Value) {
    let env = Env::get();
    env.post_json(&env.token(user, &[]), "/devices", Some(body), Some(key)).await
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_device_enrolls_only_its_public_key() {
    let env = Env::get();
    let user = unique("payer");
    let key = DeviceKey::generate();
    let body = json!({"public_key": key.public_key(), "offline_limit": {"amount": "50.00", "currency": "USD"}});
    let idempotency_key = unique("key");
    let (status, device) = enroll(&user, &body, &idempotency_key).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let id = device["id"].as_str().unwrap();
    assert_eq!(
        (device["account"].as_str(), device["key_id"].as_str()),
        (Some(user.as_str()), Some(format!("{id}.k1").as_str()))
    );
    assert_eq!(device["offline_available"], "50.00", "no code paid yet");
    assert_eq!(enroll(&user, &body, &idempotency_key).await.1["id"], device["id"], "a retry is the same device");
    assert_eq!(
        env.get_json(&format!("/devices/{id}"), &env.token(&user, &[])).await["public_key"],
        key.public_key().as_str()
    );
    let foreign =
        env.http().get(env.url(&format!("/devices/{id}"))).bearer_auth(env.user_token()).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);

    for (body, code) in [
        (json!({"public_key": "AAAA", "offline_limit": {"amount": "5.00", "currency": "USD"}}), "invalid_public_key"),
        (
            json!({"public_key": key.public_key(), "offline_limit": {"amount": "5.001", "currency": "USD"}}),
            "amount_too_many_decimals",
        ),
        (
            json!({"public_key": key.public_key(), "offline_limit": {"amount": 5, "currency": "USD"}}),
            "amount_not_decimal_string",
        ),
        (json!({"public_key": key.public_key()}), "malformed_json"),
    ] {
        let (status, problem) = enroll(&user, &body, &unique("key")).await;
        assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}");
    }

    // A reserve in USD could never pay a device's EUR codes.
    let payer = unique("payer");
    env.fund(&payer, superpay::ledger::AccountId::reserve(&payer), "10.00").await;
    let eur = json!({"public_key": key.public_key(), "offline_limit": {"amount": "5.00", "currency": "EUR"}});
    let (status, problem) = enroll(&payer, &eur, &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("reserve_currency_mismatch")));
    let usd = json!({"public_key": key.public_key(), "offline_limit": {"amount": "5.00", "currency": "USD"}});
    assert_eq!(enroll(&payer, &usd, &unique("key")).await.0, StatusCode::CREATED);

    // Without a reserve yet, the first device fixes the payer's offline currency.
    let newcomer = unique("payer");
    assert_eq!(enroll(&newcomer, &usd, &unique("key")).await.0, StatusCode::CREATED);
    let (status, problem) = enroll(&newcomer, &eur, &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("offline_currency_mismatch")));
    assert_eq!(enroll(&newcomer, &usd, &unique("key")).await.0, StatusCode::CREATED, "a second device in USD");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn the_device_tool_enrolls_and_makes_codes_that_verify() {
    let env = Env::get();
    let user = unique("payer");
    let file = std::env::temp_dir().join(format!("{}.json", unique("device")));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let tool = target.join("debug/superpay-device");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&tool)
            .args(args)
            .arg("--file")
            .arg(&file)
            .output()
            .expect("the device tool runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    run(&["enroll", "--api", &env.stack.api_url, "--token", &env.token(&user, &[]), "--limit", "20.00"]);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let device =
        env.get_json(&format!("/devices/{}", saved["device_id"].as_str().unwrap()), &env.token(&user, &[])).await;
    assert_eq!(device["offline_limit"]["amount"], "20.00");
    let now = superpay::clock::now_epoch_seconds();
    for expected in [1, 2] {
        let (code, signature) = OfflineCode::parse(&run(&["code"])).unwrap();
        assert_eq!((code.counter, code.account.as_str()), (expected, user.as_str()));
        assert_eq!(code.verify(&signature, device["public_key"].as_str().unwrap(), now), Ok(()));
    }
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payers_offline_exposure_is_bounded_per_device_and_in_devices() {
    let env = Env::get();
    let user = unique("payer");
    let body = |limit: &str| json!({"public_key": DeviceKey::generate().public_key(), "offline_limit": {"amount": limit, "currency": "USD"}});
    // One device owes at most 1% of USD's per-payment limit at once.
    let (status, problem) = enroll(&user, &body("1000.01"), &unique("key")).await;
    assert_eq!(
        (status, problem["code"].as_str(), problem["max"].as_str()),
        (StatusCode::BAD_REQUEST, Some("offline_limit_too_high"), Some("1000.00"))
    );
    let mut devices = vec![];
    for _ in 0..superpay::offline::device::MAX_DEVICES {
        let (status, device) = enroll(&user, &body("1000.00"), &unique("key")).await;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        devices.push(device["id"].as_str().unwrap().to_owned());
    }
    let (status, problem) = enroll(&user, &body("10.00"), &unique("key")).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_devices")), "{problem}");
    // A revoked device makes room, once however often it is revoked.
    let revoke = format!("/devices/{}/revoke", devices[0]);
    for _ in 0..2 {
        assert_eq!(env.post_json(&env.token(&user, &[]), &revoke, None, None).await.0, StatusCode::OK);
    }
    // Someone else cannot revoke it, and leaves no trace on either home.
    let other = unique("other");
    let theirs = format!("/devices/{}/revoke", devices[1]);
    assert_eq!(env.post_json(&env.token(&other, &[]), &theirs, None, None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(crate::home::shown(&other).await.0[0]["id"], "balance");
    // The home lists the live devices; the revocation is a security event of the owner's, of the
    // first revocation (the second wrote nothing).
    let (elements, personal) = crate::home::shown(&user).await;
    let mut listed: Vec<&str> =
        personal["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut live: Vec<&str> = devices[1..].iter().map(String::as_str).collect();
    live.sort_unstable();
    assert_eq!(listed, live, "{personal}");
    assert_eq!(personal["devices"][0]["offline_limit"], json!({"amount": "1000.00", "currency": "USD"}));
    let revoked: Vec<&Value> = elements.iter().filter(|e| e["kind"] == "security.device.revoked").collect();
    assert_eq!(revoked.len(), 1, "{elements:?}");
    assert_eq!(revoked[0]["data"]["detail"]["device_id"], devices[0].as_str());
    let device = env.get_json(&format!("/devices/{}", devices[0]), &env.token(&user, &[])).await;
    assert_eq!(revoked[0]["data"]["at"], device["revoked_at"], "{device}");
    // An id that is no id is refused as such, before anything is read (the id rule).
    let (status, problem) = env.post_json(&env.token(&user, &[]), "/devices/user%23me/revoke", None, None).await;
    assert_eq!((status, problem["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_id")), "{problem}");
    assert_eq!(enroll(&user, &body("10.00"), &unique("key")).await.0, StatusCode::CREATED);
    assert_eq!(enroll(&user, &body("10.00"), &unique("key")).await.1["code"], "too_many_devices");
}
