//! One instance as the balancer sees it: its statistics, and the [`Observe`] service that
//! turns a routed request into an attempt on that instance (absolute URI, trace context,
//! the client span) and records how the attempt went.

use crate::{
    breaker::BreakerShared,
    error::{BoxError, FailureKind},
    latency::LatencyWindow,
    metrics::{AttemptLabels, InstanceLabels, UpstreamMetrics},
    policy::Origin,
};
use http::{Request, Response, Uri, uri::PathAndQuery};
use pin_project_lite::pin_project;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use serde::Serialize;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::SystemTime,
};
use tokio::time::Instant;
use tracing::{Instrument, Span, instrument::Instrumented};

/// Why this attempt exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptKind {
    /// The request's first attempt.
    First,
    /// A retry, with the reason.
    Retry(&'static str),
    /// A hedge sent because the first attempt was slow.
    Hedge,
}

impl AttemptKind {
    /// Span attribute value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AttemptKind::First => "first",
            AttemptKind::Retry(_) => "retry",
            AttemptKind::Hedge => "hedge",
        }
    }
}

/// The instances a request has been sent to, shared by all its attempts (request
/// extension), so a retry or hedge can go somewhere else.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    tried: Mutex<Tried>,
}

/// The instances tried, in order: the first few inline (most requests make one
/// attempt, a retried or hedged one two or three), the rest on the heap.
#[derive(Debug, Default)]
struct Tried {
    first: [Option<Arc<str>>; 3],
    rest: Vec<Arc<str>>,
}

impl Tried {
    fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.first
            .iter()
            .map_while(Option::as_ref)
            .chain(&self.rest)
    }

    fn len(&self) -> usize {
        self.first.iter().take_while(|i| i.is_some()).count() + self.rest.len()
    }
}

impl Attempts {
    /// Records that attempt number `n` (1-based, returned) goes to `instance`.
    pub(crate) fn push(&self, instance: Arc<str>) -> u32 {
        let mut t = self.tried.lock().unwrap_or_else(|p| p.into_inner());
        match t.first.iter_mut().find(|i| i.is_none()) {
            Some(slot) => *slot = Some(instance),
            None => t.rest.push(instance),
        }
        t.len() as u32
    }

    /// Whether `instance` was tried already.
    pub(crate) fn contains(&self, instance: &str) -> bool {
        self.tried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|i| &**i == instance)
    }

    /// How many attempts went out so far (the number of the latest).
    pub(crate) fn count(&self) -> u32 {
        self.tried.lock().unwrap_or_else(|p| p.into_inner()).len() as u32
    }

    /// Whether nothing was tried yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.tried.lock().unwrap_or_else(|p| p.into_inner()).first[0].is_none()
    }

    /// The instances tried, in order.
    pub(crate) fn tried(&self) -> Vec<Arc<str>> {
        self.tried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// Live statistics of one instance (the admin status page reads them).
#[derive(Debug)]
pub(crate) struct EndpointStats {
    /// Service name.
    pub service: Arc<str>,
    /// Instance name.
    pub instance: Arc<str>,
    /// Where it is.
    pub origin: Origin,
    /// Its breaker.
    pub breaker: Arc<BreakerShared>,
    in_flight: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// EWMA of attempt latency in microseconds, as f64 bits.
    ewma_us: AtomicU64,
    /// When `ewma_us` last took a sample, in nanoseconds since `created`.
    ewma_at_ns: AtomicU64,
    created: Instant,
    last_error: Mutex<Option<LastError>>,
    handles: Handles,
}

/// The most recent failure of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    /// What happened (connect_error, timeout, http_5xx, ...).
    pub kind: &'static str,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Metric handles of one instance, created once.
#[derive(Debug, Clone)]
struct Handles {
    outcomes: [Counter; 7],
    duration: Histogram,
    in_flight: Gauge,
}

/// A JSON view of an instance for `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    /// Instance name.
    pub instance: String,
    /// Base URL.
    pub address: String,
    /// Breaker state.
    pub breaker: crate::breaker::BreakerState,
    /// Attempts in flight.
    pub in_flight: u64,
    /// EWMA latency of attempts in milliseconds.
    pub ewma_latency_ms: f64,
    /// Attempts sent.
    pub requests: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Times the breaker opened.
    pub ejections: u64,
    /// The latest failure.
    pub last_error: Option<LastError>,
}

