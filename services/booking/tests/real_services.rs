//! Booking against the real customer and room services (in-process, on loopback port 0),
//! so the contract between them is tested, not only booking's idea of it.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use std::{collections::HashSet, net::SocketAddr};
use support::{TempDir, TestDb, day, field, send};

struct Real {
    customer: String,
    room: String,
    booking: axum::Router,
    http: reqwest::Client,
    _dir: TestDb,
}

async fn start() -> Real {
    let dir = TestDb::from(TempDir::new("booking-real"));
    let customer = hotel_customer::Application::build(hotel_customer::Settings {
        data_dir: dir.dir.to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap();
    let room = hotel_room::Application::build(hotel_room::Settings {
        data_dir: dir.dir.to_path_buf(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (c, r): (SocketAddr, SocketAddr) = (customer.local_addr(), room.local_addr());
    tokio::spawn(customer.run_until(std::future::pending()));
    tokio::spawn(room.run_until(std::future::pending()));
    let booking = hotel_booking::Application::build(support::settings(&dir, c, r))
        .await
        .unwrap();
    Real {
        customer: format!("http://{c}"),
        room: format!("http://{r}"),
        booking: booking.router(),
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Real {
    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn new_customer(&self, name: &str) -> String {
        let body = json!({"name": name, "email": format!("{name}@example.com")});
        let (status, c) = self
            .call(
                reqwest::Method::POST,
                format!("{}/customers", self.customer),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        c["id"].as_str().unwrap().to_owned()
    }

    async fn new_room(&self, number: &str, capacity: i64) -> String {
        let body = json!({"number": number, "kind": "double", "capacity": capacity, "nightly_rate_cents": 12_900});
        let (status, r) = self
            .call(
                reqwest::Method::POST,
                format!("{}/rooms", self.room),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{r}");
        r["id"].as_str().unwrap().to_owned()
    }

    async fn book(
        &self,
        customer: &str,
        room: &str,
        from: i64,
        nights: i64,
        guests: i64,
    ) -> (u16, Value) {
        let body = json!({
            "customer_id": customer, "room_id": room,
            "check_in": day(from), "check_out": day(from + nights), "guests": guests,
        });
        let (status, _, b) = send(
            &self.booking,
            "POST",
            "/bookings",
            Some(&body.to_string()),
            &[],
        )
        .await;
        (status.as_u16(), b)
    }
}

#[tokio::test]
async fn books_against_the_real_services_and_honours_room_status_and_capacity() {
    let real = start().await;
    let ada = real.new_customer("ada").await;
    let room = real.new_room("101", 2).await;
    let (status, b) = real.book(&ada, &room, 2, 3, 2).await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["total_cents"], 3 * 12_900);
    let (status, p) = real.book(&ada, &room, 3, 1, 1).await;
    assert_eq!(status, 409, "{p}");
    let (status, p) = real.book(&ada, &room, 10, 1, 3).await;
    assert_eq!((status, field(&p)), (422, "guests"), "{p}");
    let (status, p) = real
        .book(&uuid::Uuid::new_v4().to_string(), &room, 10, 1, 1)
        .await;
    assert_eq!((status, field(&p)), (422, "customer_id"), "{p}");

    let (status, r) = real
        .call(
            reqwest::Method::PATCH,
            format!("{}/rooms/{room}", real.room),
            Some(json!({"status": "maintenance"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (status, p) = real.book(&ada, &room, 10, 1, 1).await;
    assert_eq!((status, field(&p)), (422, "room_id"), "{p}");
    let (status, _) = real
        .call(
            reqwest::Method::DELETE,
            format!("{}/rooms/{room}", real.room),
            None,
        )
        .await;
    assert!(status == 200 || status == 204);
    let (status, p) = real.book(&ada, &room, 10, 1, 1).await;
    assert_eq!((status, field(&p)), (422, "room_id"), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("retired"), "{p}");
}

#[tokio::test]
async fn availability_walks_every_page_of_the_real_room_service() {
    let real = start().await;
    let ada = real.new_customer("ada").await;
    // More rooms than one page of the room service holds (limit is at most 100).
    let mut rooms = Vec::new();
    for i in 0..103 {
        rooms.push(
            real.new_room(&format!("R{i}"), if i % 10 == 0 { 1 } else { 3 })
                .await,
        );
    }
    let (status, b) = real.book(&ada, &rooms[1], 5, 2, 2).await;
    assert_eq!(status, 201, "{b}");
    let (status, r) = real
        .call(
            reqwest::Method::PATCH,
            format!("{}/rooms/{}", real.room, rooms[2]),
            Some(json!({"status": "maintenance"})),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let uri = format!(
        "/availability?check_in={}&check_out={}&guests=2",
        day(5),
        day(7)
    );
    let (status, _, body) = send(&real.booking, "GET", &uri, None, &[]).await;
    assert_eq!(status, 200, "{body}");
    let got: HashSet<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let want: HashSet<&str> = rooms
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 10 != 0 && *i != 1 && *i != 2)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}
