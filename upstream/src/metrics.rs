//! Prometheus metrics of the upstream stack: attempts and in-flight per instance, breaker
//! state and transitions, retries, hedges and budget per route, instances per service.
//! The families are registered into a `Registry` the caller gives (the gateway's, under
//! its `gateway_` prefix), so one process can hold several stacks. Hot-path handles are
//! created once per route or instance and cloned, so a request costs counter increments,
//! not label allocations.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::sync::Arc;

/// Labels naming a route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    /// The route prefix.
    pub(crate) route: Arc<String>,
}

/// Labels of a retry.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RetryLabels {
    /// The route prefix.
    pub(crate) route: Arc<String>,
    /// Why it was retried.
    pub(crate) reason: &'static str,
}

/// Labels naming an instance.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct InstanceLabels {
    /// Service name.
    pub(crate) service: Arc<String>,
    /// Instance name.
    pub(crate) instance: Arc<String>,
}

/// Labels of an attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AttemptLabels {
    /// Service name.
    pub(crate) service: Arc<String>,
    /// Instance name.
    pub(crate) instance: Arc<String>,
    /// success, http_5xx, connect_error, timeout, transport_error, cancelled.
    pub(crate) outcome: &'static str,
}

/// Labels of a breaker transition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TransitionLabels {
    /// Service name.
    pub(crate) service: Arc<String>,
    /// Instance name.
    pub(crate) instance: Arc<String>,
    /// The new state: open, half_open, closed.
    pub(crate) to: &'static str,
}

/// Labels of an ejection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EjectionLabels {
    /// Service name.
    pub(crate) service: Arc<String>,
    /// Instance name.
    pub(crate) instance: Arc<String>,
    /// consecutive_failures, failure_percentage, stalled, refused.
    pub(crate) reason: &'static str,
}

/// Every ejection reason label.
pub(crate) const EJECTION_REASONS: [&str; 4] = [
    "consecutive_failures",
    "failure_percentage",
    "stalled",
    "refused",
];

/// Labels naming a service.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ServiceLabels {
    /// Service name.
    pub(crate) service: Arc<String>,
}

/// The buckets of every latency histogram: 0.5 ms doubling to about 16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

/// Every metric of the upstream stacks of one process object (a gateway, a client).
pub struct UpstreamMetrics {
    /// `upstream_attempts_total{service,instance,outcome}`.
    pub(crate) attempts: Family<AttemptLabels, Counter>,
    /// `upstream_attempt_duration_seconds{service,instance}`.
    pub(crate) attempt_duration: Family<InstanceLabels, Histogram, fn() -> Histogram>,
    /// `retries_total{route,reason}`.
    pub(crate) retries: Family<RetryLabels, Counter>,
    /// `hedges_total{route}`.
    pub(crate) hedges: Family<RouteLabels, Counter>,
    /// `retry_budget_exhausted_total{route}`.
    pub(crate) budget_exhausted: Family<RouteLabels, Counter>,
    /// `breaker_state{service,instance}`: 0 closed, 1 open, 2 half-open.
    pub(crate) breaker_state: Family<InstanceLabels, Gauge>,
    /// `breaker_transitions_total{service,instance,to}`.
    pub(crate) breaker_transitions: Family<TransitionLabels, Counter>,
    /// `upstream_ejections_total{service,instance,reason}`.
    pub(crate) ejections: Family<EjectionLabels, Counter>,
    /// `upstream_in_flight{service,instance}`.
    pub(crate) in_flight: Family<InstanceLabels, Gauge>,
    /// `instances{service}`: instances known from discovery.
    pub(crate) instances: Family<ServiceLabels, Gauge>,
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamMetrics")
    }
}

impl UpstreamMetrics {
    /// Creates every upstream metric and registers it into `registry` (whose prefix, if
    /// any, comes first in the names).
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Self::unregistered();
        m.register(registry);
        m
    }

    /// Metrics registered nowhere (yet): for a stack whose numbers nobody scrapes, or
    /// that [`UpstreamMetrics::register`] adds to a registry later.
    pub fn unregistered() -> Arc<Self> {
        Arc::new(UpstreamMetrics {
            attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            hedges: Family::default(),
            budget_exhausted: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            ejections: Family::default(),
            in_flight: Family::default(),
            instances: Family::default(),
        })
    }

    /// Registers every family into `registry` (whose prefix, if any, comes first).
    pub fn register(&self, registry: &mut Registry) {
        let m = self;
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
            "upstream_ejections",
            "Instances ejected, by reason: consecutive_failures, failure_percentage, stalled, refused",
            m.ejections.clone(),
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
    }

    /// Removes the series of an instance that left, so the families do not grow forever.
    pub(crate) fn forget_instance(&self, service: &Arc<String>, instance: &Arc<String>) {
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
        for reason in EJECTION_REASONS {
            self.ejections.remove(&EjectionLabels {
                service: service.clone(),
                instance: instance.clone(),
                reason,
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
pub(crate) const OUTCOMES: [&str; 7] = [
    "success",
    "http_5xx",
    "connect_error",
    "timeout",
    "transport_error",
    "cancelled",
    "body_refused",
];
