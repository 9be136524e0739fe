//! Flows (capability 7): see `superpay::flows::api` for the routes.

use superpay::flows::api::FlowsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = FlowsApi::from_env().await?;
    superpay::flows::control::serve_with(api.control(), |request| api.handle(request)).await
}
