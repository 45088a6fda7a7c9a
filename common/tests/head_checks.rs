//! The services' head checks over a real connection: the shared router layers
//! (`hotel_common::http::finish`) served by `hotel_common::server::serve`, spoken to
//! with raw bytes on loopback, so what hyper accepts or refuses by itself is tested too.

#![allow(clippy::unwrap_used)]

use axum::{Router, routing::get};
use hotel_common::http::{SERVICE_BODY_LIMIT, SERVICE_MAX_HEADER_BYTES, SERVICE_MAX_HEADERS};
use hotel_testkit::wire::{assert_problem, exchange as raw, head_with, status_of};
use std::{net::SocketAddr, time::Duration};

/// A service with one route, `GET /rooms`, on a loopback ephemeral port.
async fn service() -> SocketAddr {
    let routes = Router::new().route("/rooms", get(|| async { "[]" }));
    let app = hotel_common::http::finish(
        "room",
        routes,
        hotel_common::health::always_ready(),
        SERVICE_BODY_LIMIT,
    );
    let (listener, addr) = hotel_common::server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    tokio::spawn(hotel_common::server::serve(
        listener,
        app,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    addr
}

#[tokio::test]
async fn an_http11_request_without_a_host_or_with_two_gets_400_problem_json_from_a_service() {
    let addr = service().await;
    for req in [
        "GET /rooms HTTP/1.1\r\nconnection: close\r\n\r\n",
        "GET /rooms HTTP/1.1\r\nhost: a\r\nhost: b\r\nconnection: close\r\n\r\n",
        "GET /rooms HTTP/1.1\r\nhost: a\r\nhost: a\r\nconnection: close\r\n\r\n",
        "GET /rooms HTTP/1.0\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        assert_problem(&raw(addr, req.as_bytes()).await, 400, "bad-host");
    }
    for req in [
        "GET /rooms HTTP/1.0\r\n\r\n",
        "GET /rooms HTTP/1.1\r\nhost: room-1:9001\r\nconnection: close\r\n\r\n",
    ] {
        let answer = raw(addr, req.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
}

#[tokio::test]
async fn heads_past_a_services_limits_get_431_problem_json_and_heads_at_the_limit_pass() {
    let addr = service().await;
    for req in [
        head_with("/rooms", "room", SERVICE_MAX_HEADERS + 1, 0),
        head_with("/rooms", "room", 3, SERVICE_MAX_HEADER_BYTES + 1024),
    ] {
        assert_problem(&raw(addr, &req).await, 431, "headers-too-large");
    }
    for req in [
        head_with("/rooms", "room", SERVICE_MAX_HEADERS, 0),
        head_with("/rooms", "room", 3, SERVICE_MAX_HEADER_BYTES - 1024),
    ] {
        let answer = raw(addr, &req).await;
        assert_eq!(status_of(&answer), 200, "{answer}");
    }
}
