//! Home: see `superpay::home::api` for the routes.

use superpay::home::api::HomeApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = HomeApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
