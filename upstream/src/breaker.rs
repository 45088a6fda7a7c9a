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

use crate::error::{BoxError, FailureKind};
use crate::policy::BreakerPolicy;
use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

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
    /// The value of the `gateway_breaker_state` gauge.
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

/// How many of a service's instances exist and how many are ejected: shared by the
/// breakers of one service, updated by the balancer as instances come and go.
#[derive(Debug)]
pub struct EjectionCap {
    total: AtomicUsize,
    /// Ejected for errors or stalls: what the cap limits.
    ejected: AtomicUsize,
    /// Ejected because they refuse connections: no capacity at all, never capped.
    refused: AtomicUsize,
    max_percent: u8,
    /// Set while the cap holds an instance in rotation, so the log says it once.
    capped_logged: AtomicBool,
}

/// Which count an ejected breaker holds a place in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Within the cap (errors, stalls).
    Capped,
    /// Refused connections.
    Refused,
}

impl EjectionCap {
    /// A cap allowing `max_percent` of the instances out at once.
    pub fn new(max_percent: u8) -> Arc<Self> {
        Arc::new(EjectionCap {
            total: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            max_percent,
            capped_logged: AtomicBool::new(false),
        })
    }

    /// Records the number of known instances.
    pub fn set_total(&self, n: usize) {
        self.total.store(n, Ordering::Relaxed);
    }

    /// Instances ejected now, for any reason.
    pub fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed)
    }

    /// How many instances errors and stalls may eject: the percentage (at least one) of
    /// the instances that still accept connections, but never all of those. An instance
    /// that refuses connections is no capacity, so it does not use up the allowance of
    /// the others (a killed instance must not keep a frozen one in rotation).
    fn allowed(&self) -> usize {
        let live = self
            .total
            .load(Ordering::Relaxed)
            .saturating_sub(self.refused.load(Ordering::Relaxed));
        (live * self.max_percent as usize / 100)
            .max(1)
            .min(live.saturating_sub(1))
    }

    /// Takes an ejection slot: within the cap, or (`refused`) always.
    fn try_acquire(&self, refused: bool) -> Option<Slot> {
        if refused {
            self.refused.fetch_add(1, Ordering::AcqRel);
            return Some(Slot::Refused);
        }
        let allowed = self.allowed();
        let mut cur = self.ejected.load(Ordering::Relaxed);
        loop {
            if cur >= allowed {
                return None;
            }
            match self
                .ejected
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot::Capped),
                Err(now) => cur = now,
            }
        }
    }

    fn release(&self, slot: Slot) {
        let count = match slot {
            Slot::Capped => &self.ejected,
            Slot::Refused => &self.refused,
        };
        let _ = count.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| v.checked_sub(1));
        self.capped_logged.store(false, Ordering::Relaxed);
    }
}

/// Hooks the breaker calls on transitions (metrics); logs are written by the breaker.
pub trait TransitionSink: Send + Sync + 'static {
    /// The breaker moved to `to`.
    fn transition(&self, to: BreakerState);
}

impl TransitionSink for () {
    fn transition(&self, _: BreakerState) {}
}

/// How long a silent instance's health probe may go unanswered before the instance is
/// ejected as stalled. A live process answers `/healthz` in a few milliseconds even when
/// its real requests wait on something else.
pub const STALL_CONFIRM: Duration = Duration::from_millis(50);

/// How often health probes look for a restart of an instance that refuses connections
/// (jittered +-25 %).
pub const REFUSED_PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Sends one health probe to the instance (the gateway's: `GET /healthz` through the
/// shared client) and returns the answer's status.
pub trait Prober: Send + Sync + 'static {
    /// The probe; it may take long (a hung instance), the breaker bounds it.
    fn probe(&self) -> BoxFuture<'static, Result<http::StatusCode, BoxError>>;
}

