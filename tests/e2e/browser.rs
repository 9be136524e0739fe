//! The top-up page in a real browser: headless Chromium driven through ChromeDriver (WebDriver
//! over HTTP, spoken here with reqwest). It opens the link from the payer's message at a phone's
//! size, fills and submits the form, and the payment settles with the money moved once. The
//! screenshots are kept beside the functions' logs (`topup-form.png`, `topup-result.png`).

use std::time::Duration;

use base64::Engine;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use superpay::ledger::AccountId;
use superpay_e2e::{Env, unique};

use crate::offline::{till, until_state};
use crate::purchases::balance;
use crate::topup::{topup_link, waiting_payment};

/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
    }
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver runs (cargo stack test installs Debian's chromium-driver)");
        let driver = Driver { process, url: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
        for _ in 0..100 {
            if driver.http.get(format!("{}/status", driver.url)).send().await.is_ok() {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = self.http.request(method, format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        let json: Value = response.json().await.unwrap();
        assert!(json["value"].get("error").is_none(), "{path}: {json}");
        json["value"].clone()
    }

    /// Finds an element, waiting for it (a submitted form's next page may still be loading).
    async fn element(&self, session: &str, css: &str) -> String {
        for _ in 0..50 {
            let response = self
                .http
                .post(format!("{}/session/{session}/element", self.url))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap();
            let found: Value = response.json().await.unwrap();
            if let Some(id) = found["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {css} within 5 s");
    }

    async fn screenshot(&self, session: &str, name: &str) {
        let png = self.call(reqwest::Method::GET, &format!("/session/{session}/screenshot"), json!({})).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(Env::get().stack.logs.join(name), bytes).unwrap();
    }
}

#[tokio::test]
#[ignore = "needs the local stack: cargo stack test"]
async fn a_payer_tops_up_in_a_browser_and_the_payment_completes() {
    let till = till().await;
    let (phone, payment) = waiting_payment(&till, "payer", "2.50", "9.00").await;
    let link = topup_link(&phone.user).await;

    let driver = Driver::start().await;
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    let session = driver
        .call(
            reqwest::Method::POST,
            "/session",
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--window-size=390,844", format!("--user-data-dir={}", profile.display())]
            }}}}),
        )
        .await["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = reqwest::Method::POST;
    driver.call(post.clone(), &format!("/session/{session}/url"), json!({"url": link})).await;
    let due = driver.element(&session, "#due").await;
    let shown = driver.call(reqwest::Method::GET, &format!("/session/{session}/element/{due}/text"), json!({})).await;
    assert_eq!(shown, "6.50 USD");
    driver.screenshot(&session, "topup-form.png").await;

    let amount = driver.element(&session, "#amount").await;
    driver.call(post.clone(), &format!("/session/{session}/element/{amount}/clear"), json!({})).await;
    driver.call(post.clone(), &format!("/session/{session}/element/{amount}/value"), json!({"text": "6.50"})).await;
    let add = driver.element(&session, "#add").await;
    driver.call(post.clone(), &format!("/session/{session}/element/{add}/click"), json!({})).await;
    let outcome = driver.element(&session, "#outcome").await;
    let title =
        driver.call(reqwest::Method::GET, &format!("/session/{session}/element/{outcome}/text"), json!({})).await;
    assert_eq!(title, "Funds added");
    driver.screenshot(&session, "topup-result.png").await;
    driver.call(reqwest::Method::DELETE, &format!("/session/{session}"), json!({})).await;
    let _ = std::fs::remove_dir_all(profile);

    until_state(&till, &payment, "settled").await;
    assert_eq!(balance(AccountId::merchant(&till.merchant)).await, Decimal::new(900, 2), "paid once");
    assert_eq!(balance(AccountId::reserve(&phone.user)).await, Decimal::ZERO);
}
