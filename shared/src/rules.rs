//! The one rules module (capability 7's error-flow table, and the payment-session policy and home
//! announcements to come): an ordered list of rules over named facts, first match wins, a default
//! last, so every question has exactly one answer.
//!
//! - A rule names, for some of the set's facts, the value it matches (`"*"` or leaving the fact out
//!   matches any), and may be rolled out to a percentage of users: a user's bucket (0 to 99) is
//!   stable per user and per set's salt, so the same user gets the same answer on every device.
//! - A set is validated when it is read (and so when its config group is published): its facts are
//!   named once, each rule names only those, a rollout is 0 to 100, and no rule is unreachable: a
//!   rule every one of whose matches an earlier rule rolled out at least as far also matches is refused (so
//!   wildcards come only after the specific rules they would shadow), and the default comes last by
//!   construction. A rule rolled out to nobody (0) is kept, staged, answering no one.
//!
//! Pure: no I/O, the caller brings the facts.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::crypto::stable_hash;

/// The most rules one set holds (a config group is at most 64 KiB anyway).
pub const MAX_RULES: usize = 500;

/// What a rule says of one fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(String),
}

impl Pattern {
    fn parse(text: &str) -> Self {
        if text == "*" { Pattern::Any } else { Pattern::Exact(text.to_owned()) }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(expected) => value == Some(expected.as_str()),
        }
    }

    /// Whether everything `other` matches, this matches too.
    fn covers(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Any, _) => true,
            (Pattern::Exact(a), Pattern::Exact(b)) => a == b,
            (Pattern::Exact(_), Pattern::Any) => false,
        }
    }
}

/// One rule: what it matches, for what share of users, and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule<A> {
    /// One pattern per fact of the set, in the set's order.
    pub when: Vec<Pattern>,
    /// Percentage of users (by bucket) it applies to; 100 for all.
    pub rollout: u8,
    pub then: A,
}

/// An ordered rule set with its default.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet<A> {
    pub facts: Vec<String>,
    pub rules: Vec<Rule<A>>,
    pub default: A,
    /// Keys the users' buckets, so two sets' rollouts are independent.
    pub salt: String,
}

/// Why a rule set is refused: each names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    #[error("the rule set is not {{\"facts\", \"rules\", \"default\"}} of the expected shape: {0}")]
    Shape(String),
    #[error("`facts` must name at least one fact, each once")]
    Facts,
    #[error("a rule set holds at most {MAX_RULES} rules")]
    TooMany,
    #[error("rule {rule} names fact {fact:?}, which is not among `facts`")]
    UnknownFact { rule: usize, fact: String },
    #[error("rule {rule}'s rollout is {rollout}: a percentage is 0 to 100")]
    Rollout { rule: usize, rollout: u32 },
    #[error(
        "rule {rule} can never match: rule {by} before it matches everything it does, for as many users (put specific rules before wildcards)"
    )]
    Shadowed { rule: usize, by: usize },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound = "A: DeserializeOwned")]
struct RuleSetJson<A> {
    facts: Vec<String>,
    #[serde(default)]
    rules: Vec<RuleJson<A>>,
    default: A,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound = "A: DeserializeOwned")]
struct RuleJson<A> {
    #[serde(default)]
    when: BTreeMap<String, String>,
    #[serde(default)]
    rollout: Option<u32>,
    then: A,
}

impl<A: DeserializeOwned> RuleSet<A> {
    /// A set as JSON (`{"facts": [...], "rules": [{"when": {fact: value or "*"}, "rollout"?, "then"}],
    /// "default"}`), validated; `salt` keys its users' buckets (its config group's name will do).
    pub fn parse(json: &serde_json::Value, salt: &str) -> Result<Self, RulesError> {
        let set = RuleSetJson::<A>::deserialize(json).map_err(|e| RulesError::Shape(e.to_string()))?;
        let mut seen = std::collections::HashSet::new();
        if set.facts.is_empty() || !set.facts.iter().all(|f| seen.insert(f.as_str())) {
            return Err(RulesError::Facts);
        }
        if set.rules.len() > MAX_RULES {
            return Err(RulesError::TooMany);
        }
        let mut rules = Vec::with_capacity(set.rules.len());
        for (index, rule) in set.rules.into_iter().enumerate() {
            if let Some(fact) = rule.when.keys().find(|f| !set.facts.contains(f)) {
                return Err(RulesError::UnknownFact { rule: index, fact: fact.clone() });
            }
            let rollout = rule.rollout.unwrap_or(100);
            let rollout =
                u8::try_from(rollout).ok().filter(|r| *r <= 100).ok_or(RulesError::Rollout { rule: index, rollout })?;
            let when = set.facts.iter().map(|f| rule.when.get(f).map_or(Pattern::Any, |v| Pattern::parse(v))).collect();
            rules.push(Rule { when, rollout, then: rule.then });
        }
        let set = RuleSet { facts: set.facts, rules, default: set.default, salt: salt.to_owned() };
        set.check_reachable()?;
        Ok(set)
    }
}

