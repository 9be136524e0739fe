//! SQS event source mappings: polls each queue a function is subscribed to and invokes it with
//! batches, as Lambda's poller does. Successes are deleted; a reported `batchItemFailures` entry
//! (or a failed invocation) leaves its message to reappear after the visibility timeout, and the
//! queue's own redrive policy moves it to the dead-letter queue after `maxReceiveCount` receives.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use axum::body::Bytes;
use tokio::sync::watch;

use crate::runtime_api::{FunctionHost, Outcome};
use crate::template::{ACCOUNT, REGION, SqsSource};

pub struct Poller {
    pub client: aws_sdk_sqs::Client,
    pub host: Arc<FunctionHost>,
    pub source: SqsSource,
    pub queue_url: String,
    pub queue_name: String,
}

impl Poller {
    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = self.poll_once() => {}
                }
            }
        });
    }

    async fn poll_once(&self) {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.source.batch_size)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(output) => output.messages.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(queue = %self.queue_name, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "receive failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
        };
        if messages.is_empty() {
            return;
        }
        let event = self.event(&messages);
        let outcome = match serde_json::to_vec(&event) {
            Ok(bytes) => self.host.invoke(Bytes::from(bytes)).await,
            Err(e) => Outcome::Error(e.to_string()),
        };
        let ids: Vec<&str> = messages.iter().filter_map(|m| m.message_id()).collect();
        let failed = failed_ids(&outcome, &ids, self.source.report_batch_item_failures);
        if !failed.is_empty() {
            tracing::info!(function = %self.host.logical_id, queue = %self.queue_name, failed = failed.len(), of = ids.len(), "batch items failed");
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.message_id().is_some_and(|id| !failed.contains(id)))
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty()
            && let Err(e) =
                self.client.delete_message_batch().queue_url(&self.queue_url).set_entries(Some(entries)).send().await
        {
            tracing::warn!(queue = %self.queue_name, error = %aws_sdk_sqs::error::DisplayErrorContext(e), "delete failed; messages will be redelivered");
        }
    }

    fn event(&self, messages: &[Message]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id().map(str::to_owned);
                record.receipt_handle = m.receipt_handle().map(str::to_owned);
                record.body = m.body().map(str::to_owned);
                record.md5_of_body = m.md5_of_body().map(str::to_owned);
                record.md5_of_message_attributes = m.md5_of_message_attributes().map(str::to_owned);
                record.message_attributes = m
                    .message_attributes()
                    .map(|attributes| {
                        attributes
                            .iter()
                            .map(|(name, value)| {
                                let mut attribute = SqsMessageAttribute::default();
                                attribute.data_type = Some(value.data_type().to_owned());
                                attribute.string_value = value.string_value().map(str::to_owned);
                                attribute.binary_value = value.binary_value().map(|b| {
                                    let mut data = Base64Data::default();
                                    data.extend_from_slice(b.as_ref());
                                    data
                                });
                                (name.clone(), attribute)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                record.attributes = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect())
                    .unwrap_or_default();
                record.event_source = Some("aws:sqs".into());
                record.event_source_arn = Some(format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{}", self.queue_name));
                record.aws_region = Some(REGION.into());
                record
            })
            .collect();
        event
    }
}

/// The messages to keep (not delete) after an invocation, as Lambda decides it: everything when the
/// invocation failed or its answer is not a valid batch response naming only this batch's messages.
pub fn failed_ids(outcome: &Outcome, batch: &[&str], report_batch_item_failures: bool) -> HashSet<String> {
    let everything = || batch.iter().map(|s| (*s).to_owned()).collect();
    let Outcome::Response(output) = outcome else { return everything() };
    if !report_batch_item_failures {
        return HashSet::new();
    }
    // An empty answer, `null`, `{}` or an empty or null list: the whole batch succeeded.
    let failures = match serde_json::from_slice::<serde_json::Value>(output) {
        _ if output.is_empty() => return HashSet::new(),
        Ok(serde_json::Value::Null) => return HashSet::new(),
        Ok(serde_json::Value::Object(response)) => match response.get("batchItemFailures") {
            None | Some(serde_json::Value::Null) => return HashSet::new(),
            Some(serde_json::Value::Array(failures)) => failures.clone(),
            Some(_) => return everything(),
        },
        _ => return everything(),
    };
    let mut failed = HashSet::new();
    for failure in failures {
        // An entry without a valid id of this batch fails the whole batch, as Lambda does.
        match failure.get("itemIdentifier").and_then(serde_json::Value::as_str) {
            Some(id) if batch.contains(&id) => failed.insert(id.to_owned()),
            _ => return everything(),
        };
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_batch_failures_follow_lambda() {
        let batch = ["a", "b", "c"];
        let response = |json: &str| Outcome::Response(Bytes::from(json.to_owned()));
        let ids = |set: HashSet<String>| {
            let mut v: Vec<String> = set.into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(
            ids(failed_ids(&response(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#), &batch, true)),
            ["b"]
        );
        assert!(failed_ids(&response(r#"{"batchItemFailures":[]}"#), &batch, true).is_empty());
        assert!(failed_ids(&response("null"), &batch, true).is_empty());
        assert!(failed_ids(&response("{}"), &batch, true).is_empty());
        assert!(failed_ids(&response(r#"{"batchItemFailures":null}"#), &batch, true).is_empty());
        assert!(failed_ids(&response(""), &batch, true).is_empty());
        assert_eq!(failed_ids(&response(r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#), &batch, true).len(), 3);
        // An identifier from outside the batch, or garbage: the whole batch failed.
        assert_eq!(failed_ids(&response(r#"{"batchItemFailures":[{"itemIdentifier":"z"}]}"#), &batch, true).len(), 3);
        assert_eq!(failed_ids(&response("[1]"), &batch, true).len(), 3);
        // Without ReportBatchItemFailures the response is not read.
        assert!(failed_ids(&response(r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#), &batch, false).is_empty());
        assert_eq!(failed_ids(&Outcome::Error("boom".into()), &batch, true).len(), 3);
        assert_eq!(failed_ids(&Outcome::TimedOut, &batch, false).len(), 3);
    }
}
