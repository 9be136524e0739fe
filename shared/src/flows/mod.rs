//! The error-flow table (capability 7): for an error at a step of a client's flow, what the client
//! does next. Clients hold the table ahead of time (config group `error-flows`, fetched and
//! diffed like any group); every problem+json carries the answer for its code (`control`); and
//! `POST /flows/next` answers with attempts counted on the server (`api`, `store`).
//!
//! A table (JSON, the group's parameters):
//!
//! ```json
//! {"flows": {"purchase": ["pay", "status"], "top-up": ["amount"]},
//!  "routes": {"POST /purchases": "purchase/pay"},
//!  "rules": [{"when": {"error_code": "insufficient_funds"},
//!             "then": {"action": "switch_flow", "to": "top-up/amount", "message_key": "errors.funds"}}],
//!  "default": {"action": "abort", "message_key": "errors.generic"}}
//! ```
//!
//! The rules are the one rules module's (`crate::rules`) over the facts `flow`, `step` and
//! `error_code`: first match wins, wildcards after the specific rules they would hide, a default.
//! A table is verified whole when published and when a function reads it (the house table, compiled
//! in, by its tests): every name it uses is defined, every
//! code it names is catalogued, only a code that may be retried (`Code::may_retry`) is ever
//! answered with a retry, at any step, and no chain of switches leads from a step back to itself.
//!
//! Pure: the caller brings the table's text, the position and the attempts counted.

pub mod api;
pub mod control;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Problem;
use crate::problem::catalogue;
use crate::rules::{Pattern, RuleSet, RulesError};

/// The config group that holds the table.
pub const GROUP: &str = "error-flows";
/// The house table: what every function answers with until a table is published (version 0),
/// and what `cargo stack up` publishes first.
pub const HOUSE_TABLE: &str = include_str!("house-table.json");
/// The facts a rule may name, in the rule set's order.
const FACTS: [&str; 3] = ["flow", "step", "error_code"];
/// The most attempts a retry policy may give (Step Functions' own cap is far higher; a phone
/// retrying more than this is a phone the user has given up on).
pub const MAX_ATTEMPTS: u32 = 10;
/// The longest wait a retry policy may ask for, in milliseconds.
pub const MAX_DELAY_MS: u64 = 300_000;
/// The most steps a table's flows have in all: a client's screens, not a catalogue; it bounds the
/// work of verifying a table (steps x named codes x rules).
pub const MAX_STEPS: usize = 128;

/// What the client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "FlowActionKind"))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Send the same request again, after a delay, up to the policy's attempts; then `after_retries`.
    Retry,
    /// Leave this flow for another flow's step (`to`).
    SwitchFlow,
    /// The outcome is not known yet: wait, then learn it by reading its status, or by sending the
    /// same request with the same Idempotency-Key (which answers the first one's outcome); never
    /// with a new key.
    Await,
    /// Stop the flow and tell the user.
    Abort,
}

/// How a retry's wait is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Wait a random time from 0 to the computed delay (AWS's "full jitter"): devices that failed
    /// together do not come back together.
    Full,
    /// Wait exactly the computed delay.
    #[serde(rename = "none")]
    Off,
}

/// How a retry waits: attempt n (from 1) waits `interval_ms x backoff_rate^(n-1)`, at most
/// `max_delay_ms`, jittered (Step Functions' Retry fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub interval_ms: u64,
    pub backoff_rate: f64,
    pub max_delay_ms: u64,
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (from 1); `random` (0 to `u16::MAX`) draws the jitter.
    pub fn delay_ms(&self, attempt: u32, random: u16) -> u64 {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = self.interval_ms as f64 * self.backoff_rate.powi(exponent);
        let delay = if grown.is_finite() { (grown as u64).min(self.max_delay_ms) } else { self.max_delay_ms };
        match self.jitter {
            Jitter::Off => delay,
            Jitter::Full => delay.saturating_mul(u64::from(random)) / u64::from(u16::MAX),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!("max_attempts is {}: it is 1 to {MAX_ATTEMPTS}", self.max_attempts));
        }
        if !(1.0..=10.0).contains(&self.backoff_rate) {
            return Err(format!("backoff_rate is {}: it is 1.0 to 10.0", self.backoff_rate));
        }
        if self.interval_ms > self.max_delay_ms || self.max_delay_ms > MAX_DELAY_MS {
            return Err(format!(
                "interval_ms {} and max_delay_ms {} must keep interval_ms <= max_delay_ms <= {MAX_DELAY_MS}",
                self.interval_ms, self.max_delay_ms
            ));
        }
        Ok(())
    }
}

/// A rule's answer (and the table's default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema), schemars(rename = "FlowAction"))]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub action: Kind,
    /// `switch_flow`'s target, `<flow>/<step>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `retry`'s policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// What a `retry` does once its attempts are spent (not a retry); abort if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_retries: Option<Box<Action>>,
    /// The key of the text the client shows (its own translations).
    pub message_key: String,
    /// Whether the user sees the message (a silent retry does not bother them).
    #[serde(default = "shown")]
    pub show_user: bool,
}

fn shown() -> bool {
    true
}

impl Action {
    /// What follows a retry whose attempts are spent.
    pub fn exhausted(&self) -> Action {
        self.after_retries.as_deref().cloned().unwrap_or_else(|| Action {
            action: Kind::Abort,
            to: None,
            retry: None,
            after_retries: None,
            message_key: self.message_key.clone(),
            show_user: true,
        })
    }

