//! AWS clients from the environment. Endpoints come from the SDK's own service-specific settings
//! (`AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_SQS`, ...), so the same binary talks to AWS when
//! deployed and to the local emulators in development, with no endpoint plumbing of ours.

use std::sync::atomic::{AtomicBool, Ordering};

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

/// Whether this process has answered an invocation. Until then (its cold start's first event) the
/// calls `join_warm!` and `try_join_warm!` are given go one after another, over the one TLS
/// connection the first opens: calls made at once each open their own, and a handshake costs CPU a
/// 128 MB function has little of (docs/decisions.md, "A cold start's calls one at a time").
static WARM: AtomicBool = AtomicBool::new(false);

pub fn warm() -> bool {
    WARM.load(Ordering::Relaxed)
}

/// Called once the process has answered an invocation (`http::run`).
pub fn answered() {
    WARM.store(true, Ordering::Relaxed);
}

/// `tokio::join!` in a warm process; in turn on its first event (`warm`).
#[macro_export]
macro_rules! join_warm {
    ($($future:expr),+ $(,)?) => {
        if $crate::aws::warm() { tokio::join!($($future),+) } else { ($($future.await,)+) }
    };
}

/// `tokio::try_join!` in a warm process; in turn on its first event (`warm`), stopping at the first
/// error as it does.
#[macro_export]
macro_rules! try_join_warm {
    ($($future:expr),+ $(,)?) => {
        if $crate::aws::warm() {
            tokio::try_join!($($future),+)
        } else {
            // No `?`: the error is each future's own, unconverted, as `try_join!` requires.
            async { Ok(($(match $future.await { Ok(value) => value, Err(e) => return Err(e) },)+)) }.await
        }
    };
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    // Nothing in the unit tests answers an invocation, so the process stays cold.
    #[tokio::test]
    async fn a_cold_process_makes_its_calls_in_turn_and_stops_at_the_first_error() {
        let seen = Mutex::new(vec![]);
        let call = |n: u32, fails: bool| {
            let seen = &seen;
            async move {
                seen.lock().unwrap().push(n);
                tokio::task::yield_now().await;
                seen.lock().unwrap().push(n * 10);
                if fails { Err(n) } else { Ok(n) }
            }
        };
        assert_eq!(crate::join_warm!(call(1, false), call(2, true)), (Ok(1), Err(2)));
        assert_eq!(*seen.lock().unwrap(), [1, 10, 2, 20], "each call ends before the next starts");
        seen.lock().unwrap().clear();
        let joined: Result<(u32, u32, u32), u32> = crate::try_join_warm!(call(1, false), call(2, true), call(3, false));
        assert_eq!(joined, Err(2));
        assert_eq!(*seen.lock().unwrap(), [1, 10, 2, 20], "nothing after the first error");
    }
}
