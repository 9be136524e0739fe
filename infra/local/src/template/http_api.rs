//! `AWS::Serverless::HttpApi`: the one API, its JWT authorizers and the routes its `RouteSettings`
//! throttle (deploy-only: the local gateway does not throttle); and, once every function is read,
//! each route's authorizer.

use std::collections::HashSet;

use serde_yaml::Value;

use super::model::{JwtAuthorizer, Route, RouteAuth, Template};
use super::values::{check_properties, scalar, text};
use super::{TemplateError, invalid};

pub(super) fn read(id: &str, properties: &Value, template: &mut Template) -> Result<(), TemplateError> {
    if template.http_api.replace(id.to_owned()).is_some() {
        return Err(TemplateError::Unsupported(format!("a second HttpApi {id}"), "one AWS::Serverless::HttpApi"));
    }
    check_properties(
        id,
        properties,
        &["Auth", "Description"],
        &["StageName", "CorsConfiguration", "AccessLogSettings", "Tags", "DefaultRouteSettings", "RouteSettings"],
    )?;
    for (key, settings) in properties.get("RouteSettings").and_then(Value::as_mapping).into_iter().flatten() {
        let key = scalar(key)?;
        check_properties(
            &format!("{id} RouteSettings {key:?}"),
            settings,
            &[],
            &["ThrottlingRateLimit", "ThrottlingBurstLimit"],
        )?;
        if settings.get("ThrottlingRateLimit").is_some() {
            template.throttled_routes.insert(key);
        }
    }
    let Some(auth) = properties.get("Auth") else { return Ok(()) };
    for (name, authorizer) in auth.get("Authorizers").and_then(Value::as_mapping).into_iter().flatten() {
        let name = scalar(name)?;
        check_properties(&format!("{id} authorizer {name}"), authorizer, &["JwtConfiguration", "IdentitySource"], &[])?;
        let jwt = authorizer
            .get("JwtConfiguration")
            .ok_or_else(|| TemplateError::Unsupported(format!("{id} authorizer {name}"), "JWT authorizers"))?;
        let source =
            authorizer.get("IdentitySource").and_then(Value::as_str).unwrap_or("$request.header.Authorization");
        if source != "$request.header.Authorization" {
            return Err(TemplateError::Unsupported(
                format!("{id} authorizer {name} IdentitySource {source}"),
                "$request.header.Authorization",
            ));
        }
        template.authorizers.insert(
            name,
            JwtAuthorizer {
                issuer: text(jwt.get("issuer").unwrap_or(&Value::Null), "JwtConfiguration.issuer")?,
                audience: jwt
                    .get("audience")
                    .and_then(Value::as_sequence)
                    .ok_or_else(|| invalid("JwtConfiguration.audience must be a list"))?
                    .iter()
                    .map(scalar)
                    .collect::<Result<_, _>>()?,
            },
        );
    }
    template.default_authorizer = auth.get("DefaultAuthorizer").map(|d| text(d, "DefaultAuthorizer")).transpose()?;
    Ok(())
}

/// Once every function is read: routes without an Auth of their own take the API's
/// DefaultAuthorizer (or none), every authorizer named exists, and every `RouteSettings` key is a route.
pub(super) fn settle_routes(template: &mut Template) -> Result<(), TemplateError> {
    let default = template.default_authorizer.clone();
    for route in template.functions.iter_mut().flat_map(|f| f.routes.iter_mut()) {
        if let RouteAuth::Jwt { authorizer, .. } = &mut route.auth
            && authorizer.is_empty()
        {
            match &default {
                Some(d) => *authorizer = d.clone(),
                None => route.auth = RouteAuth::Open,
            }
        }
    }
    for function in &template.functions {
        for route in &function.routes {
            if let RouteAuth::Jwt { authorizer, .. } = &route.auth
                && !template.authorizers.contains_key(authorizer)
            {
                return Err(invalid(format!(
                    "{}: route {} names unknown authorizer {authorizer}",
                    function.logical_id,
                    route.key()
                )));
            }
        }
    }
    // API Gateway refuses the whole stage when a route setting names no route.
    let routes: HashSet<String> = template.functions.iter().flat_map(|f| f.routes.iter().map(Route::key)).collect();
    if let Some(unknown) = template.throttled_routes.iter().find(|r| !routes.contains(*r)) {
        return Err(invalid(format!("RouteSettings names {unknown:?}, which no HttpApi event declares")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::super::fixture::{base, refused};
    use super::{JwtAuthorizer, RouteAuth};

    #[test]
    fn reads_authorizers_and_throttled_routes_and_settles_default_auth() {
        let t = base();
        assert_eq!(t.authorizers["Jwt"], JwtAuthorizer { issuer: "http://iss/".into(), audience: vec!["aud".into()] });
        assert_eq!(t.throttled_routes, BTreeSet::from(["GET /open".to_owned()]));
        let route = &t.functions[0].routes[1];
        assert_eq!(
            (route.path.as_str(), &route.auth),
            ("/things/{id}", &RouteAuth::Jwt { authorizer: "Jwt".into(), scopes: vec![] })
        );
    }

    #[test]
    fn refuses_what_the_local_gateway_would_serve_differently() {
        assert!(
            refused("  Secrets:\n", "  Api2:\n    Type: AWS::Serverless::HttpApi\n  Secrets:\n")
                .contains("second HttpApi")
        );
        assert!(refused("Authorizer: Jwt,", "Authorizer: Other,").contains("unknown authorizer Other"));
        assert!(refused("\"GET /open\":", "\"GET /closed\":").contains("GET /closed"));
        assert!(refused("ThrottlingRateLimit: 5,", "DetailedMetricsEnabled: true,").contains("DetailedMetricsEnabled"));
    }
}