    /// Its shape: each kind has the fields it needs and no others.
    fn check(&self, nested: bool) -> Result<(), String> {
        let (to, retry, after) = (self.to.is_some(), self.retry.is_some(), self.after_retries.is_some());
        match self.action {
            Kind::SwitchFlow if !to => return Err("switch_flow needs `to`".into()),
            Kind::Retry if nested => return Err("after_retries may not be another retry".into()),
            Kind::Retry if !retry || to => return Err("retry needs `retry` (its policy) and no `to`".into()),
            Kind::SwitchFlow | Kind::Await | Kind::Abort if retry || after => {
                return Err("only retry takes `retry` and `after_retries`".into());
            }
            Kind::Await | Kind::Abort if to => return Err("only switch_flow takes `to`".into()),
            _ => {}
        }
        if self.message_key.is_empty() || self.message_key.len() > 128 {
            return Err("message_key is 1 to 128 characters".into());
        }
        if let Some(policy) = &self.retry {
            policy.check()?;
        }
        match &self.after_retries {
            Some(after) => after.check(true),
            None => Ok(()),
        }
    }

    /// The switches it may lead to: its own target, or its retries' follow-up's.
    fn targets(&self) -> impl Iterator<Item = &str> {
        self.to.as_deref().into_iter().chain(self.after_retries.iter().filter_map(|a| a.to.as_deref()))
    }
}

/// A step of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Step {
    pub flow: String,
    pub step: String,
}

impl Step {
    fn parse(text: &str) -> Option<Step> {
        let (flow, step) = text.split_once('/')?;
        (is_name(flow) && is_name(step)).then(|| Step { flow: flow.to_owned(), step: step.to_owned() })
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.flow, self.step)
    }
}

/// A flow's or step's name: 1 to 64 of `a-z`, `0-9`, `-` and `_`.
fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An error code as a client may send one: 1 to 64 of `a-z`, `0-9` and `_` (catalogued or not).
pub fn is_error_code(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A verified table at its published version (0: the house table).
#[derive(Debug, Clone)]
pub struct FlowTable {
    pub version: u64,
    flows: BTreeMap<String, Vec<String>>,
    routes: BTreeMap<String, Step>,
    rules: RuleSet<Action>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableJson {
    flows: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    routes: BTreeMap<String, String>,
    #[serde(default)]
    rules: Vec<Value>,
    default: Value,
}

/// Why a table is refused; each says what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowTableError {
    #[error("the table is not {{\"flows\", \"routes\", \"rules\", \"default\"}} of the expected shape: {0}")]
    Shape(String),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error("{0}")]
    Invalid(String),
    #[error("{at} switches to {target}, which is not a step of the table's flows")]
    UnknownTarget { at: String, target: String },
    #[error(
        "{code} at {at} would be retried ({by}), but it is a decision the same request gets again (only a 5xx, listing_conflict or idempotency_request_in_progress may be retried): switch, await or abort instead"
    )]
    RetryNotAllowed { code: String, at: String, by: String },
    #[error("a lasting error would switch flows forever: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

impl From<FlowTableError> for Problem {
    fn from(e: FlowTableError) -> Self {
        match &e {
            FlowTableError::UnknownTarget { .. } => Problem::new(catalogue::FLOW_TARGET_UNKNOWN, e.to_string()),
            FlowTableError::Cycle(path) => {
                Problem::new(catalogue::FLOW_TABLE_CYCLE, e.to_string()).with("cycle", path.clone())
            }
            _ => Problem::new(catalogue::FLOW_TABLE_INVALID, e.to_string()),
        }
    }
}

/// Validates the parameters of the `error-flows` group (the config function's publish check).
pub fn validate_group(parameters: &Value) -> Result<(), Problem> {
    FlowTable::parse(parameters, 0).map(drop).map_err(Problem::from)
}

impl FlowTable {
    /// The house table (version 0), built once per process and not verified there: its tests
    /// verify it whole, and verifying it again would cost a cold process's first problem about a
    /// third of a millisecond of CPU, some 5 ms at a 128 MB function's share (docs/performance.md).
    /// A published table, the house table published as a version included, is verified as read.
    pub fn house() -> Arc<FlowTable> {
        static HOUSE: LazyLock<Arc<FlowTable>> = LazyLock::new(|| {
            let json = serde_json::from_str(HOUSE_TABLE).unwrap_or(Value::Null);
            Arc::new(FlowTable::build(&json, 0).expect("the house table is valid (flows::tests)"))
        });
        HOUSE.clone()
    }

    /// A table from its JSON, verified whole.
    pub fn parse(json: &Value, version: u64) -> Result<FlowTable, FlowTableError> {
        let table = FlowTable::build(json, version)?;
        table.check_rules()?;
        table.check_every_position()?;
        Ok(table)
    }

