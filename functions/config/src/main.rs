//! Config: see `superpay::config::api` for the routes. The groups that hold rules are validated by
//! their own modules at publish.

use superpay::config::api::ConfigApi;
use superpay::payment_session::policy;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let api = ConfigApi::from_env()
        .await?
        .validating(superpay::flows::GROUP, superpay::flows::validate_group)
        .validating(policy::GROUP, policy::validate_group)
        .validating(superpay::home::announcements::GROUP, superpay::home::announcements::validate_group);
    superpay::flows::control::serve(|request| api.handle(request)).await
}