/// What stall detection needs: the threshold, the service's latency, the prober.
pub struct StallWatch {
    /// The floor of the stall threshold.
    pub after: Duration,
    /// The service's recent attempt latency (the threshold is at least 4 x its p99).
    pub latency: Arc<crate::latency::LatencyWindow>,
    /// Health probes to a stalled instance.
    pub prober: Arc<dyn Prober>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed {
        consecutive: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probing: bool,
    },
    /// Ejected as stalled or refusing connections: health probes own its recovery.
    Probing,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// The open period to use next time it opens.
    backoff: Duration,
    /// The ejection slot this breaker holds, if any.
    holds_slot: Option<Slot>,
    /// The gate's waker while it waits for a probe to finish.
    waiter: Option<Waker>,
    /// Since when a silent, still closed instance has had a health probe in flight: it
    /// is ejected if the probe is not answered within [`STALL_CONFIRM`].
    suspect_since: Option<Instant>,
}

/// State shared by a breaker service and its in-flight response futures.
pub struct BreakerShared {
    /// Instance name for logs.
    pub instance: Arc<str>,
    /// Service name for logs.
    pub service: Arc<str>,
    policy: BreakerPolicy,
    cap: Arc<EjectionCap>,
    inner: Mutex<Inner>,
    ejections: AtomicU64,
    sink: Box<dyn TransitionSink>,
    /// Attempts in flight through the gate.
    in_flight: AtomicU32,
    /// Since when the instance owes an answer, in nanoseconds since `epoch`: its last
    /// answer, or the start of a busy period that followed one.
    quiet_since_ns: AtomicU64,
    /// Attempts ended without an answer (per-try timeouts, broken connections) since the
    /// last answer: the silence goes on even with nothing in flight.
    owes: AtomicBool,
    epoch: Instant,
    stall: Option<StallWatch>,
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
    pub fn new(
        service: Arc<str>,
        instance: Arc<str>,
        policy: BreakerPolicy,
        cap: Arc<EjectionCap>,
        sink: Box<dyn TransitionSink>,
    ) -> Arc<Self> {
        Self::build(service, instance, policy, cap, sink, None)
    }

