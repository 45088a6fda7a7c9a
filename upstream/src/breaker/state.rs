//! The state machine of one instance's breaker: closed (counting consecutive
//! failures), open (a jittered, doubling backoff), half-open (one probe), probing
//! (ejected as stalled or refusing connections; health probes own its recovery).

use super::{
    BreakerState, TransitionSink,
    cap::{EjectionCap, Slot},
    outlier::{self, Window},
    stall::StallWatch,
};
use crate::{error::FailureKind, policy::BreakerPolicy};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::Waker,
    time::Duration,
};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(super) enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
    /// Ejected as stalled, refusing connections or failing too often: health probes own
    /// its recovery (how, [`Recovery`] says).
    Probing,
}

/// Why an instance in [`State::Probing`] was ejected, which decides what brings it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recovery {
    /// Stalled: any answer (to the probe or a late one to a real request).
    Stalled,
    /// Refusing connections: any answer to a probe sent every 250 ms.
    Refused,
    /// Failing too high a percentage: this many probes passed in a row so far, out of
    /// [`outlier::RATE_RECOVERY_PROBES`].
    FailureRate { passed: u32 },
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) state: State,
    /// The open period to use next time it opens.
    pub(super) backoff: Duration,
    /// The ejection slot this breaker holds, if any.
    pub(super) holds_slot: Option<Slot>,
    /// The gate's waker while it waits for a probe to finish.
    pub(super) waiter: Option<Waker>,
    /// Since when a silent, still closed instance has had a health probe in flight: it
    /// is ejected if the probe is not answered within
    /// [`STALL_CONFIRM`](super::stall::STALL_CONFIRM).
    pub(super) suspect_since: Option<Instant>,
    /// What brings a probing instance back.
    pub(super) recovery: Recovery,
}

/// State shared by a breaker service and its in-flight response futures.
pub(crate) struct BreakerShared {
    /// Instance name for logs.
    pub instance: Arc<str>,
    /// Service name for logs.
    pub service: Arc<str>,
    pub(super) policy: BreakerPolicy,
    pub(super) cap: Arc<EjectionCap>,
    pub(super) inner: Mutex<Inner>,
    pub(super) ejections: AtomicU64,
    pub(super) sink: Box<dyn TransitionSink>,
    /// Attempts in flight through the gate.
    pub(super) in_flight: AtomicU32,
    /// Since when the instance owes an answer, in nanoseconds since `epoch`: its last
    /// answer, or the start of a busy period that followed one.
    pub(super) quiet_since_ns: AtomicU64,
    /// Attempts ended without an answer (per-try timeouts, broken connections) since the
    /// last answer: the silence goes on even with nothing in flight.
    pub(super) owes: AtomicBool,
    pub(super) epoch: Instant,
    pub(super) stall: Option<StallWatch>,
    /// This instance's attempts and failures over the failure-percentage window.
    pub(super) window: Window,
    /// When the breaker last closed after an ejection (nanoseconds since `epoch`; 0:
    /// never): the start of its slow start.
    pub(super) returned_ns: AtomicU64,
}

impl std::fmt::Debug for BreakerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerShared")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl BreakerShared {
    /// A closed breaker for one instance, without stall ejection (tests).
    #[cfg(test)]
    pub(crate) fn new(
        service: Arc<str>,
        instance: Arc<str>,
        policy: BreakerPolicy,
        cap: Arc<EjectionCap>,
        sink: Box<dyn TransitionSink>,
    ) -> Arc<Self> {
        Self::build(service, instance, policy, cap, sink, None)
    }

    pub(super) fn build(
        service: Arc<str>,
        instance: Arc<str>,
        policy: BreakerPolicy,
        cap: Arc<EjectionCap>,
        sink: Box<dyn TransitionSink>,
        stall: Option<StallWatch>,
    ) -> Arc<Self> {
        Arc::new(BreakerShared {
            instance,
            service,
            policy,
            cap,
            inner: Mutex::new(Inner {
                state: State::Closed { consecutive: 0 },
                backoff: policy.backoff,
                holds_slot: None,
                waiter: None,
                suspect_since: None,
                recovery: Recovery::Stalled,
            }),
            ejections: AtomicU64::new(0),
            sink,
            in_flight: AtomicU32::new(0),
            quiet_since_ns: AtomicU64::new(0),
            owes: AtomicBool::new(false),
            epoch: Instant::now(),
            stall,
            window: Window::new(policy.failure_window),
            returned_ns: AtomicU64::new(0),
        })
    }

    /// The same breaker with stall detection (see the module docs).
    pub(crate) fn with_stall_watch(
        service: Arc<str>,
        instance: Arc<str>,
        policy: BreakerPolicy,
        cap: Arc<EjectionCap>,
        sink: Box<dyn TransitionSink>,
        stall: StallWatch,
    ) -> Arc<Self> {
        Self::build(service, instance, policy, cap, sink, Some(stall))
    }
}

