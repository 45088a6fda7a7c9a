//! Prometheus metrics of one gateway (a `Registry` per app, so several apps can share a
//! test process). Hot-path handles are created once per route or instance and cloned,
//! so a request costs counter increments, not label allocations.
//!
//! Two groups of families: the upstream ones (requests, attempts, retries, hedges,
//! breakers, instances) and the edge ones ([`EdgeMetrics`]: refusals, in-flight,
//! connections).

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

/// Labels of a retry.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The route prefix.
    pub route: Arc<String>,
    /// Why it was retried.
    pub reason: &'static str,
}

/// Labels naming an instance.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    /// Service name.
    pub service: Arc<String>,
    /// Instance name.
    pub instance: Arc<String>,
}

/// Labels of an attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Service name.
    pub service: Arc<String>,
    /// Instance name.
    pub instance: Arc<String>,
    /// success, http_5xx, connect_error, timeout, transport_error, cancelled.
    pub outcome: &'static str,
}

/// Labels of a breaker transition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// Service name.
    pub service: Arc<String>,
    /// Instance name.
    pub instance: Arc<String>,
    /// The new state: open, half_open, closed.
    pub to: &'static str,
}

/// Labels naming a service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service name.
    pub service: Arc<String>,
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
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

/// Every metric of one gateway.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `gateway_requests_total{route,method,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `gateway_request_duration_seconds{route}`.
    pub duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `gateway_upstream_attempts_total{service,instance,outcome}`.
    pub attempts: Family<AttemptLabels, Counter>,
    /// `gateway_upstream_attempt_duration_seconds{service,instance}`.
    pub attempt_duration: Family<InstanceLabels, Histogram, fn() -> Histogram>,
    /// `gateway_retries_total{route,reason}`.
    pub retries: Family<RetryLabels, Counter>,
    /// `gateway_hedges_total{route}`.
    pub hedges: Family<RouteLabels, Counter>,
    /// `gateway_retry_budget_exhausted_total{route}`.
    pub budget_exhausted: Family<RouteLabels, Counter>,
    /// `gateway_breaker_state{service,instance}`: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<InstanceLabels, Gauge>,
    /// `gateway_breaker_transitions_total{service,instance,to}`.
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    /// `gateway_upstream_in_flight{service,instance}`.
    pub in_flight: Family<InstanceLabels, Gauge>,
    /// `gateway_instances{service}`: instances known from discovery.
    pub instances: Family<ServiceLabels, Gauge>,
    /// Edge protections: rejections by reason and client, in-flight, connections.
    pub edge: EdgeMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("gateway");
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            hedges: Family::default(),
            budget_exhausted: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            in_flight: Family::default(),
            instances: Family::default(),
            edge: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests answered, by route, method and status",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response head, by route",
            m.duration.clone(),
        );
        registry.register(
            "upstream_attempts",
            "Attempts sent to instances, by outcome",
            m.attempts.clone(),
        );
        registry.register(
            "upstream_attempt_duration_seconds",
            "Duration of attempts, by instance",
            m.attempt_duration.clone(),
        );
        registry.register(
            "retries",
            "Retries sent, by route and reason",
            m.retries.clone(),
        );
        registry.register("hedges", "Hedged attempts sent, by route", m.hedges.clone());
        registry.register(
            "retry_budget_exhausted",
            "Retries or hedges not sent because the budget was empty",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "breaker_state",
            "Breaker state per instance: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Breaker transitions per instance and new state",
            m.breaker_transitions.clone(),
        );
        registry.register(
            "upstream_in_flight",
            "Attempts in flight per instance",
            m.in_flight.clone(),
        );
        registry.register(
            "instances",
            "Instances known per service",
            m.instances.clone(),
        );
        m.edge.register(&mut registry);
        Arc::new(Metrics { registry, ..m })
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        out
    }

    /// Removes the series of an instance that left, so the families do not grow forever.
    pub fn forget_instance(&self, service: &Arc<String>, instance: &Arc<String>) {
        let l = InstanceLabels {
            service: service.clone(),
            instance: instance.clone(),
        };
        self.breaker_state.remove(&l);
        self.in_flight.remove(&l);
        self.attempt_duration.remove(&l);
        for outcome in OUTCOMES {
            self.attempts.remove(&AttemptLabels {
                service: service.clone(),
                instance: instance.clone(),
                outcome,
            });
        }
        for to in ["open", "half_open", "closed"] {
            self.breaker_transitions.remove(&TransitionLabels {
                service: service.clone(),
                instance: instance.clone(),
                to,
            });
        }
    }
}

/// Every attempt outcome label.
pub const OUTCOMES: [&str; 6] = [
    "success",
    "http_5xx",
    "connect_error",
    "timeout",
    "transport_error",
    "cancelled",
];

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
