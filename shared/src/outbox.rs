//! The outbox (docs/design.md, "Queues"): a queue message that a database change implies is
//! written as an item in the same transaction as the change, sent right after it, and deleted by
//! its consumer once handled. A crash between the commit and the send loses nothing: the sweeper
//! sends every item whose send is overdue. Consumers are idempotent by the message's id, so a
//! message sent twice (by the hot path and the sweeper) is handled once.
//!
//! Every item is delivered or visibly dead. An item still unhandled once the sweeper has sent it
//! `MAX_SWEEPS` times and waited out the last send is dead: the sweeper sends its message to the
//! dead-letter queue of the queue it was for (`OUTBOX_DEAD_LETTER_QUEUES`), with the attributes
//! `outbox_id`, `sweeps` and `reason`, so that queue's depth alarm fires and an operator redrives it
//! with the queue's own tools (naming the queue as the destination); then it marks the item dead in
//! place (`dead_at`, `dead_reason`), which takes it out of the sweeps and keeps it, as the record
//! and so a redriven message is still handled, for `DEAD_ITEM_KEPT_SECONDS` (the table's TTL). The
//! sweeper claims the item (a conditional update of its due time) before the dead letter, so of two
//! sweepers one moves it, and an item its consumer deleted meanwhile is never moved; the dead mark
//! comes after the send, so a crash between them gives a second dead letter (which its consumer
//! skips), never a dead item nobody sees.
//!
//! The sweeper reads only what is due: each live item carries `due_shard` (a stable hash of its id,
//! one of `DUE_SHARDS`), and the table's index `DUE_INDEX` is keyed by that shard and the item's
//! `due_at`, so a tick is one Query per shard for `due_at` before the cutoff, whatever waits
//! behind it (a card's expiry notice years ahead). The shards spread the index's writes: every
//! item written and deleted is an index write, and one partition key takes about 1,000 a second
//! (docs/decisions.md, "The outbox sweeper's index"). A dead item drops its shard, and so leaves the
//! index.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{Delete, Put, ReturnValue};
use aws_sdk_sqs::types::MessageAttributeValue;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::crypto::stable_hash;
use crate::dynamo::{Item, StoreError, Write, get_n, get_s, n, s};
use crate::reconcile::Violation;

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
            .item("due_shard", n(due_shard(&message.id)))
            .condition_expression("attribute_not_exists(id)")
            .build()?;
        Ok(Write::put("outbox.new", put))
    }

    /// Sends right after the commit. A failure is only logged: the sweeper sends it later.
    pub async fn send(&self, message: &OutboxMessage) {
        if let Err(e) = self.send_checked(message).await {
            tracing::warn!(outbox_id = %message.id, error = %e, "send failed; the outbox sweeper will send it");
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
            .map_err(StoreError::from)
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

    /// The message's consumer sends it again to itself, due at `due_at`: the sweeper waits for that
    /// (with its sweeps counted afresh) instead of sending copies meanwhile.
    pub async fn postpone(&self, id: &str, due_at: i64) -> Result<(), StoreError> {
        let outcome = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET due_at = :due, sweeps = :none")
            .condition_expression("attribute_exists(id) AND attribute_not_exists(dead_at)")
            .expression_attribute_values(":due", n(due_at))
            .expression_attribute_values(":none", n(0))
            .send()
            .await;
        match outcome {
            // Handled or dead meanwhile: nothing to postpone.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    /// The message was handled: nothing is left to send.
    pub async fn done(&self, id: &str) -> Result<(), StoreError> {
        self.dynamodb.delete_item().table_name(&self.table).key("id", s(id)).send().await?;
        Ok(())
    }

    /// Sends again every message due more than `grace` seconds ago and not yet handled, and moves
    /// to the dead letters every one that is still unhandled after its last sweep (`sweep_step`).
    /// It starts nothing once `budget` has passed (the function's timeout is near): what is left is
    /// the next tick's, and `Swept::cut_short` says so.
    pub async fn sweep(
        &self,
        now: i64,
        grace: i64,
        dead_letters: &DeadLetterQueues,
        budget: Duration,
    ) -> Result<Swept, StoreError> {
        let stop_at = Instant::now() + budget;
        // Each tick starts at another shard, and takes at most `ITEMS_PER_SHARD` from each, so a
        // backlog in some shards cannot keep the others waiting tick after tick.
        let first = now.rem_euclid(i64::from(DUE_SHARDS)) as u32;
        let shards = futures_util::stream::iter((0..DUE_SHARDS).map(|i| (first + i) % DUE_SHARDS))
            .map(|shard| self.sweep_shard(shard, now, grace, dead_letters, stop_at))
            .buffer_unordered(SHARDS_AT_ONCE)
            .collect::<Vec<_>>()
            .await;
        // Every shard is swept even if one fails; the failure then fails the tick, so it shows.
        let mut swept = Swept::default();
        for shard in shards {
            let done = shard?;
            swept.sent += done.sent;
            swept.dead += done.dead;
            swept.cut_short |= done.cut_short;
        }
        Ok(swept)
    }

    /// One shard's due items, oldest first, page by page.
    async fn sweep_shard(
        &self,
        shard: u32,
        now: i64,
        grace: i64,
        dead_letters: &DeadLetterQueues,
        stop_at: Instant,
    ) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let mut acted = 0;
        let mut start = None;
        loop {
            let page = self
                .dynamodb
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("due_shard = :shard AND due_at < :cutoff")
                .expression_attribute_values(":shard", n(shard))
                .expression_attribute_values(":cutoff", n(now - grace))
                .set_exclusive_start_key(start)
                .send()
                .await?;
            for item in page.items() {
                if Instant::now() >= stop_at || acted >= ITEMS_PER_SHARD {
                    swept.cut_short = true;
                    return Ok(swept);
                }
                acted += 1;
                self.sweep_item(item, now, grace, dead_letters, &mut swept).await?;
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(swept);
            }
        }
    }

    /// Takes one due item's next step. The index is read eventually consistently, so the item may
    /// have moved on since: the claim's condition is what decides.
    async fn sweep_item(
        &self,
        item: &Item,
        now: i64,
        grace: i64,
        dead_letters: &DeadLetterQueues,
        swept: &mut Swept,
    ) -> Result<(), StoreError> {
        let id = get_s(item, "id")?;
        let due_at: i64 = get_n(item, "due_at")?;
        let sweeps: i64 = item.get("sweeps").map(|_| get_n(item, "sweeps")).transpose()?.unwrap_or(0);
        let step = sweep_step(due_at, sweeps, now, grace);
        let (next_due, counted) = match step {
            SweepStep::Wait => return Ok(()),
            SweepStep::Send { next_due, sweeps } => (next_due, sweeps),
            SweepStep::Kill { retry_at } => (retry_at, sweeps),
        };
        let Some(claimed) = self.claim(id, due_at, next_due, counted).await else { return Ok(()) };
        let message = OutboxMessage {
            id: id.to_owned(),
            queue_url: get_s(&claimed, "queue_url")?.to_owned(),
            body: get_s(&claimed, "body")?.to_owned(),
            // Already overdue: deliver now.
            delay_seconds: 0,
        };
        if let SweepStep::Kill { .. } = step {
            if self.dead_letter(&message, sweeps, next_due, dead_letters, now).await {
                swept.dead += 1;
            }
            return Ok(());
        }
        // `alarm`: counted by template.yaml's OutboxResentMetric.
        tracing::info!(outbox_id = %message.id, sweeps = counted, alarm = "outbox_resent", "outbox sweeper sends an overdue message");
        self.send(&message).await;
        swept.sent += 1;
        Ok(())
    }

    /// Claims the item's next step: of two sweepers, only the one whose condition holds moves its
    /// due time on and acts. An item its consumer deleted meanwhile fails the condition too. The
    /// claim answers the whole item, so its message is read by the write that claims it.
    async fn claim(&self, id: &str, due_at: i64, next_due: i64, sweeps: i64) -> Option<Item> {
        self.dynamodb
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            .update_expression("SET due_at = :next, sweeps = :sweeps")
            .condition_expression("due_at = :due AND attribute_not_exists(dead_at)")
            .expression_attribute_values(":next", n(next_due))
            .expression_attribute_values(":sweeps", n(sweeps))
            .expression_attribute_values(":due", n(due_at))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .ok()
            .and_then(|claimed| claimed.attributes)
    }

    /// Sends a claimed, exhausted message to its queue's dead-letter queue with its reason, then
    /// marks its item dead. Any failure leaves the item live and claimed until `retry_at`, when the
    /// next sweep tries again: a crash between the two steps gives a second dead letter, never none.
    async fn dead_letter(
        &self,
        message: &OutboxMessage,
        sweeps: i64,
        retry_at: i64,
        dead_letters: &DeadLetterQueues,
        now: i64,
    ) -> bool {
        let Some(dead_letter_queue) = dead_letters.of(&message.queue_url) else {
            // A queue missing from template.yaml's OUTBOX_DEAD_LETTER_QUEUES: the item stays live.
            tracing::error!(outbox_id = %message.id, queue = %message.queue_url, "no dead-letter queue for this queue");
            return false;
        };
        let reason = dead_reason(sweeps);
        let texts = [("outbox_id", message.id.clone()), ("reason", reason.clone())];
        if let Err(e) = self.send_dead_letter(dead_letter_queue, &message.body, &texts, &[("sweeps", sweeps)]).await {
            tracing::warn!(outbox_id = %message.id, error = %e, "dead-letter send failed; the next sweep tries again");
            return false;
        }
        let marked = self.mark_dead(&message.id, &reason, now, Some(retry_at)).await;
        match marked {
            Ok(_) => tracing::error!(outbox_id = %message.id, queue = %dead_letter_queue, %reason,
                "outbox message moved to the dead-letter queue"),
            // Handled meanwhile (its consumer deleted it) or taken on by a later sweep: the dead letter
            // is a duplicate its consumer skips. Any other failure: the next sweep sends another one.
            Err(e) => tracing::warn!(outbox_id = %message.id, error = %DisplayErrorContext(e),
                "dead-lettered outbox item could not be marked dead"),
        }
        true
    }

    /// Sends a message's body, unchanged, to a dead-letter queue with what happened to it as
    /// attributes, so the queue's own redrive can send it back as it was. Used by the sweeper and
    /// by the queue consumers (`crate::batch`).
    pub async fn send_dead_letter(
        &self,
        dead_letter_queue: &str,
        body: &str,
        texts: &[(&str, String)],
        numbers: &[(&str, i64)],
    ) -> Result<(), StoreError> {
        let mut send = self.sqs.send_message().queue_url(dead_letter_queue).message_body(body);
        let typed = texts.iter().map(|(name, text)| (name, "String", text.clone()));
        for (name, data_type, value) in typed.chain(numbers.iter().map(|(name, n)| (name, "Number", n.to_string()))) {
            let value = MessageAttributeValue::builder().data_type(data_type).string_value(value).build()?;
            send = send.message_attributes(*name, value);
        }
        send.send().await.map(|_| ()).map_err(StoreError::from)
    }

    /// Marks the item dead in place: out of the sweeps, kept (the table's TTL) longer than its dead
    /// letter so a redriven message is still handled. `claimed` is the due time the sweeper claimed
    /// it at; without one (a consumer found it poison) any live item is marked.
    async fn mark_dead(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        claimed: Option<i64>,
    ) -> Result<(), SdkError<UpdateItemError>> {
        let update = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key("id", s(id))
            // Out of the sweeper's index too: it reads only what is live.
            .update_expression("SET dead_at = :now, dead_reason = :reason, expires_at = :expires REMOVE due_shard")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":expires", n(now + DEAD_ITEM_KEPT_SECONDS));
        let update = match claimed {
            Some(due_at) => {
                update.condition_expression("due_at = :claimed").expression_attribute_values(":claimed", n(due_at))
            }
            None => update.condition_expression("attribute_exists(id) AND attribute_not_exists(dead_at)"),
        };
        update.send().await.map(|_| ())
    }

    /// A consumer found the message poison and sent it to its dead-letter queue: its item (if it
    /// is still there) is marked dead, so the sweeper does not send it again.
    pub async fn poisoned(&self, id: &str, reason: &str, now: i64) -> Result<(), StoreError> {
        match self.mark_dead(id, reason, now, None).await {
            // Gone or dead already: nothing to keep from the sweeper.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            other => other.map_err(StoreError::from),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Overdue messages sent again.
    pub sent: usize,
    /// Exhausted messages moved to their queue's dead-letter queue.
    pub dead: usize,
    /// The budget ran out with due items left: the next tick takes them.
    pub cut_short: bool,
}

/// The sweeper's index on the outbox table: partition `due_shard`, sort `due_at` (template.yaml).
pub const DUE_INDEX: &str = "ByDue";

/// How many partitions the index spreads live items over: at about 1,000 index writes a second
/// each, 64 take 64,000 a second (an item's put and delete are two), and a tick is 64 Queries.
/// Changing it strands items written under the old count: it is fixed.
pub const DUE_SHARDS: u32 = 64;

/// How many shards one sweep queries at once.
const SHARDS_AT_ONCE: usize = 16;

/// How many due items one tick takes from one shard: 64 shards, 32,000 a tick at most.
const ITEMS_PER_SHARD: usize = 500;

/// The index shard of the item with this id.
pub fn due_shard(id: &str) -> u32 {
    (stable_hash(id) % u64::from(DUE_SHARDS)) as u32
}

/// What the sweeper does with a live outbox item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepStep {
    /// Not overdue: its consumer may still be at it.
    Wait,
    /// Send it again and wait longer for it: due at `next_due`, `sweeps` sends by the sweeper.
    Send { next_due: i64, sweeps: i64 },
    /// Unhandled after every sweep: to the dead letters. If that fails, it is tried again at `retry_at`.
    Kill { retry_at: i64 },
}

/// Each send moves the item's due time on by `grace` times the sweeper's sends so far, so a message
/// that is merely slow is not flooded; once the last sweep's wait has passed too, the item is dead.
pub fn sweep_step(due_at: i64, sweeps: i64, now: i64, grace: i64) -> SweepStep {
    if due_at >= now - grace {
        SweepStep::Wait
    } else if sweeps >= MAX_SWEEPS {
        SweepStep::Kill { retry_at: now + grace }
    } else {
        SweepStep::Send { next_due: now + grace * (sweeps + 1), sweeps: sweeps + 1 }
    }
}

/// The reason a dead letter and its outbox item carry.
pub fn dead_reason(sweeps: i64) -> String {
    format!("never handled after {sweeps} sends by the outbox sweeper")
}

/// How long a dead item stays in the outbox (its `expires_at`, the table's TTL): longer than the
/// dead-letter queues keep a message (14 days), so a redriven message still finds its item and is
/// handled rather than skipped as a duplicate.
pub const DEAD_ITEM_KEPT_SECONDS: i64 = 30 * 24 * 3600;

/// The dead-letter queue of each queue the outbox sends to, by queue URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterQueues(HashMap<String, String>);

impl DeadLetterQueues {
    /// From `QUEUE_URL=DEAD_LETTER_QUEUE_URL` pairs separated by whitespace (template.yaml's
    /// `OUTBOX_DEAD_LETTER_QUEUES`).
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some((queue, dead)) if !queue.is_empty() && !dead.is_empty() && queue != dead => {
                    Ok((queue.to_owned(), dead.to_owned()))
                }
                _ => Err(format!("{pair:?} is not QUEUE_URL=DEAD_LETTER_QUEUE_URL")),
            })
            .collect::<Result<_, _>>()
            .map(DeadLetterQueues)
    }

    pub fn of(&self, queue_url: &str) -> Option<&str> {
        self.0.get(queue_url).map(String::as_str)
    }
}

