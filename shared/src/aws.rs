//! AWS clients from the environment. Endpoints come from the SDK's own service-specific settings
//! (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SQS`, ...), so the same binary talks to AWS when
//! deployed and to the local emulators in development, with no endpoint plumbing of ours.

use aws_config::BehaviorVersion;

/// Region, credentials, endpoints and one HTTPS client, loaded once per process; build every client
/// of a function from this. Left to itself the SDK gives each client its own HTTPS client, so a
/// client made after init (the error-flow table's, a config group's) opened a connection of its own
/// to an endpoint init's clients were already connected to: a TLS handshake more. With the one
/// client set here, every client of the process shares its connections.
pub async fn sdk_config() -> aws_config::SdkConfig {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    static CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> = tokio::sync::OnceCell::const_new();
    CONFIG
        .get_or_init(|| {
            let https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::AwsLc));
            aws_config::defaults(BehaviorVersion::latest()).http_client(https.build_https()).load()
        })
        .await
        .clone()
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
