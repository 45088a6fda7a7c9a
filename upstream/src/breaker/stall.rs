//! Stall and refusal detection: a silent instance gets one health probe before it is
//! ejected as stalled, and an instance that refuses connections is watched by health
//! probes until it answers (see the module docs of [`super`]).

use super::{
    BreakerState, outlier,
    state::{BreakerShared, Inner, Recovery, State},
};
use crate::error::{BoxError, FailureKind};
use futures::future::BoxFuture;
use std::{
    sync::{Arc, Weak, atomic::Ordering},
    time::Duration,
};
use tokio::time::Instant;

/// How long a silent instance's health probe may go unanswered before the instance is
/// ejected as stalled. A live process answers `/healthz` in a few milliseconds even when
/// its real requests wait on something else.
pub(crate) const STALL_CONFIRM: Duration = Duration::from_millis(50);

/// How often health probes look for a restart of an instance that refuses connections
/// (jittered +-25 %).
pub(crate) const REFUSED_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Sends one health probe to the instance (the stack's: `GET /healthz` through the
/// shared client) and returns the answer's status.
pub(crate) trait Prober: Send + Sync + 'static {
    /// The probe; it may take long (a hung instance), the breaker bounds it.
    fn probe(&self) -> BoxFuture<'static, Result<http::StatusCode, BoxError>>;
}

/// What stall detection needs: the threshold, the service's latency, the prober.
pub(crate) struct StallWatch {
    /// The floor of the stall threshold.
    pub after: Duration,
    /// The service's recent attempt latency (the threshold is at least 4 x its p99).
    pub latency: Arc<crate::latency::LatencyWindow>,
    /// Health probes to a stalled instance.
    pub prober: Arc<dyn Prober>,
}

/// How an attempt through the gate ended, for stall detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AttemptEnd {
    /// The instance answered (any status).
    Answered,
    /// It finished without an answer: per-try timeout, broken or refused connection.
    Unanswered,
    /// Dropped by the caller before finishing: says nothing about the instance.
    Dropped,
}

impl BreakerShared {
    pub(super) fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    fn ns_at(&self, at: Instant) -> u64 {
        at.duration_since(self.epoch).as_nanos() as u64
    }

    pub(super) fn started(&self) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 && !self.owes.load(Ordering::Relaxed)
        {
            self.quiet_since_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }

