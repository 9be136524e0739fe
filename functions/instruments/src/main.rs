//! Payment instruments (capability 9): see `superpay::instrument::api` for the routes.

use superpay::instrument::api::InstrumentsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = InstrumentsApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