    /// A table from its JSON, its shape, names and targets checked, its actions not (`parse`).
    fn build(json: &Value, version: u64) -> Result<FlowTable, FlowTableError> {
        let table = TableJson::deserialize(json).map_err(|e| FlowTableError::Shape(e.to_string()))?;
        let rules = RuleSet::parse(&json!({"facts": FACTS, "rules": table.rules, "default": table.default}), GROUP)?;
        let invalid = |text: String| Err(FlowTableError::Invalid(text));
        let steps = table.flows.values().map(Vec::len).sum::<usize>();
        if table.flows.is_empty() || steps > MAX_STEPS {
            return invalid(format!("`flows` has {steps} steps in all: a table has 1 to {MAX_STEPS}"));
        }
        for (flow, steps) in &table.flows {
            let mut seen = BTreeSet::new();
            if !is_name(flow) || steps.is_empty() || !steps.iter().all(|s| is_name(s) && seen.insert(s)) {
                return invalid(format!(
                    "flow {flow:?}: a flow and each of its steps (at least one, each once) are named with 1 to 64 of a-z, 0-9, - and _"
                ));
            }
        }
        let defined = |step: &Step| table.flows.get(&step.flow).is_some_and(|steps| steps.contains(&step.step));
        let mut routes = BTreeMap::new();
        for (route, at) in &table.routes {
            let shaped = route.split_once(' ').is_some_and(|(method, path)| {
                method.bytes().all(|b| b.is_ascii_uppercase()) && !method.is_empty() && path.starts_with('/')
            });
            if !shaped {
                return invalid(format!("route {route:?} is not \"METHOD /path\" as template.yaml names it"));
            }
            match Step::parse(at).filter(|s| defined(s)) {
                Some(step) => routes.insert(route.clone(), step),
                None => return Err(FlowTableError::UnknownTarget { at: format!("route {route}"), target: at.clone() }),
            };
        }
        Ok(FlowTable { version, flows: table.flows, routes, rules })
    }

    fn actions(&self) -> impl Iterator<Item = (String, &Action)> {
        let rules = self.rules.rules.iter().enumerate().map(|(i, r)| (format!("rule {i}"), &r.then));
        rules.chain(std::iter::once(("the default".to_owned(), &self.rules.default)))
    }

    /// Each rule names defined flows, steps and catalogued codes; each action is well formed and
    /// switches only to defined steps.
    fn check_rules(&self) -> Result<(), FlowTableError> {
        for (index, rule) in self.rules.rules.iter().enumerate() {
            let exact = |p: &Pattern| match p {
                Pattern::Exact(v) => Some(v.clone()),
                Pattern::Any => None,
            };
            let (flow, step, code) = (exact(&rule.when[0]), exact(&rule.when[1]), exact(&rule.when[2]));
            let steps: Vec<&String> = match &flow {
                Some(flow) => match self.flows.get(flow) {
                    Some(steps) => steps.iter().collect(),
                    None => {
                        return Err(FlowTableError::Invalid(format!(
                            "rule {index} names flow {flow:?}, which `flows` does not define"
                        )));
                    }
                },
                None => self.flows.values().flatten().collect(),
            };
            if let Some(step) = step.filter(|s| !steps.contains(&s)) {
                return Err(FlowTableError::Invalid(format!(
                    "rule {index} names step {step:?}, which its flow does not have"
                )));
            }
            if let Some(code) = code.filter(|c| catalogue::find(c).is_none()) {
                return Err(FlowTableError::Invalid(format!(
                    "rule {index} names error code {code:?}, which is not in the catalogue (docs/api/errors.md)"
                )));
            }
        }
        for (at, action) in self.actions() {
            action.check(false).map_err(|why| FlowTableError::Invalid(format!("{at}: {why}")))?;
            for target in action.targets() {
                if !Step::parse(target).is_some_and(|s| self.is_step(&s)) {
                    return Err(FlowTableError::UnknownTarget { at: at.clone(), target: target.to_owned() });
                }
            }
        }
        Ok(())
    }

    /// Over every step (and an unknown position) and every code (and an unknown one), every
    /// answer any user may get: never a retry of a code that may not be retried, and no chain of
    /// switches from a step back to itself. Codes no rule names are answered alike but for whether
    /// they may be retried, so one of them stands for those that may and the unknown code for the
    /// rest: the work is steps x named codes x rules, not the whole catalogue's.
    fn check_every_position(&self) -> Result<(), FlowTableError> {
        let steps: Vec<Step> = self.steps().collect();
        let named: BTreeSet<&str> = self
            .rules
            .rules
            .iter()
            .filter_map(|rule| match &rule.when[2] {
                Pattern::Exact(code) => Some(code.as_str()),
                Pattern::Any => None,
            })
            .collect();
        let unnamed_retryable = catalogue::ALL.iter().copied().find(|c| c.may_retry() && !named.contains(c.code()));
        let codes: Vec<Option<&'static catalogue::Code>> = named
            .iter()
            .filter_map(|code| catalogue::find(code))
            .chain(unnamed_retryable)
            .map(Some)
            .chain(std::iter::once(None))
            .collect();
        // The switches out of each step: each target once, with the first code that takes it.
        let mut edges: Edges = BTreeMap::new();
        let mut reached = BTreeSet::new();
        for at in steps.iter().map(Some).chain(std::iter::once(None)) {
            // A rule's targets out of this step, taken once: later codes it answers add no edge.
            let mut taken = BTreeSet::new();
            for code in &codes {
                let name = code.map_or("any code no rule names", |c| c.code());
                for (action, rule) in self.rules.candidates(&facts(at, code.map(|c| c.code()))) {
                    reached.insert(rule);
                    if action.action == Kind::Retry && !code.is_some_and(|c| c.may_retry()) {
                        return Err(FlowTableError::RetryNotAllowed {
                            code: name.to_owned(),
                            at: at.map_or("an unknown step".to_owned(), Step::to_string),
                            by: rule.map_or("the default".to_owned(), |i| format!("rule {i}")),
                        });
                    }
                    if let Some(at) = at.filter(|_| taken.insert(rule)) {
                        for target in action.targets().filter_map(Step::parse) {
                            edges.entry(at).or_default().entry(target).or_insert(name);
                        }
                    }
                }
            }
        }
        // A rule no step of the table reaches, though rolled out: its flow has no such step.
        let unreached =
            self.rules.rules.iter().enumerate().find(|(i, r)| r.rollout > 0 && !reached.contains(&Some(*i)));
        if let Some((index, _)) = unreached {
            return Err(FlowTableError::Invalid(format!(
                "rule {index} can never match: no step of the table's flows, with any code, reaches it past the rules before it"
            )));
        }
        find_cycle(&steps, &edges).map_or(Ok(()), |cycle| Err(FlowTableError::Cycle(cycle)))
    }

