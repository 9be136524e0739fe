//! The one way a queue-triggered function consumes an SQS batch (the model is Powertools' batch
//! utility, which Rust lacks). For each message, concurrently, in a tracing span carrying its SQS
//! id, its `kind` and its outbox id:
//!
//! 1. its body is parsed into the queue's message type (`crate::queues`);
//! 2. a message whose outbox item is gone was handled already (a duplicate delivery): it is done;
//! 3. otherwise the consumer's handler runs, and ends it one of three ways:
//!    - done;
//!    - [`Failure::Retry`] (transient: a store, a partner, a state still changing): reported in
//!      `batchItemFailures`, so SQS delivers it again (after a growing wait, with [`Backoff`]),
//!      until the queue's `maxReceiveCount` moves it to the dead-letter queue;
//!    - [`Failure::Poison`] (can never succeed: an unparseable body, an unknown reference): sent at
//!      once to the dead-letter queue, unchanged, with its reason as attributes (SQS cannot move a
//!      message), its outbox item marked dead so the sweeper does not send it again, and reported
//!      done. If that send fails it is retried instead, so it is never lost.
//!
//! Handlers stay idempotent by the message's outbox id, and delete its outbox item when done.

use std::future::Future;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde::Deserialize;
use tracing::Instrument;

use crate::aws::{self, MissingEnv};
use crate::clock::now_epoch_seconds;
use crate::dynamo::StoreError;
use crate::outbox::Outbox;

/// A queue's message type.
pub trait QueueMessage: Sized {
    /// What the message is, in a reason: "not a notification: ...".
    const WHAT: &'static str;
    fn parse(body: &str) -> Result<Self, serde_json::Error>;
    /// Its outbox id: the handler's idempotency key.
    fn id(&self) -> &str;
}

/// Why a message was not handled, and so what becomes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// It may work on a later delivery.
    Retry(String),
    /// It never will: straight to the dead-letter queue.
    Poison(String),
}

impl Failure {
    pub fn poison(reason: impl std::fmt::Display) -> Self {
        Failure::Poison(reason.to_string())
    }

    pub fn reason(&self) -> &str {
        match self {
            Failure::Retry(reason) | Failure::Poison(reason) => reason,
        }
    }
}

/// A store that failed may answer next time. (No blanket conversion from every error: a domain
/// error says itself which of its cases are poison, with its own `From`.)
impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Retry(e.to_string())
    }
}

/// A partner's or a state's refusal, as its text: transient.
impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Failure::Retry(reason)
    }
}

/// Waits longer before each new delivery of a retried message: `base`, 2 x base, 4 x base ... at
/// most 15 minutes (the visibility timeout's change is the only delay SQS offers a received message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_seconds: i32,
}

impl Backoff {
    /// The wait after the `receive_count`-th delivery failed.
    pub fn delay(self, receive_count: u32) -> i32 {
        self.base_seconds.saturating_mul(1 << receive_count.saturating_sub(1).min(10)).min(900)
    }
}

/// A consumer of one queue.
pub struct Batch {
    outbox: Outbox,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_queue: String,
    backoff: Option<Backoff>,
}

/// What any of our bodies says of itself, read even from one its queue's type does not parse (a
/// kind unknown to this consumer, a field missing), for the span and the dead letter.
#[derive(Default, Deserialize)]
struct Envelope {
    kind: Option<String>,
    id: Option<String>,
}

impl Batch {
    /// The queue's URL and its dead-letter queue's from `queue_env` and `DEAD_LETTER_QUEUE_URL`.
    pub fn from_env(
        outbox: Outbox,
        sqs: aws_sdk_sqs::Client,
        queue_env: &str,
        backoff: Option<Backoff>,
    ) -> Result<Self, MissingEnv> {
        Ok(Batch {
            outbox,
            sqs,
            queue_url: aws::env(queue_env)?,
            dead_letter_queue: aws::env("DEAD_LETTER_QUEUE_URL")?,
            backoff,
        })
    }

