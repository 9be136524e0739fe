//! Reads the documented subset of SAM/CloudFormation that the local stack understands, and refuses
//! everything else by name, so local and deployed resources cannot silently drift apart.
//!
//! Understood: `Parameters` (String, Number; Default, AllowedValues), `Globals.Function`,
//! the intrinsics `!Ref`, `!GetAtt`, `!Sub` (and their `Ref` / `Fn::GetAtt` / `Fn::Sub` long forms),
//! and these resource types:
//! - `AWS::Serverless::Function` with `HttpApi`, `SQS` and `Schedule` events, and `Policies` in the
//!   subset `crate::iam` enforces;
//! - `AWS::Serverless::HttpApi` with JWT authorizers; its throttling (`RouteSettings`, whose every
//!   key must name a route of the template, and `DefaultRouteSettings`) and access log are not emulated;
//! - `AWS::DynamoDB::Table` with key schema, GSIs and TTL;
//! - `AWS::SQS::Queue` with visibility timeout, redrive policy and FIFO;
//! - `AWS::KMS::Key` (symmetric, HMAC, ECC signing keys);
//! - `AWS::Logs::LogGroup` and `AWS::CloudWatch::Alarm`: deploy-only, read and not emulated (the
//!   functions' logs go to `.superpay/logs/`).
//!
//! Properties that only matter once deployed (point-in-time recovery, encryption, log groups and
//! retention, reserved concurrency, tags: the deploy-only list of each type) are read and ignored;
//! any other is refused by name. A resource's `Metadata` is free (checkov's skips live there).
//! `Outputs` are for deployment and are not evaluated here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_yaml::Value;
use serde_yaml::value::TaggedValue;

use crate::iam::Policy;

pub const REGION: &str = "us-east-1";
/// The account id moto uses; local ARNs and queue URLs carry it.
pub const ACCOUNT: &str = "123456789012";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template.yaml: {0}")]
    Invalid(String),
    #[error("template.yaml: {0} is outside the subset the local stack understands ({1})")]
    Unsupported(String, &'static str),
}

fn invalid(message: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(message.into())
}

/// The parsed template: resources with every intrinsic resolved to local names.
#[derive(Debug, Clone, Default)]
pub struct Template {
    pub stack: String,
    pub functions: Vec<Function>,
    pub tables: Vec<Table>,
    pub queues: Vec<Queue>,
    pub keys: Vec<Key>,
    /// The one HttpApi's logical id; every HttpApi event must name it.
    pub http_api: Option<String>,
    pub authorizers: HashMap<String, JwtAuthorizer>,
    pub default_authorizer: Option<String>,
    /// Route keys the HttpApi's `RouteSettings` throttle (deploy-only: the local gateway does not).
    pub throttled_routes: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub logical_id: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    pub environment: BTreeMap<String, String>,
    pub timeout_seconds: u64,
    pub memory_mb: u64,
    pub routes: Vec<Route>,
    pub sqs_sources: Vec<SqsSource>,
    /// `Schedule` events: invoke every so many seconds.
    pub schedules: Vec<u64>,
    /// What the function's role allows; the local stack refuses every other AWS call.
    pub policy: Policy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Upper case, or `ANY`.
    pub method: String,
    pub path: String,
    pub auth: RouteAuth,
}

