//! The API's OpenAPI 3.1 document, generated from the code: each route's request and answer types
//! (their JSON Schemas derived by `schemars` from the same serde attributes that (de)serialize
//! them) and its problem codes from the catalogue, over the routes template.yaml declares. Only
//! with the `openapi` feature, which the local runner turns on: the functions never carry it.
//!
//! Each capability's routes module lists its routes' documentation (`RouteDoc`) beside the
//! `match` that serves them; `document` assembles the whole. What every route shares is added
//! here once: the problem of an invalid path id, an oversized body, malformed JSON, a reused or
//! busy `Idempotency-Key`, a failure of ours; the gateway's 401 for a route behind the JWT
//! authorizer; the four signature headers of a signed route.
//!
//! The signed calls we make to partners are the document's `webhooks`: each module that sends
//! them lists their documentation (`WebhookDoc`) beside the code that writes their bodies.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::crypto;
use crate::problem::{Code, Problem, catalogue};

/// A schema, given the generator that collects the definitions it refers to.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// `T`'s schema (a reference to its definition, for a named type).
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a request must carry beside its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// `Idempotency-Key`: the request is done once per key.
    IdempotencyKey,
    /// The four `x-superpay-*` signature headers (`crate::signed`).
    Signed,
    /// `If-None-Match` (optional): 304 when it names the current `ETag`, which every answer
    /// that is not a problem carries, with `Cache-Control` and `Vary`.
    Revalidated,
    /// `X-Superpay-Platform` and `X-Superpay-App-Version` (optional): the client's facts that
    /// choose what is shown (`crate::home::announcements`).
    ClientFacts,
    /// `If-Match: "N"` (the version replaced) or `If-None-Match: *` (create): a compare-and-set
    /// write, whose 201 carries the new version's `ETag` and its `Location`.
    Precondition,
}

/// A query parameter (optional: a route never needs one), or a path parameter whose values are
/// narrower than the id rule.
pub struct Param {
    pub name: &'static str,
    pub description: &'static str,
    pub schema: SchemaFn,
}

/// One route's documentation, kept beside the code that serves it.
pub struct RouteDoc {
    /// As template.yaml declares it, e.g. `GET /home`.
    pub key: &'static str,
    pub summary: &'static str,
    /// The JSON body it takes, if any.
    pub request: Option<SchemaFn>,
    /// Path parameters narrower than the id rule (the others are any id).
    pub path: &'static [Param],
    pub query: &'static [Param],
    /// Its answers that are not problems: status, and the JSON body if any.
    pub answers: &'static [(u16, Option<SchemaFn>)],
    /// The problems it answers besides those every route shares.
    pub codes: &'static [&'static Code],
    pub headers: &'static [Header],
    /// Its body when a browser's form posts it (application/x-www-form-urlencoded), not JSON.
    pub form: Option<SchemaFn>,
    /// The statuses it answers with an HTML page (a page a person opens, not a client's JSON).
    pub pages: &'static [u16],
}

/// One signed call we make to a partner's server, kept beside the code that sends it: a notice
/// (a webhook proper: any 2xx will do) or a call whose signed answer we wait for.
pub struct WebhookDoc {
    /// The event it tells (its body's `kind`, e.g. `order.settled`), or what it asks (`bank.debit`).
    pub name: &'static str,
    /// To whom (the URL it is posted to), when, and with whose key it is signed.
    pub summary: &'static str,
    /// The JSON body we send.
    pub body: SchemaFn,
    /// The body of the signed answer we wait for (`None`: a notice, whose answer is not read).
    pub answer: Option<SchemaFn>,
}

/// A route as template.yaml declares it: method, path, and the scopes its JWT must hold (`None`:
/// no authorizer, the route authenticates itself or is public).
pub struct TemplateRoute {
    pub method: String,
    pub path: String,
    pub scopes: Option<Vec<String>>,
}

