//! Logging and distributed tracing, set up once per process.
//!
//! Spans are written with `tracing`; two layers consume them, each with its own filter:
//!
//! - the log layer (stderr, text or JSON) filtered by `RUST_LOG` (default
//!   [`DEFAULT_LOG_FILTER`]), whose lines carry the `trace_id` and `span_id` of the span
//!   they were logged in;
//! - the OpenTelemetry layer, installed only when an OTLP endpoint is configured
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT` and friends, see [`ExportSettings`]), filtered by
//!   `HOTEL_TRACE_FILTER` (default [`DEFAULT_TRACE_FILTER`]; see [`trace_filter`]) so
//!   that turning logs down never silences the spans Jaeger needs.
//!
//! Without an endpoint nothing is exported and no OpenTelemetry layer exists at all; a
//! tiny layer still gives every span W3C ids so logs, `x-trace-id` and `traceparent` keep
//! working. Trace context crosses processes as W3C `traceparent`/`tracestate`: servers
//! call [`set_parent_from`] (the axum [`server_span`] middleware does it), clients call
//! [`inject`] or [`inject_span`].
//!
//! Conventions for span fields (tracing-opentelemetry maps them): `otel.name` is the span
//! name, `otel.kind` is `server`/`client`, `otel.status_code = "ERROR"` marks a failure
//! and `otel.status_description` carries its message; [`record_error`] does both.

mod export;
mod format;
mod ids;
pub use ids::random_id;

pub use export::{ExportProtocol, ExportSettings};

use opentelemetry::{
    Context,
    propagation::TextMapPropagator,
    trace::{SpanContext, SpanId, Status, TraceContextExt, TraceId},
};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use std::{
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tracing::{Dispatch, Span, dispatcher::WeakDispatch};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt};

pub use tracing_subscriber::fmt::writer::BoxMakeWriter;

/// Which spans are exported when `HOTEL_TRACE_FILTER` is unset: everything at `info`.
pub const DEFAULT_TRACE_FILTER: &str = "info,sqlx=warn";

/// Appended to every span filter, the user's too: the transport crates' spans are never
/// exported, since the exporter's own HTTP/gRPC calls would otherwise trace themselves
/// in an endless loop.
const NEVER_EXPORTED: &str =
    "h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,reqwest=off,opentelemetry=off";

/// The span filter for `spec` (`tracing` filter syntax, as in `HOTEL_TRACE_FILTER`),
/// with the transport crates always off.
pub fn trace_filter(spec: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(format!("{spec},{NEVER_EXPORTED}")).map_err(|e| e.to_string())
}

/// The log filter when `RUST_LOG` is unset: our `info`, only the OpenTelemetry SDK's
/// warnings (a failed export, a full queue), and not the gateway's per-request span
/// ([`GATEWAY_REQUEST_TARGET`]).
/// (Targets match by prefix: `opentelemetry` covers `opentelemetry_sdk` and
/// `opentelemetry-otlp`.)
///
/// The request span is the one span the gateway makes for every request. Left to the
/// log layer it would have its fields formatted into a string at creation and at every
/// `record`, for every request, although at `info` no line is written inside a healthy
/// request; that was a quarter of the gateway's throughput. Left out, it is made only
/// when spans are exported (the OpenTelemetry layer has its own filter); otherwise the
/// request goes without a span (see [`request_span_wanted`]), its ids still name it in
/// `x-trace-id` and `traceparent`, and log lines written inside it still carry its
/// `trace_id`/`span_id` (see `format`); they only lose the `request{...}:` prefix.
/// `RUST_LOG=info` (or `hotel_gateway=info`) brings it back.
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn,hotel_gateway::request=warn";

/// The target of the gateway's per-request server span (see [`DEFAULT_LOG_FILTER`]).
/// Under `hotel_gateway`, so filters naming the gateway crate still cover it.
pub const GATEWAY_REQUEST_TARGET: &str = "hotel_gateway::request";

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
    /// The role: gateway, registry, customer, room or booking (`service.name`).
    pub role: String,
    /// The instance name, such as `room-2` (`service.instance.id`).
    pub instance: String,
}

/// Flushes and stops span export when dropped (or on [`TelemetryGuard::shutdown`]).
///
/// Keep it alive until the server has drained: spans still in the batch queue are sent
/// when it goes. Roles hold it in `run` so it drops after `serve` returns.
#[must_use = "dropping the guard flushes and stops telemetry"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes every queued span and stops the exporter (waits at most 5 s).
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || shutdown_provider(&provider)).await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        // The gRPC exporter needs the runtime's other threads while we wait for it, so
        // tell a multi-thread runtime that this thread blocks.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| shutdown_provider(&provider));
            }
            _ => shutdown_provider(&provider),
        }
    }
}

fn shutdown_provider(provider: &SdkTracerProvider) {
    if let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
        // The subscriber may already be gone; stderr is the one place left.
        eprintln!("telemetry: flushing spans on shutdown failed: {e}");
    }
}

/// The process's subscriber, when it exports spans: lets the log formatter read the
/// OpenTelemetry ids of a span from inside an event callback, where the thread's current
/// dispatcher is not reachable.
static EXPORTING_DISPATCH: OnceLock<WeakDispatch> = OnceLock::new();

/// Whether this process exports spans (an OTLP endpoint is configured and the exporter
/// started). Spans that only matter in a trace viewer can be skipped when it does not.
pub fn is_exporting() -> bool {
    EXPORTING_DISPATCH.get().is_some()
}

/// Whether the process's log filter shows the gateway's request span (set by
/// [`WatchRequestSpan`] when the span's callsite registers).
static REQUEST_SPAN_LOGGED: AtomicBool = AtomicBool::new(false);

/// Whether the gateway's edge should make its per-request span: when spans are exported,
/// or when the log filter shows it (`RUST_LOG=info`, see [`DEFAULT_LOG_FILTER`]).
/// Otherwise nothing would ever show the span, and the request goes without one: its ids
/// come from [`request_ids`] and its log lines take them from the request context (see
/// `format`). Registering and closing a span through every layer of the subscriber, with
/// an enter and an exit on every poll, cost about 4k instructions per request, 6 % of
/// the gateway's.
///
/// The answer is known once the span's callsite has registered (the edge creates one
/// span when it is built, see `hotel_gateway::edge::stack`).
pub fn request_span_wanted() -> bool {
    is_exporting() || REQUEST_SPAN_LOGGED.load(Ordering::Relaxed)
}

/// The log layer's filter, which also notes whether it lets the gateway's request span
/// through ([`request_span_wanted`]). Everything else is the inner filter's: each method
/// `EnvFilter` implements is passed on (the span ones keep span-field directives
/// working); the others keep the trait's defaults, as `EnvFilter` does.
struct WatchRequestSpan<F> {
    inner: F,
    logged: &'static AtomicBool,
}

impl<F, S> tracing_subscriber::layer::Filter<S> for WatchRequestSpan<F>
where
    F: tracing_subscriber::layer::Filter<S>,
{
    fn enabled(
        &self,
        meta: &tracing::Metadata<'_>,
        cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.inner.enabled(meta, cx)
    }

    fn callsite_enabled(
        &self,
        meta: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        let interest = self.inner.callsite_enabled(meta);
        if meta.is_span() && meta.target() == GATEWAY_REQUEST_TARGET && !interest.is_never() {
            self.logged.store(true, Ordering::Relaxed);
        }
        interest
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.inner.max_level_hint()
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.inner.on_new_span(attrs, id, cx);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        cx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.inner.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.inner.on_enter(id, cx);
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.inner.on_exit(id, cx);
    }

    fn on_close(&self, id: tracing::span::Id, cx: tracing_subscriber::layer::Context<'_, S>) {
        self.inner.on_close(id, cx);
    }
}

/// A request's ids when it has no span (see [`request_span_wanted`]).
#[derive(Debug, Clone)]
pub struct RequestIds {
    /// The W3C trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// What every attempt sends upstream: the trace, and the request's span id.
    pub traceparent: Option<http::HeaderValue>,
    /// The ids log lines inside the request carry.
    pub log_ids: (TraceId, SpanId),
}

/// Ids for a request that gets no span, as a span would have them without export: the
/// caller's trace and sampling flag when `headers` carry a valid `traceparent`, else a
/// new trace; a new span id either way.
pub fn request_ids(headers: &http::HeaderMap) -> RequestIds {
    let remote = if headers.contains_key(TRACEPARENT_NAME) {
        extract_parent(headers).span().span_context().clone()
    } else {
        SpanContext::empty_context()
    };
    let (trace_id, flags) = if remote.is_valid() {
        (remote.trace_id(), remote.trace_flags())
    } else {
        (
            ids::random_trace_id(),
            opentelemetry::trace::TraceFlags::default(),
        )
    };
    let span_id = ids::random_span_id();
    let sc = SpanContext::new(
        trace_id,
        span_id,
        flags,
        false,
        opentelemetry::trace::TraceState::NONE,
    );
    RequestIds {
        trace_id: hex_id(&trace_id.to_bytes()),
        traceparent: traceparent_value(&sc),
        log_ids: (trace_id, span_id),
    }
}

/// Installs the global subscriber (logs, and span export when configured) and the W3C
/// propagator. Call once, from a role's `run`, inside the tokio runtime. A second call
/// leaves the first subscriber in place and returns an inert guard.
pub fn init(identity: &Identity, format: LogFormat) -> TelemetryGuard {
    init_with_writer(identity, format, BoxMakeWriter::new(std::io::stderr))
}

/// [`init`], with log lines going to `writer` instead of stderr (`hotel up` keeps its
/// terminal for people and writes its log to a file).
pub fn init_with_writer(
    identity: &Identity,
    format: LogFormat,
    writer: BoxMakeWriter,
) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let whole = format::Unfiltered::default();
    let logs = log_layer(format, writer, whole.clone()).with_filter(WatchRequestSpan {
        inner: log_filter,
        logged: &REQUEST_SPAN_LOGGED,
    });

    let export = ExportSettings::from_vars(|k| std::env::var(k).ok());
    let mut problems = Vec::new();
    let provider = match &export {
        Ok(Some(settings)) => match export::provider(settings, identity) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("span export disabled: {e}"));
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            problems.push(format!("span export disabled: {e}"));
            None
        }
    };

    let (dispatch, guard) = match provider {
        Some(provider) => {
            use opentelemetry::trace::TracerProvider as _;
            let tracer = provider.tracer("hotel");
            let default_filter =
                || EnvFilter::new(format!("{DEFAULT_TRACE_FILTER},{NEVER_EXPORTED}"));
            let span_filter = match std::env::var("HOTEL_TRACE_FILTER") {
                Ok(f) => trace_filter(&f).unwrap_or_else(|e| {
                    problems.push(format!(
                        "HOTEL_TRACE_FILTER={f:?} is not a valid filter ({e}); \
                         exporting with {DEFAULT_TRACE_FILTER:?}"
                    ));
                    default_filter()
                }),
                Err(_) => default_filter(),
            };
            // No thread names, targets or busy/idle timings on every span: they cost an
            // allocation or two clock reads per span, also for the unsampled ones
            // (sampling happens only when a span starts), and say little in a trace.
            let otel = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_error_records_to_exceptions(true)
                .with_filter(span_filter);
            let subscriber = tracing_subscriber::registry()
                .with(logs)
                .with(otel)
                .with(crate::metrics::DbTimingLayer);
            (
                Dispatch::new(subscriber),
                TelemetryGuard {
                    provider: Some(provider),
                },
            )
        }
        None => {
            let subscriber = tracing_subscriber::registry()
                .with(logs)
                .with(ids::IdsLayer)
                .with(crate::metrics::DbTimingLayer);
            (Dispatch::new(subscriber), TelemetryGuard { provider: None })
        }
    };
    let weak = dispatch.downgrade();
    whole.set(weak.clone());
    if tracing::dispatcher::set_global_default(dispatch).is_err() {
        // Someone (a test harness) installed a subscriber first; ours was never used.
        return TelemetryGuard { provider: None };
    }
    if guard.exporting() {
        let _ = EXPORTING_DISPATCH.set(weak);
    }
    for p in problems {
        tracing::warn!("{p}");
    }
    if let Ok(Some(settings)) = &export
        && guard.exporting()
    {
        tracing::info!(
            endpoint = %settings.traces_url(),
            protocol = ?settings.protocol,
            role = %identity.role,
            instance = %identity.instance,
            "exporting spans over OTLP"
        );
    }
    guard
}

/// The log layer. `whole` is set to the finished subscriber once it exists: the
/// formatter reads the ids of spans this layer's filter left out through it.
fn log_layer<S>(
    format: LogFormat,
    writer: BoxMakeWriter,
    whole: format::Unfiltered,
) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(false)
            .event_format(format::WithTraceIds {
                inner: tracing_subscriber::fmt::format().with_ansi(false),
                json: false,
                whole,
            })
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .json()
            .event_format(format::WithTraceIds {
                inner: tracing_subscriber::fmt::format()
                    .json()
                    .with_span_list(true),
                json: true,
                whole,
            })
            .boxed(),
    }
}

/// The (trace id, span id) of a span by id: from OpenTelemetry when exporting, else from
/// the fallback ids. Used by the log formatter.
fn ids_of_span_id(id: &tracing::span::Id, fallback: Option<ids::Ids>) -> Option<(TraceId, SpanId)> {
    if let Some(dispatch) = EXPORTING_DISPATCH.get().and_then(WeakDispatch::upgrade) {
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let sc = cx.span().span_context().clone();
        return sc.is_valid().then(|| (sc.trace_id(), sc.span_id()));
    }
    fallback.map(|ids| (ids.trace_id, ids.span_id))
}

/// The span context of `span`: its OpenTelemetry context when exported, else its
/// fallback ids. `None` for a disabled span or without a subscriber.
///
/// With export on this starts the OpenTelemetry span, so call [`set_parent_from`] first.
pub fn span_context_of(span: &Span) -> Option<SpanContext> {
    // The fallback ids first: they exist exactly when no OpenTelemetry layer does (see
    // `init`), and reading them is a lookup, where asking for an OpenTelemetry context
    // builds an empty one to say there is none.
    if let Some(ids) = ids::ids_of(span) {
        return Some(ids.span_context());
    }
    let sc = span.context().span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The W3C trace id (32 lowercase hex digits) of `span`.
pub fn trace_id_of(span: &Span) -> Option<String> {
    span_context_of(span).map(|sc| hex_id(&sc.trace_id().to_bytes()))
}

/// `bytes` as lowercase hex digits, as W3C ids are written. By table: `{:032x}` on a
/// `u128` goes digit by digit through the formatter, and this runs for every request.
pub fn hex_id(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    write_hex(bytes, &mut out);
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, o) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        o[0] = DIGITS[usize::from(b >> 4)];
        o[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// The W3C trace id of the current span (whether or not the trace is sampled: an
/// unsampled id still finds the request's log lines).
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&Span::current())
}

/// The remote parent described by `traceparent`/`tracestate` in `headers` (an empty
/// context when they are missing or malformed).
pub fn extract_parent(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Makes `span` the child of the caller's span named by `traceparent` in `headers`.
/// Call right after creating the span, before entering it or logging in it.
pub fn set_parent_from(span: &Span, headers: &http::HeaderMap) {
    // Most requests have no caller span: skip building a context to learn that.
    if !headers.contains_key(TRACEPARENT_NAME) {
        return;
    }
    let cx = extract_parent(headers);
    let remote = cx.span().span_context().clone();
    if !remote.is_valid() {
        return;
    }
    if let Err(tracing_opentelemetry::SetParentError::LayerNotFound) = span.set_parent(cx) {
        ids::set_remote_parent(span, &remote);
    }
}

/// Writes `span`'s trace context (`traceparent`, and `tracestate` when present) into
/// outgoing request headers. Use the client span of the call (one per attempt).
pub fn inject_span(span: &Span, headers: &mut http::HeaderMap) {
    let Some(sc) = span_context_of(span) else {
        return;
    };
    inject_context(&sc, headers);
}

/// `traceparent` (and `tracestate`, possibly empty) exactly as the W3C propagator writes
/// them, but formatted in place under static header names: the propagator allocates the
/// names, a `String` and a `Context` for every outgoing request.
fn inject_context(sc: &SpanContext, headers: &mut http::HeaderMap) {
    let Some(v) = traceparent_value(sc) else {
        return;
    };
    let state = http::HeaderValue::from_str(&sc.trace_state().header()).ok();
    write_trace_headers(headers, v, state);
}

/// Writes `traceparent` and, when given, `tracestate` (the propagator writes it even
/// when empty).
fn write_trace_headers(
    headers: &mut http::HeaderMap,
    traceparent: http::HeaderValue,
    tracestate: Option<http::HeaderValue>,
) {
    headers.insert(TRACEPARENT_NAME, traceparent);
    if let Some(v) = tracestate {
        headers.insert(TRACESTATE_NAME, v);
    }
}

/// The `traceparent` value of `sc`, if it is valid.
fn traceparent_value(sc: &SpanContext) -> Option<http::HeaderValue> {
    if !sc.is_valid() {
        return None;
    }
    // "00-" + 32 + "-" + 16 + "-" + 2 = 55 bytes.
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = (sc.trace_flags() & opentelemetry::trace::TraceFlags::SAMPLED).to_u8();
    write_hex(&sc.trace_id().to_bytes(), &mut buf[3..35]);
    write_hex(&sc.span_id().to_bytes(), &mut buf[36..52]);
    write_hex(&[flags], &mut buf[53..55]);
    http::HeaderValue::from_bytes(&buf).ok()
}

/// What the gateway's edge needs of its request span, read once: the W3C trace id and,
/// when the trace state is empty (as it is unless a caller sent one), the `traceparent`
/// every attempt without a span of its own sends (see [`inject`]).
pub fn ids_of_request(span: &Span) -> (Option<String>, Option<http::HeaderValue>) {
    let Some(sc) = span_context_of(span) else {
        return (None, None);
    };
    let traceparent = sc
        .trace_state()
        .header()
        .is_empty()
        .then(|| traceparent_value(&sc))
        .flatten();
    (Some(hex_id(&sc.trace_id().to_bytes())), traceparent)
}

/// W3C trace context header names (looked up as `HeaderName`s: see
/// [`crate::context::REQUEST_ID_NAME`]).
const TRACEPARENT: &str = "traceparent";
const TRACEPARENT_NAME: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
const TRACESTATE_NAME: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Writes the current span's W3C trace context into outgoing headers: the request
/// context's `traceparent` when the edge formatted one (the request span is then the
/// current span; reading it back through the subscriber costs a lookup and a clone of
/// the span per attempt), else the current span's.
pub fn inject(headers: &mut http::HeaderMap) {
    match crate::context::traceparent() {
        // Formatted only for an empty trace state (see `ids_of_request`).
        Some(v) => write_trace_headers(headers, v, Some(http::HeaderValue::from_static(""))),
        None => inject_span(&Span::current(), headers),
    }
}

/// Marks `span` failed: status ERROR with `message` (what Jaeger shows in red), and the
/// `otel.status_code` field for the logs when the span declared it.
pub fn record_error(span: &Span, message: impl Into<String>) {
    let message = message.into();
    span.record("otel.status_code", "ERROR");
    // After the field: recording `otel.status_code` would otherwise reset the message.
    span.set_status(Status::error(message.clone()));
    span.record("otel.status_description", message.as_str());
}

/// Whether a request is routine control-plane traffic rather than work (see
/// [`server_span`]).
fn is_chatter(method: &http::Method, route: Option<&str>, query: Option<&str>) -> bool {
    // A registry watch (`?index=`) or an event feed read (`?wait_ms=`): blocking reads
    // that a follower keeps open all the time.
    let blocking_watch = || {
        method == http::Method::GET
            && query.is_some_and(|q| {
                q.split('&')
                    .any(|kv| matches!(kv.split('=').next(), Some("index" | "wait_ms")))
            })
    };
    match route {
        Some(crate::health::LIVENESS_PATH | crate::health::READINESS_PATH) => true,
        Some(r) if r.ends_with("/heartbeat") => true,
        Some(_) => blocking_watch(),
        None => false,
    }
}

/// Renames `span` (its OpenTelemetry name and the `otel.name` field), also after it has
/// started: for a name known only once the request is routed, such as the gateway's
/// `GET /api/rooms`. (Recording `otel.name` alone is ignored once a span has started.)
///
/// Takes anything displayable (`format_args!("{method} {route}")`): the name is only
/// written out where it is used, by a layer that records `otel.name`, and as a `String`
/// only for an OpenTelemetry layer.
pub fn set_span_name(span: &Span, name: impl std::fmt::Display) {
    if span.is_disabled() {
        // Not even a name to format.
        return;
    }
    span.record("otel.name", tracing::field::display(&name));
    // The fallback ids exist exactly when no OpenTelemetry layer does (see `init`).
    if ids::ids_of(span).is_none() {
        span.context().span().update_name(name.to_string());
    }
}

/// Axum middleware: the server span of one request (`http.request.method`, `http.route`,
/// `url.path`, `http.response.status_code`), parented on the caller's W3C `traceparent`
/// when present, status ERROR on 5xx; health probes, heartbeats and blocking watches at
/// DEBUG (not exported by default). Installed by [`crate::http::finish`] with
/// `Router::layer`, so the route template (`/rooms/{id}`) is known here.
pub async fn server_span(
    axum::extract::State(role): axum::extract::State<&'static str>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::{Instrument, field::Empty};
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // Unmatched paths are named by method alone: raw paths would explode the number of
    // distinct span names (OpenTelemetry HTTP conventions).
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    // Control-plane chatter arrives every second whatever users do: health probes,
    // registry heartbeats and Consul-style blocking watches (`?index=`). Their spans are
    // at DEBUG, below the export filter's default `info`, so they do not bury real
    // traffic in Jaeger (`HOTEL_TRACE_FILTER=debug` shows them).
    let probe = is_chatter(&method, route.as_deref(), req.uri().query());
    macro_rules! request_span {
        ($level:ident) => {
            tracing::$level!(
                "request",
                otel.name = %name,
                otel.kind = "server",
                service = role,
                http.request.method = %method,
                http.route = Empty,
                url.path = %req.uri().path(),
                http.response.status_code = Empty,
                otel.status_code = Empty,
                otel.status_description = Empty,
                fault.injected = Empty,
                fault.kind = Empty,
            )
        };
    }
    let span = if probe {
        request_span!(debug_span)
    } else {
        request_span!(info_span)
    };
    if let Some(r) = &route {
        span.record("http.route", r.as_str());
    }
    set_parent_from(&span, req.headers());
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status();
    // As i64: tracing-opentelemetry turns u64 fields into strings, and the HTTP
    // conventions (and Jaeger's search) want an integer.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        record_error(&span, format!("HTTP {status}"));
    }
    res
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    /// A server span continuing the caller trace 4bf92f35..., parent span 00f067aa....
    fn server_span_of_a_caller() -> Span {
        let mut incoming = http::HeaderMap::new();
        incoming.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let server = tracing::info_span!("server");
        set_parent_from(&server, &incoming);
        server
    }

    #[test]
    fn without_export_a_traceparent_is_continued_with_the_same_trace_id() {
        let subscriber = tracing_subscriber::registry().with(ids::IdsLayer);
        tracing::subscriber::with_default(subscriber, || {
            let server = server_span_of_a_caller();
            assert_eq!(
                trace_id_of(&server).as_deref(),
                Some("4bf92f3577b34da6a3ce929d0e0e4736")
            );
            let mut outgoing = http::HeaderMap::new();
            server.in_scope(|| inject(&mut outgoing));
            let tp = outgoing["traceparent"].to_str().unwrap();
            assert!(
                tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{tp}"
            );
            assert!(tp.ends_with("-01"), "sampling decision is passed on: {tp}");
            assert!(
                !tp.contains("00f067aa0ba902b7"),
                "our own span is the parent: {tp}"
            );
        });
    }

    #[tokio::test]
    async fn the_edges_formatted_traceparent_is_what_the_request_span_would_inject() {
        let subscriber = tracing_subscriber::registry().with(ids::IdsLayer);
        let _default = tracing::subscriber::set_default(subscriber);
        let server = server_span_of_a_caller();
        let (trace_id, traceparent) = ids_of_request(&server);
        assert_eq!(
            trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let mut by_span = http::HeaderMap::new();
        inject_span(&server, &mut by_span);
        assert_eq!(traceparent.as_ref(), by_span.get("traceparent"));
        // Inside the request's context, `inject` writes the formatted value, whatever
        // the current span (none here).
        let ctx = crate::context::RequestContext {
            request_id: "r-1".into(),
            trace_id,
            traceparent,
            log_ids: None,
        };
        let by_context = crate::context::scope(ctx, async {
            let mut h = http::HeaderMap::new();
            inject(&mut h);
            h
        })
        .await;
        assert_eq!(by_context, by_span);
        // Outside any context the current span decides, as before.
        let mut outside = http::HeaderMap::new();
        server.in_scope(|| inject(&mut outside));
        assert_eq!(outside, by_span);
    }

    #[test]
    fn the_span_only_layers_leave_the_maximum_level_to_the_log_filter() {
        use tracing::level_filters::LevelFilter;
        let hint = |filter: &str| {
            let logs = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(EnvFilter::new(filter));
            let subscriber = tracing_subscriber::registry()
                .with(logs)
                .with(ids::IdsLayer)
                .with(crate::metrics::DbTimingLayer);
            tracing::Subscriber::max_level_hint(&subscriber)
        };
        // At the default level a `debug!` on the request path is off before any layer
        // is asked; request and `db` spans (INFO) stay on under a quieter filter.
        assert_eq!(hint(DEFAULT_LOG_FILTER), Some(LevelFilter::INFO));
        assert_eq!(hint("warn"), Some(LevelFilter::INFO));
        assert_eq!(hint("debug"), Some(LevelFilter::DEBUG));
        assert_eq!(hint("info,hotel_room=trace"), Some(LevelFilter::TRACE));
    }

    /// Records the targets of the spans it is shown.
    struct Seen(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if let Ok(mut v) = self.0.lock() {
                v.push(attrs.metadata().target().to_owned());
            }
        }
    }

    #[test]
    fn transport_crates_stay_out_of_export_even_when_the_user_asks_for_everything() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let layer = Seen(seen.clone()).with_filter(trace_filter("trace").unwrap());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let _a = tracing::trace_span!(target: "hotel_room::store", "query");
            let _b = tracing::debug_span!(target: "hyper::client", "connect");
            let _c = tracing::debug_span!(target: "opentelemetry_otlp::exporter", "export");
        });
        assert_eq!(*seen.lock().unwrap(), vec!["hotel_room::store".to_owned()]);
        assert!(trace_filter("info,[").is_err(), "a bad filter is reported");
    }

    #[test]
    fn injected_headers_are_byte_for_byte_what_the_w3c_propagator_writes() {
        use opentelemetry::trace::{TraceFlags, TraceState};
        use opentelemetry_http::HeaderInjector;
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::NONE),
            (TraceFlags::default(), TraceState::NONE),
            (
                TraceFlags::SAMPLED,
                TraceState::from_key_value([("vendor", "v1")]).unwrap(),
            ),
        ] {
            let sc = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                false,
                state,
            );
            let mut ours = http::HeaderMap::new();
            inject_context(&sc, &mut ours);
            let mut reference = http::HeaderMap::new();
            let cx = Context::new().with_remote_span_context(sc);
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut reference));
            assert_eq!(ours, reference);
        }
    }

    /// Collects log output.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A subscriber as `init` assembles it without export, logging with `filter` and
    /// `format` into the returned lines.
    fn logging_into_lines(filter: &str, format: LogFormat) -> (Lines, Dispatch) {
        let lines = Lines::default();
        let sink = lines.clone();
        let whole = format::Unfiltered::default();
        let logs = log_layer(
            format,
            BoxMakeWriter::new(move || sink.clone()),
            whole.clone(),
        )
        .with_filter(EnvFilter::new(filter));
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(logs)
                .with(ids::IdsLayer),
        );
        whole.set(dispatch.downgrade());
        (lines, dispatch)
    }

    /// Logs one line inside a gateway request span with the log filter `filter`, as
    /// `init` assembles the subscriber without export; the line and the span's trace id.
    fn line_inside_request_span(filter: &str, format: LogFormat) -> (String, String) {
        let (lines, dispatch) = logging_into_lines(filter, format);
        let trace = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(
                target: GATEWAY_REQUEST_TARGET,
                "request",
                request_id = "rid-1",
                url.path = "/api/rooms",
            );
            span.in_scope(|| {
                let inner = tracing::info_span!("inner");
                inner.in_scope(|| tracing::warn!("upstream request failed"));
            });
            trace_id_of(&span).unwrap()
        });
        let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        (out, trace)
    }

    #[test]
    fn the_default_filter_formats_no_request_span_but_its_lines_keep_the_trace_id() {
        let (line, trace) = line_inside_request_span(DEFAULT_LOG_FILTER, LogFormat::Text);
        assert!(line.contains("upstream request failed"), "{line}");
        assert!(line.contains(&format!("trace_id={trace}")), "{line}");
        assert!(!line.contains("rid-1"), "request span formatted: {line}");
        assert!(
            line.contains("inner"),
            "other spans are still shown: {line}"
        );
        let (line, trace) = line_inside_request_span(DEFAULT_LOG_FILTER, LogFormat::Json);
        assert!(
            line.contains(&format!("\"trace_id\":\"{trace}\"")),
            "{line}"
        );
        assert!(!line.contains("rid-1"), "request span formatted: {line}");
        // Asked for, the request span is back in the lines.
        let (line, trace) = line_inside_request_span("info", LogFormat::Text);
        assert!(line.contains("rid-1"), "{line}");
        assert!(line.contains(&format!("trace_id={trace}")), "{line}");
    }

    #[test]
    fn a_request_without_a_span_gets_the_ids_a_span_would_have() {
        let subscriber = tracing_subscriber::registry().with(ids::IdsLayer);
        let _default = tracing::subscriber::set_default(subscriber);
        let (by_span, by_span_parent) = ids_of_request(&server_span_of_a_caller());
        let by_span_parent = by_span_parent.unwrap();
        let mut incoming = http::HeaderMap::new();
        incoming.insert(
            "traceparent",
            http::HeaderValue::from_static(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        );
        let ids = request_ids(&incoming);
        // The caller's trace and flags, as the span has them; a span id of its own.
        assert_eq!(Some(&ids.trace_id), by_span.as_ref());
        let tp = ids.traceparent.unwrap();
        let (tp, tp_span) = (tp.to_str().unwrap(), by_span_parent.to_str().unwrap());
        assert_eq!(tp.len(), 55, "{tp}");
        assert_eq!((&tp[..36], &tp[52..]), (&tp_span[..36], &tp_span[52..]));
        assert_ne!(
            &tp[36..52],
            "00f067aa0ba902b7",
            "the caller's span id reused"
        );
        assert_eq!(hex_id(&ids.log_ids.0.to_bytes()), ids.trace_id);
        assert_eq!(&tp[36..52], hex_id(&ids.log_ids.1.to_bytes()));
        // No caller (or a malformed one): a new trace, unsampled, a new one each time.
        let mut bad = http::HeaderMap::new();
        bad.insert("traceparent", http::HeaderValue::from_static("00-zz-yy-01"));
        let (a, b) = (request_ids(&http::HeaderMap::new()), request_ids(&bad));
        for ids in [&a, &b] {
            let tp = ids.traceparent.as_ref().unwrap().to_str().unwrap();
            assert_eq!(ids.trace_id.len(), 32);
            assert_ne!(ids.trace_id, "0".repeat(32));
            assert!(
                tp.starts_with(&format!("00-{}-", ids.trace_id)) && tp.ends_with("-00"),
                "{tp}"
            );
        }
        assert_ne!(a.trace_id, b.trace_id);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lines_inside_a_request_without_a_span_carry_its_context_ids() {
        let (lines, dispatch) = logging_into_lines(DEFAULT_LOG_FILTER, LogFormat::Text);
        let _default = tracing::dispatcher::set_default(&dispatch);
        let ids = request_ids(&http::HeaderMap::new());
        let ctx = crate::context::RequestContext {
            request_id: "r-1".into(),
            trace_id: Some(ids.trace_id.clone()),
            traceparent: ids.traceparent.clone(),
            log_ids: Some(ids.log_ids),
        };
        crate::context::scope(ctx, async { tracing::warn!("upstream request failed") }).await;
        tracing::warn!("outside any request");
        let out = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let (inside, outside) = out.split_once('\n').unwrap();
        let span_id = hex_id(&ids.log_ids.1.to_bytes());
        assert!(
            inside.contains(&format!("trace_id={} span_id={span_id}", ids.trace_id)),
            "{inside}"
        );
        assert!(!outside.contains("trace_id="), "{outside}");
    }

    #[test]
    fn the_log_filter_tells_whether_it_shows_the_request_span() {
        let shows = |filter: &str| {
            // Its own flag (leaked, a few bytes per test): the process's is shared.
            let logged: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let logs = tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(WatchRequestSpan {
                    inner: EnvFilter::new(filter),
                    logged,
                });
            tracing::subscriber::with_default(tracing_subscriber::registry().with(logs), || {
                drop(tracing::info_span!(target: GATEWAY_REQUEST_TARGET, "request"));
            });
            logged.load(Ordering::Relaxed)
        };
        assert!(!shows(DEFAULT_LOG_FILTER));
        assert!(!shows("warn"));
        assert!(shows("info"));
        assert!(shows("hotel_gateway=debug"));
        assert!(shows(&format!(
            "{DEFAULT_LOG_FILTER},hotel_gateway::request=info"
        )));
    }

    #[test]
    fn malformed_traceparent_starts_a_new_trace() {
        let subscriber = tracing_subscriber::registry().with(ids::IdsLayer);
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = http::HeaderMap::new();
            incoming.insert("traceparent", http::HeaderValue::from_static("00-zz-yy-01"));
            let server = tracing::info_span!("server");
            set_parent_from(&server, &incoming);
            let id = trace_id_of(&server).unwrap();
            assert_eq!(id.len(), 32);
            assert_ne!(id, "00000000000000000000000000000000");
        });
    }

    #[test]
    fn without_any_subscriber_there_is_no_trace_id_and_nothing_is_injected() {
        let span = Span::none();
        assert_eq!(trace_id_of(&span), None);
        let mut headers = http::HeaderMap::new();
        inject_span(&span, &mut headers);
        assert!(headers.is_empty());
    }
}
