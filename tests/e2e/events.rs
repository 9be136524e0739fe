//! The sample events in `events/` (for `sam local invoke` where Docker exists) run against the real
//! function binaries through the local stack's Lambda Invoke API, and answer as documented.

use serde_json::{Value, json};
use superpay_e2e::Env;

async fn invoke(function: &str, file: &str) -> Value {
    let env = Env::get();
    let event = std::fs::read(format!("{}/../events/{file}", env!("CARGO_MANIFEST_DIR"))).expect("the event file");
    let response = env
        .http()
        .post(format!("{}/2015-03-31/functions/{function}/invocations", env.stack.lambda_endpoint))
        .body(event)
        .send()
        .await
        .expect("the invoke API answers");
    assert!(response.headers().get("x-amz-function-error").is_none(), "{file} made the function fail");
    response.json().await.expect("a JSON result")
}

/// The JSON body of a function's answer to an HTTP event.
fn body(answer: &Value) -> Value {
    serde_json::from_str(answer["body"].as_str().expect("an HTTP answer's body")).expect("a JSON body")
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn config_events_answer_as_documented() {
    // The test stack starts empty but for infra/seed.json, so these are the answers on a fresh stack.
    let fetch = invoke("ConfigFunction", "config/fetch.json").await;
    assert_eq!(fetch["statusCode"], 200);
    let body = body(&fetch);
    assert_eq!((body["group"].as_str(), body["version"].as_u64()), (Some("payment-ui"), Some(1)));
    assert_eq!(invoke("ConfigFunction", "config/fetch-up-to-date.json").await["statusCode"], 304);
    assert_eq!(invoke("ConfigFunction", "config/fetch-bad-version.json").await["statusCode"], 400);
    let publish = invoke("ConfigFunction", "config/publish.json").await;
    assert_eq!(publish["statusCode"], 201, "{publish}");
    // Sent again: the same Idempotency-Key replays the first answer.
    assert_eq!(invoke("ConfigFunction", "config/publish.json").await["body"], publish["body"]);
    // Rolling back to the current version is refused.
    assert_eq!(invoke("ConfigFunction", "config/rollback.json").await["statusCode"], 409);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn merchant_events_answer_as_documented() {
    let register = invoke("MerchantsFunction", "merchants/register.json").await;
    assert_eq!(register["statusCode"], 201, "{register}");
    // m_demo comes from infra/seed.json.
    let terminal = invoke("MerchantsFunction", "merchants/register-terminal.json").await;
    assert_eq!(terminal["statusCode"], 201, "{terminal}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn purchase_events_answer_as_documented() {
    // infra/seed.json funds demo-user and registers m_demo, whose product server (the simulator) confirms.
    let create = invoke("PurchasesFunction", "purchases/create.json").await;
    assert_eq!(create["statusCode"], 201, "{create}");
    let order = body(&create);
    assert_eq!(order["state"], "paid");
    assert_eq!(invoke("PurchasesFunction", "purchases/get-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("PurchasesFunction", "purchases/decision-unsigned.json").await["statusCode"], 401);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn notifier_and_conversation_events_answer_as_documented() {
    // An expiry check for an order whose outbox item is gone: already handled, nothing fails.
    let batch = invoke("NotifierFunction", "notifier/order-expire.json").await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}");
    let sweep = invoke("NotifierFunction", "notifier/sweep-schedule.json").await;
    assert!(sweep["swept"].is_u64() && sweep["dead"].is_u64() && sweep["credit_sweeps"].is_u64(), "{sweep}");
    let list = invoke("ConversationsFunction", "conversations/list.json").await;
    assert_eq!(list["statusCode"], 200, "{list}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn wallet_and_refund_events_answer_as_documented() {
    // demo-user's wallet is funded by infra/seed.json.
    let wallet = invoke("WalletFunction", "wallet/get.json").await;
    assert_eq!(wallet["statusCode"], 200, "{wallet}");
    let body = body(&wallet);
    assert_eq!(body["currency"], "USD");
    assert_eq!(invoke("WalletFunction", "wallet/postings.json").await["statusCode"], 200);
    assert_eq!(invoke("PurchasesFunction", "purchases/refund-unsigned.json").await["statusCode"], 401);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn device_events_answer_as_documented() {
    let enroll = invoke("DevicesFunction", "devices/enroll.json").await;
    assert_eq!(enroll["statusCode"], 201, "{enroll}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn offline_payment_events_answer_as_documented() {
    // A terminal's call must be signed.
    assert_eq!(invoke("OfflinePaymentsFunction", "offline-payments/present-unsigned.json").await["statusCode"], 401);
    // A job whose outbox item is gone was handled already: nothing fails.
    assert_eq!(invoke("SettlementFunction", "settlement/job.json").await["batchItemFailures"], serde_json::json!([]));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn topup_events_answer_as_documented() {
    let page = invoke("TopUpFunction", "topup/page-unknown.json").await;
    assert_eq!(page["statusCode"], 404, "{page}");
    assert!(page["body"].as_str().unwrap().contains("Unknown link"));
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn every_other_route_has_a_sample_event_that_answers_as_documented() {
    // m_demo and demo-user come from infra/seed.json.
    assert_eq!(invoke("MerchantsFunction", "merchants/get.json").await["statusCode"], 200);
    assert_eq!(invoke("MerchantsFunction", "merchants/suspend-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("MerchantsFunction", "merchants/rotate-key-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("MerchantsFunction", "merchants/rotate-terminal-key-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("MerchantsFunction", "merchants/rotate-miniapp-key-unknown.json").await["statusCode"], 404);
    // The seeded parties have no rotation in its grace: there is none to end.
    for file in [
        "merchants/end-key-grace.json",
        "merchants/end-terminal-key-grace.json",
        "merchants/end-miniapp-key-grace.json",
    ] {
        let ended = invoke("MerchantsFunction", file).await;
        assert_eq!(ended["statusCode"], 409, "{file}: {ended}");
        let body = body(&ended);
        assert_eq!(body["code"], "no_rotation_in_grace", "{file}");
    }
    assert_eq!(invoke("MerchantsFunction", "merchants/terminal-status-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("ConversationsFunction", "conversations/messages.json").await["statusCode"], 200);
    assert_eq!(invoke("ConversationsFunction", "conversations/read-beyond.json").await["statusCode"], 409);
    assert_eq!(invoke("DevicesFunction", "devices/get-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("DevicesFunction", "devices/revoke-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("OfflinePaymentsFunction", "offline-payments/get-unsigned.json").await["statusCode"], 401);
    assert_eq!(invoke("TopUpFunction", "topup/submit-unknown.json").await["statusCode"], 404);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn miniapp_events_answer_as_documented() {
    // a_demo (owned by m_demo) and demo-user come from infra/seed.json.
    let register = invoke("MerchantsFunction", "merchants/register-miniapp.json").await;
    assert_eq!(register["statusCode"], 201, "{register}");
    assert_eq!(invoke("MerchantsFunction", "merchants/get-miniapp.json").await["statusCode"], 200);
    assert_eq!(invoke("MerchantsFunction", "merchants/miniapp-status-unknown.json").await["statusCode"], 404);
    let verify = invoke("MiniAppsFunction", "miniapps/verify.json").await;
    assert_eq!(verify["statusCode"], 201, "{verify}");
    let unknown = invoke("MiniAppsFunction", "miniapps/verify-unknown.json").await;
    assert_eq!(unknown["statusCode"], 404, "{unknown}");
    let body = body(&unknown);
    assert_eq!(body["message"]["kind"], "miniapp.unavailable");
    // The sample's session was never issued.
    let request = invoke("MiniAppsFunction", "miniapps/request-without-session.json").await;
    assert_eq!(request["statusCode"], 403, "{request}");
    // An outcome whose outbox item is gone was handled already: nothing fails.
    let batch = invoke("NotifierFunction", "notifier/miniapp-outcome.json").await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}");
    let batch = invoke("NotifierFunction", "notifier/offline-expired.json").await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn instrument_events_answer_as_documented() {
    assert_eq!(invoke("InstrumentsFunction", "instruments/list.json").await["statusCode"], 200);
    assert_eq!(invoke("InstrumentsFunction", "instruments/get-unknown.json").await["statusCode"], 404);
    let refused = invoke("InstrumentsFunction", "instruments/add-with-security-code.json").await;
    assert_eq!(refused["statusCode"], 400, "{refused}");
    assert!(refused["body"].as_str().unwrap().contains("security_code_not_accepted"));
    assert_eq!(invoke("MerchantsFunction", "partners/get-unknown.json").await["statusCode"], 404);
    assert_eq!(invoke("MerchantsFunction", "partners/suspend-unknown.json").await["statusCode"], 404);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn link_events_answer_as_documented() {
    let list = invoke("LinksFunction", "links/list.json").await;
    assert_eq!(list["statusCode"], 200, "{list}");
    assert_eq!(invoke("LinksFunction", "links/get-unknown.json").await["statusCode"], 404);
    let bad = invoke("LinksFunction", "links/link-bad-code.json").await;
    assert_eq!(bad["statusCode"], 400, "{bad}");
    assert!(bad["body"].as_str().unwrap().contains("link_code_invalid"));
    assert_eq!(invoke("LinksFunction", "links/charge-unsigned.json").await["statusCode"], 401);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn cash_events_answer_as_documented() {
    assert_eq!(invoke("CashFunction", "cash/get-unknown.json").await["statusCode"], 404);
    let unknown = invoke("CashFunction", "cash/cash-in-unknown-instrument.json").await;
    assert_eq!(unknown["statusCode"], 404, "{unknown}");
    assert!(unknown["body"].as_str().unwrap().contains("unknown_instrument"));
    let over = invoke("CashFunction", "cash/cash-out-over-limit.json").await;
    assert_eq!(over["statusCode"], 400, "{over}");
    assert!(over["body"].as_str().unwrap().contains("amount_over_limit"));
    // A check whose outbox item is gone was handled already: nothing fails.
    let batch = invoke("CashChecksFunction", "cash-checks/check-handled.json").await;
    assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{batch}");
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn transfer_instruction_events_answer_as_documented() {
    for (function, folder) in [("TransferPlatformFunction", "transfer-platform"), ("TransferFunction", "transfer")] {
        let unknown = invoke(function, &format!("{folder}/get-unknown.json")).await;
        assert_eq!(unknown["statusCode"], 404, "{unknown}");
        let unsigned = invoke(function, &format!("{folder}/publish-unsigned.json")).await;
        assert_eq!(unsigned["statusCode"], 401, "{unsigned}");
    }
    let instruct = invoke("TransferPlatformFunction", "transfer-platform/instruct-unknown-listing.json").await;
    assert_eq!(instruct["statusCode"], 404, "{instruct}");
    let operation = invoke("TransferFunction", "transfer/get-operation-unknown.json").await;
    assert_eq!(operation["statusCode"], 404, "{operation}");
    let unfreeze = invoke("TransferFunction", "transfer/unfreeze-unknown.json").await;
    assert_eq!(unfreeze["statusCode"], 404, "{unfreeze}");
    // The seed's own threshold for demo-user, set again: no change in what it needs.
    let thresholds = invoke("TransferFunction", "transfer/set-thresholds.json").await;
    assert_eq!(thresholds["statusCode"], 200, "{thresholds}");
    // Signed by a key that is not the platform's: refused (and, replayed under its key, refused
    // the same way), a security event of demo-user's.
    for _ in 0..2 {
        let operate = invoke("TransferFunction", "transfer/operate-other-key.json").await;
        assert_eq!(operate["statusCode"], 403, "{operate}");
        let body = body(&operate);
        assert_eq!(body["code"], "instruction_signature_invalid");
    }
    let post = invoke("TransferFunction", "transfer/post-unsigned.json").await;
    assert_eq!(post["statusCode"], 401, "{post}");
    // Notices whose outbox items are gone were handled already: nothing fails.
    for file in ["notifier/transfer-changed.json", "notifier/transfer-release.json"] {
        let batch = invoke("NotifierFunction", file).await;
        assert_eq!(batch["batchItemFailures"], serde_json::json!([]), "{file}: {batch}");
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn flow_events_answer_as_documented() {
    // A mini-app server's timeout: a retry (the bench may have spent the sample instance's three).
    let next = invoke("FlowsFunction", "flows/next.json").await;
    assert_eq!(next["statusCode"], 200, "{next}");
    let answer = body(&next);
    assert!(["retry", "switch_flow"].contains(&answer["action"].as_str().unwrap()), "{answer}");
    assert_eq!(answer["at"], "miniapp/request");
    let run = invoke("FlowsFunction", "flows/dry-run.json").await;
    assert_eq!(run["statusCode"], 200, "{run}");
    let path: Vec<Value> = body(&run)["path"].as_array().unwrap().iter().map(|h| h["to"].clone()).collect();
    assert_eq!(path, ["top-up/amount", "payment-method/choose"]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn home_events_answer_as_documented() {
    let got = invoke("HomeFunction", "home/get.json").await;
    assert_eq!(got["statusCode"], 200, "{got}");
    assert!(body(&got)["primary"]["id"].is_string(), "{got}");
    let refused = invoke("HomeFunction", "home/dismiss-balance.json").await;
    assert_eq!(
        (&refused["statusCode"], &body(&refused)["code"]),
        (&json!(409), &json!("home_element_not_dismissable"))
    );
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn payment_session_events_answer_as_documented() {
    let created = invoke("PaymentSessionsFunction", "payment-sessions/create.json").await;
    assert_eq!(created["statusCode"], 201, "{created}");
    let session = body(&created);
    assert_eq!(session["loading_process"], "foreground_app", "{session}");
    // Sent again: the same Idempotency-Key answers the same session.
    let again = invoke("PaymentSessionsFunction", "payment-sessions/create.json").await;
    assert_eq!(body(&again)["id"], session["id"]);
    assert_eq!(invoke("PaymentSessionsFunction", "payment-sessions/get-unknown.json").await["statusCode"], 404);
    // A transfer instruction not signed by the platform's key opens no session.
    let unsigned = invoke("PaymentSessionsFunction", "payment-sessions/create-transfer-unsigned.json").await;
    assert_eq!(
        (&unsigned["statusCode"], &body(&unsigned)["code"]),
        (&json!(403), &json!("instruction_signature_invalid"))
    );
    // The session's id derives from demo-user and the create event's key, so the next events name it.
    let next = invoke("PaymentSessionsFunction", "payment-sessions/report-launch-failed.json").await;
    assert_eq!(next["statusCode"], 200, "{next}");
    let next = body(&next);
    assert_eq!((&next["session"]["id"], next["next"]["process"].as_str()), (&session["id"], Some("simulated_sheet")));
    assert_eq!(invoke("PaymentSessionsFunction", "payment-sessions/set-pin.json").await["statusCode"], 201);
    let confirmed = invoke("PaymentSessionsFunction", "payment-sessions/confirm.json").await;
    assert_eq!(confirmed["statusCode"], 200, "{confirmed}");
    let paid = body(&confirmed);
    assert_eq!(paid["state"], "paid", "{paid}");
    let forced = invoke("PaymentSessionsFunction", "payment-sessions/force.json").await;
    assert_eq!(forced["statusCode"], 200, "{forced}");
    // demo-user's PIN (set above) reset by an admin.
    let reset = invoke("PaymentSessionsFunction", "payment-sessions/reset-pin.json").await;
    assert_eq!(reset["statusCode"], 200, "{reset}");
}
