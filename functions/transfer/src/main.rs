//! Signed transfer instructions (capability 8), the transfer side (its own copy of the listings,
//! published by merchants, signed): see `superpay::instruction::api` for the routes.

use superpay::instruction::api::{ListingsApi, Side};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = ListingsApi::from_env(Side::Transfer, &superpay::aws::sdk_config().await)?;
    superpay::http::run(|request| api.handle(request)).await
}
