
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::sync::atomic::Ordering;
use super::support::{TestApp, field, send, stay};
use uuid::Uuid;

const KEY: &str = "idempotency-key";

/// `POST /bookings` with `body` under the idempotency key `key`.
async fn post_keyed(app: &TestApp, body: &str, key: &str) -> (StatusCode, HeaderMap, Value) {
    app.send("POST", "/bookings", Some(body), &[(KEY, key)])
        .await
}

/// Sends `POST /bookings` with `body` under `key` `n` times at once; the answers in
/// sending order.
async fn post_keyed_at_once(
    app: &TestApp,
    body: &str,
    key: &'static str,
    n: usize,
) -> Vec<(StatusCode, HeaderMap, Value)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (router, body) = (app.router.clone(), body.to_owned());
            tokio::spawn(async move {
                send(&router, "POST", "/bookings", Some(&body), &[(KEY, key)]).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

/// Asserts that `room` holds exactly one booking: however the key was used, it booked once.
async fn assert_booked_once(app: &TestApp, room: Uuid) {
    let (_, _, list) = app
        .send("GET", &format!("/bookings?room_id={room}"), None, &[])
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
}

/// Opens the app's own database, as another replica sharing it would.
async fn database(app: &TestApp) -> sqlx::AnyPool {
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
    hotel_booking::open_database(&super::support::settings(&app.db, any, any))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_repeated_key_replays_the_first_response_and_books_once() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, room) = app.booking_body(4, 2);
    let body = body.to_string();
    let (status, headers, first) = post_keyed(&app, &body, "k-1").await;
    assert_eq!(status, 201, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let first_location = headers["location"].clone();
    let calls = app.peers.calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        let (status, headers, again) = post_keyed(&app, &body, "k-1").await;
        assert_eq!(status, 201);
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(headers["location"], first_location);
        assert_eq!(again, first);
    }
    assert_eq!(
        app.peers.calls.load(Ordering::SeqCst),
        calls,
        "a replay must not redo the work"
    );
    assert_booked_once(&app, room).await;
}

#[tokio::test]
async fn the_same_key_sent_twenty_times_at_once_books_once_even_without_waiting() {
    // No waiting for the first: duplicates that find it in flight are refused at once.
    let Some(app) = TestApp::spawn_with(BACKEND, |s| s.idempotency_wait = std::time::Duration::ZERO).await else {
        return;
    };
    let (body, room) = app.booking_body(6, 3);
    let body = body.to_string();
    let mut created = Vec::new();
    let mut in_flight = 0;
    for (status, headers, b) in post_keyed_at_once(&app, &body, "together", 20).await {
        match status.as_u16() {
            201 => created.push((
                headers.get("idempotent-replayed").is_some(),
                b["id"].clone(),
            )),
            409 => {
                assert_eq!(headers["retry-after"], "1");
                in_flight += 1;
            }
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert_eq!(created.len() + in_flight, 20);
    assert_eq!(
        created.iter().filter(|(replayed, _)| !replayed).count(),
        1,
        "{created:?}"
    );
    let ids: std::collections::HashSet<String> =
        created.iter().map(|(_, id)| id.to_string()).collect();
    assert_eq!(ids.len(), 1, "every 201 names the same booking");
    // After the first finished, a retry of one refused in flight gets the replay.
    let (status, headers, _) = post_keyed(&app, &body, "together").await;
    assert_eq!(status, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_booked_once(&app, room).await;
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_422() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, _) = app.booking_body(4, 2);
    assert_eq!(post_keyed(&app, &body.to_string(), "k").await.0, 201);
    let mut other = body.clone();
    other["guests"] = Value::from(1);
    let (status, _, p) = post_keyed(&app, &other.to_string(), "k").await;
    assert_eq!(status, 422, "{p}");
    assert_eq!(field(&p), "Idempotency-Key");
    // The same body written differently is still the same request.
    let reordered = format!(
        r#"{{ "guests": {}, "check_out": {}, "check_in": {}, "room_id": {}, "customer_id": {} }}"#,
        body["guests"], body["check_out"], body["check_in"], body["room_id"], body["customer_id"]
    );
    let (status, headers, _) = post_keyed(&app, &reordered, "k").await;
    assert_eq!(status, 201);
    assert_eq!(headers["idempotent-replayed"], "true");
}

#[tokio::test]
async fn a_malformed_key_is_a_400_naming_the_header() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, _) = app.booking_body(4, 2);
    let body = body.to_string();
    let long = "k".repeat(256);
    for key in ["", long.as_str(), "tab\tinside"] {
        let (status, _, p) = post_keyed(&app, &body, key).await;
        assert_eq!(status, 400, "{key:?}: {p}");
        assert_eq!(field(&p), "Idempotency-Key");
    }
    let max = "k".repeat(255);
    assert_eq!(post_keyed(&app, &body, &max).await.0, 201);
}

#[tokio::test]
async fn a_client_error_is_stored_and_replayed_like_a_success() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "maintenance");
    let body = stay(customer, room, 3, 1, 1).to_string();
    let (status, _, first) = post_keyed(&app, &body, "m").await;
    assert_eq!(status, 422);
    // Even once the room is back, the key keeps answering what it answered.
    app.peers.set_room_status(room, "available");
    let (status, headers, again) = post_keyed(&app, &body, "m").await;
    assert_eq!(status, 422);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(again, first);
    // A new key books.
    assert_eq!(post_keyed(&app, &body, "m2").await.0, 201);
}

