//! The fault drills (issue 17), run as a person runs them: `hotel up --replicas room=3`,
//! steady `GET /api/rooms/{id}` load through the gateway, and `hotel fault room-2 ...`
//! while `hotel status --json` shows how the gateway sees each instance.
//!
//! The load is generated here, not by `hotel load`, because it must bypass the gateway's
//! HTTP cache (`Cache-Control: no-store`: every read reaches an instance) and keep each
//! request's latency for the p99 of a chosen interval.
//!
//! Bounds are generous (a shared 2-core machine); every drill prints what it measured as
//! `MEASURED ...` lines (`cargo test -p hotel-tests --test fault_drills -- --nocapture`).

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod cluster_support;

use cluster_support::{Cluster, measured, until};
use serde_json::Value;
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The drills run one at a time: two clusters under load at once on a 2-core machine
/// would measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One answered (or failed) request of the load.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    latency: Duration,
    ok: bool,
    what: String,
}

/// Steady reads of one room at `rate` a second until dropped.
struct ReadLoad {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ReadLoad {
    async fn start(c: &mut Cluster, rate: u32) -> ReadLoad {
        let (gw, key) = (c.gateway().unwrap(), c.api_key().unwrap());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .no_proxy()
            .build()
            .unwrap();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let room: Value = http
            .post(format!("{gw}/api/rooms"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"number": format!("F{}", &suffix[..8]), "kind": "double", "capacity": 2, "nightly_rate_cents": 10000}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let url = format!("{gw}/api/rooms/{}", room["id"].as_str().unwrap());
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            loop {
                tick.tick().await;
                let req = http
                    .get(&url)
                    .bearer_auth(&key)
                    .header("cache-control", "no-store");
                let out = out.clone();
                tokio::spawn(async move {
                    let at = Instant::now();
                    let (ok, what) = match req.send().await {
                        Ok(r) if r.status().is_success() => (true, String::new()),
                        Ok(r) => (false, format!("HTTP {}", r.status())),
                        Err(e) => (false, e.to_string()),
                    };
                    out.lock().unwrap().push(Sample {
                        at,
                        latency: at.elapsed(),
                        ok,
                        what,
                    });
                });
            }
        });
        ReadLoad { samples, task }
    }

    /// The samples of requests sent from `since` on.
    fn since(&self, since: Instant) -> Vec<Sample> {
        let s = self.samples.lock().unwrap();
        s.iter().filter(|x| x.at >= since).cloned().collect()
    }

    /// Stops sending; waits for the requests in flight and returns every sample.
    async fn stop(self) -> Vec<Sample> {
        self.task.abort();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = until(Duration::from_secs(20), "in-flight reads to finish", || {
            Arc::strong_count(&self.samples) == 1
        })
        .await;
        self.samples.lock().unwrap().clone()
    }
}

