//! The circuit breaker of the loading processes (capability 1, point 5). Pure: what counts, when a
//! process is demoted, and how a session's processes are chosen around demoted ones. Its counters
//! are in `store::BreakerStore`.
//!
//! Every launch of a process that loads the payment app (`foreground_app`, and `simulated_sheet`,
//! which loads it behind the sheet) is measured per (process, platform, app version): a failure is
//! a `launch_failed` or `timeout` event at it, a success a confirmation by it or an `app_returned`
//! event at it. Counts are kept per window of `window_seconds` (template
//! `PaymentBreakerWindowSeconds`). A process is demoted while the current and the previous window
//! together hold at least `min_samples` launches (`PaymentBreakerMinSamples`) of which at least
//! `FAILURE_PERCENT` failed: its sessions start at the next process of the chain that is not
//! demoted, and the decision's reason says so. Once demoted, a process gets no launches, so its
//! counts age out in two windows and the next sessions try it again: if it works, it stays; if it
//! still fails, it trips again (a half-open state that costs nothing to keep).

use serde::Serialize;

use super::policy::Process;

/// The share of failed launches that demotes a process.
pub const FAILURE_PERCENT: u64 = 50;

/// The processes that load the payment app, so the only ones a failed launch can demote.
pub const MEASURED: [Process; 2] = [Process::ForegroundApp, Process::SimulatedSheet];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub window_seconds: i64,
    pub min_samples: u64,
}

/// A launch's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Failure,
    Success,
}

/// What the counters hold for one (process, platform, app version) over the windows read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub failures: u64,
    pub successes: u64,
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, other: Counts) -> Counts {
        Counts { failures: self.failures + other.failures, successes: self.successes + other.successes }
    }
}

impl Counts {
    /// Whether these counts demote their process.
    pub fn trips(&self, settings: &Settings) -> bool {
        let launches = self.failures + self.successes;
        launches >= settings.min_samples && self.failures * 100 >= launches * FAILURE_PERCENT
    }
}

/// What the counters of `process` on the client's `platform` and `app_version` are named.
pub fn key(process: Process, platform: &str, app_version: Option<&str>) -> String {
    format!("{}/{platform}/{}", process.as_str(), app_version.unwrap_or("none"))
}

/// The window `now` falls in, and the one before: the two a verdict reads.
pub fn windows(now: i64, settings: &Settings) -> [i64; 2] {
    let current = now.div_euclid(settings.window_seconds.max(1));
    [current, current - 1]
}

/// The process a session loads and its fallback chain, given the policy's `decided` process and
/// the chain after it, with the demoted ones (`counts_of` the counts of the measured ones) left
/// out; the last process is never left out, so a session always has one. The words for the
/// decision's reason when any was left out.
pub fn choose(
    decided: Process,
    chain: &[Process],
    counts_of: impl Fn(Process) -> Counts,
    settings: &Settings,
    platform: &str,
    app_version: Option<&str>,
) -> (Vec<Process>, Option<String>) {
    let all: Vec<Process> = std::iter::once(decided).chain(chain.iter().copied()).collect();
    let mut kept = Vec::new();
    let mut said = Vec::new();
    for (i, process) in all.iter().enumerate() {
        let counts = counts_of(*process);
        if MEASURED.contains(process) && i + 1 < all.len() && counts.trips(settings) {
            said.push(format!(
                "{} demoted by the circuit breaker ({} of {} launches failed on {platform} {} in the last {} s)",
                process.as_str(),
                counts.failures,
                counts.failures + counts.successes,
                app_version.unwrap_or("without the app"),
                2 * settings.window_seconds
            ));
        } else {
            kept.push(*process);
        }
    }
    (kept, (!said.is_empty()).then(|| said.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SETTINGS: Settings = Settings { window_seconds: 60, min_samples: 10 };

    #[test]
    fn a_process_trips_at_half_of_enough_launches_failed() {
        let counts = |failures, successes| Counts { failures, successes };
        assert!(!counts(9, 0).trips(&SETTINGS), "too few launches to judge");
        assert!(counts(10, 0).trips(&SETTINGS));
        assert!(counts(5, 5).trips(&SETTINGS));
        assert!(!counts(4, 6).trips(&SETTINGS));
        assert_eq!(windows(125, &SETTINGS), [2, 1]);
        assert_eq!(key(Process::ForegroundApp, "ios", Some("9.1.0")), "foreground_app/ios/9.1.0");
    }

    #[test]
    fn a_demoted_process_is_skipped_and_the_reason_says_why() {
        let chain = [Process::SimulatedSheet, Process::SimulatedOnly];
        let failing = |p: Process| {
            if p == Process::ForegroundApp { Counts { failures: 12, successes: 0 } } else { Counts::default() }
        };
        let (kept, why) = choose(Process::ForegroundApp, &chain, failing, &SETTINGS, "android", Some("9.1.0"));
        assert_eq!(kept, [Process::SimulatedSheet, Process::SimulatedOnly]);
        assert_eq!(
            why.as_deref(),
            Some(
                "foreground_app demoted by the circuit breaker (12 of 12 launches failed on android 9.1.0 in the last 120 s)"
            )
        );
        let (kept, why) = choose(Process::ForegroundApp, &chain, |_| Counts::default(), &SETTINGS, "android", None);
        assert_eq!((kept.len(), why), (3, None));
    }

    proptest! {
        /// Whatever fails, a session keeps at least one process, never gains one, keeps their
        /// order, and only a measured process that trips is left out.
        #[test]
        fn choosing_keeps_the_last_process_and_the_order(
            decided in 0usize..3, failures in proptest::collection::vec(0u64..30, 3), successes in proptest::collection::vec(0u64..30, 3)
        ) {
            let all = [Process::ForegroundApp, Process::SimulatedSheet, Process::SimulatedOnly];
            let index = |p: Process| all.iter().position(|q| *q == p).unwrap_or(0);
            let counts = |p: Process| Counts { failures: failures[index(p)], successes: successes[index(p)] };
            let (kept, why) = choose(all[decided], &all[decided + 1..], counts, &SETTINGS, "ios", Some("9.0.0"));
            prop_assert!(!kept.is_empty());
            prop_assert!(kept.windows(2).all(|w| index(w[0]) < index(w[1])));
            prop_assert_eq!(kept.last(), all.last());
            for process in &all[decided..] {
                let left_out = !kept.contains(process);
                prop_assert_eq!(left_out, MEASURED.contains(process) && counts(*process).trips(&SETTINGS));
            }
            prop_assert_eq!(why.is_some(), kept.len() < 3 - decided);
        }
    }
}