    /// Counts an attempt out; `at` is when it finished, if it was read already.
    pub(super) fn ended(&self, end: AttemptEnd, at: Option<Instant>) {
        match end {
            AttemptEnd::Answered => {
                let ns = at.map_or_else(|| self.now_ns(), |at| self.ns_at(at));
                self.quiet_since_ns.store(ns, Ordering::Relaxed);
                self.owes.store(false, Ordering::Relaxed);
            }
            AttemptEnd::Unanswered => self.owes.store(true, Ordering::Relaxed),
            AttemptEnd::Dropped => {}
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long the instance has owed an answer, when that makes it stalled: attempts
    /// in flight (or ended unanswered) and no answer for the threshold.
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        let watch = self.stall.as_ref()?;
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.owes.load(Ordering::Relaxed) {
            return None;
        }
        let since = Duration::from_nanos(
            self.now_ns()
                .saturating_sub(self.quiet_since_ns.load(Ordering::Relaxed)),
        );
        if since < watch.after {
            return None;
        }
        // Only now the (locked) percentile: a slow service is not a stalled one.
        let p99 = watch.latency.percentile(99.0).unwrap_or_default();
        (since >= p99 * 4).then_some(since)
    }

    /// Ejects a stalled instance (within the cap) and sends the health probe.
    pub(super) fn eject_stalled(self: &Arc<Self>, g: &mut Inner, since: Duration) -> bool {
        if self.stall.is_none() {
            return false;
        }
        let Some(slot) = self.cap.try_acquire(false) else {
            if !self.cap.capped_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    service = %self.service,
                    instance = %self.instance,
                    max_ejection_percent = self.policy.max_ejection_percent,
                    "ejection cap reached: keeping a stalled instance in rotation"
                );
            }
            return false;
        };
        g.holds_slot = Some(slot);
        g.state = State::Probing;
        g.recovery = Recovery::Stalled;
        g.suspect_since = None;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.sink.ejected("stalled");
        tracing::warn!(
            service = %self.service,
            instance = %self.instance,
            reason = "stalled",
            in_flight = self.in_flight.load(Ordering::Relaxed),
            silent_ms = since.as_millis() as u64,
            "breaker opened: no answer from the instance, not even to a health probe; \
             the probe keeps waiting for it"
        );
        self.sink.transition(BreakerState::Open);
        true
    }

    /// A silent instance: send it a health probe before ejecting it. An instance that is
    /// only slow (waiting on its own dependencies, say) answers at once and stays in
    /// rotation; a hung one does not, and is ejected [`STALL_CONFIRM`] later.
    pub(super) fn suspect(self: &Arc<Self>, g: &mut Inner, since: Duration) {
        if self.stall.is_none() {
            return;
        }
        g.suspect_since = Some(Instant::now());
        tracing::debug!(
            service = %self.service,
            instance = %self.instance,
            silent_ms = since.as_millis() as u64,
            "no answer from the instance; sending a health probe"
        );
        self.spawn_probes(Duration::ZERO, true);
    }

    /// Ejects an instance that refuses connections: nothing listens, so probing is
    /// cheap (a refused connect), and a restarted instance should be back at once.
    pub(super) fn eject_refused(self: &Arc<Self>, g: &mut Inner) {
        g.state = State::Probing;
        g.recovery = Recovery::Refused;
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.sink.ejected("refused");
        tracing::warn!(
            service = %self.service,
            instance = %self.instance,
            reason = FailureKind::Connect.as_str(),
            probe_every_ms = REFUSED_PROBE_INTERVAL.as_millis() as u64,
            "breaker opened: connections refused; health probes watch for a restart"
        );
        self.sink.transition(BreakerState::Open);
        self.spawn_probes(REFUSED_PROBE_INTERVAL, false);
    }

    /// Health probes until one is answered: after `first`, then every
    /// [`REFUSED_PROBE_INTERVAL`] while connections are refused. The task holds the
    /// breaker weakly, so an instance that leaves discovery ends it.
    pub(super) fn spawn_probes(self: &Arc<Self>, first: Duration, suspicion: bool) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let limit = self.policy.backoff_max;
        tokio::spawn(async move {
            let mut delay = first;
            let mut suspicion = suspicion;
            loop {
                if !delay.is_zero() {
                    tokio::time::sleep(Self::jittered(delay)).await;
                }
                let probe = {
                    let Some(b) = weak.upgrade() else { return };
                    // The first probe of a suspicion goes while the breaker is closed.
                    if !std::mem::take(&mut suspicion) && !matches!(b.lock().state, State::Probing)
                    {
                        return;
                    }
                    let Some(watch) = &b.stall else { return };
                    watch.prober.probe()
                };
                let answer = tokio::time::timeout(limit, probe).await;
                let Some(b) = weak.upgrade() else { return };
                if !b.probe_answered(answer) {
                    return;
                }
                delay = match b.lock().recovery {
                    Recovery::FailureRate { .. } => outlier::RATE_PROBE_INTERVAL,
                    _ => REFUSED_PROBE_INTERVAL,
                };
            }
        });
    }

    /// A health probe came back (or ran out of time); whether to probe again (while
    /// connections are refused, and while an instance ejected for its failure
    /// percentage has not passed enough probes in a row).
    pub(super) fn probe_answered(
        self: &Arc<Self>,
        answer: Result<Result<http::StatusCode, BoxError>, tokio::time::error::Elapsed>,
    ) -> bool {
        let mut g = self.lock();
        if matches!(g.state, State::Closed { .. }) && g.suspect_since.is_some() {
            self.suspicion_answered(&mut g, answer);
            return false;
        }
        if !matches!(g.state, State::Probing) {
            return false;
        }
        if let Recovery::FailureRate { passed } = g.recovery {
            let passed = match answer {
                Ok(Ok(status)) if !status.is_server_error() => passed + 1,
                _ => 0,
            };
            if passed >= outlier::RATE_RECOVERY_PROBES {
                self.close(&mut g, "health probes passed");
                return false;
            }
            g.recovery = Recovery::FailureRate { passed };
            return true;
        }
        match answer {
            Ok(Ok(status)) if !status.is_server_error() => {
                self.close(&mut g, "health probe answered");
                false
            }
            Ok(Ok(_)) => {
                self.open(&mut g, "probe_http_5xx");
                false
            }
            Ok(Err(e)) => match FailureKind::of(e.as_ref()) {
                FailureKind::Connect => true,
                kind => {
                    self.open(&mut g, kind.as_str());
                    false
                }
            },
            Err(_) => {
                self.open(&mut g, "probe_timeout");
                false
            }
        }
    }

    /// The health probe of a suspected (silent, still closed) instance came back.
    pub(super) fn suspicion_answered(
        self: &Arc<Self>,
        g: &mut Inner,
        answer: Result<Result<http::StatusCode, BoxError>, tokio::time::error::Elapsed>,
    ) {
        g.suspect_since = None;
        let failure = match answer {
            Ok(Ok(status)) if !status.is_server_error() => {
                // Alive, only slow: a stall needs a whole new silent period.
                self.quiet_since_ns.store(self.now_ns(), Ordering::Relaxed);
                self.owes.store(false, Ordering::Relaxed);
                tracing::debug!(
                    service = %self.service,
                    instance = %self.instance,
                    "the silent instance answered its health probe: slow, not stalled"
                );
                return;
            }
            Ok(Ok(_)) => FailureKind::Transport,
            Ok(Err(e)) => FailureKind::of(e.as_ref()),
            Err(_) => FailureKind::Timeout,
        };
        let refused = failure == FailureKind::Connect;
        if let Some(slot) = self.cap.try_acquire(refused) {
            g.holds_slot = Some(slot);
            if refused {
                self.eject_refused(g);
            } else {
                self.open(g, failure.as_str());
            }
        }
    }
}
