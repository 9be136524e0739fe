//! Purchase relay (capability 4): see `superpay::purchase::api` for the routes.

use superpay::purchase::api::PurchasesApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = PurchasesApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
