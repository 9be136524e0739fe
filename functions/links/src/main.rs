//! Identity linking (capability 9): see `superpay::instrument::link::api` (the user's routes) and
//! `superpay::instrument::link::partner_api` (the partner's signed routes).

use superpay::instrument::link::api::LinksApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = LinksApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
