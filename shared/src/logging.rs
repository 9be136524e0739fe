//! JSON logs through `tracing`, one line per event, carrying the Lambda request id.

/// Installs the JSON subscriber once, at cold start. `RUST_LOG` overrides the level (default info).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        // At trace the runtime logs every raw event, request bodies (card numbers) included: never.
        .add_directive("lambda_runtime=info".parse().expect("a valid directive"))
        .add_directive("lambda_http=info".parse().expect("a valid directive"));
    // The runtime opens a span per invocation holding `requestId`; `with_current_span` prints it.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_writer(std::io::stdout)
        .try_init();
}
