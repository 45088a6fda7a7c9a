
use hotel_booking::{Application, Settings};
use serde_json::{Value, json};
use std::{collections::HashSet, sync::atomic::Ordering};
use super::support::{TempDir, TestDb, TestApp, day, field, send, spawn_peers, stay};
use uuid::Uuid;

#[tokio::test]
async fn books_a_room_and_reads_the_booking_back() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, room) = app.booking_body(3, 4);
    let (status, headers, booking) = app.book(&body).await;
    assert_eq!(status, 201, "{booking}");
    assert_eq!(booking["status"], "confirmed");
    assert_eq!(booking["total_cents"], 4 * 10_000);
    assert_eq!(booking["room_id"], json!(room));
    assert_eq!(booking["check_in"], day(3));
    assert_eq!(booking["check_out"], day(7));
    assert_eq!(booking["guests"], 2);
    assert!(booking["created_at"].as_str().unwrap().ends_with('Z'));
    let id = booking["id"].as_str().unwrap();
    assert_eq!(headers["location"], format!("/bookings/{id}").as_str());
    let (status, _, read) = app.send("GET", &format!("/bookings/{id}"), None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(read, booking);
}

#[tokio::test]
async fn location_carries_the_prefix_a_proxy_strips_and_ignores_a_strange_one() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, _) = app.booking_body(3, 1);
    let (status, headers, b) = app
        .send(
            "POST",
            "/bookings",
            Some(&body.to_string()),
            &[("x-forwarded-prefix", "/api/")],
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        headers["location"],
        format!("/api/bookings/{}", b["id"].as_str().unwrap()).as_str()
    );
    let (body, _) = app.booking_body(3, 1);
    let (_, headers, b) = app
        .send(
            "POST",
            "/bookings",
            Some(&body.to_string()),
            &[("x-forwarded-prefix", "https://evil/x")],
        )
        .await;
    assert_eq!(
        headers["location"],
        format!("/bookings/{}", b["id"].as_str().unwrap()).as_str()
    );
}

#[tokio::test]
async fn malformed_json_is_a_400_and_a_body_over_64_kib_is_a_413() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (status, headers, p) = app
        .send("POST", "/bookings", Some(r#"{"guests": "#), &[])
        .await;
    assert_eq!(status, 400, "{p}");
    assert_eq!(headers["content-type"], "application/problem+json");
    let big = format!(r#"{{"pad": "{}"}}"#, "x".repeat(70 * 1024));
    let (status, _, p) = app.send("POST", "/bookings", Some(&big), &[]).await;
    assert_eq!(status, 413, "{p}");
}

#[tokio::test]
async fn wrong_types_unknown_and_missing_fields_are_422_naming_the_field() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (good, _) = app.booking_body(1, 1);
    let cases: Vec<(Value, &str)> = vec![
        (
            {
                let mut b = good.clone();
                b["guests"] = json!("two");
                b
            },
            "guests",
        ),
        (
            {
                let mut b = good.clone();
                b["guests"] = json!(1.5);
                b
            },
            "guests",
        ),
        (
            {
                let mut b = good.clone();
                b["customer_id"] = json!("not-a-uuid");
                b
            },
            "customer_id",
        ),
        (
            {
                let mut b = good.clone();
                b["room_id"] = json!(42);
                b
            },
            "room_id",
        ),
        (
            {
                let mut b = good.clone();
                b["check_in"] = json!(20300101);
                b
            },
            "check_in",
        ),
        (
            {
                let mut b = good.clone();
                b["colour"] = json!("red");
                b
            },
            "colour",
        ),
        (
            {
                let mut b = good.clone();
                b.as_object_mut().unwrap().remove("room_id");
                b
            },
            "room_id",
        ),
    ];
    for (body, name) in cases {
        let (status, _, p) = app.book(&body).await;
        assert_eq!(status, 422, "{body} -> {p}");
        assert_eq!(field(&p), name, "{body} -> {p}");
    }
}

#[tokio::test]
async fn bad_dates_are_422_naming_the_field() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (good, _) = app.booking_body(1, 1);
    for (name, value) in [
        ("check_in", "2030-02-30"),
        ("check_in", "tomorrow"),
        ("check_out", "2030-13-01"),
        ("check_out", "01/02/2030"),
        ("check_in", ""),
    ] {
        let mut body = good.clone();
        body[name] = json!(value);
        let (status, _, p) = app.book(&body).await;
        assert_eq!(status, 422, "{name}={value}: {p}");
        assert_eq!(field(&p), name, "{name}={value}: {p}");
    }
}

