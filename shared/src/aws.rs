//! AWS clients from the environment. Endpoints come from the SDK's own service-specific settings
//! (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SQS`, ...), so the same binary talks to AWS when
//! deployed and to the local emulators in development, with no endpoint plumbing of ours.

use aws_config::BehaviorVersion;

/// Region, credentials and endpoints, loaded once per process; build every client of a function
/// from this. Clients of one config share its HTTP connections, so a client made after init (the
/// error-flow table's) reuses what init's clients opened.
pub async fn sdk_config() -> aws_config::SdkConfig {
    static CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> = tokio::sync::OnceCell::const_new();
    CONFIG.get_or_init(|| aws_config::defaults(BehaviorVersion::latest()).load()).await.clone()
}

/// A required environment variable (table names, queue URLs) with an error that names it.
pub fn env(name: &str) -> Result<String, MissingEnv> {
    std::env::var(name).map_err(|_| MissingEnv(name.to_owned()))
}

/// A number of seconds from the function's environment (a TTL, a lockout, a window).
pub fn seconds(name: &str) -> Result<i64, MissingEnv> {
    env(name)?.parse().map_err(|_| MissingEnv(format!("{name} (a number of seconds)")))
}

#[derive(Debug, thiserror::Error)]
#[error("environment variable {0} is not set or not valid; template.yaml sets it for every function that needs it")]
pub struct MissingEnv(pub String);
