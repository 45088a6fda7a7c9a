//! The edge: what every client request passes through before the upstream stack, as one
//! sequence of layers (outermost first):
//!
//! ```text
//! context     request id, server span (parented on traceparent), x-request-id and
//!             x-trace-id on every response, request metrics, the one error mapping
//! cors        only with `[cors] allowed_origins`: preflights answered here, without
//!             an API key; CORS headers on every answer (see [`crate::cors`])
//! shield      framing (smuggling -> 400), body size (413), header hygiene, API keys
//!             (401), per-client rate limits (429), in-flight limits (503): see
//!             [`crate::shield`]
//! router      path checks (traversal -> 400), route match (unknown -> 404), prefix
//!             rewrite, body buffering for replay
//! cache       the shared HTTP cache, on routes with `cache = true` (see [`crate::cache`])
//! upstream    the route's upstream stack
//! ```
//!
//! [`stack`] assembles them; add a layer there and nowhere else.

use crate::{
    body::{GatewayBody, full},
    hygiene,
    metrics::{Metrics, RequestLabels, RouteLabels, method_label},
    routes::{RouteTable, normalise},
    shield::{Protections, ShieldLayer},
};
use bytes::Bytes;
use futures::future::BoxFuture;
use hotel_common::{Problem, context::REQUEST_ID_NAME};
use hotel_upstream::{ProxyBody, RequestBodyError, RouteUpstream, classify};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::time::Instant;
use tower::Service;

/// Response header carrying the W3C trace id.
pub const TRACE_ID: &str = "x-trace-id";

/// The path prefix the gateway strips, for the instance's links.
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static FORWARDED_PREFIX_SET: std::sync::LazyLock<hygiene::NameSet> =
    std::sync::LazyLock::new(|| hygiene::NameSet::new(vec![X_FORWARDED_PREFIX]));

/// The names inserted on every request and response, as `HeaderName`s: inserting under a
/// `&str` name that is not a standard header copies the name into a new allocation.
const TRACE_ID_NAME: HeaderName = HeaderName::from_static(TRACE_ID);

/// Request extension: the edge added the `x-request-id` line (the client sent none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddedRequestId;

/// The route a request matched and what the cache made of it, left on the response for
/// the context layer's metrics and span: one extension, as each is a boxed map entry.
#[derive(Debug, Clone)]
struct MatchedRoute {
    route: Arc<String>,
    /// `None` on a route the cache does not serve.
    cache: Option<crate::cache::Outcome>,
}

impl MatchedRoute {
    fn uncached(route: Arc<String>) -> Self {
        MatchedRoute { route, cache: None }
    }
}

/// The shared state of the edge: routes and their upstream stacks.
#[derive(Debug)]
pub struct Gateway {
    table: RouteTable,
    /// One stack per route, in `table` order.
    upstreams: Vec<RouteUpstream>,
    metrics: Arc<Metrics>,
    retry_buffer: usize,
    index: Bytes,
    /// Per route, what the rewrite strips (`/api`), sent as `X-Forwarded-Prefix` so an
    /// instance can build links as clients address them.
    forwarded_prefix: Vec<Option<HeaderValue>>,
    unrouted: Arc<String>,
    protections: Arc<Protections>,
    /// `/api/openapi.json` and `/api/docs`, when set (see [`crate::docs`]).
    docs: Option<crate::docs::Docs>,
    /// CORS in front of the protections, when origins are allowed.
    cors: Option<crate::cors::EdgeCorsLayer>,
    /// The shared HTTP cache, unless `[cache] max_bytes = 0`.
    cache: Option<Arc<crate::cache::HttpCache>>,
}

