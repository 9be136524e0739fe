//! The authenticated caller, as API Gateway's JWT authorizer hands it to the function.
//!
//! API Gateway has already checked the token's signature, issuer, audience, expiry and the route's
//! scopes before the function runs; the function only reads who the caller is.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::Problem;
use crate::problem::catalogue;

/// The scope that admin routes require (`AuthorizationScopes` in template.yaml).
pub const ADMIN_SCOPE: &str = "superpay/admin";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The JWT `sub` claim: the user's id on this platform.
    pub subject: String,
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn from_request(request: &Request) -> Result<Self, Problem> {
        let unauthenticated = || {
            Problem::new(
                catalogue::UNAUTHENTICATED,
                "the request carries no authenticated user (a JWT authorizer must run on this route)",
            )
        };
        let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
            return Err(unauthenticated());
        };
        let jwt = context.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).ok_or_else(unauthenticated)?;
        let subject = jwt.claims.get("sub").filter(|s| !s.is_empty()).ok_or_else(unauthenticated)?.clone();
        Ok(Caller { subject, scopes: jwt.scopes.clone().unwrap_or_default() })
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// API Gateway already enforces the admin routes' scope; this keeps a misconfigured route
    /// from ever running an admin action. Admin route tables take the [`Administrator`] it returns, so none
    /// can be reached without it.
    pub fn require_admin(&self) -> Result<Administrator, Problem> {
        if self.has_scope(ADMIN_SCOPE) {
            return Ok(Administrator(self.clone()));
        }
        Err(Problem::new(catalogue::FORBIDDEN, format!("this route needs the {ADMIN_SCOPE} scope")))
    }
}

/// A claim of the caller's token other than its subject (`name`), when the authorizer passed it.
pub fn claim(request: &Request, name: &str) -> Option<String> {
    let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else { return None };
    let jwt = context.authorizer.as_ref().and_then(|a| a.jwt.as_ref())?;
    jwt.claims.get(name).filter(|value| !value.is_empty()).cloned()
}

/// A caller proven to hold the admin scope: only [`Caller::require_admin`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Administrator(Caller);

impl std::ops::Deref for Administrator {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_with(event: serde_json::Value) -> Request {
        lambda_http::request::from_str(&event.to_string()).expect("a valid HTTP API v2 event")
    }

    fn event(authorizer: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "version": "2.0",
            "routeKey": "GET /config/{group}",
            "rawPath": "/config/home",
            "rawQueryString": "",
            "headers": {},
            "requestContext": {
                "http": {"method": "GET", "path": "/config/home", "protocol": "HTTP/1.1",
                          "sourceIp": "127.0.0.1", "userAgent": "t"},
                "requestId": "r1", "routeKey": "GET /config/{group}", "stage": "$default",
                "timeEpoch": 0, "authorizer": authorizer
            },
            "isBase64Encoded": false
        })
    }

    #[test]
    fn reads_subject_and_scopes_from_the_jwt_authorizer() {
        let req = request_with(event(serde_json::json!({
            "jwt": {"claims": {"sub": "user-1", "iss": "x"}, "scopes": ["superpay/admin"]}
        })));
        let caller = Caller::from_request(&req).unwrap();
        assert_eq!(caller.subject, "user-1");
        assert!(caller.has_scope(ADMIN_SCOPE));
        assert!(!caller.has_scope("other"));
    }

    #[test]
    fn only_a_caller_with_the_admin_scope_becomes_an_administrator() {
        let caller =
            |scopes: &[&str]| Caller { subject: "ops".into(), scopes: scopes.iter().map(|s| s.to_string()).collect() };
        let admin = caller(&["read", ADMIN_SCOPE]).require_admin().expect("an admin");
        assert_eq!(admin.subject, "ops");
        for scopes in [&[][..], &["read"], &["superpay/admin2"]] {
            let refused = caller(scopes).require_admin().expect_err("not an admin");
            assert_eq!(refused.status(), 403, "{scopes:?}");
        }
    }

    #[test]
    fn no_authorizer_or_no_subject_is_401() {
        for authorizer in [
            serde_json::Value::Null,
            serde_json::json!({"jwt": {"claims": {"iss": "x"}, "scopes": null}}),
            serde_json::json!({"jwt": {"claims": {"sub": ""}}}),
        ] {
            let err = Caller::from_request(&request_with(event(authorizer))).unwrap_err();
            assert_eq!((err.status().as_u16(), err.code), (401, "unauthenticated"));
        }
    }
}
