//! A function's events: `HttpApi` routes, `SQS` event sources and `Schedule` rates.

use serde_yaml::Value;

use super::model::{Route, RouteAuth, SqsSource};
use super::resolver::{Resolver, api_reference};
use super::values::{check_properties, number, scalar, text};
use super::{TemplateError, invalid};

/// An `HttpApi` event: one route. Its authorizer is settled by `super::http_api::settle_routes`.
pub(super) fn route(name: &str, props: &Value, resolver: &Resolver) -> Result<Route, TemplateError> {
    check_properties(name, props, &["ApiId", "Method", "Path", "Auth", "PayloadFormatVersion"], &[])?;
    if props.get("PayloadFormatVersion").is_some_and(|v| scalar(v).ok().as_deref() != Some("2.0")) {
        return Err(TemplateError::Unsupported(format!("{name}: payload format 1.0"), "payload format 2.0"));
    }
    let auth = match props.get("Auth") {
        Some(auth) if auth.get("Authorizer").and_then(Value::as_str) == Some("NONE") => RouteAuth::Open,
        Some(auth) => RouteAuth::Jwt {
            authorizer: auth.get("Authorizer").map(|a| text(a, "Auth.Authorizer")).transpose()?.unwrap_or_default(),
            scopes: auth
                .get("AuthorizationScopes")
                .and_then(Value::as_sequence)
                .map(|s| s.iter().map(scalar).collect::<Result<_, _>>())
                .transpose()?
                .unwrap_or_default(),
        },
        // Filled in with the API's DefaultAuthorizer once every resource is read.
        None => RouteAuth::Jwt { authorizer: String::new(), scopes: vec![] },
    };
    // Without ApiId, SAM puts the route on an implicit API that has none of this
    // template's authorizers: public when deployed. Refuse rather than differ.
    let api = props.get("ApiId").map(|a| text(a, &format!("{name}.ApiId"))).transpose()?;
    let names_the_api = |api: &str| {
        resolver.kinds.iter().any(|(id, kind)| *kind == "AWS::Serverless::HttpApi" && api == api_reference(id))
    };
    if !api.as_deref().is_some_and(names_the_api) {
        return Err(invalid(format!("{name}: ApiId must be !Ref of the template's AWS::Serverless::HttpApi")));
    }
    Ok(Route {
        method: text(props.get("Method").unwrap_or(&Value::Null), &format!("{name}.Method"))?.to_uppercase(),
        path: text(props.get("Path").unwrap_or(&Value::Null), &format!("{name}.Path"))?,
        auth,
    })
}

/// An `SQS` event: the queue it polls, or `None` when it is disabled.
pub(super) fn sqs_source(name: &str, props: &Value, resolver: &Resolver) -> Result<Option<SqsSource>, TemplateError> {
    check_properties(
        name,
        props,
        &["Queue", "BatchSize", "FunctionResponseTypes", "Enabled"],
        &["MaximumBatchingWindowInSeconds", "ScalingConfig"],
    )?;
    let queue_arn = text(props.get("Queue").unwrap_or(&Value::Null), &format!("{name}.Queue"))?;
    let queue = resolver.queue_with_arn(&queue_arn, &format!("{name}.Queue"))?;
    let responses: Vec<String> = props
        .get("FunctionResponseTypes")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().map(scalar).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default();
    if let Some(bad) = responses.iter().find(|r| *r != "ReportBatchItemFailures") {
        // Neither cfn-lint nor sam validate catches a misspelt value (docs/decisions.md,
        // "The template is read, not trusted").
        return Err(invalid(format!("{name}.FunctionResponseTypes: {bad:?} is not ReportBatchItemFailures")));
    }
    let batch_size = number(props.get("BatchSize"), &format!("{name}.BatchSize"))?.unwrap_or(10);
    if !(1..=10).contains(&batch_size) {
        return Err(TemplateError::Unsupported(format!("{name}.BatchSize {batch_size}"), "batches of 1 to 10"));
    }
    if props.get("Enabled").and_then(Value::as_bool) == Some(false) {
        return Ok(None);
    }
    Ok(Some(SqsSource { queue, batch_size: batch_size as i32, report_batch_item_failures: !responses.is_empty() }))
}

/// A `Schedule` event: its period in seconds, or `None` when it is disabled.
pub(super) fn schedule(name: &str, props: &Value) -> Result<Option<u64>, TemplateError> {
    check_properties(name, props, &["Schedule", "Enabled", "Description"], &["Name"])?;
    if props.get("Enabled").and_then(Value::as_bool) == Some(false) {
        return Ok(None);
    }
    let expression = text(props.get("Schedule").unwrap_or(&Value::Null), &format!("{name}.Schedule"))?;
    rate_seconds(&expression)
        .ok_or_else(|| {
            TemplateError::Unsupported(
                format!("{name}.Schedule {expression:?}"),
                "rate(N minute[s]|hour[s]|day[s]); locally also second[s]",
            )
        })
        .map(Some)
}

/// `rate(5 minutes)` in seconds. Seconds are a local-only unit, for a fast local parameter value.
fn rate_seconds(expression: &str) -> Option<u64> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (count, unit) = inner.trim().split_once(' ')?;
    let count: u64 = count.parse().ok().filter(|c| *c > 0)?;
    let unit = match unit.trim().trim_end_matches('s') {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "day" => 86400,
        _ => return None,
    };
    Some(count * unit)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{base, refused};
    use super::{RouteAuth, SqsSource};

    #[test]
    fn reads_routes_sqs_sources_and_schedules() {
        let t = base();
        let f = &t.functions[0];
        let auth: Vec<(&str, &RouteAuth)> = f.routes.iter().map(|r| (r.path.as_str(), &r.auth)).collect();
        assert_eq!(auth[0], ("/open", &RouteAuth::Open));
        assert_eq!(f.routes[0].method, "GET");
        assert_eq!(auth[2], ("/things", &RouteAuth::Jwt { authorizer: "Jwt".into(), scopes: vec!["admin".into()] }));
        assert_eq!(
            f.sqs_sources,
            vec![SqsSource { queue: "Work".into(), batch_size: 5, report_batch_item_failures: true }]
        );
        assert_eq!(f.schedules, vec![120]);
    }

    #[test]
    fn refuses_other_events_and_settings_by_name() {
        assert!(refused("ReportBatchItemFailures", "ReportBatchFailures").contains("ReportBatchFailures"));
        assert!(refused("Type: SQS", "Type: S3").contains("S3"));
        assert!(refused("rate(2 minutes)", "cron(0 12 * * ? *)").contains("cron"));
        assert!(refused("ApiId: !Ref Api, Method: GET", "Method: GET").contains("ApiId"));
    }
}