impl Gateway {
    /// The edge over `table`, whose routes are served by `upstreams` (same order), behind
    /// `protections`.
    pub(crate) fn new(
        table: RouteTable,
        upstreams: Vec<RouteUpstream>,
        protections: Arc<Protections>,
        metrics: Arc<Metrics>,
        retry_buffer: usize,
    ) -> Self {
        let forwarded_prefix = table
            .routes()
            .iter()
            .map(|r| {
                r.prefix
                    .strip_suffix(r.rewrite.as_str())
                    .filter(|p| !p.is_empty())
                    .and_then(|p| HeaderValue::from_str(p).ok())
            })
            .collect();
        let routes: Vec<serde_json::Value> = table
            .routes()
            .iter()
            .map(|r| {
                serde_json::json!({
                    "prefix": r.prefix,
                    "service": r.service,
                    "rewrite": r.rewrite,
                    "deadline_ms": r.policy.deadline.as_millis() as u64,
                    "max_body_bytes": r.max_body_bytes,
                    "retries": r.policy.retries,
                    "hedge": r.policy.hedge.is_some(),
                })
            })
            .collect();
        let index =
            serde_json::to_vec(&serde_json::json!({"service": "hotel gateway", "routes": routes}))
                .unwrap_or_default()
                .into();
        Gateway {
            table,
            upstreams,
            metrics,
            retry_buffer,
            index,
            unrouted: Arc::new("none".to_owned()),
            forwarded_prefix,
            protections,
            docs: None,
            cors: None,
            cache: None,
        }
    }

    /// The same edge answering CORS (preflights included) as `cors` says.
    pub fn with_cors(mut self, cors: Option<crate::cors::EdgeCorsLayer>) -> Self {
        self.cors = cors;
        self
    }

