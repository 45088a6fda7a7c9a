//! The breaker on a paused clock: the state machine, the ejection cap, stall and
//! refusal ejection with their health probes, driven through the gate with `tower-test`.

#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

use super::{stall::STALL_CONFIRM, *};
use crate::{
    error::{BoxError, FailureKind},
    policy::BreakerPolicy,
};
use futures::future::BoxFuture;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
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
        ..BreakerPolicy::default()
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
    let shared = BreakerShared::new("room".into(), "room-1".into(), policy(), cap, Box::new(()));
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
    killed.record(
        Some(FailureKind::Connect),
        false,
        tokio::time::Instant::now(),
    );
    killed.record(
        Some(FailureKind::Connect),
        false,
        tokio::time::Instant::now(),
    );
    killed.record(
        Some(FailureKind::Connect),
        false,
        tokio::time::Instant::now(),
    );
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
    shared.record(
        Some(FailureKind::Connect),
        false,
        tokio::time::Instant::now(),
    );
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

/// A prober that answers every probe at once with the status the test sets.
struct SteadyProber {
    calls: AtomicUsize,
    status: std::sync::atomic::AtomicU16,
}

impl Prober for SteadyProber {
    fn probe(&self) -> BoxFuture<'static, Result<http::StatusCode, BoxError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let s = self.status.load(Ordering::SeqCst);
        Box::pin(async move { Ok(http::StatusCode::from_u16(s)?) })
    }
}

/// A breaker with a steady prober, for failure-percentage ejection.
fn rated(cap: Arc<EjectionCap>) -> (Arc<BreakerShared>, Arc<SteadyProber>) {
    let prober = Arc::new(SteadyProber {
        calls: AtomicUsize::new(0),
        status: std::sync::atomic::AtomicU16::new(503),
    });
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
    (shared, prober)
}

/// Records `n` outcomes, one failure in every three (never three in a row).
fn a_third_failing(shared: &Arc<BreakerShared>, n: usize) {
    for i in 0..n {
        let failure = (i % 3 == 2).then_some(FailureKind::Transport);
        shared.record(failure, false, tokio::time::Instant::now());
    }
}

/// The rest of the service: `n` attempts, `failed` of them failures.
fn rest_of_service(cap: &EjectionCap, n: usize, failed: usize) {
    for i in 0..n {
        cap.window
            .record_at(i < failed, tokio::time::Instant::now());
    }
}

/// Probe rounds: lets the probe task run and moves time past one probe interval.
async fn probe_rounds(n: usize) {
    for _ in 0..n {
        settle().await;
        tokio::time::advance(super::outlier::RATE_PROBE_INTERVAL * 2).await;
        settle().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_failing_a_third_of_its_requests_is_ejected_and_passing_probes_bring_it_back_slowly()
 {
    let cap = cap_of(3, 50);
    rest_of_service(&cap, 60, 1);
    let (shared, prober) = rated(cap.clone());
    a_third_failing(&shared, 18);
    assert_eq!(
        shared.state(),
        BreakerState::Closed,
        "under 20 requests the percentage does not count"
    );
    a_third_failing(&shared, 3);
    assert_eq!(shared.state(), BreakerState::Open);
    assert_eq!(shared.ejections(), 1);
    assert_eq!(cap.ejected(), 1);
    // Late successes of attempts sent before do not bring it back; failing probes
    // keep it out.
    shared.record(None, false, tokio::time::Instant::now());
    probe_rounds(8).await;
    assert_eq!(shared.state(), BreakerState::Open);
    assert!(prober.calls.load(Ordering::SeqCst) >= 5);
    // Fixed: five passing probes in a row, then it ramps up over slow_start.
    prober.status.store(200, Ordering::SeqCst);
    probe_rounds(6).await;
    assert_eq!(shared.state(), BreakerState::Closed);
    assert_eq!(cap.ejected(), 0);
    assert!(shared.weight() < 0.5, "{}", shared.weight());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(shared.weight(), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_service_failing_as_a_whole_or_a_full_cap_ejects_no_one_for_its_percentage() {
    let cap = cap_of(3, 50);
    rest_of_service(&cap, 60, 30);
    let (shared, _) = rated(cap.clone());
    a_third_failing(&shared, 30);
    assert_eq!(shared.state(), BreakerState::Closed, "everyone fails alike");
    // A healthy rest, but the cap is used up by another instance.
    let cap = cap_of(3, 50);
    rest_of_service(&cap, 60, 0);
    let (other, _) = rated(cap.clone());
    a_third_failing(&other, 21);
    assert_eq!(other.state(), BreakerState::Open);
    let (shared, _) = rated(cap.clone());
    a_third_failing(&shared, 30);
    assert_eq!(shared.state(), BreakerState::Closed, "the cap holds");
}
