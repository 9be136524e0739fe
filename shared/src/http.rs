//! HTTP API (payload 2.0) glue shared by every HTTP function: the run loop, JSON bodies, headers.

use std::future::Future;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response, service_fn};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::Caller;
use crate::problem::catalogue;
use crate::{Problem, ids};

/// What was asked, as the finishing step of `run` sees it (the request itself went to the handler).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    /// The route as template.yaml declares it.
    pub route: String,
    /// The JWT's subject, on a user's or admin's route.
    pub user: Option<String>,
    /// The `Superpay-Flow` header: where in its flow the client says it is (`<flow>/<step>`).
    pub flow: Option<String>,
    /// Whether it carried an Idempotency-Key (it creates something or moves money).
    pub idempotent: bool,
}

impl Asked {
    pub fn of(request: &Request) -> Self {
        let text = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Asked {
            route: route_key(request).to_owned(),
            user: Caller::from_request(request).ok().map(|c| c.subject),
            flow: text("superpay-flow"),
            idempotent: request.headers().contains_key("idempotency-key"),
        }
    }
}

/// Runs an HTTP function: each request that passes `admit` goes to `handler`; a `Problem` becomes
/// problem+json; then `finish` sees every answer, with what was asked, before it leaves.
pub async fn run<F, Fut, G, GFut>(handler: F, finish: G) -> Result<(), lambda_http::Error>
where
    F: Fn(Request) -> Fut + Sync,
    Fut: Future<Output = Result<Response<Body>, Problem>> + Send,
    G: Fn(Asked, Response<Body>) -> GFut + Sync,
    GFut: Future<Output = Response<Body>> + Send,
{
    let (handler, finish) = (&handler, &finish);
    lambda_http::run(service_fn(move |request: Request| async move {
        let asked = Asked::of(&request);
        let outcome = match admit(&request) {
            Ok(()) => handler(request).await,
            Err(refused) => Err(refused),
        };
        let response = match outcome {
            Ok(response) => response,
            Err(problem) => {
                if !problem.is_server_error() {
                    tracing::info!(route = asked.route, status = problem.status().as_u16(), code = problem.code, detail = %problem.detail, "refused");
                }
                problem.to_response()
            }
        };
        let response = finish(asked, response).await;
        Ok::<_, std::convert::Infallible>(response)
    }))
    .await
}

/// The most a request body may take, in bytes (256 KiB), for every HTTP function: the largest body
/// a route takes is a config group (at most 64 KiB of JSON). Lambda itself would take 6 MB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// What every request must pass before its handler runs (so before any read): a body within
/// `MAX_BODY_BYTES` (413 `body_too_large`, before any parsing), and path parameters that follow
/// the id rule (`crate::ids`; 400 `invalid_id` naming the parameter).
pub fn admit(request: &Request) -> Result<(), Problem> {
    let size = body_bytes(request).len();
    if size > MAX_BODY_BYTES {
        return Err(Problem::new(
            catalogue::BODY_TOO_LARGE,
            format!("the request body is {size} bytes; this API takes at most {MAX_BODY_BYTES} bytes (256 KiB)"),
        )
        .with("limit_bytes", MAX_BODY_BYTES));
    }
    if let Some(parameters) = request.path_parameters_ref() {
        for (name, value) in parameters.iter() {
            ids::check(&format!("path parameter {{{name}}}"), value)?;
        }
    }
    Ok(())
}

/// The route as template.yaml declares it, e.g. `GET /config/{group}`.
pub fn route_key(request: &Request) -> &str {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context.route_key.as_deref().unwrap_or(""),
        _ => "",
    }
}

/// `text` trimmed, if it is an absolute http(s) URL with a host, at most 2048 characters.
pub fn absolute_url(text: &str) -> Option<&str> {
    let url = text.trim();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let host = url.split("://").nth(1).unwrap_or_default();
    let ok = scheme_ok && !host.is_empty() && !host.starts_with('/') && url.len() <= 2048;
    (ok && !url.contains(char::is_whitespace)).then_some(url)
}

/// A partner's URL: `absolute_url`, and https unless plain http is allowed (template parameter
/// `AllowPlainHttpPartners`, true only for the local stack's simulators). We append paths to it
/// (`<url>/webhooks`) and show it in views and audit entries, so it holds no credentials
/// (`user:pass@`), query or fragment.
pub fn partner_url(text: &str, allow_http: bool) -> Option<&str> {
    let url = absolute_url(text).filter(|url| allow_http || url.starts_with("https://"))?;
    let authority = url.split("://").nth(1).unwrap_or_default().split('/').next().unwrap_or_default();
    (!authority.contains('@') && !url.contains(['?', '#'])).then_some(url)
}

/// A path parameter; `admit` has checked it against the id rule before the handler ran.
pub fn path_parameter<'a>(request: &'a Request, name: &str) -> Result<&'a str, Problem> {
    request
        .path_parameters_ref()
        .and_then(|p| p.first(name))
        .ok_or_else(|| Problem::new(catalogue::MISSING_PATH_PARAMETER, format!("path parameter {name} is missing")))
}

pub fn query_parameter<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.query_string_parameters_ref().and_then(|q| q.first(name))
}

