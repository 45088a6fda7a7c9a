//! The per-instance circuit breaker, as a readiness gate (linkerd2-proxy's `Gate` plus
//! its consecutive-failures accrual, in one service).
//!
//! `Closed` passes everything. `failures` consecutive failures (connect errors, 5xx,
//! per-try timeouts) open it: `poll_ready` is then `Pending` until the open period ends,
//! so the balancer stops choosing this instance but keeps it (an `Err` from `poll_ready`
//! would make the balancer drop the endpoint for good). After the period one request is
//! let through as a probe (`HalfOpen`); while it is in flight the gate stays shut. The
//! probe's success closes the breaker; its failure reopens it for twice as long, up to
//! `backoff_max`, with jitter so a fleet of gateways does not probe in lockstep.
//!
//! The ejection cap keeps a burst of errors from emptying a service: opening for
//! errors is refused when it would eject more than `max_ejection_percent` of the
//! service's instances (at least one may go), and errors never eject the last instance
//! left in rotation. That one is slow or failing, but it is all there is: ejecting it
//! turns a moment of slowness (per-try timeouts on a loaded machine) into "no healthy
//! instance" 503s for a whole open period, as Envoy's panic threshold also avoids. An
//! instance that refuses connections is not capacity, so it is ejected regardless and
//! is left out of the count: the cap applies to the instances that accept connections.
//!
//! Stalls: a hung instance (frozen process, stuck event loop) answers nothing, and
//! waiting for `failures` per-try timeouts costs seconds. So the gate also tracks the
//! attempts in flight and the last moment the instance answered. When attempts are in
//! flight (or ended unanswered) and nothing has been answered for `stall_after` (and for
//! four times the service's recent p99, so a slow service is not called stalled), one
//! health probe (`GET /healthz`, see [`Prober`]) is sent. An instance that is only slow,
//! its requests waiting on something else, answers it at once and stays in rotation. One
//! that leaves the probe unanswered for [`STALL_CONFIRM`] is ejected (within the cap); its
//! in-flight attempts are left to the hedges and per-try timeouts above, and the probe
//! keeps waiting, as long as `backoff_max`: a frozen instance answers it the moment it
//! resumes, which closes the breaker, so the instance is back in rotation within
//! milliseconds of recovering while receiving nothing else in between. A late success of
//! any attempt closes it too. A probe answered with an error (or not at all) turns the
//! stall into an ordinary open period with backoff.
//!
//! Refused connections: nothing listens, so a probe costs a refused connect. Such an
//! instance is watched by health probes every [`REFUSED_PROBE_INTERVAL`] (jittered)
//! instead of an open period that grows, so one restarted on its address (static
//! instances, or a quick restart inside its registry lease) is back within a fraction of
//! a second.
//!
//! [`STALL_CONFIRM`]: stall::STALL_CONFIRM
//! [`REFUSED_PROBE_INTERVAL`]: stall::REFUSED_PROBE_INTERVAL
//!
//! Failure percentage: an instance failing more than a threshold of its attempts over
//! a sliding window is ejected while the rest of the service is healthy, and health
//! probes bring it back; a returning instance ramps its share up over `slow_start`
//! (see [`outlier`]).
//!
//! Layout: [`state`] the state machine ([`BreakerShared`]: closed, open with backoff,
//! half-open, probing), [`cap`] the ejection cap, [`outlier`] the failure windows and slow start, [`stall`] stall and refusal detection
//! with their health probes, and the tower pieces: [`layer`] ([`BreakerLayer`]),
//! [`service`] (the [`Breaker`] gate) and [`future`] ([`BreakerFuture`](future::BreakerFuture)).

mod cap;
mod future;
mod layer;
mod outlier;
mod service;
mod stall;
mod state;
#[cfg(test)]
mod tests;

pub(crate) use cap::EjectionCap;
pub(crate) use layer::BreakerLayer;
pub(crate) use service::Breaker;
pub(crate) use stall::{Prober, StallWatch};
pub(crate) use state::BreakerShared;

/// What the admin API reports for a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Taking traffic.
    Closed,
    /// Ejected until its open period ends.
    Open,
    /// Letting one probe through.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `breaker_state` gauge (`gateway_breaker_state` in the gateway).
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Hooks the breaker calls on transitions (metrics); logs are written by the breaker.
pub(crate) trait TransitionSink: Send + Sync + 'static {
    /// The breaker moved to `to`.
    fn transition(&self, to: BreakerState);
    /// The instance was ejected, for `reason` (`consecutive_failures`,
    /// `failure_percentage`, `stalled`, `refused`).
    fn ejected(&self, _reason: &'static str) {}
}

impl TransitionSink for () {
    fn transition(&self, _: BreakerState) {}
}
