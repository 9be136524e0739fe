//! Merchant registry (capability 4): see `superpay::merchant::api` for the routes.

use superpay::merchant::api::MerchantsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = MerchantsApi::from_env().await?;
    superpay::http::run(|request| api.handle(request)).await
}
