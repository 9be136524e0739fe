//! Mini-apps (capability 2): see `superpay::miniapp::api` for the routes.

use superpay::miniapp::api::MiniAppsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = MiniAppsApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
