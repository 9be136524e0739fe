//! The DynamoDB adapters of `superpay` (shared/) against the emulator, without HTTP in between.

use superpay::idempotency::store::{Begin, IdempotencyStore};
use superpay::idempotency::{IdempotencyKey, Scope, StoredResponse};
use superpay_e2e::{Env, unique};

fn scope(caller: &str, key: &str) -> Scope {
    Scope { caller: caller.into(), route: "POST /things".into(), key: IdempotencyKey::parse(Some(key)).unwrap() }
}

async fn store() -> IdempotencyStore {
    let env = Env::get();
    IdempotencyStore::new(env.dynamodb().await, env.table("IdempotencyTable"))
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
        base64: false,
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn idempotency_claims_replays_and_refusals() {
    let store = store().await;
    let key = unique("key");
    let now = 1_000_000;
    let Begin::Run(claim) = store.begin(scope("alice", &key), "fp-1".into(), now).await.unwrap() else {
        panic!("a fresh key runs");
    };
    // While the first attempt runs: the same request is told to wait, another request is refused.
    match store.begin(scope("alice", &key), "fp-1".into(), now + 1).await.unwrap() {
        Begin::Refuse(p) => assert_eq!((p.status().as_u16(), p.code), (409, "idempotency_request_in_progress")),
        _ => panic!("in flight"),
    }
    match store.begin(scope("alice", &key), "fp-2".into(), now + 1).await.unwrap() {
        Begin::Refuse(p) => assert_eq!((p.status().as_u16(), p.code), (422, "idempotency_key_reused")),
        _ => panic!("mismatch"),
    }
    // Another caller's identical key is independent.
    assert!(matches!(store.begin(scope("bob", &key), "fp-1".into(), now).await.unwrap(), Begin::Run(_)));

    store.complete(&claim, &response("{\"id\":1}"), now + 2).await.unwrap();
    match store.begin(scope("alice", &key), "fp-1".into(), now + 3).await.unwrap() {
        Begin::Replay(stored) => assert_eq!(stored, response("{\"id\":1}")),
        _ => panic!("replay"),
    }
    // Completing twice is refused by the record's condition: an answer is recorded once.
    assert!(store.complete(&claim, &response("{\"id\":2}"), now + 4).await.is_err());
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn an_abandoned_or_released_claim_can_be_taken_again() {
    let store = store().await;
    let now = 2_000_000;
    let key = unique("key");
    let Begin::Run(claim) = store.begin(scope("alice", &key), "fp".into(), now).await.unwrap() else { panic!() };
    store.release(&claim).await.unwrap();
    let Begin::Run(stalled) = store.begin(scope("alice", &key), "fp".into(), now).await.unwrap() else {
        panic!("a released key runs again");
    };

    // A stalled attempt's lock expires; a retry takes over, but only for the same request.
    let later = now + superpay::idempotency::IN_PROGRESS_SECONDS + 1;
    assert!(matches!(store.begin(scope("alice", &key), "other".into(), later).await.unwrap(), Begin::Refuse(_)));
    let Begin::Run(retry) = store.begin(scope("alice", &key), "fp".into(), later).await.unwrap() else { panic!() };
    // The stalled attempt wakes up: it can neither free nor answer for the retry's claim.
    assert!(store.release(&stalled).await.is_err());
    assert!(store.complete(&stalled, &response("{\"from\":\"stalled\"}"), later).await.is_err());
    match store.begin(scope("alice", &key), "fp".into(), later + 1).await.unwrap() {
        Begin::Refuse(p) => assert_eq!(p.code, "idempotency_request_in_progress", "the retry still holds the key"),
        _ => panic!("the retry's claim was disturbed"),
    }
    store.complete(&retry, &response("{\"from\":\"retry\"}"), later + 2).await.unwrap();
    match store.begin(scope("alice", &key), "fp".into(), later + 3).await.unwrap() {
        Begin::Replay(stored) => assert_eq!(stored.body, "{\"from\":\"retry\"}"),
        _ => panic!("replay"),
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_top_up_link_is_kept_hashed_funds_one_amount_and_never_expires_a_started_debit() {
    use superpay::dynamo::transact;
    use superpay::money::Money;
    use superpay::offline::topup::{
        RETENTION_SECONDS, TOPUP_NO_DEBIT, TOPUP_OPEN, TopUp, TopUpStore, key_of, new_token,
    };
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    let store = TopUpStore::new(dynamodb.clone(), env.table("TopUpsTable"));
    let usd = |a: &str| Money::parse(a, "USD").unwrap();
    let token = new_token();
    let topup = TopUp {
        key: key_of(&token),
        payment_id: unique("p"),
        user: unique("payer"),
        merchant_id: "m_x".into(),
        amount_due: usd("7.00"),
        payment_amount: usd("10.00"),
        link_expires_at: 1_000_000,
        paid: false,
        expired: false,
        amount: None,
        debit_started_at: None,
        debit_attempt: 0,
    };
    transact(&dynamodb, vec![store.create_item(&topup).unwrap()]).await.unwrap();

    // The table keeps the token's hash, and the hash opens nothing.
    let item = env.partition("TopUpsTable", "token", &topup.key).await;
    assert_eq!(item.len(), 1);
    assert!(env.partition("TopUpsTable", "token", &token).await.is_empty(), "no item is keyed by the token");
    assert_eq!(
        item[0]["expires_at"].as_n().unwrap(),
        &(1_000_000 + RETENTION_SECONDS).to_string(),
        "kept past its link"
    );
    assert_eq!(store.find(&token).await.unwrap().map(|t| t.key), Some(topup.key.clone()));
    assert_eq!(store.find(&topup.key).await.unwrap(), None, "a key read from the table is not a link");

    // The first debit fixes the amount; another form cannot start a second one or change it.
    transact(&dynamodb, vec![store.start_debit_item(&topup, usd("20.00"), 5).unwrap()]).await.unwrap();
    let again = transact(&dynamodb, vec![store.start_debit_item(&topup, usd("1000.00"), 6).unwrap()]).await;
    assert!(again.unwrap_err().broke(TOPUP_OPEN));
    let started = store.get(&topup.key).await.unwrap().unwrap();
    assert_eq!((started.amount, started.debit_started_at), (Some(usd("20.00")), Some(5)));
    // While the debit runs, the payment's expiry cannot expire the link.
    let expire = transact(&dynamodb, vec![store.expire_item(&topup.key).unwrap()]).await;
    assert!(expire.unwrap_err().broke(TOPUP_NO_DEBIT));
    // A declined debit opens the link again, with the next attempt's reference.
    transact(&dynamodb, vec![store.declined_item(&started, 10).unwrap()]).await.unwrap();
    let reopened = store.get(&topup.key).await.unwrap().unwrap();
    assert_eq!((reopened.debit_started_at, reopened.debit_attempt), (None, 1));
    assert_ne!(reopened.debit_reference(), started.debit_reference());
    transact(&dynamodb, vec![store.expire_item(&topup.key).unwrap()]).await.unwrap();
    assert!(store.get(&topup.key).await.unwrap().unwrap().expired);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_suspension_between_a_requests_checks_and_its_commit_stops_the_commit() {
    use superpay::dynamo::transact;
    use superpay::merchant::store::{MERCHANT_ACTIVE, MerchantStore};
    let env = Env::get();
    let shop = crate::purchases::merchant().await;
    let store = MerchantStore::new(env.dynamodb().await, env.table("MerchantsTable"));
    let status = |status: &'static str| {
        let path = format!("/merchants/{}/status", shop.id);
        async move { env.admin_post(&path, &serde_json::json!({"status": status}), None).await.0 }
    };
    // What a refund or an offline payment commits with: it holds while the merchant is active...
    transact(&env.dynamodb().await, vec![store.active_check(&shop.id).unwrap()]).await.unwrap();
    // ... and not once an admin suspended it, whatever the request read before.
    assert_eq!(status("suspended").await, reqwest::StatusCode::OK);
    let refused = transact(&env.dynamodb().await, vec![store.active_check(&shop.id).unwrap()]).await;
    assert!(refused.unwrap_err().broke(MERCHANT_ACTIVE));
    assert_eq!(status("active").await, reqwest::StatusCode::OK);
    transact(&env.dynamodb().await, vec![store.active_check(&shop.id).unwrap()]).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_home_partition_is_read_whole_and_no_kind_crowds_out_another_past_the_limit() {
    use superpay::attention::{AttentionStore, Class, Element, Personal, PersonalKind, READ_LIMIT};
    use superpay::dynamo::transact;
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    let store = AttentionStore::new(dynamodb.clone(), env.table("HomeTable"));
    let user = unique("home-user");
    let element = |id: String, class: Class| Element {
        id,
        kind: "test.element".into(),
        class,
        reason: "a test".into(),
        data: serde_json::json!({}),
        actions: vec![],
        deadline: None,
        expires_at: None,
        at: 1,
        critical: false,
        explain: serde_json::json!({}),
    };
    let device = Personal { kind: PersonalKind::Device, id: "d1".into(), at: 1, data: serde_json::json!({}) };
    transact(
        &dynamodb,
        vec![
            store.put_item(&user, &element("security:s1".into(), Class::Security)).unwrap(),
            store.put_many_item(&user, &element("session:p0".into(), Class::TimeBound)).unwrap(),
            store.dismissal_item(&user, "announcement:a1", 1).unwrap(),
            store.put_personal(&user, &device).unwrap(),
        ],
    )
    .await
    .unwrap();
    let ids = |elements: &[Element]| {
        let mut ids: Vec<String> = elements.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    };
    // A small partition, in one query: each kind where it belongs.
    let read = store.read(&user).await.unwrap();
    assert_eq!(ids(&read.elements), ["security:s1", "session:p0"]);
    assert_eq!(read.dismissed.into_iter().collect::<Vec<_>>(), ["announcement:a1"]);
    assert_eq!(read.personal, std::slice::from_ref(&device));

    // More elements kept apart than one read takes (as a stolen token could make): the security
    // element, the dismissal and the device are still read, and the many are bounded.
    let many: Vec<_> = (1..=READ_LIMIT)
        .map(|n| store.put_many_item(&user, &element(format!("session:p{n:03}"), Class::TimeBound)).unwrap())
        .collect();
    for chunk in many.chunks(100) {
        transact(&dynamodb, chunk.to_vec()).await.unwrap();
    }
    let read = store.read(&user).await.unwrap();
    let security: Vec<_> = read.elements.iter().filter(|e| e.class == Class::Security).collect();
    assert_eq!(security.len(), 1, "the security element is not crowded out");
    assert_eq!(read.elements.len(), 1 + READ_LIMIT as usize, "the elements kept apart are bounded by one read");
    assert!(read.dismissed.contains("announcement:a1"));
    assert_eq!(read.personal, [device]);
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_refusal_checked_before_the_claim_is_recorded_once_and_a_used_key_answers_as_its_record_says() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use superpay::Problem;
    use superpay::dynamo::transact;
    use superpay::miniapp::store::RequestStore;
    use superpay::miniapp::{Outcome, RelayedRequest};
    use superpay::problem::catalogue;
    let store = store().await;
    let now = 3_000_000;
    let ran = AtomicUsize::new(0);
    let refused = |_: &superpay::idempotency::Scope| async {
        Err::<(), _>(Problem::new(catalogue::MINIAPP_SESSION_INVALID, "no session"))
    };
    let passes = |_: &superpay::idempotency::Scope| async { Ok(()) };
    let work = |_claim, ()| {
        ran.fetch_add(1, Ordering::SeqCst);
        async { Ok(response("{\"id\":1}").into_response()) }
    };
    let answered = |outcome: Result<_, Problem>| match outcome {
        Ok(response) => StoredResponse::from_response(&response).status,
        Err(problem) => problem.status().as_u16(),
    };

    // A refusal from the check is recorded: the same request answers it again, even once its check
    // would pass, and nothing runs.
    let key = unique("key");
    let first = store.run_checked(scope("alice", &key), "fp-1".into(), now, vec![], refused, work).await;
    assert_eq!(first.map_err(|p| p.code).err(), Some("miniapp_session_invalid"));
    let again = store.run_checked(scope("alice", &key), "fp-1".into(), now + 1, vec![], passes, work).await;
    assert_eq!(answered(again), 403, "the recorded refusal");
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // The key for another request is refused as reused, whatever the check says.
    let other = store.run_checked(scope("alice", &key), "fp-2".into(), now + 1, vec![], refused, work).await;
    assert_eq!(other.map_err(|p| p.code).err(), Some("idempotency_key_reused"));

    // A key in flight or answered: a refusing check changes nothing, the record answers.
    let busy = unique("key");
    let Begin::Run(claim) = store.begin(scope("alice", &busy), "fp-1".into(), now).await.unwrap() else {
        panic!("a fresh key runs");
    };
    let refused_while_busy =
        store.run_checked(scope("alice", &busy), "fp-1".into(), now + 1, vec![], refused, work).await;
    assert_eq!(refused_while_busy.map_err(|p| p.code).err(), Some("idempotency_request_in_progress"));
    store.complete(&claim, &response("{\"id\":7}"), now + 2).await.unwrap();
    let replayed =
        store.run_checked(scope("alice", &busy), "fp-1".into(), now + 3, vec![], refused, work).await.unwrap();
    assert_eq!(StoredResponse::from_response(&replayed), response("{\"id\":7}"));

    // A failure of ours in the check records nothing: the key stays free, and what passes runs.
    let free = unique("key");
    let failed = |_: &superpay::idempotency::Scope| async { Err::<(), _>(Problem::internal("a read failed")) };
    let failure = store.run_checked(scope("alice", &free), "fp-1".into(), now, vec![], failed, work).await;
    assert_eq!(answered(failure), 500);
    let ran_now = store.run_checked(scope("alice", &free), "fp-1".into(), now + 1, vec![], passes, work).await;
    assert_eq!(answered(ran_now), 201);
    assert_eq!(ran.load(Ordering::SeqCst), 1);

    // A guard that no longer holds: a mini-app request recorded, by an earlier attempt under the
    // key, after the check read it absent. Nothing is recorded unclaimed; the key is claimed and
    // checked again, as `run` does.
    let guarded = unique("key");
    let checks = AtomicUsize::new(0);
    let counted = |_: &superpay::idempotency::Scope| {
        checks.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(Problem::new(catalogue::MINIAPP_SESSION_INVALID, "no session")) }
    };
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    let requests = RequestStore::new(dynamodb.clone(), env.table("MiniAppRequestsTable"));
    // A whole record, as a commit writes it (the reconciliation reads every one), charging nothing.
    let recorded = RelayedRequest {
        id: unique("r"),
        app_id: unique("a"),
        user: "alice".into(),
        action: "look".into(),
        approved: None,
        outcome: Outcome::Completed { deliver: "nothing".into() },
        created_at: now,
    };
    transact(&dynamodb, vec![requests.create_item(&recorded).unwrap()]).await.unwrap();
    let guards = vec![requests.absent_item(&recorded.id).unwrap()];
    let refused_after = store.run_checked(scope("alice", &guarded), "fp-1".into(), now, guards, counted, work).await;
    assert_eq!(refused_after.map_err(|p| p.code).err(), Some("miniapp_session_invalid"));
    assert_eq!(checks.load(Ordering::SeqCst), 2, "checked before the claim and again after it");
    let replayed = store.run_checked(scope("alice", &guarded), "fp-1".into(), now + 1, vec![], passes, work).await;
    assert_eq!(answered(replayed), 403, "recorded by the claimed run");
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}
