//! In-process regression tests of the "Hardening" issue: oversized bodies never count
//! against healthy instances, the Host header rules of RFC 9112 3.2, and header limits
//! answered with problem+json. A real `Application` on port 0 in front of fake instances
//! built with the services' own layers (`hotel_common::http::finish`), so they refuse
//! bodies and heads exactly as the services do. Raw TCP wherever the bytes matter.

#![allow(clippy::unwrap_used)]

mod support;

use axum::{Router, routing::get};
use hotel_common::{extract::Json, http::SERVICE_BODY_LIMIT};
use hotel_gateway::Settings;
use hotel_testkit::wire::{assert_problem, exchange as raw, head_with, status_of};
use hotel_upstream::PolicySettings;
use std::net::SocketAddr;
use support::{Gw, client, instances, json, loopback, serve};

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

/// A gateway in front of `room` instances at `urls`, no API keys.
async fn gateway(urls: Vec<String>, tweak: impl FnOnce(&mut Settings)) -> Gw {
    let mut s = loopback();
    instances(&mut s, "room", urls, PolicySettings::default());
    tweak(&mut s);
    Gw::launch(s).await
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
    for i in gw.instance_views("room").await {
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

#[tokio::test]
async fn heads_past_the_gateways_limits_get_431_problem_json_and_heads_just_below_reach_the_service()
 {
    let gw = gateway(vec![instance(SERVICE_BODY_LIMIT).await], |_| {}).await;
    // The defaults: 64 lines, 32 KiB. Past 100 lines (hyper's own limit, kept at its
    // inline size) and past hyper's buffer, hyper refuses the head before any layer
    // of ours runs; its bare 431 is replaced on the wire with the same problem+json.
    for req in [
        head_with("/api/rooms", "gw", 300, 0),
        head_with("/api/rooms", "gw", 3, 200 * 1024),
        head_with("/api/rooms", "gw", 101, 0),
        head_with("/api/rooms", "gw", 65, 0),
        head_with("/api/rooms", "gw", 3, 40 * 1024),
        head_with("/api/rooms", "gw", 3, 33 * 1024),
    ] {
        assert_problem(&raw(gw.addr, &req).await, 431, "headers-too-large");
    }
    // Just below: the gateway passes them, and the service accepts what the gateway
    // forwards (its own headers added).
    for req in [
        head_with("/api/rooms", "gw", 64, 0),
        head_with("/api/rooms", "gw", 3, 31 * 1024),
    ] {
        let answer = raw(gw.addr, &req).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
        assert!(answer.contains("items"), "{answer}");
    }
}