#[tokio::test]
async fn a_server_error_releases_the_key_so_a_retry_books() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, room) = app.booking_body(4, 2);
    let body = body.to_string();
    app.peers.failing.store(true, Ordering::SeqCst);
    let (status, headers, _) = post_keyed(&app, &body, "retry-me").await;
    assert_eq!(status, 503);
    assert!(headers.get("idempotent-replayed").is_none());
    app.peers.failing.store(false, Ordering::SeqCst);
    let (status, headers, _) = post_keyed(&app, &body, "retry-me").await;
    assert_eq!(status, 201);
    assert!(
        headers.get("idempotent-replayed").is_none(),
        "the retry ran, it was not a replay"
    );
    assert_booked_once(&app, room).await;
}

#[tokio::test]
async fn a_key_past_its_retention_is_forgotten_and_purged() {
    let retention = std::time::Duration::from_millis(300);
    let Some(app) = TestApp::spawn_with(BACKEND, |s| s.idempotency_retention = retention).await else {
        return;
    };
    let (body, _) = app.booking_body(4, 2);
    assert_eq!(post_keyed(&app, &body.to_string(), "old").await.0, 201);
    let mut other = body.clone();
    other["check_in"] = Value::from(super::support::day(20));
    other["check_out"] = Value::from(super::support::day(21));
    // Within the retention the key is bound to its first body.
    assert_eq!(post_keyed(&app, &other.to_string(), "old").await.0, 422);
    // Waiting is the point here: the key must age past its retention.
    tokio::time::sleep(retention * 2).await;
    let (status, headers, _) = post_keyed(&app, &other.to_string(), "old").await;
    assert_eq!(status, 201);
    assert!(headers.get("idempotent-replayed").is_none());

    let pool = database(&app).await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(count().await, 1);
    let future = hotel_booking::idempotency::now_ms() + 1;
    assert_eq!(
        hotel_booking::idempotency::purge(&pool, future)
            .await
            .unwrap(),
        1
    );
    assert_eq!(count().await, 0);
}

