//! In-process tests of the registry's HTTP API: routers called with `oneshot`, and whole
//! registries on port 0 driven by the client library.

#![allow(clippy::unwrap_used)]

use axum::{Router, body::Body};
use hotel_registry::{
    Application, RegistryClient, Settings, Watcher,
    client::{Registration, RegistrationSpec, WatchOptions},
};
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
    let a = send(&app, Method::GET, "/v1/services", Some(TOKEN), None).await;
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

    let list = send(&app, Method::GET, "/v1/services/room", Some(TOKEN), None).await;
    assert_eq!(list.status, StatusCode::OK);
    let v = list.json();
    assert_eq!(v["index"], index);
    assert_eq!(v["instances"][0]["instance"], "room-1");
    assert_eq!(v["instances"][0]["metadata"]["zone"], "a");
    assert_eq!(v["instances"][0]["lease_ms"], 3000);
    assert_eq!(list.headers["x-registry-index"], index.to_string().as_str());

    let services = send(&app, Method::GET, "/v1/services", Some(TOKEN), None)
        .await
        .json();
    assert_eq!(
        services["services"],
        json!([{"service": "room", "instances": 1, "index": index}])
    );

    let hb = send(
        &app,
        Method::PUT,
        "/v1/instances/room/room-1/heartbeat",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(hb.status, StatusCode::OK);

    let del = send(
        &app,
        Method::DELETE,
        "/v1/instances/room/room-1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let del = send(
        &app,
        Method::DELETE,
        "/v1/instances/room/room-1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    let v = send(&app, Method::GET, "/v1/services/room", Some(TOKEN), None)
        .await
        .json();
    assert!(v["index"].as_u64().unwrap() > index);
    assert_eq!(v["instances"], json!([]));
}

#[tokio::test]
async fn a_heartbeat_for_an_unknown_instance_answers_404_problem() {
    let app = app();
    let a = send(
        &app,
        Method::PUT,
        "/v1/instances/room/room-9/heartbeat",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.is_problem());
    assert!(a.json()["detail"].as_str().unwrap().contains("room-9"));
}

#[tokio::test]
async fn bad_service_and_instance_names_answer_400_naming_the_field() {
    let app = app();
    let url = json!({"url": "http://127.0.0.1:1"});
    let a = register(&app, "Room", "room-1", url.clone()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.problem_fields(), ["service"]);
    let long = "a".repeat(64);
    let a = register(&app, "room", &long, url.clone()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.problem_fields(), ["instance"]);
    let a = register(&app, "room", "room_1", url).await;
    assert_eq!(a.problem_fields(), ["instance"]);
    let a = send(&app, Method::GET, "/v1/services/ROOM", Some(TOKEN), None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.problem_fields(), ["service"]);
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
        let a = register(&app, "room", "room-1", json!({"url": bad})).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {}",
            a.text
        );
        assert_eq!(a.problem_fields(), ["url"], "{bad}");
    }
    let a = register(&app, "room", "room-1", json!({"url": 5})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_fields(), ["url"]);
}

#[tokio::test]
async fn oversized_metadata_is_refused_naming_the_field() {
    let app = app();
    let many: serde_json::Map<String, Value> =
        (0..33).map(|i| (format!("k{i}"), json!("v"))).collect();
    let a = register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:1", "metadata": many}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_fields(), ["metadata"]);

    let long = "x".repeat(600);
    let a = register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:1", "metadata": {"zone": long}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_fields(), ["metadata.zone"]);

    let huge = "x".repeat(5000);
    let a = register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:1", "metadata": {"blob": huge}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.is_problem());
}

