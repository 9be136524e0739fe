//! The HTTP API, called with an admin token: every action there is the admin route's, audited by it.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use superpay::crypto::sha256_hex;

use crate::LocalStack;

/// The HTTP API, called with the admin token.
pub struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(url: Option<String>, token: Option<String>, local: &LocalStack) -> Result<Self, String> {
        let token = match (token, &url) {
            (Some(token), _) => token,
            // The local stack's token goes to the local stack only, never to a URL named.
            (None, Some(url)) => {
                return Err(format!("no admin token for {url}: give it with SUPERPAY_ADMIN_TOKEN (or --token)"));
            }
            (None, None) => std::fs::read_to_string(local.dir().join("admin.token"))
                .map_err(|_| "no --token and no .superpay/admin.token: start the local stack with `cargo stack up`")?
                .trim()
                .to_owned(),
        };
        let url = match url {
            Some(url) => url,
            None => local.read()?.api_url,
        };
        Ok(Api { url: url.trim_end_matches('/').to_owned(), token, http: reqwest::Client::new() })
    }

    /// `method path` with `headers` and a JSON `body`: the answer, or the problem as one line.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url)).bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| match e.is_connect() {
            true => {
                format!("{method} {path}: nothing answers at {} (is the stack running? `cargo stack up`)", self.url)
            }
            false => format!("{method} {path}: {e}"),
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| format!("{method} {path}: {e}"))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return match answer.is_object() {
                true => Ok(answer),
                false => Err(format!(
                    "{method} {path}: {} with an answer that is no JSON object: {text:.200}",
                    status.as_u16()
                )),
            };
        }
        Err(match (status, answer["code"].as_str()) {
            (_, Some(code)) => {
                format!("{method} {path}: {} {code}: {}", status.as_u16(), answer["detail"].as_str().unwrap_or(""))
            }
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, None) => {
                format!("{method} {path}: {} (the token is not an admin's, or expired)", status.as_u16())
            }
            _ => format!("{method} {path}: {} {text:.200}", status.as_u16()),
        })
    }
}

/// The key of `action` with `body` over `resource`'s version `base`: the same command over the same
/// version is one request, however often it is retried.
pub fn idempotency_key(action: &str, resource: &str, base: u64, body: &Value) -> String {
    format!("ops-{action}-{}", &sha256_hex(format!("{resource}\n{base}\n{body}").as_bytes())[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_token_never_goes_to_a_url_named() {
        let local = LocalStack(std::env::temp_dir().join("ops-no-stack.json"));
        let refused = Api::new(Some("https://api.example".into()), None, &local).err().unwrap();
        assert_eq!(refused, "no admin token for https://api.example: give it with SUPERPAY_ADMIN_TOKEN (or --token)");
        assert!(Api::new(Some("https://api.example".into()), Some("t".into()), &local).is_ok());
    }
}
