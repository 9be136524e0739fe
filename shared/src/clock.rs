//! Wall-clock time, read once per request at the shell and passed into the core as a value.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (DynamoDB TTL attributes use this unit).
pub fn now_epoch_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or_default()
}

/// Milliseconds since the Unix epoch, for orderings finer than a second (the audit log).
pub fn now_epoch_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}
