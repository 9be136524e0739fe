//! The JWT authorizer of the local HTTP API, checking tokens as API Gateway's would: RS256
//! signature against the published keys, `iss`, `aud`, `exp`/`nbf`, then the route's scopes.
//! Development tokens are signed with the committed key in `infra/local/dev-keys/`.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::template::JwtAuthorizer;

const DEV_KEY_PEM: &[u8] = include_bytes!("../dev-keys/jwt-signing-key.pem");
const KEY_ID: &str = "superpay-local-dev";

pub struct DevKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwks: JwkSet,
}

/// Why a token was refused: API Gateway answers 401 for the first three and 403 for the last.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no bearer token")]
    Missing,
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token has none of the scopes {0:?}")]
    MissingScope(Vec<String>),
}

/// What the authorizer hands the function: claims as strings (as API Gateway does) and scopes.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorized {
    pub claims: HashMap<String, String>,
    pub scopes: Option<Vec<String>>,
}

impl DevKeys {
    pub fn load() -> Result<Self, jsonwebtoken::errors::Error> {
        let encoding = EncodingKey::from_rsa_pem(DEV_KEY_PEM)?;
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)?;
        jwk.common.key_id = Some(KEY_ID.to_owned());
        let decoding = DecodingKey::from_jwk(&jwk)?;
        Ok(DevKeys { encoding, decoding, jwks: JwkSet { keys: vec![jwk] } })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A token for `subject` with `scopes`, valid for `ttl_seconds`, accepted by `authorizer`.
    pub fn mint(
        &self,
        authorizer: &JwtAuthorizer,
        subject: &str,
        scopes: &[&str],
        ttl_seconds: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = now();
        let mut claims = Map::new();
        claims.insert("iss".into(), authorizer.issuer.clone().into());
        claims.insert("aud".into(), authorizer.audience.first().cloned().unwrap_or_default().into());
        claims.insert("sub".into(), subject.into());
        claims.insert("iat".into(), now.into());
        claims.insert("exp".into(), (now + ttl_seconds).into());
        if !scopes.is_empty() {
            claims.insert("scope".into(), scopes.join(" ").into());
        }
        self.sign(&claims)
    }

    fn sign(&self, claims: &Map<String, Value>) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Checks `authorization` (the header's value) for a route with `required_scopes`.
    pub fn authorize(
        &self,
        authorizer: &JwtAuthorizer,
        authorization: Option<&str>,
        required_scopes: &[String],
    ) -> Result<Authorized, Refusal> {
        let raw = authorization.unwrap_or_default().trim();
        // API Gateway takes the token with or without the "Bearer" scheme.
        let token = match raw.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ if raw.eq_ignore_ascii_case("bearer") => "",
            _ => raw,
        };
        if token.is_empty() {
            return Err(Refusal::Missing);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refusal::Invalid(e.to_string()))?;
        if header.kid.as_deref() != Some(KEY_ID) {
            return Err(Refusal::Invalid("unknown signing key (kid)".into()));
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&authorizer.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        // API Gateway matches `aud`, or `client_id` when there is no `aud` (access tokens): below.
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map_err(|e| Refusal::Invalid(e.to_string()))?;
        let audience_matches = |v: &Value| v.as_str().is_some_and(|a| authorizer.audience.iter().any(|x| x == a));
        let audience_ok = match data.claims.get("aud") {
            Some(Value::Array(audiences)) => audiences.iter().any(audience_matches),
            Some(audience) => audience_matches(audience),
            None => data.claims.get("client_id").is_some_and(audience_matches),
        };
        if !audience_ok {
            return Err(Refusal::Invalid("neither aud nor client_id is an accepted audience".into()));
        }
        if data.claims.get("iat").and_then(Value::as_u64).is_some_and(|iat| iat > now()) {
            return Err(Refusal::Invalid("token issued in the future (iat)".into()));
        }
        let token_scopes = scopes_of(&data.claims);
        if !required_scopes.is_empty() && !required_scopes.iter().any(|s| token_scopes.contains(s)) {
            return Err(Refusal::MissingScope(required_scopes.to_vec()));
        }
        let claims = data.claims.iter().map(|(k, v)| (k.clone(), claim_text(v))).collect();
        Ok(Authorized { claims, scopes: (!token_scopes.is_empty()).then_some(token_scopes) })
    }
}

/// Scopes from `scope` (space-separated, OAuth 2.0) or `scp` (a list or a string).
fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    let mut scopes = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => scopes.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => scopes.extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
            _ => {}
        }
    }
    scopes
}

