//! In-process tests of the whole gateway: a real `Application` on port 0 in front of
//! small fake instances (axum on port 0) that fail, stall or vanish on purpose.

#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::cloned_ref_to_slice_refs
)]

mod support;

use axum::{Router, body::Bytes, extract::State, http::StatusCode, response::IntoResponse};
use hotel_gateway::{Application, Config, Settings};
use hotel_upstream::{Origin, PolicySettings, Source, Target, Targets};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Gw, client, instances, json, loopback, serve};
use tokio::sync::watch;

#[derive(Clone)]
enum Behave {
    Ok,
    /// 503 until the flag is set.
    SickUntil(Arc<std::sync::atomic::AtomicBool>),
    Status(u16),
    Delay(Duration),
}

#[derive(Clone)]
struct Fake {
    name: &'static str,
    behave: Behave,
    hits: Arc<AtomicUsize>,
}

struct Upstream {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn handler(State(f): State<Fake>, req: axum::extract::Request) -> axum::response::Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let path = req.uri().to_string();
    let (rid, fwd, traceparent) = {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        (
            header("x-request-id"),
            header("x-forwarded-prefix"),
            header("traceparent"),
        )
    };
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let answer = serde_json::json!({
        "instance": f.name, "method": method, "path": path, "body_len": body.len(), "request_id": rid,
        "forwarded_prefix": fwd, "traceparent": traceparent,
    });
    match f.behave {
        Behave::Ok => axum::Json(answer).into_response(),
        Behave::SickUntil(ref healed) if !healed.load(Ordering::SeqCst) => {
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(answer)).into_response()
        }
        Behave::SickUntil(_) => axum::Json(answer).into_response(),
        Behave::Status(s) => (StatusCode::from_u16(s).unwrap(), axum::Json(answer)).into_response(),
        Behave::Delay(d) => {
            tokio::time::sleep(d).await;
            axum::Json(answer).into_response()
        }
    }
}

async fn upstream(name: &'static str, behave: Behave) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(handler).with_state(Fake {
        name,
        behave,
        hits: hits.clone(),
    });
    Upstream {
        url: serve(app).await,
        hits,
    }
}

/// An address nothing listens on: connecting is refused.
fn dead() -> Dead {
    // Bound but not listening: connecting is refused, and no other test's server can
    // take the port while this test runs (a freed port can be handed out again at once).
    let hold = tokio::net::TcpSocket::new_v4().unwrap();
    hold.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!("http://{}", hold.local_addr().unwrap());
    Dead { url, _hold: hold }
}

/// An address where connections are refused, reserved while this lives.
struct Dead {
    url: String,
    _hold: tokio::net::TcpSocket,
}

fn settings(room: &[String], tweak: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = loopback();
    instances(&mut s, "room", room.to_vec(), PolicySettings::default());
    tweak(&mut s);
    s
}

async fn gateway(room: &[String], tweak: impl FnOnce(&mut Settings)) -> Gw {
    Gw::launch(settings(room, tweak)).await
}

/// GET `path` from the gateway with one extra request header.
async fn get_with(gw: &Gw, path: &str, (name, value): (&str, &str)) -> reqwest::Response {
    client()
        .get(gw.url(path))
        .header(name, value)
        .send()
        .await
        .unwrap()
}

/// A discovered instance of `room` named `name` at `url`.
fn target(name: &str, url: &str) -> Target {
    Target {
        name: name.into(),
        origin: Origin::parse(url).unwrap(),
    }
}

/// A gateway whose `room` instances come from a discovery feed (as from the registry),
/// starting with `initial`; the sender publishes new sets.
async fn discovering_gateway(initial: Vec<Target>) -> (Gw, watch::Sender<Targets>) {
    let (tx, rx) = watch::channel::<Targets>(Arc::new(initial));
    let cfg = Config::try_from(settings(&[], |_| {})).unwrap();
    let app = Application::build_with(cfg, move |name, _| {
        if name == "room" {
            Source::Watch(rx.clone())
        } else {
            Source::Fixed(vec![])
        }
    })
    .await
    .unwrap();
    (Gw::start(app), tx)
}

