//! Live reconfiguration, in process: a real `Application` on port 0 whose configuration
//! file the test rewrites, `POST /admin/reload`, and one HTTP/1.1 connection (hyper's
//! client over a single socket) that must survive every reload.

#![allow(clippy::unwrap_used)]

mod support;

use axum::{Router, extract::State, routing::get};
use bytes::Bytes;
use hotel_gateway::settings::RouteSettings;
use hotel_testkit::{TempDir, eventually_true};
use http_body_util::{BodyExt, Empty};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use support::{Gw, client, instances, json, key, loopback, serve, write_settings};

const OLD_KEY: &str = "old-key-0123456789abcdef";
const NEW_KEY: &str = "new-key-0123456789abcdef";

#[derive(Clone)]
struct Fake {
    hits: Arc<AtomicUsize>,
    /// `/rooms/slow` answers once this turns true.
    release: tokio::sync::watch::Receiver<bool>,
}

/// An instance of every service: `/x/slow` waits for the release, anything else answers
/// at once.
fn fake(f: Fake) -> Router {
    async fn any(State(f): State<Fake>, req: axum::extract::Request) -> String {
        f.hits.fetch_add(1, Ordering::SeqCst);
        if req.uri().path().ends_with("/slow") {
            let mut r = f.release.clone();
            let _ = r.wait_for(|r| *r).await;
        }
        req.uri().path().to_owned()
    }
    Router::new()
        .route("/{service}/{id}", get(any))
        .with_state(f)
}

fn route(prefix: &str, service: &str) -> RouteSettings {
    RouteSettings {
        prefix: prefix.into(),
        service: service.into(),
        rewrite: None,
        cache: false,
        max_body_bytes: None,
        policy: Default::default(),
    }
}

/// One client connection to the gateway; every request goes over this same socket.
struct OneConnection(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl OneConnection {
    async fn open(addr: std::net::SocketAddr) -> OneConnection {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        OneConnection(send)
    }

    /// The status of `GET path` with `key`; fails the test if the connection is gone.
    async fn get(&mut self, path: &str, key: &str) -> u16 {
        self.0.ready().await.expect("the connection was dropped");
        let req = http::Request::get(path)
            .header("host", "gateway")
            .header("x-api-key", key)
            .body(Empty::new())
            .unwrap();
        let res = self.0.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let _ = res.into_body().collect().await.unwrap();
        status
    }
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_routes_and_keys_keeping_connections_requests_in_flight_and_breakers() {
    let (release, release_rx) = tokio::sync::watch::channel(false);
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = serve(fake(Fake {
        hits: hits.clone(),
        release: release_rx,
    }))
    .await;
    let dir = TempDir::new("gateway-reload");
    let file = dir.path().join("gateway.toml");
    let mut s = loopback();
    s.routes = vec![route("/api/rooms", "room")];
    instances(&mut s, "room", vec![upstream.clone()], Default::default());
    s.auth.keys = vec![key("old", OLD_KEY, false)];
    let gw = Gw::launch_from_file(&s, &file).await;

    let mut conn = OneConnection::open(gw.addr).await;
    assert_eq!(conn.get("/api/rooms/1", OLD_KEY).await, 200);
    assert_eq!(conn.get("/api/customers/1", OLD_KEY).await, 404);
    // A request in flight when the configuration changes under it.
    let slow = tokio::spawn(
        client()
            .get(gw.url("/api/rooms/slow"))
            .header("x-api-key", OLD_KEY)
            .send(),
    );
    eventually_true(
        Duration::from_secs(10),
        "the slow request reaches the instance",
        || hits.load(Ordering::SeqCst) >= 2,
    )
    .await
    .unwrap();
    let before = gw.status().await;
    let room_requests = before["services"][0]["instances"][0]["requests"]
        .as_u64()
        .unwrap();
    assert!(room_requests >= 1, "{before}");

    // Version 2: the old key goes, a new one comes, and a new route with its service.
    s.auth.keys = vec![key("new", NEW_KEY, false)];
    s.routes.push(route("/api/customers", "customer"));
    instances(
        &mut s,
        "customer",
        vec![upstream.clone()],
        Default::default(),
    );
    write_settings(&s, &file);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    let changed = body["changed"].to_string();
    assert!(
        changed.contains("auth") && changed.contains("routes"),
        "{body}"
    );
    assert_eq!(body["restart_required"], serde_json::json!([]), "{body}");

    // The request in flight finishes under the configuration it started with.
    release.send(true).unwrap();
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    // The same connection, now under version 2.
    assert_eq!(conn.get("/api/rooms/1", OLD_KEY).await, 401);
    assert_eq!(conn.get("/api/rooms/1", NEW_KEY).await, 200);
    assert_eq!(conn.get("/api/customers/1", NEW_KEY).await, 200);
    // The unchanged room service kept its upstream: its counters go on from before.
    let after = gw.status().await;
    let room = after["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "room")
        .unwrap();
    assert!(
        room["instances"][0]["requests"].as_u64().unwrap() > room_requests,
        "{after}"
    );
    assert_eq!(after["config"]["version"], 2, "{after}");

    // An invalid file is refused whole, naming the key; version 2 keeps running.
    s.routes[0].prefix = "api/rooms".into();
    s.auth.keys = vec![key("third", OLD_KEY, false)];
    write_settings(&s, &file);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["type"].as_str().unwrap().rsplit('/').next(),
        Some("config-refused")
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("routes[0].prefix"),
        "{body}"
    );
    assert_eq!(conn.get("/api/rooms/1", OLD_KEY).await, 401);
    assert_eq!(conn.get("/api/customers/1", NEW_KEY).await, 200);

    // The running configuration, secrets redacted, and the counts.
    let shown = json(
        client()
            .get(gw.admin_url("/admin/config"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(shown["version"], 2, "{shown}");
    assert_eq!(shown["settings"]["auth"]["keys"][0]["client"], "new");
    assert!(
        !shown
            .to_string()
            .contains(&hotel_gateway::auth::hash_key(NEW_KEY)),
        "{shown}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "gateway_config_reloads_total{outcome=\"accepted\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "gateway_config_reloads_total{outcome=\"refused\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&m, "gateway_config_version "), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_would_turn_authentication_off_or_needs_a_restart_says_so() {
    let upstream = serve(fake(Fake {
        hits: Arc::new(AtomicUsize::new(0)),
        release: tokio::sync::watch::channel(true).1,
    }))
    .await;
    let dir = TempDir::new("gateway-reload-refused");
    let file = dir.path().join("gateway.toml");
    let mut s = loopback();
    s.routes = vec![route("/api/rooms", "room")];
    instances(&mut s, "room", vec![upstream], Default::default());
    s.auth.keys = vec![key("old", OLD_KEY, false)];
    let gw = Gw::launch_from_file(&s, &file).await;

    s.auth.keys.clear();
    write_settings(&s, &file);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("authentication off")
    );
    assert_eq!(
        client()
            .get(gw.url("/api/rooms/1"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // A new listen address is reported, not applied; the rest of the file is.
    s.auth.keys = vec![key("new", NEW_KEY, false)];
    s.listen = "127.0.0.1:1".parse().unwrap();
    s.limits.max_connections = 7;
    write_settings(&s, &file);
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["listen", "limits.max_connections"]),
        "{body}"
    );
    let ok = client()
        .get(gw.url("/api/rooms/1"))
        .header("x-api-key", NEW_KEY)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}
