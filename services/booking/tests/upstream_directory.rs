//! Booking calling customer and room through the resilient upstream client
//! ([`UpstreamDirectory`]): a dead instance costs nothing, no live instance is a fast 503.

#![allow(clippy::unwrap_used)]

mod support;

use hotel_booking::{Application, UpstreamDirectory};
use hotel_upstream::Discovery;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use support::{TempDir, TestDb, day, send, spawn_peers, stay};

/// An address nothing listens on.
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn urls(addrs: &[SocketAddr]) -> Discovery {
    Discovery::Static(addrs.iter().map(|a| format!("http://{a}")).collect())
}

#[tokio::test]
async fn books_through_the_resilient_client_while_one_of_two_instances_is_dead() {
    let (peers, up) = spawn_peers().await;
    let dead = dead_addr();
    let directory =
        UpstreamDirectory::new(urls(&[dead, up]), urls(&[up, dead]), Duration::from_secs(2))
            .unwrap();
    let dir = TestDb::from(TempDir::new("booking-upstream"));
    let app =
        Application::build_with_directory(support::settings(&dir, dead, dead), Arc::new(directory))
            .await
            .unwrap();
    let router = app.router();
    let customer = peers.add_customer();
    for i in 0..12 {
        let room = peers.add_room(2, 5_000, "available");
        let body = stay(customer, room, 1 + i, 2, 2).to_string();
        let (status, _, b) = send(&router, "POST", "/bookings", Some(&body), &[]).await;
        assert_eq!(status, 201, "booking {i}: {b}");
    }
    let (status, _, p) = send(
        &router,
        "POST",
        "/bookings",
        Some(
            &stay(
                uuid::Uuid::new_v4(),
                peers.add_room(2, 1, "available"),
                1,
                1,
                1,
            )
            .to_string(),
        ),
        &[],
    )
    .await;
    assert_eq!(
        (status.as_u16(), support::field(&p)),
        (422, "customer_id"),
        "{p}"
    );
    let uri = format!(
        "/availability?check_in={}&check_out={}&guests=2",
        day(40),
        day(41)
    );
    let (status, _, body) = send(&router, "GET", &uri, None, &[]).await;
    assert_eq!(status, 200, "{body}");
    // 12 rooms of the loop and one more, over several pages of the fake room service.
    assert_eq!(body["items"].as_array().unwrap().len(), 13, "{body}");
}

#[tokio::test]
async fn no_live_instance_answers_503_with_retry_after_within_the_deadline() {
    let dead = dead_addr();
    let deadline = Duration::from_secs(1);
    let directory = UpstreamDirectory::new(urls(&[dead]), urls(&[dead]), deadline).unwrap();
    let dir = TestDb::from(TempDir::new("booking-upstream"));
    let app =
        Application::build_with_directory(support::settings(&dir, dead, dead), Arc::new(directory))
            .await
            .unwrap();
    let body = stay(uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), 1, 1, 1).to_string();
    let started = Instant::now();
    let (status, headers, p) = send(&app.router(), "POST", "/bookings", Some(&body), &[]).await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        started.elapsed() < deadline * 3,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn settings_choose_discovery_only_when_no_static_url_is_given() {
    let dir = TestDb::from(TempDir::new("booking-upstream"));
    let mut settings = hotel_booking::Settings {
        data_dir: dir.dir.to_path_buf(),
        ..Default::default()
    };
    settings.registry.url = Some("http://127.0.0.1:1".into());
    assert!(hotel_booking::directory_from(&settings).is_ok());
    settings.customer_url = Some("http://127.0.0.1:2".into());
    let err = hotel_booking::directory_from(&settings)
        .err()
        .expect("room_url missing");
    assert!(err.to_string().contains("room_url"), "{err}");
}