#[tokio::test]
async fn zero_guests_eleven_guests_and_more_than_the_room_holds_are_refused() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let small = app.peers.add_room(2, 5_000, "available");
    for guests in [0, 11, -1] {
        let (status, _, p) = app.book(&stay(customer, small, 1, 1, guests)).await;
        assert_eq!(
            (status.as_u16(), field(&p)),
            (422, "guests"),
            "{guests}: {p}"
        );
    }
    let (status, _, p) = app.book(&stay(customer, small, 1, 1, 3)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "guests"), "{p}");
    assert!(p["detail"].as_str().unwrap().contains("at most 2"), "{p}");
}

#[tokio::test]
async fn zero_nights_thirty_one_nights_and_a_past_check_in_are_refused() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    let (status, _, p) = app.book(&stay(customer, room, 2, 0, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_out"), "{p}");
    let (status, _, p) = app.book(&stay(customer, room, 2, 31, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_out"), "{p}");
    let (status, _, p) = app.book(&stay(customer, room, 2, -1, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_out"), "{p}");
    let (status, _, p) = app.book(&stay(customer, room, -1, 2, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_in"), "{p}");
    // Thirty nights starting today are fine.
    let (status, _, b) = app.book(&stay(customer, room, 0, 30, 1)).await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["total_cents"], 30 * 5_000);
}

#[tokio::test]
async fn an_unknown_customer_or_room_is_a_422_naming_it() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    let (status, _, p) = app.book(&stay(Uuid::new_v4(), room, 1, 1, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "customer_id"), "{p}");
    let (status, _, p) = app.book(&stay(customer, Uuid::new_v4(), 1, 1, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "room_id"), "{p}");
}

#[tokio::test]
async fn a_room_under_maintenance_or_retired_cannot_be_booked() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    for status_name in ["maintenance", "retired"] {
        let room = app.peers.add_room(2, 5_000, status_name);
        let (status, _, p) = app.book(&stay(customer, room, 1, 1, 1)).await;
        assert_eq!((status.as_u16(), field(&p)), (422, "room_id"), "{p}");
        assert!(
            p["detail"]
                .as_str()
                .unwrap()
                .contains(if status_name == "retired" {
                    "retired"
                } else {
                    "maintenance"
                })
        );
    }
}

#[tokio::test]
async fn overlapping_nights_are_a_409_naming_the_booked_dates() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    let (status, _, _) = app.book(&stay(customer, room, 10, 5, 1)).await;
    assert_eq!(status, 201);
    // Inside, around, overlapping the start and overlapping the end.
    for (from, nights) in [(11, 1), (8, 10), (8, 3), (14, 4)] {
        let (status, headers, p) = app.book(&stay(customer, room, from, nights, 1)).await;
        assert_eq!(status, 409, "{from}+{nights}: {p}");
        assert_eq!(headers["content-type"], "application/problem+json");
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains(&day(10)) && detail.contains(&day(15)),
            "{detail}"
        );
    }
    // Another room on the same nights is fine.
    let other = app.peers.add_room(2, 5_000, "available");
    assert_eq!(app.book(&stay(customer, other, 10, 5, 1)).await.0, 201);
}

#[tokio::test]
async fn adjacent_stays_share_a_changeover_day() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    assert_eq!(app.book(&stay(customer, room, 10, 5, 1)).await.0, 201);
    // Leaves the day the first arrives; arrives the day the first leaves.
    assert_eq!(app.book(&stay(customer, room, 7, 3, 1)).await.0, 201);
    assert_eq!(app.book(&stay(customer, room, 15, 2, 1)).await.0, 201);
}

#[tokio::test]
async fn cancelling_frees_the_nights_and_cancelling_twice_changes_nothing() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, _) = app.booking_body(5, 2);
    let (_, _, booking) = app.book(&body).await;
    let id = booking["id"].as_str().unwrap();
    let (status, _, cancelled) = app
        .send("POST", &format!("/bookings/{id}/cancel"), None, &[])
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    let (status, _, again) = app
        .send("POST", &format!("/bookings/{id}/cancel"), None, &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(again, cancelled);
    let (status, _, rebooked) = app.book(&body).await;
    assert_eq!(status, 201, "{rebooked}");
    let (_, _, read) = app.send("GET", &format!("/bookings/{id}"), None, &[]).await;
    assert_eq!(read["status"], "cancelled");
}

