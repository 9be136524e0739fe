//! Top-up pages (capability 6): see `superpay::offline::topup_api`.

use superpay::offline::topup_api::TopUpApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = TopUpApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
