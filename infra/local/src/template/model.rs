//! What the local stack builds from the template: the resources, with every intrinsic already
//! resolved to local names. The readers beside this module fill it in.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::iam::Policy;

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

impl Template {
    pub fn table(&self, logical_id: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    pub fn queue(&self, logical_id: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.logical_id == logical_id)
    }
}
