//! The failover drill in-process: a service with one instance killed (connections
//! refused), one frozen (connections accepted, never answered) and one healthy, called
//! concurrently with booking's policy (2 s deadline, 1 s per try) as booking calls room.
//! Every call must succeed, and quickly: hedging and retries route around both broken
//! instances, also when discovery drops them (their registry lease runs out).

#![allow(clippy::unwrap_used)]

use axum::{Router, body::Bytes};
use hotel_upstream::{
    BreakerState, ClientOptions, Discovery, Origin, PolicySettings, ProxyBody, ServicePolicy,
    ServiceUpstream, Source, Target, Targets, UpstreamClient, UpstreamMetrics, http_client,
};
use http_body_util::BodyExt;
use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// A healthy instance answering `{"ok":true}` to everything.
async fn healthy() -> String {
    healthy_with_hiccup(Arc::new(Mutex::new(None))).await
}

/// A healthy instance that holds every answer while `stall_until` is in the future: a
/// live but momentarily overloaded process (CPU starved by its neighbours, a long SQLite
/// checkpoint), slower than the per-try timeout for a moment.
async fn healthy_with_hiccup(stall_until: Arc<Mutex<Option<Instant>>>) -> String {
    let app = Router::new().fallback(move || {
        let stall_until = stall_until.clone();
        async move {
            let until = *stall_until.lock().unwrap();
            if let Some(until) = until {
                tokio::time::sleep_until(until.into()).await;
            }
            axum::Json(serde_json::json!({"ok": true}))
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// An address nothing listens on (a SIGKILLed instance): connecting is refused. The
/// socket is bound but not listening, so no other test's server takes the port while the
/// returned holder lives (a freed port can be handed out again at once).
fn killed() -> (tokio::net::TcpSocket, String) {
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", hold.local_addr().unwrap());
    (hold, url)
}

/// A listener that never accepts (a SIGSTOPped instance): the kernel completes the
/// handshake, the request is sent, and no answer ever comes.
fn frozen() -> (std::net::TcpListener, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// Booking's policy for its peers: a 2 s deadline per call, half of it per try.
fn booking_policy() -> ServicePolicy {
    PolicySettings::builtin()
        .overlaid(&PolicySettings {
            deadline: Some(Duration::from_secs(2)),
            per_try_timeout: Some(Duration::from_secs(1)),
            ..PolicySettings::default()
        })
        .validate("policy")
        .unwrap()
}

/// Runs 16 concurrent callers of `call` for `run_for` (bounded in count too), and returns
/// the sorted latencies and the failures.
async fn load<F, Fut>(call: F, run_for: Duration) -> (Vec<Duration>, Vec<String>)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<u16, String>> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..5_000 {
                    if started.elapsed() > run_for {
                        break;
                    }
                    let t = Instant::now();
                    let r = call().await;
                    out.push((started.elapsed(), t.elapsed(), r));
                }
                out
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        for (at, d, r) in t.await.unwrap() {
            latencies.push(d);
            match r {
                Ok(200) => {}
                other => failures.push(format!("{other:?} at {at:?} after {d:?}")),
            }
        }
    }
    latencies.sort();
    (latencies, failures)
}

fn report(what: &str, latencies: &[Duration], failures: &[String]) -> Duration {
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "MEASURED {what}: {} calls, p50 {:?} p99 {:?} max {:?}, {} failed",
        latencies.len(),
        p(0.5),
        p(0.99),
        p(1.0),
        failures.len()
    );
    p(0.99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_instance_killed_and_one_frozen_every_concurrent_call_reaches_the_healthy_one() {
    let (_frozen, frozen_url) = frozen();
    let (_killed, killed_url) = killed();
    let rooms = UpstreamClient::new(
        "room",
        Discovery::Static(vec![killed_url, frozen_url, healthy().await]),
        &booking_policy(),
    )
    .unwrap();
    // Long enough for the frozen instance's per-try timeouts to fire and for the killed
    // one's breaker to open and probe again.
    let call = move || {
        let rooms = rooms.clone();
        async move {
            rooms
                .send(http::Request::get("/rooms/7").body(Bytes::new()).unwrap())
                .await
                .map(|r| r.status().as_u16())
                .map_err(|p| format!("{} {}", p.status, p.detail))
        }
    };
    let (latencies, failures) = load(call, Duration::from_secs(5)).await;
    let p99 = report("static discovery", &latencies, &failures);
    assert!(failures.is_empty(), "failed calls: {failures:#?}");
    // The frozen instance costs at most a hedge delay (500 ms before latency is known)
    // plus scheduling on a loaded machine, never the per-try timeout.
    assert!(p99 < Duration::from_millis(1000), "p99 {p99:?}");
}

/// The drill with registry-like discovery: after 2.5 s the killed and the frozen instance
/// leave the set; with `hiccup`, the remaining instance then stalls for 1.2 s (longer
/// than the 1 s per-try timeout) once, at 4 s.
async fn drill_with_discovery(what: &str, hiccup: bool) {
    let (_frozen, frozen_url) = frozen();
    let stall_until = Arc::new(Mutex::new(None));
    let target = |name: &str, url: &str| Target {
        name: name.into(),
        origin: Origin::parse(url).unwrap(),
    };
    let room_1 = target("room-1", &healthy_with_hiccup(stall_until.clone()).await);
    let (_killed, killed_url) = killed();
    let (tx, rx) = watch::channel::<Targets>(Arc::new(vec![
        room_1.clone(),
        target("room-2", &killed_url),
        target("room-3", &frozen_url),
    ]));
    let policy = booking_policy();
    let metrics = UpstreamMetrics::unregistered();
    let upstream = ServiceUpstream::new(
        "room",
        &policy,
        Source::Watch(rx),
        http_client(ClientOptions::default()),
        metrics.clone(),
    );
    let route = upstream.route("room", policy.request, metrics);
    let call = move || {
        let route = route.clone();
        async move {
            let req = http::Request::get("/rooms/7")
                .body(ProxyBody::empty())
                .unwrap();
            match route.send(req).await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    r.into_body().collect().await.map_err(|e| e.to_string())?;
                    Ok(status)
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    // The registry lease (3 s in `hotel up`) runs out for both broken instances while
    // the load runs.
    let expire = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        tx.send(Arc::new(vec![room_1])).unwrap();
        if hiccup {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            *stall_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(1200));
        }
        tx
    });
    let (latencies, failures) = load(call, Duration::from_secs(7)).await;
    let _tx = expire.await.unwrap();
    let p99 = report(what, &latencies, &failures);
    println!("{:#?}", upstream.endpoints());
    let shown: Vec<&String> = failures.iter().take(20).collect();
    assert!(
        failures.is_empty(),
        "{} failed calls, first: {shown:#?}",
        failures.len()
    );
    // A stall costs its length (plus scheduling) to the calls caught in it; the p99 stays
    // well under the deadline.
    assert!(p99 < Duration::from_millis(1500), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_discovery_drops_the_killed_and_the_frozen_instance_the_healthy_one_keeps_answering() {
    drill_with_discovery("registry-like discovery", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_instance_slower_than_the_per_try_timeout_for_a_moment_is_not_ejected() {
    // Its breaker counts the timeouts; ejecting it would turn a 1.2 s stall into "no
    // healthy instance" 503s for a whole open period (and longer if the probe is slow).
    drill_with_discovery("last instance stalls 1.2 s", true).await;
}

/// An instance that can be frozen and resumed like a SIGSTOPped process: while paused it
/// answers nothing (health probes included); on resume everything it holds is answered.
/// `hits` counts the requests that are not health probes.
struct Pausable {
    url: String,
    paused: watch::Sender<bool>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

async fn pausable(listener: Option<tokio::net::TcpListener>) -> Pausable {
    let (paused, rx) = watch::channel(false);
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let app = Router::new().fallback(move |uri: http::Uri| {
        let mut rx = rx.clone();
        let counted = counted.clone();
        async move {
            if uri.path() != "/healthz" {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let _ = rx.wait_for(|p| !*p).await;
            axum::Json(serde_json::json!({"ok": true}))
        }
    });
    let l = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Pausable {
        url: format!("http://{addr}"),
        paused,
        hits,
    }
}

/// Steady calls from 8 tasks through a client of `first` and two healthy instances.
struct Background {
    rooms: UpstreamClient,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Background {
    async fn start(first: &str) -> Background {
        let rooms = UpstreamClient::new(
            "room",
            Discovery::Static(vec![first.to_owned(), healthy().await, healthy().await]),
            &booking_policy(),
        )
        .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..8)
            .map(|_| {
                let (rooms, stop) = (rooms.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    // Bounded in count as well as by `stop`.
                    for _ in 0..100_000 {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            break;
                        }
                        let r = rooms
                            .send(http::Request::get("/rooms/7").body(Bytes::new()).unwrap())
                            .await;
                        if let Err(p) = r {
                            failures.push(format!("{} {}", p.status, p.detail));
                        }
                    }
                    failures
                })
            })
            .collect();
        Background { rooms, stop, tasks }
    }

    /// Stops the calls; every one of them must have succeeded.
    async fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut failures = Vec::new();
        for t in self.tasks {
            failures.extend(t.await.unwrap());
        }
        assert!(failures.is_empty(), "failed calls: {failures:#?}");
    }
}

/// Polls `check` every 10 ms until it holds, for at most `limit`; returns how long it took.
async fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !check() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

fn breaker_of(rooms: &UpstreamClient, url: &str) -> BreakerState {
    rooms
        .endpoints()
        .into_iter()
        .find(|e| e.address == url)
        .unwrap()
        .breaker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_gets_nothing_while_silent_and_is_back_as_soon_as_it_answers() {
    use std::sync::atomic::Ordering;
    let frozen = pausable(None).await;
    let load = Background::start(&frozen.url).await;
    let rooms = &load.rooms;
    within(
        Duration::from_secs(10),
        "traffic reaches every instance",
        || frozen.hits.load(Ordering::SeqCst) > 20,
    )
    .await;
    frozen.paused.send_replace(true);
    // Ejected for its silence long before any per-try timeout (1 s) could say so.
    let ejected = within(
        Duration::from_secs(5),
        "the silent instance is ejected",
        || breaker_of(rooms, &frozen.url) == BreakerState::Open,
    )
    .await;
    println!("MEASURED ejected {ejected:?} after the freeze");
    // While it stays silent it receives nothing new (its one health probe is not
    // counted): sample the count, wait, sample again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = frozen.hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        frozen.hits.load(Ordering::SeqCst),
        before,
        "requests reached the frozen instance after its ejection"
    );
    // It resumes: the waiting health probe is answered and traffic returns.
    frozen.paused.send_replace(false);
    let back = within(
        Duration::from_secs(5),
        "the resumed instance is back",
        || {
            breaker_of(rooms, &frozen.url) == BreakerState::Closed
                && frozen.hits.load(Ordering::SeqCst) > before
        },
    )
    .await;
    println!("MEASURED back in rotation {back:?} after the resume");
    load.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_back_in_rotation_soon_after_it_restarts_on_its_address() {
    use std::sync::atomic::Ordering;
    let (hold, dead) = killed();
    let addr = dead.trim_start_matches("http://").to_owned();
    let load = Background::start(&dead).await;
    let rooms = &load.rooms;
    within(
        Duration::from_secs(10),
        "refused connections eject it",
        || breaker_of(rooms, &dead) == BreakerState::Open,
    )
    .await;
    // Long enough for an exponential backoff to have grown past a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The instance comes back on its address.
    drop(hold);
    let restarted = pausable(Some(tokio::net::TcpListener::bind(&addr).await.unwrap())).await;
    let back = within(
        Duration::from_secs(5),
        "the restarted instance is back",
        || restarted.hits.load(Ordering::SeqCst) > 0,
    )
    .await;
    println!("MEASURED back in rotation {back:?} after the restart");
    load.finish().await;
}
