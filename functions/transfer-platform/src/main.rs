//! Signed transfer instructions (capability 8), the transfer platform (listings published by
//! merchants, signed; instructions priced and signed for users): see `superpay::instruction::api`
//! and `superpay::instruction::platform_api` for the routes.

use superpay::instruction::api::{ListingsApi, Side};
use superpay::instruction::platform_api::InstructionsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    // One SDK config for both route tables: loaded once at cold start.
    let config = superpay::aws::sdk_config().await;
    let (listings, instructions) =
        (ListingsApi::from_env(Side::Platform, &config)?, InstructionsApi::from_env(&config)?);
    let (listings, instructions) = (&listings, &instructions);
    superpay::flows::control::serve(|request| async move {
        match superpay::http::route_key(&request) {
            "POST /platform/instructions" => instructions.handle(request).await,
            _ => listings.handle(request).await,
        }
    })
    .await
}