impl Route {
    /// The route key as API Gateway writes it into the event: `GET /config/{group}`.
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAuth {
    Open,
    Jwt { authorizer: String, scopes: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqsSource {
    pub queue: String,
    pub batch_size: i32,
    pub report_batch_item_failures: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuthorizer {
    pub issuer: String,
    pub audience: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub logical_id: String,
    pub name: String,
    /// (name, S|N|B)
    pub attributes: Vec<(String, String)>,
    /// (name, HASH|RANGE)
    pub key_schema: Vec<(String, String)>,
    pub global_indexes: Vec<GlobalIndex>,
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalIndex {
    pub name: String,
    pub key_schema: Vec<(String, String)>,
    /// ALL, KEYS_ONLY or INCLUDE
    pub projection: String,
    pub non_key_attributes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub logical_id: String,
    pub name: String,
    pub fifo: bool,
    pub content_based_deduplication: bool,
    pub visibility_timeout: Option<u64>,
    pub message_retention: Option<u64>,
    pub redrive: Option<Redrive>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redrive {
    pub dead_letter_queue: String,
    pub max_receive_count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub logical_id: String,
    pub spec: String,
    pub usage: String,
}

/// What `!Ref` and `!GetAtt` of each resource stand for locally.
pub trait Naming {
    fn queue_url(&self, name: &str) -> String;
    fn key_id(&self, logical_id: &str) -> Option<String>;
}

/// Naming for reading the template's shape without a running stack (binaries, authorizers).
pub struct Unresolved;

impl Naming for Unresolved {
    fn queue_url(&self, name: &str) -> String {
        format!("unresolved:{name}")
    }

    fn key_id(&self, logical_id: &str) -> Option<String> {
        Some(format!("unresolved:{logical_id}"))
    }
}

struct Raw {
    parameters: HashMap<String, String>,
    globals: serde_yaml::Mapping,
    resources: Vec<(String, String, Value)>,
}

impl Template {
    /// The KMS keys to create before the rest can be resolved (their ids are chosen by KMS).
    pub fn keys_to_create(text: &str) -> Result<Vec<Key>, TemplateError> {
        let raw = raw(text, &HashMap::new(), true)?;
        raw.resources
            .iter()
            .filter(|(_, kind, _)| kind == "AWS::KMS::Key")
            .map(|(id, _, resource)| key(id, resource))
            .collect()
    }

    pub fn parse(
        text: &str,
        stack: &str,
        overrides: &HashMap<String, String>,
        naming: &dyn Naming,
    ) -> Result<Self, TemplateError> {
        let raw = raw(text, overrides, false)?;
        let kinds: HashMap<&str, &str> =
            raw.resources.iter().map(|(id, kind, _)| (id.as_str(), kind.as_str())).collect();
        let fifo_queues: HashSet<&str> = raw
            .resources
            .iter()
            .filter(|(_, kind, r)| {
                kind == "AWS::SQS::Queue"
                    && r.get("Properties").and_then(|p| p.get("FifoQueue")).and_then(Value::as_bool) == Some(true)
            })
            .map(|(id, _, _)| id.as_str())
            .collect();
        let resolver =
            Resolver { parameters: &raw.parameters, kinds: &kinds, stack, naming, fifo_queues: &fifo_queues };
        let mut template = Template { stack: stack.to_owned(), ..Template::default() };
        for (id, kind, resource) in &raw.resources {
            let properties = resolver.eval(resource.get("Properties").unwrap_or(&Value::Null))?;
            match kind.as_str() {
                "AWS::Serverless::Function" => {
                    template.functions.push(function(id, resource, &properties, &raw.globals, &resolver)?)
                }
                "AWS::Serverless::HttpApi" => http_api(id, &properties, &mut template)?,
                "AWS::DynamoDB::Table" => template.tables.push(table(id, &properties, &resolver)?),
                "AWS::SQS::Queue" => template.queues.push(queue(id, &properties, &resolver)?),
                "AWS::KMS::Key" => template.keys.push(key(id, resource)?),
                "AWS::Logs::LogGroup" => check_properties(id, &properties, &[], &["RetentionInDays", "Tags"])?,
                "AWS::CloudWatch::Alarm" => {}
                other => {
                    return Err(TemplateError::Unsupported(format!("resource {id} of type {other}"), SUPPORTED_TYPES));
                }
            }
        }
        // Routes without an Auth of their own use the API's DefaultAuthorizer (or none).
        let default = template.default_authorizer.clone();
        for route in template.functions.iter_mut().flat_map(|f| f.routes.iter_mut()) {
            if let RouteAuth::Jwt { authorizer, .. } = &mut route.auth
                && authorizer.is_empty()
            {
                match &default {
                    Some(d) => *authorizer = d.clone(),
                    None => route.auth = RouteAuth::Open,
                }
            }
        }
        for function in &template.functions {
            for route in &function.routes {
                if let RouteAuth::Jwt { authorizer, .. } = &route.auth
                    && !template.authorizers.contains_key(authorizer)
                {
                    return Err(invalid(format!(
                        "{}: route {} names unknown authorizer {authorizer}",
                        function.logical_id,
                        route.key()
                    )));
                }
            }
        }
        // API Gateway refuses the whole stage when a route setting names no route.
        let routes: HashSet<String> = template.functions.iter().flat_map(|f| f.routes.iter().map(Route::key)).collect();
        if let Some(unknown) = template.throttled_routes.iter().find(|r| !routes.contains(*r)) {
            return Err(invalid(format!("RouteSettings names {unknown:?}, which no HttpApi event declares")));
        }
        Ok(template)
    }

    pub fn table(&self, logical_id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    pub fn queue(&self, logical_id: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }
}

const SUPPORTED_TYPES: &str = "AWS::Serverless::Function, AWS::Serverless::HttpApi, AWS::DynamoDB::Table, AWS::SQS::Queue, \
     AWS::KMS::Key, AWS::Logs::LogGroup, AWS::CloudWatch::Alarm";

fn raw(text: &str, overrides: &HashMap<String, String>, lenient_parameters: bool) -> Result<Raw, TemplateError> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let top = doc.as_mapping().ok_or_else(|| invalid("the document is not a mapping"))?;
    for key in top.keys() {
        let key = key.as_str().unwrap_or_default();
        if ![
            "AWSTemplateFormatVersion",
            "Transform",
            "Description",
            "Parameters",
            "Globals",
            "Resources",
            "Outputs",
            "Metadata",
        ]
        .contains(&key)
        {
            return Err(TemplateError::Unsupported(
                format!("top-level section {key}"),
                "no Conditions, Mappings or Rules",
            ));
        }
    }
    let mut parameters = HashMap::new();
    if let Some(declared) = doc.get("Parameters").and_then(Value::as_mapping) {
        for (name, spec) in declared {
            let name = name.as_str().ok_or_else(|| invalid("a parameter name is not a string"))?;
            let kind = spec.get("Type").and_then(Value::as_str).unwrap_or_default();
            if !["String", "Number"].contains(&kind) {
                return Err(TemplateError::Unsupported(
                    format!("parameter {name} of type {kind:?}"),
                    "String and Number parameters",
                ));
            }
            let value = match overrides.get(name) {
                Some(v) => Some(v.clone()),
                None => spec.get("Default").map(scalar).transpose()?,
            };
            let Some(value) = value else {
                if lenient_parameters {
                    continue;
                }
                return Err(invalid(format!(
                    "parameter {name} has no Default and no local value (infra/local/parameters.json)"
                )));
            };
            if let Some(allowed) = spec.get("AllowedValues").and_then(Value::as_sequence) {
                let allowed: Vec<String> = allowed.iter().map(scalar).collect::<Result<_, _>>()?;
                if !allowed.contains(&value) {
                    return Err(invalid(format!("parameter {name} = {value:?} is not one of {allowed:?}")));
                }
            }
            if kind == "Number" && value.parse::<f64>().is_err() {
                return Err(invalid(format!("parameter {name} = {value:?} is not a number")));
            }
            parameters.insert(name.to_owned(), value);
        }
    }
    let globals = match doc.get("Globals") {
        None => serde_yaml::Mapping::new(),
        Some(globals) => {
            let globals = globals.as_mapping().ok_or_else(|| invalid("Globals is not a mapping"))?;
            for key in globals.keys() {
                if key.as_str() != Some("Function") {
                    return Err(TemplateError::Unsupported(
                        format!("Globals.{}", key.as_str().unwrap_or("?")),
                        "Globals.Function only",
                    ));
                }
            }
            globals.get("Function").and_then(Value::as_mapping).cloned().unwrap_or_default()
        }
    };
    let mut resources = Vec::new();
    for (id, resource) in doc.get("Resources").and_then(Value::as_mapping).ok_or_else(|| invalid("no Resources"))? {
        let id = id.as_str().ok_or_else(|| invalid("a resource id is not a string"))?.to_owned();
        for key in resource.as_mapping().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
            let key = key.as_str().unwrap_or_default();
            if !["Type", "Properties", "Metadata", "DependsOn", "DeletionPolicy", "UpdateReplacePolicy"].contains(&key)
            {
                return Err(TemplateError::Unsupported(
                    format!("{id}.{key}"),
                    "Type, Properties, Metadata, DependsOn, DeletionPolicy, UpdateReplacePolicy",
                ));
            }
        }
        let kind = resource.get("Type").and_then(Value::as_str).ok_or_else(|| invalid(format!("{id} has no Type")))?;
        resources.push((id, kind.to_owned(), resource.clone()));
    }
    Ok(Raw { parameters, globals, resources })
}

fn scalar(value: &Value) -> Result<String, TemplateError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(invalid(format!("expected a plain value, found {other:?}"))),
    }
}

struct Resolver<'a> {
    parameters: &'a HashMap<String, String>,
    kinds: &'a HashMap<&'a str, &'a str>,
    stack: &'a str,
    naming: &'a dyn Naming,
    fifo_queues: &'a HashSet<&'a str>,
}

impl Resolver<'_> {
    /// Replaces every intrinsic in `value` by the string it stands for locally.
    fn eval(&self, value: &Value) -> Result<Value, TemplateError> {
        Ok(match value {
            Value::Tagged(tagged) => Value::String(self.intrinsic(tagged)?),
            Value::Mapping(map)
                if map.len() == 1 && map.keys().next().and_then(Value::as_str).is_some_and(is_long_form) =>
            {
                let (name, argument) = map.iter().next().expect("one entry");
                let tag = name.as_str().unwrap_or_default().trim_start_matches("Fn::");
                let argument = match (tag, argument) {
                    ("GetAtt", Value::Sequence(parts)) => {
                        Value::String(parts.iter().map(scalar).collect::<Result<Vec<_>, _>>()?.join("."))
                    }
                    _ => argument.clone(),
                };
                Value::String(self.intrinsic(&TaggedValue { tag: serde_yaml::value::Tag::new(tag), value: argument })?)
            }
            Value::Mapping(map) => {
                let mut out = serde_yaml::Mapping::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.eval(v)?);
                }
                Value::Mapping(out)
            }
            Value::Sequence(items) => Value::Sequence(items.iter().map(|v| self.eval(v)).collect::<Result<_, _>>()?),
            other => other.clone(),
        })
    }

    fn intrinsic(&self, tagged: &TaggedValue) -> Result<String, TemplateError> {
        let tag = tagged.tag.to_string();
        let tag = tag.trim_start_matches('!');
        match tag {
            "Ref" => self.reference(&scalar(&tagged.value)?),
            "GetAtt" => {
                let text = scalar(&tagged.value)?;
                let (id, attribute) =
                    text.split_once('.').ok_or_else(|| invalid(format!("!GetAtt {text} needs Resource.Attribute")))?;
                self.attribute(id, attribute)
            }
            "Sub" => {
                let text = tagged.value.as_str().ok_or_else(|| {
                    TemplateError::Unsupported("!Sub with a variable map".into(), "!Sub of a single string")
                })?;
                self.substitute(text)
            }
            other => Err(TemplateError::Unsupported(format!("intrinsic !{other}"), "!Ref, !GetAtt, !Sub")),
        }
    }

    fn substitute(&self, text: &str) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').ok_or_else(|| invalid(format!("unclosed ${{ in !Sub {text:?}")))? + start;
            let name = &rest[start + 2..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some((id, attribute)) = name.split_once('.') {
                out.push_str(&self.attribute(id, attribute)?);
            } else {
                out.push_str(&self.reference(name)?);
            }
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn reference(&self, name: &str) -> Result<String, TemplateError> {
        match name {
            "AWS::Region" => return Ok(REGION.to_owned()),
            "AWS::AccountId" => return Ok(ACCOUNT.to_owned()),
            "AWS::StackName" => return Ok(self.stack.to_owned()),
            "AWS::Partition" => return Ok("aws".to_owned()),
            "AWS::URLSuffix" => return Ok("amazonaws.com".to_owned()),
            _ => {}
        }
        if let Some(value) = self.parameters.get(name) {
            return Ok(value.clone());
        }
        match self.kinds.get(name).copied() {
            Some("AWS::DynamoDB::Table") => Ok(physical_name(self.stack, name)),
            Some("AWS::SQS::Queue") => Ok(self.naming.queue_url(&self.queue_name(name))),
            Some("AWS::KMS::Key") => {
                self.naming.key_id(name).ok_or_else(|| invalid(format!("KMS key {name} was not created")))
            }
            Some("AWS::Serverless::HttpApi") => Ok(api_reference(name)),
            Some("AWS::Logs::LogGroup") => Ok(physical_name(self.stack, name)),
            Some(kind) => Err(TemplateError::Unsupported(
                format!("!Ref {name} (a {kind})"),
                "!Ref of tables, queues, keys, APIs, log groups",
            )),
            None => Err(invalid(format!("!Ref {name}: no such parameter or resource"))),
        }
    }

    fn attribute(&self, id: &str, attribute: &str) -> Result<String, TemplateError> {
        let kind = self
            .kinds
            .get(id)
            .copied()
            .ok_or_else(|| invalid(format!("!GetAtt {id}.{attribute}: no such resource")))?;
        match (kind, attribute) {
            ("AWS::DynamoDB::Table", "Arn") => {
                Ok(format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{}", physical_name(self.stack, id)))
            }
            ("AWS::SQS::Queue", "Arn") => Ok(format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", self.queue_name(id))),
            ("AWS::SQS::Queue", "QueueName") => Ok(self.queue_name(id)),
            ("AWS::SQS::Queue", "QueueUrl") => Ok(self.naming.queue_url(&self.queue_name(id))),
            ("AWS::KMS::Key", "Arn") => {
                let key = self.naming.key_id(id).ok_or_else(|| invalid(format!("KMS key {id} was not created")))?;
                Ok(format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/{key}"))
            }
            ("AWS::KMS::Key", "KeyId") => {
                self.naming.key_id(id).ok_or_else(|| invalid(format!("KMS key {id} was not created")))
            }
            ("AWS::Logs::LogGroup", "Arn") => {
                Ok(format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{}:*", physical_name(self.stack, id)))
            }
            _ => Err(TemplateError::Unsupported(
                format!("!GetAtt {id}.{attribute}"),
                "Arn of tables, queues, keys and log groups; QueueName, QueueUrl, KeyId",
            )),
        }
    }

    /// The queue whose `!GetAtt X.Arn` is `arn`: event sources and redrive policies name queues so.
    fn queue_with_arn(&self, arn: &str, what: &str) -> Result<String, TemplateError> {
        self.kinds
            .iter()
            .filter(|(_, kind)| **kind == "AWS::SQS::Queue")
            .map(|(id, _)| *id)
            .find(|q| self.attribute(q, "Arn").ok().as_deref() == Some(arn))
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("{what} must be !GetAtt <a queue in this template>.Arn")))
    }

    fn queue_name(&self, id: &str) -> String {
        // A FIFO queue's name must end in .fifo; the template says which queues are FIFO.
        let base = physical_name(self.stack, id);
        if self.fifo_queues.contains(id) { format!("{base}.fifo") } else { base }
    }
}

/// What `!Ref` of an HttpApi stands for locally (its id only appears in the deployed URL).
fn api_reference(logical_id: &str) -> String {
    format!("local-{logical_id}")
}

fn is_long_form(key: &str) -> bool {
    key == "Ref" || key.starts_with("Fn::")
}

/// Local physical names: `<stack>-<LogicalId>`, as CloudFormation's generated names begin.
pub fn physical_name(stack: &str, logical_id: &str) -> String {
    format!("{stack}-{logical_id}")
}

fn check_properties(id: &str, properties: &Value, allowed: &[&str], deploy_only: &[&str]) -> Result<(), TemplateError> {
    for key in properties.as_mapping().map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
        let key = key.as_str().unwrap_or_default();
        if !allowed.contains(&key) && !deploy_only.contains(&key) {
            return Err(TemplateError::Unsupported(
                format!("{id}.Properties.{key}"),
                "see infra/local/src/template.rs",
            ));
        }
    }
    Ok(())
}

fn text(value: &Value, what: &str) -> Result<String, TemplateError> {
    value.as_str().map(str::to_owned).ok_or_else(|| invalid(format!("{what} must be a string")))
}

fn number(value: Option<&Value>, what: &str) -> Result<Option<u64>, TemplateError> {
    value
        .map(|v| match v {
            Value::Number(n) => n.as_u64().ok_or_else(|| invalid(format!("{what} must be a whole number"))),
            Value::String(s) => s.parse().map_err(|_| invalid(format!("{what} = {s:?} is not a whole number"))),
            _ => Err(invalid(format!("{what} must be a number"))),
        })
        .transpose()
}

fn pairs(value: Option<&Value>, name: &str, kind: &str, what: &str) -> Result<Vec<(String, String)>, TemplateError> {
    value
        .and_then(Value::as_sequence)
        .ok_or_else(|| invalid(format!("{what} is missing")))?
        .iter()
        .map(|entry| {
            Ok((
                text(entry.get(name).unwrap_or(&Value::Null), &format!("{what}.{name}"))?,
                text(entry.get(kind).unwrap_or(&Value::Null), &format!("{what}.{kind}"))?,
            ))
        })
        .collect()
}

fn function(
    id: &str,
    resource: &Value,
    properties: &Value,
    globals: &serde_yaml::Mapping,
    resolver: &Resolver,
) -> Result<Function, TemplateError> {
    const ALLOWED: &[&str] = &[
        "CodeUri",
        "Handler",
        "Runtime",
        "Architectures",
        "MemorySize",
        "Timeout",
        "Environment",
        "Events",
        "Description",
        "Policies",
    ];
    const DEPLOY_ONLY: &[&str] = &["ReservedConcurrentExecutions", "Tags", "LoggingConfig"];
    check_properties(id, properties, ALLOWED, DEPLOY_ONLY)?;
    let globals = resolver.eval(&Value::Mapping(globals.clone()))?;
    // SAM's Globals have no Policies: each function's role is its own.
    let global_settings: Vec<&str> = ALLOWED.iter().copied().filter(|p| *p != "Policies").collect();
    check_properties("Globals.Function", &globals, &global_settings, DEPLOY_ONLY)?;
    let setting = |name: &str| properties.get(name).or_else(|| globals.get(name));
    let binary = resource
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{id}: Metadata.BuildProperties.Binary names no cargo binary")))?;
    let mut environment = BTreeMap::new();
    for source in [&globals, properties] {
        if let Some(vars) = source.get("Environment").and_then(|e| e.get("Variables")).and_then(Value::as_mapping) {
            for (k, v) in vars {
                environment.insert(scalar(k)?, scalar(v)?);
            }
        }
    }
    let mut routes = Vec::new();
    let mut sqs_sources = Vec::new();
    let mut schedules = Vec::new();
    let mut sqs_event = false;
    for (name, event) in properties.get("Events").and_then(Value::as_mapping).into_iter().flatten() {
        let name = format!("{id}.Events.{}", name.as_str().unwrap_or("?"));
        let props = event.get("Properties").unwrap_or(&Value::Null);
        match event.get("Type").and_then(Value::as_str) {
            Some("HttpApi") => {
                check_properties(&name, props, &["ApiId", "Method", "Path", "Auth", "PayloadFormatVersion"], &[])?;
                if props.get("PayloadFormatVersion").is_some_and(|v| scalar(v).ok().as_deref() != Some("2.0")) {
                    return Err(TemplateError::Unsupported(
                        format!("{name}: payload format 1.0"),
                        "payload format 2.0",
                    ));
                }
                let auth = match props.get("Auth") {
                    Some(auth) if auth.get("Authorizer").and_then(Value::as_str) == Some("NONE") => RouteAuth::Open,
                    Some(auth) => RouteAuth::Jwt {
                        authorizer: auth
                            .get("Authorizer")
                            .map(|a| text(a, "Auth.Authorizer"))
                            .transpose()?
                            .unwrap_or_default(),
                        scopes: auth
                            .get("AuthorizationScopes")
                            .and_then(Value::as_sequence)
                            .map(|s| s.iter().map(scalar).collect::<Result<_, _>>())
                            .transpose()?
                            .unwrap_or_default(),
                    },
                    // Filled in with the API's DefaultAuthorizer once every resource is read.
                    None => RouteAuth::Jwt { authorizer: String::new(), scopes: vec![] },
                };
                // Without ApiId, SAM puts the route on an implicit API that has none of this
                // template's authorizers: public when deployed. Refuse rather than differ.
                let api = props.get("ApiId").map(|a| text(a, &format!("{name}.ApiId"))).transpose()?;
                let names_the_api = |api: &str| {
                    resolver
                        .kinds
                        .iter()
                        .any(|(id, kind)| *kind == "AWS::Serverless::HttpApi" && api == api_reference(id))
                };
                if !api.as_deref().is_some_and(names_the_api) {
                    return Err(invalid(format!(
                        "{name}: ApiId must be !Ref of the template's AWS::Serverless::HttpApi"
                    )));
                }
                routes.push(Route {
                    method: text(props.get("Method").unwrap_or(&Value::Null), &format!("{name}.Method"))?
                        .to_uppercase(),
                    path: text(props.get("Path").unwrap_or(&Value::Null), &format!("{name}.Path"))?,
                    auth,
                });
            }
            Some("SQS") => {
                check_properties(
                    &name,
                    props,
                    &["Queue", "BatchSize", "FunctionResponseTypes", "Enabled"],
                    &["MaximumBatchingWindowInSeconds", "ScalingConfig"],
                )?;
                sqs_event = true;
                let queue_arn = text(props.get("Queue").unwrap_or(&Value::Null), &format!("{name}.Queue"))?;
                let queue = resolver.queue_with_arn(&queue_arn, &format!("{name}.Queue"))?;
                let responses: Vec<String> = props
                    .get("FunctionResponseTypes")
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().map(scalar).collect::<Result<_, _>>())
                    .transpose()?
                    .unwrap_or_default();
                if let Some(bad) = responses.iter().find(|r| *r != "ReportBatchItemFailures") {
                    // Neither cfn-lint nor sam validate catches a misspelt value (docs/decisions.md,
                    // "The template is read, not trusted").
                    return Err(invalid(format!(
                        "{name}.FunctionResponseTypes: {bad:?} is not ReportBatchItemFailures"
                    )));
                }
                let batch_size = number(props.get("BatchSize"), &format!("{name}.BatchSize"))?.unwrap_or(10);
                if !(1..=10).contains(&batch_size) {
                    return Err(TemplateError::Unsupported(
                        format!("{name}.BatchSize {batch_size}"),
                        "batches of 1 to 10",
                    ));
                }
                if props.get("Enabled").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                sqs_sources.push(SqsSource {
                    queue,
                    batch_size: batch_size as i32,
                    report_batch_item_failures: !responses.is_empty(),
                });
            }
            Some("Schedule") => {
                check_properties(&name, props, &["Schedule", "Enabled", "Description"], &["Name"])?;
                if props.get("Enabled").and_then(Value::as_bool) == Some(false) {
                    continue;
                }
                let expression = text(props.get("Schedule").unwrap_or(&Value::Null), &format!("{name}.Schedule"))?;
                schedules.push(rate_seconds(&expression).ok_or_else(|| {
                    TemplateError::Unsupported(
                        format!("{name}.Schedule {expression:?}"),
                        "rate(N minute[s]|hour[s]|day[s]); locally also second[s]",
                    )
                })?);
            }
            other => {
                return Err(TemplateError::Unsupported(
                    format!("{name} of type {other:?}"),
                    "HttpApi, SQS and Schedule events",
                ));
            }
        }
    }
    sqs_sources.sort_by(|a, b| a.queue.cmp(&b.queue));
    Ok(Function {
        logical_id: id.to_owned(),
        binary: binary.to_owned(),
        environment,
        timeout_seconds: number(setting("Timeout"), "Timeout")?.unwrap_or(3),
        memory_mb: number(setting("MemorySize"), "MemorySize")?.unwrap_or(128),
        routes,
        sqs_sources,
        schedules,
        policy: Policy::read(id, properties.get("Policies"), sqs_event)?,
    })
}

