//! In-process tests of the edge protections: a real `Application` on port 0 in front of
//! fake instances (axum on port 0) that echo what reached them, so every test can tell
//! whether a refused request ever got to a service. Raw TCP is used wherever the bytes on
//! the wire matter (smuggling, slow clients).

#![allow(clippy::unwrap_used)]

mod support;

use axum::{Router, extract::State, response::IntoResponse};
use hotel_gateway::{Settings, auth::hash_key, ratelimit::Limit};
use hotel_testkit::eventually_true;
use hotel_testkit::wire::exchange as raw;
use hotel_upstream::PolicySettings;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Gw, client, instances, json, key, loopback, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WEB_KEY: &str = "web-key-0123456789abcdef";
const OPS_KEY: &str = "ops-key-0123456789abcdef";
const OLD_KEY: &str = "old-key-0123456789abcdef";

#[derive(Clone)]
struct Fake {
    /// Longest time a request is held; `release` ends every hold at once.
    delay: Duration,
    release: tokio::sync::watch::Receiver<bool>,
    hits: Arc<AtomicUsize>,
}

/// Echoes the headers it received; answers with headers a service should not leak.
async fn echo(State(f): State<Fake>, req: axum::extract::Request) -> axum::response::Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
            )
        })
        .collect();
    let body = axum::body::to_bytes(req.into_body(), 4 << 20)
        .await
        .unwrap_or_default();
    if !f.delay.is_zero() {
        let mut release = f.release.clone();
        let _ = tokio::time::timeout(f.delay, release.wait_for(|r| *r)).await;
    }
    (
        [
            ("server", "room/1.0 internal"),
            ("x-internal-addr", "10.9.8.7:9001"),
            ("x-upstream", "u1"),
            // Hop-by-hop: this connection's business, never the client's.
            ("connection", "x-hop-back"),
            ("x-hop-back", "leaked"),
        ],
        axum::Json(serde_json::json!({"headers": headers, "body_len": body.len()})),
    )
        .into_response()
}

struct Upstream {
    url: String,
    hits: Arc<AtomicUsize>,
    release: tokio::sync::watch::Sender<bool>,
}

/// A fake instance holding each request for up to `delay` (until released).
async fn upstream(delay: Duration) -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let (release, rx) = tokio::sync::watch::channel(false);
    let app = Router::new().fallback(echo).with_state(Fake {
        delay,
        release: rx,
        hits: hits.clone(),
    });
    Upstream {
        url: serve(app).await,
        hits,
        release,
    }
}

