//! In-process tests of the registry's HTTP API: routers called with `oneshot`, and whole
//! registries on port 0 driven by the client library.

#![allow(clippy::unwrap_used)]

use axum::{Router, body::Body};
use hotel_registry::{
    Application, RegistryClient, Settings, Watcher,
    client::{Registration, RegistrationSpec, WatchOptions},
};
use hotel_testkit::eventually_true;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789";

fn settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.to_owned()),
        ..Settings::default()
    }
}

fn app() -> Router {
    hotel_registry::router(&settings()).0
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    fn is_problem(&self) -> bool {
        self.headers[header::CONTENT_TYPE] == "application/problem+json"
    }

    fn problem_fields(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

async fn register(app: &Router, service: &str, instance: &str, body: Value) -> Answer {
    let uri = format!("/v1/instances/{service}/{instance}");
    send(app, Method::PUT, &uri, Some(TOKEN), Some(body.to_string())).await
}

/// Registers `room-1` of service `room` with `body`.
async fn register_room_1(app: &Router, body: Value) -> Answer {
    register(app, "room", "room-1", body).await
}

/// A bodiless request carrying the right token.
async fn authed(app: &Router, method: Method, uri: &str) -> Answer {
    send(app, method, uri, Some(TOKEN), None).await
}

/// Asserts `a` is a problem+json answer with `status` whose `errors` name exactly `fields`.
fn assert_problem(a: &Answer, status: StatusCode, fields: &[&str]) {
    assert_eq!(a.status, status, "{}", a.text);
    assert!(a.is_problem(), "{}", a.text);
    assert_eq!(a.problem_fields(), fields, "{}", a.text);
}

#[tokio::test]
async fn requests_without_a_token_get_401_with_a_bearer_challenge() {
    let app = app();
    let a = send(&app, Method::GET, "/v1/services", None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.is_problem());
    assert_eq!(
        a.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"hotel-registry\""
    );
    let a = send(
        &app,
        Method::PUT,
        "/v1/instances/room/room-1",
        None,
        Some(json!({"url": "http://127.0.0.1:1"}).to_string()),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = send(&app, Method::GET, "/", None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_token_gets_401_invalid_token_and_is_never_echoed() {
    let app = app();
    let a = send(
        &app,
        Method::GET,
        "/v1/services",
        Some("not-the-token"),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    assert!(!a.text.contains("not-the-token"));
    let a = send(
        &app,
        Method::GET,
        "/v1/services",
        Some(&format!("{TOKEN}x")),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = authed(&app, Method::GET, "/v1/services").await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn health_endpoints_need_no_token() {
    let app = app();
    assert_eq!(
        send(&app, Method::GET, "/healthz", None, None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, Method::GET, "/readyz", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn without_a_configured_token_the_registry_is_open() {
    let (app, _) = hotel_registry::router(&Settings {
        token: None,
        ..settings()
    });
    let a = send(&app, Method::GET, "/v1/services", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn register_renew_list_and_deregister_round_trip() {
    let app = app();
    let body =
        json!({"url": "http://127.0.0.1:4001/", "metadata": {"version": "1.2.3", "zone": "a"}});
    let a = register(&app, "room", "room-1", body.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    let index: u64 = a.headers["x-registry-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(a.json()["instance"]["url"], "http://127.0.0.1:4001");
    let again = register(&app, "room", "room-1", body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["index"], index);

    let list = authed(&app, Method::GET, "/v1/services/room").await;
    assert_eq!(list.status, StatusCode::OK);
    let v = list.json();
    assert_eq!(v["index"], index);
    assert_eq!(v["instances"][0]["instance"], "room-1");
    assert_eq!(v["instances"][0]["metadata"]["zone"], "a");
    assert_eq!(v["instances"][0]["lease_ms"], 3000);
    assert_eq!(list.headers["x-registry-index"], index.to_string().as_str());

    let services = authed(&app, Method::GET, "/v1/services").await.json();
    assert_eq!(
        services["services"],
        json!([{"service": "room", "instances": 1, "passing": 1, "index": index}])
    );

    let hb = authed(&app, Method::PUT, "/v1/instances/room/room-1/heartbeat").await;
    assert_eq!(hb.status, StatusCode::OK);

    let del = authed(&app, Method::DELETE, "/v1/instances/room/room-1").await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let del = authed(&app, Method::DELETE, "/v1/instances/room/room-1").await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    let v = authed(&app, Method::GET, "/v1/services/room").await.json();
    assert!(v["index"].as_u64().unwrap() > index);
    assert_eq!(v["instances"], json!([]));
}

#[tokio::test]
async fn a_heartbeat_for_an_unknown_instance_answers_404_problem() {
    let app = app();
    let a = authed(&app, Method::PUT, "/v1/instances/room/room-9/heartbeat").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.is_problem());
    assert!(a.json()["detail"].as_str().unwrap().contains("room-9"));
}

#[tokio::test]
async fn bad_service_and_instance_names_answer_400_naming_the_field() {
    let app = app();
    let url = json!({"url": "http://127.0.0.1:1"});
    let a = register(&app, "Room", "room-1", url.clone()).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, &["service"]);
    let long = "a".repeat(64);
    let a = register(&app, "room", &long, url.clone()).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, &["instance"]);
    let a = register(&app, "room", "room_1", url).await;
    assert_problem(&a, StatusCode::BAD_REQUEST, &["instance"]);
    let a = authed(&app, Method::GET, "/v1/services/ROOM").await;
    assert_problem(&a, StatusCode::BAD_REQUEST, &["service"]);
}

#[tokio::test]
async fn a_bad_url_answers_422_naming_url() {
    let app = app();
    for bad in [
        "127.0.0.1:4000",
        "ftp://127.0.0.1",
        "http://u:p@127.0.0.1:1",
        "nonsense",
    ] {
        let a = register_room_1(&app, json!({"url": bad})).await;
        assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["url"]);
    }
    let a = register_room_1(&app, json!({"url": 5})).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["url"]);
}

#[tokio::test]
async fn oversized_metadata_is_refused_naming_the_field() {
    let app = app();
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let a = register_room_1(&app, json!({"url": "http://127.0.0.1:1", "metadata": many})).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["metadata"]);

    let zone = json!({"zone": "x".repeat(600)});
    let a = register_room_1(&app, json!({"url": "http://127.0.0.1:1", "metadata": zone})).await;
    assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &["metadata.zone"]);

    let blob = json!({"blob": "x".repeat(5000)});
    let a = register_room_1(&app, json!({"url": "http://127.0.0.1:1", "metadata": blob})).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.is_problem());
}

#[tokio::test]
async fn unknown_fields_wrong_types_and_bad_leases_name_the_field() {
    let app = app();
    for (body, field) in [
        (json!({"url": "http://127.0.0.1:1", "ttl": "3s"}), "ttl"),
        (
            json!({"url": "http://127.0.0.1:1", "metadata": {"zone": 1}}),
            "metadata.zone",
        ),
        (
            json!({"url": "http://127.0.0.1:1", "lease": "10ms"}),
            "lease",
        ),
    ] {
        let a = register_room_1(&app, body).await;
        assert_problem(&a, StatusCode::UNPROCESSABLE_ENTITY, &[field]);
    }
    let a = send(
        &app,
        Method::PUT,
        "/v1/instances/room/room-1",
        Some(TOKEN),
        Some("{\"url\":".into()),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.is_problem());
}

#[tokio::test]
async fn bad_watch_parameters_answer_400_naming_the_parameter() {
    let app = app();
    for (query, field) in [
        ("index=1&wait=soon", "wait"),
        ("index=-1", "index"),
        ("idx=1", "idx"),
    ] {
        let a = authed(&app, Method::GET, &format!("/v1/services/room?{query}")).await;
        assert_problem(&a, StatusCode::BAD_REQUEST, &[field]);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problems() {
    let app = app();
    let a = authed(&app, Method::GET, "/v2/nothing").await;
    assert_problem(&a, StatusCode::NOT_FOUND, &[]);
    let a = authed(&app, Method::POST, "/v1/services").await;
    assert_problem(&a, StatusCode::METHOD_NOT_ALLOWED, &[]);
}

#[tokio::test]
async fn the_root_page_lists_instances_with_heartbeat_age_and_metadata() {
    let app = app();
    register_room_1(
        &app,
        json!({"url": "http://127.0.0.1:4001", "metadata": {"zone": "b"}}),
    )
    .await;
    register(
        &app,
        "customer",
        "customer-1",
        json!({"url": "http://127.0.0.1:4002"}),
    )
    .await;
    let a = authed(&app, Method::GET, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(a.text.contains("2 services, 2 instances"), "{}", a.text);
    let line = a
        .text
        .lines()
        .find(|l| l.starts_with("room "))
        .unwrap_or_else(|| panic!("{}", a.text));
    assert!(
        line.contains("room-1") && line.contains("http://127.0.0.1:4001"),
        "{line}"
    );
    assert!(line.contains("s ago") && line.contains("zone=b"), "{line}");
}

#[tokio::test]
async fn a_blocking_watch_over_http_returns_when_an_instance_registers() {
    let app = app();
    let first = authed(&app, Method::GET, "/v1/services/room").await.json();
    let index = first["index"].as_u64().unwrap();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move {
            let uri = format!("/v1/services/room?index={index}&wait=20s");
            authed(&app, Method::GET, &uri).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "the watch must block while nothing changes"
    );
    register_room_1(&app, json!({"url": "http://127.0.0.1:4001"})).await;
    let a = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["index"].as_u64().unwrap() > index);
    assert_eq!(a.json()["instances"][0]["instance"], "room-1");
}

#[tokio::test]
async fn a_blocking_watch_that_times_out_answers_the_same_index() {
    let app = app();
    register_room_1(&app, json!({"url": "http://127.0.0.1:4001"})).await;
    let index = authed(&app, Method::GET, "/v1/services/room").await.json()["index"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let uri = format!("/v1/services/room?index={index}&wait=300ms");
    let a = authed(&app, Method::GET, &uri).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.json()["index"], index);
    assert_eq!(a.headers["x-registry-index"], index.to_string().as_str());
}

/// A whole registry serving on a port in this process.
struct Running {
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Its `host:port`, to restart a registry at the same address.
    fn addr(&self) -> std::net::SocketAddr {
        self.url.trim_start_matches("http://").parse().unwrap()
    }

    /// Shuts it down and waits until it has stopped serving.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

async fn start_registry(settings: Settings) -> Running {
    let app = Application::build(settings).await.unwrap();
    let url = app.url();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Running { url, stop, task }
}

/// Starts a registry on `addr`, where an earlier one ran.
async fn restart_registry(addr: std::net::SocketAddr) -> Running {
    start_registry(Settings {
        listen: addr,
        ..settings()
    })
    .await
}

/// A registration request for `url` with no metadata and the default lease.
fn register_request(url: String) -> hotel_registry::model::RegisterRequest {
    hotel_registry::model::RegisterRequest {
        url,
        metadata: Default::default(),
        lease: None,
        status: Default::default(),
        reason: None,
    }
}

fn client(url: &str) -> RegistryClient {
    RegistryClient::new(url, Some(TOKEN.to_owned())).unwrap()
}

fn spec(instance: &str, heartbeat: Duration) -> RegistrationSpec {
    RegistrationSpec {
        service: "room".into(),
        instance: instance.into(),
        url: format!("http://127.0.0.1:1{}", &instance[5..]),
        metadata: Default::default(),
        heartbeat,
        lease: heartbeat * 3,
    }
}

#[tokio::test]
async fn a_watcher_sees_a_registration_within_milliseconds() {
    let registry = start_registry(settings()).await;
    let url = registry.url.clone();
    let watcher = Watcher::start(client(&url), "room");
    assert!(watcher.wait_synced(Duration::from_secs(10)).await);
    let mut rx = watcher.subscribe();
    rx.borrow_and_update();
    let mut samples = Vec::new();
    for i in 0..20 {
        let name = format!("room-{i}");
        let started = Instant::now();
        client(&url)
            .register(
                "room",
                &name,
                &register_request(format!("http://127.0.0.1:{}", 2000 + i)),
            )
            .await
            .unwrap();
        loop {
            tokio::time::timeout(Duration::from_secs(2), rx.changed())
                .await
                .expect("watch latency over 2 s")
                .unwrap();
            if rx.borrow_and_update().iter().any(|x| x.instance == name) {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "watch latency (register request sent -> watcher updated): p50 {p50:?}, max {max:?} over {} changes",
        samples.len()
    );
    assert!(max < Duration::from_secs(2));
    registry.stop().await;
}

#[tokio::test]
async fn a_registration_comes_back_after_the_registry_restarts_and_watchers_keep_the_last_set() {
    let registry = start_registry(settings()).await;
    let url = registry.url.clone();
    let addr = registry.addr();
    let heartbeat = Duration::from_millis(200);
    let reg = Registration::start(client(&url), spec("room-1", heartbeat));
    assert!(reg.wait_registered(Duration::from_secs(10)).await);
    let options = WatchOptions {
        settle: Duration::from_millis(600),
        ..WatchOptions::default()
    };
    let watcher = Watcher::with_options(client(&url), "room", options);
    eventually_true(
        Duration::from_secs(10),
        "watcher.current().len() == 1",
        || watcher.current().len() == 1,
    )
    .await
    .unwrap();

    registry.stop().await;
    // The registry is gone: the heartbeat fails, the watcher keeps what it knew.
    eventually_true(Duration::from_secs(10), "!reg.is_registered()", || {
        !reg.is_registered()
    })
    .await
    .unwrap();
    assert_eq!(watcher.current().len(), 1);

    let restarted_at = Instant::now();
    let registry = restart_registry(addr).await;
    assert_eq!(registry.url, url);
    let c = client(&url);
    let mut back = None;
    while restarted_at.elapsed() < Duration::from_secs(10) {
        if c.instances("room")
            .await
            .map(|s| s.instances.len() == 1)
            .unwrap_or(false)
        {
            back = Some(restarted_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = back.expect("the instance did not re-register within 10 s");
    println!("re-registered {back:?} after the registry restarted (heartbeat {heartbeat:?})");
    assert!(reg.wait_registered(Duration::from_secs(5)).await);
    assert_eq!(
        watcher.current().len(),
        1,
        "the watcher must never have lost the instance"
    );

    reg.shutdown().await;
    eventually_true(
        Duration::from_secs(5),
        "watcher.current().is_empty()",
        || watcher.current().is_empty(),
    )
    .await
    .unwrap();
    registry.stop().await;
}

#[tokio::test]
async fn a_watcher_drops_instances_that_do_not_return_after_a_registry_restart() {
    let registry = start_registry(settings()).await;
    let url = registry.url.clone();
    let addr = registry.addr();
    let c = client(&url);
    let body = register_request("http://127.0.0.1:3999".into());
    c.register("room", "room-7", &body).await.unwrap();
    let options = WatchOptions {
        settle: Duration::from_millis(300),
        ..WatchOptions::default()
    };
    let watcher = Watcher::with_options(c.clone(), "room", options);
    eventually_true(
        Duration::from_secs(10),
        "watcher.current().len() == 1",
        || watcher.current().len() == 1,
    )
    .await
    .unwrap();
    registry.stop().await;
    let registry = restart_registry(addr).await;
    // Nobody re-registers room-7: after the settle period the watcher lets it go.
    eventually_true(
        Duration::from_secs(10),
        "watcher.current().is_empty()",
        || watcher.current().is_empty(),
    )
    .await
    .unwrap();
    registry.stop().await;
}

#[tokio::test]
async fn shutting_down_a_registration_deregisters_at_once() {
    let registry = start_registry(settings()).await;
    let url = registry.url.clone();
    let reg = Registration::start(client(&url), spec("room-2", Duration::from_secs(1)));
    assert!(reg.wait_registered(Duration::from_secs(10)).await);
    let watcher = Watcher::start(client(&url), "room");
    eventually_true(
        Duration::from_secs(10),
        "watcher.current().len() == 1",
        || watcher.current().len() == 1,
    )
    .await
    .unwrap();
    let started = Instant::now();
    reg.shutdown().await;
    // Gone well before the 3 s lease could have ended.
    eventually_true(
        Duration::from_secs(2),
        "watcher.current().is_empty()",
        || watcher.current().is_empty(),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_millis(2_500));
    registry.stop().await;
}

#[tokio::test]
async fn a_registration_with_a_wrong_token_keeps_retrying_without_failing() {
    let registry = start_registry(settings()).await;
    let url = registry.url.clone();
    let bad = RegistryClient::new(&url, Some("wrong".into())).unwrap();
    let reg = Registration::start(bad, spec("room-3", Duration::from_millis(100)));
    assert!(!reg.wait_registered(Duration::from_millis(500)).await);
    assert!(
        client(&url)
            .instances("room")
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    drop(reg);
    registry.stop().await;
}

#[tokio::test]
async fn the_client_reports_auth_and_not_found_as_distinct_errors() {
    let registry = start_registry(settings()).await;
    let url = registry.url.clone();
    let anon = RegistryClient::new(&url, None).unwrap();
    assert!(matches!(
        anon.services().await,
        Err(hotel_registry::client::ClientError::Unauthorized)
    ));
    assert!(matches!(
        client(&url)
            .heartbeat("room", "room-1", &Default::default())
            .await,
        Err(hotel_registry::client::ClientError::NotRegistered)
    ));
    assert!(client(&url).deregister("room", "room-1").await.is_ok());
    assert!(matches!(
        client(&url).instances("Bad").await,
        Err(hotel_registry::client::ClientError::BadName {
            field: "service",
            ..
        })
    ));
    registry.stop().await;
}
