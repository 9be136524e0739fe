//! The local HTTP API: routes requests to functions exactly as the template's `HttpApi` events
//! declare them, with payload format 2.0 and the JWT authorizer, as API Gateway would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequest,
    ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription, ApiGatewayV2httpResponse,
};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::routing::{get, post};
use base64::Engine;

use crate::jwt::{Authorized, DevKeys, Refusal};
use crate::runtime_api::{FunctionHost, MAX_PAYLOAD_BYTES, Outcome};
use crate::template::{JwtAuthorizer, Route, RouteAuth, Template};

/// API Gateway's longest wait for an integration.
const INTEGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// API Gateway's own limit on a request body (HTTP APIs: 10 MB). Lambda's 6 MB payload quota
/// (`MAX_PAYLOAD_BYTES`) on the event that carries the body comes first for a Lambda integration.
const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

pub struct Gateway {
    routes: Vec<(Route, Arc<FunctionHost>)>,
    functions: HashMap<String, Arc<FunctionHost>>,
    authorizers: HashMap<String, JwtAuthorizer>,
    keys: Arc<DevKeys>,
    /// The API's OpenAPI document, or why it could not be made.
    openapi: Result<serde_json::Value, String>,
}

impl Gateway {
    pub fn new(template: &Template, hosts: &[Arc<FunctionHost>], keys: Arc<DevKeys>) -> Self {
        let mut routes = Vec::new();
        for function in &template.functions {
            if let Some(host) = hosts.iter().find(|h| h.logical_id == function.logical_id) {
                routes.extend(function.routes.iter().map(|r| (r.clone(), host.clone())));
            }
        }
        let functions = hosts.iter().map(|h| (h.logical_id.clone(), h.clone())).collect();
        let openapi = crate::openapi::document(template);
        Gateway { routes, functions, authorizers: template.authorizers.clone(), keys, openapi }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/openapi.json", get(openapi))
            .fallback(handle)
            .with_state(self)
    }

    /// Lambda's Invoke API, on its own port as `sam local start-lambda` serves it: it skips the
    /// authorizer (an event carries its own claims), so it must not share the HTTP API's port.
    pub fn lambda_router(self: Arc<Self>) -> Router {
        Router::new().route("/2015-03-31/functions/{name}/invocations", post(invoke)).with_state(self)
    }
}

async fn openapi(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    match &gateway.openapi {
        Ok(document) => json(StatusCode::OK, document),
        Err(why) => json(StatusCode::INTERNAL_SERVER_ERROR, &serde_json::json!({"message": why})),
    }
}

async fn jwks(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    json(StatusCode::OK, &serde_json::to_value(gateway.keys.jwks()).unwrap_or_default())
}

