//! `cargo ops dlq ...`: the dead-letter queues, over SQS directly (no route reaches them).
//!
//! A dead letter is its message's body as it was, with what happened to it as attributes
//! (`reason`, `kind`, `outbox_id`, `receive_count` or `sweeps`; `superpay::outbox`). A redrive
//! sends the body back to its source queue, then deletes the dead letter: a crash between the two
//! leaves a copy, which the consumer drops (its outbox item is handled once), never a loss. Each
//! batch of ten is audited before it moves; a message dead-lettered again during the redrive (its
//! cause not fixed) ends it.

use std::collections::BTreeMap;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::aws::Aws;
use crate::{Out, aligned};

/// How long a message read by `show` or `redrive` stays hidden from other readers.
const HIDDEN_SECONDS: i32 = 60;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Every dead-letter queue: its messages, and the queue they came from
    Count,
    /// A dead-letter queue's messages with the reason each was dead-lettered (they stay)
    Show {
        /// The queue: its template name (SettlementDeadLetterQueue) or its start (settlement)
        queue: String,
        /// At most this many
        #[arg(long, default_value_t = 20)]
        max: usize,
        /// Print each message's body too. A body may carry what only its payer should see, such
        /// as a top-up link
        #[arg(long)]
        bodies: bool,
    },
    /// Send a dead-letter queue's messages back to their source queue, once the cause is fixed
    Redrive {
        queue: String,
        /// At most this many [default: all]
        #[arg(long)]
        max: Option<usize>,
    },
}

pub async fn dlq(aws: &Aws, command: DlqCommand, out: Out) -> Result<String, String> {
    match command {
        DlqCommand::Count => {
            let mut rows = Vec::new();
            let mut counts = BTreeMap::new();
            for (name, url) in dead_letter_queues(aws) {
                let attributes = aws
                    .sqs
                    .get_queue_attributes()
                    .queue_url(url)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                    .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                    .send()
                    .await
                    .map_err(|e| format!("{name}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
                let count = |attribute| {
                    attributes.attributes().and_then(|a| a.get(&attribute)).and_then(|n| n.parse::<u64>().ok())
                };
                let (waiting, hidden) = (
                    count(QueueAttributeName::ApproximateNumberOfMessages).unwrap_or(0),
                    count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible).unwrap_or(0),
                );
                let source = source_of(&name);
                counts.insert(name.clone(), json!({"messages": waiting, "in_flight": hidden, "source": source}));
                rows.push(vec![name, waiting.to_string(), hidden.to_string(), source]);
            }
            Ok(out.told(&Value::Object(counts.into_iter().collect()), || {
                aligned(&["QUEUE", "MESSAGES", "IN FLIGHT", "FROM"], &rows)
            }))
        }
        DlqCommand::Show { queue, max, bodies } => {
            let (name, url) = find(aws, &queue)?;
            let messages = receive(aws, &url, max).await?;
            // Read, not taken: visible again at once.
            release(aws, &url, &messages).await?;
            let shown: Vec<Value> = messages.iter().map(|m| described(m, bodies)).collect();
            Ok(out.told(&Value::Array(shown.clone()), || {
                let rows: Vec<Vec<String>> = shown
                    .iter()
                    .map(|m| {
                        let cell = |field: &str| m[field].as_str().unwrap_or("-").to_owned();
                        vec![cell("message_id"), cell("kind"), cell("outbox_id"), cell("tries"), cell("reason")]
                    })
                    .collect();
                let bodies: String = shown
                    .iter()
                    .filter_map(|m| Some(format!("{}: {}\n", m["message_id"].as_str()?, m["body"].as_str()?)))
                    .collect();
                format!(
                    "{name}: {} message(s) shown\n{}{bodies}",
                    rows.len(),
                    aligned(&["MESSAGE", "KIND", "OUTBOX ID", "TRIES", "REASON"], &rows)
                )
            }))
        }
        DlqCommand::Redrive { queue, max } => {
            let (name, url) = find(aws, &queue)?;
            let source_name = source_of(&name);
            let source =
                aws.queues.get(&source_name).ok_or_else(|| format!("{name} has no source queue {source_name}"))?;
            // Checked before anything moves: no redrive goes unaudited.
            aws.table("AuditTable")?;
            let started_ms = superpay::clock::now_epoch_millis();
            let mut moved = Vec::new();
            let max = max.unwrap_or(usize::MAX);
            while moved.len() < max {
                let received = receive(aws, &url, (max - moved.len()).min(10)).await?;
                // One dead-lettered again since the redrive began (its cause is not fixed) ends it:
                // it stays, visible again, and the redrive does not go round in circles.
                let (batch, again): (Vec<Message>, Vec<Message>) =
                    received.into_iter().partition(|m| sent_at_ms(m).is_none_or(|sent| sent < started_ms));
                release(aws, &url, &again).await?;
                if batch.is_empty() {
                    break;
                }
                let ids: Vec<&str> = batch.iter().filter_map(Message::message_id).collect();
                // The intent first: a crash after it leaves an entry naming messages perhaps not
                // sent, never messages sent without one.
                aws.audit(format!("queue/{name}"), "dlq.redrive", json!({"to": source_name, "messages": ids})).await?;
                for message in &batch {
                    aws.sqs
                        .send_message()
                        .queue_url(source)
                        .message_body(message.body().unwrap_or_default())
                        .send()
                        .await
                        .map_err(|e| {
                            format!("sending to {source_name}: {}", aws_sdk_sqs::error::DisplayErrorContext(e))
                        })?;
                }
                delete(aws, &url, &batch).await?;
                moved.extend(ids.into_iter().map(str::to_owned));
                out.progress(&format!("{name}: {} redriven to {source_name}", moved.len()));
                if !again.is_empty() {
                    break;
                }
            }
            let answer = json!({"queue": name, "to": source_name, "redriven": moved});
            Ok(out.told(&answer, || format!("{name}: {} message(s) sent back to {source_name}\n", moved.len())))
        }
    }
}

/// The stack's dead-letter queues by name.
fn dead_letter_queues(aws: &Aws) -> Vec<(String, String)> {
    aws.queues
        .iter()
        .filter(|(name, _)| name.ends_with("DeadLetterQueue"))
        .map(|(n, u)| (n.clone(), u.clone()))
        .collect()
}

/// The queue a dead-letter queue serves, by the template's naming (`CashDeadLetterQueue` serves
/// `CashQueue`).
fn source_of(dead_letter_queue: &str) -> String {
    dead_letter_queue.replace("DeadLetterQueue", "Queue")
}

/// The dead-letter queue `wanted` names: its whole name, or the start of one (any case).
fn find(aws: &Aws, wanted: &str) -> Result<(String, String), String> {
    let queues = dead_letter_queues(aws);
    let matching: Vec<&(String, String)> =
        queues.iter().filter(|(name, _)| name.to_lowercase().starts_with(&wanted.to_lowercase())).collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        _ => {
            let names: Vec<&str> = queues.iter().map(|(name, _)| name.as_str()).collect();
            Err(format!("{wanted:?} names no one dead-letter queue; they are {}", names.join(", ")))
        }
    }
}

