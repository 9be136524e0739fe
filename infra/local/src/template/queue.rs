//! `AWS::SQS::Queue`: visibility timeout, retention, redrive policy and FIFO.

use serde_yaml::Value;

use super::model::{Queue, Redrive};
use super::resolver::Resolver;
use super::values::{check_properties, number, text};
use super::{TemplateError, invalid};

pub(super) fn read(id: &str, properties: &Value, resolver: &Resolver) -> Result<Queue, TemplateError> {
    check_properties(
        id,
        properties,
        &["VisibilityTimeout", "MessageRetentionPeriod", "RedrivePolicy", "FifoQueue", "ContentBasedDeduplication"],
        &["SqsManagedSseEnabled", "Tags"],
    )?;
    let redrive = properties
        .get("RedrivePolicy")
        .map(|policy| {
            let arn =
                text(policy.get("deadLetterTargetArn").unwrap_or(&Value::Null), &format!("{id} deadLetterTargetArn"))?;
            let dead_letter_queue =
                resolver.queue_with_arn(&arn, &format!("{id}.RedrivePolicy.deadLetterTargetArn"))?;
            Ok::<_, TemplateError>(Redrive {
                dead_letter_queue,
                max_receive_count: number(policy.get("maxReceiveCount"), "maxReceiveCount")?
                    .ok_or_else(|| invalid(format!("{id}: RedrivePolicy needs maxReceiveCount")))?,
            })
        })
        .transpose()?;
    Ok(Queue {
        logical_id: id.to_owned(),
        name: resolver.queue_name(id),
        fifo: properties.get("FifoQueue").and_then(Value::as_bool).unwrap_or(false),
        content_based_deduplication: properties
            .get("ContentBasedDeduplication")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        visibility_timeout: number(properties.get("VisibilityTimeout"), &format!("{id}.VisibilityTimeout"))?,
        message_retention: number(properties.get("MessageRetentionPeriod"), &format!("{id}.MessageRetentionPeriod"))?,
        redrive,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{base, refused};
    use super::Redrive;

    #[test]
    fn reads_fifo_visibility_and_redrive() {
        let t = base();
        let work = t.queue("Work").unwrap();
        assert_eq!((work.fifo, work.visibility_timeout), (true, Some(30)));
        assert_eq!(work.redrive, Some(Redrive { dead_letter_queue: "Dead".into(), max_receive_count: 3 }));
    }

    #[test]
    fn refuses_other_properties_by_name() {
        assert!(
            refused(
                "Work:\n    Type: AWS::SQS::Queue\n    Properties:\n",
                "Work:\n    Type: AWS::SQS::Queue\n    Properties:\n      DelaySeconds: 5\n"
            )
            .contains("DelaySeconds")
        );
    }
}
