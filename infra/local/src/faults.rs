//! Faults the local stack injects on a seeded schedule, so the tests can show that nothing is lost
//! or doubled when AWS misbehaves as it does in production. The per-function proxy
//! (`crate::aws_proxy`) injects them into the functions' AWS calls: throttling, a transaction
//! cancelled by a conflict, a write that commits but whose answer is lost (the worst case: the
//! caller cannot know), SQS and KMS failing or slow, a message sent twice (SQS delivers at least
//! once), and DynamoDB restarting from its file. The Runtime API (`crate::runtime_api`) kills the
//! process handling an invocation before it answers, as a Lambda sandbox dies.
//!
//! The schedule is pure: whether the n-th call of an operation by a function gets a fault, and
//! which, depends only on the seed and those three (the n-th invocation of a function, the n-th
//! DynamoDB call of the stack), so a seed replays the same schedule. Which request the n-th call
//! belongs to still depends on timing. Off unless the stack is given a plan.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Each injected fault, one JSON line (function, operation, fault), in the stack's log folder.
pub const FAULTS_LOG: &str = "faults.log";

/// Which calls get a fault: each with probability `rate`, drawn from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub seed: u64,
    pub rate: f64,
}

/// One injected fault. Each answers as the AWS service does (status and `__type`), so the SDK's
/// retry classifies it as it would on AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// DynamoDB `ThrottlingException` (400); not forwarded.
    Throttling,
    /// DynamoDB `ProvisionedThroughputExceededException` (400); not forwarded.
    ThroughputExceeded,
    /// TransactWriteItems cancelled, one item's reason `TransactionConflict` (400); not forwarded.
    TransactionConflict,
    /// A write forwarded and committed, answered 500 `InternalServerError`: an unknown outcome.
    CommittedAnswered500,
    /// A write forwarded and committed, its connection dropped before the answer was complete.
    CommittedConnectionDropped,
    /// SQS 500 `InternalError`; not forwarded.
    SqsInternalError,
    /// SQS forwarded after a delay.
    SqsDelay(Duration),
    /// KMS 500 `KMSInternalException`; not forwarded.
    KmsInternal,
    /// SendMessage forwarded twice, answered with the first: the message is delivered twice, as
    /// SQS's at-least-once delivery allows. Only to a queue a function consumes.
    SqsDuplicate,
}

/// The process handling an invocation killed before it answered (`crate::runtime_api`).
pub const KILLED: &str = "Lambda process killed mid-invocation";
/// A retry, by the SDK, of a transaction that committed and lost its answer, failed in turn so the
/// function meets the unknown outcome (`crate::aws_proxy`).
pub const LOST_WRITE_RETRIED: &str = "DynamoDB retry of a lost transaction answered 500";
/// DynamoDB (dynoxide) stopped and started again from its file.
pub const DYNAMODB_RESTARTED: &str = "DynamoDB restarted from its file";

/// Where a kill falls: this long after the process took the event, or at its answer if it answers
/// sooner (the answer is then lost: the work is done, the caller is told the runtime exited).
const KILL_WITHIN_MS: u64 = 300;
/// The restarts fall among these DynamoDB calls of the stack (all functions'), within the load of
/// the bounded fault run.
const RESTART_AMONG_CALLS: std::ops::Range<u64> = 200..1_200;

impl Fault {
    /// The kind, as counted and printed.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Throttling => "DynamoDB ThrottlingException",
            Fault::ThroughputExceeded => "DynamoDB ProvisionedThroughputExceededException",
            Fault::TransactionConflict => "DynamoDB TransactionCanceledException (TransactionConflict)",
            Fault::CommittedAnswered500 => "DynamoDB write committed, answered 500",
            Fault::CommittedConnectionDropped => "DynamoDB write committed, connection dropped",
            Fault::SqsInternalError => "SQS InternalError",
            Fault::SqsDelay(_) => "SQS delayed",
            Fault::KmsInternal => "KMS KMSInternalException",
            Fault::SqsDuplicate => "SQS message sent twice (duplicate delivery)",
        }
    }

    /// Whether the call still reaches the emulator (and takes effect).
    pub fn forwards(&self) -> bool {
        matches!(
            self,
            Fault::CommittedAnswered500 | Fault::CommittedConnectionDropped | Fault::SqsDelay(_) | Fault::SqsDuplicate
        )
    }

    /// The answer that replaces the emulator's (none for a dropped connection, a delay or a duplicate):
    /// status, content type and body, as the service answers. `items` is the number of a
    /// transaction's items, one cancellation reason each.
    pub fn answer(&self, items: u64, draw: u64) -> Option<(u16, &'static str, String)> {
        let dynamodb = "application/x-amz-json-1.0";
        let error = |kind: &str, message: &str| serde_json::json!({ "__type": kind, "message": message }).to_string();
        Some(match self {
            Fault::Throttling => (
                400,
                dynamodb,
                error(
                    "com.amazonaws.dynamodb.v20120810#ThrottlingException",
                    "Rate of requests exceeds the allowed throughput.",
                ),
            ),
            Fault::ThroughputExceeded => (
                400,
                dynamodb,
                error(
                    "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    "The level of configured provisioned throughput for the table was exceeded.",
                ),
            ),
            Fault::TransactionConflict => (400, dynamodb, transaction_conflict(items.max(1), draw)),
            Fault::CommittedAnswered500 => {
                (500, dynamodb, error("com.amazonaws.dynamodb.v20120810#InternalServerError", "Internal server error"))
            }
            Fault::SqsInternalError => (
                500,
                dynamodb,
                error("com.amazonaws.sqs#InternalError", "We encountered an internal error. Please try again."),
            ),
            Fault::KmsInternal => {
                (500, "application/x-amz-json-1.1", error("KMSInternalException", "An internal error occurred."))
            }
            Fault::CommittedConnectionDropped | Fault::SqsDelay(_) | Fault::SqsDuplicate => return None,
        })
    }
}

