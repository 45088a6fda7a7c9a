//! Per-request context (request id, trace id) visible to any code running for the request.
//!
//! The context lives in a tokio task-local set by [`request_context`] around the handler,
//! so a [`crate::Problem`] built deep inside a handler can still name its request.

use axum::{extract::Request, middleware::Next, response::Response};
use http::HeaderValue;

/// Header carrying the request id in both directions.
pub const REQUEST_ID: &str = "x-request-id";
/// [`REQUEST_ID`] as a header name: a lookup by `&str` first parses and lowercases the
/// name (about 300 instructions), one by `HeaderName` only hashes it.
pub const REQUEST_ID_NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID);

/// What a request carries through its handler.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Accepted from a well-formed `x-request-id` or generated.
    pub request_id: String,
    /// W3C trace id, when the request is traced.
    pub trace_id: Option<String>,
    /// The `traceparent` that continues the request's span, formatted once by the
    /// gateway's edge for every attempt that has no span of its own (see
    /// [`crate::telemetry::inject`]); `None` where the current span decides.
    pub traceparent: Option<HeaderValue>,
    /// The trace and span ids log lines written inside the request carry when it has no
    /// span of its own (the gateway's edge makes none when nothing would show it, see
    /// [`crate::telemetry::request_span_wanted`]); `None` where spans decide.
    pub log_ids: Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)>,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

/// The context of the request being handled on this task, if any.
pub fn current() -> Option<RequestContext> {
    CONTEXT.try_with(Clone::clone).ok()
}

/// The `traceparent` the current request context carries, if any.
pub fn traceparent() -> Option<HeaderValue> {
    CONTEXT.try_with(|c| c.traceparent.clone()).ok().flatten()
}

/// The ids log lines take from the current request context (see
/// [`RequestContext::log_ids`]).
pub(crate) fn log_ids() -> Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)> {
    CONTEXT.try_with(|c| c.log_ids).ok().flatten()
}

/// Runs `fut` with `ctx` as the current request context. Tokio's future itself, not an
/// `async fn` around it: that would be one more state machine on every request, its
/// state copied in whole where it is made.
pub fn scope<F: std::future::Future>(
    ctx: RequestContext,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<RequestContext, F> {
    CONTEXT.scope(ctx, fut)
}

/// Whether a client-supplied request id is safe to echo and log: 1 to 128 characters of
/// letters, digits and `-_.:`.
pub fn is_well_formed_request_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Takes the request's id from a well-formed header or makes a new one: a UUID v4 drawn
/// from the thread-local id generator (`Uuid::new_v4` costs a `getrandom` system call
/// per request).
pub fn request_id_of(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_NAME)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed_request_id(v))
        .map_or_else(
            || {
                // Through a stack buffer: `to_string` goes through the formatter.
                let mut buf = uuid::Uuid::encode_buffer();
                uuid::Builder::from_random_bytes(crate::telemetry::random_id())
                    .into_uuid()
                    .hyphenated()
                    .encode_lower(&mut buf)
                    .to_owned()
            },
            str::to_owned,
        )
}

/// Axum middleware: fixes the request id, exposes it to the handler and echoes it on the
/// response.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let request_id = request_id_of(req.headers());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(REQUEST_ID_NAME, v);
    }
    let ctx = RequestContext {
        request_id: request_id.clone(),
        trace_id: crate::telemetry::current_trace_id(),
        traceparent: None,
        log_ids: None,
    };
    let mut res = scope(ctx, next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID_NAME, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_with_spaces_or_newlines_are_refused() {
        assert!(is_well_formed_request_id("abc-123_x.y:z"));
        assert!(!is_well_formed_request_id("a b"));
        assert!(!is_well_formed_request_id("a\nb"));
        assert!(!is_well_formed_request_id(""));
        assert!(!is_well_formed_request_id(&"x".repeat(129)));
    }
}
