//! Wallet: see `superpay::ledger::api` for the routes.

use superpay::ledger::api::WalletApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = WalletApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