impl TemplateRoute {
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// The request headers of a signed call (`crate::crypto`) and the patterns `Signature::from_headers`
/// and the key id rule (`crate::ids::is_key_id`) hold them to.
const SIGNATURE_HEADERS: [(&str, &str, &str); 4] = [
    (
        crypto::HEADER_KEY_ID,
        "the id of the key that signed the request, <owner>.<key>",
        r"^[A-Za-z0-9_:-]{1,126}\.[A-Za-z0-9_.:-]{1,126}$",
    ),
    (crypto::HEADER_TIMESTAMP, "when it was signed, Unix seconds; within the allowed skew", "^-?[0-9]{1,18}$"),
    (crypto::HEADER_NONCE, "single use", "^[A-Za-z0-9-]{16,64}$"),
    (crypto::HEADER_SIGNATURE, "the signature of the canonical request (docs/api/conventions.md)", "^.+$"),
];

/// The signature headers as a signed request's parameters.
fn signature_parameters() -> impl Iterator<Item = Value> {
    SIGNATURE_HEADERS.into_iter().map(|(name, description, pattern)| {
        json!({"name": name, "in": "header", "required": true, "description": description,
               "schema": {"type": "string", "pattern": pattern}})
    })
}

/// The OpenAPI document of `routes` (template.yaml's), each documented by its entry in `docs`, and
/// of the signed calls we make (`webhooks`). Fails naming what is wrong: a route of the template
/// not documented, documentation of a route the template does not declare, two webhooks under one
/// name, a webhook whose body's `kind` does not name it or names one not documented, two schemas
/// under one name.
pub fn document(
    routes: &[TemplateRoute],
    docs: &[&RouteDoc],
    webhooks: &[&WebhookDoc],
    version: &str,
) -> Result<Value, String> {
    let by_key: BTreeMap<&str, &RouteDoc> = docs.iter().map(|d| (d.key, *d)).collect();
    if by_key.len() != docs.len() {
        return Err("a route is documented twice".into());
    }
    if let Some(stray) = docs.iter().find(|d| !routes.iter().any(|r| r.key() == d.key)) {
        return Err(format!("{} is documented but template.yaml does not declare it", stray.key));
    }
    // Requests as clients send them, answers as the server writes them: a type may differ.
    let mut requests = SchemaSettings::draft2020_12().for_deserialize().with(components).into_generator();
    let mut answers = SchemaSettings::draft2020_12().for_serialize().with(components).into_generator();
    let problem = answers.subschema_for::<Problem>();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes {
        let doc = by_key.get(route.key().as_str()).ok_or_else(|| format!("{} is not documented", route.key()))?;
        let operation = operation(route, doc, &mut requests, &mut answers, &problem);
        paths.entry(route.path.clone()).or_default().insert(route.method.to_lowercase(), Value::Object(operation));
    }
    // Bodies as we write them, answers as partners send them: the other way round from a route's.
    let mut sent = BTreeMap::new();
    for webhook in webhooks {
        let operation = webhook_operation(webhook, &mut answers, &mut requests);
        if sent.insert(webhook.name, operation).is_some() {
            return Err(format!("two webhooks are named {}", webhook.name));
        }
    }
    check_kinds(&sent, answers.definitions())?;
    let mut schemas = requests.take_definitions(true);
    for (name, answer) in answers.take_definitions(true) {
        match schemas.get(&name) {
            Some(request) if *request != answer => {
                return Err(format!("{name} is one schema in requests and another in answers: name them apart"));
            }
            _ => {
                schemas.insert(name, answer);
            }
        }
    }
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "superpay",
            "version": version,
            "description": "A serverless payments backend for super-apps. Every problem answer is application/problem+json with a stable `code` (docs/api/errors.md) and the client's next flow (`flow_control`, docs/api/flows.md).",
        },
        "paths": paths,
        "webhooks": sent,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }))
}

fn components(settings: &mut SchemaSettings) {
    settings.definitions_path = "/components/schemas".into();
    settings.transforms.push(Box::new(RecursiveTransform(bounded_integers as fn(&mut Schema))));
}

/// An integer's `format` is only a name to a validator: its bounds say what the Rust type holds,
/// so a client (or schemathesis) knows `2^64` is no `u64`.
fn bounded_integers(schema: &mut Schema) {
    let (minimum, maximum) = match schema.get("format").and_then(Value::as_str) {
        Some("uint8") => (json!(0), json!(u8::MAX)),
        Some("uint16") => (json!(0), json!(u16::MAX)),
        Some("uint32") => (json!(0), json!(u32::MAX)),
        // `usize` is "uint": a 64-bit Lambda's.
        Some("uint64" | "uint") => (json!(0), json!(u64::MAX)),
        Some("int32") => (json!(i32::MIN), json!(i32::MAX)),
        Some("int64") => (json!(i64::MIN), json!(i64::MAX)),
        _ => return,
    };
    if schema.get("minimum").is_none() {
        schema.insert("minimum".into(), minimum);
    }
    if schema.get("maximum").is_none() {
        schema.insert("maximum".into(), maximum);
    }
}