    fn build(
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
            }),
            ejections: AtomicU64::new(0),
            sink,
            in_flight: AtomicU32::new(0),
            quiet_since_ns: AtomicU64::new(0),
            owes: AtomicBool::new(false),
            epoch: Instant::now(),
            stall,
        })
    }

    /// The same breaker with stall detection (see the module docs).
    pub fn with_stall_watch(
        service: Arc<str>,
        instance: Arc<str>,
        policy: BreakerPolicy,
        cap: Arc<EjectionCap>,
        sink: Box<dyn TransitionSink>,
        stall: StallWatch,
    ) -> Arc<Self> {
        Self::build(service, instance, policy, cap, sink, Some(stall))
    }

    fn now_ns(&self) -> u64 {
        Instant::now().duration_since(self.epoch).as_nanos() as u64
    }

    fn started(&self) {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) == 0 && !self.owes.load(Ordering::Relaxed)
        {
            self.quiet_since_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }

    fn ended(&self, end: AttemptEnd) {
        match end {
            AttemptEnd::Answered => {
                self.quiet_since_ns.store(self.now_ns(), Ordering::Relaxed);
                self.owes.store(false, Ordering::Relaxed);
            }
            AttemptEnd::Unanswered => self.owes.store(true, Ordering::Relaxed),
            AttemptEnd::Dropped => {}
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// How long the instance has owed an answer, when that makes it stalled: attempts
    /// in flight (or ended unanswered) and no answer for the threshold.
    fn stalled_for(&self) -> Option<Duration> {
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
    fn eject_stalled(self: &Arc<Self>, g: &mut Inner, since: Duration) -> bool {
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
        g.suspect_since = None;
        self.ejections.fetch_add(1, Ordering::Relaxed);
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
    fn suspect(self: &Arc<Self>, g: &mut Inner, since: Duration) {
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
    fn eject_refused(self: &Arc<Self>, g: &mut Inner) {
        g.state = State::Probing;
        self.ejections.fetch_add(1, Ordering::Relaxed);
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
    fn spawn_probes(self: &Arc<Self>, first: Duration, suspicion: bool) {
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
                delay = REFUSED_PROBE_INTERVAL;
            }
        });
    }

    /// A health probe came back (or ran out of time); whether to probe again (only
    /// while connections are refused).
    fn probe_answered(
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
    fn suspicion_answered(
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

    fn close(&self, g: &mut Inner, why: &str) {
        g.state = State::Closed { consecutive: 0 };
        g.suspect_since = None;
        g.backoff = self.policy.backoff;
        if let Some(slot) = g.holds_slot.take() {
            self.cap.release(slot);
        }
        // The answer is progress: a stall needs a whole new silent period.
        self.quiet_since_ns.store(self.now_ns(), Ordering::Relaxed);
        self.owes.store(false, Ordering::Relaxed);
        tracing::info!(service = %self.service, instance = %self.instance, reason = why, "breaker closed");
        self.sink.transition(BreakerState::Closed);
        if let Some(w) = g.waiter.take() {
            w.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere must not wedge routing: the state stays usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now, for status pages (an expired open period reads as half-open).
    pub fn state(&self) -> BreakerState {
        match self.lock().state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Probing => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times this breaker has opened.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    fn jittered(d: Duration) -> Duration {
        // Between 75 % and 125 % of the period.
        d.mul_f64(rand::random_range(0.75..1.25))
    }

    fn open(&self, g: &mut Inner, why: &str) {
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

    /// Records the outcome of a request; `probe` says whether it was the half-open probe.
    fn record(self: &Arc<Self>, failure: Option<FailureKind>, probe: bool) {
        let mut g = self.lock();
        match (g.state, failure) {
            (State::Closed { .. }, None) => g.state = State::Closed { consecutive: 0 },
            (State::Closed { consecutive }, Some(kind)) => {
                let n = consecutive + 1;
                if n < self.policy.failures {
                    g.state = State::Closed { consecutive: n };
                    return;
                }
                let force = kind == FailureKind::Connect;
                if let Some(slot) = self.cap.try_acquire(force) {
                    g.holds_slot = Some(slot);
                    if force && self.stall.is_some() {
                        self.eject_refused(&mut g);
                    } else {
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
            // A stalled instance that answers again is not stalled.
            (State::Probing, None) => self.close(&mut g, "answered again"),
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
    fn probe_abandoned(&self) {
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

/// Builds [`Breaker`]s around endpoint services.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    shared: Arc<BreakerShared>,
}

impl BreakerLayer {
    /// A layer whose breaker is `shared` (kept by the caller for status pages).
    pub fn new(shared: Arc<BreakerShared>) -> Self {
        BreakerLayer { shared }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker {
            inner,
            shared: self.shared.clone(),
            sleep: None,
        }
    }
}

/// The gate service.
#[derive(Debug)]
pub struct Breaker<S> {
    inner: S,
    shared: Arc<BreakerShared>,
    /// Wakes the gate when the open period ends.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: tower::load::Load> tower::load::Load for Breaker<S> {
    type Metric = S::Metric;

    fn load(&self) -> S::Metric {
        self.inner.load()
    }
}

/// Whether a response counts as a failure: 5xx does.
pub trait Outcome {
    /// The failure this result represents, if any.
    fn failure(&self) -> Option<FailureKind>;
}

impl<B> Outcome for Result<http::Response<B>, BoxError> {
    fn failure(&self) -> Option<FailureKind> {
        match self {
            Ok(r) if r.status().is_server_error() => Some(FailureKind::Transport),
            Ok(_) => None,
            Err(e) => Some(FailureKind::of(e.as_ref())),
        }
    }
}

impl<S, Req> tower::Service<Req> for Breaker<S>
where
    S: tower::Service<Req, Error = BoxError>,
    Result<S::Response, BoxError>: Outcome,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let mut g = self.shared.lock();
            match g.state {
                State::Closed { .. } => {
                    match (g.suspect_since, self.shared.stalled_for()) {
                        // Silent, and its health probe unanswered for long enough.
                        (Some(t), Some(silent))
                            if t.elapsed() >= STALL_CONFIRM
                                && self.shared.eject_stalled(&mut g, silent) =>
                        {
                            g.waiter = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                        (None, Some(silent)) => self.shared.suspect(&mut g, silent),
                        _ => {}
                    }
                    break;
                }
                State::HalfOpen { probing: false } => break,
                State::HalfOpen { probing: true } | State::Probing => {
                    g.waiter = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                State::Open { until } => {
                    if Instant::now() >= until {
                        g.state = State::HalfOpen { probing: false };
                        tracing::info!(
                            service = %self.shared.service,
                            instance = %self.shared.instance,
                            "breaker half-open: sending one probe"
                        );
                        self.shared.sink.transition(BreakerState::HalfOpen);
                        continue;
                    }
                    drop(g);
                    let sleep = match &mut self.sleep {
                        Some(s) => {
                            if s.deadline() != until {
                                s.as_mut().reset(until);
                            }
                            s
                        }
                        None => self.sleep.insert(Box::pin(tokio::time::sleep_until(until))),
                    };
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let probe = {
            let mut g = self.shared.lock();
            if let State::HalfOpen { probing: false } = g.state {
                g.state = State::HalfOpen { probing: true };
                true
            } else {
                false
            }
        };
        self.shared.started();
        BreakerFuture {
            inner: self.inner.call(req),
            guard: Recorder {
                shared: self.shared.clone(),
                probe,
                done: false,
                end: AttemptEnd::Dropped,
            },
        }
    }
}

/// How an attempt through the gate ended, for stall detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttemptEnd {
    /// The instance answered (any status).
    Answered,
    /// It finished without an answer: per-try timeout, broken or refused connection.
    Unanswered,
    /// Dropped by the caller before finishing: says nothing about the instance.
    Dropped,
}

/// Counts the attempt out when it ends, and reports a probe that was dropped before it
/// finished, so the gate does not stay shut.
#[derive(Debug)]
struct Recorder {
    shared: Arc<BreakerShared>,
    probe: bool,
    done: bool,
    end: AttemptEnd,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.ended(self.end);
        if self.probe && !self.done {
            self.shared.probe_abandoned();
        }
    }
}

pin_project! {
    /// Response future of [`Breaker`]: records the outcome when the inner one finishes.
    #[derive(Debug)]
    pub struct BreakerFuture<F> {
        #[pin]
        inner: F,
        guard: Recorder,
    }
}

impl<F, T> Future for BreakerFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
    Result<T, BoxError>: Outcome,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.done = true;
        this.guard.end = if out.is_ok() {
            AttemptEnd::Answered
        } else {
            AttemptEnd::Unanswered
        };
        this.guard.shared.record(out.failure(), this.guard.probe);
        Poll::Ready(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use tower_test::{assert_request_eq, mock};

    type Res = http::Response<()>;

    fn status(code: u16) -> Res {
        let mut r = http::Response::new(());
        *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
        r
    }

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_ejection_percent: 100,
            stall_after: Duration::from_millis(250),
        }
    }

    fn breaker(
        cap: Arc<EjectionCap>,
    ) -> (
        tower_test::mock::Spawn<Breaker<Mapped>>,
        mock::Handle<&'static str, Res>,
        Arc<BreakerShared>,
    ) {
        let (svc, handle) = mock::pair::<&'static str, Res>();
        let shared =
            BreakerShared::new("room".into(), "room-1".into(), policy(), cap, Box::new(()));
        let svc = tower::Layer::layer(&BreakerLayer::new(shared.clone()), Mapped(svc));
        (mock::Spawn::new(svc), handle, shared)
    }

    /// The mock's error type is already a `BoxError`; this pins the types for the gate.
    struct Mapped(mock::Mock<&'static str, Res>);

    impl tower::Service<&'static str> for Mapped {
        type Response = Res;
        type Error = BoxError;
        type Future = mock::future::ResponseFuture<Res>;
        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            self.0.poll_ready(cx)
        }
        fn call(&mut self, r: &'static str) -> Self::Future {
            self.0.call(r)
        }
    }

    async fn fail_once(
        svc: &mut mock::Spawn<Breaker<Mapped>>,
        handle: &mut mock::Handle<&'static str, Res>,
    ) {
        assert!(svc.poll_ready().is_ready());
        let fut = svc.call("x");
        assert_request_eq!(handle, "x").send_response(status(503));
        assert_eq!(fut.await.unwrap().status(), 503);
    }

    fn cap_of(total: usize, pct: u8) -> Arc<EjectionCap> {
        let cap = EjectionCap::new(pct);
        cap.set_total(total);
        cap
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_stays_pending_until_the_backoff_ends() {
        let (mut svc, mut handle, shared) = breaker(cap_of(3, 100));
        handle.allow(10);
        for _ in 0..3 {
            fail_once(&mut svc, &mut handle).await;
        }
        assert_eq!(shared.state(), BreakerState::Open);
        assert!(
            svc.poll_ready().is_pending(),
            "an open breaker must be Pending, never Err"
        );
        tokio::time::advance(Duration::from_millis(700)).await;
        assert!(
            svc.poll_ready().is_pending(),
            "still inside the (jittered, >= 750 ms) period"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(
            svc.is_woken(),
            "the gate wakes its task when the period ends"
        );
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_between_failures_resets_the_count() {
        let (mut svc, mut handle, shared) = breaker(cap_of(3, 100));
        handle.allow(10);
        fail_once(&mut svc, &mut handle).await;
        fail_once(&mut svc, &mut handle).await;
        assert!(svc.poll_ready().is_ready());
        let f = svc.call("ok");
        assert_request_eq!(handle, "ok").send_response(status(200));
        f.await.unwrap();
        fail_once(&mut svc, &mut handle).await;
        fail_once(&mut svc, &mut handle).await;
        assert_eq!(shared.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe_and_closes_on_its_success() {
        let (mut svc, mut handle, shared) = breaker(cap_of(3, 100));
        handle.allow(10);
        for _ in 0..3 {
            fail_once(&mut svc, &mut handle).await;
        }
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert!(svc.poll_ready().is_ready());
        let probe = svc.call("probe");
        assert!(
            svc.poll_ready().is_pending(),
            "a second request waits for the probe"
        );
        assert_request_eq!(handle, "probe").send_response(status(200));
        probe.await.unwrap();
        assert!(svc.is_woken());
        assert_eq!(shared.state(), BreakerState::Closed);
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.ejections(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_with_a_longer_backoff() {
        let (mut svc, mut handle, shared) = breaker(cap_of(3, 100));
        handle.allow(10);
        for _ in 0..3 {
            fail_once(&mut svc, &mut handle).await;
        }
        tokio::time::advance(Duration::from_millis(1300)).await;
        fail_once(&mut svc, &mut handle).await;
        assert_eq!(shared.state(), BreakerState::Open);
        // The second period is 2 s +- 25 %: still open after 1.3 s, over after 2.6 s.
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert!(svc.poll_ready().is_pending());
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.ejections(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_lets_the_next_request_probe() {
        let (mut svc, mut handle, shared) = breaker(cap_of(3, 100));
        handle.allow(10);
        for _ in 0..3 {
            fail_once(&mut svc, &mut handle).await;
        }
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert!(svc.poll_ready().is_ready());
        drop(svc.call("abandoned"));
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_cap_keeps_an_erroring_instance_in_rotation() {
        let cap = cap_of(2, 50);
        let (mut a, mut ha, sa) = breaker(cap.clone());
        let (mut b, mut hb, sb) = breaker(cap.clone());
        ha.allow(10);
        hb.allow(10);
        for _ in 0..3 {
            fail_once(&mut a, &mut ha).await;
        }
        for _ in 0..3 {
            fail_once(&mut b, &mut hb).await;
        }
        assert_eq!(sa.state(), BreakerState::Open);
        assert_eq!(
            sb.state(),
            BreakerState::Closed,
            "50 % of 2 instances is one ejection"
        );
        assert!(b.poll_ready().is_ready());
        assert_eq!(cap.ejected(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_killed_instance_does_not_use_up_the_allowance_of_the_others() {
        // Three instances, 50 %: one may go for errors. The killed one refuses
        // connections, which is no capacity, so a failing second one may still go; the
        // third, the last that accepts connections, stays.
        let cap = cap_of(3, 50);
        let (_a, _ha, killed) = breaker(cap.clone());
        let (mut b, mut hb, sb) = breaker(cap.clone());
        let (mut c, mut hc, sc) = breaker(cap.clone());
        hb.allow(10);
        hc.allow(10);
        killed.record(Some(FailureKind::Connect), false);
        killed.record(Some(FailureKind::Connect), false);
        killed.record(Some(FailureKind::Connect), false);
        assert_eq!(killed.state(), BreakerState::Open);
        for _ in 0..3 {
            fail_once(&mut b, &mut hb).await;
        }
        assert_eq!(sb.state(), BreakerState::Open);
        for _ in 0..3 {
            fail_once(&mut c, &mut hc).await;
        }
        assert_eq!(
            sc.state(),
            BreakerState::Closed,
            "the last live instance stays"
        );
        assert_eq!(cap.ejected(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_never_eject_the_last_instance_but_refused_connections_do() {
        // Even at 100 %: the only instance keeps its traffic through timeouts and 5xx.
        let cap = cap_of(1, 100);
        let (mut svc, mut handle, shared) = breaker(cap.clone());
        handle.allow(10);
        for _ in 0..5 {
            fail_once(&mut svc, &mut handle).await;
        }
        assert_eq!(shared.state(), BreakerState::Closed);
        assert!(svc.poll_ready().is_ready());
        // A refused connection is no capacity at all: it is ejected regardless.
        shared.record(Some(FailureKind::Connect), false);
        assert_eq!(shared.state(), BreakerState::Open);
        assert_eq!(cap.ejected(), 1);
    }
    /// A prober whose answer the test sends, counting probes.
    #[derive(Default)]
    struct ScriptedProber {
        calls: AtomicUsize,
        reply: Mutex<Option<tokio::sync::oneshot::Receiver<u16>>>,
    }

    impl Prober for ScriptedProber {
        fn probe(&self) -> BoxFuture<'static, Result<http::StatusCode, BoxError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let rx = self.reply.lock().unwrap().take();
            Box::pin(async move {
                match rx {
                    Some(rx) => Ok(http::StatusCode::from_u16(rx.await?)?),
                    None => std::future::pending().await,
                }
            })
        }
    }

    /// A watched breaker, its mock, state, prober and the sender of the probe's answer.
    type Watched = (
        tower_test::mock::Spawn<Breaker<Mapped>>,
        mock::Handle<&'static str, Res>,
        Arc<BreakerShared>,
        Arc<ScriptedProber>,
        tokio::sync::oneshot::Sender<u16>,
    );

    fn watched(cap: Arc<EjectionCap>) -> Watched {
        let (svc, handle) = mock::pair::<&'static str, Res>();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let prober = Arc::new(ScriptedProber::default());
        *prober.reply.lock().unwrap() = Some(rx);
        let shared = BreakerShared::with_stall_watch(
            "room".into(),
            "room-1".into(),
            policy(),
            cap,
            Box::new(()),
            StallWatch {
                after: Duration::from_millis(250),
                latency: Arc::new(crate::latency::LatencyWindow::default()),
                prober: prober.clone(),
            },
        );
        let svc = tower::Layer::layer(&BreakerLayer::new(shared.clone()), Mapped(svc));
        (mock::Spawn::new(svc), handle, shared, prober, tx)
    }

    /// Lets spawned tasks (the probe) run.
    async fn settle() {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }

    /// From a silent instance's first suspicion to its ejection: the gate sends a health
    /// probe and stays open for traffic until the probe is unanswered for STALL_CONFIRM.
    async fn confirm_stall(svc: &mut mock::Spawn<Breaker<Mapped>>, prober: &ScriptedProber) {
        assert!(svc.poll_ready().is_ready(), "suspected, not yet ejected");
        settle().await;
        assert_eq!(prober.calls.load(Ordering::SeqCst), 1, "one health probe");
        tokio::time::advance(STALL_CONFIRM).await;
        assert!(
            svc.poll_ready().is_pending(),
            "the probe went unanswered: ejected"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_instance_is_ejected_at_once_and_one_probe_brings_it_back() {
        let (mut svc, mut handle, shared, prober, tx) = watched(cap_of(3, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let _hung = svc.call("hung");
        let (_req, _never) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(
            svc.poll_ready().is_ready(),
            "200 ms of silence is not a stall"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        confirm_stall(&mut svc, &prober).await;
        assert_eq!(shared.state(), BreakerState::Open);
        assert_eq!(shared.ejections(), 1);
        // However long it stays silent: no traffic, and no second probe.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(svc.poll_ready().is_pending());
        settle().await;
        assert_eq!(prober.calls.load(Ordering::SeqCst), 1);
        // It resumes and answers the probe: back in rotation at once.
        tx.send(200).unwrap();
        settle().await;
        assert_eq!(shared.state(), BreakerState::Closed);
        assert!(svc.poll_ready().is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_that_ended_unanswered_leave_the_instance_stalled_with_nothing_in_flight() {
        // Its hung attempts hit their per-try timeouts: nothing is in flight any more,
        // but nothing was answered either, so it must not get the next request.
        let (mut svc, mut handle, shared, prober, _tx) = watched(cap_of(3, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let hung = svc.call("hung");
        let (_, r) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        r.send_error(BoxError::from("per-try timeout"));
        assert!(hung.await.is_err());
        assert!(
            svc.poll_ready().is_ready(),
            "100 ms of silence is not a stall"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        confirm_stall(&mut svc, &prober).await;
        assert_eq!(shared.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_instance_that_answers_its_health_probe_stays_in_rotation() {
        // Its requests wait on something else (booking on a frozen room), but the
        // process itself answers: not stalled, not ejected, nothing logged above DEBUG.
        let (mut svc, mut handle, shared, prober, tx) = watched(cap_of(3, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let _slow = svc.call("slow");
        let _req = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(svc.poll_ready().is_ready());
        settle().await;
        assert_eq!(prober.calls.load(Ordering::SeqCst), 1);
        tx.send(200).unwrap();
        settle().await;
        tokio::time::advance(STALL_CONFIRM * 2).await;
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.state(), BreakerState::Closed);
        assert_eq!(shared.ejections(), 0);
        // Still silent: the next probe only after another whole silent period.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(svc.poll_ready().is_ready());
        settle().await;
        assert_eq!(prober.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_instance_that_keeps_answering_is_not_stalled() {
        let (mut svc, mut handle, shared, prober, _tx) = watched(cap_of(3, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let first = svc.call("a");
        let (_, a) = handle.next_request().await.unwrap();
        for name in ["b", "c", "d"] {
            tokio::time::advance(Duration::from_millis(200)).await;
            assert!(svc.poll_ready().is_ready());
            let next = svc.call(name);
            let (_, r) = handle.next_request().await.unwrap();
            r.send_response(status(200));
            next.await.unwrap();
        }
        // "a" is 600 ms old, but the instance answered 0 ms ago.
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.state(), BreakerState::Closed);
        assert_eq!(prober.calls.load(Ordering::SeqCst), 0);
        a.send_response(status(200));
        first.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_never_ejects_the_last_instance() {
        let (mut svc, mut handle, shared, prober, _tx) = watched(cap_of(1, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let _hung = svc.call("hung");
        let _req = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.state(), BreakerState::Closed);
        assert_eq!(prober.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_answered_with_an_error_opens_with_the_backoff() {
        let (mut svc, mut handle, shared, prober, tx) = watched(cap_of(3, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let _hung = svc.call("hung");
        let _req = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(300)).await;
        confirm_stall(&mut svc, &prober).await;
        tx.send(503).unwrap();
        settle().await;
        assert_eq!(shared.state(), BreakerState::Open);
        // An ordinary open period (1 s +- 25 %), then a half-open probe as usual.
        tokio::time::advance(Duration::from_millis(1300)).await;
        assert!(svc.poll_ready().is_ready());
        assert_eq!(shared.state(), BreakerState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_from_a_stalled_instance_closes_its_breaker() {
        let (mut svc, mut handle, shared, prober, _tx) = watched(cap_of(3, 100));
        handle.allow(10);
        assert!(svc.poll_ready().is_ready());
        let slow = svc.call("slow");
        let (_, r) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_millis(300)).await;
        confirm_stall(&mut svc, &prober).await;
        r.send_response(status(200));
        slow.await.unwrap();
        assert_eq!(shared.state(), BreakerState::Closed);
        assert!(svc.poll_ready().is_ready());
    }
}
