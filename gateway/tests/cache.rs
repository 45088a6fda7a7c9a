//! In-process tests of the gateway's shared HTTP cache: a real `Application` on port 0
//! in front of fake room and customer instances (axum on port 0) that answer with the
//! headers the services send (`public, max-age=5, stale-if-error=300` for rooms,
//! `private, no-store` for personal data), count what reaches them, and stop on purpose.

#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::type_complexity
)]

mod support;

use axum::{Router, http::HeaderMap, response::IntoResponse};
use hotel_gateway::Settings;
use hotel_upstream::PolicySettings;
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Gw, client, instances, json, key, loopback};
use tokio::sync::oneshot;

/// What a fake instance saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
}

/// What a fake instance answers.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Answer {
    fn ok(cache_control: &str, body: impl Into<String>) -> Answer {
        Answer {
            status: 200,
            headers: vec![("cache-control", cache_control.to_owned())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }
}

type Script = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A fake instance: every request is counted and logged, then answered by `script`.
struct Fake {
    url: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(script: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Fake {
        let script: Script = Arc::new(script);
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (h, s) = (hits.clone(), seen.clone());
        let app = Router::new().fallback(move |req: axum::extract::Request| {
            let (script, hits, seen) = (script.clone(), h.clone(), s.clone());
            async move {
                let saw = Seen {
                    method: req.method().to_string(),
                    path: req.uri().to_string(),
                    headers: req.headers().clone(),
                };
                hits.fetch_add(1, Ordering::SeqCst);
                seen.lock().unwrap().push(saw.clone());
                let a = script(&saw);
                if !a.delay.is_zero() {
                    tokio::time::sleep(a.delay).await;
                }
                let mut res = (
                    axum::http::StatusCode::from_u16(a.status).unwrap(),
                    a.body.clone(),
                )
                    .into_response();
                for (k, v) in &a.headers {
                    res.headers_mut().append(*k, v.parse().unwrap());
                }
                res
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Fake {
            url,
            hits,
            seen,
            stop: Some(tx),
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops the instance: its port refuses connections once this returns.
    async fn kill(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A gateway whose `room` and `customer` routes go to `room` and `customer` (no
/// hedging, so every upstream request is one the test can count).
async fn gateway(room: &str, customer: Option<&str>, tweak: impl FnOnce(&mut Settings)) -> Gw {
    let mut s = loopback();
    s.policy.hedge = Some(false);
    instances(
        &mut s,
        "room",
        vec![room.to_owned()],
        PolicySettings::default(),
    );
    if let Some(c) = customer {
        instances(
            &mut s,
            "customer",
            vec![c.to_owned()],
            PolicySettings::default(),
        );
    }
    tweak(&mut s);
    Gw::launch(s).await
}

const ROOMS: &str = "public, max-age=5, stale-if-error=300";

fn x_cache(r: &reqwest::Response) -> String {
    r.headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn age(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get("age")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Repeats `get` until `done` says yes about its answer (at most `within`); the last answer.
async fn poll_until(
    within: Duration,
    mut get: impl AsyncFnMut() -> reqwest::Response,
    done: impl Fn(&reqwest::Response) -> bool,
) -> reqwest::Response {
    let t = Instant::now();
    loop {
        let r = get().await;
        if done(&r) {
            return r;
        }
        assert!(
            t.elapsed() < within,
            "still {} {} after {within:?}",
            r.status(),
            x_cache(&r)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_second_get_is_a_hit_with_an_age_and_never_reaches_the_instance() {
    let room = Fake::start(|s| Answer::ok(ROOMS, format!("room at {}", s.path))).await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    let first = c.get(gw.url("/api/rooms/1")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.text().await.unwrap(), "room at /rooms/1");
    let second = c.get(gw.url("/api/rooms/1")).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(x_cache(&second), "HIT");
    assert!(age(&second).is_some(), "a hit carries Age");
    assert!(second.headers().contains_key("x-request-id"));
    assert_eq!(second.headers()["cache-control"], ROOMS);
    assert_eq!(second.text().await.unwrap(), "room at /rooms/1");
    let head = c.head(gw.url("/api/rooms/1")).send().await.unwrap();
    assert_eq!(
        x_cache(&head),
        "HIT",
        "HEAD is answered from the stored GET"
    );
    assert_eq!(room.hits(), 1);
    let other = c.get(gw.url("/api/rooms/1?x=1")).send().await.unwrap();
    assert_eq!(x_cache(&other), "MISS", "the query is part of the key");
    let status = gw.status().await;
    assert_eq!(status["cache"]["entries"], 2, "{status}");
    assert_eq!(status["cache"]["hits"], 2, "{status}");
    assert_eq!(status["cache"]["misses"], 2, "{status}");
    assert_eq!(status["cache"]["hit_ratio"], 0.5, "{status}");
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_cache_requests_total{route="/api/rooms",outcome="hit"} 2"#),
        "{m}"
    );
    assert!(m.contains("gateway_cache_entries 2"), "{m}");
}

#[tokio::test]
async fn a_key_in_pass_goes_straight_through_and_is_stored_again_once_its_answers_are_storable() {
    // The first two answers say no-store, the rest are storable.
    let served = Arc::new(AtomicUsize::new(0));
    let n = served.clone();
    let room = Fake::start(move |_| {
        if n.fetch_add(1, Ordering::SeqCst) < 2 {
            Answer::ok("no-store", "fresh each time")
        } else {
            Answer::ok(ROOMS, "storable now")
        }
    })
    .await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    let mut outcomes = Vec::new();
    for _ in 0..5 {
        let r = c.get(gw.url("/api/rooms/7")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        outcomes.push(x_cache(&r));
    }
    // no-store (pass begins), no-store (in pass), storable but in pass (not stored, pass
    // ends), storable (stored), hit.
    assert_eq!(outcomes, ["MISS", "MISS", "MISS", "MISS", "HIT"]);
    assert_eq!(room.hits(), 4);
}

#[tokio::test]
async fn a_patch_through_the_gateway_invalidates_the_uri_and_a_post_its_location() {
    let room = Fake::start(|s| match s.method.as_str() {
        "GET" => Answer::ok(ROOMS, "room"),
        "POST" => Answer {
            status: 201,
            ..Answer::ok("no-store", "created")
        }
        .header("location", "/api/rooms/9"),
        _ => Answer::ok("no-store", "changed"),
    })
    .await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    for path in ["/api/rooms/1", "/api/rooms/9"] {
        assert_eq!(x_cache(&c.get(gw.url(path)).send().await.unwrap()), "MISS");
        assert_eq!(x_cache(&c.get(gw.url(path)).send().await.unwrap()), "HIT");
    }
    let patch = c
        .patch(gw.url("/api/rooms/1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 200);
    assert_eq!(x_cache(&patch), "BYPASS");
    let after = c.get(gw.url("/api/rooms/1")).send().await.unwrap();
    assert_eq!(
        x_cache(&after),
        "MISS",
        "the PATCH dropped the stored answer"
    );
    let post = c
        .post(gw.url("/api/rooms"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 201);
    let nine = c.get(gw.url("/api/rooms/9")).send().await.unwrap();
    assert_eq!(
        x_cache(&nine),
        "MISS",
        "the POST's Location was invalidated"
    );
}

#[tokio::test]
async fn a_stale_answer_stands_in_for_a_dead_service_within_stale_if_error_and_not_after() {
    let room = Fake::start(|_| Answer::ok("public, max-age=1, stale-if-error=2", "room 1")).await;
    let gw = gateway(&room.url, None, |s| {
        s.services.get_mut("room").unwrap().policy.breaker_failures = Some(1);
    })
    .await;
    let c = client();
    let get = |path: &'static str| {
        let (c, url) = (c.clone(), gw.url(path));
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(x_cache(&get("/api/rooms/1").await), "MISS");
    room.kill().await;
    let stale = poll_until(
        Duration::from_secs(5),
        async || get("/api/rooms/1").await,
        |r| x_cache(r) != "HIT",
    )
    .await;
    assert_eq!(stale.status(), 200);
    assert_eq!(x_cache(&stale), "STALE");
    assert!(age(&stale).is_some_and(|a| a >= 1), "{:?}", stale.headers());
    assert_eq!(stale.text().await.unwrap(), "room 1");
    let never_read = get("/api/rooms/2").await;
    assert!(
        never_read.status() == 503 || never_read.status() == 502,
        "{}",
        never_read.status()
    );
    assert_eq!(x_cache(&never_read), "MISS");
    let never_read = poll_until(
        Duration::from_secs(5),
        async || get("/api/rooms/2").await,
        |r| r.status() == 503,
    )
    .await;
    assert_eq!(
        never_read.headers()["content-type"],
        "application/problem+json"
    );
    let after = poll_until(
        Duration::from_secs(10),
        async || get("/api/rooms/1").await,
        |r| r.status() != 200,
    )
    .await;
    assert_eq!(after.status(), 503, "past max-age + stale-if-error");
    assert_eq!(x_cache(&after), "MISS");
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_cache_stale_served_total{route="/api/rooms"}"#),
        "{m}"
    );
}

#[tokio::test]
async fn fifty_concurrent_gets_of_one_cold_key_reach_the_instance_once() {
    let room = Fake::start(|_| Answer {
        delay: Duration::from_millis(300),
        ..Answer::ok(ROOMS, "room")
    })
    .await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    let answers = futures::future::join_all((0..50).map(|_| {
        let (c, url) = (c.clone(), gw.url("/api/rooms/cold"));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), x_cache(&r), r.text().await.unwrap())
        }
    }))
    .await;
    assert_eq!(room.hits(), 1, "one upstream request for 50 clients");
    assert!(answers.iter().all(|(s, _, b)| *s == 200 && b == "room"));
    let misses = answers.iter().filter(|(_, x, _)| x == "MISS").count();
    assert_eq!(misses, 1, "{answers:?}");
}

#[tokio::test]
async fn a_private_answer_is_never_served_to_another_client_and_no_store_is_never_stored() {
    // The customer instance answers with the client name the gateway sends it.
    let customer = Fake::start(|s| {
        let who = s.headers["x-hotel-client"].to_str().unwrap().to_owned();
        let cc = if s.path.starts_with("/customers/mine") {
            "private, max-age=60"
        } else {
            "private, no-store"
        };
        Answer::ok(cc, format!("customer of {who}"))
    })
    .await;
    let room = Fake::start(|s| {
        if s.path.starts_with("/rooms/unmarked") {
            Answer::ok("max-age=60", "unmarked")
        } else {
            Answer::ok(ROOMS, "room")
        }
    })
    .await;
    let gw = gateway(&room.url, Some(&customer.url), |s| {
        s.auth.keys = vec![
            key("alice", "key-of-alice", false),
            key("bob", "key-of-bob", false),
        ];
    })
    .await;
    let c = client();
    let as_client = |k: &'static str, path: &'static str| {
        let (c, url) = (c.clone(), gw.url(path));
        async move {
            let r = c.get(url).header("x-api-key", k).send().await.unwrap();
            let x = x_cache(&r);
            (x, r.text().await.unwrap())
        }
    };
    for path in ["/api/customers/mine", "/api/customers/1"] {
        let (x, body) = as_client("key-of-alice", path).await;
        assert_eq!((x.as_str(), body.as_str()), ("MISS", "customer of alice"));
        let (x, body) = as_client("key-of-bob", path).await;
        assert_eq!((x.as_str(), body.as_str()), ("MISS", "customer of bob"));
        let (x, _) = as_client("key-of-alice", path).await;
        assert_eq!(x, "MISS", "{path} was stored");
    }
    assert_eq!(customer.hits(), 6);
    // With an API key, only answers marked public (or s-maxage) are shared.
    as_client("key-of-alice", "/api/rooms/unmarked").await;
    let (x, _) = as_client("key-of-bob", "/api/rooms/unmarked").await;
    assert_eq!(x, "MISS");
    as_client("key-of-alice", "/api/rooms/1").await;
    let (x, body) = as_client("key-of-bob", "/api/rooms/1").await;
    assert_eq!((x.as_str(), body.as_str()), ("HIT", "room"));
    let status = gw.status().await;
    assert_eq!(status["cache"]["entries"], 1, "{status}");
}

#[tokio::test]
async fn a_stale_entry_confirmed_by_a_304_is_served_revalidated() {
    let room = Fake::start(|s| {
        if s.headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            Answer {
                status: 304,
                body: String::new(),
                ..Answer::ok("public, max-age=1, stale-if-error=300", "")
            }
            .header("etag", "\"v1\"")
        } else {
            Answer::ok("public, max-age=1, stale-if-error=300", "room v1").header("etag", "\"v1\"")
        }
    })
    .await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    let get = || {
        let (c, url) = (c.clone(), gw.url("/api/rooms/1"));
        async move { c.get(url).send().await.unwrap() }
    };
    assert_eq!(x_cache(&get().await), "MISS");
    // The entry goes stale after a second: the next read asks upstream with If-None-Match.
    let r = poll_until(Duration::from_secs(5), get, |r| x_cache(r) != "HIT").await;
    assert_eq!(r.status(), 200);
    assert_eq!(x_cache(&r), "REVALIDATED");
    assert_eq!(r.text().await.unwrap(), "room v1");
    let asked = room.seen();
    assert_eq!(asked.len(), 2);
    assert_eq!(asked[1].headers["if-none-match"], "\"v1\"");
    assert_eq!(x_cache(&get().await), "HIT", "the 304 refreshed the entry");
    // A client's no-cache forces revalidation; its own matching If-None-Match gets a 304.
    let r = c
        .get(gw.url("/api/rooms/1"))
        .header("cache-control", "no-cache")
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(x_cache(&r), "REVALIDATED");
    assert_eq!(room.hits(), 3);
    let r = c
        .get(gw.url("/api/rooms/1"))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), x_cache(&r)), (304, "HIT".into()));
    let r = c
        .get(gw.url("/api/rooms/2"))
        .header("cache-control", "only-if-cached")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504, "only-if-cached and nothing stored");
    assert_eq!(room.hits(), 3);
}

#[tokio::test]
async fn an_answer_that_varies_is_served_only_to_requests_with_the_same_header() {
    let room = Fake::start(|s| {
        let lang = s
            .headers
            .get("accept-language")
            .map_or("none", |v| v.to_str().unwrap())
            .to_owned();
        Answer::ok(ROOMS, format!("room in {lang}")).header("vary", "Accept-Language")
    })
    .await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    let get = |lang: &'static str| {
        let (c, url) = (c.clone(), gw.url("/api/rooms/1"));
        async move {
            let r = c
                .get(url)
                .header("accept-language", lang)
                .send()
                .await
                .unwrap();
            (x_cache(&r), r.text().await.unwrap())
        }
    };
    assert_eq!(get("en").await, ("MISS".into(), "room in en".into()));
    assert_eq!(get("en").await, ("HIT".into(), "room in en".into()));
    assert_eq!(get("de").await, ("MISS".into(), "room in de".into()));
    assert_eq!(get("de").await, ("HIT".into(), "room in de".into()));

    let star = Fake::start(|_| Answer::ok(ROOMS, "room").header("vary", "*")).await;
    let gw = gateway(&star.url, None, |_| {}).await;
    for _ in 0..2 {
        let r = c.get(gw.url("/api/rooms/1")).send().await.unwrap();
        assert_eq!(x_cache(&r), "MISS", "Vary: * is never stored");
    }
}

#[tokio::test]
async fn the_byte_bound_evicts_older_entries() {
    let room = Fake::start(|_| Answer::ok(ROOMS, "x".repeat(3000))).await;
    let gw = gateway(&room.url, None, |s| {
        s.cache.max_bytes = 16 * 1024;
        s.cache.max_entry_bytes = 4 * 1024;
    })
    .await;
    let c = client();
    for i in 0..20 {
        let r = c
            .get(gw.url(&format!("/api/rooms/{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap().len(), 3000);
    }
    let cache = gw.status().await["cache"].clone();
    assert!(cache["bytes"].as_u64().unwrap() <= 16 * 1024, "{cache}");
    let entries = cache["entries"].as_u64().unwrap();
    assert!((1..20).contains(&entries), "{cache}");
    assert!(
        cache["evictions"].as_u64().unwrap() >= 20 - entries,
        "{cache}"
    );
    let m = gw.metrics().await;
    assert!(!m.contains("gateway_cache_evictions_total 0\n"), "{m}");
}

#[tokio::test]
async fn purge_removes_the_entries_under_a_prefix_and_says_how_many() {
    let room = Fake::start(|_| Answer::ok(ROOMS, "room")).await;
    let gw = gateway(&room.url, None, |_| {}).await;
    let c = client();
    for path in ["/api/rooms/1", "/api/rooms/1?x=2", "/api/rooms/2"] {
        assert_eq!(x_cache(&c.get(gw.url(path)).send().await.unwrap()), "MISS");
    }
    let purge = |prefix: &'static str| {
        let (c, url) = (c.clone(), gw.admin_url("/admin/cache/purge"));
        async move {
            json(
                c.post(url)
                    .json(&serde_json::json!({ "prefix": prefix }))
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(purge("/api/rooms/1").await["removed"], 2);
    assert_eq!(
        x_cache(&c.get(gw.url("/api/rooms/2")).send().await.unwrap()),
        "HIT"
    );
    assert_eq!(
        x_cache(&c.get(gw.url("/api/rooms/1")).send().await.unwrap()),
        "MISS"
    );
    assert_eq!(purge("/api/rooms").await["removed"], 2);
    assert_eq!(gw.status().await["cache"]["entries"], 0);
    let bad = c
        .post(gw.admin_url("/admin/cache/purge"))
        .json(&serde_json::json!({ "prefix": "rooms" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
}

#[tokio::test]
async fn a_route_with_the_cache_off_has_no_x_cache_and_always_reaches_the_instance() {
    let room = Fake::start(|_| Answer::ok(ROOMS, "room")).await;
    let gw = gateway(&room.url, None, |s| {
        let rooms = s
            .routes
            .iter_mut()
            .find(|r| r.prefix == "/api/rooms")
            .unwrap();
        rooms.cache = false;
    })
    .await;
    let c = client();
    for _ in 0..2 {
        let r = c.get(gw.url("/api/rooms/1")).send().await.unwrap();
        assert!(!r.headers().contains_key("x-cache"));
    }
    assert_eq!(room.hits(), 2);
}