/// Runs a sample event from `events/` against the real binary: `curl --data
/// @events/config/fetch.json http://127.0.0.1:3001/2015-03-31/functions/ConfigFunction/invocations`.
async fn invoke(State(gateway): State<Arc<Gateway>>, Path(name): Path<String>, event: Body) -> Response<Body> {
    let Some(host) = gateway.functions.get(&name) else {
        return message(StatusCode::NOT_FOUND, &format!("Function not found: {name}"));
    };
    let Ok(event) = axum::body::to_bytes(event, MAX_PAYLOAD_BYTES).await else {
        return payload_too_large();
    };
    let (output, error) = match host.invoke(event).await {
        Outcome::Response(output) => (output, None),
        Outcome::Error(error) => (Bytes::from(error), Some("Unhandled")),
        Outcome::TimedOut => (Bytes::from_static(br#"{"errorMessage":"Task timed out"}"#), Some("Unhandled")),
        Outcome::Crashed => (Bytes::from_static(br#"{"errorMessage":"Runtime exited"}"#), Some("Unhandled")),
        Outcome::Throttled => return message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded."),
    };
    let mut response = Response::new(Body::from(output));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(kind) = error {
        response.headers_mut().insert("x-amz-function-error", HeaderValue::from_static(kind));
    }
    response
}

/// Lambda's Invoke API refusing an event over its quota.
fn payload_too_large() -> Response<Body> {
    let text = format!("Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the InvokeFunction operation");
    let mut response = json(StatusCode::PAYLOAD_TOO_LARGE, &serde_json::json!({ "Type": "User", "message": text }));
    response.headers_mut().insert("x-amzn-errortype", HeaderValue::from_static("RequestEntityTooLargeException"));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// API Gateway's own answers carry `{"message": ...}`.
fn message(status: StatusCode, text: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "message": text }))
}

async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let path = parts.uri.path().to_owned();
    let Some((index, path_parameters)) = match_route(gateway.routes.iter().map(|(r, _)| r), &parts.method, &path)
    else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let (route, host) = &gateway.routes[index];
    let authorization = match &route.auth {
        RouteAuth::Open => None,
        RouteAuth::Jwt { authorizer, scopes } => {
            let Some(config) = gateway.authorizers.get(authorizer) else {
                return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
            };
            let header_value = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            match gateway.keys.authorize(config, header_value, scopes) {
                Ok(authorized) => Some(authorized),
                Err(Refusal::MissingScope(_)) => return message(StatusCode::FORBIDDEN, "Forbidden"),
                Err(refusal) => {
                    tracing::info!(route = %route.key(), %refusal, "unauthorized");
                    return message(StatusCode::UNAUTHORIZED, "Unauthorized");
                }
            }
        }
    };
    let event = build_event(EventInput {
        route,
        path_parameters,
        method: &parts.method,
        path: &path,
        query: parts.uri.query().unwrap_or_default(),
        headers: &parts.headers,
        body: &body,
        authorizer: authorization,
        source_ip: peer.ip().to_string(),
    });
    let Ok(event) = serde_json::to_vec(&event) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    // Lambda refuses an event over its quota, and API Gateway answers that as 413 with its own
    // message (AWS's emulator, Amazon.Lambda.TestTool, answers an HTTP API so). The function never
    // runs. The event wraps the body, so a body somewhat under 6 MB is refused already.
    if event.len() > MAX_PAYLOAD_BYTES {
        tracing::info!(route = %route.key(), bytes = event.len(), "event over Lambda's payload quota");
        return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    // API Gateway's integration timeout (30 s at most) answers 503 whatever the function does.
    let Ok(outcome) = tokio::time::timeout(INTEGRATION_TIMEOUT, host.invoke(Bytes::from(event))).await else {
        return message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    };
    match outcome {
        Outcome::Response(output) => to_http_response(&output),
        Outcome::Throttled => message(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
        Outcome::Error(error) => {
            tracing::error!(function = %host.logical_id, %error, "function error");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        // A function that times out or dies is a function error to API Gateway.
        Outcome::TimedOut | Outcome::Crashed => message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

/// The route API Gateway would pick: the most specific match (literal segments before
/// `{param}` before `{proxy+}`, a named method before `ANY`), with its path parameters.
pub fn match_route<'a>(
    routes: impl Iterator<Item = &'a Route>,
    method: &Method,
    path: &str,
) -> Option<(usize, HashMap<String, String>)> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // (specificity, route index, path parameters) of the best match so far.
    type Candidate = ((usize, usize, bool), usize, HashMap<String, String>);
    let mut best: Option<Candidate> = None;
    for (index, route) in routes.enumerate() {
        if route.method != "ANY" && route.method != method.as_str() {
            continue;
        }
        let pattern: Vec<&str> = route.path.trim_start_matches('/').split('/').collect();
        let mut parameters = HashMap::new();
        let mut literal = 0;
        let mut greedy = false;
        let mut matched = true;
        for (i, part) in pattern.iter().enumerate() {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix("+}")) {
                if i >= segments.len() || segments[i..].iter().all(|s| s.is_empty()) {
                    matched = false;
                } else {
                    parameters.insert(name.to_owned(), segments[i..].join("/"));
                    greedy = true;
                }
                break;
            }
            match segments.get(i) {
                Some(segment) if part.starts_with('{') && part.ends_with('}') && !segment.is_empty() => {
                    parameters.insert(part[1..part.len() - 1].to_owned(), percent_decode(segment));
                }
                Some(segment) if segment == part => literal += 1,
                _ => {
                    matched = false;
                    break;
                }
            }
        }
        if !greedy && pattern.len() != segments.len() {
            matched = false;
        }
        if !matched {
            continue;
        }
        let score = (literal, usize::from(!greedy), route.method != "ANY");
        if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
            best = Some((score, index, parameters));
        }
    }
    best.map(|(_, index, parameters)| (index, parameters))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok())
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub struct EventInput<'a> {
    pub route: &'a Route,
    pub path_parameters: HashMap<String, String>,
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub authorizer: Option<Authorized>,
    pub source_ip: String,
}

/// The payload format 2.0 event API Gateway sends for this request.
pub fn build_event(input: EventInput) -> ApiGatewayV2httpRequest {
    let mut headers = HeaderMap::new();
    let mut cookies = Vec::new();
    // Format 2.0 joins repeated headers with commas and moves cookies to their own field.
    for name in input.headers.keys() {
        let values: Vec<&str> = input.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        if name == header::COOKIE {
            cookies.extend(
                values.iter().flat_map(|v| v.split(';')).map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
            );
        } else if let Ok(value) = HeaderValue::from_str(&values.join(",")) {
            headers.insert(name.clone(), value);
        }
    }
    let mut query: HashMap<String, Vec<String>> = HashMap::new();
    for (key, value) in url_pairs(input.query) {
        query.entry(key).or_default().push(value);
    }
    let (body, is_base64_encoded) = match std::str::from_utf8(input.body) {
        _ if input.body.is_empty() => (None, false),
        Ok(text) => (Some(text.to_owned()), false),
        Err(_) => (Some(base64::engine::general_purpose::STANDARD.encode(input.body)), true),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = input.method.clone();
    http.path = Some(input.path.to_owned());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some(input.source_ip);
    http.user_agent = input.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(input.route.key());
    context.account_id = Some(crate::template::ACCOUNT.into());
    context.stage = Some("$default".into());
    context.request_id = Some(uuid::Uuid::new_v4().to_string());
    context.apiid = Some("local".into());
    context.domain_name = input.headers.get(header::HOST).and_then(|v| v.to_str().ok()).map(str::to_owned);
    context.time_epoch = now.as_millis() as i64;
    context.http = http;
    context.authorizer = input.authorizer.map(|authorized| {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = authorized.claims;
        jwt.scopes = authorized.scopes;
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        authorizer
    });
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some(input.route.key());
    event.raw_path = Some(input.path.to_owned());
    event.raw_query_string = Some(input.query.to_owned());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = headers;
    event.query_string_parameters = query.into();
    event.path_parameters = input.path_parameters;
    event.request_context = context;
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;
    event
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        (decode(k), decode(v))
    })
}

