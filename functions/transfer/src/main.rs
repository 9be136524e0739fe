//! Signed transfer instructions (capability 8), the transfer side (its own copy of the listings,
//! published by merchants' transfer signers; the operations that carry users' instructions out):
//! see `superpay::instruction::api`, `superpay::instruction::operations_api`,
//! `superpay::instruction::provider_api` and `superpay::instruction::admin` for the routes.

use superpay::instruction::admin::TransferAdminApi;
use superpay::instruction::api::{ListingsApi, Side};
use superpay::instruction::operations_api::OperationsApi;
use superpay::instruction::provider_api::ProviderApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    // One SDK config for the four route tables: loaded once at cold start.
    let config = superpay::aws::sdk_config().await;
    let (listings, operations, provider, admin) = (
        ListingsApi::from_env(Side::Transfer, &config)?,
        OperationsApi::from_env(&config)?,
        ProviderApi::from_env(&config)?,
        TransferAdminApi::from_env(&config)?,
    );
    let (listings, operations, provider, admin) = (&listings, &operations, &provider, &admin);
    superpay::flows::control::serve(|request| async move {
        match superpay::http::route_key(&request) {
            "POST /transfer/operations" | "GET /transfer/operations/{id}" => operations.handle(request).await,
            "POST /transfer/operations/{id}/post"
            | "POST /transfer/operations/{id}/void"
            | "POST /transfer/operations/{id}/refunds" => provider.handle(request).await,
            "PUT /transfer/thresholds/{user}" | "POST /transfer/listings/{id}/unfreeze" => admin.handle(request).await,
            _ => listings.handle(request).await,
        }
    })
    .await
}
