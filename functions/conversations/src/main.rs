//! Conversations: see `superpay::conversation::api` for the routes.

use superpay::conversation::api::ConversationsApi;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = ConversationsApi::from_env().await?;
    superpay::flows::control::serve(|request| api.handle(request)).await
}
