//! Active health: instances report their own readiness with every heartbeat; the
//! registry keeps a critical instance registered and listed (with its reason), and
//! watchers leave it out until it reports passing again.

#![allow(clippy::unwrap_used)]

use axum::{Router, body::Body};
use hotel_common::health::ReadinessCheck;
use hotel_registry::{
    Application, RegistryClient, Settings, Watcher,
    client::{Registration, RegistrationSpec},
    model::HealthStatus,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tower::ServiceExt;

const TOKEN: &str = "health-test-token-0123456789";

fn settings() -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        token: Some(TOKEN.to_owned()),
        ..Settings::default()
    }
}

/// `method uri` with an optional JSON body; the status and the JSON answer (`Null` when
/// empty).
async fn call(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let req = match body {
        Some(b) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, json)
}

#[tokio::test]
async fn a_heartbeat_reports_critical_with_its_reason_and_one_without_a_body_means_passing() {
    let (app, _store) = hotel_registry::router(&settings());
    let (status, _) = call(
        &app,
        Method::PUT,
        "/v1/instances/room/room-1",
        Some(json!({"url": "http://127.0.0.1:4001"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let beat = "/v1/instances/room/room-1/heartbeat";

    let (status, renewed) = call(
        &app,
        Method::PUT,
        beat,
        Some(json!({"status": "critical", "reason": "database file is gone"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["instance"]["status"], "critical");
    // The list shows every instance, with its status and reason.
    let (_, listed) = call(&app, Method::GET, "/v1/services/room", None).await;
    assert_eq!(listed["instances"][0]["instance"], "room-1");
    assert_eq!(listed["instances"][0]["status"], "critical");
    assert_eq!(listed["instances"][0]["reason"], "database file is gone");
    let (_, services) = call(&app, Method::GET, "/v1/services", None).await;
    assert_eq!(services["services"][0]["instances"], 1);
    assert_eq!(services["services"][0]["passing"], 0);

    // A heartbeat without a body, as before heartbeats carried a status: passing.
    let (status, renewed) = call(&app, Method::PUT, beat, None).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    assert_eq!(renewed["instance"]["status"], "passing");
    assert!(renewed["instance"].get("reason").is_none(), "{renewed}");

    // Bad reports are refused naming the field; the stored status stays.
    for bad in [
        json!({"status": "sick"}),
        json!({"status": "critical", "reason": "x".repeat(513)}),
        json!({"status": "critical", "why": "unknown field"}),
    ] {
        let (status, problem) = call(&app, Method::PUT, beat, Some(bad.clone())).await;
        assert!(status.is_client_error(), "{bad}: {status} {problem}");
    }
    let (_, listed) = call(&app, Method::GET, "/v1/services/room", None).await;
    assert_eq!(listed["instances"][0]["status"], "passing");
}

/// Polls `check` every 10 ms until it holds or `within` passes; answers how long it took.
async fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

/// A registry serving on a free port, a client of it, and what stops it.
async fn running_registry() -> (
    RegistryClient,
    impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) {
    let app = Application::build(settings()).await.unwrap();
    let client = RegistryClient::new(&app.url(), Some(TOKEN.to_owned())).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let stop = move || -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
        Box::pin(async move {
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        })
    };
    (client, stop)
}

#[tokio::test]
async fn a_critical_instance_leaves_the_watch_while_registered_and_returns_when_it_passes() {
    let (client, stop) = running_registry().await;
    let heartbeat = Duration::from_millis(100);
    let spec = |name: &str, port: u16| RegistrationSpec {
        service: "room".into(),
        instance: name.into(),
        url: format!("http://127.0.0.1:{port}"),
        metadata: Default::default(),
        heartbeat,
        lease: heartbeat * 30,
    };
    // room-1's readiness follows `ready`, as a service's follows its database.
    let ready = Arc::new(AtomicBool::new(true));
    let check: ReadinessCheck = {
        let ready = ready.clone();
        Arc::new(move || {
            let ok = ready.load(Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err("database unreachable".to_owned())
                }
            })
        })
    };
    let room_1 = Registration::with_check(client.clone(), spec("room-1", 4001), check);
    let room_2 = Registration::start(client.clone(), spec("room-2", 4002));
    let watcher = Watcher::start(client.clone(), "room");
    let names =
        |w: &Watcher| -> Vec<String> { w.current().iter().map(|i| i.instance.clone()).collect() };
    within(Duration::from_secs(10), "both instances watched", || {
        names(&watcher) == ["room-1", "room-2"]
    })
    .await;

    ready.store(false, Ordering::SeqCst);
    let left = within(Duration::from_secs(2), "room-1 leaves the watch", || {
        names(&watcher) == ["room-2"]
    })
    .await;
    println!("critical instance left the watch after {left:?}");
    // Still registered, listed as critical with the check's reason, lease renewed.
    let listed = client.instances("room").await.unwrap();
    let one = listed
        .instances
        .iter()
        .find(|i| i.instance == "room-1")
        .unwrap();
    assert_eq!(one.status, HealthStatus::Critical);
    assert_eq!(one.reason.as_deref(), Some("database unreachable"));
    assert!(room_1.is_registered());

    ready.store(true, Ordering::SeqCst);
    let back = within(
        Duration::from_secs(2),
        "room-1 returns to the watch",
        || names(&watcher) == ["room-1", "room-2"],
    )
    .await;
    println!("passing instance returned to the watch after {back:?}");
    let listed = client.instances("room").await.unwrap();
    assert!(
        listed
            .instances
            .iter()
            .all(|i| i.status == HealthStatus::Passing && i.reason.is_none())
    );

    room_1.shutdown().await;
    room_2.shutdown().await;
    drop(watcher);
    stop().await;
}

#[tokio::test]
async fn a_check_that_runs_out_of_time_is_critical_only_the_third_time_in_a_row() {
    let (client, stop) = running_registry().await;
    let heartbeat = Duration::from_millis(200);
    let spec = RegistrationSpec {
        service: "room".into(),
        instance: "room-1".into(),
        url: "http://127.0.0.1:4001".into(),
        metadata: Default::default(),
        heartbeat,
        lease: heartbeat * 30,
    };
    // While `hang` is set the check never answers (a starved process); `calls` counts
    // the checks started.
    let hang = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let check: ReadinessCheck = {
        let (hang, calls) = (hang.clone(), calls.clone());
        Arc::new(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let hangs = hang.load(Ordering::SeqCst);
            Box::pin(async move {
                if hangs {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        })
    };
    let room_1 = Registration::with_check(client.clone(), spec, check);
    let watcher = Watcher::start(client.clone(), "room");
    within(Duration::from_secs(10), "room-1 watched", || {
        watcher.current().len() == 1
    })
    .await;

    hang.store(true, Ordering::SeqCst);
    let first = calls.load(Ordering::SeqCst);
    within(Duration::from_secs(10), "room-1 leaves the watch", || {
        watcher.current().is_empty()
    })
    .await;
    let slow = calls.load(Ordering::SeqCst) - first;
    assert!(slow >= 3, "critical after {slow} slow checks, not 3");
    let listed = client.instances("room").await.unwrap();
    let reason = listed.instances[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("3 times in a row"), "{reason}");

    hang.store(false, Ordering::SeqCst);
    within(Duration::from_secs(10), "room-1 returns", || {
        watcher.current().len() == 1
    })
    .await;
    room_1.shutdown().await;
    drop(watcher);
    stop().await;
}