/// `GET /api/rooms` with `key` as a bearer token.
async fn rooms_as(gw: &Gw, c: &reqwest::Client, key: &str) -> reqwest::Response {
    c.get(gw.url("/api/rooms"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// A gateway in front of `room` (and `customer`, when given), with three keys: `web`,
/// `ops`, and a revoked one of `web`.
async fn gateway(
    room: &Upstream,
    customer: Option<&Upstream>,
    tweak: impl FnOnce(&mut Settings),
) -> Gw {
    let mut s = loopback();
    // One attempt per request, so upstream hit counts are request counts.
    let policy = PolicySettings {
        retries: Some(0),
        hedge: Some(false),
        ..Default::default()
    };
    instances(&mut s, "room", vec![room.url.clone()], policy.clone());
    if let Some(c) = customer {
        instances(&mut s, "customer", vec![c.url.clone()], policy);
    }
    // These tests count upstream hits of concurrent identical GETs, which the HTTP cache
    // would coalesce into one.
    s.cache.max_bytes = 0;
    s.auth.keys = vec![
        key("web", WEB_KEY, false),
        key("ops", OPS_KEY, false),
        key("web", OLD_KEY, true),
    ];
    tweak(&mut s);
    Gw::launch(s).await
}

/// Limits client `web` to `burst` requests at once, refilled at `rate` a second.
fn limit_web(s: &mut Settings, rate: f64, burst: u32) {
    s.rate_limit
        .clients
        .insert("web".into(), Limit { rate, burst });
}

/// Asserts that `r` is a 401 whose problem detail says `why`.
async fn assert_unauthorized(r: reqwest::Response, why: &str) {
    assert_eq!(r.status(), 401);
    let p = json(r).await;
    assert!(
        p["detail"].as_str().unwrap_or_default().contains(why),
        "{p}"
    );
}

#[tokio::test]
async fn a_request_without_a_key_gets_401_problem_json_with_a_challenge_and_never_reaches_a_service()
 {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |_| {}).await;
    let r = client().get(gw.url("/api/rooms")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"hotel\"");
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let p = json(r).await;
    assert_eq!(p["request_id"], rid.as_str(), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("x-api-key"), "{p}");
    assert_eq!(room.hits.load(Ordering::SeqCst), 0);
    // The index is public by default.
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_wrong_key_and_a_revoked_key_are_refused_and_counted_by_reason_and_client() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |_| {}).await;
    let r = rooms_as(&gw, &client(), "web-key-0123456789abcdeX").await;
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert_unauthorized(r, "not valid").await;
    let r = client()
        .get(gw.url("/api/rooms"))
        .header("x-api-key", OLD_KEY)
        .send()
        .await
        .unwrap();
    assert_unauthorized(r, "revoked").await;
    assert_eq!(room.hits.load(Ordering::SeqCst), 0);
    let m = gw.metrics().await;
    assert!(
        m.contains(
            r#"gateway_edge_rejections_total{reason="invalid_key",client="unauthenticated"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(r#"gateway_edge_rejections_total{reason="revoked_key",client="web"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_valid_key_reaches_the_service_as_its_client_and_a_forged_client_name_is_overwritten() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |_| {}).await;
    for (how, value) in [
        ("authorization", format!("Bearer {OPS_KEY}")),
        ("x-api-key", OPS_KEY.to_owned()),
    ] {
        let r = client()
            .get(gw.url("/api/rooms"))
            .header(how, &value)
            .header("x-hotel-client", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{how}");
        let seen = &json(r).await["headers"];
        assert_eq!(seen["x-hotel-client"], "ops", "{how}: {seen}");
        // The key itself stays at the edge.
        assert!(
            seen.get("authorization").is_none() && seen.get("x-api-key").is_none(),
            "{seen}"
        );
    }
    // Without a key nothing reaches the service, whatever client name it claims.
    let r = client()
        .get(gw.url("/api/rooms/1"))
        .header("x-hotel-client", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(room.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_client_past_its_burst_gets_429_with_retry_after_while_another_client_is_not_limited() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| limit_web(s, 0.05, 3)).await;
    let c = client();
    let send = |k: &'static str| c.get(gw.url("/api/rooms")).bearer_auth(k).send();
    for left in (0..3).rev() {
        let r = send(WEB_KEY).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["ratelimit-remaining"],
            left.to_string().as_str()
        );
    }
    let r = send(WEB_KEY).await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "20");
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    // `ops` has the default limit and is untouched by `web`'s noise.
    for _ in 0..20 {
        assert_eq!(send(WEB_KEY).await.unwrap().status(), 429);
        assert_eq!(send(OPS_KEY).await.unwrap().status(), 200);
    }
    assert_eq!(room.hits.load(Ordering::SeqCst), 23);
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_edge_rejections_total{reason="rate_limited",client="web"} 21"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_are_shed_at_once_with_503_and_nothing_queues() {
    // Held until released (at most 60 s): far longer than any shed answer may take.
    let delay = Duration::from_secs(60);
    let room = upstream(delay).await;
    let gw = gateway(&room, None, |s| {
        s.auth.keys.clear();
        s.limits.max_in_flight = 4;
    })
    .await;
    let c = client();
    let held: Vec<_> = (0..4)
        .map(|_| tokio::spawn(c.get(gw.url("/api/rooms")).send()))
        .collect();
    eventually_true(
        Duration::from_secs(20),
        "four attempts at the room upstream",
        || room.hits.load(Ordering::SeqCst) == 4,
    )
    .await
    .unwrap();
    let mut worst = Duration::ZERO;
    let mut total = Duration::ZERO;
    let n = 1000;
    for i in 0..n {
        let t = Instant::now();
        let r = c
            .get(gw.url(&format!("/api/rooms/{i}")))
            .send()
            .await
            .unwrap();
        let took = t.elapsed();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        worst = worst.max(took);
        total += took;
    }
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "a held request finished early"
    );
    eprintln!(
        "shed {n} requests: mean {:?}, worst {worst:?} (upstream held for the whole run)",
        total / n
    );
    assert!(worst < Duration::from_secs(2), "shedding took {worst:?}");
    // Nothing queued behind the limit: exactly the admitted requests are in flight.
    let m = gw.metrics().await;
    assert!(m.contains("gateway_edge_in_flight 4\n"), "{m}");
    assert_eq!(
        room.hits.load(Ordering::SeqCst),
        4,
        "shed requests reached the service"
    );
    room.release.send_replace(true);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    let m = gw.metrics().await;
    assert!(
        m.contains(&format!(
            r#"gateway_edge_rejections_total{{reason="overloaded",client="anonymous"}} {n}"#
        )),
        "{m}"
    );
}

#[tokio::test]
async fn a_slow_service_sheds_its_own_routes_while_another_service_keeps_answering() {
    let room = upstream(Duration::from_secs(60)).await;
    let customer = upstream(Duration::ZERO).await;
    let gw = gateway(&room, Some(&customer), |s| {
        s.limits.max_in_flight_per_service = 2;
    })
    .await;
    let c = client();
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(c.get(gw.url("/api/rooms")).bearer_auth(WEB_KEY).send()))
        .collect();
    eventually_true(
        Duration::from_secs(20),
        "two attempts at the room upstream",
        || room.hits.load(Ordering::SeqCst) == 2,
    )
    .await
    .unwrap();
    let r = c
        .get(gw.url("/api/rooms"))
        .bearer_auth(WEB_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    for _ in 0..5 {
        let r = c
            .get(gw.url("/api/customers"))
            .bearer_auth(WEB_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    room.release.send_replace(true);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    assert!(
        gw.metrics()
            .await
            .contains(r#"reason="service_overloaded",client="web""#)
    );
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_before_it_is_read_and_never_reaches_a_service() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| s.limits.max_body_bytes = 1000).await;
    let r = client()
        .post(gw.url("/api/rooms"))
        .bearer_auth(WEB_KEY)
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let r = client()
        .post(gw.url("/api/rooms"))
        .bearer_auth(WEB_KEY)
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["body_len"], 1000);
    assert_eq!(room.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_chunked_body_running_past_the_limit_gets_413_and_never_reaches_a_service() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| {
        s.auth.keys.clear();
        s.limits.max_body_bytes = 1000;
    })
    .await;
    let head = "POST /api/rooms HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\n\r\n";
    // Under the limit in total: passes.
    let ok = raw(
        gw.addr,
        format!(
            "{}\r\nconnection: close\r\n\r\n3e8\r\n{}\r\n0\r\n\r\n",
            head.trim_end_matches("\r\n"),
            "x".repeat(1000)
        )
        .as_bytes(),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Many small chunks adding up past it, and one chunk announcing too much.
    let many: String = (0..40)
        .map(|_| format!("32\r\n{}\r\n", "y".repeat(50)))
        .collect();
    for body in [
        format!("{many}0\r\n\r\n"),
        format!("100000\r\n{}", "z".repeat(4000)),
    ] {
        let out = raw(gw.addr, format!("{head}{body}").as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 413"), "{out}");
        assert!(out.contains("body-too-large"), "{out}");
    }
    assert_eq!(room.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn smuggling_shaped_requests_are_refused_and_never_reach_a_service() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| s.auth.keys.clear()).await;
    let head = "POST /api/rooms HTTP/1.1\r\nhost: gw\r\n";
    let smuggled = "GET /api/rooms/smuggled HTTP/1.1\r\nhost: gw\r\n\r\n";
    let cases = [
        // CL.TE: a front end trusting Content-Length would see one request, a back end
        // trusting chunked two.
        format!("{head}content-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
        // TE.CL, with the TE header first.
        format!(
            "{head}transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"
        ),
        // Two Content-Lengths, equal and different.
        format!("{head}content-length: 5\r\ncontent-length: 5\r\n\r\nhello"),
        format!("{head}content-length: 5\r\ncontent-length: 50\r\n\r\nhello"),
        // Obfuscated Transfer-Encoding.
        format!("{head}transfer-encoding: xchunked\r\n\r\n0\r\n\r\n"),
        format!("{head}transfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
        format!("{head}transfer-encoding : chunked\r\n\r\n0\r\n\r\n"),
        format!("{head}transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        // Invalid chunk sizes.
        format!("{head}transfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        format!("{head}transfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
        format!("{head}transfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ];
    for (i, req) in cases.iter().enumerate() {
        let out = raw(gw.addr, req.as_bytes()).await;
        let status = out.get(9..12).unwrap_or("");
        assert!(
            out.is_empty() || status.starts_with('4'),
            "case {i} was answered {out:?}"
        );
        // One answer at most: nothing after the refusal was read as a second request.
        assert!(out.matches("HTTP/1.1 ").count() <= 1, "case {i}: {out}");
    }
    assert_eq!(
        room.hits.load(Ordering::SeqCst),
        0,
        "a smuggling-shaped request reached a service"
    );
    // A well-framed chunked request still goes through.
    let ok = raw(
        gw.addr,
        format!(
            "{head}transfer-encoding: chunked\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(room.hits.load(Ordering::SeqCst), 1);
}

/// How many times each half-close request is sent: before the fix a valid GET went
/// unanswered almost every time and a refusal about one time in ten, so 30 runs catch it.
const HALF_CLOSE_RUNS: usize = 30;

// The half-close tests run the gateway on a multi-threaded runtime, as `hotel gateway`
// does: the lost answers came from the connection task seeing the client's FIN before the
// response was written, a race a single-threaded test runtime rarely loses.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_whose_client_shuts_down_its_write_side_after_the_request_is_answered_every_time() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |_| {}).await;
    let req = format!("GET /api/rooms HTTP/1.1\r\nHost: x\r\nX-Api-Key: {WEB_KEY}\r\n\r\n");
    for i in 0..HALF_CLOSE_RUNS {
        let out = support::half_closed(gw.addr, req.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "run {i}: {out:?}");
        assert!(
            out.contains("body_len"),
            "run {i}: the body is missing: {out:?}"
        );
    }
    assert_eq!(room.hits.load(Ordering::SeqCst), HALF_CLOSE_RUNS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggling_shaped_request_whose_client_shuts_down_its_write_side_is_refused_every_time() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |_| {}).await;
    let head = format!("POST /api/rooms HTTP/1.1\r\nHost: x\r\nX-Api-Key: {WEB_KEY}\r\n");
    // Complete messages the framing inspector flags: nothing is left for the client to
    // send, so its FIN follows at once.
    let cases = [
        format!("{head}content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        format!("{head}content-length: 5\r\ncontent-length: 5\r\n\r\nhello"),
        format!("{head}transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
    ];
    for (c, req) in cases.iter().enumerate() {
        for i in 0..HALF_CLOSE_RUNS {
            let out = support::half_closed(gw.addr, req.as_bytes()).await;
            assert!(
                out.starts_with("HTTP/1.1 400 "),
                "case {c} run {i}: {out:?}"
            );
            assert!(
                out.to_ascii_lowercase()
                    .contains("content-type: application/problem+json"),
                "case {c} run {i}: {out:?}"
            );
            assert!(out.contains("bad-framing"), "case {c} run {i}: {out:?}");
        }
    }
    assert_eq!(room.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_sending_its_headers_a_byte_at_a_time_is_cut_off_after_the_header_timeout() {
    let room = upstream(Duration::ZERO).await;
    let timeout = Duration::from_millis(500);
    let gw = gateway(&room, None, |s| s.limits.header_timeout = timeout).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let start = Instant::now();
    let head = format!(
        "GET /api/rooms HTTP/1.1\r\nhost: gw\r\nx-api-key: {WEB_KEY}\r\nx-pad: {}\r\n\r\n",
        "a".repeat(200)
    );
    let mut cut = None;
    for b in head.bytes() {
        if s.write_all(&[b]).await.is_err() {
            cut = Some(start.elapsed());
            break;
        }
        // Poll for the close between bytes.
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(start.elapsed());
                break;
            }
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    let cut = cut.expect("the slow client was never cut off");
    eprintln!("slow client cut off after {cut:?} (header timeout {timeout:?})");
    assert!(cut >= timeout, "cut off too early: {cut:?}");
    assert!(cut < timeout * 8, "cut off too late: {cut:?}");
    assert_eq!(room.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_keep_alive_connection_may_idle_past_the_header_timeout_until_the_idle_timeout() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| {
        s.limits.header_timeout = Duration::from_millis(200);
        s.limits.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nhost: gw\r\n\r\n")
            .await
            .unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        // Idle longer than the header timeout: the connection stays usable.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let idle = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("an idle connection was never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // 1.5 s after hyper began waiting, of which 0.6 s passed before `idle` started.
    assert!(
        idle.elapsed() >= Duration::from_millis(800),
        "{:?}",
        idle.elapsed()
    );
}

#[tokio::test]
async fn a_client_trickling_its_body_is_cut_off_after_the_body_timeout() {
    let room = upstream(Duration::ZERO).await;
    let timeout = Duration::from_millis(500);
    let gw = gateway(&room, None, |s| {
        s.auth.keys.clear();
        s.limits.body_timeout = timeout;
    })
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /api/rooms HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    let mut cut = None;
    for _ in 0..100 {
        if s.write_all(b"x").await.is_err() {
            cut = Some(start.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                cut = Some(start.elapsed());
                break;
            }
            Ok(Ok(n)) => {
                // An answer before the body is complete can only be a refusal.
                assert!(buf[..n].starts_with(b"HTTP/1.1 4"), "{:?}", &buf[..n]);
            }
            Err(_) => {}
        }
    }
    let cut = cut.expect("the trickling client was never cut off");
    eprintln!("slow body cut off after {cut:?} (body timeout {timeout:?})");
    assert!(cut >= timeout && cut < timeout * 8, "{cut:?}");
    assert_eq!(room.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| {
        s.limits.header_timeout = Duration::from_millis(300)
    })
    .await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut [0u8; 16]))
        .await
        .expect("a silent connection stayed open")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(start.elapsed() >= Duration::from_millis(300));
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_edge_connections_refused_total{reason="slow"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_without_an_answer() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| s.limits.max_connections = 2).await;
    // Two open keep-alive connections fill the gateway; a third is closed at once.
    let mut a = TcpStream::connect(gw.addr).await.unwrap();
    let mut b = TcpStream::connect(gw.addr).await.unwrap();
    for s in [&mut a, &mut b] {
        s.write_all(b"GET / HTTP/1.1\r\nhost: gw\r\n\r\n")
            .await
            .unwrap();
        assert!(s.read(&mut [0u8; 1024]).await.unwrap() > 0);
    }
    let third = raw(
        gw.addr,
        b"GET / HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(third, "", "a connection past the limit was served");
    let m = gw.metrics().await;
    assert!(
        m.contains(r#"gateway_edge_connections_refused_total{reason="limit"} 1"#),
        "{m}"
    );
    assert!(m.contains("gateway_edge_connections 2"), "{m}");
    // Closing one frees its slot.
    drop(a);
    let addr = gw.addr;
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = raw(
            addr,
            b"GET / HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n",
        )
        .await;
        if out.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < end, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(b);
}

#[tokio::test]
async fn forwarding_headers_are_the_gateways_own_and_upstream_identity_is_not_leaked() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |_| {}).await;
    let r = client()
        .get(gw.url("/api/rooms"))
        .bearer_auth(WEB_KEY)
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=6.6.6.6")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(
        h.get("server").is_none() && h.get("x-internal-addr").is_none(),
        "{h:?}"
    );
    assert!(
        h.get("x-hop-back").is_none() && h.get("connection").is_none(),
        "{h:?}"
    );
    assert_eq!(h["x-upstream"], "u1");
    let seen = json(r).await["headers"].clone();
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=http");
    assert!(seen.get("x-hop").is_none(), "{seen}");
    let rid = seen["x-request-id"].as_str().unwrap();
    assert_ne!(rid, "bad id with spaces");
    assert_eq!(h["x-request-id"], rid);
    // A well-formed request id is kept.
    let r = client()
        .get(gw.url("/api/rooms"))
        .bearer_auth(WEB_KEY)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(json(r).await["headers"]["x-request-id"], "req-42");
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_are_kept_and_appended_to() {
    let room = upstream(Duration::ZERO).await;
    let gw = gateway(&room, None, |s| {
        s.headers.trusted_proxies = vec!["127.0.0.0/8".into()]
    })
    .await;
    let r = client()
        .get(gw.url("/api/rooms"))
        .bearer_auth(WEB_KEY)
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let seen = json(r).await["headers"].clone();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn reloading_the_keys_file_revokes_and_adds_keys_and_keeps_each_clients_bucket() {
    let room = upstream(Duration::ZERO).await;
    let dir = hotel_testkit::TempDir::new("edge-keys");
    let file = dir.join("keys");
    let (a, b) = ("file-key-a-0123456789", "file-key-b-0123456789");
    std::fs::write(&file, format!("web:{}\n", hash_key(a))).unwrap();
    let gw = gateway(&room, None, |s| {
        s.auth.keys.clear();
        s.auth.keys_file = Some(file.clone());
        limit_web(s, 0.01, 2);
    })
    .await;
    let c = client();
    let status = |k: &'static str| {
        let r = rooms_as(&gw, &c, k);
        async move { r.await.status().as_u16() }
    };
    assert_eq!(
        (status(a).await, status(a).await, status(a).await),
        (200, 200, 429)
    );
    assert_eq!(status(b).await, 401);
    // A new client appears; `web` stays limited: its bucket survives the reload.
    std::fs::write(
        &file,
        format!("web:{}\nmobile:{}\n", hash_key(a), hash_key(b)),
    )
    .unwrap();
    assert_eq!(gw.keys.reload(), Ok(2));
    assert_eq!(status(a).await, 429);
    assert_eq!(status(b).await, 200);
    // Revoking `web`'s key takes effect at once.
    std::fs::write(
        &file,
        format!("!web:{}\nmobile:{}\n", hash_key(a), hash_key(b)),
    )
    .unwrap();
    assert_eq!(gw.keys.reload(), Ok(2));
    assert_unauthorized(rooms_as(&gw, &c, a).await, "revoked").await;
    // A broken or empty file is refused and the keys in force stay.
    std::fs::write(&file, "mobile deadbeef\n").unwrap();
    assert!(gw.keys.reload().unwrap_err().contains("line 1"));
    std::fs::write(&file, "# nothing\n").unwrap();
    assert!(gw.keys.reload().unwrap_err().contains("empty"));
    assert_eq!(status(b).await, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}