    /// The same edge answering cache-enabled routes through `cache`.
    pub fn with_cache(mut self, cache: Option<Arc<crate::cache::HttpCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// The same edge answering the API documentation paths from `docs`.
    pub fn with_docs(mut self, docs: crate::docs::Docs) -> Self {
        self.docs = Some(docs);
        self
    }
}

/// The whole edge as one service, ready for hyper.
pub fn stack(
    gw: Arc<Gateway>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<GatewayBody>,
    Error = Infallible,
    Future = BoxFuture<'static, Result<Response<GatewayBody>, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    // Registers the request span's callsite, so that whether anything shows the span is
    // known before the first request (`hotel_common::telemetry::request_span_wanted`).
    drop(request_span(&http::Method::GET, "/", ""));
    tower::ServiceBuilder::new()
        .layer(ContextLayer { gw: gw.clone() })
        .option_layer(gw.cors.clone())
        .layer(ShieldLayer::new(gw.protections.clone(), gw.metrics.clone()))
        .service(Router { gw })
}

/// Builds [`RequestContext`] services.
#[derive(Debug, Clone)]
pub struct ContextLayer {
    gw: Arc<Gateway>,
}

impl<S> tower::Layer<S> for ContextLayer {
    type Service = RequestContext<S>;
    fn layer(&self, inner: S) -> RequestContext<S> {
        RequestContext {
            inner,
            gw: self.gw.clone(),
        }
    }
}

/// Request id, trace, response headers and request metrics.
#[derive(Debug, Clone)]
pub struct RequestContext<S> {
    inner: S,
    gw: Arc<Gateway>,
}

fn new_trace_id() -> String {
    hotel_common::telemetry::hex_id(&hotel_common::telemetry::random_id::<[u8; 16]>())
}

/// The request's server span. At its own target, which the default log filter leaves
/// out: the log layer would otherwise format its fields for every request (see
/// `hotel_common::telemetry::DEFAULT_LOG_FILTER`); export is filtered apart.
fn request_span(method: &http::Method, path: &str, request_id: &str) -> tracing::Span {
    tracing::info_span!(
        target: hotel_common::telemetry::GATEWAY_REQUEST_TARGET,
        "request",
        otel.name = %method,
        otel.kind = "server",
        service = "gateway",
        http.request.method = %method,
        http.route = tracing::field::Empty,
        url.path = %path,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        cache.outcome = tracing::field::Empty,
        request_id = %request_id,
    )
}

/// How many fields the gateway may add to a request before it goes to an instance.
const ADDED_REQUEST_FIELDS: usize = 10;

impl<S> Service<Request<Incoming>> for RequestContext<S>
where
    S: Service<Request<Incoming>, Response = Response<GatewayBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<GatewayBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let start = Instant::now();
        // Room, at once, for the fields the gateway adds on the way (request id, trace
        // context, forwarding fields, `Host`): hyper sizes the map for the client's
        // fields alone, and each growth rehashes it.
        req.headers_mut().reserve(ADDED_REQUEST_FIELDS);
        let request_id = hotel_common::context::request_id_of(req.headers());
        let rid_value = HeaderValue::from_str(&request_id).ok();
        if let Some(v) = &rid_value
            && req
                .headers_mut()
                .insert(REQUEST_ID_NAME, v.clone())
                .is_none()
        {
            // Not the client's line: the head limits leave it out.
            req.extensions_mut().insert(AddedRequestId);
        }
        let method = req.method().clone();
        // A cheap clone (shared bytes): the recent-requests buffer may keep the path.
        let uri = req.uri().clone();
        let (span, trace_id, traceparent, log_ids) =
            if hotel_common::telemetry::request_span_wanted() {
                let span = request_span(&method, req.uri().path(), &request_id);
                hotel_common::telemetry::set_parent_from(&span, req.headers());
                let (trace_id, traceparent) = hotel_common::telemetry::ids_of_request(&span);
                (
                    span,
                    trace_id.unwrap_or_else(new_trace_id),
                    traceparent,
                    None,
                )
            } else {
                // Nothing would show the span: the request goes without (see
                // `request_span_wanted`), with the same ids a span would have had.
                let ids = hotel_common::telemetry::request_ids(req.headers());
                (
                    tracing::Span::none(),
                    ids.trace_id,
                    ids.traceparent,
                    Some(ids.log_ids),
                )
            };
        // The response header now, so the id itself moves into the context (no copy).
        let trace_value = HeaderValue::from_str(&trace_id).ok();
        let ctx = hotel_common::context::RequestContext {
            request_id,
            trace_id: Some(trace_id),
            traceparent,
            log_ids,
        };
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        let gw = self.gw.clone();
        Box::pin(async move {
            let (Ok(mut res), span) =
                InSpan::new(hotel_common::context::scope(ctx, inner.call(req)), span).await;
            let status = res.status();
            let matched = res.extensions_mut().remove::<MatchedRoute>();
            if let Some(m) = &matched {
                let r = &m.route;
                span.record("http.route", r.as_str());
                hotel_common::telemetry::set_span_name(&span, format_args!("{method} {r}"));
            }
            span.record("http.response.status_code", i64::from(status.as_u16()));
            if let Some(o) = matched.as_ref().and_then(|m| m.cache) {
                span.record("cache.outcome", o.as_str());
            }
            let route = matched.map(|m| m.route);
            if status.is_server_error() {
                hotel_common::telemetry::record_error(&span, format!("HTTP {status}"));
            }
            let route = route.unwrap_or_else(|| gw.unrouted.clone());
            let m = &gw.metrics;
            m.request_series
                .get(
                    &RequestLabels {
                        route: route.clone(),
                        method: method_label(&method),
                        status: status.as_u16(),
                    },
                    |l| m.requests.get_or_create_owned(l),
                )
                .inc();
            let took = start.elapsed();
            gw.metrics.recent.offer(
                trace_value
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
                method.as_str(),
                uri.path(),
                &route,
                status.as_u16(),
                took,
            );
            m.duration_series
                .get(&RouteLabels { route }, |l| {
                    m.duration.get_or_create_owned(l)
                })
                .observe(took.as_secs_f64());
            let h = res.headers_mut();
            if let Some(v) = rid_value {
                h.insert(REQUEST_ID_NAME, v);
            }
            if let Some(v) = trace_value {
                h.insert(TRACE_ID_NAME, v);
            }
            Ok(res)
        })
    }
}

pin_project_lite::pin_project! {
    /// `inner` polled inside `span`, which it hands back with the output: what
    /// `.instrument(span.clone())` does, without the clone, whose registration and close
    /// go through every layer of the subscriber. Like `Instrumented`, it also drops
    /// `inner` inside the span, so what a cancelled request logs on its way out still
    /// carries the request's ids.
    struct InSpan<F> {
        #[pin]
        inner: Option<F>,
        span: Option<tracing::Span>,
    }

    impl<F> PinnedDrop for InSpan<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            let _entered = this.span.as_ref().map(tracing::Span::enter);
            this.inner.set(None);
        }
    }
}

