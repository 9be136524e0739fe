//! A group a function answers by, held per process: read when first needed (not at cold start),
//! read again once `max_age_ms` old, and parsed (verified) once per published version. A group
//! that is not published, or whose stored version no longer parses (the rules checking it grew
//! stricter since), gives the house value; a read that fails or takes over `READ_TIMEOUT` keeps
//! what the process holds for at most `STALE_FACTOR` ages, then the house value, and is tried
//! again a second later. Never an error: whoever asks always gets something to answer by.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::OnceCell;

use super::GroupName;
use super::store::ConfigStore;
use crate::aws;
use crate::clock::now_epoch_millis;

/// How long an answer waits for the group's read before answering from what is held.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// After a failed read, how soon the next one is tried.
const RETRY_AFTER_MS: i64 = 1_000;
/// How many ages a verified value keeps answering while reads fail; past that, the house value.
const STALE_FACTOR: i64 = 10;

/// Parses a published version's parameters into what is held (a failure says why, for the log).
pub type Parse<T> = fn(&Value, u64) -> Result<T, String>;

pub struct HeldGroup<T> {
    group: GroupName,
    table_name: String,
    store: OnceCell<ConfigStore>,
    max_age_ms: i64,
    parse: Parse<T>,
    house: fn() -> Arc<T>,
    held: Mutex<Option<Held<T>>>,
}

/// What a process holds: the value, from which published version, since when.
struct Held<T> {
    value: Arc<T>,
    /// The published version read (0: none), even when it no longer parses and `value` is the
    /// house value: a version is parsed once.
    version: u64,
    /// When it was last read successfully.
    verified_at: i64,
    /// When to read again.
    refresh_at: i64,
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        Held { value: self.value.clone(), ..*self }
    }
}

impl<T> HeldGroup<T> {
    /// `group` of the config table `table_name`, held at most `max_age_ms` (0: read at every ask,
    /// parsed only when the version changed).
    pub fn new(table_name: String, group: GroupName, max_age_ms: i64, parse: Parse<T>, house: fn() -> Arc<T>) -> Self {
        HeldGroup { group, table_name, store: OnceCell::new(), max_age_ms, parse, house, held: Mutex::new(None) }
    }

    /// The value, from this process's copy while it is young enough.
    pub async fn get(&self) -> Arc<T> {
        let now = now_epoch_millis();
        let held = self.held.lock().ok().and_then(|h| h.clone());
        if let Some(held) = held.as_ref().filter(|h| now < h.refresh_at) {
            return held.value.clone();
        }
        let fresh = self.read(held, now).await;
        let value = fresh.value.clone();
        if let Ok(mut held) = self.held.lock() {
            *held = Some(fresh);
        }
        value
    }

    async fn read(&self, held: Option<Held<T>>, now: i64) -> Held<T> {
        let latest = async {
            let store = self
                .store
                .get_or_init(|| async {
                    ConfigStore::new(aws_sdk_dynamodb::Client::new(&aws::sdk_config().await), &self.table_name)
                })
                .await;
            store.latest_eventually(&self.group).await
        };
        let fresh = |value, version| Held { value, version, verified_at: now, refresh_at: now + self.max_age_ms };
        let failed = match tokio::time::timeout(READ_TIMEOUT, latest).await {
            Ok(Ok(Some(published))) => {
                if let Some(held) = held.filter(|h| h.version == published.version) {
                    return fresh(held.value, held.version);
                }
                let value = (self.parse)(published.parameters.as_value(), published.version).map(Arc::new);
                let value = value.unwrap_or_else(|e| {
                    tracing::error!(group = self.group.as_str(), version = published.version, error = %e, "the published group no longer verifies; answering by the house value");
                    (self.house)()
                });
                return fresh(value, published.version);
            }
            Ok(Ok(None)) => return fresh((self.house)(), 0),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", READ_TIMEOUT.as_millis()),
        };
        let kept = held.filter(|h| now - h.verified_at < STALE_FACTOR * self.max_age_ms);
        tracing::warn!(group = self.group.as_str(), error = %failed, kept_version = kept.as_ref().map(|h| h.version), "a config group could not be read");
        let retry = now + RETRY_AFTER_MS.min(self.max_age_ms);
        match kept {
            Some(held) => Held { refresh_at: retry, ..held },
            // The house value is verified by its tests; keeping it longer changes nothing.
            None => Held { value: (self.house)(), version: 0, verified_at: now, refresh_at: retry },
        }
    }
}