/// The `room` entry of the gateway's `/admin/status`.
async fn room_status(c: &reqwest::Client, gw: &Gw) -> serde_json::Value {
    let status = json(c.get(gw.admin_url("/admin/status")).send().await.unwrap()).await;
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "room")
        .unwrap_or_else(|| panic!("no room in {status}"))
        .clone()
}

/// Sends `GET path` byte for byte and returns the response head and body.
async fn raw_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn retries_idempotent_get_on_another_instance_after_connect_refused() {
    let good = upstream("good", Behave::Ok).await;
    let refused = dead();
    let gw = gateway(&[refused.url.clone(), good.url.clone()], |_| {}).await;
    let c = client();
    for _ in 0..30 {
        let r = c.get(gw.url("/api/rooms/7?x=1")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = json(r).await;
        assert_eq!(body["instance"], "good");
        assert_eq!(body["path"], "/rooms/7?x=1", "prefix rewritten, query kept");
        assert_eq!(body["forwarded_prefix"], "/api");
    }
    assert_eq!(good.hits.load(Ordering::SeqCst), 30);
}

#[tokio::test]
async fn a_clients_own_forwarded_prefix_never_reaches_the_instance() {
    let good = upstream("good", Behave::Ok).await;
    // The room route as shipped (the instance sees `/rooms/7` and is told `/api`), then
    // without a rewrite (it sees the whole path and is told no prefix at all).
    for (rewrite, told) in [(None, "/api"), (Some("/api/rooms".to_owned()), "")] {
        let gw = gateway(&[good.url.clone()], |s| {
            assert_eq!(s.routes[1].prefix, "/api/rooms");
            s.routes[1].rewrite = rewrite.clone();
        })
        .await;
        let r = get_with(&gw, "/api/rooms/7", ("x-forwarded-prefix", "/evil")).await;
        assert_eq!(r.status(), 200);
        let body = json(r).await;
        assert_eq!(body["forwarded_prefix"], told, "rewrite {rewrite:?}");
    }
}

#[tokio::test]
async fn a_get_answered_503_is_retried_on_another_instance() {
    let sick = upstream("sick", Behave::Status(503)).await;
    let good = upstream("good", Behave::Ok).await;
    let gw = gateway(&[sick.url.clone(), good.url.clone()], |_| {}).await;
    let c = client();
    for _ in 0..30 {
        let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        sick.hits.load(Ordering::SeqCst) >= 1,
        "p2c should have tried the sick one at least once"
    );
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_not_resent_after_a_503() {
    let sick = upstream("sick", Behave::Status(503)).await;
    let gw = gateway(&[sick.url.clone()], |_| {}).await;
    let r = client()
        .post(gw.url("/api/rooms"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "the instance's answer is passed through");
    assert_eq!(sick.hits.load(Ordering::SeqCst), 1);
    let r = client()
        .post(gw.url("/api/rooms"))
        .header("idempotency-key", "abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        sick.hits.load(Ordering::SeqCst),
        1 + 3,
        "with a key: one attempt and two retries"
    );
}

#[tokio::test]
async fn a_post_is_retried_when_the_connection_was_refused() {
    let good = upstream("good", Behave::Ok).await;
    let refused = dead();
    let gw = gateway(&[refused.url.clone(), good.url.clone()], |_| {}).await;
    let c = client();
    for _ in 0..20 {
        let r = c
            .post(gw.url("/api/rooms"))
            .body("{\"n\":1}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["body_len"], 7);
    }
}

#[tokio::test]
async fn a_passed_deadline_answers_504_problem_json() {
    let slow = upstream("slow", Behave::Delay(Duration::from_secs(5))).await;
    let gw = gateway(&[slow.url.clone()], |s| {
        s.routes[1].policy = PolicySettings {
            deadline: Some(Duration::from_millis(300)),
            per_try_timeout: Some(Duration::from_millis(200)),
            hedge: Some(false),
            ..Default::default()
        };
    })
    .await;
    let t = Instant::now();
    let r = client().get(gw.url("/api/rooms/1")).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("x-request-id"));
    assert!(r.headers().contains_key("x-trace-id"));
    let p = json(r).await;
    assert_eq!(p["status"], 504);
    assert!(p["trace_id"].is_string(), "{p}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[tokio::test]
async fn an_attempt_cut_by_the_deadline_is_cancelled_not_counted_against_its_instance() {
    // The deadline and the per-try timeout are equal, so the deadline ends each attempt.
    let slow = [
        upstream("slow-1", Behave::Delay(Duration::from_secs(3))).await,
        upstream("slow-2", Behave::Delay(Duration::from_secs(3))).await,
    ];
    let gw = gateway(&[slow[0].url.clone(), slow[1].url.clone()], |s| {
        s.routes[1].policy = PolicySettings {
            deadline: Some(Duration::from_millis(300)),
            per_try_timeout: Some(Duration::from_millis(300)),
            retries: Some(0),
            hedge: Some(false),
            ..Default::default()
        };
        // One counted failure would eject an instance (the other stays in rotation).
        s.services.get_mut("room").unwrap().policy.breaker_failures = Some(1);
    })
    .await;
    for n in 1..=2 {
        let r = client().get(gw.url("/api/rooms/1")).send().await.unwrap();
        assert_eq!(r.status(), 504, "request {n}");
        let p = json(r).await;
        assert_eq!(p["type"], "/problems/deadline-exceeded", "{p}");
        for view in gw.instance_views("room").await {
            assert_eq!(view["failures"], 0, "{view}");
            assert_eq!(view["ejections"], 0, "{view}");
            assert_eq!(view["breaker"], "closed", "{view}");
            assert!(view["last_error"].is_null(), "{view}");
        }
    }
    // Two attempts, and no health probe: a cancelled attempt is no sign of a stall.
    let hits: usize = slow.iter().map(|u| u.hits.load(Ordering::SeqCst)).sum();
    assert_eq!(hits, 2);
}

#[tokio::test]
async fn all_instances_down_answers_503_fast_with_retry_after() {
    let (refused_1, refused_2) = (dead(), dead());
    let gw = gateway(&[refused_1.url.clone(), refused_2.url.clone()], |s| {
        s.services.get_mut("room").unwrap().policy.breaker_failures = Some(1);
    })
    .await;
    let c = client();
    // The first requests find out (connect refused, retried, 502); then every breaker is open.
    let mut last = None;
    for _ in 0..5 {
        let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
        last = Some(r.status().as_u16());
        if r.status() == 503 {
            break;
        }
        assert_eq!(r.status(), 502);
    }
    assert_eq!(last, Some(503));
    let t = Instant::now();
    let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
    let took = t.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
}

#[tokio::test]
async fn a_service_without_instances_answers_503_at_once() {
    let gw = gateway(&[], |_| {}).await;
    let t = Instant::now();
    let r = client()
        .get(gw.url("/api/customers/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(t.elapsed() < Duration::from_secs(1));
    let p = json(r).await;
    assert!(p["detail"].as_str().unwrap().contains("customer"), "{p}");
}

#[tokio::test]
async fn traversal_is_refused_and_unknown_routes_are_404_problems() {
    let good = upstream("good", Behave::Ok).await;
    let gw = gateway(&[good.url.clone()], |_| {}).await;
    let c = client();
    // Raw requests: HTTP client libraries resolve dot segments before sending.
    for p in [
        "/api/rooms/%2e%2e/customers",
        "/api/rooms/../customers",
        "/api/rooms/..%2fx",
        "/api//rooms",
        "/api/rooms/%2F",
        "/api/rooms/a%5c..%5cb",
    ] {
        let head = raw_get(gw.addr, p).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{p}: {head}");
        assert!(head.contains("application/problem+json"), "{p}: {head}");
    }
    let r = c
        .get(gw.url("/api/nothing"))
        .header("x-request-id", "my-id-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-request-id"], "my-id-1");
    assert_eq!(r.headers()["x-trace-id"].len(), 32);
    assert_eq!(json(r).await["request_id"], "my-id-1");
    assert_eq!(good.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_request_id_reaches_the_instance_and_comes_back() {
    let good = upstream("good", Behave::Ok).await;
    let gw = gateway(&[good.url.clone()], |_| {}).await;
    let r = get_with(&gw, "/api/rooms", ("x-request-id", "req-42")).await;
    assert_eq!(r.headers()["x-request-id"], "req-42");
    assert!(r.headers().contains_key("x-trace-id"));
    assert_eq!(json(r).await["request_id"], "req-42");
}

#[tokio::test]
async fn the_instance_gets_a_traceparent_in_the_trace_the_client_is_told() {
    // No subscriber here, as in a gateway that neither exports nor logs its request
    // span: the request has no span, and its ids must still hold together.
    let good = upstream("good", Behave::Ok).await;
    let gw = gateway(&[good.url.clone()], |_| {}).await;
    let mut spans = std::collections::HashSet::new();
    for _ in 0..2 {
        let r = client().get(gw.url("/api/rooms")).send().await.unwrap();
        let trace = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
        let sent = json(r).await["traceparent"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts.len(), 4, "{sent}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", trace.as_str(), "00"),
            "{sent}"
        );
        assert_eq!(parts[2].len(), 16, "{sent}");
        spans.insert(parts[2].to_owned());
    }
    assert_eq!(spans.len(), 2, "two requests, one span id: {spans:?}");
    // A caller's trace goes on, sampled as the caller said, under a span of our own.
    let r = get_with(
        &gw,
        "/api/rooms",
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    )
    .await;
    assert_eq!(
        r.headers()["x-trace-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    let sent = json(r).await["traceparent"].as_str().unwrap().to_owned();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"),
        "{sent}"
    );
    assert!(!sent.contains("00f067aa0ba902b7"), "{sent}");
}

#[tokio::test]
async fn the_index_lists_the_routes() {
    let gw = gateway(&[], |_| {}).await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    let prefixes: Vec<&str> = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    for p in [
        "/api/customers",
        "/api/rooms",
        "/api/bookings",
        "/api/availability",
    ] {
        assert!(prefixes.contains(&p), "{prefixes:?}");
    }
}

#[tokio::test]
async fn a_hung_instance_costs_little_thanks_to_hedging() {
    let hung = upstream("hung", Behave::Delay(Duration::from_secs(30))).await;
    let a = upstream("a", Behave::Ok).await;
    let b = upstream("b", Behave::Ok).await;
    let gw = gateway(&[hung.url.clone(), a.url.clone(), b.url.clone()], |s| {
        s.policy.hedge_max_delay = Some(Duration::from_millis(150));
    })
    .await;
    let c = client();
    let mut worst = Duration::ZERO;
    for _ in 0..40 {
        let t = Instant::now();
        let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
        worst = worst.max(t.elapsed());
        assert_eq!(r.status(), 200);
        assert_ne!(json(r).await["instance"], "hung");
    }
    println!("worst latency with a hung instance: {worst:?}");
    // Without hedging one in three requests would wait for the 2 s per-try timeout.
    assert!(worst < Duration::from_millis(1900), "worst {worst:?}");
}

#[tokio::test]
async fn a_body_over_the_replay_buffer_is_streamed_through_once() {
    let good = upstream("good", Behave::Ok).await;
    let gw = gateway(&[good.url.clone()], |s| {
        s.retry_buffer_bytes = 1024;
        s.limits.max_body_bytes = 1 << 20;
    })
    .await;
    let r = client()
        .post(gw.url("/api/rooms"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["body_len"], 100_000);
}

#[tokio::test]
async fn admin_endpoints_need_the_token_and_report_instances_and_metrics() {
    let good = upstream("good", Behave::Ok).await;
    let token = "admin-token-0123456789";
    let refused = dead();
    let gw = gateway(&[good.url.clone(), refused.url.clone()], |s| {
        s.admin_token = Some(token.into())
    })
    .await;
    let c = client();
    for _ in 0..10 {
        c.get(gw.url("/api/rooms")).send().await.unwrap();
    }
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    let r = c.get(admin("/admin/status")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = c
        .get(admin("/admin/status"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(admin("/admin/status"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    let room = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "room")
        .unwrap()
        .clone();
    assert_eq!(room["known"], 2);
    let instances = room["instances"].as_array().unwrap();
    let total: u64 = instances
        .iter()
        .map(|i| i["requests"].as_u64().unwrap())
        .sum();
    assert!(total >= 10, "{room}");
    assert!(
        instances
            .iter()
            .all(|i| i["breaker"].is_string() && i["address"].is_string())
    );
    let m = c
        .get(admin("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "gateway_requests_total",
        "gateway_request_duration_seconds",
        "gateway_upstream_attempts_total",
        "gateway_breaker_state",
        "gateway_instances",
    ] {
        assert!(m.contains(name), "{name} missing from\n{m}");
    }
    assert_eq!(c.get(admin("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn admin_recent_lists_failed_and_slow_requests_with_the_trace_id_the_client_saw() {
    let failing = upstream("failing", Behave::Status(500)).await;
    let token = "admin-token-0123456789";
    let gw = gateway(&[failing.url.clone()], |s| {
        s.admin_token = Some(token.into())
    })
    .await;
    let c = client();
    let r = c
        .get(gw.url("/api/rooms/42?secret=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let trace = r.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let admin = format!("http://{}/admin/recent", gw.admin);
    assert_eq!(c.get(&admin).send().await.unwrap().status(), 401);
    let v = json(c.get(&admin).bearer_auth(token).send().await.unwrap()).await;
    let failed = v["failed"].as_array().unwrap();
    let mine = failed
        .iter()
        .find(|e| e["trace_id"] == trace.as_str())
        .unwrap_or_else(|| panic!("{trace} not in {v}"));
    assert_eq!(mine["status"], 500);
    assert_eq!(mine["method"], "GET");
    // The query (personal data, keys) is not kept.
    assert_eq!(mine["path"], "/api/rooms/42");
    assert_eq!(mine["route"], "/api/rooms");
    assert!(mine["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        v["slowest"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["trace_id"] == trace.as_str()),
        "{v}"
    );
}

#[tokio::test]
async fn a_new_instance_takes_traffic_as_soon_as_discovery_publishes_it() {
    let a = upstream("a", Behave::Ok).await;
    let b = upstream("b", Behave::Ok).await;
    let (gw, tx) = discovering_gateway(vec![target("room-1", &a.url)]).await;
    let c = client();
    assert_eq!(
        json(c.get(gw.url("/api/rooms")).send().await.unwrap()).await["instance"],
        "a"
    );
    tx.send(Arc::new(vec![
        target("room-1", &a.url),
        target("room-2", &b.url),
    ]))
    .unwrap();
    let t = Instant::now();
    while b.hits.load(Ordering::SeqCst) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "room-2 never got traffic"
        );
        c.get(gw.url("/api/rooms")).send().await.unwrap();
    }
    tx.send(Arc::new(vec![])).unwrap();
    let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
    assert_eq!(r.status(), 503, "an emptied set answers 503");
}

#[tokio::test]
async fn the_upstream_client_reaches_a_service_with_the_same_failover() {
    use hotel_upstream::{Discovery, ServicePolicy, UpstreamClient};
    let good = upstream("good", Behave::Ok).await;
    let refused = dead();
    let rooms = UpstreamClient::new(
        "room",
        Discovery::Static(vec![refused.url.clone(), good.url.clone()]),
        &ServicePolicy::default(),
    )
    .unwrap();
    for _ in 0..10 {
        let res = rooms
            .send(http::Request::get("/rooms/9").body(Bytes::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["path"], "/rooms/9");
    }
    assert_eq!(rooms.endpoints().len(), 2);
    let nobody =
        UpstreamClient::new("room", Discovery::Static(vec![]), &ServicePolicy::default()).unwrap();
    let p = nobody
        .send(http::Request::get("/rooms").body(Bytes::new()).unwrap())
        .await
        .unwrap_err();
    assert_eq!((p.status, p.retry_after), (503, Some(1)));
}

#[tokio::test]
async fn an_open_breaker_lets_a_probe_through_after_its_backoff_and_closes_on_success() {
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flaky = upstream("flaky", Behave::SickUntil(healed.clone())).await;
    // A second instance: errors never eject the last one in rotation.
    let good = upstream("good", Behave::Ok).await;
    let gw = gateway(&[flaky.url.clone(), good.url.clone()], |s| {
        let p = &mut s.services.get_mut("room").unwrap().policy;
        p.breaker_failures = Some(2);
        p.breaker_backoff = Some(Duration::from_millis(200));
    })
    .await;
    let c = client();
    let flaky_status = || async {
        gw.instance_views("room")
            .await
            .into_iter()
            .find(|i| i["instance"] == "room-static-1")
            .unwrap()
    };
    // The instance's own 503s open its breaker; its requests are retried on the other.
    let t = Instant::now();
    while flaky_status().await["ejections"] == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the breaker never opened"
        );
        let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    healed.store(true, Ordering::SeqCst);
    let t = Instant::now();
    loop {
        let r = c.get(gw.url("/api/rooms")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let i = flaky_status().await;
        if i["breaker"] == "closed" {
            assert!(i["ejections"].as_u64().unwrap() >= 1);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no probe got through: {i}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn admin_status_lists_every_discovered_instance_before_any_traffic_and_drops_those_that_left()
{
    let a = upstream("a", Behave::Ok).await;
    let b = upstream("b", Behave::Ok).await;
    let (gw, tx) =
        discovering_gateway(vec![target("room-1", &a.url), target("room-2", &b.url)]).await;
    let c = client();
    // No request has been sent: both instances are listed, closed, with zero counters.
    let r = room_status(&c, &gw).await;
    let instances = r["instances"].as_array().unwrap();
    let names: Vec<&str> = instances
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["room-1", "room-2"], "{r}");
    for i in instances {
        assert_eq!(i["breaker"], "closed", "{i}");
        assert_eq!(i["requests"], 0, "{i}");
        assert_eq!(i["failures"], 0, "{i}");
        assert_eq!(i["in_flight"], 0, "{i}");
    }
    assert_eq!(
        a.hits.load(Ordering::SeqCst) + b.hits.load(Ordering::SeqCst),
        0
    );
    // One joins, one leaves, still without traffic.
    tx.send(Arc::new(vec![
        target("room-2", &b.url),
        target("room-3", &a.url),
    ]))
    .unwrap();
    let r = room_status(&c, &gw).await;
    let names: Vec<&str> = r["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["room-2", "room-3"], "{r}");
    assert_eq!(r["known"], 2);
}

/// Worker 0 of a two-worker gateway is stuck (its runtime is not driven, as a thread
/// caught in a long computation would leave it): worker 1 accepts and serves every new
/// connection alone, through a pool of its own. Stopping the gateway then stops both and
/// closes the listening socket: no worker keeps it open.
#[test]
fn a_stuck_worker_leaves_new_connections_to_the_other_and_both_stop_with_the_gateway() {
    // The instance and the test's client, on a runtime of their own.
    let outside = tokio::runtime::Runtime::new().unwrap();
    let room = outside.block_on(upstream("r1", Behave::Ok));
    let worker0 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, admin, served) = worker0.block_on(async {
        let cfg = Config::try_from(settings(&[room.url.clone()], |s| s.worker_threads = 2));
        let app = Application::build(cfg.unwrap()).await.unwrap();
        let (addr, admin) = (app.local_addr(), app.admin_addr());
        let served = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        // The admin listener answers once `run_until` has run, i.e. started worker 1.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client()
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the admin listener never answered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (addr, admin, served)
    });

    // Worker 0's runtime is not driven from here on.
    for _ in 0..5 {
        let answer = outside.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), raw_get(addr, "/api/rooms/1")).await
        });
        let answer = answer.expect("worker 1 did not answer while worker 0 was stuck");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(room.hits.load(Ordering::SeqCst), 5);

    worker0.block_on(async {
        let metrics = support::metrics_at(admin).await;
        for series in [
            r#"gateway_edge_accepted_total{worker="0"} 0"#,
            r#"gateway_edge_accepted_total{worker="1"} 5"#,
        ] {
            assert!(metrics.contains(series), "no {series} in\n{metrics}");
        }
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
    });
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listening socket stayed open after the gateway stopped"
    );
}