impl<A> RuleSet<A> {
    /// Refuses a rule that an earlier rule always answers first: one that matches everything it
    /// does, for every user it is rolled out to (buckets below a rollout get it, so a rollout
    /// covers every smaller one).
    fn check_reachable(&self) -> Result<(), RulesError> {
        for (rule, later) in self.rules.iter().enumerate() {
            let by = self.rules[..rule].iter().position(|earlier| {
                earlier.rollout >= later.rollout && earlier.when.iter().zip(&later.when).all(|(e, l)| e.covers(l))
            });
            if let Some(by) = by {
                return Err(RulesError::Shadowed { rule, by });
            }
        }
        Ok(())
    }

    /// The answer for `facts` (by name; a fact not given matches only wildcards) and `user`, and
    /// the index of the rule that gave it (`None`: the default).
    pub fn decide(&self, facts: &BTreeMap<&str, &str>, user: &str) -> (&A, Option<usize>) {
        self.decide_in(facts, bucket(&self.salt, user))
    }

    /// The answer for `facts` to the users in `bucket`.
    fn decide_in(&self, facts: &BTreeMap<&str, &str>, bucket: u8) -> (&A, Option<usize>) {
        let values: Vec<Option<&str>> = self.facts.iter().map(|f| facts.get(f.as_str()).copied()).collect();
        for (index, rule) in self.rules.iter().enumerate() {
            if bucket < rule.rollout && rule.when.iter().zip(&values).all(|(p, v)| p.matches(*v)) {
                return (&rule.then, Some(index));
            }
        }
        (&self.default, None)
    }

    /// Every answer some user may get for `facts`, in order, with the rule that gives it (`None`:
    /// the default): the matching rules up to the first rolled out to everyone, then the default
    /// if none was. What a check of the whole set (a flow table's cycles) must consider.
    pub fn candidates(&self, facts: &BTreeMap<&str, &str>) -> Vec<(&A, Option<usize>)> {
        let values: Vec<Option<&str>> = self.facts.iter().map(|f| facts.get(f.as_str()).copied()).collect();
        let mut found = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.rollout > 0 && rule.when.iter().zip(&values).all(|(p, v)| p.matches(*v)) {
                found.push((&rule.then, Some(index)));
                if rule.rollout == 100 {
                    return found;
                }
            }
        }
        found.push((&self.default, None));
        found
    }
}

