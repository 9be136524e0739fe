//! Merchant registry (capability 4), the mini-app registry and the partner platforms: the routes of
//! `superpay::merchant::api`, then those of `superpay::miniapp::admin` and
//! `superpay::instrument::partner_admin`, all for admins.

use superpay::Problem;
use superpay::auth::Caller;
use superpay::instrument::partner_admin::PartnerAdmin;
use superpay::merchant::api::MerchantsApi;
use superpay::miniapp::admin::MiniAppAdmin;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    superpay::logging::init();
    let config = superpay::aws::sdk_config().await;
    // One set of clients and stores for both route tables.
    let admin = superpay::admin::Admin::from_env(&config)?;
    let merchants = MerchantsApi::from_env(admin.clone())?;
    let miniapps = MiniAppAdmin::from_env(admin.clone())?;
    let partners = PartnerAdmin::from_env(admin)?;
    let (merchants, miniapps, partners) = (&merchants, &miniapps, &partners);
    superpay::flows::control::serve(|request| async move {
        let admin = Caller::from_request(&request)?.require_admin()?;
        if let Some(answer) = merchants.route(&request, &admin).await {
            return answer;
        }
        if let Some(answer) = miniapps.route(&request, &admin).await {
            return answer;
        }
        partners.route(&request, &admin).await.unwrap_or_else(|| {
            let route = superpay::http::route_key(&request);
            Err(Problem::new(
                superpay::problem::catalogue::UNKNOWN_ROUTE,
                format!("the merchants function has no route {route:?}"),
            ))
        })
    })
    .await
}