fn operation(
    route: &TemplateRoute,
    doc: &RouteDoc,
    requests: &mut SchemaGenerator,
    answers: &mut SchemaGenerator,
    problem: &Schema,
) -> Map<String, Value> {
    let mut operation = Map::new();
    operation.insert("summary".into(), doc.summary.into());
    operation.insert("operationId".into(), operation_id(&route.key()).into());
    let mut parameters: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let schema_of = doc.path.iter().find(|p| p.name == name).map_or(id as SchemaFn, |p| p.schema);
            let schema = schema_of(requests).to_value();
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    let mut codes: Vec<&'static Code> = doc.codes.to_vec();
    codes.extend([catalogue::BODY_TOO_LARGE, catalogue::INTERNAL]);
    if !parameters.is_empty() {
        codes.push(catalogue::INVALID_ID);
    }
    for param in doc.query {
        parameters.push(json!({"name": param.name, "in": "query", "required": false,
                               "description": param.description, "schema": (param.schema)(requests)}));
    }
    if let Some(body) = doc.request {
        let body = body(requests);
        operation
            .insert("requestBody".into(), json!({"required": true, "content": {"application/json": {"schema": body}}}));
        codes.push(catalogue::MALFORMED_JSON);
    }
    if let Some(form) = doc.form {
        let form = form(requests);
        operation.insert(
            "requestBody".into(),
            json!({"required": false, "content": {"application/x-www-form-urlencoded": {"schema": form}}}),
        );
    }
    for header in doc.headers {
        match header {
            Header::IdempotencyKey => {
                parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": true,
                                       "description": "the request is done once per key (docs/api/conventions.md)",
                                       "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"}}));
                codes.extend([
                    catalogue::IDEMPOTENCY_KEY_MISSING,
                    catalogue::IDEMPOTENCY_KEY_INVALID,
                    catalogue::IDEMPOTENCY_KEY_REUSED,
                    catalogue::IDEMPOTENCY_REQUEST_IN_PROGRESS,
                ]);
            }
            Header::Signed => {
                parameters.extend(signature_parameters());
                codes.extend([
                    // A key id that is none.
                    catalogue::INVALID_ID,
                    catalogue::SIGNATURE_MISSING,
                    catalogue::SIGNATURE_INVALID,
                    catalogue::SIGNATURE_STALE,
                    catalogue::SIGNATURE_REPLAYED,
                ]);
            }
            Header::Revalidated => parameters.push(json!({"name": "If-None-Match", "in": "header", "required": false,
                                                          "description": "an ETag the client holds (or *)",
                                                          "schema": {"type": "string"}})),
            Header::Precondition => {
                parameters.push(json!({"name": "If-Match", "in": "header", "required": false,
                                       "description": "the version replaced, as its ETag: \"N\"",
                                       "schema": {"type": "string", "pattern": "^\"[0-9]{1,19}\"$"}}));
                parameters.push(json!({"name": "If-None-Match", "in": "header", "required": false,
                                       "description": "* : create it (the one alternative to If-Match)",
                                       "schema": {"type": "string", "pattern": "^\\*$"}}));
            }
            Header::ClientFacts => {
                for name in ["X-Superpay-Platform", "X-Superpay-App-Version"] {
                    parameters
                        .push(json!({"name": name, "in": "header", "required": false, "schema": {"type": "string"}}));
                }
            }
        }
    }
    if !parameters.is_empty() {
        operation.insert("parameters".into(), parameters.into());
    }
    let mut responses = Map::new();
    for (status, body) in doc.answers {
        let mut answer = json!({"description": reason(*status)});
        if let Some(body) = body {
            answer["content"] = json!({"application/json": {"schema": body(answers)}});
        }
        let text = json!({"required": true, "schema": {"type": "string"}});
        if doc.headers.contains(&Header::Revalidated) {
            answer["headers"] = json!({"ETag": text, "Cache-Control": text, "Vary": text});
        }
        if doc.headers.contains(&Header::Precondition) && *status == 201 {
            answer["headers"] = json!({"ETag": text, "Location": text});
        }
        responses.insert(status.to_string(), answer);
    }
    let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
    for code in codes {
        by_status.entry(code.status()).or_default().push(code.code());
        if let Some((status, _)) = code.alternate() {
            by_status.entry(status).or_default().push(code.code());
        }
    }
    // The gateway's own answers, before the function runs: `{"message": ...}`.
    let gateway =
        json!({"application/json": {"schema": {"type": "object", "properties": {"message": {"type": "string"}}}}});
    for (status, mut codes) in by_status {
        codes.sort_unstable();
        codes.dedup();
        let schema = json!({"allOf": [problem, {"properties": {"code": {"enum": codes}}}]});
        let mut answer =
            json!({"description": reason(status), "content": {crate::problem::CONTENT_TYPE: {"schema": schema}}});
        if status == 413 {
            answer["description"] =
                "a body over 256 KiB (ours), or an event over Lambda's 6 MB quota (the gateway's)".into();
            answer["content"]["application/json"] = gateway["application/json"].clone();
        }
        responses.insert(status.to_string(), answer);
    }
    for status in doc.pages {
        // A status may be a page or a problem (a 400: the form again, or an invalid path id).
        let answer = responses
            .entry(status.to_string())
            .or_insert_with(|| json!({"description": reason(*status), "content": {}}));
        answer["content"]["text/html"] = json!({"schema": {"type": "string"}});
    }
    if let Some(scopes) = &route.scopes {
        operation.insert("security".into(), json!([{"jwt": scopes}]));
        if !scopes.is_empty() {
            responses.insert(
                "403".into(),
                json!({"description": "the token lacks the route's scope (the gateway's answer)", "content": gateway}),
            );
        }
        responses
            .insert("401".into(), json!({"description": "no valid token (the gateway's answer)", "content": gateway}));
    }
    operation.insert("responses".into(), Value::Object(responses));
    operation
}