impl EndpointStats {
    /// Statistics of a new instance, with its metric series.
    pub(crate) fn new(
        service: Arc<str>,
        instance: Arc<str>,
        origin: Origin,
        breaker: Arc<BreakerShared>,
        metrics: &UpstreamMetrics,
    ) -> Arc<Self> {
        let svc = Arc::new(service.to_string());
        let inst = Arc::new(instance.to_string());
        let outcome = |o: &'static str| {
            metrics.attempts.get_or_create_owned(&AttemptLabels {
                service: svc.clone(),
                instance: inst.clone(),
                outcome: o,
            })
        };
        let il = InstanceLabels {
            service: svc.clone(),
            instance: inst.clone(),
        };
        let handles = Handles {
            outcomes: crate::metrics::OUTCOMES.map(outcome),
            duration: metrics.attempt_duration.get_or_create_owned(&il),
            in_flight: metrics.in_flight.get_or_create_owned(&il),
        };
        Arc::new(EndpointStats {
            service,
            instance,
            origin,
            breaker,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma_us: AtomicU64::new(0f64.to_bits()),
            ewma_at_ns: AtomicU64::new(0),
            created: Instant::now(),
            last_error: Mutex::new(None),
            handles,
        })
    }

    /// The status-page view.
    pub(crate) fn view(&self) -> EndpointView {
        EndpointView {
            instance: self.instance.to_string(),
            address: self.origin.to_string(),
            breaker: self.breaker.state(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ewma_latency_ms: (f64::from_bits(self.ewma_us.load(Ordering::Relaxed)) / 1000.0
                * 1000.0)
                .round()
                / 1000.0,
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            ejections: self.breaker.ejections(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Counts one attempt that ended at `now` after `elapsed` (one clock read serves
    /// both).
    fn finish(&self, outcome: &'static str, elapsed: std::time::Duration, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.handles.in_flight.dec();
        let idx = crate::metrics::OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(4);
        self.handles.outcomes[idx].inc();
        if outcome == "cancelled" {
            return;
        }
        self.handles.duration.observe(elapsed.as_secs_f64());
        if outcome == "body_refused" {
            // The instance refused a body past its own limit: an answer of sorts, and
            // no sign of trouble, but not a latency sample either.
            return;
        }
        if outcome == "success" {
            // Answers only: a timeout says "slower than the per-try timeout" and a refused
            // connection says nothing about speed. Counting them would leave a recovered
            // instance (frozen, then resumed) looking seconds slow, so the balancer would
            // starve it until the estimate decayed; its in-flight count already steers
            // traffic away while it hangs.
            let sample = elapsed.as_secs_f64() * 1e6;
            let old = f64::from_bits(self.ewma_us.load(Ordering::Relaxed));
            let new = if old == 0.0 {
                sample
            } else {
                old * 0.8 + sample * 0.2
            };
            self.ewma_us.store(new.to_bits(), Ordering::Relaxed);
            self.ewma_at_ns.store(
                now.duration_since(self.created).as_nanos() as u64,
                Ordering::Relaxed,
            );
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            let at_unix_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastError {
                kind: outcome,
                at_unix_ms,
            });
        }
    }
}

/// Wraps the shared client for one instance.
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    stats: Arc<EndpointStats>,
    latency: Arc<LatencyWindow>,
}

impl<S> Observe<S> {
    /// Attempts through `inner` to the instance `stats` describes; latencies also feed
    /// the service's `latency` window (the hedge delay).
    pub(crate) fn new(inner: S, stats: Arc<EndpointStats>, latency: Arc<LatencyWindow>) -> Self {
        Observe {
            inner,
            stats,
            latency,
        }
    }
}

/// How fast an instance's estimate drifts without new samples.
const ESTIMATE_DECAY_NS: f64 = 2e9;

/// Where an idle instance's estimate drifts to, as a share of the service's median: below
/// the median, so that it ends up under the instances that keep answering at about the
/// median and is tried again. Drifting to the median itself could leave an instance that
/// was slow once unpicked for good whenever the median sat above the others' estimates
/// (seen under load: one of three replicas got no request in 30 s).
const IDLE_TARGET: f64 = 0.5;

/// The balancer's load of an instance: its latency estimate times its attempts in flight
/// plus one (peak-EWMA's cost function, from statistics kept here anyway, without a
/// lock per request). The estimate is the EWMA of its answers, drifting towards half the
/// service's median ([`IDLE_TARGET`]) while it takes no new samples: an instance p2c
/// stopped choosing because it was slow once gets tried again, as with peak-EWMA's
/// decay.
///
/// An instance without answers yet (a new one) is tried first, one attempt at a time:
/// idle, its load is 0; with an attempt in flight, the service's median. Starting it at
/// the median could leave it unpicked for good while the median sat above the others'
/// estimates (seen in drill 4: a replica started after a registry restart got no request
/// in 15 s).
impl<S> crate::balance::LoadAt for Observe<S> {
    fn load_at(&self, now: Instant) -> f64 {
        let stats = &self.stats;
        let prior = self.latency.median().map_or(0.0, |d| d.as_micros() as f64);
        let ewma = f64::from_bits(stats.ewma_us.load(Ordering::Relaxed));
        let in_flight = stats.in_flight.load(Ordering::Relaxed);
        let estimate = if ewma == 0.0 {
            // No answer yet: tried first while idle (it gets a sample at once; its
            // breaker handles one that only fails), at the median while one is out.
            if in_flight == 0 { 0.0 } else { prior }
        } else {
            let now_ns = now.saturating_duration_since(stats.created).as_nanos() as u64;
            let idle = now_ns.saturating_sub(stats.ewma_at_ns.load(Ordering::Relaxed)) as f64;
            let target = prior * IDLE_TARGET;
            target + (ewma - target) * (-idle / ESTIMATE_DECAY_NS).exp()
        };
        estimate * (in_flight + 1) as f64
    }
}

impl<S, B, RB> tower::Service<Request<B>> for Observe<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>, Error = BoxError>,
    B: http_body::Body,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let kind = req
            .extensions()
            .get::<AttemptKind>()
            .copied()
            .unwrap_or(AttemptKind::First);
        let origin = &self.stats.origin;
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(origin.scheme.clone());
        parts.authority = Some(origin.authority.clone());
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        // Instances speak HTTP/1.1 whatever the client spoke to the gateway.
        *req.version_mut() = http::Version::HTTP_11;
        // The attempt span exists for trace viewers only.
        let span = if hotel_common::telemetry::is_exporting() {
            tracing::info_span!(
                "upstream attempt",
                otel.name = %format_args!("{} {}", req.method(), self.stats.service),
                otel.kind = "client",
                otel.status_code = tracing::field::Empty,
                http.request.method = %req.method(),
                http.response.status_code = tracing::field::Empty,
                server.address = %origin.authority,
                peer.service = %self.stats.service,
                hotel.instance = %self.stats.instance,
                // The balancer recorded this attempt just before calling this instance
                // (one synchronous step, so no other attempt came in between).
                hotel.attempt = crate::retry::attempts_of(req.extensions()).map_or(1, |a| a.count()),
                hotel.attempt.kind = kind.as_str(),
                hotel.retry.reason = tracing::field::Empty,
                hotel.outcome = tracing::field::Empty,
            )
        } else {
            // Nothing exports spans: the attempt needs none (logs carry the request span
            // ids, and `traceparent` continues the request span). Saves a span per attempt.
            Span::none()
        };
        if let AttemptKind::Retry(reason) = kind {
            span.record("hotel.retry.reason", reason);
        }
        if span.is_disabled() {
            // No attempt span: the caller's context, as `inject` finds it.
            hotel_common::telemetry::inject(req.headers_mut());
        } else {
            // The attempt span's context directly: entering it just to read it back as
            // the current span costs an enter and an exit in every layer.
            hotel_common::telemetry::inject_span(&span, req.headers_mut());
        }
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        self.stats.handles.in_flight.inc();
        let has_body = !req.body().is_end_stream();
        let fut = self.inner.call(req).instrument(span.clone());
        ObserveFuture {
            inner: fut,
            has_body,
            guard: Finish {
                stats: self.stats.clone(),
                latency: self.latency.clone(),
                span,
                start: Instant::now(),
                done: false,
            },
        }
    }
}