impl<F> InSpan<F> {
    fn new(inner: F, span: tracing::Span) -> Self {
        InSpan {
            inner: Some(inner),
            span: Some(span),
        }
    }
}

impl<F: std::future::Future> std::future::Future for InSpan<F> {
    type Output = (F::Output, tracing::Span);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.as_ref().map(tracing::Span::enter);
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            // Polled again after it finished: nothing left to wait for.
            return Poll::Pending;
        };
        let out = std::task::ready!(inner.poll(cx));
        this.inner.set(None);
        drop(_entered);
        Poll::Ready((out, this.span.take().unwrap_or_else(tracing::Span::none)))
    }
}

/// Routes a request and sends it through its route's upstream stack.
#[derive(Debug, Clone)]
pub struct Router {
    gw: Arc<Gateway>,
}

fn problem(p: Problem) -> Response<GatewayBody> {
    let res: Response<Vec<u8>> = p.to_http();
    res.map(full)
}

impl Service<Request<Incoming>> for Router {
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<GatewayBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let gw = self.gw.clone();
        // `map`, not an `async` block around the call: the block adds its own state
        // around the route's future (272 bytes more in a release build), and the box
        // copies in all of it.
        Box::pin(futures::FutureExt::map(route(gw, req), Ok))
    }
}

/// What the router decided before any I/O: answer now, or send upstream.
enum Decision {
    Answer(Response<GatewayBody>),
    Forward { index: usize, upstream_path: String },
}

fn decide(gw: &Gateway, req: &Request<Incoming>) -> Decision {
    let path = match normalise(req.uri().path()) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(path = %req.uri().path(), reason = %e, "refused path");
            return Decision::Answer(problem(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-path",
                e.to_string(),
            )));
        }
    };
    if let Some(d) = &gw.docs
        && let Some(mut res) = d.answer(req.method(), path)
    {
        res.extensions_mut()
            .insert(MatchedRoute::uncached(d.label.clone()));
        return Decision::Answer(res);
    }
    if path == "/" {
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return Decision::Answer(problem(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "the index only answers GET",
            )));
        }
        let mut res = Response::new(full(gw.index.clone()));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Decision::Answer(res);
    }
    match gw.table.matches(path, req.uri().query()) {
        Some(m) => Decision::Forward {
            index: m.index,
            upstream_path: m.upstream_path,
        },
        None => Decision::Answer(problem(Problem::new(
            StatusCode::NOT_FOUND,
            "no-route",
            "no route matches this path",
        ))),
    }
}

async fn route(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<GatewayBody> {
    let (index, upstream_path) = match decide(&gw, &req) {
        Decision::Answer(res) => return res,
        Decision::Forward {
            index,
            upstream_path,
        } => (index, upstream_path),
    };
    let label = gw.upstreams[index].route().clone();
    // The cache keys on the path and query as the client sent them, before the rewrite.
    let cache_key: Option<Arc<str>> = gw
        .cache
        .as_ref()
        .filter(|_| gw.table.routes()[index].cache)
        .map(|_| {
            req.uri()
                .path_and_query()
                .map_or(req.uri().path(), |p| p.as_str())
                .into()
        });
    let limit = gw.table.routes()[index].max_body_bytes;
    let (mut parts, incoming) = req.into_parts();
    // Buffered up to the replay cap, streamed past it; never past the route's limit,
    // which ends the request with 413 before any attempt (buffered) or cancels the one
    // attempt (streamed). Either way the instance is not blamed (see
    // `hotel_upstream::RequestBodyError`).
    let body = match ProxyBody::buffer(incoming, gw.retry_buffer, limit).await {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(error = %e, "client body refused");
            let p = match e {
                RequestBodyError::TooLarge { limit } => hotel_upstream::too_large(limit),
                RequestBodyError::Read(_) | RequestBodyError::Length => {
                    Problem::bad_request("the request body could not be read")
                }
            };
            let mut res = problem(p);
            // The rest of the body was not read: the connection cannot be reused.
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res.extensions_mut().insert(MatchedRoute::uncached(label));
            return res;
        }
    };
    // From the `String`'s own buffer: `str::parse` would copy it.
    match http::Uri::from_maybe_shared(bytes::Bytes::from(upstream_path)) {
        Ok(uri) => parts.uri = uri,
        Err(_) => {
            let mut res = problem(Problem::bad_request("the request path is not valid"));
            res.extensions_mut().insert(MatchedRoute::uncached(label));
            return res;
        }
    }
    // What `Connection` named went at the shield, which is always in front of the router.
    hygiene::strip_hop_by_hop_list(&mut parts.headers);
    match &gw.forwarded_prefix[index] {
        Some(p) => {
            parts.headers.insert(X_FORWARDED_PREFIX, p.clone());
        }
        // A client's own: by the set's filter, not a hashed lookup (rarely there).
        None => hygiene::remove_present(&mut parts.headers, &FORWARDED_PREFIX_SET),
    };
    let req = Request::from_parts(parts, body);
    let (mut res, cache) = match (&gw.cache, cache_key) {
        (Some(cache), Some(key)) => {
            let info = crate::cache::RouteInfo {
                label: label.clone(),
                deadline: gw.upstreams[index].policy().deadline,
            };
            let (res, outcome) = cache
                .serve(&info, key, req, |req| forward(&gw, index, req))
                .await;
            (res, Some(outcome))
        }
        _ => (forward(&gw, index, req).await, None),
    };
    res.extensions_mut().insert(MatchedRoute {
        route: label,
        cache,
    });
    res
}

