//! Which loading process a payment session uses (capability 1): the config group
//! `payment-sessions`, ordered rules of the one rules module (`crate::rules`) over facts the
//! client reports, a default last, rolled out by a stable percentage of users. Pure.
//!
//! ```json
//! {"min_app_version": "8.0.0", "low_memory_mb": 512, "launch_deadline_ms": 8000,
//!  "rules": [{"when": {"app": "missing"}, "then": {"process": "simulated_only"}},
//!            {"when": {"network": "cellular"}, "rollout": 50, "then": {"process": "simulated_sheet"}}],
//!  "default": {"process": "foreground_app"}}
//! ```
//!
//! The rules see facts derived from what the client reports, each a small set of values, so a
//! rule can only name a value that can occur: `platform` (`ios`, `android`, `web`), `app`
//! (`missing`, `outdated`: older than `min_app_version`, `current`), `network` (`wifi`,
//! `cellular`, `offline`, `unknown`), `memory` (`low`: under `low_memory_mb`, `normal`) and
//! `preference` (`app`, `in_app`, `none`).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Problem;
use crate::problem::catalogue;
use crate::rules::{Pattern, RuleSet};

/// The config group that holds the policy.
pub const GROUP: &str = "payment-sessions";
/// The policy every session is decided by until one is published, and what `cargo stack up`
/// publishes first.
pub const HOUSE_POLICY: &str = include_str!("house-policy.json");
/// The longest a client may wait for the payment app to come up before falling back.
pub const MAX_LAUNCH_DEADLINE_MS: u64 = 60_000;

/// The three ways the purchase app loads the payment UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Process {
    /// (1) Invoke the payment app now, in the foreground.
    ForegroundApp,
    /// (2) Show a simulated payment interface while the payment app loads behind it.
    SimulatedSheet,
    /// (3) Complete the payment in simulated interfaces, never loading the payment app.
    SimulatedOnly,
}

impl Process {
    pub fn as_str(self) -> &'static str {
        match self {
            Process::ForegroundApp => "foreground_app",
            Process::SimulatedSheet => "simulated_sheet",
            Process::SimulatedOnly => "simulated_only",
        }
    }
}

/// What the client reports about itself when it starts a payment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ClientFacts {
    #[cfg_attr(feature = "openapi", schemars(schema_with = "fact_schemas::platform"))]
    pub platform: String,
    pub payment_app: PaymentApp,
    #[cfg_attr(feature = "openapi", schemars(schema_with = "fact_schemas::network"))]
    pub network: String,
    #[serde(deserialize_with = "crate::http::whole")]
    pub free_memory_mb: u32,
    /// How the user prefers to pay; `none` when left out or null.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schemars(schema_with = "fact_schemas::preference"))]
    pub preference: Option<String>,
}

/// The payment app on the device: an installed one names its version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "openapi",
    schemars(extend("anyOf" = [
        {"properties": {"installed": {"const": false}}},
        {"properties": {"version": {"type": "string", "pattern": VERSION_PATTERN}}, "required": ["version"]},
    ]))
)]
#[serde(deny_unknown_fields)]
pub struct PaymentApp {
    pub installed: bool,
    /// `major.minor.patch`, when installed.
    #[serde(default)]
    pub version: Option<String>,
}

/// `Version::parse`'s grammar.
#[cfg(feature = "openapi")]
const VERSION_PATTERN: &str = r"^[0-9]{1,9}\.[0-9]{1,9}\.[0-9]{1,9}$";

/// The client's facts as the policy takes them: each one of the values `FACTS` names.
#[cfg(feature = "openapi")]
mod fact_schemas {
    use schemars::{Schema, SchemaGenerator, json_schema};

    fn values(fact: &str) -> Vec<serde_json::Value> {
        let values = super::FACTS.iter().find(|(name, _)| *name == fact).map(|(_, values)| *values);
        values.unwrap_or_default().iter().map(|value| (*value).into()).collect()
    }

    pub fn platform(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "enum": values("platform")})
    }

    pub fn network(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "enum": values("network")})
    }

    pub fn preference(_: &mut SchemaGenerator) -> Schema {
        let mut values = values("preference");
        values.push(serde_json::Value::Null);
        json_schema!({"enum": values})
    }
}

/// The values each derived fact can take, in the rules' fact order.
const FACTS: [(&str, &[&str]); 5] = [
    ("platform", &["ios", "android", "web"]),
    ("app", &["missing", "outdated", "current"]),
    ("network", &["wifi", "cellular", "offline", "unknown"]),
    ("memory", &["low", "normal"]),
    ("preference", &["app", "in_app", "none"]),
];

