//! Helpers for the end-to-end tests: the running local stack (from `SUPERPAY_STACK`, which
//! `cargo stack test` sets), an HTTP client, tokens, and unique names that keep tests apart.

use std::collections::HashMap;
use std::sync::OnceLock;

use aws_sdk_dynamodb::types::AttributeValue;

use superpay_local::jwt::DevKeys;
use superpay_local::stack::StackInfo;

pub type Item = HashMap<String, AttributeValue>;

pub struct Env {
    pub stack: StackInfo,
    keys: DevKeys,
}

impl Env {
    /// The stack, read once per test binary; a clear panic when the tests run outside `cargo stack test`.
    pub fn get() -> &'static Env {
        static ENV: OnceLock<Env> = OnceLock::new();
        ENV.get_or_init(|| {
            let stack = StackInfo::from_env().unwrap_or_else(|e| panic!("{e}"));
            let keys = DevKeys::load().expect("the development signing key loads");
            Env { stack, keys }
        })
    }

    /// An HTTP client for the calling test: each `#[tokio::test]` has its own runtime, and a
    /// client's pooled connections belong to the runtime that opened them.
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    /// `GET path` as the holder of `token`, read as JSON.
    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        let response = self.http().get(self.url(path)).bearer_auth(token).send().await.expect("the API answers");
        response.json().await.expect("a JSON body")
    }

    /// `POST path` as the holder of `token`, with a JSON `body` and an Idempotency-Key when given:
    /// the status and the JSON answer (`null` when there is none).
    pub async fn post_json(
        &self,
        token: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        key: Option<&str>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let mut request = self.http().post(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("the API answers");
        (response.status(), response.json().await.unwrap_or_default())
    }

    /// `post_json` as the admin.
    pub async fn admin_post(
        &self,
        path: &str,
        body: &serde_json::Value,
        key: Option<&str>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        self.post_json(&self.admin_token(), path, Some(body), key).await
    }

    /// A POST signed as a merchant (or any party holding `master`) signs it: see shared/src/crypto.rs.
    pub fn signed(
        &self,
        request: reqwest::RequestBuilder,
        master: &superpay::crypto::Key,
        key_id: &str,
        sign_path: &str,
        body: &str,
    ) -> reqwest::RequestBuilder {
        self.signed_as("POST", request, master, key_id, sign_path, body)
    }

    /// The same for a request of another `method` (the signature covers it).
    pub fn signed_as(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
        master: &superpay::crypto::Key,
        key_id: &str,
        sign_path: &str,
        body: &str,
    ) -> reqwest::RequestBuilder {
        let signing = superpay::crypto::derive(master, superpay::crypto::Purpose::RequestSigning);
        let now = superpay::clock::now_epoch_seconds();
        let signature = superpay::crypto::Signature::create(key_id, &signing, method, sign_path, body.as_bytes(), now);
        self.with_signature(request, &signature).body(body.to_owned())
    }

    pub fn with_signature(
        &self,
        request: reqwest::RequestBuilder,
        signature: &superpay::crypto::Signature,
    ) -> reqwest::RequestBuilder {
        signature.headers().into_iter().fold(request, |request, (name, value)| request.header(name, value))
    }

    /// `GET path` of the merchant simulator (what it saw: `/_sim/...`), read as JSON.
    pub async fn simulator(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.stack.merchant_simulator_url);
        self.http().get(url).send().await.expect("the simulator answers").json().await.expect("JSON")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.stack.api_url)
    }

    /// A bearer token for `subject` holding `scopes`, as the deployed identity provider would issue.
    pub fn token(&self, subject: &str, scopes: &[&str]) -> String {
        self.keys.mint(&self.stack.authorizer(), subject, scopes, 600).expect("a token")
    }

    pub fn admin_token(&self) -> String {
        self.token("e2e-admin", &[superpay::auth::ADMIN_SCOPE])
    }

    pub fn user_token(&self) -> String {
        self.token("e2e-user", &[])
    }

    pub fn table(&self, logical_id: &str) -> &str {
        self.stack.tables.get(logical_id).unwrap_or_else(|| panic!("no table {logical_id} in the stack"))
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.stack.dynamodb().await
    }

    pub async fn ledger(&self) -> superpay::ledger::store::LedgerStore {
        superpay::ledger::store::LedgerStore::new(self.dynamodb().await, self.table("LedgerTable"))
    }

    /// Puts `amount` USD into `account` from `owner`'s bank (their funding account), as a test's setup.
    pub async fn fund(&self, owner: &str, account: superpay::ledger::AccountId, amount: &str) {
        let money = superpay::money::Money::parse(amount, "USD").expect("a test amount");
        let from = superpay::ledger::AccountId::funding(owner);
        let fund = superpay::ledger::Transfer::between(unique("fund"), money, from, account, "test.fund", "e2e".into())
            .expect("a transfer between two accounts");
        // The fault run restarts DynamoDB now and then: a setup's write waits for it to be back.
        let ledger = self.ledger().await;
        for attempt in 1.. {
            match ledger.apply(&fund, vec![], 0).await {
                Ok(_) => return,
                Err(e) if attempt < 30 => {
                    eprintln!("funding {owner} failed ({e}); trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("the funding applies: {e}"),
            }
        }
    }

    /// Deletes the record of `key` (sent by `caller` to `route`, e.g. `POST /offline/payments`), as
    /// its expiry after 24 hours would.
    pub async fn forget_idempotency_key(&self, caller: &str, route: &str, key: &str) {
        let key = superpay::idempotency::IdempotencyKey::parse(Some(key)).expect("a valid key");
        let scope = superpay::idempotency::Scope { caller: caller.into(), route: route.into(), key };
        self.dynamodb()
            .await
            .delete_item()
            .table_name(self.table("IdempotencyTable"))
            .key("id", AttributeValue::S(scope.record_id()))
            .send()
            .await
            .expect("the record is deleted");
    }

    /// Every item of one partition of a table, straight from DynamoDB (consistent read).
    pub async fn partition(&self, table: &str, key: &str, value: &str) -> Vec<Item> {
        self.dynamodb()
            .await
            .query()
            .table_name(self.table(table))
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", key)
            .expression_attribute_values(":v", AttributeValue::S(value.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("query")
            .items
            .unwrap_or_default()
    }
}

/// A name no other test (or earlier run against a persistent stack) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