/// A webhook's `post` operation: its body, the four signature headers, and the answer we need.
fn webhook_operation(webhook: &WebhookDoc, bodies: &mut SchemaGenerator, answers: &mut SchemaGenerator) -> Value {
    let answer = match webhook.answer {
        None => {
            json!({"description": "received: any 2xx will do (its body is not read); anything else, or none, is sent again later"})
        }
        Some(answer) => json!({
            "description": "the answer, signed with the same key over method RESPONSE and the request's path and nonce (docs/api/partners.md); any other is no answer",
            "content": {"application/json": {"schema": answer(answers)}},
        }),
    };
    json!({"post": {
        "summary": webhook.summary,
        "operationId": format!("webhook_{}", operation_id(webhook.name)),
        "parameters": signature_parameters().collect::<Vec<_>>(),
        "requestBody": {"required": true, "content": {"application/json": {"schema": (webhook.body)(bodies)}}},
        "responses": {"2XX": answer},
    }})
}

/// Each webhook whose body has a `kind` is named by one of its values, and each of its values names
/// a webhook: the name cannot drift from what the code sends, nor a kind go undocumented.
fn check_kinds(webhooks: &BTreeMap<&str, Value>, definitions: &Map<String, Value>) -> Result<(), String> {
    for (name, operation) in webhooks {
        let body = &operation["post"]["requestBody"]["content"]["application/json"]["schema"];
        let Some(kind) = resolve(body, definitions).pointer("/properties/kind") else { continue };
        let kind = resolve(kind, definitions);
        let kinds: Vec<&Value> = match (kind.get("const"), kind.get("enum").and_then(Value::as_array)) {
            (Some(one), _) => vec![one],
            (None, Some(all)) => all.iter().collect(),
            (None, None) => return Err(format!("webhook {name}'s body has a kind of no fixed value")),
        };
        if !kinds.iter().any(|k| *k == name) {
            return Err(format!("webhook {name}'s body has kind {}", json!(kinds)));
        }
        if let Some(stray) = kinds.iter().find(|k| !k.as_str().is_some_and(|k| webhooks.contains_key(k))) {
            return Err(format!("kind {stray} is sent but no webhook documents it"));
        }
    }
    Ok(())
}

/// The definition a schema refers to (`$ref`), or the schema itself.
fn resolve<'a>(schema: &'a Value, definitions: &'a Map<String, Value>) -> &'a Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .and_then(|name| definitions.get(name))
        .unwrap_or(schema)
}

