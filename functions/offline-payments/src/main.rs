//! Offline payments presented by terminals (capability 6): see `superpay::offline::payments_api`.

use superpay::offline::payments_api::OfflinePaymentsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = OfflinePaymentsApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