    /// The batch's messages run concurrently: one slow partner must not time the whole batch out
    /// (which would deliver every message in it again).
    pub async fn run<M, F, Fut>(&self, event: SqsEvent, handle: F) -> SqsBatchResponse
    where
        M: QueueMessage,
        F: Fn(M) -> Fut,
        Fut: Future<Output = Result<(), Failure>>,
    {
        let handle = &handle;
        let failed = futures_util::future::join_all(event.records.into_iter().map(|record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or_default();
            let Envelope { kind, id: outbox_id } = serde_json::from_str(body).unwrap_or_default();
            let span = tracing::info_span!("message", message_id = %id, kind = kind.as_deref(),
                outbox_id = outbox_id.as_deref());
            let record = &record;
            let done = async move {
                let outcome = match M::parse(body) {
                    Err(e) => Err(Failure::Poison(format!("not a {}: {e}", M::WHAT))),
                    Ok(message) => match self.outbox.pending(message.id()).await {
                        // Its outbox item is gone: handled already.
                        Ok(false) => Ok(()),
                        Ok(true) => handle(message).await,
                        Err(e) => Err(e.into()),
                    },
                };
                match outcome {
                    Ok(()) => true,
                    Err(failure) => self.failed(record, kind, outbox_id, failure).await,
                }
            }
            .instrument(span)
            .await;
            (!done).then_some(id)
        }))
        .await;
        let mut response = SqsBatchResponse::default();
        for id in failed.into_iter().flatten() {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// What becomes of a failed message; whether it is done with (poison sent to the dead letters).
    async fn failed(
        &self,
        record: &SqsMessage,
        kind: Option<String>,
        outbox_id: Option<String>,
        failure: Failure,
    ) -> bool {
        let receive_count: u32 =
            record.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
        if let Failure::Poison(reason) = &failure {
            match self.dead_letter(record, kind, outbox_id.as_deref(), reason, receive_count).await {
                Ok(()) => {
                    tracing::error!(%reason, queue = %self.dead_letter_queue, "poison message moved to the dead-letter queue");
                    return true;
                }
                Err(e) => {
                    tracing::warn!(%reason, error = %e, "poison message could not be dead-lettered; SQS will deliver it again")
                }
            }
        } else {
            tracing::warn!(reason = failure.reason(), receive_count, "message failed; SQS will deliver it again");
            if let Some(backoff) = self.backoff {
                self.back_off(record, backoff.delay(receive_count)).await;
            }
        }
        false
    }

    async fn dead_letter(
        &self,
        record: &SqsMessage,
        kind: Option<String>,
        outbox_id: Option<&str>,
        reason: &str,
        receive_count: u32,
    ) -> Result<(), StoreError> {
        let mut texts =
            vec![("reason", reason.to_owned()), ("message_id", record.message_id.clone().unwrap_or_default())];
        texts.extend(kind.map(|kind| ("kind", kind)));
        texts.extend(outbox_id.map(|id| ("outbox_id", id.to_owned())));
        let body = record.body.as_deref().unwrap_or_default();
        self.outbox
            .send_dead_letter(&self.dead_letter_queue, body, &texts, &[("receive_count", i64::from(receive_count))])
            .await?;
        // The dead letter is sent: delivering the message again would only send copies. An item
        // left live is sent again by the sweeper, and that delivery marks it.
        if let Some(id) = outbox_id
            && let Err(e) = self.outbox.poisoned(id, reason, now_epoch_seconds()).await
        {
            tracing::warn!(error = %e, "the poison's outbox item could not be marked dead");
        }
        Ok(())
    }

    async fn back_off(&self, record: &SqsMessage, delay: i32) {
        let Some(receipt) = &record.receipt_handle else { return };
        let changed = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(delay)
            .send()
            .await;
        if let Err(e) = changed {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "backoff not set; SQS delivers it after its visibility timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_retry_waits_twice_as_long_up_to_fifteen_minutes() {
        let backoff = Backoff { base_seconds: 5 };
        let delays: Vec<i32> = (1..=10).map(|count| backoff.delay(count)).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]);
        assert_eq!(backoff.delay(0), 5, "a missing count counts as the first delivery");
        assert_eq!(backoff.delay(u32::MAX), 900);
        assert_eq!(Backoff { base_seconds: i32::MAX }.delay(3), 900, "no overflow");
    }

    #[test]
    fn errors_are_retried_unless_named_poison() {
        let store = StoreError::new("throttled");
        assert_eq!(Failure::from(store), Failure::Retry("throttled".into()));
        assert_eq!(Failure::from("busy".to_owned()), Failure::Retry("busy".into()));
        assert_eq!(Failure::poison("unknown order"), Failure::Poison("unknown order".into()));
        assert_eq!(Failure::poison("x").reason(), "x");
    }
}
