//! The API's OpenAPI document (`superpay::openapi`) over the routes template.yaml declares, with
//! the signed calls we make to partners as its webhooks: served by the local stack at
//! `/openapi.json` and committed as `docs/openapi.json`, which a test keeps current
//! (`UPDATE_OPENAPI=1` rewrites it).

use serde_json::Value;
use superpay::openapi::{RouteDoc, TemplateRoute, WebhookDoc};

use crate::template::{RouteAuth, Template};

/// Every capability's route documentation, each kept beside its routes.
fn route_docs() -> Vec<&'static RouteDoc> {
    [
        superpay::home::api::ROUTES,
        superpay::ledger::api::ROUTES,
        superpay::conversation::api::ROUTES,
        superpay::offline::api::ROUTES,
        superpay::offline::payments_api::ROUTES,
        superpay::offline::topup_api::ROUTES,
        superpay::purchase::api::ROUTES,
        superpay::config::api::ROUTES,
        superpay::flows::api::ROUTES,
        superpay::payment_session::api::ROUTES,
        superpay::merchant::api::ROUTES,
        superpay::miniapp::admin::ROUTES,
        superpay::miniapp::api::ROUTES,
        superpay::instrument::api::ROUTES,
        superpay::instrument::cash::api::ROUTES,
        superpay::instrument::partner_admin::ROUTES,
        superpay::instrument::link::api::ROUTES,
        superpay::instrument::link::partner_api::ROUTES,
        superpay::instruction::api::ROUTES,
        superpay::instruction::platform_api::ROUTES,
        superpay::instruction::operations_api::ROUTES,
        superpay::instruction::provider_api::ROUTES,
        superpay::instruction::admin::ROUTES,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Every signed call we make to a partner, each kept beside the code that sends it.
fn webhook_docs() -> Vec<&'static WebhookDoc> {
    [
        superpay::purchase::relay::WEBHOOKS,
        superpay::purchase::notices::WEBHOOKS,
        superpay::instruction::notices::WEBHOOKS,
        superpay::offline::notices::WEBHOOKS,
        superpay::instrument::link::notices::WEBHOOKS,
        superpay::miniapp::relay::WEBHOOKS,
        superpay::bank::WEBHOOKS,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The document of `template`'s routes and of our webhooks.
pub fn document(template: &Template) -> Result<Value, String> {
    let routes: Vec<TemplateRoute> = template
        .functions
        .iter()
        .flat_map(|f| &f.routes)
        .map(|r| TemplateRoute {
            method: r.method.clone(),
            path: r.path.clone(),
            scopes: match &r.auth {
                RouteAuth::Open => None,
                RouteAuth::Jwt { scopes, .. } => Some(scopes.clone()),
            },
        })
        .collect();
    superpay::openapi::document(&routes, &route_docs(), &webhook_docs(), env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_the_committed_document_is_current() {
        let document = document(&crate::template::tests::project_template()).unwrap();
        let text = serde_json::to_string_pretty(&document).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(committed == text, "docs/openapi.json is stale: UPDATE_OPENAPI=1 cargo test -p superpay-local openapi");
        assert_eq!(document["openapi"], "3.1.0");
        assert!(document["paths"]["/home"]["get"]["security"].is_array());
        // The home is revalidated: its answers carry their ETag, its request the client's facts.
        let home = &document["paths"]["/home"]["get"];
        assert_eq!(home["responses"]["304"]["headers"]["ETag"]["required"], true);
        assert_eq!(home["parameters"][1]["name"], "X-Superpay-Platform");
        // A webhook is a signed post of the body the notifier writes.
        let settled = &document["webhooks"]["order.settled"]["post"];
        let headers: Vec<&str> =
            settled["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(headers, ["x-superpay-key-id", "x-superpay-timestamp", "x-superpay-nonce", "x-superpay-signature"]);
        let body = &settled["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(body, "#/components/schemas/OrderSettledWebhook");
        let properties = &document["components"]["schemas"]["OrderSettledWebhook"]["properties"];
        assert_eq!(properties["kind"]["enum"], serde_json::json!(["order.settled"]));
        assert!(properties["order"]["$ref"].is_string() && properties["event_id"].is_object());
    }
}
