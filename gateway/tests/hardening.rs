//! In-process regression tests of the "Hardening" issue: oversized bodies never count
//! against healthy instances, the Host header rules of RFC 9112 3.2, and header limits
//! answered with problem+json. A real `Application` on port 0 in front of fake instances
//! built with the services' own layers (`hotel_common::http::finish`), so they refuse
//! bodies and heads exactly as the services do. Raw TCP wherever the bytes matter.

#![allow(clippy::unwrap_used)]

mod support;

use axum::{Router, routing::get};
use hotel_common::{extract::Json, http::SERVICE_BODY_LIMIT};
use hotel_gateway::{Application, Config, Settings, settings::ServiceSettings};
use std::{net::SocketAddr, time::Duration};
use support::{client, json, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
};

/// A fake room instance with the services' layers, extractors and body limit `limit`:
/// it reads a JSON body and answers its size.
async fn instance(limit: usize) -> String {
    let routes = Router::new().route(
        "/rooms",
        get(|| async { axum::Json(serde_json::json!({"items": []})) }).post(
            |Json(v): Json<serde_json::Value>| async move {
                axum::Json(serde_json::json!({"body_len": v.to_string().len()}))
            },
        ),
    );
    let app =
        hotel_common::http::finish("room", routes, hotel_common::health::always_ready(), limit);
    serve(app).await
}

struct Gw {
    addr: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// A gateway in front of `room` instances at `urls`, no API keys.
async fn gateway(urls: Vec<String>, tweak: impl FnOnce(&mut Settings)) -> Gw {
    let mut s = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    s.services.insert(
        "room".into(),
        ServiceSettings {
            instances: urls,
            ..Default::default()
        },
    );
    tweak(&mut s);
    let app = Application::build(Config::try_from(s).unwrap())
        .await
        .unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let (addr, admin) = (app.local_addr(), app.admin_addr());
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Gw {
        addr,
        admin,
        _stop: tx,
    }
}

/// Writes `bytes` on a fresh connection (the server may stop reading: write errors are
/// ignored) and reads until the server closes it (or 10 s).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.split();
    let mut out = Vec::new();
    let read = async {
        let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)).await;
    };
    let write = async {
        let _ = w.write_all(bytes).await;
    };
    tokio::join!(read, write);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status line's code of a raw answer.
fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The `room` instances of the gateway's `/admin/status`.
async fn room_instances(gw: &Gw) -> Vec<serde_json::Value> {
    let status = json(
        client()
            .get(format!("http://{}/admin/status", gw.admin))
            .send()
            .await
            .unwrap(),
    )
    .await;
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "room")
        .unwrap()["instances"]
        .as_array()
        .unwrap()
        .clone()
}

/// Sends `n` copies of `request`, 16 at a time; every answer must be `want`.
async fn flood(addr: SocketAddr, request: Vec<u8>, n: usize, want: u16) {
    let request = std::sync::Arc::new(request);
    let mut sent = 0;
    while sent < n {
        let batch = (n - sent).min(16);
        let tasks: Vec<_> = (0..batch)
            .map(|_| {
                let request = request.clone();
                tokio::spawn(async move { raw(addr, &request).await })
            })
            .collect();
        for t in tasks {
            let answer = t.await.unwrap();
            assert_eq!(status_of(&answer), want, "{answer}");
            assert!(answer.contains("application/problem+json"), "{answer}");
            assert!(answer.contains("x-request-id"), "{answer}");
        }
        sent += batch;
    }
}

fn content_length_request(len: usize) -> Vec<u8> {
    let mut r = format!(
        "POST /api/rooms HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
    .into_bytes();
    r.extend(std::iter::repeat_n(b'x', len));
    r
}

fn chunked_request(total: usize) -> Vec<u8> {
    let mut r = b"POST /api/rooms HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    let chunk = 16 * 1024;
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        r.extend(format!("{n:x}\r\n").bytes());
        r.extend(std::iter::repeat_n(b'y', n));
        r.extend(b"\r\n");
        left -= n;
    }
    r.extend(b"0\r\n\r\n");
    r
}

