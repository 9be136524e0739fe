//! Payment sessions (capability 1): see `superpay::payment_session::api` for the routes.

use superpay::payment_session::api::PaymentSessionsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = PaymentSessionsApi::from_env().await?;
    superpay::flows::control::serve_with(api.control(), |request| api.handle(request)).await
}