#[tokio::test]
async fn unknown_ids_are_404_and_non_uuid_ids_are_400() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let id = Uuid::new_v4();
    for (method, uri) in [
        ("GET", format!("/bookings/{id}")),
        ("POST", format!("/bookings/{id}/cancel")),
    ] {
        let (status, _, p) = app.send(method, &uri, None, &[]).await;
        assert_eq!(status, 404, "{uri}: {p}");
    }
    for (method, uri) in [("GET", "/bookings/nope"), ("POST", "/bookings/nope/cancel")] {
        let (status, headers, p) = app.send(method, uri, None, &[]).await;
        assert_eq!(status, 400, "{uri}: {p}");
        assert_eq!(headers["content-type"], "application/problem+json");
    }
}

#[tokio::test]
async fn listing_needs_a_customer_or_a_room_and_checks_its_parameters() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (status, _, p) = app.send("GET", "/bookings", None, &[]).await;
    assert_eq!((status.as_u16(), field(&p)), (400, "customer_id"), "{p}");
    let (status, _, p) = app
        .send("GET", "/bookings?customer_id=nope", None, &[])
        .await;
    assert_eq!((status.as_u16(), field(&p)), (400, "customer_id"), "{p}");
    let c = Uuid::new_v4();
    for limit in ["0", "101"] {
        let (status, _, p) = app
            .send(
                "GET",
                &format!("/bookings?customer_id={c}&limit={limit}"),
                None,
                &[],
            )
            .await;
        assert_eq!((status.as_u16(), field(&p)), (422, "limit"), "{p}");
    }
    let (status, _, p) = app
        .send(
            "GET",
            &format!("/bookings?customer_id={c}&cursor=zz"),
            None,
            &[],
        )
        .await;
    assert_eq!((status.as_u16(), field(&p)), (400, "cursor"), "{p}");
    let (status, _, p) = app
        .send(
            "GET",
            &format!("/bookings?customer_id={c}&sort=asc"),
            None,
            &[],
        )
        .await;
    assert_eq!((status.as_u16(), field(&p)), (400, "sort"), "{p}");
}

