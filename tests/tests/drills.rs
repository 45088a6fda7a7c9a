//! The failure drills of DESIGN.md section 6, run as a person runs them: `hotel up`, then
//! `hotel load` in the background while `hotel kill|pause|stop|start` break things, and
//! `hotel status --json` to watch the gateway's per-instance counters.
//!
//! Bounds are generous (a shared 2-core machine); every drill prints what it measured as
//! `MEASURED ...` lines (`cargo test -p hotel-tests --test drills -- --nocapture`).
//!
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test drills`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod cluster_support;

use cluster_support::{Cluster, Load, assert_no_failures, measured};
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long the load runs steadily before and after a disruption.
const STEADY: Duration = Duration::from_secs(3);

/// Only retryable requests: reads, and bookings and cancellations carrying an
/// `Idempotency-Key` (the gateway may resend them to another instance).
const RETRYABLE_MIX: &str = "availability=3,room=3,customer=2,book=2,cancel=1";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap()
}

/// Creates one customer and one room through the gateway; returns their ids.
async fn seed(c: &mut Cluster) -> (String, String) {
    let (gw, key) = (c.gateway().unwrap(), c.api_key().unwrap());
    let http = http();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    // Creates one resource, failing the drill unless the gateway answers 2xx.
    let create = |path: &str, body: Value| {
        let request = http
            .post(format!("{gw}/api/{path}"))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let created: Value = request
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .json()
                .await
                .unwrap();
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let customer = create(
        "customers",
        serde_json::json!({"name": "Drill Guest", "email": format!("drill-{suffix}@example.test")}),
    )
    .await;
    let room = create(
        "rooms",
        serde_json::json!({"number": format!("D{}", &suffix[..8]), "kind": "double", "capacity": 2, "nightly_rate_cents": 10000}),
    )
    .await;
    (customer, room)
}

/// Starts a cluster with `--replicas REPLICAS` and `hotel load` against it at `rate`
/// requests a second for `duration` with `mix`, and returns once the load phase runs and
/// the gateway sends traffic to the instance `busy` (the one the drill will disturb).
async fn under_load(
    replicas: &str,
    rate: &str,
    duration: &str,
    mix: &str,
    busy: &str,
) -> (Cluster, Load) {
    let mut c = Cluster::up(&["--replicas", replicas]).await.unwrap();
    let mut load = c
        .load(&["--rate", rate, "--duration", duration, "--mix", mix])
        .unwrap();
    load.wait_running(Duration::from_secs(60)).await.unwrap();
    c.wait_traffic_to(busy, Duration::from_secs(30))
        .await
        .unwrap();
    (c, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_1_kill_9_of_one_of_three_replicas_under_load_fails_no_request() {
    let drill = "drill 1 (kill -9 one of three)";
    let (mut c, load) = under_load("room=3", "40", "12s", RETRYABLE_MIX, "room-2").await;
    tokio::time::sleep(STEADY).await;
    let killed_at = Instant::now();
    c.control(&["kill", "room-2"]);
    // Keep the load running a few seconds past the kill, then end it.
    let left = async {
        let last = c.requests_to("room-2").unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(4)).await;
        c.requests_to("room-2").unwrap_or(0).saturating_sub(last)
    }
    .await;
    let summary = load.stop().unwrap();
    measured(
        drill,
        "attempts sent to the dead instance in the 4 s after the kill",
        left,
    );
    measured(
        drill,
        "load after the kill s",
        format!("{:.1}", killed_at.elapsed().as_secs_f64()),
    );
    assert_no_failures(drill, &summary, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2_a_frozen_replica_loses_its_traffic_fast_and_wins_it_back_after_sigcont() {
    let drill = "drill 2 (SIGSTOP one of three)";
    let mix = "room=3,availability=2,customer=1,book=1";
    let (mut c, load) = under_load("room=3", "40", "60s", mix, "room-2").await;

    c.control(&["pause", "room-2"]);
    let paused_at = Instant::now();
    // Traffic has left when the counter stops moving for a whole second.
    let mut last = c.requests_to("room-2").unwrap();
    let mut last_change = Instant::now();
    while last_change.elapsed() < Duration::from_secs(1) {
        assert!(
            paused_at.elapsed() < Duration::from_secs(15),
            "traffic kept going to the frozen room-2: {}",
            c.status().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Once its lease has run out the gateway forgets it: no traffic for sure.
        let now = c.requests_to("room-2").unwrap_or(last);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
    }
    let left_after = last_change.duration_since(paused_at);
    measured(
        drill,
        "traffic left the frozen instance after",
        format!("{left_after:?}"),
    );
    assert!(
        left_after <= Duration::from_secs(5),
        "traffic took {left_after:?} to leave the frozen instance"
    );
    // Stay frozen a little longer: the breaker is open, clients must not notice.
    tokio::time::sleep(Duration::from_secs(2)).await;

    c.control(&["resume", "room-2"]);
    let back_after = c
        .wait_traffic_to("room-2", Duration::from_secs(20))
        .await
        .unwrap();
    measured(
        drill,
        "traffic came back after SIGCONT within",
        format!("{back_after:?}"),
    );
    assert!(
        back_after <= Duration::from_secs(12),
        "room-2 took {back_after:?} to take traffic again"
    );
    let summary = load.stop().unwrap();
    assert_no_failures(drill, &summary, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_3_with_every_room_replica_dead_room_routes_fail_fast_and_a_new_one_takes_traffic_at_once()
 {
    let drill = "drill 3 (kill every replica of room)";
    let mut c = Cluster::up(&["--replicas", "customer=1,room=2,booking=1"])
        .await
        .unwrap();
    let (customer, room) = seed(&mut c).await;
    let (gw, key) = (c.gateway().unwrap(), c.api_key().unwrap());
    let http = http();
    c.control(&["kill", "room-1"]);
    c.control(&["kill", "room-2"]);

    // Room routes: while the gateway learns that the instances are gone (connect
    // refused) it may answer 502; from then on 503 problem+json, fast. Never a hang, a
    // 500 or a 504.
    let killed_at = Instant::now();
    let mut first_503 = None;
    let mut worst = Duration::ZERO;
    let mut fast_503s = 0;
    while fast_503s < 10 {
        assert!(
            killed_at.elapsed() < Duration::from_secs(15),
            "room routes never settled on 503 (first 503 at {first_503:?})"
        );
        let t = Instant::now();
        let res = http
            .get(format!("{gw}/api/rooms/{room}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = res.text().await.unwrap_or_default();
        assert!(
            ctype.starts_with("application/problem+json"),
            "{status} {ctype} {body}"
        );
        match (status, first_503) {
            (502, None) => {}
            (503, _) => {
                first_503.get_or_insert(killed_at.elapsed());
                worst = worst.max(took);
                fast_503s += 1;
            }
            _ => panic!("room route with no room instance answered {status}: {body}"),
        }
    }
    let first_503 = first_503.unwrap_or_default();
    measured(
        drill,
        "first 503 after the last room died",
        format!("{first_503:?}"),
    );
    measured(drill, "slowest of ten 503s", format!("{worst:?}"));
    assert!(
        first_503 <= Duration::from_secs(5),
        "503 only after {first_503:?}"
    );
    assert!(worst <= Duration::from_secs(1), "a 503 took {worst:?}");

    // Other services are unaffected.
    for _ in 0..10 {
        let res = http
            .get(format!("{gw}/api/customers/{customer}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "customer route while room is down");
    }

    // One new replica takes traffic within ~2 s of registering.
    c.control(&["start", "room"]);
    let started = Instant::now();
    loop {
        let res = http
            .get(format!("{gw}/api/rooms/{room}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no room answer {:?} after start: {}",
            started.elapsed(),
            res.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = started.elapsed();
    measured(
        drill,
        "room answers again after `hotel start room` returned",
        format!("{back:?}"),
    );
    assert!(back <= Duration::from_secs(5), "{back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_4_traffic_survives_the_registry_and_instances_re_register_when_it_returns() {
    let drill = "drill 4 (kill -9 the registry)";
    let (mut c, load) = under_load("2", "30", "60s", RETRYABLE_MIX, "room-1").await;
    let registry_url = c.file().unwrap()["registry_url"].clone();
    c.control(&["kill", "registry"]);
    // Traffic continues with the registry gone: the gateway routes to the instances it
    // last knew (which of them is the balancer's choice).
    let before = c.requests_to_service("room").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = c.requests_to_service("room").unwrap() - before;
    measured(drill, "room attempts in 3 s without a registry", during);
    assert!(during > 0, "no room traffic while the registry was down");

    let restarted_at = Instant::now();
    c.control(&["start", "registry"]);
    assert_eq!(
        c.file().unwrap()["registry_url"],
        registry_url,
        "the registry came back on another address"
    );
    let took = cluster_support::until(
        Duration::from_secs(20),
        "every service instance registered again",
        || {
            c.status().is_ok_and(|s| {
                s["instances"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|i| {
                        ["customer", "room", "booking"]
                            .contains(&i["service"].as_str().unwrap_or(""))
                    })
                    .all(|i| i["registry"] == "registered")
            })
        },
    )
    .await
    .unwrap();
    measured(
        drill,
        "all instances re-registered after the registry restart",
        format!("{took:?}"),
    );

    // Discovery works again: a new replica gets traffic.
    c.control(&["start", "room"]);
    let new_traffic = c
        .wait_traffic_to("room-3", Duration::from_secs(15))
        .await
        .unwrap();
    measured(
        drill,
        "new replica took traffic after start",
        format!("{new_traffic:?}"),
    );
    measured(
        drill,
        "registry restart to new replica traffic",
        format!("{:?}", restarted_at.elapsed()),
    );
    let summary = load.stop().unwrap();
    assert_no_failures(drill, &summary, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_5_a_graceful_stop_during_load_with_unkeyed_posts_fails_no_request() {
    let drill = "drill 5 (graceful stop, POSTs without key)";
    let mix = "signup=4,customer=3,availability=1,book=1";
    let (mut c, load) = under_load("customer=3", "40", "60s", mix, "customer-2").await;
    tokio::time::sleep(STEADY).await;
    let t = Instant::now();
    c.control(&["stop", "customer-2"]);
    measured(drill, "hotel stop took", format!("{:?}", t.elapsed()));
    assert_eq!(c.instance("customer-2").unwrap()["state"], "stopped");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let summary = load.stop().unwrap();
    assert!(
        summary["by_op"]["signup"]["requests"].as_u64().unwrap_or(0) > 0,
        "{summary}"
    );
    assert_no_failures(drill, &summary, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_6_a_rolling_restart_of_every_booking_replica_under_load_fails_no_request() {
    let drill = "drill 6 (rolling restart of booking)";
    let mix = "book=3,cancel=1,availability=2";
    let (mut c, load) = under_load("2", "30", "120s", mix, "booking-1").await;
    tokio::time::sleep(STEADY).await;
    let t = Instant::now();
    for name in ["booking-1", "booking-2"] {
        let old = c.instance(name).unwrap()["pid"].clone();
        c.control(&["stop", name]);
        let out = c.control(&["start", "booking"]);
        assert!(out.contains(&format!("started {name}")), "{out}");
        assert_ne!(c.instance(name).unwrap()["pid"], old);
        c.wait_traffic_to(name, Duration::from_secs(15))
            .await
            .unwrap();
    }
    measured(drill, "rolling restart took", format!("{:?}", t.elapsed()));
    // Load on the new instances only for a while.
    tokio::time::sleep(STEADY).await;
    let summary = load.stop().unwrap();
    assert_no_failures(drill, &summary, "");
}
