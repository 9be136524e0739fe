//! The outbox (DESIGN.md "Queues"): a queue message that a database change implies is written as
//! an item in the same transaction as the change, sent right after it, and deleted by its consumer
//! once handled. A crash between the commit and the send loses nothing: the sweeper sends every
//! item whose send is overdue. Consumers are idempotent by the message's id, so a message sent
//! twice (by the hot path and the sweeper) is handled once.

use aws_sdk_dynamodb::types::{Delete, Put};
use serde::{Deserialize, Serialize};

use crate::dynamo::{StoreError, Write, get_n, get_s, n, s};

/// One message on its way to a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMessage {
    /// Also the consumer's idempotency key: derived from what caused the message.
    pub id: String,
    pub queue_url: String,
    pub body: String,
    /// Seconds SQS keeps it before delivery (0 to 900).
    pub delay_seconds: i32,
}

#[derive(Clone, Debug)]
pub struct Outbox {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    table: String,
}

impl Outbox {
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, sqs: aws_sdk_sqs::Client, table: impl Into<String>) -> Self {
        Outbox { dynamodb, sqs, table: table.into() }
    }

    /// The item to commit with the change that implies the message.
    pub fn put_item(&self, message: &OutboxMessage, now: i64) -> Result<Write, StoreError> {
        self.put_item_due(message, now + i64::from(message.delay_seconds))
    }

    /// The same, for a message not due before `due_at` (a check further off than SQS can delay).
    pub fn put_item_due(&self, message: &OutboxMessage, due_at: i64) -> Result<Write, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .item("id", s(&message.id))
            .item("queue_url", s(&message.queue_url))
            .item("body", s(&message.body))
            .item("delay_seconds", n(message.delay_seconds))
            .item("due_at", n(due_at))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("outbox.new", put))
    }

    /// Sends right after the commit. A failure is only logged: the sweeper sends it later.
    pub async fn send(&self, message: &OutboxMessage) {
        if let Err(e) = self.send_checked(message).await {
            tracing::warn!(message = %message.id, error = %e, "send failed; the outbox sweeper will send it");
        }
    }

    /// Sends, saying whether SQS took it.
    pub async fn send_checked(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        self.sqs
            .send_message()
            .queue_url(&message.queue_url)
            .message_body(&message.body)
            .delay_seconds(message.delay_seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| StoreError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))
    }

    /// Whether the message is still to be handled (its consumer deletes it when done).
    pub async fn pending(&self, id: &str) -> Result<bool, StoreError> {
        let item =
            self.dynamodb.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        Ok(item.item().is_some())
    }

    /// Marks one step of a message's handling as done, so a redelivery skips it.
    pub async fn mark(&self, id: &str, step: &str) -> Result<(), StoreError> {
        self.dynamodb
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET #step = :done")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#step", step)
            .expression_attribute_values(":done", aws_sdk_dynamodb::types::AttributeValue::Bool(true))
            .send()
            .await?;
        Ok(())
    }

    pub async fn step_done(&self, id: &str, step: &str) -> Result<bool, StoreError> {
        let item =
            self.dynamodb.get_item().table_name(&self.table).key("id", s(id)).consistent_read(true).send().await?;
        Ok(item
            .item()
            .and_then(|i| i.get(step))
            .is_some_and(|v| matches!(v, aws_sdk_dynamodb::types::AttributeValue::Bool(true))))
    }

    /// `done` as a write of the transaction that handles the message.
    pub fn done_item(&self, id: &str) -> Result<Write, StoreError> {
        let delete = Delete::builder().table_name(&self.table).key("id", s(id)).build()?;
        Ok(Write::delete("outbox.done", delete))
    }

    /// The message was handled: nothing is left to send.
    pub async fn done(&self, id: &str) -> Result<(), StoreError> {
        self.dynamodb.delete_item().table_name(&self.table).key("id", s(id)).send().await?;
        Ok(())
    }

    /// Sends every message due more than `grace` seconds ago and not yet handled; returns how many.
    /// Each send moves the message's due time on (by `grace`, times the sends so far), so a message
    /// that is merely slow is not flooded, and stops after `MAX_SWEEPS` (the DLQ alarm's case).
    pub async fn sweep(&self, now: i64, grace: i64) -> Result<usize, StoreError> {
        let mut sent = 0;
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(&self.table)
                .filter_expression("due_at < :cutoff AND (attribute_not_exists(sweeps) OR sweeps < :max)")
                .expression_attribute_values(":cutoff", n(now - grace))
                .expression_attribute_values(":max", n(MAX_SWEEPS))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items() {
                let id = get_s(item, "id")?.to_owned();
                let due_at: i64 = get_n(item, "due_at")?;
                let sweeps: i64 = item.get("sweeps").map(|_| get_n(item, "sweeps")).transpose()?.unwrap_or(0);
                // Claim this send: of two sweepers, one moves the due time and sends.
                let claimed = self
                    .dynamodb
                    .update_item()
                    .table_name(&self.table)
                    .key("id", s(&id))
                    .update_expression("SET due_at = :next, sweeps = :sweeps")
                    .condition_expression("due_at = :due")
                    .expression_attribute_values(":next", n(now + grace * (sweeps + 1)))
                    .expression_attribute_values(":sweeps", n(sweeps + 1))
                    .expression_attribute_values(":due", n(due_at))
                    .send()
                    .await;
                if claimed.is_err() {
                    continue;
                }
                let message = OutboxMessage {
                    id,
                    queue_url: get_s(item, "queue_url")?.to_owned(),
                    body: get_s(item, "body")?.to_owned(),
                    // Already overdue: deliver now.
                    delay_seconds: 0,
                };
                tracing::info!(message = %message.id, sweeps = sweeps + 1, "outbox sweeper sends an overdue message");
                self.send(&message).await;
                sent += 1;
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(sent);
            }
        }
    }
}

/// How often the sweeper sends one message before leaving it to an operator.
pub const MAX_SWEEPS: i64 = 10;