#[tokio::test]
async fn pages_of_a_customers_bookings_list_each_booking_once_in_order() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let other = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    let mut made = Vec::new();
    for i in 0..7 {
        let (status, _, b) = app.book(&stay(customer, room, 1 + 2 * i, 1, 1)).await;
        assert_eq!(status, 201);
        made.push(b["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(app.book(&stay(other, room, 30, 1, 1)).await.0, 201);
    let mut seen = Vec::new();
    let mut uri = format!("/bookings?customer_id={customer}&limit=3");
    let mut pages = 0;
    loop {
        let (status, _, page) = app.send("GET", &uri, None, &[]).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for b in page["items"].as_array().unwrap() {
            assert_eq!(b["customer_id"], json!(customer));
            seen.push(b["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/bookings?customer_id={customer}&limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    let (_, _, by_room) = app
        .send(
            "GET",
            &format!("/bookings?room_id={room}&limit=100"),
            None,
            &[],
        )
        .await;
    assert_eq!(by_room["items"].as_array().unwrap().len(), 8);
    assert_eq!(by_room["next_cursor"], Value::Null);
}

#[tokio::test]
async fn availability_lists_free_large_enough_available_rooms_across_room_pages() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let booked = app.peers.add_room(4, 5_000, "available");
    let free = app.peers.add_room(4, 5_000, "available");
    let too_small = app.peers.add_room(1, 5_000, "available");
    let _maintenance = app.peers.add_room(4, 5_000, "maintenance");
    let free_after_cancel = app.peers.add_room(3, 5_000, "available");
    let adjacent = app.peers.add_room(2, 5_000, "available");
    assert_eq!(app.book(&stay(customer, booked, 10, 3, 2)).await.0, 201);
    let (_, _, c) = app.book(&stay(customer, free_after_cancel, 10, 3, 2)).await;
    let cancel = format!("/bookings/{}/cancel", c["id"].as_str().unwrap());
    assert_eq!(app.send("POST", &cancel, None, &[]).await.0, 200);
    assert_eq!(app.book(&stay(customer, adjacent, 13, 2, 2)).await.0, 201);

    let uri = format!(
        "/availability?check_in={}&check_out={}&guests=2",
        day(11),
        day(13)
    );
    let (status, _, body) = app.send("GET", &uri, None, &[]).await;
    assert_eq!(status, 200, "{body}");
    let ids: HashSet<Uuid> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        ids,
        HashSet::from([free, free_after_cancel, adjacent]),
        "{body}"
    );
    assert!(!ids.contains(&too_small));
}

#[tokio::test]
async fn availability_checks_its_parameters_naming_each() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let ok_in = day(1);
    let ok_out = day(2);
    let cases = [
        (
            format!("check_in={ok_in}&check_out={ok_out}"),
            400,
            "guests",
        ),
        (
            format!("check_in={ok_in}&check_out={ok_out}&guests=two"),
            400,
            "guests",
        ),
        (
            format!("check_in={ok_in}&check_out={ok_out}&guests=0"),
            422,
            "guests",
        ),
        (
            format!("check_in={ok_in}&check_out={ok_out}&guests=11"),
            422,
            "guests",
        ),
        (
            format!("check_in=2030-02-30&check_out={ok_out}&guests=1"),
            422,
            "check_in",
        ),
        (
            format!("check_in={ok_in}&check_out={ok_in}&guests=1"),
            422,
            "check_out",
        ),
        (
            format!("check_in={}&check_out={ok_out}&guests=1", day(-2)),
            422,
            "check_in",
        ),
        (format!("check_out={ok_out}&guests=1"), 400, "check_in"),
        (
            format!("check_in={ok_in}&check_out={ok_out}&guests=1&floor=2"),
            400,
            "floor",
        ),
    ];
    for (query, want, name) in cases {
        let (status, _, p) = app
            .send("GET", &format!("/availability?{query}"), None, &[])
            .await;
        assert_eq!((status.as_u16(), field(&p)), (want, name), "{query}: {p}");
    }
}

#[tokio::test]
async fn an_unreachable_or_failing_peer_is_a_503_with_retry_after_never_a_500() {
    // A port nothing listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (peers, up) = spawn_peers().await;
    let customer = peers.add_customer();
    let room = peers.add_room(2, 5_000, "available");
    let Some(dir) = TestDb::new(BACKEND, "booking-api").await else {
        return;
    };
    let app = Application::build(super::support::settings(&dir, closed, up))
        .await
        .unwrap();
    let router = app.router();
    let body = stay(customer, room, 1, 1, 1).to_string();
    let (status, headers, p) = send(&router, "POST", "/bookings", Some(&body), &[]).await;
    assert_eq!(status, 503, "{p}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(p["detail"].as_str().unwrap().contains("customer"), "{p}");

    // A peer answering 503 is just as unavailable, for bookings and availability.
    let Some(dir2) = TestDb::new(BACKEND, "booking-api").await else {
        return;
    };
    let app = Application::build(super::support::settings(&dir2, up, up))
        .await
        .unwrap();
    let router = app.router();
    peers.failing.store(true, Ordering::SeqCst);
    let (status, headers, _) = send(&router, "POST", "/bookings", Some(&body), &[]).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    let uri = format!(
        "/availability?check_in={}&check_out={}&guests=1",
        day(1),
        day(2)
    );
    let (status, _, p) = send(&router, "GET", &uri, None, &[]).await;
    assert_eq!(status, 503, "{p}");
    peers.failing.store(false, Ordering::SeqCst);
    assert_eq!(
        send(&router, "POST", "/bookings", Some(&body), &[]).await.0,
        201
    );
}

#[tokio::test]
async fn booking_refuses_to_start_without_peer_urls_naming_the_key() {
    let dir = TempDir::new("booking-api");
    let settings = Settings {
        data_dir: dir.to_path_buf(),
        ..Settings::default()
    };
    let err = Application::build(settings)
        .await
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("customer_url"), "{err}");
}

#[tokio::test]
async fn two_apps_on_one_database_book_a_room_once_under_concurrent_requests() {
    let (peers, addr) = spawn_peers().await;
    let customer = peers.add_customer();
    let room = peers.add_room(2, 5_000, "available");
    let Some(dir) = TestDb::new(BACKEND, "booking-api").await else {
        return;
    };
    let a = Application::build(super::support::settings(&dir, addr, addr))
        .await
        .unwrap()
        .router();
    let b = Application::build(super::support::settings(&dir, addr, addr))
        .await
        .unwrap()
        .router();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let router = if i % 2 == 0 { a.clone() } else { b.clone() };
        // Different but overlapping stays: all clash with each other around day 20.
        let body = stay(customer, room, 18 + (i % 3), 3, 1).to_string();
        tasks.push(tokio::spawn(async move {
            send(&router, "POST", "/bookings", Some(&body), &[]).await.0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    let (_, _, list) = send(&a, "GET", &format!("/bookings?room_id={room}"), None, &[]).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn health_and_unknown_routes_answer_like_every_service() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    assert_eq!(app.send("GET", "/healthz", None, &[]).await.0, 200);
    assert_eq!(app.send("GET", "/readyz", None, &[]).await.0, 200);
    let (status, headers, _) = app.send("GET", "/nope", None, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], "application/problem+json");
    let (status, _, _) = app.send("DELETE", "/bookings", None, &[]).await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (status, _, doc) = app.send("GET", "/openapi.json", None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        hotel_common::openapi::to_json(&hotel_booking::openapi())
    );
    let expected: HashSet<(String, String)> = [
        ("/bookings", "post"),
        ("/bookings", "get"),
        ("/bookings/{id}", "get"),
        ("/bookings/{id}/cancel", "post"),
        ("/availability", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m.to_owned()))
    .collect();
    let mut documented = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let uri = path.replace("{id}", &Uuid::new_v4().to_string());
            let (status, _, body) = app.send(&method.to_uppercase(), &uri, None, &[]).await;
            if item[method].is_object() {
                documented.insert((path.clone(), method.to_owned()));
                // Served: whatever it answers, it is not "no such route" or "wrong method".
                assert_ne!(status, 405, "{method} {path} is documented but not served");
                assert_ne!(
                    body["type"], "/problems/no-route",
                    "{method} {path} is documented but not served"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not documented");
            }
        }
    }
    assert_eq!(documented, expected);
    hotel_service_testing::assert_documents_problems(&doc);
}

#[tokio::test]
async fn a_check_in_past_the_horizon_is_a_422_naming_check_in_and_the_horizon_is_configurable() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    let (status, _, b) = app.book(&stay(customer, room, 730, 1, 1)).await;
    assert_eq!(
        status, 201,
        "the last day of the default horizon is bookable: {b}"
    );
    let (status, _, p) = app.book(&stay(customer, room, 731, 1, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_in"), "{p}");
    let far = json!({
        "customer_id": customer, "room_id": room,
        "check_in": "9999-12-01", "check_out": "9999-12-03", "guests": 1,
    });
    let (status, _, p) = app.book(&far).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_in"), "{p}");
    let uri = "/availability?check_in=9999-12-01&check_out=9999-12-03&guests=1";
    let (status, _, p) = app.send("GET", uri, None, &[]).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_in"), "{p}");

    let Some(near) = TestApp::spawn_with(BACKEND, |s| s.max_days_ahead = 10).await else {
        return;
    };
    let customer = near.peers.add_customer();
    let room = near.peers.add_room(2, 5_000, "available");
    let (status, _, p) = near.book(&stay(customer, room, 11, 1, 1)).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "check_in"), "{p}");
    let (status, _, b) = near.book(&stay(customer, room, 10, 1, 1)).await;
    assert_eq!(status, 201, "{b}");
}

#[tokio::test]
async fn guests_written_with_a_zero_fraction_are_the_integer_and_a_fraction_is_refused() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let customer = app.peers.add_customer();
    let room = app.peers.add_room(2, 5_000, "available");
    let mut body = stay(customer, room, 3, 1, 1);
    body["guests"] = json!(2.0);
    let (status, _, b) = app.book(&body).await;
    assert_eq!(status, 201, "{b}");
    assert_eq!(b["guests"], 2);
    body["guests"] = json!(1.5);
    let (status, _, p) = app.book(&body).await;
    assert_eq!((status.as_u16(), field(&p)), (422, "guests"), "{p}");
}

#[tokio::test]
async fn the_idempotency_key_schema_states_what_the_handler_accepts() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (_, _, doc) = app.send("GET", "/openapi.json", None, &[]).await;
    let params = doc["paths"]["/bookings"]["post"]["parameters"]
        .as_array()
        .unwrap();
    let key = params
        .iter()
        .find(|p| p["name"] == "Idempotency-Key")
        .unwrap();
    assert_eq!(key["schema"]["minLength"], 1);
    assert_eq!(key["schema"]["maxLength"], 255);
    assert!(key["schema"]["pattern"].is_string());
    let (body, _) = app.booking_body(3, 1);
    let (status, _, p) = app
        .send(
            "POST",
            "/bookings",
            Some(&body.to_string()),
            &[("idempotency-key", "")],
        )
        .await;
    assert_eq!(
        (status.as_u16(), field(&p)),
        (400, "Idempotency-Key"),
        "{p}"
    );
}

#[tokio::test]
async fn odd_inputs_never_answer_a_server_error() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (good, _) = app.booking_body(1, 1);
    let good = good.to_string();
    let bodies: Vec<String> = vec![
        "null".into(),
        "[]".into(),
        "\"text\"".into(),
        "{}".into(),
        good.replace("\"guests\":2", "\"guests\":1e400"),
        good.replace("\"guests\":2", "\"guests\":99999999999999999999"),
        good.replace("\"guests\":2", "\"guests\":null"),
        format!("{}, \"guests\": 3}}", &good[..good.len() - 1]),
        good.replace("-", "\\u0000"),
        String::from_utf8_lossy(b"\xff\xfe").into_owned(),
    ];
    for body in bodies {
        let (status, _, p) = app.send("POST", "/bookings", Some(&body), &[]).await;
        assert!(status.is_client_error(), "{body}: {status} {p}");
    }
    let (status, _, p) = app
        .send(
            "POST",
            "/bookings",
            Some(&good),
            &[("content-type", "text/plain")],
        )
        .await;
    assert!(status.is_client_error(), "{status} {p}");
    for uri in [
        "/availability?check_in=%00&check_out=%FF&guests=1",
        "/availability?check_in=2030-01-01&check_out=2030-01-02&guests=-99999999999999999999",
        "/bookings?room_id=&limit=x",
        "/bookings?customer_id=00000000-0000-0000-0000-000000000000&limit=9223372036854775807",
    ] {
        let (status, _, p) = app.send("GET", uri, None, &[]).await;
        assert!(status.is_client_error(), "{uri}: {status} {p}");
    }
}