/// A user's stable bucket, 0 to 99, for a set keyed by `salt`.
pub fn bucket(salt: &str, user: &str) -> u8 {
    (stable_hash(&format!("{}\n{salt}\n{user}", salt.len())) % 100) as u8
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn set(json: Value) -> Result<RuleSet<String>, RulesError> {
        RuleSet::parse(&json, "flows")
    }

    fn facts<'a>(pairs: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, &'a str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn the_first_matching_rule_answers_and_the_default_answers_the_rest() {
        let rules = set(json!({
            "facts": ["flow", "error_code"],
            "rules": [
                {"when": {"flow": "purchase", "error_code": "insufficient_funds"}, "then": "top-up"},
                {"when": {"error_code": "insufficient_funds"}, "then": "wallet"},
                {"when": {"flow": "purchase", "error_code": "*"}, "then": "retry"},
            ],
            "default": "abort",
        }))
        .unwrap();
        let decide = |pairs: &[(&str, &str)]| rules.decide(&facts(pairs), "alice");
        assert_eq!(decide(&[("flow", "purchase"), ("error_code", "insufficient_funds")]), (&"top-up".into(), Some(0)));
        assert_eq!(decide(&[("flow", "miniapp"), ("error_code", "insufficient_funds")]), (&"wallet".into(), Some(1)));
        assert_eq!(decide(&[("flow", "purchase"), ("error_code", "merchant_timeout")]), (&"retry".into(), Some(2)));
        assert_eq!(decide(&[("flow", "offline")]), (&"abort".into(), None));
        // A fact not given matches wildcards only.
        assert_eq!(decide(&[("error_code", "merchant_timeout")]), (&"abort".into(), None));
    }

    #[test]
    fn a_set_that_would_answer_wrongly_or_never_is_refused_saying_why() {
        let refused = |json: Value| set(json).unwrap_err();
        assert_eq!(
            refused(
                json!({"facts": ["flow"], "rules": [{"when": {"flow": "*"}, "then": "a"}, {"when": {"flow": "x"}, "then": "b"}], "default": "c"})
            ),
            RulesError::Shadowed { rule: 1, by: 0 }
        );
        assert_eq!(
            refused(
                json!({"facts": ["flow"], "rules": [{"when": {"flow": "x"}, "then": "a"}, {"when": {"flow": "x"}, "then": "b"}], "default": "c"})
            ),
            RulesError::Shadowed { rule: 1, by: 0 }
        );
        assert_eq!(
            refused(json!({"facts": ["flow"], "rules": [{"when": {"step": "x"}, "then": "a"}], "default": "c"})),
            RulesError::UnknownFact { rule: 0, fact: "step".into() }
        );
        assert_eq!(
            refused(json!({"facts": ["flow"], "rules": [{"rollout": 101, "then": "a"}], "default": "c"})),
            RulesError::Rollout { rule: 0, rollout: 101 }
        );
        assert_eq!(refused(json!({"facts": [], "default": "c"})), RulesError::Facts);
        assert_eq!(refused(json!({"facts": ["a", "a"], "default": "c"})), RulesError::Facts);
        assert!(matches!(refused(json!({"facts": ["a"], "rules": []})), RulesError::Shape(_)), "no default");
        // A partial rollout shadows nothing: the rest of the users reach the next rule.
        let canary = set(json!({"facts": ["flow"], "rules": [
            {"when": {"flow": "x"}, "rollout": 10, "then": "new"},
            {"when": {"flow": "x"}, "then": "old"},
        ], "default": "c"}))
        .unwrap();
        let answers: Vec<&String> =
            (0..1000).map(|i| canary.decide(&facts(&[("flow", "x")]), &format!("user-{i}")).0).collect();
        let new = answers.iter().filter(|a| a.as_str() == "new").count();
        assert!((50..=150).contains(&new), "about a tenth of users: {new}");
    }

    #[test]
    fn a_user_s_bucket_is_stable_and_each_set_s_own() {
        assert_eq!(bucket("flows", "alice"), bucket("flows", "alice"));
        let differs =
            (0..100).filter(|i| bucket("flows", &format!("u{i}")) != bucket("home", &format!("u{i}"))).count();
        assert!(differs > 80, "two sets bucket users independently: {differs}");
        let mut counts = [0usize; 10];
        for i in 0..10_000 {
            counts[usize::from(bucket("flows", &format!("user-{i}")) / 10)] += 1;
        }
        assert!(counts.iter().all(|c| (850..=1150).contains(c)), "roughly uniform: {counts:?}");
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop_oneof![Just("*".to_owned()), "[ab]".prop_map(String::from)]
    }

    proptest! {
        /// Whatever the valid set, the answer is the first rule a naive scan finds (or the
        /// default): total and deterministic.
        #[test]
        fn decide_is_the_first_match(
            specs in proptest::collection::vec((pattern(), pattern(), 0u32..=100), 0..8),
            flow in "[abc]",
            step in "[abc]",
            user in "[a-z]{1,8}",
        ) {
            let rules: Vec<Value> = specs.iter().enumerate().map(|(i, (f, s, rollout))| {
                json!({"when": {"flow": f, "step": s}, "rollout": rollout, "then": format!("r{i}")})
            }).collect();
            let Ok(set) = set(json!({"facts": ["flow", "step"], "rules": rules, "default": "default"})) else {
                return Ok(());
            };
            let given = facts(&[("flow", flow.as_str()), ("step", step.as_str())]);
            let (answer, index) = set.decide(&given, &user);
            let bucket = bucket("flows", &user);
            let naive = specs.iter().position(|(f, s, rollout)| {
                (f == "*" || *f == flow) && (s == "*" || *s == step) && u32::from(bucket) < *rollout
            });
            prop_assert_eq!(index, naive);
            prop_assert_eq!(answer, &naive.map_or("default".to_owned(), |i| format!("r{i}")));
            prop_assert_eq!(set.decide(&given, &user), (answer, index));
            // What a whole-set check considers includes every user's answer, and ends at the
            // first rule everyone gets (or the default).
            let candidates = set.candidates(&given);
            prop_assert!(candidates.contains(&(answer, index)), "{:?} not among {:?}", index, candidates);
            let full = specs.iter().position(|(f, s, r)| (f == "*" || *f == flow) && (s == "*" || *s == step) && *r == 100);
            prop_assert_eq!(candidates.last().map(|c| c.1), Some(full));
        }

        /// Every rule a set keeps, but one rolled out to nobody (staged), answers some facts for
        /// some users: found by trying them all, not by the rule the check applies.
        #[test]
        fn every_kept_rule_answers_someone(
            specs in proptest::collection::vec((pattern(), pattern(), 0u32..=100), 0..8),
        ) {
            let rules: Vec<Value> = specs.iter().enumerate().map(|(i, (f, s, rollout))| {
                json!({"when": {"flow": f, "step": s}, "rollout": rollout, "then": format!("r{i}")})
            }).collect();
            let Ok(set) = set(json!({"facts": ["flow", "step"], "rules": rules, "default": "default"})) else {
                return Ok(());
            };
            // Values the patterns name, one they do not ("d"), and none at all.
            let values = [Some("a"), Some("b"), Some("c"), Some("d"), None];
            for (index, rule) in set.rules.iter().enumerate().filter(|(_, r)| r.rollout > 0) {
                let answers = values.iter().flat_map(|f| values.iter().map(move |s| (f, s))).any(|(f, s)| {
                    let given: BTreeMap<&str, &str> =
                        [("flow", *f), ("step", *s)].into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
                    (0..100u8).any(|b| set.decide_in(&given, b).1 == Some(index))
                });
                prop_assert!(answers, "rule {} ({:?}) answers nobody", index, rule.when);
            }
        }
    }
}
