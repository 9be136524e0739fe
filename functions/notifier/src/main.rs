//! Notifier: see `superpay::notifier` for what it does with each event.

use lambda_runtime::{LambdaEvent, service_fn};
use superpay::notifier::Notifier;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    superpay::logging::init();
    let notifier = Notifier::from_env().await?;
    let notifier = &notifier;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        notifier.handle(event.payload).await
    }))
    .await
}
