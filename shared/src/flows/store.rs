//! Attempts per flow instance (`FlowInstancesTable`): partition `user`, sort `key`
//! (`<instance>/<flow>/<step>/<error code>`), so an instance id names nothing of another user's.
//! Each item counts the retries given for one error at one step of one instance (each code has
//! its own policy, so its own cap) and lives `INSTANCE_TTL_SECONDS` from its first.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::ReturnValue;

use super::Step;
use crate::dynamo::{StoreError, get_n, n, s};

/// How long an instance's attempts are kept: a day from its first retry at a step. A flow retried
/// after that starts its count again; a new try of a whole flow sends a new instance id.
pub const INSTANCE_TTL_SECONDS: i64 = 86_400;

#[derive(Clone, Debug)]
pub struct AttemptStore {
    client: Client,
    table: String,
}

impl AttemptStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        AttemptStore { client, table: table.into() }
    }

    /// Takes the next of `max` attempts at `code` at step `at` of `user`'s `instance`: its number
    /// (from 1), or `None` when all are spent. Each write is conditional on the count it changes
    /// (three calls at most), so devices racing for the last attempt cannot both get it.
    pub async fn take(
        &self,
        user: &str,
        instance: &str,
        at: &Step,
        code: &str,
        max: u32,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        let key = format!("{instance}/{at}/{code}");
        let mut restarted = false;
        loop {
            let counted = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("user", s(user))
                .key("key", s(&key))
                .update_expression(
                    "SET attempts = if_not_exists(attempts, :zero) + :one, expires_at = if_not_exists(expires_at, :expires)",
                )
                .condition_expression(
                    "(attribute_not_exists(attempts) AND attribute_not_exists(expires_at)) OR (attempts < :max AND expires_at > :now)",
                )
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":max", n(max))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":expires", n(now + INSTANCE_TTL_SECONDS))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await;
            match counted {
                Ok(out) => {
                    let attributes =
                        out.attributes().ok_or_else(|| StoreError::new("an attempt's count came back without it"))?;
                    return get_n(attributes, "attempts").map(Some);
                }
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(e.into()),
            }
            if restarted {
                return Ok(None);
            }
            // Spent, or past its lifetime (TTL deletes late): a count past it starts again. If
            // another device restarted it first, count once more after it.
            let restart = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("user", s(user))
                .key("key", s(&key))
                .update_expression("SET attempts = :one, expires_at = :expires")
                // Past its lifetime, or not a whole count (never written so; but never stuck).
                .condition_expression(
                    "attribute_not_exists(expires_at) OR attribute_not_exists(attempts) OR expires_at <= :now",
                )
                .expression_attribute_values(":one", n(1))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":expires", n(now + INSTANCE_TTL_SECONDS))
                .send()
                .await;
            match restart {
                Ok(_) => return Ok(Some(1)),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                    restarted = true
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
