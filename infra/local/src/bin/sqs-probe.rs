//! A Lambda function used only by the runner's own tests: it succeeds on every SQS message except
//! those whose body is `poison`, which it reports as batch item failures. It prints one line per
//! message so the test can count deliveries.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let mut response = SqsBatchResponse::default();
        for record in event.payload.records {
            let body = record.body.unwrap_or_default();
            if body == "poison" {
                println!("failed {body}");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.unwrap_or_default();
                response.batch_item_failures.push(failure);
            } else {
                println!("processed {body}");
            }
        }
        Ok::<_, Error>(response)
    }))
    .await
}