    fn steps(&self) -> impl Iterator<Item = Step> + '_ {
        self.flows
            .iter()
            .flat_map(|(flow, steps)| steps.iter().map(|step| Step { flow: flow.clone(), step: step.clone() }))
    }

    fn is_step(&self, step: &Step) -> bool {
        self.flows.get(&step.flow).is_some_and(|steps| steps.contains(&step.step))
    }

    /// `<flow>/<step>` if it is one of the table's steps.
    pub fn step(&self, text: &str) -> Option<Step> {
        Step::parse(text).filter(|s| self.is_step(s))
    }

    /// Where a request's client is: the step it names (the `Superpay-Flow` header), if the table
    /// has it, else the route's step in the table, else unknown.
    pub fn locate(&self, named: Option<&str>, route: &str) -> Option<Step> {
        named.and_then(|text| self.step(text)).or_else(|| self.routes.get(route).cloned())
    }

    /// The answer for `code` at `at`, for `user` (rollouts), and the rule that gave it.
    pub fn decide(&self, at: Option<&Step>, code: &str, user: &str) -> (&Action, Option<usize>) {
        self.rules.decide(&facts(at, Some(code)), user)
    }

    /// The `flow_control` member of a problem answering `code` with `status` at `at`.
    /// `idempotent`: the request carried an Idempotency-Key (it creates something or moves money).
    pub fn flow_control(&self, at: Option<&Step>, code: &str, status: u16, user: &str, idempotent: bool) -> Value {
        let (action, rule) = self.decide(at, code, user);
        let control = self.decided(at, action, rule).advised(status, idempotent);
        serde_json::to_value(control).unwrap_or_else(|_| json!({}))
    }

    /// `decided` as JSON.
    pub fn answer(&self, at: Option<&Step>, action: &Action, rule: Option<usize>) -> Value {
        serde_json::to_value(self.decided(at, action, rule)).unwrap_or_else(|_| json!({}))
    }

    /// An action as clients get it: where it was decided, by which rule of which version.
    pub fn decided(&self, at: Option<&Step>, action: &Action, rule: Option<usize>) -> FlowAnswer {
        FlowAnswer {
            action: action.clone(),
            table_version: self.version,
            at: at.map(Step::to_string),
            rule,
            reuse_idempotency_key: false,
            read_status_first: false,
        }
    }

    /// `hops` as JSON.
    pub fn replay(&self, start: Option<Step>, errors: &[String], user: &str) -> Vec<Value> {
        let hops = self.hops(start, errors, user);
        hops.iter().map(|hop| serde_json::to_value(hop).unwrap_or_else(|_| json!({}))).collect()
    }

    /// Replays `errors` from `start` as a client following the table would, `user` deciding the
    /// rollouts: each error's answer, until the flow ends (abort, await) or the errors run out.
    /// Attempts are counted as `POST /flows/next` counts them: per step and code, for the whole run.
    pub fn hops(&self, start: Option<Step>, errors: &[String], user: &str) -> Vec<FlowHop> {
        let mut path = Vec::new();
        let mut at = start;
        let mut attempts: BTreeMap<(Option<Step>, &str), u32> = BTreeMap::new();
        for code in errors {
            let (action, rule) = self.decide(at.as_ref(), code, user);
            let mut hop = FlowHop {
                error_code: code.clone(),
                at: at.as_ref().map(Step::to_string),
                rule,
                attempt: None,
                delay_ms: None,
                action: action.action,
                to: None,
            };
            let taken = match &action.retry {
                Some(policy) => {
                    let count = attempts.entry((at.clone(), code.as_str())).or_default();
                    if *count < policy.max_attempts {
                        *count += 1;
                        hop.attempt = Some(*count);
                        hop.delay_ms = Some(policy.delay_ms(*count, u16::MAX));
                        action.clone()
                    } else {
                        action.exhausted()
                    }
                }
                None => action.clone(),
            };
            hop.action = taken.action;
            if let Some(to) = &taken.to {
                hop.to = Some(to.clone());
                at = Step::parse(to);
            }
            path.push(hop);
            if matches!(taken.action, Kind::Abort | Kind::Await) {
                break;
            }
        }
        path
    }
}