#[tokio::test]
async fn a_booking_read_is_private_carries_validators_and_if_match_guards_the_cancellation() {
    let Some(app) = TestApp::spawn(BACKEND).await else {
        return;
    };
    let (body, _) = app.booking_body(9, 2);
    let (_, _, booking) = app.book(&body).await;
    let id = booking["id"].as_str().unwrap();
    let uri = format!("/bookings/{id}");
    let (status, headers, _) = app.send("GET", &uri, None, &[]).await;
    assert_eq!(status, 200);
    let v1 = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(v1, format!("\"{id}-1\""));
    assert_eq!(headers["cache-control"], "private, no-store");
    assert!(headers.contains_key("last-modified"));
    let (status, h, nothing) = app
        .send("GET", &uri, None, &[("if-none-match", &format!("W/{v1}"))])
        .await;
    assert_eq!(status, 304);
    assert_eq!(nothing, Value::Null);
    assert_eq!(h["etag"], v1.as_str());
    assert_eq!(h["cache-control"], "private, no-store");
    let list = format!(
        "/bookings?customer_id={}",
        booking["customer_id"].as_str().unwrap()
    );
    let (_, h, _) = app.send("GET", &list, None, &[]).await;
    let page_tag = h["etag"].to_str().unwrap().to_owned();
    assert!(page_tag.starts_with("W/"), "{page_tag}");
    let (status, _, _) = app
        .send("GET", &list, None, &[("if-none-match", &page_tag)])
        .await;
    assert_eq!(status, 304);
    let cancel = format!("{uri}/cancel");
    for stale in ["\"nope\"", &format!("W/{v1}")] {
        let (status, _, p) = app
            .send("POST", &cancel, None, &[("if-match", stale)])
            .await;
        assert_eq!(status, 412, "{p}");
        assert_eq!(p["type"], "/problems/precondition-failed");
    }
    let (_, _, read) = app.send("GET", &uri, None, &[]).await;
    assert_eq!(
        read["status"], "confirmed",
        "a refused cancellation changes nothing"
    );
    let (status, h, cancelled) = app.send("POST", &cancel, None, &[("if-match", &v1)]).await;
    assert_eq!(status, 200, "{cancelled}");
    let v2 = h["etag"].to_str().unwrap().to_owned();
    assert_eq!(v2, format!("\"{id}-2\""));
    let (status, _, _) = app.send("GET", &uri, None, &[("if-none-match", &v1)]).await;
    assert_eq!(status, 200, "the old tag is out of date");
    let (status, _, _) = app.send("POST", &cancel, None, &[("if-match", &v1)]).await;
    assert_eq!(
        status, 412,
        "a second writer holding the old tag is refused"
    );
    let (_, h, _) = app.send("GET", &list, None, &[]).await;
    assert_ne!(
        h["etag"],
        page_tag.as_str(),
        "a cancellation changes the page's tag"
    );
}

