//! Signed transfer instructions (capability 8), the transfer side (its own copy of the listings,
//! published by merchants' transfer signers; the operations that carry users' instructions out):
//! see `superpay::instruction::api` and `superpay::instruction::operations_api` for the routes.

use superpay::instruction::api::{ListingsApi, Side};
use superpay::instruction::operations_api::OperationsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    // One SDK config for both route tables: loaded once at cold start.
    let config = superpay::aws::sdk_config().await;
    let (listings, operations) = (ListingsApi::from_env(Side::Transfer, &config)?, OperationsApi::from_env(&config)?);
    let (listings, operations) = (&listings, &operations);
    superpay::http::run(|request| async move {
        match superpay::http::route_key(&request) {
            "POST /transfer/operations" | "GET /transfer/operations/{id}" => operations.handle(request).await,
            _ => listings.handle(request).await,
        }
    })
    .await
}
