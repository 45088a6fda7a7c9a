//! Prometheus metrics of one gateway (a `Registry` per app, so several apps can share a
//! test process): the edge's own request families and protections ([`EdgeMetrics`]:
//! refusals, in-flight, connections), composed with the upstream stack's families
//! ([`UpstreamMetrics`]: attempts, retries, hedges, breakers, instances), all under the
//! `gateway_` prefix. Hot-path handles are created once per route and cloned, so a
//! request costs counter increments, not label allocations.

use hotel_upstream::{UpstreamMetrics, latency_histogram};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::sync::Arc;

/// Labels of a request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route prefix, or `none` for unrouted requests.
    pub route: Arc<String>,
    /// HTTP method (`other` for extensions).
    pub method: &'static str,
    /// Response status.
    pub status: u16,
}

/// Labels naming a route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route prefix.
    pub route: Arc<String>,
}

/// Labels of a refused request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// Why: `missing_key`, `invalid_key`, `revoked_key`, `rate_limited`, `overloaded`,
    /// `service_overloaded`, `body_too_large`, `bad_framing`.
    pub reason: &'static str,
    /// The client name (`anonymous`, `public`, `unauthenticated` before a key was read).
    pub client: Arc<String>,
}

/// Labels of a refused connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// `limit` (over `max_connections`) or `slow` (no first byte in time).
    pub reason: &'static str,
}

/// Labels naming a serving worker.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// The worker's index, from 0 (see `worker_threads`).
    pub worker: u16,
}

/// Labels of a configuration or certificate reload.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `accepted` or `refused`.
    pub outcome: &'static str,
}

/// Labels of a TLS handshake on the public listener.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `ok`, or why it failed: `timeout`, `alert` (the client refused our certificate),
    /// `protocol` (no common version, cipher or ALPN; not TLS), `io`.
    pub outcome: &'static str,
}

/// Metrics of the edge protections (registered by [`Metrics::new`]).
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    /// Requests refused, by reason and client.
    pub rejections: Family<RejectionLabels, Counter>,
    /// Requests inside the global in-flight limit now.
    pub in_flight: Gauge,
    /// Client connections open now.
    pub connections: Gauge,
    /// Connections closed by the edge, by reason (`limit`, `slow`).
    pub connections_refused: Family<ConnLabels, Counter>,
    /// Client connections accepted, by the serving worker that accepted them.
    pub accepted: Family<WorkerLabels, Counter>,
}

impl EdgeMetrics {
    /// Registers every family in `r`.
    fn register(&self, r: &mut Registry) {
        r.register(
            "edge_rejections",
            "Requests refused at the edge, by reason and client",
            self.rejections.clone(),
        );
        r.register(
            "edge_in_flight",
            "Requests inside the global in-flight limit",
            self.in_flight.clone(),
        );
        r.register(
            "edge_connections",
            "Client connections open",
            self.connections.clone(),
        );
        r.register(
            "edge_connections_refused",
            "Client connections closed by the edge, by reason",
            self.connections_refused.clone(),
        );
        r.register(
            "edge_accepted",
            "Client connections accepted, by the serving worker that accepted them",
            self.accepted.clone(),
        );
    }
}

/// Every metric of one gateway.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `gateway_requests_total{route,method,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `gateway_request_duration_seconds{route}`.
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The upstream stack's families (attempts, retries, hedges, breakers, instances).
    pub upstream: Arc<UpstreamMetrics>,
    /// Edge protections: rejections by reason and client, in-flight, connections.
    pub edge: EdgeMetrics,
    /// The HTTP cache: outcomes, bytes, entries, evictions, stale answers served.
    pub cache: crate::cache::CacheMetrics,
    /// `gateway_config_reloads_total{outcome}`.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// `gateway_config_version`: the running configuration's version.
    pub config_version: Gauge,
    /// `gateway_tls_handshakes_total{outcome}`.
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    /// `gateway_tls_certificate_reloads_total{outcome}`.
    pub tls_cert_reloads: Family<ReloadLabels, Counter>,
    /// The slowest and the failed recent requests with their trace ids
    /// (`/admin/recent`); not a Prometheus family.
    pub recent: crate::recent::RecentRequests,
    /// `requests` and `duration` series as resolved on the request path.
    pub(crate) request_series: Resolved<RequestLabels, Counter>,
    pub(crate) duration_series: Resolved<RouteLabels, Histogram>,
}

/// Series of one family, resolved once per label set and kept: a read lock and a short
/// scan on the request path instead of `Family::get_or_create`, which hashes the labels
/// (SipHash over the route string) under the family's lock on every call. For families
/// whose series are never removed; past `MAX` label sets it resolves every time.
pub(crate) struct Resolved<K, M> {
    seen: std::sync::RwLock<Vec<(K, M)>>,
}

impl<K, M> Default for Resolved<K, M> {
    fn default() -> Self {
        Resolved {
            seen: std::sync::RwLock::new(Vec::new()),
        }
    }
}

impl<K, M> std::fmt::Debug for Resolved<K, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolved")
    }
}

impl<K: PartialEq + Clone, M: Clone> Resolved<K, M> {
    const MAX: usize = 64;

    /// The series of `key`, from `resolve` the first time.
    pub(crate) fn get(&self, key: &K, resolve: impl FnOnce(&K) -> M) -> M {
        {
            let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, m)) = seen.iter().find(|(k, _)| k == key) {
                return m.clone();
            }
        }
        let m = resolve(key);
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() < Self::MAX && !seen.iter().any(|(k, _)| k == key) {
            seen.push((key.clone(), m.clone()));
        }
        m
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric: the edge's request families, then the
    /// upstream families, then the protections (the order `/metrics` lists them in).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "requests",
            "Requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by route",
            duration.clone(),
        );
        let upstream = UpstreamMetrics::new(&mut registry);
        let edge = EdgeMetrics::default();
        edge.register(&mut registry);
        let cache = crate::cache::CacheMetrics::default();
        cache.register(&mut registry);
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        let config_version = Gauge::default();
        let tls_handshakes = Family::<HandshakeLabels, Counter>::default();
        let tls_cert_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome (accepted, refused)",
            config_reloads.clone(),
        );
        registry.register(
            "config_version",
            "Version of the running configuration (1 at startup, +1 per reload)",
            config_version.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the public listener, by outcome",
            tls_handshakes.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "Reloads of the public listener's certificate files, by outcome",
            tls_cert_reloads.clone(),
        );
        Arc::new(Metrics {
            config_reloads,
            config_version,
            tls_handshakes,
            tls_cert_reloads,
            registry,
            requests,
            duration,
            upstream,
            edge,
            cache,
            recent: crate::recent::RecentRequests::default(),
            request_series: Resolved::default(),
            duration_series: Resolved::default(),
        })
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        out
    }
}

/// The method label of a request.
pub fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