#[tokio::test]
async fn bookings_stored_before_versions_existed_read_back_as_version_1_last_changed_when_cancelled_or_made()
 {
    let Some(db) = TestDb::new(BACKEND, "booking-api").await else {
        return;
    };
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
    let settings = super::support::settings(&db, any, any);
    // The database as the previous release left it: migrations 0001 and 0002 applied.
    let pool = hotel_service_testing::database_as_released(
        &settings.database_location().unwrap(),
        &settings.database,
        env!("CARGO_MANIFEST_DIR"),
        &["0001_bookings.sql", "0002_idempotency_owner.sql"],
    )
    .await;
    // Made 2026-12-05T10:00:00Z; the second one cancelled an hour later.
    let made: i64 = 1_796_464_800_000_000;
    let (open, cancelled) = (Uuid::new_v4(), Uuid::new_v4());
    for (id, status, cancelled_at) in [
        (open, "confirmed", None),
        (cancelled, "cancelled", Some(made + 3_600_000_000)),
    ] {
        sqlx::query(
            "INSERT INTO bookings (id, customer_id, room_id, check_in, check_out, guests, \
             status, total_cents, created_at, cancelled_at) \
             VALUES ($1, $2, $3, '2027-01-01', '2027-01-02', 1, $4, 100, $5, $6)",
        )
        .bind(id.to_string())
        .bind(Uuid::new_v4().to_string())
        .bind(Uuid::new_v4().to_string())
        .bind(status)
        .bind(made)
        .bind(cancelled_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let producer =
        hotel_events::Producer::new("booking", "booking-test", hotel_events::EventMetrics::new());
    let store = hotel_booking::store::Store::new(
        hotel_booking::open_database(&settings).await.unwrap(),
        producer,
    );
    let got = store.get(open).await.unwrap();
    assert_eq!(got.validators.etag, format!("\"{open}-1\""));
    let at =
        |micros: i64| Some(std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros as u64));
    assert_eq!(got.validators.last_modified, at(made));
    let got = store.get(cancelled).await.unwrap();
    assert_eq!(got.validators.etag, format!("\"{cancelled}-1\""));
    assert_eq!(got.validators.last_modified, at(made + 3_600_000_000));
    let now = made + 7_200_000_000;
    let done = store.cancel(open, now, None).await.unwrap();
    assert_eq!(done.validators.etag, format!("\"{open}-2\""));
    assert_eq!(done.validators.last_modified, at(now));
}