/// A sequence number as a cursor (`before`): what a `u64` holds.
pub fn sequence(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
}

/// The id rule (`crate::ids`) as a schema: every path parameter's unless narrower, and a field's
/// with `#[schemars(schema_with = "crate::openapi::id")]`.
pub fn id(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"})
}

/// The id rule, or null: an id a body may leave out.
pub fn optional_id(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = id(generator);
    schema.insert("type".into(), json!(["string", "null"]));
    schema
}

/// `GET /home/elements/{id}` -> `get_home_elements_id`, `order.settled` -> `order_settled`.
fn operation_id(key: &str) -> String {
    let words = key.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty());
    words.map(str::to_lowercase).collect::<Vec<_>>().join("_")
}

fn reason(status: u16) -> String {
    lambda_http::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("answer")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Ask {
        amount: String,
    }

    #[derive(serde::Serialize, schemars::JsonSchema)]
    struct Told {
        done: bool,
        count: u32,
    }

    const DOC: RouteDoc = RouteDoc {
        key: "POST /things/{id}/ask",
        summary: "ask a thing",
        request: Some(schema::<Ask>),
        path: &[],
        query: &[Param { name: "before", description: "a cursor", schema: sequence }],
        answers: &[(201, Some(schema::<Told>))],
        codes: &[catalogue::UNKNOWN_HOME_ELEMENT],
        headers: &[Header::IdempotencyKey],
        form: None,
        pages: &[],
    };

    fn route(method: &str, path: &str, scopes: Option<Vec<String>>) -> TemplateRoute {
        TemplateRoute { method: method.into(), path: path.into(), scopes }
    }

    #[test]
    fn a_route_is_documented_with_its_types_its_codes_and_what_every_route_shares() {
        let routes = [route("POST", "/things/{id}/ask", Some(vec![]))];
        let document = document(&routes, &[&DOC], &[], "1").unwrap();
        let operation = &document["paths"]["/things/{id}/ask"]["post"];
        assert_eq!(operation["operationId"], "post_things_id_ask");
        assert_eq!(
            operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Ask"
        );
        assert_eq!(document["components"]["schemas"]["Ask"]["additionalProperties"], false);
        // Each integer carries its type's bounds.
        assert_eq!(document["components"]["schemas"]["Told"]["properties"]["count"]["maximum"], u32::MAX);
        assert_eq!(
            operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Told"
        );
        let codes = |status: &str| {
            operation["responses"][status]["content"]["application/problem+json"]["schema"]["allOf"][1]["properties"]["code"]["enum"].clone()
        };
        assert_eq!(codes("404"), json!(["unknown_home_element"]));
        assert_eq!(
            codes("400"),
            json!(["idempotency_key_invalid", "idempotency_key_missing", "invalid_id", "malformed_json"])
        );
        assert_eq!(codes("500"), json!(["internal"]));
        // Ours, or the gateway's for an event over Lambda's quota.
        assert_eq!(codes("413"), json!(["body_too_large"]));
        assert!(
            operation["responses"]["413"]["content"]["application/json"]["schema"]["properties"]["message"].is_object()
        );
        assert_eq!(operation["security"], json!([{"jwt": []}]));
        assert!(operation["responses"]["401"].is_object());
        let names: Vec<&str> =
            operation["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["id", "before", "Idempotency-Key"]);
        assert_eq!(operation["parameters"][1]["schema"]["maximum"], u64::MAX);
        assert_eq!(operation["parameters"][0]["schema"]["pattern"], "^[A-Za-z0-9_.:-]{1,128}$");
        assert!(document["components"]["schemas"]["Problem"].is_object());
    }

    #[test]
    fn a_persons_page_is_html_beside_its_problems_and_a_form_is_urlencoded() {
        const PAGE: RouteDoc = RouteDoc {
            key: "POST /pages/{id}",
            summary: "a page's form",
            request: None,
            path: &[],
            query: &[],
            answers: &[],
            codes: &[],
            headers: &[],
            form: Some(schema::<Ask>),
            pages: &[200, 400],
        };
        let document = document(&[route("POST", "/pages/{id}", None)], &[&PAGE], &[], "1").unwrap();
        let operation = &document["paths"]["/pages/{id}"]["post"];
        let form = &operation["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
        assert_eq!(form["$ref"], "#/components/schemas/Ask");
        assert_eq!(operation["responses"]["200"]["content"]["text/html"]["schema"]["type"], "string");
        // The form again, or the path's invalid id: both a 400.
        let bad = &operation["responses"]["400"]["content"];
        assert!(bad["text/html"].is_object() && bad["application/problem+json"].is_object(), "{bad}");
    }

    #[test]
    fn a_route_missing_on_either_side_is_an_error() {
        let other = [route("GET", "/other", None)];
        assert_eq!(document(&other, &[], &[], "1").unwrap_err(), "GET /other is not documented");
        assert_eq!(
            document(&other, &[&DOC], &[], "1").unwrap_err(),
            "POST /things/{id}/ask is documented but template.yaml does not declare it"
        );
    }

    /// A notice's body: its kind is fixed, so its schema says it.
    #[derive(serde::Serialize, schemars::JsonSchema)]
    struct Happened {
        event_id: String,
        kind: HappenedKind,
        told: Told,
    }

    #[derive(serde::Serialize, schemars::JsonSchema)]
    #[schemars(inline)]
    #[allow(dead_code)]
    enum HappenedKind {
        #[serde(rename = "thing.happened")]
        Happened,
    }

    const HAPPENED: WebhookDoc =
        WebhookDoc { name: "thing.happened", summary: "to <url>/webhooks", body: schema::<Happened>, answer: None };

    #[test]
    fn a_webhook_is_a_signed_post_of_its_body_named_by_its_kind() {
        const ASKED: WebhookDoc = WebhookDoc {
            name: "thing.ask",
            summary: "to <url>/ask",
            body: schema::<Told>,
            answer: Some(schema::<Ask>),
        };
        let document = document(&[], &[], &[&HAPPENED, &ASKED], "1").unwrap();
        let notice = &document["webhooks"]["thing.happened"]["post"];
        assert_eq!(notice["operationId"], "webhook_thing_happened");
        assert_eq!(
            notice["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Happened"
        );
        let kind = &document["components"]["schemas"]["Happened"]["properties"]["kind"];
        assert!(kind["const"] == "thing.happened" || kind["enum"] == json!(["thing.happened"]), "{kind}");
        let headers: Vec<&str> =
            notice["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(headers, SIGNATURE_HEADERS.map(|(name, ..)| name));
        assert!(notice["parameters"].as_array().unwrap().iter().all(|p| p["in"] == "header" && p["required"] == true));
        assert!(notice["responses"]["2XX"]["content"].is_null());
        // The partner's answer is read as a request is, by its own type's schema.
        let asked = &document["webhooks"]["thing.ask"]["post"]["responses"]["2XX"]["content"]["application/json"];
        assert_eq!(asked["schema"]["$ref"], "#/components/schemas/Ask");
        assert_eq!(document["components"]["schemas"]["Ask"]["additionalProperties"], false);
    }

    #[test]
    fn a_webhook_named_twice_or_apart_from_its_kind_is_an_error() {
        assert_eq!(
            document(&[], &[], &[&HAPPENED, &HAPPENED], "1").unwrap_err(),
            "two webhooks are named thing.happened"
        );
        let misnamed = WebhookDoc { name: "thing.other", ..HAPPENED };
        assert_eq!(
            document(&[], &[], &[&misnamed], "1").unwrap_err(),
            r#"webhook thing.other's body has kind ["thing.happened"]"#
        );
        let made =
            WebhookDoc { name: "thing.made", summary: "to <url>/webhooks", body: schema::<Changed>, answer: None };
        assert_eq!(
            document(&[], &[], &[&made], "1").unwrap_err(),
            r#"kind "thing.ended" is sent but no webhook documents it"#
        );
        let ended = WebhookDoc { name: "thing.ended", ..made };
        assert!(document(&[], &[], &[&made, &ended], "1").is_ok());
    }

    /// One body for two kinds.
    #[derive(serde::Serialize, schemars::JsonSchema)]
    struct Changed {
        kind: ChangedKind,
    }

    #[derive(serde::Serialize, schemars::JsonSchema)]
    #[schemars(inline)]
    #[allow(dead_code)]
    enum ChangedKind {
        #[serde(rename = "thing.made")]
        Made,
        #[serde(rename = "thing.ended")]
        Ended,
    }
}