/// Sends `req` through route `index`'s upstream stack; a failure becomes problem+json.
async fn forward(gw: &Gateway, index: usize, req: Request<ProxyBody>) -> Response<GatewayBody> {
    let upstream = &gw.upstreams[index];
    let result = upstream.send(req).await;
    match result {
        Ok(res) => {
            // Its hop-by-hop headers stayed with the connection that read it.
            let mut res = res.map(http_body_util::Either::Left);
            if res.status() == StatusCode::PAYLOAD_TOO_LARGE {
                // The instance refused the body before reading it all, so neither did
                // the gateway: the client's connection cannot be reused.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }
        Err(e) => {
            let p = classify(&e, upstream.service());
            tracing::warn!(route = %upstream.route(), status = p.status, error = %e, "upstream request failed");
            let unread = p.status == StatusCode::PAYLOAD_TOO_LARGE.as_u16()
                || p.status == StatusCode::BAD_REQUEST.as_u16();
            let mut res = problem(p);
            if unread {
                // The client's body was cut off mid-stream: the connection cannot be
                // reused.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            res
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What a [`Witness`] saw: the event, and the current span then.
    type Seen = Arc<Mutex<Vec<(&'static str, Option<tracing::Id>)>>>;

    /// Notes the current span when polled and when dropped; ready on its second poll.
    struct Witness {
        polled: bool,
        seen: Seen,
    }

    impl std::future::Future for Witness {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.seen
                .lock()
                .unwrap()
                .push(("poll", tracing::Span::current().id()));
            if std::mem::replace(&mut self.polled, true) {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    impl Drop for Witness {
        fn drop(&mut self) {
            self.seen
                .lock()
                .unwrap()
                .push(("drop", tracing::Span::current().id()));
        }
    }

    #[test]
    fn the_request_future_runs_and_is_dropped_inside_the_request_span() {
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry());
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        // A witness in a new request span: the future, what it will see, the span's id.
        let start = || {
            let seen = Seen::default();
            let span = tracing::info_span!("request");
            let id = span.id();
            let witness = Witness {
                polled: false,
                seen: seen.clone(),
            };
            (Box::pin(InSpan::new(witness, span)), seen, id)
        };
        // Run to the end: both polls and the drop inside, the span handed back.
        let (mut f, seen, id) = start();
        assert!(f.as_mut().poll(&mut cx).is_pending());
        let Poll::Ready(((), back)) = f.as_mut().poll(&mut cx) else {
            panic!("the inner future was ready");
        };
        assert_eq!(back.id(), id);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                ("poll", id.clone()),
                ("poll", id.clone()),
                ("drop", id.clone())
            ]
        );
        // Cancelled (dropped while pending): dropped inside the span too.
        let (mut f, seen, id) = start();
        assert!(f.as_mut().poll(&mut cx).is_pending());
        drop(f);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![("poll", id.clone()), ("drop", id)]
        );
    }
}