/// `rate(5 minutes)` in seconds. Seconds are a local-only unit, for a fast local parameter value.
fn rate_seconds(expression: &str) -> Option<u64> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (count, unit) = inner.trim().split_once(' ')?;
    let count: u64 = count.parse().ok().filter(|c| *c > 0)?;
    let unit = match unit.trim().trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86400,
        _ => return None,
    };
    Some(count * unit)
}

fn http_api(id: &str, properties: &Value, template: &mut Template) -> Result<(), TemplateError> {
    if template.http_api.replace(id.to_owned()).is_some() {
        return Err(TemplateError::Unsupported(format!("a second HttpApi {id}"), "one AWS::Serverless::HttpApi"));
    }
    check_properties(
        id,
        properties,
        &["Auth", "Description"],
        &["StageName", "CorsConfiguration", "AccessLogSettings", "Tags", "DefaultRouteSettings", "RouteSettings"],
    )?;
    for (key, settings) in properties.get("RouteSettings").and_then(Value::as_mapping).into_iter().flatten() {
        let key = scalar(key)?;
        check_properties(
            &format!("{id} RouteSettings {key:?}"),
            settings,
            &[],
            &["ThrottlingRateLimit", "ThrottlingBurstLimit"],
        )?;
        if settings.get("ThrottlingRateLimit").is_some() {
            template.throttled_routes.insert(key);
        }
    }
    let Some(auth) = properties.get("Auth") else { return Ok(()) };
    for (name, authorizer) in auth.get("Authorizers").and_then(Value::as_mapping).into_iter().flatten() {
        let name = scalar(name)?;
        check_properties(&format!("{id} authorizer {name}"), authorizer, &["JwtConfiguration", "IdentitySource"], &[])?;
        let jwt = authorizer
            .get("JwtConfiguration")
            .ok_or_else(|| TemplateError::Unsupported(format!("{id} authorizer {name}"), "JWT authorizers"))?;
        let source =
            authorizer.get("IdentitySource").and_then(Value::as_str).unwrap_or("$request.header.Authorization");
        if source != "$request.header.Authorization" {
            return Err(TemplateError::Unsupported(
                format!("{id} authorizer {name} IdentitySource {source}"),
                "$request.header.Authorization",
            ));
        }
        template.authorizers.insert(
            name,
            JwtAuthorizer {
                issuer: text(jwt.get("issuer").unwrap_or(&Value::Null), "JwtConfiguration.issuer")?,
                audience: jwt
                    .get("audience")
                    .and_then(Value::as_sequence)
                    .ok_or_else(|| invalid("JwtConfiguration.audience must be a list"))?
                    .iter()
                    .map(scalar)
                    .collect::<Result<_, _>>()?,
            },
        );
    }
    template.default_authorizer = auth.get("DefaultAuthorizer").map(|d| text(d, "DefaultAuthorizer")).transpose()?;
    Ok(())
}