#[tokio::test]
async fn unknown_fields_wrong_types_and_bad_leases_name_the_field() {
    let app = app();
    let a = register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:1", "ttl": "3s"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_fields(), ["ttl"]);
    let a = register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:1", "metadata": {"zone": 1}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_fields(), ["metadata.zone"]);
    let a = register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:1", "lease": "10ms"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_fields(), ["lease"]);
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
    let a = send(
        &app,
        Method::GET,
        "/v1/services/room?index=1&wait=soon",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.problem_fields(), ["wait"]);
    let a = send(
        &app,
        Method::GET,
        "/v1/services/room?index=-1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.problem_fields(), ["index"]);
    let a = send(
        &app,
        Method::GET,
        "/v1/services/room?idx=1",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.problem_fields(), ["idx"]);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problems() {
    let app = app();
    let a = send(&app, Method::GET, "/v2/nothing", Some(TOKEN), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.is_problem());
    let a = send(&app, Method::POST, "/v1/services", Some(TOKEN), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.is_problem());
}

#[tokio::test]
async fn the_root_page_lists_instances_with_heartbeat_age_and_metadata() {
    let app = app();
    register(
        &app,
        "room",
        "room-1",
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
    let a = send(&app, Method::GET, "/", Some(TOKEN), None).await;
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
    let first = send(&app, Method::GET, "/v1/services/room", Some(TOKEN), None)
        .await
        .json();
    let index = first["index"].as_u64().unwrap();
    let waiter = {
        let app = app.clone();
        tokio::spawn(async move {
            let uri = format!("/v1/services/room?index={index}&wait=20s");
            send(&app, Method::GET, &uri, Some(TOKEN), None).await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !waiter.is_finished(),
        "the watch must block while nothing changes"
    );
    register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:4001"}),
    )
    .await;
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
    register(
        &app,
        "room",
        "room-1",
        json!({"url": "http://127.0.0.1:4001"}),
    )
    .await;
    let index = send(&app, Method::GET, "/v1/services/room", Some(TOKEN), None)
        .await
        .json()["index"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    let uri = format!("/v1/services/room?index={index}&wait=300ms");
    let a = send(&app, Method::GET, &uri, Some(TOKEN), None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.json()["index"], index);
    assert_eq!(a.headers["x-registry-index"], index.to_string().as_str());
}

async fn start_registry(
    settings: Settings,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let app = Application::build(settings).await.unwrap();
    let url = app.url();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        app.run_until(async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (url, tx, task)
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

/// Polls `check` every 10 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}

#[tokio::test]
async fn a_watcher_sees_a_registration_within_milliseconds() {
    let (url, stop, task) = start_registry(settings()).await;
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
                &hotel_registry::model::RegisterRequest {
                    url: format!("http://127.0.0.1:{}", 2000 + i),
                    metadata: Default::default(),
                    lease: None,
                },
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
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_registration_comes_back_after_the_registry_restarts_and_watchers_keep_the_last_set() {
    let (url, stop, task) = start_registry(settings()).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let heartbeat = Duration::from_millis(200);
    let reg = Registration::start(client(&url), spec("room-1", heartbeat));
    assert!(reg.wait_registered(Duration::from_secs(10)).await);
    let options = WatchOptions {
        settle: Duration::from_millis(600),
        ..WatchOptions::default()
    };
    let watcher = Watcher::with_options(client(&url), "room", options);
    assert!(eventually(Duration::from_secs(10), || watcher.current().len() == 1).await);

    stop.send(()).unwrap();
    task.await.unwrap();
    // The registry is gone: the heartbeat fails, the watcher keeps what it knew.
    assert!(eventually(Duration::from_secs(10), || !reg.is_registered()).await);
    assert_eq!(watcher.current().len(), 1);

    let restarted_at = Instant::now();
    let (url2, stop2, task2) = start_registry(Settings {
        listen: addr.parse().unwrap(),
        ..settings()
    })
    .await;
    assert_eq!(url2, url);
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
    assert!(eventually(Duration::from_secs(5), || watcher.current().is_empty()).await);
    stop2.send(()).unwrap();
    task2.await.unwrap();
}

#[tokio::test]
async fn a_watcher_drops_instances_that_do_not_return_after_a_registry_restart() {
    let (url, stop, task) = start_registry(settings()).await;
    let addr = url.trim_start_matches("http://").to_owned();
    let c = client(&url);
    let body = hotel_registry::model::RegisterRequest {
        url: "http://127.0.0.1:3999".into(),
        metadata: Default::default(),
        lease: None,
    };
    c.register("room", "room-7", &body).await.unwrap();
    let options = WatchOptions {
        settle: Duration::from_millis(300),
        ..WatchOptions::default()
    };
    let watcher = Watcher::with_options(c.clone(), "room", options);
    assert!(eventually(Duration::from_secs(10), || watcher.current().len() == 1).await);
    stop.send(()).unwrap();
    task.await.unwrap();
    let (_url, stop2, task2) = start_registry(Settings {
        listen: addr.parse().unwrap(),
        ..settings()
    })
    .await;
    // Nobody re-registers room-7: after the settle period the watcher lets it go.
    assert!(eventually(Duration::from_secs(10), || watcher.current().is_empty()).await);
    stop2.send(()).unwrap();
    task2.await.unwrap();
}

#[tokio::test]
async fn shutting_down_a_registration_deregisters_at_once() {
    let (url, stop, task) = start_registry(settings()).await;
    let reg = Registration::start(client(&url), spec("room-2", Duration::from_secs(1)));
    assert!(reg.wait_registered(Duration::from_secs(10)).await);
    let watcher = Watcher::start(client(&url), "room");
    assert!(eventually(Duration::from_secs(10), || watcher.current().len() == 1).await);
    let started = Instant::now();
    reg.shutdown().await;
    // Gone well before the 3 s lease could have ended.
    assert!(eventually(Duration::from_secs(2), || watcher.current().is_empty()).await);
    assert!(started.elapsed() < Duration::from_millis(2_500));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn a_registration_with_a_wrong_token_keeps_retrying_without_failing() {
    let (url, stop, task) = start_registry(settings()).await;
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
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn the_client_reports_auth_and_not_found_as_distinct_errors() {
    let (url, stop, task) = start_registry(settings()).await;
    let anon = RegistryClient::new(&url, None).unwrap();
    assert!(matches!(
        anon.services().await,
        Err(hotel_registry::client::ClientError::Unauthorized)
    ));
    assert!(matches!(
        client(&url).heartbeat("room", "room-1").await,
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
    stop.send(()).unwrap();
    task.await.unwrap();
}