fn p99(samples: &[Sample]) -> Duration {
    let mut l: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    l.sort();
    l.get((l.len() * 99 / 100).min(l.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn assert_all_ok(drill: &str, samples: &[Sample]) {
    let failed: Vec<&Sample> = samples.iter().filter(|s| !s.ok).collect();
    measured(drill, "client requests", samples.len());
    measured(drill, "failed client requests", failed.len());
    assert!(!samples.is_empty(), "{drill}: no requests were sent");
    assert!(
        failed.is_empty(),
        "{drill}: {} of {} client requests failed, first: {:?}",
        failed.len(),
        samples.len(),
        failed.first().map(|s| &s.what)
    );
}

/// The gateway's breaker state of `name` (`closed`, `open`, `half_open`).
fn breaker(c: &mut Cluster, name: &str) -> String {
    c.instance(name)
        .ok()
        .and_then(|r| r["gateway"]["breaker"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The gateway's ejections of `name` so far, by reason (`upstream_ejections_total`).
async fn ejections(admin: &(String, String), name: &str) -> Vec<(String, u64)> {
    let (admin, token) = admin;
    let metrics = reqwest::Client::new()
        .get(format!("{admin}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("gateway_upstream_ejections_total")
                && l.contains(&format!("instance=\"{name}\""))
        })
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_owned();
            Some((reason, l.rsplit(' ').next()?.parse().ok()?))
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Attempts the gateway sent to each room replica.
fn room_requests(c: &mut Cluster) -> [u64; 3] {
    ["room-1", "room-2", "room-3"].map(|n| c.requests_to(n).unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_drill_half_the_requests_of_one_replica_fail_clients_see_none_and_it_is_ejected_until_cleared()
 {
    let drill = "fault drill (error rate 0.5 on one of three)";
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::up(&["--replicas", "room=3"]).await.unwrap();
    let load = ReadLoad::start(&mut c, 40).await;
    c.wait_traffic_to("room-2", Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let out = c.control(&["fault", "room-2", "--error-rate", "0.5"]);
    assert!(out.contains("error 50% (503)"), "{out}");
    let faulted_at = Instant::now();
    let row = c.instance("room-2").unwrap();
    assert_eq!(row["fault"]["spec"]["error_rate"], 0.5, "{row}");
    let file = c.file().unwrap();
    let admin = (
        file["admin_url"].as_str().unwrap().to_owned(),
        file["admin_token"].as_str().unwrap().to_owned(),
    );
    let ejected_after =
        hotel_tests::eventually(Duration::from_secs(30), "room-2 ejected", || async {
            (!ejections(&admin, "room-2").await.is_empty()).then_some(())
        })
        .await
        .map(|()| faulted_at.elapsed())
        .unwrap();
    measured(drill, "ejected after", format!("{ejected_after:?}"));
    // Out of rotation: over the next 2 s it gets (almost) nothing while it stays faulty.
    let before = room_requests(&mut c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = room_requests(&mut c);
    let got = after[1] - before[1];
    let all: u64 = (0..3).map(|i| after[i] - before[i]).sum();
    measured(
        drill,
        "room-2 share of attempts while ejected",
        format!("{got} of {all}"),
    );
    assert!(
        got * 5 < all.max(1),
        "room-2 got {got} of {all} attempts while ejected"
    );
    let status = c.hotel(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("fault: room-2 error 50% (503)"), "{text}");

    let out = c.control(&["fault", "room-2", "--clear"]);
    assert!(out.contains("room-2: no fault"), "{out}");
    let cleared_at = Instant::now();
    let back_after = until(Duration::from_secs(20), "room-2 back in rotation", || {
        breaker(&mut c, "room-2") == "closed"
    })
    .await
    .unwrap();
    c.wait_traffic_to("room-2", Duration::from_secs(20))
        .await
        .unwrap();
    measured(
        drill,
        "back in rotation after --clear",
        format!("{back_after:?}"),
    );
    let samples = load.stop().await;
    measured(
        drill,
        "fault in force s",
        format!("{:.1}", cleared_at.duration_since(faulted_at).as_secs_f64()),
    );
    assert_all_ok(drill, &samples);
    // Usually for its failure percentage; five failures in a row (1 in 32 at 50 %) may
    // come first and eject it as well.
    let ejections = ejections(&admin, "room-2").await;
    measured(
        drill,
        "ejections of room-2 by reason",
        format!("{ejections:?}"),
    );
    assert!(!ejections.is_empty(), "no ejection of room-2 counted");
    let log = std::fs::read_to_string(c.log_path("gateway")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("breaker opened") && l.contains("room-2")),
        "the ejection is not in the gateway's log"
    );
    let log = std::fs::read_to_string(c.log_path("room-2")).unwrap();
    assert!(log.contains("fault injected instance=room-2"), "{log}");
    // Every service instance and the registry serve /metrics; room-2 counted its faults,
    // booking shows its own view of room and customer (its upstream client).
    let file = c.file().unwrap();
    let http = reqwest::Client::new();
    for inst in file["instances"].as_array().unwrap() {
        let (name, addr) = (
            inst["name"].as_str().unwrap(),
            inst["address"].as_str().unwrap(),
        );
        if name == "gateway" {
            continue;
        }
        let text = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("hotel_http_requests_total{"),
            "{name}:\n{text}"
        );
        if name == "room-2" {
            let injected = text
                .lines()
                .find(|l| l.starts_with("hotel_faults_injected_total{kind=\"error\"}"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0);
            measured(drill, "faults injected into room-2", injected);
            assert!(injected > 0, "{text}");
        }
        if name.starts_with("booking") {
            assert!(text.contains("hotel_instances{service=\"room\"}"), "{text}");
            assert!(text.contains("hotel_db_pool_connections{"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_drill_a_slow_replica_loses_its_share_and_clients_keep_a_low_p99() {
    let drill = "fault drill (latency 300ms on one of three)";
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::up(&["--replicas", "room=3"]).await.unwrap();
    let load = ReadLoad::start(&mut c, 40).await;
    c.wait_traffic_to("room-2", Duration::from_secs(30))
        .await
        .unwrap();
    let steady = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    measured(
        drill,
        "client p99 before the fault (this machine's baseline)",
        format!("{:?}", p99(&load.since(steady))),
    );

    c.control(&["fault", "room-2", "--latency", "300ms", "--for", "60s"]);
    // Let the balancer learn, then measure a steady interval.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = Instant::now();
    let before = room_requests(&mut c);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = room_requests(&mut c);
    let got = after[1] - before[1];
    let all: u64 = (0..3).map(|i| after[i] - before[i]).sum();
    let window = load.since(from);
    let p99 = p99(&window);
    measured(drill, "room-2 share of attempts", format!("{got} of {all}"));
    measured(drill, "client p99 while room-2 is slow", format!("{p99:?}"));
    c.control(&["fault", "room-2", "--clear"]);
    let samples = load.stop().await;
    assert_all_ok(drill, &samples);
    assert!(all > 0, "no attempts measured");
    assert!(
        got * 10 < all,
        "the slow room-2 kept {got} of {all} attempts (10 % or more)"
    );
    // Generous for a shared 2-core machine: the slow replica's 300 ms must not reach
    // the client's p99 (the README reports the measured value against the baseline).
    assert!(
        p99 < Duration::from_millis(300),
        "client p99 {p99:?} is not under the injected 300ms"
    );
}
