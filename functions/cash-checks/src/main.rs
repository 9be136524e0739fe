//! Cash checks (capability 9): see `superpay::instrument::cash::checks`.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use superpay::instrument::cash::checks::CashChecks;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    superpay::logging::init();
    let checks = CashChecks::from_env().await?;
    let checks = &checks;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(checks.handle(event.payload).await)
    }))
    .await
}