/// Records the attempt's outcome once: when it finishes, or as cancelled when dropped.
#[derive(Debug)]
struct Finish {
    stats: Arc<EndpointStats>,
    latency: Arc<LatencyWindow>,
    span: Span,
    start: Instant,
    done: bool,
}

impl Finish {
    fn record(&mut self, outcome: &'static str, status: Option<u16>) {
        self.done = true;
        let now = Instant::now();
        let elapsed = now.duration_since(self.start);
        self.stats.finish(outcome, elapsed, now);
        if outcome != "cancelled" {
            self.latency.record(elapsed);
        }
        self.span.record("hotel.outcome", outcome);
        if let Some(s) = status {
            self.span.record("http.response.status_code", i64::from(s));
        }
        if outcome != "success" {
            let message = match status {
                Some(s) => format!("{outcome}: HTTP {s}"),
                None => outcome.to_owned(),
            };
            hotel_common::telemetry::record_error(&self.span, message);
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        if !self.done {
            self.record("cancelled", None);
        }
    }
}

pin_project! {
    /// Response future of [`Observe`].
    #[derive(Debug)]
    pub struct ObserveFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        // Whether the request carried a body: a write that fails then means the
        // instance stopped reading it.
        has_body: bool,
        guard: Finish,
    }
}

impl<F, RB> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response<RB>, BoxError>>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut out = std::task::ready!(this.inner.poll(cx));
        if let Err(e) = &out
            && *this.has_body
            && FailureKind::of(e.as_ref()) == FailureKind::Transport
            && crate::error::is_write_failure(e.as_ref())
        {
            // The connection broke while the body was being written: the instance
            // stopped reading it, as a server does past its own body limit (it answers
            // 413 early and closes). Not a failure of the instance, and not retried.
            if let Err(e) = out {
                out = Err(Box::new(crate::error::BodyRefused(e)));
            }
        }
        match &out {
            // Cancelled by the request's deadline, as when the attempt is dropped.
            _ if crate::error::cut_by_deadline(&out) => this.guard.record("cancelled", None),
            Ok(res) => {
                let s = res.status();
                this.guard.record(
                    if s.is_server_error() {
                        "http_5xx"
                    } else {
                        "success"
                    },
                    Some(s.as_u16()),
                );
            }
            Err(e) => {
                let kind = FailureKind::of(e.as_ref());
                this.guard.record(kind.as_str(), None);
                let _g = this.guard.span.enter();
                tracing::debug!(instance = %this.guard.stats.instance, error = %e, "attempt failed");
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_keep_every_instance_in_order_past_the_inline_ones() {
        let a = Attempts::default();
        assert!(a.is_empty());
        for (n, name) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            assert_eq!(a.push(name.into()), n as u32 + 1);
        }
        assert!(!a.is_empty());
        assert!(a.contains("a") && a.contains("e") && !a.contains("f"));
        let tried: Vec<String> = a.tried().iter().map(|s| s.to_string()).collect();
        assert_eq!(tried, ["a", "b", "c", "d", "e"]);
    }
}