impl BreakerShared {
    pub(super) fn close(&self, g: &mut Inner, why: &str) {
        g.state = State::Closed { consecutive: 0 };
        g.suspect_since = None;
        g.backoff = self.policy.backoff;
        if let Some(slot) = g.holds_slot.take() {
            self.cap.release(slot);
        }
        // The answer is progress: a stall needs a whole new silent period.
        self.quiet_since_ns.store(self.now_ns(), Ordering::Relaxed);
        // Back from an ejection: failures from before do not count, and its share ramps
        // up (slow start).
        self.window.reset();
        self.returned_ns
            .store(self.now_ns().max(1), Ordering::Relaxed);
        self.owes.store(false, Ordering::Relaxed);
        tracing::info!(service = %self.service, instance = %self.instance, reason = why, "breaker closed");
        self.sink.transition(BreakerState::Closed);
        if let Some(w) = g.waiter.take() {
            w.wake();
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge routing: the state stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now, for status pages (an expired open period reads as half-open).
    pub(crate) fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Probing => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times this breaker has opened.
    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub(super) fn jittered(d: Duration) -> Duration {
        // Between 75 % and 125 % of the period.
        d.mul_f64(rand::random_range(0.75..1.25))
    }

    pub(super) fn open(&self, g: &mut Inner, why: &str) {
        let period = Self::jittered(g.backoff);
        g.state = State::Open {
            until: Instant::now() + period,
        };
        g.backoff = (g.backoff * 2).min(self.policy.backoff_max);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            service = %self.service,
            instance = %self.instance,
            reason = why,
            open_for_ms = period.as_millis() as u64,
            "breaker opened"
        );
        self.sink.transition(BreakerState::Open);
    }

    /// The slow-start weight now: below 1 for `slow_start` after the breaker closed
    /// again (see [`outlier`]).
    pub(crate) fn weight(&self) -> f64 {
        let returned = self.returned_ns.load(Ordering::Relaxed);
        if returned == 0 || self.policy.slow_start.is_zero() {
            return 1.0;
        }
        let since = Duration::from_nanos(self.now_ns().saturating_sub(returned));
        outlier::slow_start_weight(since, self.policy.slow_start)
    }

    /// Ejects an instance whose failure percentage over the window is above the
    /// threshold, when the rest of the service is healthy and the cap allows; health
    /// probes own its recovery (an open period without a prober).
    fn check_failure_rate(self: &Arc<Self>, g: &mut Inner) {
        let p = &self.policy;
        let (requests, failures) = self.window.totals();
        if requests < u64::from(p.failure_min_requests)
            || !outlier::above(requests, failures, p.failure_threshold)
        {
            return;
        }
        let (all, all_failed) = self.cap.window.totals();
        let (rest, rest_failed) = (
            all.saturating_sub(requests),
            all_failed.saturating_sub(failures),
        );
        if rest == 0 || outlier::above(rest, rest_failed, p.failure_threshold) {
            // Alone, or the whole service fails alike: not this instance's fault.
            return;
        }
        let Some(slot) = self.cap.try_acquire(false) else {
            if !self.cap.capped_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    service = %self.service,
                    instance = %self.instance,
                    max_ejection_percent = p.max_ejection_percent,
                    failure_percent = failures * 100 / requests,
                    "ejection cap reached: keeping an instance with a high failure percentage in rotation"
                );
            }
            return;
        };
        g.holds_slot = Some(slot);
        self.sink.ejected("failure_percentage");
        let percent = failures * 100 / requests;
        let rest_percent = rest_failed * 100 / rest;
        if self.stall.is_none() {
            tracing::warn!(
                service = %self.service,
                instance = %self.instance,
                failure_percent = percent,
                requests,
                "instance failing too often"
            );
            self.open(g, "failure_percentage");
            return;
        }
        g.state = State::Probing;
        g.recovery = Recovery::FailureRate { passed: 0 };
        g.suspect_since = None;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            service = %self.service,
            instance = %self.instance,
            reason = "failure_percentage",
            failure_percent = percent,
            requests,
            service_failure_percent = rest_percent,
            threshold_percent = p.failure_threshold,
            "breaker opened: failing far more often than the rest of its service; \
             health probes bring it back"
        );
        self.sink.transition(BreakerState::Open);
        self.spawn_probes(outlier::RATE_PROBE_INTERVAL, false);
    }

    /// Records the outcome of a request that ended at `now`; `probe` says whether it was
    /// the half-open probe.
    pub(super) fn record(
        self: &Arc<Self>,
        failure: Option<FailureKind>,
        probe: bool,
        now: Instant,
    ) {
        let mut g = self.lock();
        if let State::Closed { .. } = g.state {
            self.window.record_at(failure.is_some(), now);
            self.cap.window.record_at(failure.is_some(), now);
        }
        match (g.state, failure) {
            (State::Closed { .. }, None) => g.state = State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, Some(kind)) => {
                let n = consecutive + 1;
                g.state = State::Closed { consecutive: n };
                // The percentage first: an instance failing often is out until probes
                // pass, not for one open period.
                self.check_failure_rate(&mut g);
                if n < self.policy.failures || !matches!(g.state, State::Closed { .. }) {
                    return;
                }
                let force = kind == FailureKind::Connect;
                if let Some(slot) = self.cap.try_acquire(force) {
                    g.holds_slot = Some(slot);
                    if force && self.stall.is_some() {
                        self.eject_refused(&mut g);
                    } else {
                        self.sink.ejected("consecutive_failures");
                        self.open(&mut g, kind.as_str());
                    }
                } else {
                    g.state = State::Closed { consecutive: n };
                    if !self.cap.capped_logged.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            service = %self.service,
                            instance = %self.instance,
                            max_ejection_percent = self.policy.max_ejection_percent,
                            "ejection cap reached: keeping a failing instance in rotation"
                        );
                    }
                }
            }
            (State::HalfOpen { .. }, None) if probe => self.close(&mut g, "probe succeeded"),
            // A stalled instance that answers again is not stalled (one ejected for its
            // failure percentage answers often: its probes decide).
            (State::Probing, None) if !matches!(g.recovery, Recovery::FailureRate { .. }) => {
                self.close(&mut g, "answered again")
            }
            (State::HalfOpen { .. }, Some(kind)) if probe => {
                if kind == FailureKind::Connect && self.stall.is_some() {
                    self.eject_refused(&mut g);
                } else {
                    self.open(&mut g, kind.as_str());
                }
                if let Some(w) = g.waiter.take() {
                    w.wake();
                }
            }
            // Late answers to requests sent before the breaker opened say nothing about now.
            _ => {}
        }
    }

    /// A probe ended without an outcome (cancelled): let another one through.
    pub(super) fn probe_abandoned(&self) {
        let mut g = self.lock();
        if let State::HalfOpen { probing: true } = g.state {
            g.state = State::HalfOpen { probing: false };
            if let Some(w) = g.waiter.take() {
                w.wake();
            }
        }
    }
}

impl Drop for BreakerShared {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = g.holds_slot {
            self.cap.release(slot);
        }
    }
}