/// A header as text; a header that is not visible ASCII is refused rather than ignored.
pub fn header<'a>(request: &'a Request, name: &str) -> Result<Option<&'a str>, Problem> {
    request
        .headers()
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::new(catalogue::MALFORMED_HEADER, format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

pub fn body_bytes(request: &Request) -> &[u8] {
    match request.body() {
        Body::Empty => &[],
        Body::Text(text) => text.as_bytes(),
        Body::Binary(bytes) => bytes,
        _ => &[],
    }
}

/// A whole number in a request body (`#[serde(deserialize_with = "whole")]`) as JSON has it: `5`
/// or `5.0`, which JSON does not tell apart, and neither does the OpenAPI document's `integer`;
/// `5.5`, a negative number or one past what the field holds is refused.
pub fn whole<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    let number = <serde_json::Number as serde::Deserialize>::deserialize(deserializer)?;
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(whole), _) => Some(whole),
        // Below 2^64 (the first f64 past u64::MAX), so the conversion is exact.
        (None, Some(f)) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) => Some(f as u64),
        _ => None,
    };
    whole
        .and_then(|whole| T::try_from(whole).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number this field holds")))
}

/// `whole` for a field that may be null or left out (none).
pub fn optional_whole<'de, D: serde::Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(bound = "T: TryFrom<u64>")]
    struct Whole<T>(#[serde(deserialize_with = "whole")] T);
    Ok(<Option<Whole<T>> as serde::Deserialize>::deserialize(deserializer)?.map(|Whole(whole)| whole))
}

/// Parses a JSON body; the message says what was wrong and where.
pub fn json_body<T: DeserializeOwned>(request: &Request) -> Result<T, Problem> {
    let bytes = body_bytes(request);
    if bytes.is_empty() {
        return Err(Problem::new(catalogue::MALFORMED_JSON, "the request body is empty; a JSON body is required"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::new(catalogue::MALFORMED_JSON, format!("the request body is not valid JSON for this route: {e}"))
    })
}

pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let mut response = Response::new(Body::Text(serde_json::to_string(value).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_number_may_be_written_with_a_zero_fraction_and_nothing_else() {
        #[derive(serde::Deserialize, Debug)]
        struct Body {
            #[serde(deserialize_with = "whole")]
            n: u64,
        }
        let read = |text: &str| serde_json::from_str::<Body>(text).map(|b| b.n).map_err(|e| e.to_string());
        assert_eq!(read(r#"{"n": 233}"#), Ok(233));
        assert_eq!(read(r#"{"n": 233.0}"#), Ok(233));
        assert_eq!(read(r#"{"n": 18446744073709551615}"#), Ok(u64::MAX));
        for refused in ["233.5", "-1", "-1.0", "1e20", "18446744073709551616", "\"5\""] {
            assert!(read(&format!(r#"{{"n": {refused}}}"#)).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_partner_url_is_https_without_credentials_query_or_fragment() {
        assert_eq!(partner_url("https://b.example/superpay", false), Some("https://b.example/superpay"));
        assert_eq!(partner_url("http://127.0.0.1:3002/b", true), Some("http://127.0.0.1:3002/b"));
        for refused in [
            "http://b.example",
            "https://user:pass@b.example/superpay",
            "https://b.example/superpay?token=x",
            "https://b.example/superpay#frag",
            "ftp://b.example",
        ] {
            assert_eq!(partner_url(refused, false), None, "{refused}");
        }
        assert_eq!(partner_url("https://b.example/a@b", false), Some("https://b.example/a@b"), "an @ in the path");
    }

    fn request(body: &str) -> Request {
        let mut request = Request::new(Body::Text(body.to_owned()));
        request.headers_mut().insert("if-match", HeaderValue::from_static("\"3\""));
        request
    }

    #[test]
    fn json_body_errors_are_clear_400s() {
        let err = json_body::<serde_json::Value>(&request("{not json")).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code), (400, "malformed_json"));
        assert!(err.detail.contains("line 1"), "{}", err.detail);
        let err = json_body::<serde_json::Value>(&request("")).unwrap_err();
        assert!(err.detail.contains("empty"));
        assert_eq!(json_body::<serde_json::Value>(&request("[1]")).unwrap(), serde_json::json!([1]));
    }

    #[test]
    fn admission_limits_the_body_and_checks_path_parameters_as_ids() {
        let with_id = |id: &str| {
            request("{}").with_path_parameters(std::collections::HashMap::from([("id".to_owned(), id.to_owned())]))
        };
        assert_eq!(admit(&with_id("o_1f3a")), Ok(()));
        assert_eq!(admit(&request(&"x".repeat(MAX_BODY_BYTES))), Ok(()));
        let err = admit(&request(&"x".repeat(MAX_BODY_BYTES + 1))).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code), (413, "body_too_large"));
        assert!(err.detail.contains("262144"), "{}", err.detail);
        assert_eq!(err.extensions["limit_bytes"], MAX_BODY_BYTES);
        let err = admit(&with_id(&"o".repeat(10_000))).unwrap_err();
        assert_eq!((err.status().as_u16(), err.code), (400, "invalid_id"));
        assert_eq!(err.extensions["field"], "path parameter {id}");
        assert_eq!(path_parameter(&with_id("o_1"), "id"), Ok("o_1"));
    }

    #[test]
    fn headers_are_read_case_insensitively() {
        assert_eq!(header(&request(""), "If-Match").unwrap(), Some("\"3\""));
        assert_eq!(header(&request(""), "if-none-match").unwrap(), None);
    }
}
