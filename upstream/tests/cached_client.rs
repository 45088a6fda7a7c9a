//! [`CachedClient`] against a real loopback server that answers like the room and customer
//! services (strong ETag, `If-None-Match` -> 304, rooms `public, max-age=N,
//! stale-if-error=300`, customers `private, no-store`), counting what reaches it.

#![allow(clippy::unwrap_used)]

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing,
};
use bytes::Bytes;
use hotel_upstream::{
    CachedClient, Discovery, PolicySettings, UpstreamClient,
    cache::{Outcome, PeerCache, PeerCacheMetrics},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// What the server saw: full answers (200) and 304s, per resource.
#[derive(Default)]
struct Seen {
    full: AtomicU64,
    not_modified: AtomicU64,
    customers: AtomicU64,
    /// The room's `max-age` in seconds.
    max_age: AtomicU64,
}

async fn room(State(seen): State<Arc<Seen>>, headers: HeaderMap) -> Response {
    // A little latency, so concurrent misses overlap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let etag = "\"r-1\"";
    let cc = format!(
        "public, max-age={}, stale-if-error=300",
        seen.max_age.load(Ordering::Relaxed)
    );
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, etag.parse().unwrap());
    h.insert(header::CACHE_CONTROL, cc.parse().unwrap());
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v == etag)
    {
        seen.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    seen.full.fetch_add(1, Ordering::Relaxed);
    (h, axum::Json(serde_json::json!({"id": "r", "capacity": 2}))).into_response()
}

async fn customer(State(seen): State<Arc<Seen>>) -> Response {
    seen.customers.fetch_add(1, Ordering::Relaxed);
    (
        [(header::CACHE_CONTROL, "private, no-store")],
        axum::Json(serde_json::json!({"id": "c"})),
    )
        .into_response()
}

/// Serves until the returned handle is aborted.
async fn server(seen: Arc<Seen>) -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/rooms/r", routing::get(room))
        .route("/customers/c", routing::get(customer))
        .with_state(seen);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (format!("http://{addr}"), task)
}

fn client(service: &'static str, url: &str, cache: Option<Arc<PeerCache>>) -> CachedClient {
    let policy = PolicySettings::builtin()
        .overlaid(&PolicySettings {
            deadline: Some(Duration::from_secs(2)),
            per_try_timeout: Some(Duration::from_secs(1)),
            ..PolicySettings::default()
        })
        .validate("test")
        .unwrap();
    let c = UpstreamClient::new(service, Discovery::Static(vec![url.to_owned()]), &policy).unwrap();
    CachedClient::new(service, c, cache)
}

async fn get(c: &CachedClient, path: &str) -> (StatusCode, Bytes, Outcome) {
    let req = http::Request::get(path).body(Bytes::new()).unwrap();
    let (res, outcome) = c.send(req).await.unwrap();
    (res.status(), res.into_body(), outcome)
}

#[tokio::test]
async fn a_fresh_room_is_a_hit_concurrent_misses_send_one_request_and_customers_are_never_kept() {
    let seen = Arc::new(Seen::default());
    seen.max_age.store(60, Ordering::Relaxed);
    let (url, _server) = server(seen.clone()).await;
    let metrics = Arc::new(PeerCacheMetrics::default());
    let cache = PeerCache::new(1 << 20, metrics.clone());
    let rooms = client("room", &url, cache.clone());
    let customers = client("customer", &url, cache);

    let reads: Vec<_> = (0..20)
        .map(|_| {
            let rooms = rooms.clone();
            tokio::spawn(async move { get(&rooms, "/rooms/r").await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for r in reads {
        let (status, body, outcome) = r.await.unwrap();
        assert_eq!(status, 200);
        assert!(!body.is_empty());
        outcomes.push(outcome);
    }
    assert_eq!(seen.full.load(Ordering::Relaxed), 1, "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Miss).count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(get(&rooms, "/rooms/r").await.2, Outcome::Hit);

    for _ in 0..3 {
        let (status, _, outcome) = get(&customers, "/customers/c").await;
        assert_eq!((status, outcome), (StatusCode::OK, Outcome::Miss));
    }
    assert_eq!(seen.customers.load(Ordering::Relaxed), 3);
    assert!(metrics.bytes.get() > 0);
}

#[tokio::test]
async fn a_stale_room_is_revalidated_with_its_etag_and_served_stale_when_the_peer_is_gone() {
    let seen = Arc::new(Seen::default());
    let (url, server) = server(seen.clone()).await;
    let rooms = client(
        "room",
        &url,
        PeerCache::new(1 << 20, Arc::new(PeerCacheMetrics::default())),
    );

    let (_, first, outcome) = get(&rooms, "/rooms/r").await;
    assert_eq!(outcome, Outcome::Miss);
    let (status, body, outcome) = get(&rooms, "/rooms/r").await;
    assert_eq!(
        (status, outcome),
        (StatusCode::OK, Outcome::Revalidated),
        "max-age=0: stale at once, confirmed by a 304"
    );
    assert_eq!(body, first, "the stored body, not the 304's empty one");
    assert_eq!(seen.full.load(Ordering::Relaxed), 1);
    assert_eq!(seen.not_modified.load(Ordering::Relaxed), 1);

    server.abort();
    let _ = server.await;
    let (status, body, outcome) = get(&rooms, "/rooms/r").await;
    assert_eq!((status, outcome), (StatusCode::OK, Outcome::Stale));
    assert_eq!(body, first);
    let never_read = rooms
        .send(
            http::Request::get("/rooms/other")
                .body(Bytes::new())
                .unwrap(),
        )
        .await;
    assert!(never_read.is_err(), "nothing stored to stand in");
}
