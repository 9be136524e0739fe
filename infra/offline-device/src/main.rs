//! A payer's phone on the command line (`cargo device ...`), so a person can try offline payments:
//!
//!   cargo device enroll [--limit 50.00 --currency USD]   enroll a new key with the local stack
//!   cargo device code                                     print the next offline payment code
//!   cargo device present --amount 12.00 CODE              present it as the demo till terminal
//!   cargo device payment ID                               the payment's state, as that terminal
//!
//! The key (PKCS#8) and the counter live in `.superpay/device.json` (or `--file PATH`); only the
//! public key ever leaves it. `enroll` uses the stack's URL and user token from `.superpay/`.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use superpay::offline::{DeviceKey, OfflineCode};

#[derive(Serialize, Deserialize)]
struct DeviceFile {
    device_id: String,
    key_id: String,
    account: String,
    /// The private key, PKCS#8, base64. It never leaves this file.
    private_key: String,
    /// The last counter used; the next code uses the next one.
    counter: u64,
}

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn state_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.superpay")
}

async fn enroll(args: &[String], file: &PathBuf) -> Result<(), String> {
    let state = state_dir();
    let api = match option(args, "--api") {
        Some(api) => api,
        None => {
            let stack: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(state.join("stack.json"))
                    .map_err(|e| format!("is `cargo stack up` running? {e}"))?,
            )
            .map_err(|e| e.to_string())?;
            stack["api_url"].as_str().unwrap_or_default().to_owned()
        }
    };
    let token = match option(args, "--token") {
        Some(token) => token,
        None => std::fs::read_to_string(state.join("user.token"))
            .map_err(|e| format!("no user token: {e}"))?
            .trim()
            .to_owned(),
    };
    let key = DeviceKey::generate();
    let body = serde_json::json!({
        "public_key": key.public_key(),
        "offline_limit": {
            "amount": option(args, "--limit").unwrap_or_else(|| "50.00".into()),
            "currency": option(args, "--currency").unwrap_or_else(|| "USD".into()),
        },
    });
    let response = reqwest::Client::new()
        .post(format!("{api}/devices"))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let device: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("enrollment refused ({status}): {device}"));
    }
    let saved = DeviceFile {
        device_id: device["id"].as_str().unwrap_or_default().into(),
        key_id: device["key_id"].as_str().unwrap_or_default().into(),
        account: device["account"].as_str().unwrap_or_default().into(),
        private_key: STANDARD.encode(key.pkcs8().expose()),
        counter: 0,
    };
    write(file, &saved)?;
    println!(
        "enrolled device {} (key {}) for {}; key kept in {}",
        saved.device_id,
        saved.key_id,
        saved.account,
        file.display()
    );
    Ok(())
}

fn write(file: &PathBuf, device: &DeviceFile) -> Result<(), String> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(file, serde_json::to_string_pretty(device).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn code(file: &PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: {e} (run `cargo device enroll` first)", file.display()))?;
    let mut device: DeviceFile = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let pkcs8 = STANDARD.decode(&device.private_key).map_err(|e| e.to_string())?;
    let key = DeviceKey::from_pkcs8(&pkcs8).ok_or("the key file holds no P-256 key")?;
    // The counter is saved before the code is shown: a crash never reuses a counter.
    device.counter += 1;
    write(file, &device)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let code = OfflineCode {
        key_id: device.key_id.clone(),
        account: device.account.clone(),
        counter: device.counter,
        issued_at: now,
    };
    println!("{}", code.sign(&key));
    Ok(())
}

/// The demo till terminal `cargo stack up` seeds (its key is written to `.superpay/terminal.json`).
struct TerminalFile {
    key_id: String,
    master: superpay::crypto::Key,
    api_url: String,
}

fn terminal() -> Result<TerminalFile, String> {
    let path = state_dir().join("terminal.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (is `cargo stack up` running?)", path.display()))?;
    let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(TerminalFile {
        key_id: file["key_id"].as_str().unwrap_or_default().to_owned(),
        master: superpay::crypto::Key::from_base64(file["secret"].as_str().unwrap_or_default())
            .ok_or("no terminal key")?,
        api_url: file["api_url"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Sends a request signed with the terminal's key and prints the answer.
async fn as_terminal(method: reqwest::Method, path: &str, body: String) -> Result<(), String> {
    let till = terminal()?;
    let signing = superpay::crypto::derive(&till.master, superpay::crypto::Purpose::RequestSigning);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let signature =
        superpay::crypto::Signature::create(&till.key_id, &signing, method.as_str(), path, body.as_bytes(), now);
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", till.api_url)).body(body);
    request =
        request.header("idempotency-key", uuid::Uuid::new_v4().to_string()).header("content-type", "application/json");
    for (name, value) in signature.headers() {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    println!("{} {}", response.status(), response.text().await.map_err(|e| e.to_string())?);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = option(&args, "--file").map(PathBuf::from).unwrap_or_else(|| state_dir().join("device.json"));
    let outcome = match args.first().map(String::as_str) {
        Some("enroll") => enroll(&args, &file).await,
        Some("code") => code(&file),
        Some("present") => match (option(&args, "--amount"), args.last().filter(|a| a.starts_with("SP1."))) {
            (Some(amount), Some(code)) => {
                let body = serde_json::json!({ "amount": { "amount": amount, "currency": option(&args, "--currency").unwrap_or_else(|| "USD".into()) }, "code": code });
                as_terminal(reqwest::Method::POST, "/offline/payments", body.to_string()).await
            }
            _ => Err("usage: cargo device present --amount 12.00 [--currency USD] SP1....".into()),
        },
        Some("payment") => match args.get(1) {
            Some(id) => as_terminal(reqwest::Method::GET, &format!("/offline/payments/{id}"), String::new()).await,
            None => Err("usage: cargo device payment p_...".into()),
        },
        _ => Err("usage: cargo device enroll [--limit 50.00] [--currency USD] [--api URL] [--token JWT] [--file PATH]\n       cargo device code [--file PATH]\n       cargo device present --amount 12.00 CODE\n       cargo device payment ID".into()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