/// An action as clients get it (a problem's `flow_control`, `POST /flows/next`): where it was
/// decided, by which rule of which version of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FlowAnswer {
    #[serde(flatten)]
    pub action: Action,
    /// The table's published version (0: the house table).
    pub table_version: u64,
    /// The step it was decided at, `<flow>/<step>`; null when the client's step is not known.
    pub at: Option<String>,
    /// The index of the rule that decided it; null for the table's default.
    pub rule: Option<usize>,
    /// Send the request again with the same Idempotency-Key: a new key would be a new request.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reuse_idempotency_key: bool,
    /// Read the first request's outcome before sending it again: a partner may have acted before
    /// its answer was lost.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_status_first: bool,
}

impl FlowAnswer {
    /// What an answer that sends the request again (`retry`, `await`) must say of it: `idempotent`,
    /// that it carried an Idempotency-Key (a new key would be a new request: the money could move
    /// twice); after a 502 or 504 (`status`), that its outcome comes first.
    pub fn advised(self, status: u16, idempotent: bool) -> Self {
        let sends_again = matches!(self.action.action, Kind::Retry | Kind::Await);
        FlowAnswer {
            reuse_idempotency_key: sends_again && idempotent,
            read_status_first: sends_again && (status == 502 || status == 504),
            ..self
        }
    }
}

/// One error of a replay and the answer a client following the table takes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FlowHop {
    pub error_code: String,
    /// The step the error came at, `<flow>/<step>`; null when it is not known.
    pub at: Option<String>,
    /// The index of the rule that answered; null for the table's default.
    pub rule: Option<usize>,
    /// A retry's number at this step for this code (from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// A retry's wait, at its longest (jitter drawn at its top).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// What the client does: the rule's action, or what follows a retry whose attempts are spent.
    pub action: Kind,
    /// `switch_flow`'s target, `<flow>/<step>`: where the next error comes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

fn facts<'a>(at: Option<&'a Step>, code: Option<&'a str>) -> BTreeMap<&'a str, &'a str> {
    let mut facts = BTreeMap::new();
    if let Some(at) = at {
        facts.insert("flow", at.flow.as_str());
        facts.insert("step", at.step.as_str());
    }
    if let Some(code) = code {
        facts.insert("error_code", code);
    }
    facts
}

/// Each step's switches: each target, and the code that takes it.
type Edges<'a> = BTreeMap<&'a Step, BTreeMap<Step, &'static str>>;