/// DynamoDB's answer to a transaction that raced another on one of its items: cancelled, that
/// item's reason `TransactionConflict`, every other item's `None` (it names reasons by position).
fn transaction_conflict(items: u64, draw: u64) -> String {
    let conflicting = draw % items;
    let codes: Vec<&str> = (0..items).map(|i| if i == conflicting { "TransactionConflict" } else { "None" }).collect();
    let reasons: Vec<serde_json::Value> = codes
        .iter()
        .map(|code| match *code {
            "None" => serde_json::json!({ "Code": "None" }),
            code => serde_json::json!({ "Code": code, "Message": "Transaction is ongoing for the item" }),
        })
        .collect();
    serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
        "CancellationReasons": reasons,
    })
    .to_string()
}

/// The faults that fit an operation (`X-Amz-Target`): only writes can commit and lose their answer,
/// only transactions conflict, only a sent message is duplicated.
pub fn fitting(operation: &str) -> &'static [Fault] {
    const WRITE: &[Fault] =
        &[Fault::Throttling, Fault::ThroughputExceeded, Fault::CommittedAnswered500, Fault::CommittedConnectionDropped];
    const TRANSACTION: &[Fault] = &[
        Fault::Throttling,
        Fault::ThroughputExceeded,
        Fault::TransactionConflict,
        Fault::CommittedAnswered500,
        Fault::CommittedConnectionDropped,
    ];
    const OTHER_DYNAMODB: &[Fault] = &[Fault::Throttling, Fault::ThroughputExceeded];
    // The delay's length is drawn when it is chosen.
    const SQS: &[Fault] = &[Fault::SqsInternalError, Fault::SqsDelay(Duration::ZERO)];
    const SQS_SEND: &[Fault] = &[Fault::SqsInternalError, Fault::SqsDelay(Duration::ZERO), Fault::SqsDuplicate];
    match operation.split_once('.') {
        Some((service, action)) if service.starts_with("DynamoDB_") => match action {
            "TransactWriteItems" => TRANSACTION,
            "PutItem" | "UpdateItem" | "DeleteItem" => WRITE,
            _ => OTHER_DYNAMODB,
        },
        Some(("AmazonSQS", "SendMessage")) => SQS_SEND,
        Some(("AmazonSQS", _)) => SQS,
        Some(("TrentService", _)) => &[Fault::KmsInternal],
        _ => &[],
    }
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from any other.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a, for the names (std's hasher is not stable across releases).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

impl FaultPlan {
    /// The fault, if any, for the `n`-th call (from 0) of `operation` by `function`, and a draw for
    /// the fault's own choices (which item conflicts).
    pub fn decide(&self, function: &str, operation: &str, n: u64) -> Option<(Fault, u64)> {
        let fits = fitting(operation);
        if fits.is_empty() {
            return None;
        }
        let draw = self.draw(function, operation, n);
        if uniform(draw) >= self.rate {
            return None;
        }
        let choice = mix(draw);
        let fault = match fits[(choice % fits.len() as u64) as usize] {
            Fault::SqsDelay(_) => Fault::SqsDelay(Duration::from_millis(200 + (choice >> 8) % 300)),
            fault => fault,
        };
        Some((fault, mix(choice)))
    }

    /// The share of invocations whose process is killed: half the AWS calls' rate (one invocation
    /// in forty at 5%), so that most purchases see none.
    pub fn kill_rate(&self) -> f64 {
        self.rate / 2.0
    }

    /// Whether the process handling the `n`-th invocation (from 0) of `function` is killed, and when
    /// (see `KILL_WITHIN_MS`).
    pub fn kill(&self, function: &str, n: u64) -> Option<Duration> {
        let draw = self.draw(function, "Lambda.Kill", n);
        (uniform(draw) < self.kill_rate()).then(|| Duration::from_millis(mix(draw) % KILL_WITHIN_MS))
    }

    /// The DynamoDB calls of the stack (numbered from 0 over all functions) at which DynamoDB
    /// restarts, once or twice, and how long each time it is down.
    pub fn dynamodb_restarts(&self) -> Vec<(u64, Duration)> {
        let draw = self.draw("DynamoDB", "Restart", 0);
        let span = RESTART_AMONG_CALLS.end - RESTART_AMONG_CALLS.start;
        let mut restarts: Vec<(u64, Duration)> = (0..1 + draw % 2)
            .map(|i| {
                let choice = mix(draw ^ i);
                (RESTART_AMONG_CALLS.start + choice % span, Duration::from_millis(200 + (choice >> 16) % 600))
            })
            .collect();
        restarts.sort();
        restarts
    }

    fn draw(&self, function: &str, operation: &str, n: u64) -> u64 {
        mix(mix(mix(self.seed ^ fnv(function)) ^ fnv(operation)) ^ n)
    }
}

/// The top 53 bits of `draw` as a uniform number in [0, 1).
fn uniform(draw: u64) -> f64 {
    (draw >> 11) as f64 / (1u64 << 53) as f64
}

/// Injected faults per function, per kind, each also logged as a line of `log` if there is one.
#[derive(Clone, Default)]
pub struct FaultCounts {
    counts: Arc<Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>>,
    log: Option<PathBuf>,
}

impl FaultCounts {
    /// Counts that log each fault to `log` (`FAULTS_LOG` in the stack's log folder).
    pub fn logged(log: PathBuf) -> Self {
        FaultCounts { counts: Arc::default(), log: Some(log) }
    }

    /// Counts one fault of `kind` injected into `function`'s `operation`, and logs it.
    pub fn count(&self, function: &str, operation: &str, kind: &'static str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(function.to_owned()).or_default().entry(kind).or_default() += 1;
        }
        let Some(path) = &self.log else { return };
        let line = serde_json::json!({ "function": function, "operation": operation, "fault": kind });
        if let Ok(mut log) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = writeln!(log, "{line}");
        }
    }

    /// Every function's counts, by kind.
    pub fn by_function(&self) -> BTreeMap<String, BTreeMap<&'static str, u64>> {
        self.counts.lock().map(|counts| counts.clone()).unwrap_or_default()
    }

    /// The counts summed over functions, by kind.
    pub fn by_kind(&self) -> BTreeMap<&'static str, u64> {
        self.by_function().into_values().flatten().fold(BTreeMap::new(), |mut sum, (kind, count)| {
            *sum.entry(kind).or_default() += count;
            sum
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATIONS: [&str; 7] = [
        "DynamoDB_20120810.TransactWriteItems",
        "DynamoDB_20120810.PutItem",
        "DynamoDB_20120810.GetItem",
        "DynamoDB_20120810.Query",
        "AmazonSQS.SendMessage",
        "TrentService.Decrypt",
        "unknown",
    ];

    fn schedule(plan: FaultPlan, function: &str) -> Vec<Option<(Fault, u64)>> {
        OPERATIONS.iter().flat_map(|op| (0..500).map(move |n| plan.decide(function, op, n))).collect()
    }

    #[test]
    fn a_seed_replays_the_same_schedule_and_another_seed_differs() {
        let plan = FaultPlan { seed: 11, rate: 0.05 };
        let purchases = schedule(plan, "PurchasesFunction");
        assert_eq!(purchases, schedule(plan, "PurchasesFunction"));
        assert_ne!(purchases, schedule(FaultPlan { seed: 12, ..plan }, "PurchasesFunction"));
        assert_ne!(purchases, schedule(plan, "NotifierFunction"), "each function has its own schedule");
    }

    #[test]
    fn the_rate_is_respected_over_many_calls() {
        for rate in [0.0, 0.01, 0.05, 0.2, 1.0] {
            let plan = FaultPlan { seed: 7, rate };
            let calls = 20_000;
            let faults =
                (0..calls).filter(|n| plan.decide("F", "DynamoDB_20120810.PutItem", *n).is_some()).count() as f64;
            let observed = faults / calls as f64;
            assert!((observed - rate).abs() <= 0.01, "rate {rate}: observed {observed}");
        }
    }

    #[test]
    fn only_faults_that_fit_the_operation_are_chosen() {
        let plan = FaultPlan { seed: 3, rate: 1.0 };
        let kinds = |operation: &str| {
            (0..2_000)
                .filter_map(|n| plan.decide("F", operation, n))
                .map(|(fault, _)| match fault {
                    Fault::SqsDelay(delay) => {
                        assert!((200..500).contains(&delay.as_millis()), "{delay:?}");
                        Fault::SqsDelay(Duration::ZERO)
                    }
                    fault => fault,
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        for operation in OPERATIONS {
            assert_eq!(kinds(operation), fitting(operation).iter().copied().collect(), "{operation}");
        }
        assert!(!kinds("DynamoDB_20120810.GetItem").iter().any(Fault::forwards), "reads only fail");
        assert!(kinds("DynamoDB_20120810.UpdateItem").contains(&Fault::CommittedAnswered500));
        assert!(kinds("DynamoDB_20120810.DeleteItem").contains(&Fault::CommittedConnectionDropped));
        assert!(!kinds("DynamoDB_20120810.UpdateItem").contains(&Fault::TransactionConflict));
        assert!(kinds("unknown").is_empty());
        assert!(kinds("AmazonSQS.SendMessage").contains(&Fault::SqsDuplicate));
        assert!(!kinds("AmazonSQS.ReceiveMessage").contains(&Fault::SqsDuplicate), "only a sent message is doubled");
    }

    #[test]
    fn kills_are_seeded_rare_and_fall_before_the_answer_window_ends() {
        let plan = FaultPlan { seed: 11, rate: 0.05 };
        let kills = |plan: FaultPlan, function: &str| (0..4_000).map(|n| plan.kill(function, n)).collect::<Vec<_>>();
        let purchases = kills(plan, "PurchasesFunction");
        assert_eq!(purchases, kills(plan, "PurchasesFunction"), "a seed replays the same kills");
        assert_ne!(purchases, kills(FaultPlan { seed: 12, ..plan }, "PurchasesFunction"));
        assert_ne!(purchases, kills(plan, "NotifierFunction"), "each function has its own kills");
        let killed: Vec<Duration> = purchases.iter().flatten().copied().collect();
        let share = killed.len() as f64 / purchases.len() as f64;
        assert!((share - 0.025).abs() <= 0.01, "one invocation in forty: {share}");
        assert!(killed.iter().all(|after| after.as_millis() < u128::from(KILL_WITHIN_MS)));
        // Kills are not where the AWS faults are: another draw than the proxy's for the same n.
        let no_faults = FaultPlan { rate: 0.0, ..plan };
        assert!(kills(no_faults, "PurchasesFunction").iter().all(Option::is_none));
    }

    #[test]
    fn dynamodb_restarts_once_or_twice_within_the_load() {
        let mut counts = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let plan = FaultPlan { seed, rate: 0.05 };
            let restarts = plan.dynamodb_restarts();
            assert_eq!(restarts, plan.dynamodb_restarts(), "a seed replays the same restarts");
            assert!(restarts.windows(2).all(|w| w[0].0 <= w[1].0), "in order: {restarts:?}");
            for (call, down) in &restarts {
                assert!(RESTART_AMONG_CALLS.contains(call), "{call}");
                assert!((200..800).contains(&down.as_millis()), "{down:?}");
            }
            counts.insert(restarts.len());
        }
        assert_eq!(counts, [1, 2].into(), "once or twice, by seed");
    }

    #[test]
    fn a_conflict_names_one_item_as_dynamodb_does() {
        let body: serde_json::Value =
            serde_json::from_str(&Fault::TransactionConflict.answer(3, 4).expect("an answer").2).unwrap();
        assert_eq!(body["__type"], "com.amazonaws.dynamodb.v20120810#TransactionCanceledException");
        let codes: Vec<&str> =
            body["CancellationReasons"].as_array().unwrap().iter().map(|r| r["Code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["None", "TransactionConflict", "None"]);
        assert!(body["Message"].as_str().unwrap().ends_with("[None, TransactionConflict, None]"));
        assert_eq!(Fault::Throttling.answer(1, 0).map(|a| a.0), Some(400));
        assert_eq!(Fault::CommittedAnswered500.answer(1, 0).map(|a| a.0), Some(500));
        assert_eq!(Fault::CommittedConnectionDropped.answer(1, 0), None);
    }

    #[test]
    fn counts_are_kept_per_function_and_summed_by_kind() {
        let counts = FaultCounts::default();
        counts.count("A", "DynamoDB_20120810.PutItem", Fault::Throttling.kind());
        counts.count("B", "DynamoDB_20120810.GetItem", Fault::Throttling.kind());
        counts.count("B", "TrentService.Decrypt", Fault::KmsInternal.kind());
        assert_eq!(counts.by_function()["B"].len(), 2);
        assert_eq!(counts.by_kind()[Fault::Throttling.kind()], 2);
    }
}