/// Up to `max` messages, hidden from other readers for a while.
async fn receive(aws: &Aws, url: &str, max: usize) -> Result<Vec<Message>, String> {
    let mut messages: Vec<Message> = Vec::new();
    while messages.len() < max {
        let page = aws
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages((max - messages.len()).min(10) as i32)
            .visibility_timeout(HIDDEN_SECONDS)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|e| format!("reading {url}: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let got = page.messages.unwrap_or_default();
        if got.is_empty() {
            break;
        }
        messages.extend(got);
    }
    Ok(messages)
}

/// Makes `messages` visible again at once.
async fn release(aws: &Aws, url: &str, messages: &[Message]) -> Result<(), String> {
    for message in messages {
        if let Some(receipt) = message.receipt_handle() {
            aws.sqs
                .change_message_visibility()
                .queue_url(url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| format!("releasing a message: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        }
    }
    Ok(())
}

async fn delete(aws: &Aws, url: &str, messages: &[Message]) -> Result<(), String> {
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(m.receipt_handle()?).build().ok()
        })
        .collect();
    let deleted = aws
        .sqs
        .delete_message_batch()
        .queue_url(url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| format!("deleting redriven messages: {}", aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    match deleted.failed().first() {
        // Sent back but still here: it will be sent again by the next redrive, and dropped then.
        Some(failed) => Err(format!("a redriven message was not deleted: {}", failed.message().unwrap_or_default())),
        None => Ok(()),
    }
}

/// When a message was sent to the queue, in milliseconds.
fn sent_at_ms(message: &Message) -> Option<i64> {
    message.attributes()?.get(&MessageSystemAttributeName::SentTimestamp)?.parse().ok()
}

/// A dead letter as the operator reads it; its body only when asked for. One SQS moved here itself
/// (the queue's `maxReceiveCount` reached) carries no attributes: what its body says of itself
/// stands in, and its reason says where the cause is.
fn described(message: &Message, body: bool) -> Value {
    let attribute = |name: &str| {
        message.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).map(str::to_owned)
    };
    let envelope: Value = message.body().and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
    let told = |field: &str| envelope[field].as_str().map(str::to_owned);
    let tries = attribute("receive_count").or_else(|| attribute("sweeps").map(|n| format!("{n} sweeps")));
    let reason = attribute("reason").unwrap_or_else(|| {
        "moved here by SQS after the queue's deliveries failed; the consumer's error is in its function's log".into()
    });
    let mut shown = json!({
        "message_id": message.message_id(),
        "kind": attribute("kind").or_else(|| told("kind")),
        "outbox_id": attribute("outbox_id").or_else(|| told("id")),
        "reason": reason,
        "tries": tries,
        "sent_at_ms": sent_at_ms(message),
    });
    if body {
        shown["body"] = json!(message.body());
    }
    shown
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;

    use super::*;

    #[test]
    fn a_dead_letter_shows_why_and_its_queue_serves_the_named_one() {
        let text =
            |value: &str| MessageAttributeValue::builder().data_type("String").string_value(value).build().unwrap();
        let message = Message::builder()
            .message_id("m-1")
            .body("{\"kind\":\"settle\"}")
            .message_attributes("reason", text("not a settlement message: missing field `id`"))
            .message_attributes("kind", text("settle"))
            .message_attributes("sweeps", text("5"))
            .build();
        assert!(described(&message, false).get("body").is_none());
        // Moved by SQS itself: no attributes, so its body speaks for it.
        let moved = Message::builder().message_id("m-2").body(r#"{"kind":"order.settled","id":"o_1/settled"}"#).build();
        let shown_moved = described(&moved, false);
        assert_eq!((&shown_moved["kind"], &shown_moved["outbox_id"]), (&json!("order.settled"), &json!("o_1/settled")));
        assert!(shown_moved["reason"].as_str().unwrap().contains("function's log"));
        let shown = described(&message, true);
        assert_eq!(shown["reason"], "not a settlement message: missing field `id`");
        assert_eq!(
            (&shown["kind"], &shown["tries"], &shown["outbox_id"]),
            (&json!("settle"), &json!("5 sweeps"), &Value::Null)
        );
        assert_eq!(source_of("SettlementDeadLetterQueue"), "SettlementQueue");
    }
}