fn table(id: &str, properties: &Value, resolver: &Resolver) -> Result<Table, TemplateError> {
    check_properties(
        id,
        properties,
        &["BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "TimeToLiveSpecification"],
        &["PointInTimeRecoverySpecification", "SSESpecification", "Tags", "DeletionProtectionEnabled"],
    )?;
    if properties.get("BillingMode").and_then(Value::as_str) != Some("PAY_PER_REQUEST") {
        return Err(TemplateError::Unsupported(format!("{id}: provisioned capacity"), "BillingMode: PAY_PER_REQUEST"));
    }
    let global_indexes = properties
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(|index| {
            let projection = index.get("Projection");
            Ok(GlobalIndex {
                name: text(index.get("IndexName").unwrap_or(&Value::Null), &format!("{id} IndexName"))?,
                key_schema: pairs(
                    index.get("KeySchema"),
                    "AttributeName",
                    "KeyType",
                    &format!("{id} index KeySchema"),
                )?,
                projection: projection
                    .and_then(|p| p.get("ProjectionType"))
                    .and_then(Value::as_str)
                    .unwrap_or("ALL")
                    .to_owned(),
                non_key_attributes: projection
                    .and_then(|p| p.get("NonKeyAttributes"))
                    .and_then(Value::as_sequence)
                    .map(|s| s.iter().map(scalar).collect::<Result<_, _>>())
                    .transpose()?
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<_, TemplateError>>()?;
    let ttl = properties.get("TimeToLiveSpecification");
    Ok(Table {
        logical_id: id.to_owned(),
        name: physical_name(resolver.stack, id),
        attributes: pairs(
            properties.get("AttributeDefinitions"),
            "AttributeName",
            "AttributeType",
            &format!("{id}.AttributeDefinitions"),
        )?,
        key_schema: pairs(properties.get("KeySchema"), "AttributeName", "KeyType", &format!("{id}.KeySchema"))?,
        global_indexes,
        ttl_attribute: ttl
            .filter(|t| t.get("Enabled").and_then(Value::as_bool) == Some(true))
            .map(|t| text(t.get("AttributeName").unwrap_or(&Value::Null), "TimeToLiveSpecification.AttributeName"))
            .transpose()?,
    })
}

fn queue(id: &str, properties: &Value, resolver: &Resolver) -> Result<Queue, TemplateError> {
    check_properties(
        id,
        properties,
        &["VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy", "FifoQueue", "ContentBasedDeduplication"],
        &["SqsManagedSseEnabled", "Tags"],
    )?;
    let redrive = properties
        .get("RedrivePolicy")
        .map(|policy| {
            let arn =
                text(policy.get("deadLetterTargetArn").unwrap_or(&Value::Null), &format!("{id} deadLetterTargetArn"))?;
            let dead_letter_queue =
                resolver.queue_with_arn(&arn, &format!("{id}.RedrivePolicy.deadLetterTargetArn"))?;
            Ok::<_, TemplateError>(Redrive {
                dead_letter_queue,
                max_receive_count: number(policy.get("maxReceiveCount"), "maxReceiveCount")?
                    .ok_or_else(|| invalid(format!("{id}: RedrivePolicy needs maxReceiveCount")))?,
            })
        })
        .transpose()?;
    Ok(Queue {
        logical_id: id.to_owned(),
        name: resolver.queue_name(id),
        fifo: properties.get("FifoQueue").and_then(Value::as_bool).unwrap_or(false),
        content_based_deduplication: properties
            .get("ContentBasedDeduplication")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        visibility_timeout: number(properties.get("VisibilityTimeout"), &format!("{id}.VisibilityTimeout"))?,
        message_retention: number(properties.get("MessageRetentionPeriod"), &format!("{id}.MessageRetentionPeriod"))?,
        redrive,
    })
}

fn key(id: &str, resource: &Value) -> Result<Key, TemplateError> {
    let properties = resource.get("Properties").unwrap_or(&Value::Null);
    check_properties(
        id,
        properties,
        &["KeySpec", "KeyUsage", "Description"],
        &["KeyPolicy", "EnableKeyRotation", "Tags", "PendingWindowInDays"],
    )?;
    let spec = properties.get("KeySpec").and_then(Value::as_str).unwrap_or("SYMMETRIC_DEFAULT").to_owned();
    let usage = properties.get("KeyUsage").and_then(Value::as_str).unwrap_or("ENCRYPT_DECRYPT").to_owned();
    Ok(Key { logical_id: id.to_owned(), spec, usage })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names;

    impl Naming for Names {
        fn queue_url(&self, name: &str) -> String {
            format!("http://sqs.test/{ACCOUNT}/{name}")
        }

        fn key_id(&self, logical_id: &str) -> Option<String> {
            Some(format!("key-{logical_id}"))
        }
    }

    fn parse(text: &str) -> Result<Template, TemplateError> {
        Template::parse(text, "st", &HashMap::from([("Issuer".to_owned(), "http://iss/".to_owned())]), &Names)
    }

    const BASE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Issuer: {Type: String}
  Level: {Type: String, Default: info, AllowedValues: [info, debug]}
  Visibility: {Type: Number, Default: 30}
Globals:
  Function:
    Timeout: 7
    Environment:
      Variables:
        LEVEL: !Ref Level
        SHARED: global
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            JwtConfiguration: {issuer: !Ref Issuer, audience: [aud]}
      AccessLogSettings: {DestinationArn: !GetAtt Logs.Arn, Format: $context.requestId}
      DefaultRouteSettings: {ThrottlingRateLimit: 100, ThrottlingBurstLimit: 50}
      RouteSettings:
        "GET /open": {ThrottlingRateLimit: 5, ThrottlingBurstLimit: 5}
  Fn:
    Type: AWS::Serverless::Function
    Metadata: {BuildMethod: rust-cargolambda, BuildProperties: {Binary: fn-bin}}
    Properties:
      CodeUri: .
      MemorySize: 256
      LoggingConfig: {LogGroup: !Ref Logs}
      Policies: [{Statement: [{Effect: Allow, Action: "sqs:*", Resource: !GetAtt Work.Arn}]}]
      Environment:
        Variables:
          SHARED: mine
          TABLE: !Ref Things
          TABLE_ARN: !GetAtt Things.Arn
          QUEUE: !Ref Work
          KEY: !Ref Secrets
          WHERE: !Sub "${AWS::Region}/${Things}/${Work.QueueName}/${!Literal}"
          LONG: {"Fn::GetAtt": [Things, Arn]}
      Events:
        Open: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: get, Path: /open, Auth: {Authorizer: NONE}}}
        Default: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: GET, Path: "/things/{id}"}}
        Admin: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: POST, Path: /things, Auth: {Authorizer: Jwt, AuthorizationScopes: [admin]}}}
        Queue: {Type: SQS, Properties: {Queue: !GetAtt Work.Arn, BatchSize: 5, FunctionResponseTypes: [ReportBatchItemFailures]}}
        Tick: {Type: Schedule, Properties: {Schedule: rate(2 minutes)}}
  Things:
    Type: AWS::DynamoDB::Table
    DeletionPolicy: Retain
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}, {AttributeName: owner, AttributeType: S}]
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      GlobalSecondaryIndexes:
        - IndexName: by-owner
          KeySchema: [{AttributeName: owner, KeyType: HASH}]
          Projection: {ProjectionType: KEYS_ONLY}
      TimeToLiveSpecification: {AttributeName: expires_at, Enabled: true}
  Work:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      VisibilityTimeout: !Ref Visibility
      RedrivePolicy: {deadLetterTargetArn: !GetAtt Dead.Arn, maxReceiveCount: 3}
  Dead:
    Type: AWS::SQS::Queue
    Properties: {FifoQueue: true}
  Secrets:
    Type: AWS::KMS::Key
  DeadAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties: {MetricName: x}
  Logs:
    Type: AWS::Logs::LogGroup
    Metadata: {checkov: {skip: [{id: CKV_AWS_158, comment: why}]}}
    Properties: {RetentionInDays: 365}
