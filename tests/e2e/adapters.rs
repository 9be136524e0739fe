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
        Begin::Refuse(p) => assert_eq!((p.status, p.code), (409, "idempotency_request_in_progress")),
        _ => panic!("in flight"),
    }
    match store.begin(scope("alice", &key), "fp-2".into(), now + 1).await.unwrap() {
        Begin::Refuse(p) => assert_eq!((p.status, p.code), (422, "idempotency_key_reused")),
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
async fn a_top_up_link_funds_one_amount_however_often_its_form_is_sent() {
    use superpay::money::Money;
    use superpay::offline::topup::{TopUp, TopUpStore, new_token};
    let env = Env::get();
    let dynamodb = env.dynamodb().await;
    let store = TopUpStore::new(dynamodb.clone(), env.table("TopUpsTable"));
    let usd = |a: &str| Money::parse(a, "USD").unwrap();
    let topup = TopUp {
        token: new_token(),
        payment_id: unique("p"),
        user: unique("payer"),
        merchant_id: "m_x".into(),
        amount_due: usd("7.00"),
        payment_amount: usd("10.00"),
        expires_at: i64::MAX / 2,
        paid: false,
        amount: None,
    };
    superpay::dynamo::transact(&dynamodb, vec![store.create_item(&topup).unwrap()]).await.unwrap();
    assert_eq!(store.fix_amount(&topup.token, usd("20.00")).await.unwrap(), usd("20.00"));
    // A later form (another tab, a retry after a failure) cannot change what the bank is asked for.
    assert_eq!(store.fix_amount(&topup.token, usd("1000.00")).await.unwrap(), usd("20.00"));
    assert_eq!(store.get(&topup.token).await.unwrap().unwrap().amount, Some(usd("20.00")));
}
