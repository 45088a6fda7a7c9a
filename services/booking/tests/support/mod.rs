//! Shared test harness: a booking app on a temp database, with small in-memory fakes of
//! the customer and room HTTP APIs that a test can fill, break and count.

#![allow(clippy::unwrap_used, dead_code)]

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, Request, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use hotel_booking::{Application, Settings};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};
use tower::ServiceExt;
use uuid::Uuid;

/// Rooms per page the fake room service answers, whatever `limit` says: small, so that
/// booking has to walk several pages.
pub const FAKE_ROOM_PAGE: usize = 2;

/// The fake customer and room services' data and switches.
#[derive(Default)]
pub struct Peers {
    customers: Mutex<HashMap<Uuid, Value>>,
    rooms: Mutex<Vec<Value>>,
    /// While set, every call answers 503.
    pub failing: AtomicBool,
    /// Calls received, for checking that work was (not) repeated.
    pub calls: AtomicUsize,
    /// Milliseconds every customer lookup waits before answering.
    pub customer_delay_ms: AtomicU64,
}

impl Peers {
    /// Adds a customer and returns its id.
    pub fn add_customer(&self) -> Uuid {
        let id = Uuid::new_v4();
        let body = json!({"id": id, "name": "Ada", "email": format!("{id}@example.com"), "created_at": "2026-01-01T00:00:00.000000Z"});
        self.customers.lock().unwrap().insert(id, body);
        id
    }

    /// Adds a room and returns its id.
    pub fn add_room(&self, capacity: i64, nightly_rate_cents: i64, status: &str) -> Uuid {
        let id = Uuid::new_v4();
        let mut rooms = self.rooms.lock().unwrap();
        let number = format!("{}", 100 + rooms.len());
        rooms.push(json!({
            "id": id, "number": number, "kind": "double", "capacity": capacity,
            "nightly_rate_cents": nightly_rate_cents, "status": status,
            "created_at": "2026-01-01T00:00:00.000000Z",
        }));
        id
    }

    /// Changes a room's status.
    pub fn set_room_status(&self, id: Uuid, status: &str) {
        let mut rooms = self.rooms.lock().unwrap();
        for r in rooms.iter_mut() {
            if r["id"] == json!(id) {
                r["status"] = json!(status);
            }
        }
    }
}

fn fake_router(peers: Arc<Peers>) -> Router {
    async fn customer(State(p): State<Arc<Peers>>, Path(id): Path<String>) -> Response {
        p.calls.fetch_add(1, Ordering::SeqCst);
        let delay = p.customer_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        if p.failing.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let found = Uuid::parse_str(&id)
            .ok()
            .and_then(|id| p.customers.lock().unwrap().get(&id).cloned());
        match found {
            Some(c) => axum::Json(c).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    async fn room(State(p): State<Arc<Peers>>, Path(id): Path<String>) -> Response {
        p.calls.fetch_add(1, Ordering::SeqCst);
        if p.failing.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let found = p
            .rooms
            .lock()
            .unwrap()
            .iter()
            .find(|r| r["id"] == json!(id))
            .cloned();
        match found {
            Some(r) => axum::Json(r).into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
    async fn rooms(
        State(p): State<Arc<Peers>>,
        Query(q): Query<HashMap<String, String>>,
    ) -> Response {
        p.calls.fetch_add(1, Ordering::SeqCst);
        if p.failing.load(Ordering::SeqCst) {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        let min: i64 = q
            .get("min_capacity")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let start: usize = q.get("cursor").and_then(|v| v.parse().ok()).unwrap_or(0);
        let matching: Vec<Value> = p
            .rooms
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r["capacity"].as_i64().unwrap() >= min)
            .filter(|r| q.get("status").is_none_or(|s| r["status"] == json!(s)))
            .cloned()
            .collect();
        let end = (start + FAKE_ROOM_PAGE).min(matching.len());
        let next = (end < matching.len()).then(|| end.to_string());
        axum::Json(json!({"items": matching[start.min(end)..end], "next_cursor": next}))
            .into_response()
    }
    Router::new()
        .route("/customers/{id}", get(customer))
        .route("/rooms/{id}", get(room))
        .route("/rooms", get(rooms))
        .with_state(peers)
}

/// Serves the fakes on a free loopback port.
pub async fn spawn_peers() -> (Arc<Peers>, SocketAddr) {
    let peers = Arc::new(Peers::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = fake_router(peers.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (peers, addr)
}

#[allow(unused_imports)] // each test file uses some
pub use hotel_testkit::{
    TempDir,
    postgres::{Backend, TestDb},
};

/// A booking app on a fresh database, pointed at fresh fakes.
pub struct TestApp {
    /// The app's router (not served; called with `oneshot`).
    pub router: Router,
    /// The fakes it calls.
    pub peers: Arc<Peers>,
    /// Its database (data directory, and its PostgreSQL database on that backend).
    pub db: Arc<TestDb>,
}

/// Settings for a test app on `db` calling `customer` and `room`.
pub fn settings(db: &TestDb, customer: SocketAddr, room: SocketAddr) -> Settings {
    Settings {
        data_dir: db.dir.to_path_buf(),
        customer_url: Some(format!("http://{customer}")),
        room_url: Some(format!("http://{room}")),
        database: hotel_common::db::DatabaseSettings {
            url: db.url(),
            ..Default::default()
        },
        ..Settings::default()
    }
}

impl TestApp {
    /// A new app with its own database on `backend` and fakes; `None` when that backend
    /// is not available here (the test is skipped, saying so).
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    /// A new app whose settings `tweak` adjusts.
    pub async fn spawn_with(
        backend: Backend,
        tweak: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        let db = Arc::new(TestDb::new(backend, "booking").await?);
        let (peers, addr) = spawn_peers().await;
        let mut s = settings(&db, addr, addr);
        tweak(&mut s);
        let app = Application::build(s).await.unwrap();
        Some(TestApp {
            router: app.router(),
            peers,
            db,
        })
    }

    /// Sends a request; returns status, headers and the JSON body (`Null` when empty).
    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        send(&self.router, method, uri, body, headers).await
    }

    /// `POST /bookings` with a JSON body.
    pub async fn book(&self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        self.send("POST", "/bookings", Some(&body.to_string()), &[])
            .await
    }

    /// A customer, a room (capacity 2, 100.00 a night) and a booking body for `nights`
    /// starting `from` days from today.
    pub fn booking_body(&self, from: i64, nights: i64) -> (Value, Uuid) {
        let customer = self.peers.add_customer();
        let room = self.peers.add_room(2, 10_000, "available");
        (stay(customer, room, from, nights, 2), room)
    }
}

/// A booking body.
pub fn stay(customer: Uuid, room: Uuid, from: i64, nights: i64, guests: i64) -> Value {
    json!({
        "customer_id": customer, "room_id": room,
        "check_in": day(from), "check_out": day(from + nights), "guests": guests,
    })
}

/// The date `n` days from today (UTC), as `YYYY-MM-DD`.
pub fn day(n: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(n);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Sends one request through `router`.
pub async fn send(
    router: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if body.is_some()
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req = req.header("content-type", "application/json");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Body::from(body.unwrap_or("").to_owned())).unwrap();
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, headers, json)
}

/// The field named first in a problem document.
pub fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or("<none>")
}