/// A rule's answer, and the default's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    pub process: Process,
    /// Overrides the policy's `launch_deadline_ms` for the sessions this rule decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_deadline_ms: Option<u64>,
}

/// A verified policy at its published version (0: the house policy).
#[derive(Debug, Clone)]
pub struct Policy {
    pub version: u64,
    min_app_version: Version,
    low_memory_mb: u32,
    launch_deadline_ms: u64,
    rules: RuleSet<Choice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    min_app_version: String,
    low_memory_mb: u32,
    launch_deadline_ms: u64,
    #[serde(default)]
    rules: Vec<Value>,
    default: Value,
}

/// A `major.minor.patch` version, compared numerically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u32, u32, u32);

impl Version {
    fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.').map(|p| {
            (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit())).then(|| p.parse().ok()).flatten()
        });
        let version = Version(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(version)
    }
}

/// Why a policy or a client's facts are refused; each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("the payment-sessions policy is refused: {0}")]
    Invalid(String),
    #[error("the client's facts: {0}")]
    Facts(String),
}

impl From<PolicyError> for Problem {
    fn from(e: PolicyError) -> Self {
        let code = match e {
            PolicyError::Invalid(_) => catalogue::PAYMENT_POLICY_INVALID,
            PolicyError::Facts(_) => catalogue::INVALID_CLIENT_FACTS,
        };
        Problem::new(code, e.to_string())
    }
}

/// Validates the parameters of the `payment-sessions` group (the config function's publish check).
pub fn validate_group(parameters: &Value) -> Result<(), Problem> {
    Policy::parse(parameters, 0).map(drop).map_err(Problem::from)
}

/// What decided a session: the process, the rule that chose it, and why in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub process: Process,
    pub launch_deadline_ms: u64,
    /// The rule's index, `None` for the default.
    pub rule: Option<usize>,
    /// The policy's published version (0: the house policy).
    pub policy_version: u64,
    pub reason: String,
}

impl Policy {
    /// The house policy (version 0), verified once per process; its tests verify it first.
    pub fn house() -> Arc<Policy> {
        static HOUSE: LazyLock<Arc<Policy>> = LazyLock::new(|| {
            let json = serde_json::from_str(HOUSE_POLICY).unwrap_or(Value::Null);
            Arc::new(Policy::parse(&json, 0).expect("the house policy is valid (policy::tests)"))
        });
        HOUSE.clone()
    }

    /// A policy from its JSON, verified whole.
    pub fn parse(json: &Value, version: u64) -> Result<Policy, PolicyError> {
        let invalid = |text: String| PolicyError::Invalid(text);
        let policy: PolicyJson = serde_json::from_value(json.clone()).map_err(|e| invalid(e.to_string()))?;
        let min_app_version = Version::parse(&policy.min_app_version)
            .ok_or_else(|| invalid(format!("min_app_version {:?} is not major.minor.patch", policy.min_app_version)))?;
        let check_deadline = |at: &str, ms: u64| {
            if (1..=MAX_LAUNCH_DEADLINE_MS).contains(&ms) {
                Ok(())
            } else {
                Err(invalid(format!("{at}'s launch_deadline_ms is {ms}: it is 1 to {MAX_LAUNCH_DEADLINE_MS}")))
            }
        };
        check_deadline("the policy", policy.launch_deadline_ms)?;
        let facts: Vec<&str> = FACTS.iter().map(|(name, _)| *name).collect();
        let rules: RuleSet<Choice> =
            RuleSet::parse(&json!({"facts": facts, "rules": policy.rules, "default": policy.default}), GROUP)
                .map_err(|e| invalid(e.to_string()))?;
        for (index, rule) in rules.rules.iter().enumerate() {
            for ((name, values), pattern) in FACTS.iter().zip(&rule.when) {
                if let Pattern::Exact(value) = pattern
                    && !values.contains(&value.as_str())
                {
                    return Err(invalid(format!("rule {index}: {name} is never {value:?}; it is one of {values:?}")));
                }
            }
        }
        for (at, choice) in rules.rules.iter().map(|r| &r.then).enumerate().map(|(i, c)| (format!("rule {i}"), c)) {
            choice.launch_deadline_ms.map(|ms| check_deadline(&at, ms)).transpose()?;
        }
        rules.default.launch_deadline_ms.map(|ms| check_deadline("the default", ms)).transpose()?;
        Ok(Policy {
            version,
            min_app_version,
            low_memory_mb: policy.low_memory_mb,
            launch_deadline_ms: policy.launch_deadline_ms,
            rules,
        })
    }

