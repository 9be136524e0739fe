//! Conversations in DynamoDB (`ConversationsTable`, partition `pk`, sort `sk`):
//! - `user#<user>` / `with#<counterparty>`: the summary (last sequence, read up to, last text);
//! - `conversation#<user>#<counterparty>` / `message#<sequence, 20 digits>`: the messages, in order;
//! - `conversation#<user>#<counterparty>` / `id#<message id>`: the marker that posts an id once.
//!
//! Posting reads the summary, then writes marker, summary and message in one transaction,
//! conditional on the sequence it read (retried if another message got there first).

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Put, Update};

use super::{Counterparty, Message, NewMessage, Summary};
use crate::dynamo::{Item, StoreError, TransactError, Write, get_n, get_s, n, newest_before, s, transact};

/// The rule of a message's marker: this message id was not posted before.
const MESSAGE_NEW: &str = "conversation.message_new";

const ATTEMPTS: u32 = 20;

#[derive(Clone, Debug)]
pub struct ConversationStore {
    client: Client,
    table: String,
}

fn thread(user: &str, with: &Counterparty) -> String {
    format!("conversation#{user}#{}", with.as_str())
}

impl ConversationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        ConversationStore { client, table: table.into() }
    }

    /// Posts `message` to the user's conversation with `with`; a message id posts once.
    /// Returns its sequence, or `None` when it had already been posted.
    pub async fn post(
        &self,
        user: &str,
        with: &Counterparty,
        message: &NewMessage,
        at: i64,
    ) -> Result<Option<u64>, StoreError> {
        for attempt in 0..ATTEMPTS {
            let summary = self.summary(user, with).await?;
            let last = summary.as_ref().map_or(0, |s| s.last_sequence);
            let sequence = last + 1;
            let marker = Put::builder()
                .table_name(&self.table)
                .item("pk", s(thread(user, with)))
                .item("sk", s(format!("id#{}", message.id)))
                .item("sequence", n(sequence))
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            let update = Update::builder()
                .table_name(&self.table)
                .key("pk", s(format!("user#{user}")))
                .key("sk", s(format!("with#{}", with.as_str())))
                .update_expression(
                    "SET last_sequence = :sequence, last_text = :text, last_at = :at, read_up_to = if_not_exists(read_up_to, :zero)",
                )
                .condition_expression("attribute_not_exists(pk) OR last_sequence = :last")
                .expression_attribute_values(":sequence", n(sequence))
                .expression_attribute_values(":last", n(last))
                .expression_attribute_values(":text", s(&message.text))
                .expression_attribute_values(":at", n(at))
                .expression_attribute_values(":zero", n(0))
                .build()?;
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", s(thread(user, with)))
                .item("sk", s(format!("message#{sequence:020}")))
                .item("id", s(&message.id))
                .item("kind", s(&message.kind))
                .item("text", s(&message.text))
                .item("data", s(message.data.to_string()))
                .item("at", n(at))
                .condition_expression("attribute_not_exists(pk)")
                .build()?;
            let items = vec![
                Write::put(MESSAGE_NEW, marker),
                Write::update("conversation.sequence_unchanged", update),
                Write::put("conversation.message_slot_free", put),
            ];
            match transact(&self.client, items).await {
                Ok(()) => return Ok(Some(sequence)),
                Err(e) if e.broke(MESSAGE_NEW) => return Ok(None),
                Err(TransactError::ConditionFailed(_)) => {
                    tokio::time::sleep(Duration::from_millis(2 + u64::from(attempt) * 3)).await;
                }
                Err(TransactError::Store(e)) => return Err(e),
            }
        }
        Err(StoreError::new("the conversation kept changing; the message was not posted"))
    }

    /// `post`, answering the message's sequence whether this call or an earlier one posted it.
    pub async fn post_once(
        &self,
        user: &str,
        with: &Counterparty,
        message: &NewMessage,
        at: i64,
    ) -> Result<u64, StoreError> {
        if let Some(sequence) = self.post(user, with, message, at).await? {
            return Ok(sequence);
        }
        let marker = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(thread(user, with)))
            .key("sk", s(format!("id#{}", message.id)))
            .consistent_read(true)
            .send()
            .await?;
        marker
            .item()
            .map(|item| get_n(item, "sequence"))
            .ok_or_else(|| StoreError::new("a posted message has no marker"))?
    }

    pub async fn summary(&self, user: &str, with: &Counterparty) -> Result<Option<Summary>, StoreError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("user#{user}")))
            .key("sk", s(format!("with#{}", with.as_str())))
            .consistent_read(true)
            .send()
            .await?;
        item.item().map(summary_from_item).transpose()
    }

    /// Every conversation of `user`.
    pub async fn summaries(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :with)")
            .expression_attribute_values(":pk", s(format!("user#{user}")))
            .expression_attribute_values(":with", s("with#"))
            // The unread counts as the last message left them (the home shows them).
            .consistent_read(true)
            .send()
            .await?;
        page.items().iter().map(summary_from_item).collect()
    }

    /// Messages newest first: `limit` of them before sequence `before` (exclusive).
    pub async fn messages(
        &self,
        user: &str,
        with: &Counterparty,
        before: Option<u64>,
        limit: i32,
    ) -> Result<Vec<Message>, StoreError> {
        let page = newest_before(&self.client, &self.table, thread(user, with), "message#", before, limit).await?;
        page.iter().map(message_from_item).collect()
    }

    /// Marks everything up to `up_to` read (never moves backwards). `false`: nothing that high.
    pub async fn mark_read(&self, user: &str, with: &Counterparty, up_to: u64) -> Result<bool, StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("user#{user}")))
            .key("sk", s(format!("with#{}", with.as_str())))
            .update_expression("SET read_up_to = :up_to")
            .condition_expression("last_sequence >= :up_to AND read_up_to < :up_to")
            .expression_attribute_values(":up_to", n(up_to))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(self.summary(user, with).await?.is_some_and(|s| s.last_sequence >= up_to))
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn summary_from_item(item: &Item) -> Result<Summary, StoreError> {
    let sk = get_s(item, "sk")?;
    let counterparty = sk
        .strip_prefix("with#")
        .and_then(Counterparty::parse)
        .ok_or_else(|| StoreError::new(format!("{sk} is not a conversation summary")))?;
    let last_sequence: u64 = get_n(item, "last_sequence")?;
    let read_up_to: u64 = get_n(item, "read_up_to")?;
    Ok(Summary {
        counterparty,
        last_sequence,
        read_up_to,
        unread: last_sequence.saturating_sub(read_up_to),
        last_text: get_s(item, "last_text")?.to_owned(),
        last_at: get_n(item, "last_at")?,
    })
}

fn message_from_item(item: &Item) -> Result<Message, StoreError> {
    let sk = get_s(item, "sk")?;
    Ok(Message {
        sequence: sk
            .strip_prefix("message#")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::new(format!("{sk} is not a message")))?,
        id: get_s(item, "id")?.to_owned(),
        kind: get_s(item, "kind")?.to_owned(),
        text: get_s(item, "text")?.to_owned(),
        data: serde_json::from_str(get_s(item, "data")?)
            .map_err(|e| StoreError::caused("a stored message's data is not JSON", e))?,
        at: get_n(item, "at")?,
    })
}