/// Puts an in-flight reservation of `key` for `body` into the app's database, as a
/// replica that is still working (or died) would have left it.
async fn plant_reservation(app: &TestApp, key: &str, body: &Value, owner: &str, age_ms: i64) {
    let pool = database(app).await;
    let req: hotel_booking::model::NewBooking = serde_json::from_value(body.clone()).unwrap();
    let now = hotel_booking::idempotency::now_ms();
    sqlx::query(
        "INSERT INTO idempotency_keys (key, request_hash, state, created_at, locked_at, owner) \
         VALUES ($1, $2, 'in_flight', $3, $4, $5)",
    )
    .bind(key)
    .bind(hotel_booking::idempotency::request_hash(&req))
    .bind(now - age_ms)
    .bind(now - age_ms)
    .bind(owner)
    .execute(&pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_reservation_whose_process_died_is_taken_over_at_once() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, room) = app.booking_body(4, 2);
    let host = hotel_booking::idempotency::new_owner()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    plant_reservation(&app, "orphan", &body, &format!("{host}/{dead_pid}/x"), 0).await;
    let (status, headers, b) = post_keyed(&app, &body.to_string(), "orphan").await;
    assert_eq!(status, 201, "{b}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_booked_once(&app, room).await;
}

#[tokio::test]
async fn a_live_owners_reservation_is_honoured_until_its_lease_runs_out() {
    let Some(app) = TestApp::spawn_with(BACKEND, |s| s.idempotency_wait = std::time::Duration::from_millis(200)).await else {
        return;
    };
    let (body, _) = app.booking_body(4, 2);
    let live = hotel_booking::idempotency::new_owner();
    plant_reservation(&app, "busy", &body, &live, 0).await;
    let (status, headers, p) = post_keyed(&app, &body.to_string(), "busy").await;
    assert_eq!(status, 409, "{p}");
    assert_eq!(headers["retry-after"], "1");
    // A reservation not renewed for longer than the lease belongs to a frozen owner.
    let stale = hotel_booking::idempotency::IN_FLIGHT_LEASE_MS + 1_000;
    let (body, _) = app.booking_body(8, 2);
    plant_reservation(&app, "frozen", &body, &live, stale).await;
    let (status, _, b) = post_keyed(&app, &body.to_string(), "frozen").await;
    assert_eq!(status, 201, "{b}");
}

#[tokio::test]
async fn a_request_slower_than_the_lease_keeps_its_key_by_renewing_it() {
    let Some(app) = TestApp::spawn_with(BACKEND, |s| {
        s.peer_timeout = std::time::Duration::from_secs(30);
        s.idempotency_wait = std::time::Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let (body, room) = app.booking_body(4, 2);
    let body = body.to_string();
    let lease =
        std::time::Duration::from_millis(hotel_booking::idempotency::IN_FLIGHT_LEASE_MS as u64);
    app.peers
        .customer_delay_ms
        .store(lease.as_millis() as u64 + 1_500, Ordering::SeqCst);
    let slow = {
        let (router, body) = (app.router.clone(), body.clone());
        tokio::spawn(async move {
            send(&router, "POST", "/bookings", Some(&body), &[(KEY, "slow")]).await
        })
    };
    // Waiting is the point: the first request must outlive its lease.
    tokio::time::sleep(lease + std::time::Duration::from_millis(500)).await;
    app.peers.customer_delay_ms.store(0, Ordering::SeqCst);
    let (status, _, p) = post_keyed(&app, &body, "slow").await;
    assert_eq!(status, 409, "the renewed reservation must still hold: {p}");
    let (status, headers, first) = slow.await.unwrap();
    assert_eq!(status, 201, "{first}");
    assert!(headers.get("idempotent-replayed").is_none());
    let (status, headers, again) = post_keyed(&app, &body, "slow").await;
    assert_eq!((status.as_u16(), again), (201, first));
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_booked_once(&app, room).await;
}

#[tokio::test]
async fn twenty_duplicates_sent_at_once_all_get_the_first_answer_by_waiting_for_it() {
    // A generous wait so that a loaded machine still lets the first finish in time.
    let Some(app) = TestApp::spawn_with(BACKEND, |s| s.idempotency_wait = std::time::Duration::from_secs(20)).await else {
        return;
    };
    app.peers.customer_delay_ms.store(300, Ordering::SeqCst);
    let (body, room) = app.booking_body(6, 3);
    let body = body.to_string();
    let mut fresh = 0;
    let mut bodies = std::collections::HashSet::new();
    for (status, headers, b) in post_keyed_at_once(&app, &body, "hedged", 20).await {
        assert_eq!(status, 201, "{b}");
        if headers.get("idempotent-replayed").is_none() {
            fresh += 1;
        }
        bodies.insert(b.to_string());
    }
    assert_eq!(fresh, 1, "one request ran, nineteen replayed it");
    assert_eq!(bodies.len(), 1, "every answer is the same booking");
    assert_booked_once(&app, room).await;
}
