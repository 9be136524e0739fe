//! Settlement of offline payments (capability 6): see `superpay::offline::settlement`.

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use superpay::offline::settlement::Settlement;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    superpay::logging::init();
    let settlement = Settlement::from_env().await?;
    let settlement = &settlement;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(settlement.handle(event.payload).await)
    }))
    .await
}