/// A chain of switches from a step back to itself, as `step -(code)-> step ...`, if any.
fn find_cycle(steps: &[Step], edges: &Edges) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit<'a>(
        at: &'a Step,
        edges: &'a Edges,
        marks: &mut BTreeMap<&'a Step, Mark>,
        path: &mut Vec<(&'a Step, &'static str)>,
    ) -> Option<Vec<String>> {
        marks.insert(at, Mark::OnPath);
        for (next, code) in edges.get(at).into_iter().flatten() {
            path.push((at, code));
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::OnPath => {
                    let from = path.iter().position(|(s, _)| *s == next).unwrap_or(0);
                    let mut cycle: Vec<String> = path[from..].iter().map(|(s, c)| format!("{s} ({c})")).collect();
                    cycle.push(next.to_string());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, edges, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
            path.pop();
        }
        marks.insert(at, Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for step in steps {
        if marks.get(step).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(step, edges, &mut marks, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::GroupName;

    fn step(text: &str) -> Step {
        Step::parse(text).unwrap()
    }

    /// A small table: `a/x` and `b/y`, with `rules` and an aborting default.
    fn table(rules: Value) -> Result<FlowTable, FlowTableError> {
        FlowTable::parse(
            &json!({"flows": {"a": ["x"], "b": ["y"]}, "rules": rules, "default": {"action": "abort", "message_key": "m"}}),
            7,
        )
    }

    fn switch(to: &str) -> Value {
        json!({"action": "switch_flow", "to": to, "message_key": "m"})
    }

    fn retry(attempts: u32) -> Value {
        json!({"action": "retry", "message_key": "m",
               "retry": {"max_attempts": attempts, "interval_ms": 100, "backoff_rate": 2.0, "max_delay_ms": 250, "jitter": "none"}})
    }

    #[test]
    fn the_house_table_verifies_and_sends_insufficient_funds_to_top_up() {
        let house = FlowTable::house();
        assert_eq!(house.version, 0);
        // What `house` builds unverified, verified whole.
        let json = serde_json::from_str(HOUSE_TABLE).unwrap();
        assert_eq!(format!("{:?}", FlowTable::parse(&json, 0).unwrap()), format!("{house:?}"));
        let (action, _) = house.decide(Some(&step("purchase/pay")), "insufficient_funds", "u");
        assert_eq!((action.action, action.to.as_deref()), (Kind::SwitchFlow, Some("top-up/amount")));
        // In the top-up flow itself it ends there: no switch back into it.
        assert_eq!(house.decide(Some(&step("top-up/amount")), "insufficient_funds", "u").0.action, Kind::Abort);
        let (unknown, rule) = house.decide(Some(&step("purchase/pay")), "no_such_code", "u");
        assert_eq!((unknown.action, rule), (Kind::Abort, None));
    }

    #[test]
    fn every_catalogued_code_resolves_at_every_step_of_the_house_table() {
        let house = FlowTable::house();
        for at in house.steps().map(Some).chain([None]) {
            for code in catalogue::ALL {
                let (action, _) = house.decide(at.as_ref(), code.code(), "u");
                let control = house.flow_control(at.as_ref(), code.code(), code.status(), "u", true);
                assert_eq!(control["action"], json!(action.action), "{} at {at:?}", code.code());
                assert!(action.action != Kind::Retry || code.may_retry(), "{} retried at {at:?}", code.code());
            }
        }
    }

    #[test]
    fn the_house_table_maps_every_route_of_the_template_a_client_calls() {
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
        let house = FlowTable::house();
        let (mut methods, mut missing, mut seen) = (Vec::new(), Vec::new(), 0);
        for line in template.lines().map(str::trim) {
            if let Some(method) = line.strip_prefix("Method: ") {
                methods.push(method.to_owned());
            } else if let (Some(path), Some(method)) = (line.strip_prefix("Path: "), methods.pop()) {
                let route = format!("{method} {path}");
                seen += 1;
                // Admin and merchant-facing setup routes are not a client's flow, nor is asking about
                // one (`/flows/next`): the default serves them.
                let setup = [
                    "/flows/next",
                    "/merchants",
                    "/partners",
                    "/miniapps",
                    "/config/",
                    "/platform/listings",
                    "/transfer/listings",
                    "/transfer/thresholds",
                    "/transfer/operations/{id}/",
                ]
                .iter()
                .any(|p| path.starts_with(p) && !path.ends_with("/verify") && !path.ends_with("/requests"));
                if !setup && !route.starts_with("GET /config") && house.locate(None, &route).is_none() {
                    missing.push(route);
                }
            }
        }
        assert!(seen > 60, "only {seen} routes read from template.yaml");
        assert!(missing.is_empty(), "routes with no step in the house table: {missing:?}");
    }

    #[test]
    fn a_table_is_refused_with_what_to_fix() {
        let cases: Vec<(Value, &str)> = vec![
            (
                json!([{"when": {"error_code": "insufficient_funds"}, "then": switch("b/y")},
                    {"when": {"flow": "b", "error_code": "internal"}, "then": switch("a/x")}]),
                "forever",
            ),
            (json!([{"when": {"flow": "a"}, "then": switch("a/x")}]), "forever"),
            (json!([{"when": {"error_code": "internal"}, "then": switch("c/z")}]), "not a step"),
            (json!([{"when": {"error_code": "internal"}, "then": switch("a/nope")}]), "not a step"),
            (
                json!([{"when": {"error_code": "*"}, "then": switch("b/y")},
                    {"when": {"flow": "a", "error_code": "internal"}, "then": switch("b/y")}]),
                "can never match",
            ),
            (json!([{"when": {"error_code": "bank_declined"}, "then": retry(2)}]), "decision"),
            (json!([{"when": {"flow": "a"}, "then": retry(2)}]), "decision"),
            (json!([{"when": {"error_code": "insuficient_funds"}, "then": switch("b/y")}]), "not in the catalogue"),
            (json!([{"when": {"flow": "c"}, "then": switch("b/y")}]), "does not define"),
            (json!([{"when": {"flow": "a", "step": "y"}, "then": switch("b/y")}]), "does not have"),
            (
                json!([{"when": {"error_code": "internal"}, "then": {"action": "switch_flow", "message_key": "m"}}]),
                "needs `to`",
            ),
            (
                json!([{"when": {"error_code": "internal"}, "then": {"action": "retry", "message_key": "m"}}]),
                "needs `retry`",
            ),
            (json!([{"when": {"error_code": "internal"}, "then": retry(11)}]), "max_attempts"),
            (
                json!([{"when": {"error_code": "internal"}, "then": {"action": "abort", "to": "b/y", "message_key": "m"}}]),
                "only switch_flow",
            ),
            (
                json!([{"when": {"error_code": "internal"}, "then": {"action": "retry", "message_key": "m",
                "retry": {"max_attempts": 2, "interval_ms": 1, "backoff_rate": 2.0, "max_delay_ms": 2, "jitter": "full"},
                "after_retries": retry(1)}}]),
                "another retry",
            ),
            (json!([{"when": {"device": "x"}, "then": switch("b/y")}]), "not among `facts`"),
            // Step x is only a's: after a rule for all of a, a rule for x answers nothing.
            (
                json!([{"when": {"flow": "a"}, "then": switch("b/y")}, {"when": {"step": "x"}, "then": switch("b/y")}]),
                "no step",
            ),
            // Half the users get the wildcard: the specific rule for a third of them never answers.
            (
                json!([{"when": {"flow": "a"}, "rollout": 50, "then": switch("b/y")},
                    {"when": {"flow": "a", "error_code": "internal"}, "rollout": 30, "then": switch("b/y")}]),
                "can never match",
            ),
        ];
        for (rules, says) in cases {
            let refused = table(rules.clone()).err().unwrap_or_else(|| panic!("{rules} was accepted"));
            assert!(refused.to_string().contains(says), "{rules}: {refused} does not say {says:?}");
        }
        let cycle = table(json!([{"when": {"flow": "a", "error_code": "internal"}, "then": switch("b/y")},
                                 {"when": {"flow": "b", "error_code": "ledger_busy"}, "then": switch("a/x")}]))
        .unwrap_err();
        assert_eq!(
            cycle,
            FlowTableError::Cycle(vec!["a/x (internal)".into(), "b/y (ledger_busy)".into(), "a/x".into()])
        );
        let problem = Problem::from(cycle);
        assert_eq!((problem.code, problem.status().as_u16()), ("flow_table_cycle", 422));
        assert_eq!(
            Problem::from(table(json!([{"when": {}, "then": switch("q/q")}])).unwrap_err()).code,
            "flow_target_unknown"
        );
        let many: Vec<String> = (0..=MAX_STEPS).map(|i| format!("s{i}")).collect();
        let too_many = json!({"flows": {"a": many}, "default": {"action": "abort", "message_key": "m"}});
        assert!(FlowTable::parse(&too_many, 1).unwrap_err().to_string().contains("1 to 128"));
        for shape in [
            json!({"flows": {}, "default": {"action": "abort", "message_key": "m"}}),
            json!({"flows": {"a": ["x"]}}),
            json!([]),
        ] {
            assert!(FlowTable::parse(&shape, 1).is_err(), "{shape}");
        }
    }

    #[test]
    fn only_failures_and_the_two_conflicts_that_pass_may_be_retried() {
        for code in
            ["internal", "miniapp_server_timeout", "ledger_busy", "listing_conflict", "idempotency_request_in_progress"]
        {
            assert!(table(json!([{"when": {"error_code": code}, "then": retry(2)}])).is_ok(), "{code}");
        }
        for code in
            ["bank_declined", "merchant_declined", "insufficient_funds", "card_expired", "order_already_settled"]
        {
            let refused = table(json!([{"when": {"error_code": code}, "then": retry(2)}])).unwrap_err();
            assert!(matches!(&refused, FlowTableError::RetryNotAllowed { code: c, .. } if c == code), "{refused}");
        }
        // A wildcard retry reaches every code no rule names, the 4xx among them.
        let wildcard =
            table(json!([{"when": {"error_code": "internal"}, "then": retry(2)}, {"when": {}, "then": retry(2)}]));
        assert!(matches!(wildcard, Err(FlowTableError::RetryNotAllowed { .. })), "{wildcard:?}");
        assert!(GroupName::parse(GROUP).is_ok(), "the table's group is a group name");
    }

    #[test]
    fn a_switch_that_never_comes_back_and_a_rollout_not_given_to_all_are_judged_by_every_answer() {
        assert!(table(json!([{"when": {"flow": "a"}, "then": switch("b/y")}])).is_ok());
        // Half the users switch back: the loop is there for them, so the table is refused.
        let half = table(json!([{"when": {"flow": "a"}, "then": switch("b/y")},
                                {"when": {"flow": "b"}, "rollout": 50, "then": switch("a/x")}]));
        assert!(matches!(half, Err(FlowTableError::Cycle(_))), "{half:?}");
        // Nobody gets a rule rolled out to no one.
        assert!(
            table(json!([{"when": {"flow": "a"}, "then": switch("b/y")},
                             {"when": {"flow": "b"}, "rollout": 0, "then": switch("a/x")}]))
            .is_ok()
        );
    }

    #[test]
    fn flow_control_says_to_reuse_the_key_and_read_the_status_first_only_for_a_retry() {
        let house = FlowTable::house();
        let at = step("miniapp/request");
        let control = house.flow_control(Some(&at), "miniapp_server_timeout", 504, "u", true);
        assert_eq!(control["action"], "retry");
        assert_eq!(control["retry"]["max_attempts"], 3);
        assert_eq!(control["after_retries"]["to"], "support/contact");
        assert_eq!(
            (control["reuse_idempotency_key"].clone(), control["read_status_first"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!((control["table_version"].clone(), control["at"].clone()), (json!(0), json!("miniapp/request")));
        let waiting =
            house.flow_control(Some(&step("purchase/pay")), "idempotency_request_in_progress", 409, "u", true);
        assert_eq!(
            (waiting["action"].clone(), waiting["after_retries"]["action"].clone()),
            (json!("retry"), json!("await"))
        );
        assert_eq!(waiting["reuse_idempotency_key"], true);
        let internal = house.flow_control(Some(&at), "internal", 500, "u", false);
        assert_eq!(
            (internal["action"].clone(), internal.get("reuse_idempotency_key"), internal.get("read_status_first")),
            (json!("retry"), None, None)
        );
        let funds = house.flow_control(Some(&step("purchase/pay")), "insufficient_funds", 402, "u", true);
        assert_eq!(
            (funds["action"].clone(), funds["to"].clone(), funds.get("reuse_idempotency_key")),
            (json!("switch_flow"), json!("top-up/amount"), None)
        );
    }

    #[test]
    fn the_client_is_where_it_says_if_the_table_knows_it_else_where_its_route_is() {
        let house = FlowTable::house();
        assert_eq!(house.locate(Some("miniapp/open"), "POST /purchases"), Some(step("miniapp/open")));
        for named in [None, Some("nowhere/step"), Some("garbage"), Some("purchase/")] {
            assert_eq!(house.locate(named, "POST /purchases"), Some(step("purchase/pay")), "{named:?}");
        }
        assert_eq!(house.locate(None, "GET /no/such/route"), None);
    }

    #[test]
    fn a_replay_retries_with_backoff_then_switches_and_ends_at_an_abort() {
        let house = FlowTable::house();
        let errors: Vec<String> = ["miniapp_server_timeout"; 4]
            .iter()
            .chain(&["internal", "insufficient_funds"])
            .map(|c| c.to_string())
            .collect();
        let path = house.replay(Some(step("miniapp/request")), &errors, "u");
        let seen: Vec<(String, Option<u64>, Option<String>)> = path
            .iter()
            .map(|h| {
                (h["action"].as_str().unwrap().to_owned(), h["delay_ms"].as_u64(), h["to"].as_str().map(str::to_owned))
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("retry".into(), Some(1000), None),
                ("retry".into(), Some(2000), None),
                ("retry".into(), Some(4000), None),
                ("switch_flow".into(), None, Some("support/contact".into())),
                // At support every error ends the flow; the last error is never reached.
                ("abort".into(), None, None),
            ]
        );
        assert_eq!(path[4]["at"], "support/contact");
        // Each code has its own count at a step, as the server keeps them: five busy ledgers do not
        // spend an internal error's two retries.
        let errors: Vec<String> = ["ledger_busy"; 5].iter().chain(&["internal"]).map(|c| c.to_string()).collect();
        let path = house.replay(Some(step("purchase/pay")), &errors, "u");
        let attempts: Vec<Option<u64>> = path.iter().map(|h| h["attempt"].as_u64()).collect();
        assert_eq!(attempts, [Some(1), Some(2), Some(3), Some(4), Some(5), Some(1)]);
    }

    #[test]
    fn delays_grow_by_the_rate_up_to_the_cap_and_full_jitter_stays_below_them() {
        let policy = RetryPolicy {
            max_attempts: 5,
            interval_ms: 100,
            backoff_rate: 3.0,
            max_delay_ms: 1000,
            jitter: Jitter::Off,
        };
        let delays: Vec<u64> = (1..=5).map(|n| policy.delay_ms(n, 0)).collect();
        assert_eq!(delays, vec![100, 300, 900, 1000, 1000]);
        let jittered = RetryPolicy { jitter: Jitter::Full, ..policy.clone() };
        assert_eq!(
            (jittered.delay_ms(2, 0), jittered.delay_ms(2, u16::MAX), jittered.delay_ms(2, u16::MAX / 2)),
            (0, 300, 149)
        );
        assert_eq!(RetryPolicy { backoff_rate: 10.0, ..policy }.delay_ms(u32::MAX, 0), 1000);
    }

    fn codes() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(catalogue::ALL.iter().map(|c| c.code().to_owned()).collect::<Vec<_>>()),
            "[a-z_]{1,20}",
        ]
    }

    fn positions() -> impl Strategy<Value = Option<Step>> {
        let steps: Vec<Step> = FlowTable::house().steps().collect();
        proptest::option::of(proptest::sample::select(steps))
    }

    proptest! {
        /// The house table answers every code at every step, the same way every time, with the first
        /// rule that matches; a code that may not be retried is never answered with a retry.
        #[test]
        fn the_house_table_is_total_deterministic_and_never_retries_a_decision(
            at in positions(),
            code in codes(),
            user in "[a-z0-9]{1,12}",
        ) {
            let house = FlowTable::house();
            let (action, rule) = house.decide(at.as_ref(), &code, &user);
            prop_assert_eq!(house.decide(at.as_ref(), &code, &user), (action, rule));
            prop_assert!(house.rules.candidates(&facts(at.as_ref(), Some(&code))).contains(&(action, rule)));
            if action.action == Kind::Retry {
                prop_assert!(catalogue::find(&code).is_some_and(|c| c.may_retry()), "{} retried", code);
            }
            let control = house.flow_control(at.as_ref(), &code, 500, &user, true);
            prop_assert_eq!(control["action"].clone(), json!(action.action));
        }

        /// Whatever table is accepted, replaying any errors follows it and ends: at most one hop
        /// per error, stopping at the first abort or await, no retry past its attempts.
        #[test]
        fn any_accepted_table_replays_within_its_caps(
            rules in proptest::collection::vec((0usize..3, 0usize..4, 0usize..5), 0..6),
            errors in proptest::collection::vec(proptest::sample::select(vec!["internal", "ledger_busy", "insufficient_funds", "bank_declined", "nope"]), 0..12),
        ) {
            let flows = ["*", "a", "b"];
            let codes = ["*", "internal", "ledger_busy", "bank_declined"];
            let thens = [switch("a/x"), switch("b/y"), retry(2), json!({"action": "await", "message_key": "m"}), json!({"action": "abort", "message_key": "m"})];
            let rules: Vec<Value> = rules.iter().map(|&(f, c, t)| json!({"when": {"flow": flows[f], "error_code": codes[c]}, "then": thens[t]})).collect();
            let Ok(table) = table(json!(rules)) else { return Ok(()); };
            let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            let path = table.replay(Some(step("a/x")), &errors, "u");
            prop_assert!(path.len() <= errors.len());
            for (i, hop) in path.iter().enumerate() {
                let action = hop["action"].as_str().unwrap_or_default();
                if action == "abort" || action == "await" {
                    prop_assert_eq!(i, path.len() - 1);
                }
                prop_assert!(hop["attempt"].as_u64().unwrap_or(0) <= 2);
                if action == "retry" {
                    prop_assert!(catalogue::find(hop["error_code"].as_str().unwrap_or_default()).is_some_and(|c| c.may_retry()));
                }
            }
        }
    }
}
