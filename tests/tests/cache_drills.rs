//! The caching drills of issue 14, run against a real cluster (`hotel up`: registry, two
//! replicas of each service, the gateway with its HTTP cache), as a person runs them with
//! curl: validators and hits, a change making the next read a miss, stale answers while
//! every room replica is dead, request coalescing, and personal data never shared
//! between two API keys.
//!
//! Every drill prints what it measured as `MEASURED ...` lines
//! (`cargo test -p hotel-tests --test cache_drills -- --nocapture`).
//!
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test cache_drills`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod cluster_support;

use cluster_support::{Cluster, measured};
use reqwest::{Method, header::HeaderMap};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One client of the gateway: its URL and an API key.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    gateway: String,
    key: String,
}

/// What came back.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Client {
    async fn of(c: &mut Cluster) -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .no_proxy()
                .build()
                .unwrap(),
            gateway: c.gateway().unwrap(),
            key: c.api_key().unwrap(),
        }
    }

    fn with_key(&self, key: &str) -> Client {
        Client {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.gateway))
            .bearer_auth(&self.key);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.call(Method::GET, path, headers, None).await
    }

    /// Creates a room; returns its `/api/rooms/{id}` path.
    async fn room(&self) -> String {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let r = self
            .call(
                Method::POST,
                "/api/rooms",
                &[],
                Some(
                    json!({"number": format!("C{}", &suffix[..8]), "kind": "double",
                            "capacity": 2, "nightly_rate_cents": 10000}),
                ),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let path = format!("/api/rooms/{}", r.body["id"].as_str().unwrap());
        assert_eq!(
            r.header("location"),
            path,
            "Location as the client addresses it"
        );
        path
    }
}

/// The gateway cache's counters from `hotel status --json`.
fn cache_counts(c: &mut Cluster) -> Value {
    let s = c.status().unwrap();
    assert!(s["cache"].is_object(), "hotel status shows the cache: {s}");
    s["cache"].clone()
}

fn count(v: &Value, what: &str) -> u64 {
    v[what].as_u64().unwrap_or_else(|| panic!("{what} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_drill_1_2_a_second_read_is_a_hit_its_etag_gets_304_and_a_patch_makes_the_next_read_a_miss()
 {
    let drill = "cache drill 1-2 (hit, 304, change)";
    // max-age 60 s, so that a slow machine cannot turn the second read into a revalidation.
    let mut c = Cluster::up_with_env(&[], &[("HOTEL_ROOM__CACHE__MAX_AGE", "60s")])
        .await
        .unwrap();
    let api = Client::of(&mut c).await;
    let room = api.room().await;

    let first = api.get(&room, &[]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-cache"), "MISS");
    assert_eq!(
        first.header("cache-control"),
        "public, max-age=60, stale-if-error=300"
    );
    let etag = first.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with("-1\""), "{etag}");
    assert!(!first.header("last-modified").is_empty());

    let started = Instant::now();
    let second = api.get(&room, &[]).await;
    measured(drill, "hit latency ms", started.elapsed().as_millis());
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-cache"), "HIT");
    assert_eq!(second.header("etag"), etag);
    assert!(!second.header("age").is_empty(), "Age on every hit");
    assert_eq!(second.body, first.body);

    let not_modified = api.get(&room, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.body, Value::Null);
    assert_eq!(not_modified.header("etag"), etag);

    // A stale If-Match is refused by the room service, through the gateway.
    let refused = api
        .call(
            Method::PATCH,
            &room,
            &[("if-match", "\"not-the-current-version\"")],
            Some(json!({"capacity": 3})),
        )
        .await;
    assert_eq!(refused.status, 412, "{}", refused.body);
    assert_eq!(refused.body["type"], "/problems/precondition-failed");

    let changed = api
        .call(
            Method::PATCH,
            &room,
            &[("if-match", &etag)],
            Some(json!({"capacity": 3})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let new_etag = changed.header("etag").to_owned();
    assert_ne!(new_etag, etag);

    let after = api.get(&room, &[]).await;
    assert_eq!(after.status, 200);
    assert_eq!(
        after.header("x-cache"),
        "MISS",
        "the PATCH invalidated the entry"
    );
    assert_eq!(after.header("etag"), new_etag);
    assert_eq!(after.body["capacity"], 3);
    let old = api.get(&room, &[("if-none-match", &etag)]).await;
    assert_eq!(old.status, 200, "the old ETag is out of date");
    assert_eq!(old.header("x-cache"), "HIT");
    assert_eq!(old.header("etag"), new_etag);
    let counts = cache_counts(&mut c);
    measured(drill, "gateway cache after the drill", &counts);
    assert!(count(&counts, "hits") >= 3, "{counts}");
    let text = c.control(&["status"]);
    let line = text
        .lines()
        .find(|l| l.starts_with("gateway cache: hit ratio "))
        .unwrap_or_else(|| panic!("hotel status shows the cache hit ratio:\n{text}"));
    measured(drill, "hotel status", line);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_drill_3_with_every_room_replica_dead_a_room_read_before_is_served_stale_and_one_never_read_is_503()
 {
    let drill = "cache drill 3 (every room replica killed)";
    // Fresh for 1 s, then served stale for 10 s more while the room service fails, so
    // both ends of the window are seen in one test.
    let window = Duration::from_secs(10);
    let mut c = Cluster::up_with_env(
        &[],
        &[
            ("HOTEL_ROOM__CACHE__MAX_AGE", "1s"),
            ("HOTEL_ROOM__CACHE__STALE_IF_ERROR", "10s"),
        ],
    )
    .await
    .unwrap();
    let api = Client::of(&mut c).await;
    let (read, never_read) = (api.room().await, api.room().await);
    let first = api.get(&read, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-cache"), "MISS");
    // While the room service is up, a stale entry is revalidated with its ETag and the
    // service's 304 refreshes it.
    let started = Instant::now();
    loop {
        let r = api.get(&read, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, first.body);
        assert_eq!(r.header("etag"), first.header("etag"));
        match r.header("x-cache") {
            "REVALIDATED" => break,
            "HIT" => {}
            other => panic!("x-cache {other} for an unchanged room"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never revalidated"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    measured(
        drill,
        "s until the entry was revalidated by a 304",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    let read_at = Instant::now();
    let rooms: Vec<String> = c.status().unwrap()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["service"] == "room")
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rooms.len(), 2, "{rooms:?}");
    for name in &rooms {
        c.control(&["kill", name]);
    }
    measured(
        drill,
        "s from the read to every room replica killed",
        format!("{:.2}", read_at.elapsed().as_secs_f64()),
    );

    // Until the window ends, the room read before answers 200 every time: a HIT while
    // fresh, then STALE.
    let mut stale = 0;
    let mut first_stale = None;
    while read_at.elapsed() < window - Duration::from_secs(1) {
        let r = api.get(&read, &[]).await;
        assert_eq!(
            r.status,
            200,
            "a room read before answers within the stale-if-error window ({:?} after the read): {}",
            read_at.elapsed(),
            r.body
        );
        assert_eq!(r.body, first.body);
        match r.header("x-cache") {
            "STALE" => {
                stale += 1;
                first_stale.get_or_insert(read_at.elapsed());
                let age: u64 = r.header("age").parse().unwrap();
                assert!(age >= 1, "Age on a stale answer: {age}");
            }
            "HIT" => assert!(stale == 0, "fresh again after being stale"),
            other => panic!("x-cache {other} with every room replica dead"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(stale > 0, "no STALE answer within the window");
    measured(drill, "stale answers served", stale);
    measured(
        drill,
        "first STALE after the read s",
        format!("{:.2}", first_stale.unwrap().as_secs_f64()),
    );

    // A room never read has nothing to fall back on: 503 problem+json once the gateway
    // knows no room instance is left (a 502 may come first while it learns).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        let r = api.get(&never_read, &[]).await;
        assert_ne!(r.status, 200, "a room never read cannot be answered");
        assert_eq!(r.header("content-type"), "application/problem+json");
        if r.status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 within 30 s: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    measured(
        drill,
        "s until a never-read room answers 503",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );

    // Past the window the stale entry is no longer served.
    let deadline = Instant::now() + window + Duration::from_secs(30);
    loop {
        let r = api.get(&read, &[]).await;
        if r.status != 200 {
            assert!(
                read_at.elapsed() >= window,
                "served stale only inside the window"
            );
            assert_eq!(r.status, 503, "{}", r.body);
            break;
        }
        assert!(Instant::now() < deadline, "still served past the window");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    measured(
        drill,
        "s from the read until the stale answer ended",
        format!("{:.2}", read_at.elapsed().as_secs_f64()),
    );
    let counts = cache_counts(&mut c);
    assert!(count(&counts, "stale") >= stale, "{counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_drill_4_fifty_concurrent_reads_of_a_cold_room_reach_the_room_service_once() {
    let drill = "cache drill 4 (coalescing)";
    // No hedging for rooms: a hedge is a second attempt by policy (on a loaded machine
    // a single read may outlast the hedge delay), which this drill does not measure.
    let mut c = Cluster::up_with_env(
        &[],
        &[("HOTEL_GATEWAY__SERVICES__ROOM__POLICY__HEDGE", "false")],
    )
    .await
    .unwrap();
    let api = Client::of(&mut c).await;
    let room = api.room().await;
    let sent_before = c.requests_to_service("room").unwrap();
    let counts_before = cache_counts(&mut c);

    let started = Instant::now();
    let reads: Vec<_> = (0..50)
        .map(|_| {
            let (api, room) = (api.clone(), room.clone());
            tokio::spawn(async move { api.get(&room, &[]).await })
        })
        .collect();
    let mut outcomes = std::collections::BTreeMap::<String, u32>::new();
    let mut etags = std::collections::BTreeSet::new();
    for r in reads {
        let r = r.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        *outcomes.entry(r.header("x-cache").to_owned()).or_default() += 1;
        etags.insert(r.header("etag").to_owned());
    }
    measured(
        drill,
        "50 concurrent reads took ms",
        started.elapsed().as_millis(),
    );
    measured(drill, "x-cache outcomes", format!("{outcomes:?}"));
    assert_eq!(etags.len(), 1, "{etags:?}");
    let sent = c.requests_to_service("room").unwrap() - sent_before;
    measured(drill, "requests the room service received", sent);
    assert_eq!(sent, 1, "outcomes {outcomes:?}");
    assert_eq!(outcomes.get("MISS"), Some(&1), "{outcomes:?}");
    assert_eq!(outcomes.get("HIT"), Some(&49), "{outcomes:?}");
    let counts = cache_counts(&mut c);
    assert_eq!(
        count(&counts, "misses") - count(&counts_before, "misses"),
        1
    );
    assert_eq!(count(&counts, "hits") - count(&counts_before, "hits"), 49);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_drill_5_a_customer_answer_for_one_api_key_is_never_served_to_another() {
    let drill = "cache drill 5 (two API keys)";
    let dir = hotel_tests::TempDir::new("hotel-keys");
    let other_key = format!("hk_other_{}", uuid::Uuid::new_v4().simple());
    let hashed = std::process::Command::new(hotel_tests::hotel_bin())
        .args(["gateway", "hash-key", &other_key])
        .output()
        .unwrap();
    assert!(hashed.status.success());
    let keys = dir.path().join("keys");
    std::fs::write(
        &keys,
        format!("other:{}\n", String::from_utf8_lossy(&hashed.stdout).trim()),
    )
    .unwrap();
    let mut c = Cluster::up_with_env(
        &[],
        &[("HOTEL_GATEWAY__AUTH__KEYS_FILE", keys.to_str().unwrap())],
    )
    .await
    .unwrap();
    let a = Client::of(&mut c).await;
    let b = a.with_key(&other_key);
    let created = a
        .call(
            Method::POST,
            "/api/customers",
            &[],
            Some(json!({"name": "Private Person",
                        "email": format!("p-{}@example.test", uuid::Uuid::new_v4().simple())})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let customer = format!("/api/customers/{}", created.body["id"].as_str().unwrap());

    let before = c.requests_to_service("customer").unwrap();
    for _ in 0..2 {
        let r = a.get(&customer, &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("cache-control"), "private, no-store");
        assert!(!r.header("etag").is_empty());
        assert!(
            matches!(r.header("x-cache"), "MISS" | "BYPASS"),
            "{}",
            r.header("x-cache")
        );
    }
    let r = b.get(&customer, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        matches!(r.header("x-cache"), "MISS" | "BYPASS"),
        "key B got {} for key A's customer read",
        r.header("x-cache")
    );
    // A's ETag does not get B a 304 from the gateway either: it goes to the service.
    let etag = r.header("etag").to_owned();
    let r = b.get(&customer, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(matches!(r.header("x-cache"), "MISS" | "BYPASS"));
    let reached = c.requests_to_service("customer").unwrap() - before;
    measured(
        drill,
        "customer reads that reached the customer service",
        format!("{reached} of 4"),
    );
    assert!(
        reached >= 4,
        "every personal read went to the customer service: {reached}"
    );
    let counts = cache_counts(&mut c);
    assert_eq!(count(&counts, "hits"), 0, "{counts}");
    assert_eq!(
        count(&counts, "entries"),
        0,
        "nothing personal is stored: {counts}"
    );
}

/// The gateway's `/metrics` (admin listener, admin token from `cluster.json`).
async fn gateway_metrics(c: &mut Cluster) -> String {
    let file = c.file().unwrap();
    reqwest::Client::new()
        .get(format!("{}/metrics", file["admin_url"].as_str().unwrap()))
        .bearer_auth(file["admin_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample `name` (no labels) in a Prometheus text exposition.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in the gateway's metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_drill_6_a_room_changed_at_the_room_service_itself_is_dropped_from_the_gateway_cache_by_its_event()
 {
    let drill = "cache drill 6 (hotel.room.updated invalidates)";
    // max-age 60 s: only the event can make the entry go before the drill ends.
    let mut c = Cluster::up_with_env(&[], &[("HOTEL_ROOM__CACHE__MAX_AGE", "60s")])
        .await
        .unwrap();
    let api = Client::of(&mut c).await;
    // No wait for the gateway to find room's feed: an update made before it did is
    // applied when it does (it reads the updates made since its start).
    let room = api.room().await;
    assert_eq!(api.get(&room, &[]).await.header("x-cache"), "MISS");
    let hit = api.get(&room, &[]).await;
    assert_eq!(hit.header("x-cache"), "HIT");
    let etag = hit.header("etag").to_owned();
    let before = gateway_metrics(&mut c).await;

    // Straight to a room instance, behind the gateway's back.
    let file = c.file().unwrap();
    let address = file["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "room-1")
        .and_then(|i| i["address"].as_str())
        .unwrap()
        .to_owned();
    let id = room.rsplit('/').next().unwrap();
    let changed = api
        .http
        .patch(format!("http://{address}/rooms/{id}"))
        .header("if-match", &etag)
        .json(&json!({"capacity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    let new_etag = changed.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let changed_at = Instant::now();

    // Hits until the event arrives; the first answer that is not a hit must be the miss
    // that fetched the new version.
    let after = hotel_tests::eventually(
        Duration::from_secs(20),
        "the event to drop the entry",
        || {
            let (api, room) = (api.clone(), room.clone());
            async move {
                let a = api.get(&room, &[]).await;
                (a.header("x-cache") != "HIT").then_some(a)
            }
        },
    )
    .await
    .unwrap();
    measured(
        drill,
        "change to invalidation ms",
        changed_at.elapsed().as_millis(),
    );
    assert_eq!(after.status, 200, "{}", after.body);
    assert_eq!(after.header("x-cache"), "MISS");
    assert_eq!(after.header("etag"), new_etag);
    assert_eq!(after.body["capacity"], 3);
    let metrics = gateway_metrics(&mut c).await;
    let invalidations = |t: &str| sample(t, "gateway_cache_event_invalidations_total");
    assert!(
        invalidations(&metrics) > invalidations(&before),
        "counted in gateway_cache_event_invalidations_total"
    );
    measured(
        drill,
        "feed errors",
        sample(&metrics, "gateway_cache_feed_errors_total"),
    );
}