    /// The facts the rules see, from what the client reports.
    pub fn facts(&self, client: &ClientFacts) -> Result<BTreeMap<&'static str, &'static str>, PolicyError> {
        let one_of = |name: &'static str, value: &str| -> Result<&'static str, PolicyError> {
            let values = FACTS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).unwrap_or_default();
            values.iter().copied().find(|v| *v == value).ok_or_else(|| {
                PolicyError::Facts(format!(
                    "{name} {:?} is not one of {values:?}",
                    value.chars().take(40).collect::<String>()
                ))
            })
        };
        let app = match (&client.payment_app.installed, &client.payment_app.version) {
            (false, _) => "missing",
            (true, None) => return Err(PolicyError::Facts("an installed payment_app names its version".into())),
            (true, Some(version)) => {
                let version = Version::parse(version).ok_or_else(|| {
                    PolicyError::Facts(format!(
                        "payment_app.version {:?} is not major.minor.patch",
                        version.chars().take(40).collect::<String>()
                    ))
                })?;
                if version < self.min_app_version { "outdated" } else { "current" }
            }
        };
        Ok(BTreeMap::from([
            ("platform", one_of("platform", &client.platform)?),
            ("app", app),
            ("network", one_of("network", &client.network)?),
            ("memory", if client.free_memory_mb < self.low_memory_mb { "low" } else { "normal" }),
            ("preference", one_of("preference", client.preference.as_deref().unwrap_or("none"))?),
        ]))
    }

    /// The process for `client` and `user` (rollouts), and why.
    /// How long a client waits for the payment app unless a rule says otherwise.
    pub fn launch_deadline_ms(&self) -> u64 {
        self.launch_deadline_ms
    }

    /// The decision when an admin forced `process` for the user until `until`: the policy's
    /// launch deadline, the reason saying so.
    pub fn forced(&self, process: Process, until: i64) -> Decision {
        Decision {
            process,
            launch_deadline_ms: self.launch_deadline_ms,
            rule: None,
            policy_version: self.version,
            reason: format!("forced to {} for this user by an admin until {until} (epoch seconds)", process.as_str()),
        }
    }

    pub fn decide(&self, client: &ClientFacts, user: &str) -> Result<Decision, PolicyError> {
        let facts = self.facts(client)?;
        let (choice, rule) = self.rules.decide(&facts.iter().map(|(k, v)| (*k, *v)).collect(), user);
        let said: Vec<String> = facts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let by = rule.map_or("the default".to_owned(), |i| format!("rule {i}"));
        Ok(Decision {
            process: choice.process,
            launch_deadline_ms: choice.launch_deadline_ms.unwrap_or(self.launch_deadline_ms),
            rule,
            policy_version: self.version,
            reason: format!("{by} of payment-sessions version {} ({})", self.version, said.join(", ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn house() -> Arc<Policy> {
        Policy::house()
    }

    fn client(installed: bool, version: Option<&str>, network: &str, memory: u32) -> ClientFacts {
        ClientFacts {
            platform: "android".into(),
            payment_app: PaymentApp { installed, version: version.map(str::to_owned) },
            network: network.into(),
            free_memory_mb: memory,
            preference: None,
        }
    }

    #[test]
    fn the_house_policy_loads_the_app_when_it_can_and_simulates_when_it_cannot() {
        let house = house();
        let decide = |c: &ClientFacts| house.decide(c, "u").unwrap().process;
        assert_eq!(decide(&client(true, Some("9.1.0"), "wifi", 2048)), Process::ForegroundApp);
        assert_eq!(decide(&client(false, None, "wifi", 2048)), Process::SimulatedOnly);
        assert_eq!(decide(&client(true, Some("1.0.0"), "wifi", 2048)), Process::SimulatedOnly, "outdated");
        assert_eq!(decide(&client(true, Some("9.1.0"), "wifi", 128)), Process::SimulatedOnly, "low memory");
        let cellular = house.decide(&client(true, Some("9.1.0"), "cellular", 2048), "u").unwrap();
        assert_eq!((cellular.process, cellular.launch_deadline_ms), (Process::SimulatedSheet, 12000));
        let decision = house.decide(&client(false, None, "wifi", 2048), "u").unwrap();
        assert!(
            decision.reason.contains("app=missing") && decision.reason.starts_with("rule 0"),
            "{}",
            decision.reason
        );
    }

    #[test]
    fn a_policy_and_a_client_are_refused_with_what_to_fix() {
        let base = json!({"min_app_version": "8.0.0", "low_memory_mb": 512, "launch_deadline_ms": 8000, "default": {"process": "foreground_app"}});
        let with = |field: &str, value: Value| {
            let mut policy = base.clone();
            policy[field] = value;
            Policy::parse(&policy, 1).unwrap_err().to_string()
        };
        assert!(with("min_app_version", json!("8.0")).contains("major.minor.patch"));
        assert!(with("launch_deadline_ms", json!(0)).contains("1 to 60000"));
        assert!(
            with("rules", json!([{"when": {"app": "instaled"}, "then": {"process": "simulated_only"}}]))
                .contains("never \"instaled\"")
        );
        assert!(
            with("rules", json!([{"when": {"os": "ios"}, "then": {"process": "simulated_only"}}]))
                .contains("not among")
        );
        assert!(with("rules", json!([{"when": {}, "then": {"process": "teleport"}}])).contains("shape"));
        assert!(with("rules", json!([{"when": {}, "then": {"process": "simulated_only"}}, {"when": {"app": "missing"}, "then": {"process": "simulated_only"}}])).contains("never match"));
        assert!(
            with("default", json!({"process": "foreground_app", "launch_deadline_ms": 70000})).contains("the default")
        );
        assert_eq!(Problem::from(Policy::parse(&json!({}), 1).unwrap_err()).code, "payment_policy_invalid");

        let house = house();
        let refused = |c: ClientFacts| Problem::from(house.decide(&c, "u").unwrap_err());
        assert_eq!(refused(client(true, None, "wifi", 1)).code, "invalid_client_facts");
        assert!(refused(client(true, Some("v9"), "wifi", 1)).detail.contains("major.minor.patch"));
        assert!(refused(client(true, Some("9.0.0"), "5g", 1)).detail.contains("network \"5g\""));
        for bad in ["1.2", "1.2.3.4", "1..3", "a.b.c", "-1.0.0", "1.0.9999999999"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert!(Version::parse("10.0.0") > Version::parse("9.9.9"));
        assert!(crate::config::GroupName::parse(GROUP).is_ok(), "the policy's group is a group name");
    }

    fn clients() -> impl Strategy<Value = ClientFacts> {
        (
            proptest::sample::select(vec!["ios", "android", "web"]),
            any::<bool>(),
            (0u32..12, 0u32..3, 0u32..3),
            proptest::sample::select(vec!["wifi", "cellular", "offline", "unknown"]),
            0u32..4096,
            proptest::sample::select(vec![None, Some("app"), Some("in_app"), Some("none")]),
        )
            .prop_map(|(platform, installed, (a, b, c), network, memory, preference)| ClientFacts {
                platform: platform.into(),
                payment_app: PaymentApp { installed, version: installed.then(|| format!("{a}.{b}.{c}")) },
                network: network.into(),
                free_memory_mb: memory,
                preference: preference.map(str::to_owned),
            })
    }

    proptest! {
        /// Every client the API accepts gets a process, the same one each time, and a user keeps
        /// their side of a rollout: the split is by a stable bucket, not by chance.
        #[test]
        fn the_policy_is_total_deterministic_and_its_split_stable(client in clients(), user in "[a-z0-9]{1,16}", share in 0u32..=100) {
            let policy = Policy::parse(&json!({
                "min_app_version": "8.0.0", "low_memory_mb": 512, "launch_deadline_ms": 8000,
                "rules": [{"when": {"app": "missing"}, "then": {"process": "simulated_only"}},
                          {"when": {}, "rollout": share, "then": {"process": "simulated_sheet", "launch_deadline_ms": 3000}}],
                "default": {"process": "foreground_app"}}), 4).unwrap();
            let first = policy.decide(&client, &user).unwrap();
            prop_assert_eq!(&policy.decide(&client, &user).unwrap(), &first);
            let in_rollout = u32::from(crate::rules::bucket(GROUP, &user)) < share;
            let expected = if !client.payment_app.installed {
                Process::SimulatedOnly
            } else if in_rollout {
                Process::SimulatedSheet
            } else {
                Process::ForegroundApp
            };
            prop_assert_eq!(first.process, expected);
            prop_assert_eq!(first.launch_deadline_ms, if expected == Process::SimulatedSheet { 3000 } else { 8000 });
            prop_assert!(house().decide(&client, &user).is_ok());
        }
    }
}