/// How often the sweeper sends one message before moving it to the dead letters.
pub const MAX_SWEEPS: i64 = 10;

/// An outbox item as the invariant checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    pub id: String,
    pub due_at: i64,
    /// Set when it was moved to its queue's dead letters.
    pub dead_reason: Option<String>,
    /// Whether it has its shard, so the sweeper finds it (an item written before the index
    /// existed has none until `Outbox::index_unsharded`).
    pub sharded: bool,
}

impl Outbox {
    /// Every item still in the outbox (handled ones are gone), for `check_outbox`.
    pub async fn items(&self) -> Result<Vec<OutboxItem>, StoreError> {
        let items = crate::dynamo::scan_all(&self.dynamodb, &self.table).await?;
        items
            .iter()
            .map(|item| {
                Ok(OutboxItem {
                    id: get_s(item, "id")?.to_owned(),
                    due_at: get_n(item, "due_at")?,
                    dead_reason: item
                        .get("dead_at")
                        .map(|_| get_s(item, "dead_reason").map(str::to_owned))
                        .transpose()?,
                    sharded: item.contains_key("due_shard"),
                })
            })
            .collect()
    }

    /// Gives every live item without a shard (written before the sweeper's index, or by a
    /// function of an older release during a deploy) its shard, so the sweeper finds it: how many
    /// it gave one. One Scan of the table; run once every function writes shards.
    pub async fn index_unsharded(&self) -> Result<usize, StoreError> {
        let mut given = 0;
        for item in crate::dynamo::scan_all(&self.dynamodb, &self.table).await? {
            if item.contains_key("due_shard") || item.contains_key("dead_at") {
                continue;
            }
            let id = get_s(&item, "id")?;
            let outcome = self
                .dynamodb
                .update_item()
                .table_name(&self.table)
                .key("id", s(id))
                .update_expression("SET due_shard = :shard")
                .condition_expression(
                    "attribute_exists(id) AND attribute_not_exists(due_shard) AND attribute_not_exists(dead_at)",
                )
                .expression_attribute_values(":shard", n(due_shard(id)))
                .send()
                .await;
            match outcome {
                Ok(_) => given += 1,
                // Handled, marked dead or given its shard meanwhile.
                Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(given)
    }
}

/// Every message was delivered (its item is gone), is dead with its reason, or is not overdue by
/// more than `slack` seconds (its consumer or the sweeper is still at it).
pub fn check_outbox(items: &[OutboxItem], now: i64, slack: i64) -> Vec<Violation> {
    items
        .iter()
        .filter_map(|item| {
            match &item.dead_reason {
                Some(reason) if reason.is_empty() => Some("is dead without a reason".to_owned()),
                Some(_) => None,
                // Never swept, however overdue it gets: said at once.
                None if !item.sharded => Some(
                    "has no shard, so the sweeper never finds it: `cargo ops outbox index` gives it one".to_owned(),
                ),
                None if now > item.due_at + slack => {
                    Some(format!("is undelivered {} s after it was due", now - item.due_at))
                }
                None => None,
            }
            .map(|problem| Violation::record(format!("outbox item {}", item.id), problem))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: i64 = 60;

    #[test]
    fn every_item_is_delivered_dead_with_a_reason_or_not_yet_overdue() {
        let item = |id: &str, due_at: i64, dead: Option<&str>| OutboxItem {
            id: id.into(),
            due_at,
            dead_reason: dead.map(str::to_owned),
            sharded: dead.is_none(),
        };
        let unsharded = OutboxItem { sharded: false, ..item("e", 5000, None) };
        let items = [
            item("a", 900, None),
            item("b", 100, Some("never handled")),
            item("c", 800, None),
            item("d", 0, Some("")),
            unsharded,
        ];
        assert_eq!(
            check_outbox(&items, 1000, 150),
            [
                Violation::record("outbox item c", "is undelivered 200 s after it was due"),
                Violation::record("outbox item d", "is dead without a reason"),
                Violation::record(
                    "outbox item e",
                    "has no shard, so the sweeper never finds it: `cargo ops outbox index` gives it one"
                ),
            ]
        );
    }

    #[test]
    fn an_item_not_yet_overdue_waits() {
        assert_eq!(sweep_step(1000, 0, 1000, GRACE), SweepStep::Wait);
        assert_eq!(sweep_step(1000 - GRACE, 3, 1000, GRACE), SweepStep::Wait);
        assert_eq!(sweep_step(1000 - GRACE, MAX_SWEEPS, 1000, GRACE), SweepStep::Wait);
    }

    #[test]
    fn an_overdue_item_is_sent_again_and_waited_for_longer_each_time() {
        assert_eq!(sweep_step(900, 0, 1000, GRACE), SweepStep::Send { next_due: 1000 + GRACE, sweeps: 1 });
        assert_eq!(sweep_step(900, 4, 1000, GRACE), SweepStep::Send { next_due: 1000 + 5 * GRACE, sweeps: 5 });
        assert_eq!(
            sweep_step(900, MAX_SWEEPS - 1, 1000, GRACE),
            SweepStep::Send { next_due: 1000 + MAX_SWEEPS * GRACE, sweeps: MAX_SWEEPS }
        );
    }

    #[test]
    fn an_item_still_unhandled_after_its_last_sweep_is_killed() {
        assert_eq!(sweep_step(900, MAX_SWEEPS, 1000, GRACE), SweepStep::Kill { retry_at: 1000 + GRACE });
        // Whatever an operator or an older version left.
        assert_eq!(sweep_step(900, MAX_SWEEPS + 3, 1000, GRACE), SweepStep::Kill { retry_at: 1000 + GRACE });
    }

    #[test]
    fn an_item_dies_only_after_every_sweep_and_its_waits() {
        let (mut due_at, mut sweeps, mut now, mut sent) = (0, 0, 0, 0);
        loop {
            now += 1;
            match sweep_step(due_at, sweeps, now, GRACE) {
                SweepStep::Wait => {}
                SweepStep::Send { next_due, sweeps: counted } => {
                    assert!(next_due > now, "each send is waited for");
                    (due_at, sweeps, sent) = (next_due, counted, sent + 1);
                }
                SweepStep::Kill { .. } => break,
            }
        }
        assert_eq!(sent, MAX_SWEEPS);
        // The sends' waits, growing by one grace each, and a grace past the last.
        assert!(now > GRACE * (1..=MAX_SWEEPS).sum::<i64>(), "died at {now}");
    }

    proptest::proptest! {
        #[test]
        fn only_an_overdue_item_is_acted_on_and_only_an_exhausted_one_dies(
            due_at in -10_000i64..10_000, sweeps in 0i64..20, now in -10_000i64..10_000, grace in 1i64..600,
        ) {
            match sweep_step(due_at, sweeps, now, grace) {
                SweepStep::Wait => proptest::prop_assert!(due_at >= now - grace),
                SweepStep::Send { next_due, sweeps: counted } => {
                    proptest::prop_assert!(due_at < now - grace && sweeps < MAX_SWEEPS);
                    proptest::prop_assert_eq!(counted, sweeps + 1);
                    proptest::prop_assert!(next_due >= now + grace);
                }
                SweepStep::Kill { retry_at } => {
                    proptest::prop_assert!(due_at < now - grace && sweeps >= MAX_SWEEPS);
                    proptest::prop_assert!(retry_at > now);
                }
            }
        }
    }

    #[test]
    fn an_item_s_shard_is_fixed_by_its_id_and_the_shards_share_the_items() {
        // Fixed across processes and releases: the writer and the sweeper must agree.
        assert_eq!(due_shard("o_1/expire"), due_shard("o_1/expire"));
        assert_eq!(due_shard("o_1/expire"), 28);
        let mut per_shard = vec![0u32; DUE_SHARDS as usize];
        for i in 0..64_000 {
            per_shard[due_shard(&format!("o_{i}/settled")) as usize] += 1;
        }
        // 1,000 each if even; no shard is more than 15% off.
        assert!(per_shard.iter().all(|&count| (850..=1150).contains(&count)), "{per_shard:?}");
    }

    #[test]
    fn the_reason_counts_the_sweeps() {
        assert_eq!(dead_reason(10), "never handled after 10 sends by the outbox sweeper");
    }

    #[test]
    fn dead_letter_queues_map_each_queue_to_its_own() {
        let queues = DeadLetterQueues::parse(
            "https://sqs/1/notify=https://sqs/1/notify-dlq\n  https://sqs/1/settle=https://sqs/1/settle-dlq ",
        )
        .unwrap();
        assert_eq!(queues.of("https://sqs/1/notify"), Some("https://sqs/1/notify-dlq"));
        assert_eq!(queues.of("https://sqs/1/settle"), Some("https://sqs/1/settle-dlq"));
        assert_eq!(queues.of("https://sqs/1/notify-dlq"), None);
        assert_eq!(DeadLetterQueues::parse("").unwrap(), DeadLetterQueues::default());
    }

    #[test]
    fn a_malformed_dead_letter_pair_is_refused() {
        for text in
            ["https://sqs/1/notify", "=https://sqs/1/dlq", "https://sqs/1/q=", "https://sqs/1/q=https://sqs/1/q"]
        {
            assert!(DeadLetterQueues::parse(text).is_err(), "{text}");
        }
    }
}
