//! Config diffing (capability 3): see `superpay::config::api` for the routes.

use superpay::config::api::ConfigApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = ConfigApi::from_env().await?;
    superpay::http::run(|request| api.handle(request)).await
}