/// Asserts that no `room` breaker opened or counted a failure, and that valid requests
/// still succeed on every instance.
async fn assert_instances_untouched(gw: &Gw) {
    for i in room_instances(gw).await {
        assert_eq!(i["breaker"], "closed", "{i}");
        assert_eq!(i["ejections"], 0, "{i}");
        assert_eq!(i["failures"], 0, "{i}");
    }
    let c = client();
    for _ in 0..20 {
        let body = serde_json::json!({"pad": "z".repeat(1000)}).to_string();
        let r = c
            .post(format!("http://{}/api/rooms", gw.addr))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json(r).await["body_len"], body.len());
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_and_never_count_against_healthy_instances() {
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(instance(SERVICE_BODY_LIMIT).await);
    }
    let gw = gateway(urls, |_| {}).await;
    // Content-Length over the services' limit (and under the old 1 MiB gateway limit).
    flood(gw.addr, content_length_request(200 * 1024), 500, 413).await;
    // Chunked bodies crossing the limit, and crossing 1 MiB.
    flood(gw.addr, chunked_request(200 * 1024), 500, 413).await;
    flood(gw.addr, chunked_request(1100 * 1024), 100, 413).await;
    assert_instances_untouched(&gw).await;
}

#[tokio::test]
async fn bodies_an_instance_refuses_under_the_routes_larger_limit_get_413_and_never_count_against_it()
 {
    // The services accept 64 KiB; this route lets 1 MiB through, streamed past the
    // 64 KiB replay buffer: the instances stop reading at their own limit.
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(instance(SERVICE_BODY_LIMIT).await);
    }
    let gw = gateway(urls, |s| {
        let rooms = s
            .routes
            .iter_mut()
            .find(|r| r.prefix == "/api/rooms")
            .unwrap();
        rooms.max_body_bytes = Some(1 << 20);
    })
    .await;
    flood(gw.addr, content_length_request(200 * 1024), 500, 413).await;
    flood(gw.addr, chunked_request(200 * 1024), 500, 413).await;
    // Past the route's own limit while streaming: the attempt is cancelled.
    flood(gw.addr, chunked_request(1100 * 1024), 100, 413).await;
    assert_instances_untouched(&gw).await;
}

/// Asserts a raw answer is `status` problem+json of `kind` carrying a request id.
fn assert_problem(answer: &str, status: u16, kind: &str) {
    assert_eq!(status_of(answer), status, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(lower.contains("x-request-id: "), "{answer}");
    assert!(answer.contains(&format!("/problems/{kind}")), "{answer}");
    assert!(answer.contains("\"request_id\""), "{answer}");
}

#[tokio::test]
async fn an_http11_request_without_a_host_or_with_two_gets_400_problem_json_at_the_gateway() {
    let gw = gateway(vec![instance(SERVICE_BODY_LIMIT).await], |_| {}).await;
    for req in [
        "GET /api/rooms HTTP/1.1\r\nconnection: close\r\n\r\n",
        "GET /api/rooms HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
        "GET /api/rooms HTTP/1.1\r\nhost: a\r\nHost: a\r\nconnection: close\r\n\r\n",
        "GET /api/rooms HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
        "GET /api/rooms HTTP/1.1\r\nhost: a b\r\nconnection: close\r\n\r\n",
    ] {
        assert_problem(&raw(gw.addr, req.as_bytes()).await, 400, "bad-host");
    }
    // HTTP/1.0 needs no Host; one valid Host passes.
    for req in [
        "GET /api/rooms HTTP/1.0\r\n\r\n",
        "GET /api/rooms HTTP/1.1\r\nhost: gw.example:8080\r\nconnection: close\r\n\r\n",
    ] {
        let answer = raw(gw.addr, req.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
}

/// A GET of `path` with `lines` header lines in all (Host included), the last one padded
/// so the head is `pad` bytes longer.
fn head_with(path: &str, lines: usize, pad: usize) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n");
    for i in 0..lines.saturating_sub(2) {
        r.push_str(&format!("x-h-{i}: v\r\n"));
    }
    if pad > 0 {
        r.push_str(&format!("x-pad: {}\r\n", "p".repeat(pad)));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[tokio::test]
async fn heads_past_the_gateways_limits_get_431_problem_json_and_heads_just_below_reach_the_service()
 {
    let gw = gateway(vec![instance(SERVICE_BODY_LIMIT).await], |_| {}).await;
    // The defaults: 64 lines, 32 KiB.
    for req in [
        head_with("/api/rooms", 101, 0),
        head_with("/api/rooms", 65, 0),
        head_with("/api/rooms", 3, 40 * 1024),
        head_with("/api/rooms", 3, 33 * 1024),
    ] {
        assert_problem(&raw(gw.addr, &req).await, 431, "headers-too-large");
    }
    // Just below: the gateway passes them, and the service accepts what the gateway
    // forwards (its own headers added).
    for req in [
        head_with("/api/rooms", 64, 0),
        head_with("/api/rooms", 3, 31 * 1024),
    ] {
        let answer = raw(gw.addr, &req).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
        assert!(answer.contains("items"), "{answer}");
    }
}