/// Maps a function's output to HTTP as API Gateway does for format 2.0: a response object, or any
/// other JSON taken as a 200 body.
pub fn to_http_response(output: &[u8]) -> Response<Body> {
    let lambda = match serde_json::from_slice::<serde_json::Value>(output) {
        Ok(serde_json::Value::Object(mut object)) if object.contains_key("statusCode") => {
            // API Gateway accepts a response without cookies; the event type requires the field.
            object.entry("cookies").or_insert_with(|| serde_json::json!([]));
            match serde_json::from_value::<ApiGatewayV2httpResponse>(serde_json::Value::Object(object)) {
                Ok(lambda) => Some(lambda),
                // A response object API Gateway cannot read is a function error.
                Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            }
        }
        _ => None,
    };
    let Some(lambda) = lambda else {
        let mut response = Response::new(Body::from(output.to_vec()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return response;
    };
    let body = match lambda.body {
        Some(LambdaBody::Text(text)) if lambda.is_base64_encoded => {
            base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default()
        }
        Some(LambdaBody::Text(text)) => text.into_bytes(),
        Some(LambdaBody::Binary(bytes)) => bytes,
        _ => Vec::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(lambda.status_code as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in lambda.headers.iter().chain(lambda.multi_value_headers.iter()) {
        response.headers_mut().append(name.clone(), value.clone());
    }
    for cookie in lambda.cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> Route {
        Route { method: method.into(), path: path.into(), auth: RouteAuth::Open }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let routes = [
            route("GET", "/config/{group}"),
            route("GET", "/config/defaults"),
            route("ANY", "/{proxy+}"),
            route("POST", "/config/{group}/versions"),
        ];
        let pick = |m: Method, p: &str| match_route(routes.iter(), &m, p);
        assert_eq!(pick(Method::GET, "/config/defaults").unwrap().0, 1);
        let (index, params) = pick(Method::GET, "/config/home%2Dui").unwrap();
        assert_eq!((index, params["group"].as_str()), (0, "home-ui"));
        assert_eq!(pick(Method::POST, "/config/home/versions").unwrap().0, 3);
        let (index, params) = pick(Method::DELETE, "/config/home").unwrap();
        assert_eq!((index, params["proxy"].as_str()), (2, "config/home"));
        assert!(match_route(routes[..2].iter(), &Method::GET, "/config/home/extra").is_none());
        assert!(match_route(routes[..2].iter(), &Method::POST, "/config/home").is_none());
        assert!(match_route(routes[..2].iter(), &Method::GET, "/config/").is_none());
    }

    #[test]
    fn events_follow_payload_format_2_0() {
        let mut headers = HeaderMap::new();
        headers.insert("if-none-match", HeaderValue::from_static("\"3\""));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        let r = route("GET", "/config/{group}");
        let event = build_event(EventInput {
            route: &r,
            path_parameters: HashMap::from([("group".into(), "home".into())]),
            method: &Method::GET,
            path: "/config/home",
            query: "version=3&x=a+b",
            headers: &headers,
            body: b"",
            authorizer: Some(Authorized { claims: HashMap::from([("sub".into(), "alice".into())]), scopes: None }),
            source_ip: "127.0.0.1".into(),
        });
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["version"], "2.0");
        assert_eq!(json["routeKey"], "GET /config/{group}");
        assert_eq!(json["headers"]["x-multi"], "a,b");
        assert_eq!(json["cookies"], serde_json::json!(["a=1", "b=2"]));
        assert_eq!(json["queryStringParameters"]["x"], "a b");
        assert_eq!(json["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "alice");
    }

    #[test]
    fn the_event_not_the_body_meets_lambdas_quota() {
        let r = route("POST", "/purchases");
        let event_bytes = |body: &[u8]| {
            let event = build_event(EventInput {
                route: &r,
                path_parameters: HashMap::new(),
                method: &Method::POST,
                path: "/purchases",
                query: "",
                headers: &HeaderMap::new(),
                body,
                authorizer: None,
                source_ip: "127.0.0.1".into(),
            });
            serde_json::to_vec(&event).unwrap().len()
        };
        assert!(event_bytes(&vec![b'x'; 6_000_000]) <= MAX_PAYLOAD_BYTES);
        assert!(event_bytes(&vec![b'x'; 7_000_000]) > MAX_PAYLOAD_BYTES);
        // A binary body travels base64: 4.8 MB of it is over 6 MiB of event.
        assert!(event_bytes(&vec![0xff; 4_800_000]) > MAX_PAYLOAD_BYTES);
        let refused = payload_too_large();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refused.headers()["x-amzn-errortype"], "RequestEntityTooLargeException");
    }

    #[test]
    fn function_output_becomes_http() {
        let out = serde_json::json!({"statusCode": 412, "headers": {"etag": "\"4\""}, "body": "{}", "isBase64Encoded": false});
        let response = to_http_response(out.to_string().as_bytes());
        assert_eq!(response.status(), 412);
        assert_eq!(response.headers()["etag"], "\"4\"");
        let bare = to_http_response(br#"{"hello":1}"#);
        assert_eq!(bare.status(), 200);
        assert_eq!(to_http_response(br#"{"statusCode":"teapot"}"#).status(), 500);
    }
}
