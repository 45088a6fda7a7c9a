//! Fault injection over real connections: the shared instance layers
//! (`hotel_common::http::finish_instance`) served by `hotel_common::server::serve` on
//! loopback, switched through `/admin/fault`, spoken to with raw bytes so a reset
//! connection is seen as one.

#![allow(clippy::unwrap_used)]

use axum::{Router, routing::get};
use hotel_common::fault::Faults;
use hotel_testkit::wire::{assert_problem, exchange, status_of};
use std::{net::SocketAddr, time::Duration};

const TOKEN: &str = "flt_test";

/// A service with `GET /rooms` and its fault switch, on a loopback ephemeral port.
async fn service(token: Option<&str>) -> SocketAddr {
    let routes = Router::new().route("/rooms", get(|| async { "[]" }));
    let faults = Faults::new("room-1", token);
    let app = hotel_common::http::finish_instance(
        "room",
        routes,
        hotel_common::health::always_ready(),
        hotel_common::http::SERVICE_BODY_LIMIT,
        &faults,
        &hotel_common::metrics::InstanceMetrics::new(&faults),
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

fn request(method: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n{auth}\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn get_rooms(addr: SocketAddr) -> String {
    exchange(addr, &request("GET", "/rooms", None, "")).await
}

#[tokio::test]
async fn the_control_endpoint_needs_its_token_and_exists_only_with_one() {
    let none = service(None).await;
    let answer = exchange(none, &request("GET", "/admin/fault", Some(TOKEN), "")).await;
    assert_problem(&answer, 404, "no-route");
    let addr = service(Some(TOKEN)).await;
    for token in [None, Some("guess")] {
        let answer = exchange(addr, &request("GET", "/admin/fault", token, "")).await;
        assert_problem(&answer, 401, "unauthorized");
    }
    let answer = exchange(addr, &request("GET", "/admin/fault", Some(TOKEN), "")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert!(answer.contains("\"fault\":null"), "{answer}");
    // Its OpenAPI document says what each operation does.
    let answer = exchange(addr, &request("GET", "/admin/openapi.json", None, "")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    for method in ["get", "put", "delete"] {
        assert!(
            doc["paths"]["/admin/fault"][method]["responses"]["200"].is_object(),
            "{method}: {doc}"
        );
    }
    assert!(
        doc["components"]["schemas"]["FaultSpec"].is_object(),
        "{doc}"
    );
}

#[tokio::test]
async fn bad_fault_specs_are_refused_naming_the_field_and_change_nothing() {
    let addr = service(Some(TOKEN)).await;
    for (body, field) in [
        (r#"{"error_rate":1.5}"#, "error_rate"),
        (r#"{"error_rate":0.5,"status":200}"#, "status"),
        (r#"{"latency":"10ms","jitter":"1s"}"#, "jitter"),
        (r#"{"latency":"soon"}"#, "latency"),
        (r#"{"error_rate":0.5,"for":"0s"}"#, "for"),
        (r#"{"eror_rate":0.5}"#, "eror_rate"),
        (r#"{}"#, "error_rate"),
    ] {
        let answer = exchange(addr, &request("PUT", "/admin/fault", Some(TOKEN), body)).await;
        let status = status_of(&answer);
        assert!(status == 400 || status == 422, "{body}: {answer}");
        assert!(answer.contains(field), "{body}: {answer}");
    }
    let answer = exchange(addr, &request("PUT", "/admin/fault", Some(TOKEN), "{")).await;
    assert_problem(&answer, 400, "bad-request");
    assert_eq!(status_of(&get_rooms(addr).await), 200);
}

#[tokio::test]
async fn an_error_fault_answers_its_status_until_cleared() {
    let addr = service(Some(TOKEN)).await;
    let body = r#"{"error_rate":1.0,"status":500}"#;
    let answer = exchange(addr, &request("PUT", "/admin/fault", Some(TOKEN), body)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_problem(&get_rooms(addr).await, 500, "fault-injected");
    // The switch itself and the metrics are never faulted.
    let answer = exchange(addr, &request("GET", "/admin/fault", Some(TOKEN), "")).await;
    assert!(answer.contains("\"error\":1"), "{answer}");
    let answer = exchange(addr, &request("DELETE", "/admin/fault", Some(TOKEN), "")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(status_of(&get_rooms(addr).await), 200);
}

#[tokio::test]
async fn an_abort_fault_resets_the_connection_without_an_answer() {
    let addr = service(Some(TOKEN)).await;
    let body = r#"{"abort_rate":1.0}"#;
    exchange(addr, &request("PUT", "/admin/fault", Some(TOKEN), body)).await;
    let answer = get_rooms(addr).await;
    assert_eq!(answer, "", "an aborted request got an answer");
    // A client library sees a broken connection, not a status.
    let err = reqwest::Client::new()
        .get(format!("http://{addr}/rooms"))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
}

#[tokio::test]
async fn latency_delays_answers_and_a_fault_set_for_a_while_clears_itself() {
    let addr = service(Some(TOKEN)).await;
    let body = r#"{"latency":"200ms","for":"1s"}"#;
    exchange(addr, &request("PUT", "/admin/fault", Some(TOKEN), body)).await;
    let started = std::time::Instant::now();
    assert_eq!(status_of(&get_rooms(addr).await), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    hotel_testkit::eventually(Duration::from_secs(10), "the fault to expire", || async {
        let answer = exchange(addr, &request("GET", "/admin/fault", Some(TOKEN), "")).await;
        answer.contains("\"fault\":null").then_some(())
    })
    .await
    .unwrap();
    assert_eq!(status_of(&get_rooms(addr).await), 200);
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_the_faults_injected() {
    let addr = service(Some(TOKEN)).await;
    assert_eq!(status_of(&get_rooms(addr).await), 200);
    let body = r#"{"error_rate":1.0}"#;
    exchange(addr, &request("PUT", "/admin/fault", Some(TOKEN), body)).await;
    assert_eq!(status_of(&get_rooms(addr).await), 503);
    // /metrics is never faulted.
    let answer = exchange(addr, &request("GET", "/metrics", None, "")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    for line in [
        r#"hotel_http_requests_total{route="/rooms",method="GET",status="200"} 1"#,
        r#"hotel_http_requests_total{route="/rooms",method="GET",status="503"} 1"#,
        r#"hotel_faults_injected_total{kind="error"} 1"#,
        r#"hotel_http_request_duration_seconds_count{route="/rooms"} 2"#,
    ] {
        assert!(answer.contains(line), "{line} missing:\n{answer}");
    }
    assert!(answer.trim_end().ends_with("# EOF"), "{answer}");
}