/// API Gateway passes every claim as a string; a list becomes `[a b]`.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(claim_text).collect::<Vec<_>>().join(" ")),
        other => other.to_string(),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authorizer() -> JwtAuthorizer {
        JwtAuthorizer { issuer: "http://issuer.test/".into(), audience: vec!["superpay".into()] }
    }

    #[test]
    fn accepts_its_own_tokens_and_passes_claims_as_strings() {
        let keys = DevKeys::load().unwrap();
        let token = keys.mint(&authorizer(), "alice", &["superpay/admin"], 60).unwrap();
        let ok = keys.authorize(&authorizer(), Some(&format!("Bearer {token}")), &["superpay/admin".into()]).unwrap();
        assert_eq!(ok.claims["sub"], "alice");
        assert!(ok.claims["exp"].parse::<u64>().is_ok());
        assert_eq!(ok.scopes, Some(vec!["superpay/admin".to_owned()]));
        assert!(keys.authorize(&authorizer(), Some(&token), &[]).is_ok(), "no Bearer prefix is accepted too");
    }

    #[test]
    fn audience_may_be_client_id_and_the_future_is_refused() {
        let keys = DevKeys::load().unwrap();
        let claims = |extra: Value| {
            let mut c: Map<String, Value> = serde_json::from_value(serde_json::json!({
                "iss": "http://issuer.test/", "exp": now() + 60, "sub": "alice"
            }))
            .unwrap();
            c.extend(extra.as_object().unwrap().clone());
            keys.sign(&c).unwrap()
        };
        let access_token = claims(serde_json::json!({"client_id": "superpay"}));
        assert!(keys.authorize(&authorizer(), Some(&access_token), &[]).is_ok());
        let listed = claims(serde_json::json!({"aud": ["other", "superpay"]}));
        assert!(keys.authorize(&authorizer(), Some(&listed), &[]).is_ok());
        let no_audience = claims(serde_json::json!({}));
        assert!(matches!(keys.authorize(&authorizer(), Some(&no_audience), &[]), Err(Refusal::Invalid(_))));
        let future = claims(serde_json::json!({"aud": "superpay", "iat": now() + 300}));
        assert!(matches!(keys.authorize(&authorizer(), Some(&future), &[]), Err(Refusal::Invalid(_))));
        let scp = claims(serde_json::json!({"aud": "superpay", "scp": ["superpay/admin"]}));
        assert!(keys.authorize(&authorizer(), Some(&scp), &["superpay/admin".into()]).is_ok());
    }

    #[test]
    fn refuses_missing_forged_expired_foreign_and_underscoped_tokens() {
        let keys = DevKeys::load().unwrap();
        let token = keys.mint(&authorizer(), "alice", &[], 60).unwrap();
        assert_eq!(keys.authorize(&authorizer(), None, &[]), Err(Refusal::Missing));
        assert_eq!(keys.authorize(&authorizer(), Some("Bearer "), &[]), Err(Refusal::Missing));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(keys.authorize(&authorizer(), Some(&forged), &[]), Err(Refusal::Invalid(_))));
        let expired = keys.mint(&authorizer(), "alice", &[], 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(matches!(keys.authorize(&authorizer(), Some(&expired), &[]), Err(Refusal::Invalid(_))));
        let other_issuer = JwtAuthorizer { issuer: "http://elsewhere/".into(), ..authorizer() };
        assert!(matches!(keys.authorize(&other_issuer, Some(&token), &[]), Err(Refusal::Invalid(_))));
        let other_audience = JwtAuthorizer { audience: vec!["other".into()], ..authorizer() };
        assert!(matches!(keys.authorize(&other_audience, Some(&token), &[]), Err(Refusal::Invalid(_))));
        assert_eq!(
            keys.authorize(&authorizer(), Some(&token), &["superpay/admin".into()]),
            Err(Refusal::MissingScope(vec!["superpay/admin".into()]))
        );
    }
}
