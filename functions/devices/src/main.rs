//! Device enrollment (capability 6): see `superpay::offline::api` for the routes.

use superpay::offline::api::DevicesApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = DevicesApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
