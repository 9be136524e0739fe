//! Errors as `application/problem+json` (RFC 9457) with a stable machine-readable `code`, every
//! code declared once in the catalogue (`catalogue`), which gives each its status and title.

pub mod catalogue;

pub use catalogue::Code;

use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Serialize;
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem answer. `code` is stable across releases: clients branch on it, not on `detail`.
/// Built only from a catalogued `Code`, so its status and title are the catalogue's.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    pub code: &'static str,
    pub detail: String,
    /// Extra members (e.g. `current_version`), flattened into the problem object.
    #[serde(flatten)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    pub fn new(code: &'static Code, detail: impl Into<String>) -> Self {
        Self::with_status(code, code.status(), detail)
    }

    /// The answer of the one case the catalogue names for `code` with another status (e.g. a
    /// suspended merchant's refund is 403, not 409); `code`'s own status if it names none.
    pub fn alternate(code: &'static Code, detail: impl Into<String>) -> Self {
        Self::with_status(code, code.alternate().map_or(code.status(), |(status, _)| status), detail)
    }

    fn with_status(code: &'static Code, status: u16, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("urn:superpay:problem:{}", code.code()),
            title: code.title(),
            status,
            code: code.code(),
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    /// A failure that is ours, not the caller's. The cause is logged, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            catalogue::INTERNAL,
            "the request could not be completed; it is safe to retry with the same Idempotency-Key",
        )
    }

    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.to_owned(), value.into());
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn is_server_error(&self) -> bool {
        self.status >= 500
    }

    pub fn to_response(&self) -> Response<Body> {
        let body = serde_json::to_string(self).unwrap_or_default();
        let mut response = Response::new(Body::Text(body));
        *response.status_mut() = self.status();
        response
            .headers_mut()
            .insert(lambda_http::http::header::CONTENT_TYPE, lambda_http::http::HeaderValue::from_static(CONTENT_TYPE));
        response
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_with_code_and_extensions() {
        let p = Problem::new(catalogue::VERSION_CONFLICT, "stale").with("current_version", 4);
        let response = p.to_response();
        assert_eq!(response.status(), 412);
        assert_eq!(response.headers()["content-type"], CONTENT_TYPE);
        let Body::Text(text) = response.body() else { panic!("text body") };
        let json: Value = serde_json::from_str(text).unwrap();
        assert_eq!(json["type"], "urn:superpay:problem:version_conflict");
        assert_eq!(json["title"], "Version conflict");
        assert_eq!(json["status"], 412);
        assert_eq!(json["code"], "version_conflict");
        assert_eq!(json["current_version"], 4);
    }
}