"#;

    #[test]
    fn reads_the_supported_subset_with_every_intrinsic_resolved() {
        let t = parse(BASE).unwrap();
        let f = &t.functions[0];
        assert_eq!((f.binary.as_str(), f.timeout_seconds, f.memory_mb), ("fn-bin", 7, 256));
        let env = &f.environment;
        assert_eq!(env["LEVEL"], "info");
        assert_eq!(env["SHARED"], "mine", "a function's variable overrides the global one");
        assert_eq!(env["TABLE"], "st-Things");
        assert_eq!(env["TABLE_ARN"], format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/st-Things"));
        assert_eq!(env["LONG"], env["TABLE_ARN"]);
        assert_eq!(env["QUEUE"], format!("http://sqs.test/{ACCOUNT}/st-Work.fifo"));
        assert_eq!(env["KEY"], "key-Secrets");
        assert_eq!(env["WHERE"], "us-east-1/st-Things/st-Work.fifo/${Literal}");
        let auth: Vec<(&str, &RouteAuth)> = f.routes.iter().map(|r| (r.path.as_str(), &r.auth)).collect();
        assert_eq!(auth[0], ("/open", &RouteAuth::Open));
        assert_eq!(f.routes[0].method, "GET");
        assert_eq!(auth[1], ("/things/{id}", &RouteAuth::Jwt { authorizer: "Jwt".into(), scopes: vec![] }));
        assert_eq!(auth[2], ("/things", &RouteAuth::Jwt { authorizer: "Jwt".into(), scopes: vec!["admin".into()] }));
        assert_eq!(
            f.sqs_sources,
            vec![SqsSource { queue: "Work".into(), batch_size: 5, report_batch_item_failures: true }]
        );
        assert_eq!(t.authorizers["Jwt"], JwtAuthorizer { issuer: "http://iss/".into(), audience: vec!["aud".into()] });
        let table = t.table("Things").unwrap();
        assert_eq!(table.ttl_attribute.as_deref(), Some("expires_at"));
        assert_eq!(table.global_indexes[0].projection, "KEYS_ONLY");
        let work = t.queue("Work").unwrap();
        assert_eq!((work.fifo, work.visibility_timeout), (true, Some(30)));
        assert_eq!(work.redrive, Some(Redrive { dead_letter_queue: "Dead".into(), max_receive_count: 3 }));
        assert_eq!(t.keys[0].spec, "SYMMETRIC_DEFAULT");
        assert_eq!(t.throttled_routes, BTreeSet::from(["GET /open".to_owned()]));
    }

    #[test]
    fn refuses_what_it_does_not_understand_by_name() {
        let refused = |from: &str, to: &str| {
            let text = BASE.replacen(from, to, 1);
            assert_ne!(text, BASE, "the replacement {from:?} applies");
            parse(&text).unwrap_err().to_string()
        };
        assert!(refused("Type: AWS::KMS::Key", "Type: AWS::SNS::Topic").contains("AWS::SNS::Topic"));
        assert!(refused("!Ref Level", "!Join [\"\", [a]]").contains("!Join"));
        assert!(refused("ReportBatchItemFailures", "ReportBatchFailures").contains("ReportBatchFailures"));
        assert!(refused("BillingMode: PAY_PER_REQUEST", "BillingMode: PROVISIONED").contains("PAY_PER_REQUEST"));
        assert!(refused("MemorySize: 256", "MemorySize: 256\n      Layers: [x]").contains("Fn.Properties.Layers"));
        assert!(refused("Transform:", "Conditions: {}\nTransform:").contains("Conditions"));
        assert!(refused("!Ref Things", "!Ref Nothing").contains("Nothing"));
        assert!(refused("Type: SQS", "Type: S3").contains("S3"));
        assert!(refused("rate(2 minutes)", "cron(0 12 * * ? *)").contains("cron"));
        assert!(refused("ApiId: !Ref Api, Method: GET", "Method: GET").contains("ApiId"));
        assert!(
            refused("  Secrets:\n", "  Api2:\n    Type: AWS::Serverless::HttpApi\n  Secrets:\n")
                .contains("second HttpApi")
        );
        assert!(
            refused(
                "Work:\n    Type: AWS::SQS::Queue\n    Properties:\n",
                "Work:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: 5\n"
            )
            .contains("DelaySeconds")
        );
        assert!(refused("Authorizer: Jwt,", "Authorizer: Other,").contains("unknown authorizer Other"));
        assert!(refused("\"GET /open\":", "\"GET /closed\":").contains("GET /closed"));
        assert!(refused("ThrottlingRateLimit: 5,", "DetailedMetricsEnabled: true,").contains("DetailedMetricsEnabled"));
        assert!(refused("RetentionInDays: 365", "LogGroupName: x").contains("Logs.Properties.LogGroupName"));
        assert!(refused("Default: info,", "Default: loud,").contains("not one of"));
        assert!(
            parse(&BASE.replace("  Issuer: {Type: String}\n", "  Issuer: {Type: String}\n  Missing: {Type: String}\n"))
                .unwrap_err()
                .to_string()
                .contains("Missing")
        );
    }

    #[test]
    fn the_project_template_is_in_the_subset() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml")).unwrap();
        let mut parameters: HashMap<String, String> =
            serde_json::from_str(include_str!("../parameters.json")).expect("parameters.json");
        // Filled in by the running stack (its own URLs).
        for url in ["BankUrl", "PublicBaseUrl"] {
            parameters.insert(url.into(), "http://127.0.0.1".into());
        }
        let t = Template::parse(&text, "superpay", &parameters, &Names).unwrap();
        assert!(t.functions.iter().any(|f| f.binary == "config"));
        for f in &t.functions {
            // A live attempt must never lose its idempotency lock to a retry.
            assert!(
                (f.timeout_seconds as i64) < superpay::idempotency::IN_PROGRESS_SECONDS,
                "{} Timeout",
                f.logical_id
            );
        }
        assert!(t.table("ConfigTable").is_some());
        for route in t.functions.iter().flat_map(|f| &f.routes) {
            assert!(
                route.auth != RouteAuth::Open || t.throttled_routes.contains(&route.key()),
                "{} takes no JWT: throttle it in HttpApi.RouteSettings",
                route.key()
            );
        }
        // Without a group of its own, a function logs to one Lambda creates, kept forever.
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        for (id, resource) in doc["Resources"].as_mapping().unwrap() {
            if resource["Type"].as_str() == Some("AWS::Serverless::Function") {
                let group = match &resource["Properties"]["LoggingConfig"]["LogGroup"] {
                    Value::Tagged(reference) if reference.tag == "Ref" => reference.value.as_str(),
                    _ => None,
                };
                assert!(
                    group.is_some_and(|g| doc["Resources"][g]["Type"].as_str() == Some("AWS::Logs::LogGroup")),
                    "{}: LoggingConfig.LogGroup must be !Ref its AWS::Logs::LogGroup",
                    id.as_str().unwrap_or_default()
                );
            }
        }
    }
}
