//! Cash-ins and cash-outs (capability 9): see `superpay::instrument::cash::api` for the routes.

use superpay::instrument::cash::api::CashApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = CashApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
