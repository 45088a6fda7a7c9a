// The cases of api.rs, compiled once per backend (`BACKEND`).

use hotel_room::{Application, Settings, connect, router};
use hotel_service::CacheSettings;
use hotel_service_testing::{Backend, TempDir, TestApp, TestDb};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;

/// Settings for one test on [`BACKEND`] and what keeps its database; `None` when that
/// backend is not available here (the test is skipped, saying so).
async fn settings() -> Option<(Settings, TestDb)> {
    let db = TestDb::new(BACKEND, "room-api").await?;
    let settings = Settings {
        data_dir: db.dir.path().to_owned(),
        database: hotel_common::db::DatabaseSettings {
            url: db.url(),
            ..Default::default()
        },
        ..Settings::default()
    };
    Some((settings, db))
}

async fn app() -> Option<TestApp> {
    let (settings, db) = settings().await?;
    let pool = connect(&settings).await.expect("database");
    Some(TestApp::new(full_router(&settings, pool), db))
}

/// The whole router over `pool`, with the events of an instance with `settings`.
fn full_router(settings: &Settings, pool: sqlx::AnyPool) -> axum::Router {
    let events = hotel_service::Events::new(settings, pool.clone()).expect("events");
    router(pool, settings.cache.cache_control(), &events)
}

fn room(number: &str) -> Value {
    json!({"number": number, "kind": "double", "capacity": 2, "nightly_rate_cents": 12900})
}

async fn create(app: &TestApp, body: Value) -> Value {
    let r = app.post("/rooms", body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

fn uri_of(room: &Value) -> String {
    format!("/rooms/{}", room["id"].as_str().unwrap())
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test]
async fn creating_a_room_answers_201_available_and_it_reads_back_the_same() {
    let Some(app) = app().await else { return };
    let r = create(
        &app,
        json!({"number": " 101 ", "kind": "suite", "capacity": 4, "nightly_rate_cents": 45000}),
    )
    .await;
    assert_eq!(r["number"], "101");
    assert_eq!(r["kind"], "suite");
    assert_eq!(r["capacity"], 4);
    assert_eq!(r["nightly_rate_cents"], 45000);
    assert_eq!(r["status"], "available");
    uuid::Uuid::parse_str(r["id"].as_str().unwrap()).unwrap();
    time::OffsetDateTime::parse(
        r["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let got = app.get(&uri_of(&r)).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, r);
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let Some(app) = app().await else { return };
    for bad in [&b"{"[..], b"{\"number\": }", b"nope", b""] {
        app.call_raw(Method::POST, "/rooms", bad).await.problem(400);
    }
}

#[tokio::test]
async fn wrong_types_unknown_and_missing_fields_are_422_naming_the_field() {
    let Some(app) = app().await else { return };
    let cases = [
        (with(room("1"), "capacity", json!("two")), "capacity"),
        (with(room("1"), "capacity", json!(2.5)), "capacity"),
        (
            with(room("1"), "nightly_rate_cents", json!("100")),
            "nightly_rate_cents",
        ),
        (with(room("1"), "number", json!(101)), "number"),
        (with(room("1"), "kind", json!("penthouse")), "kind"),
        (with(room("1"), "kind", json!("Suite")), "kind"),
        (with(room("1"), "view", json!("sea")), "view"),
        (
            json!({"kind": "single", "capacity": 1, "nightly_rate_cents": 1}),
            "number",
        ),
        (
            json!({"number": "1", "capacity": 1, "nightly_rate_cents": 1}),
            "kind",
        ),
        (
            json!({"number": "1", "kind": "single", "nightly_rate_cents": 1}),
            "capacity",
        ),
        (
            json!({"number": "1", "kind": "single", "capacity": 1}),
            "nightly_rate_cents",
        ),
    ];
    for (body, field) in cases {
        app.post("/rooms", body).await.names_field(422, field);
    }
    app.post("/rooms", json!(["1", "single", 1, 100]))
        .await
        .names_field(422, "body");
}

#[tokio::test]
async fn impossible_values_are_422_naming_the_field() {
    let Some(app) = app().await else { return };
    let cases = [
        (with(room("1"), "capacity", json!(0)), "capacity"),
        (with(room("1"), "capacity", json!(11)), "capacity"),
        (with(room("1"), "capacity", json!(-1)), "capacity"),
        (
            with(room("1"), "nightly_rate_cents", json!(0)),
            "nightly_rate_cents",
        ),
        (
            with(room("1"), "nightly_rate_cents", json!(-500)),
            "nightly_rate_cents",
        ),
        (
            with(room("1"), "nightly_rate_cents", json!(10_000_001)),
            "nightly_rate_cents",
        ),
        (
            with(room("1"), "nightly_rate_cents", json!(1e30)),
            "nightly_rate_cents",
        ),
        (room(""), "number"),
        (room("   "), "number"),
        (room(&"9".repeat(17)), "number"),
        (room("1\n2"), "number"),
    ];
    for (body, field) in cases {
        app.post("/rooms", body).await.names_field(422, field);
    }
    create(
        &app,
        with(
            with(room(&"9".repeat(16)), "capacity", json!(10)),
            "nightly_rate_cents",
            json!(10_000_000),
        ),
    )
    .await;
    create(
        &app,
        with(
            with(room("x"), "capacity", json!(1)),
            "nightly_rate_cents",
            json!(1),
        ),
    )
    .await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413_problem() {
    let Some(app) = app().await else { return };
    let body = format!(
        r#"{{"number": "{}", "kind": "single", "capacity": 1, "nightly_rate_cents": 1}}"#,
        "x".repeat(70 * 1024)
    );
    app.call_raw(Method::POST, "/rooms", body)
        .await
        .problem(413);
}

#[tokio::test]
async fn a_duplicate_number_is_a_409_whatever_its_case() {
    let Some(app) = app().await else { return };
    create(&app, room("12a")).await;
    for number in ["12a", "12A", " 12A "] {
        app.post("/rooms", room(number)).await.problem(409);
    }
}

#[tokio::test]
async fn concurrent_creates_with_one_number_let_exactly_one_win() {
    let Some(app) = app().await else { return };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let router = app.router.clone();
        let number = if i % 2 == 0 { "race" } else { "RACE" };
        tasks.push(tokio::spawn(async move {
            let probe = TestApp::new(router, TempDir::new("room-api"));
            probe.post("/rooms", room(number)).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT)
    );
}

#[tokio::test]
async fn a_non_uuid_id_is_a_400_naming_id() {
    let Some(app) = app().await else { return };
    for reply in [
        app.get("/rooms/101").await,
        app.patch("/rooms/abc", json!({"capacity": 2})).await,
        app.delete("/rooms/not-a-uuid").await,
    ] {
        let body = reply.problem(400);
        assert!(body["detail"].as_str().unwrap().contains("id"), "{body}");
    }
}

#[tokio::test]
async fn an_unknown_id_is_a_404_problem() {
    let Some(app) = app().await else { return };
    let id = uuid::Uuid::new_v4();
    app.get(&format!("/rooms/{id}")).await.problem(404);
    app.patch(&format!("/rooms/{id}"), json!({"capacity": 2}))
        .await
        .problem(404);
    app.delete(&format!("/rooms/{id}")).await.problem(404);
}

#[tokio::test]
async fn pagination_walks_every_room_once_in_a_stable_order() {
    let Some(app) = app().await else { return };
    let mut made = HashSet::new();
    for i in 0..23 {
        made.insert(create(&app, room(&format!("{i}"))).await["id"].clone());
    }
    let walk = |limit: usize, filter: &'static str| {
        let app = &app;
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            for _ in 0..50 {
                let uri = match &cursor {
                    Some(c) => format!("/rooms?limit={limit}{filter}&cursor={c}"),
                    None => format!("/rooms?limit={limit}{filter}"),
                };
                let r = app.get(&uri).await;
                assert_eq!(r.status, 200, "{:?}", r.body);
                let items = r.body["items"].as_array().unwrap().clone();
                assert!(items.len() <= limit);
                seen.extend(
                    items
                        .into_iter()
                        .map(|c| (c["created_at"].clone(), c["id"].clone())),
                );
                match r.body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return seen,
                }
            }
            panic!("pagination does not end");
        }
    };
    let by_5 = walk(5, "").await;
    assert_eq!(by_5.len(), 23);
    let ids: HashSet<Value> = by_5.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, made, "every room exactly once");
    let mut sorted = by_5.clone();
    sorted.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    assert_eq!(by_5, sorted, "ordered by (created_at, id)");
    assert_eq!(walk(100, "").await, by_5);
    assert_eq!(
        walk(4, "&kind=double&status=available&min_capacity=2").await,
        by_5
    );
    assert_eq!(
        app.get("/rooms").await.body["items"]
            .as_array()
            .unwrap()
            .len(),
        20
    );
}

#[tokio::test]
async fn lists_filter_by_kind_capacity_and_status() {
    let Some(app) = app().await else { return };
    let single = create(
        &app,
        json!({"number": "1", "kind": "single", "capacity": 1, "nightly_rate_cents": 5000}),
    )
    .await;
    let double = create(&app, room("2")).await;
    let suite = create(
        &app,
        json!({"number": "3", "kind": "suite", "capacity": 6, "nightly_rate_cents": 90000}),
    )
    .await;
    let ids = |r: &hotel_service_testing::Reply| -> Vec<Value> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].clone())
            .collect()
    };
    assert_eq!(
        ids(&app.get("/rooms?kind=suite").await),
        vec![suite["id"].clone()]
    );
    assert_eq!(
        ids(&app.get("/rooms?min_capacity=2").await),
        vec![double["id"].clone(), suite["id"].clone()]
    );
    let r = app
        .patch(&uri_of(&double), json!({"status": "maintenance"}))
        .await;
    assert_eq!(r.status, 200);
    app.delete(&uri_of(&suite)).await;
    assert_eq!(
        ids(&app.get("/rooms?status=available").await),
        vec![single["id"].clone()]
    );
    assert_eq!(
        ids(&app.get("/rooms?status=maintenance").await),
        vec![double["id"].clone()]
    );
    assert_eq!(
        ids(&app.get("/rooms?status=retired").await),
        vec![suite["id"].clone()]
    );
    assert_eq!(ids(&app.get("/rooms").await).len(), 3);
}

#[tokio::test]
async fn bad_list_parameters_answer_problems_naming_them() {
    let Some(app) = app().await else { return };
    for uri in ["/rooms?limit=0", "/rooms?limit=101"] {
        app.get(uri).await.names_field(422, "limit");
    }
    for uri in ["/rooms?min_capacity=0", "/rooms?min_capacity=11"] {
        app.get(uri).await.names_field(422, "min_capacity");
    }
    app.get("/rooms?min_capacity=big")
        .await
        .names_field(400, "min_capacity");
    app.get("/rooms?kind=castle").await.names_field(400, "kind");
    app.get("/rooms?status=gone")
        .await
        .names_field(400, "status");
    app.get("/rooms?cursor=abc")
        .await
        .names_field(400, "cursor");
    app.get("/rooms?floor=3").await.names_field(400, "floor");
}

#[tokio::test]
async fn patch_changes_only_the_fields_given() {
    let Some(app) = app().await else { return };
    let r = create(&app, room("7")).await;
    let uri = uri_of(&r);
    let p = app
        .patch(&uri, json!({"nightly_rate_cents": 15000, "kind": "suite"}))
        .await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(
        p.body,
        with(
            with(r.clone(), "nightly_rate_cents", json!(15000)),
            "kind",
            json!("suite")
        )
    );
    let p = app
        .patch(
            &uri,
            json!({"status": "maintenance", "capacity": 3, "number": "7B"}),
        )
        .await;
    assert_eq!(p.body["status"], "maintenance");
    assert_eq!(p.body["capacity"], 3);
    assert_eq!(p.body["number"], "7B");
    assert_eq!(p.body["nightly_rate_cents"], 15000);
    let p = app.patch(&uri, json!({"status": "available"})).await;
    assert_eq!(p.body["status"], "available");
    let p = app.patch(&uri, json!({"number": "7b"})).await;
    assert_eq!(
        p.status, 200,
        "changing only the case of its own number is fine"
    );
    assert_eq!(app.get(&uri).await.body, p.body);
}

#[tokio::test]
async fn patch_validates_like_create_and_refuses_a_taken_number() {
    let Some(app) = app().await else { return };
    let r = create(&app, room("1")).await;
    create(&app, room("2")).await;
    let uri = uri_of(&r);
    app.patch(&uri, json!({"number": " 2 "})).await.problem(409);
    app.patch(&uri, json!({"capacity": 0}))
        .await
        .names_field(422, "capacity");
    app.patch(&uri, json!({"capacity": 11}))
        .await
        .names_field(422, "capacity");
    app.patch(&uri, json!({"nightly_rate_cents": -1}))
        .await
        .names_field(422, "nightly_rate_cents");
    app.patch(&uri, json!({"number": ""}))
        .await
        .names_field(422, "number");
    app.patch(&uri, json!({"status": "retired"}))
        .await
        .names_field(422, "status");
    app.patch(&uri, json!({"status": "closed"}))
        .await
        .names_field(422, "status");
    app.patch(&uri, json!({"floor": 2}))
        .await
        .names_field(422, "floor");
    app.patch(&uri, json!({"kind": null}))
        .await
        .names_field(422, "kind");
    app.patch(&uri, json!({"capacity": null}))
        .await
        .names_field(422, "capacity");
    app.call_raw(Method::PATCH, &uri, "{").await.problem(400);
    assert_eq!(app.get(&uri).await.body, r, "failed patches change nothing");
}

#[tokio::test]
async fn delete_retires_the_room_keeping_its_id_and_twice_is_fine() {
    let Some(app) = app().await else { return };
    let r = create(&app, room("42")).await;
    let uri = uri_of(&r);
    let d = app.delete(&uri).await;
    assert_eq!(d.status, 200);
    assert_eq!(d.body, with(r.clone(), "status", json!("retired")));
    let again = app.delete(&uri).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, d.body);
    assert_eq!(
        app.get(&uri).await.body,
        d.body,
        "a retired room stays readable"
    );
    for change in [
        json!({"status": "available"}),
        json!({"capacity": 3}),
        json!({}),
    ] {
        app.patch(&uri, change).await.problem(409);
    }
    let rebuilt = create(&app, room("42")).await;
    assert_ne!(rebuilt["id"], r["id"], "a retired room frees its number");
}

#[tokio::test]
async fn health_readiness_and_unknown_routes_answer_as_in_every_service() {
    let Some(app) = app().await else { return };
    hotel_service_testing::assert_health_and_unknown_routes(&app, "/rooms/1/beds", "/rooms").await;
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let Some(app) = app().await else { return };
    hotel_service_testing::assert_openapi_matches_routes(&app).await;
    let doc = app.get("/openapi.json").await.body;
    for (path, method) in [
        ("/rooms", "post"),
        ("/rooms", "get"),
        ("/rooms/{id}", "get"),
        ("/rooms/{id}", "patch"),
        ("/rooms/{id}", "delete"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert_eq!(doc["paths"].as_object().unwrap().len(), 5);
    assert_eq!(hotel_common::openapi::to_json(&hotel_room::openapi()), doc);
    hotel_service_testing::assert_documents_problems(&doc);
}

#[tokio::test]
async fn patch_does_not_offer_retired_and_refuses_it_naming_status() {
    let Some(app) = app().await else { return };
    let doc = app.get("/openapi.json").await.body;
    let schemas = &doc["components"]["schemas"];
    let status = &schemas["RoomPatch"]["properties"]["status"];
    let reference = status["$ref"].as_str().expect("status is a reference");
    let offered = &schemas[reference.trim_start_matches("#/components/schemas/")]["enum"];
    assert_eq!(offered, &json!(["available", "maintenance"]));
    let r = create(&app, room("7")).await;
    app.patch(&uri_of(&r), json!({"status": "retired"}))
        .await
        .names_field(422, "status");
}

#[tokio::test]
async fn whole_numbers_written_with_a_zero_fraction_are_the_integers_the_schema_allows() {
    let Some(app) = app().await else { return };
    let r = create(
        &app,
        json!({"number": "7", "kind": "suite", "capacity": 7.0, "nightly_rate_cents": 12900.0}),
    )
    .await;
    assert_eq!(
        (r["capacity"].clone(), r["nightly_rate_cents"].clone()),
        (json!(7), json!(12900))
    );
    let updated = app.patch(&uri_of(&r), json!({"capacity": 3.0})).await;
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(updated.body["capacity"], 3);
    for capacity in [json!(7.5), json!(1e300), json!(-0.5), json!("7")] {
        app.post("/rooms", with(room("8"), "capacity", capacity.clone()))
            .await
            .names_field(422, "capacity");
        app.patch(&uri_of(&r), json!({"capacity": capacity}))
            .await
            .names_field(422, "capacity");
    }
}

#[tokio::test]
async fn numbers_follow_the_shared_text_rule_on_post_and_patch() {
    let Some(app) = app().await else { return };
    let r = create(&app, room("9")).await;
    let padded = format!(" {}", "1".repeat(16));
    for number in [
        "1\u{9f}",
        "\u{202d}12",
        "\u{2069}",
        "\u{3000}",
        padded.as_str(),
    ] {
        app.post("/rooms", room(number))
            .await
            .names_field(422, "number");
        app.patch(&uri_of(&r), json!({"number": number}))
            .await
            .names_field(422, "number");
    }
}

#[tokio::test]
async fn odd_inputs_never_answer_a_server_error() {
    let Some(app) = app().await else { return };
    let r = create(&app, room("1")).await;
    let uri = uri_of(&r);
    let bodies: [&[u8]; 8] = [
        b"null",
        b"[]",
        b"7",
        b"{\"number\": \"9\", \"kind\": \"single\", \"capacity\": 99999999999999999999, \"nightly_rate_cents\": 1}",
        b"{\"number\": \"9\", \"kind\": \"single\", \"capacity\": 1, \"nightly_rate_cents\": -9223372036854775809}",
        b"{\"number\": \"9\", \"kind\": null, \"capacity\": 1, \"nightly_rate_cents\": 1}",
        b"\xff",
        b"{\"number\": {\"a\": 1}}",
    ];
    for body in bodies {
        for (method, target) in [
            (Method::POST, "/rooms".to_owned()),
            (Method::PATCH, uri.clone()),
        ] {
            let reply = app.call_raw(method.clone(), &target, body).await;
            assert!(
                reply.status.is_client_error(),
                "{method} {target} {body:?}: {reply:?}"
            );
        }
    }
    for q in [
        "/rooms?min_capacity=99999999999999999999",
        "/rooms?kind=",
        "/rooms?limit=%ff",
    ] {
        let reply = app.get(q).await;
        assert!(!reply.status.is_server_error(), "{q}: {reply:?}");
    }
}

#[tokio::test]
async fn replicas_migrating_one_database_together_all_start() {
    let Some((settings, _db)) = settings().await else {
        return;
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = settings.clone();
        tasks.push(tokio::spawn(async move {
            connect(&s).await.map(|_| ()).map_err(|e| e.to_string())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let a = TestApp::new(
        full_router(&settings, connect(&settings).await.unwrap()),
        TempDir::new("room-api"),
    );
    let b = TestApp::new(
        full_router(&settings, connect(&settings).await.unwrap()),
        TempDir::new("room-api"),
    );
    let r = create(&a, room("5")).await;
    assert_eq!(
        b.get(&uri_of(&r)).await.body,
        r,
        "replicas share the database"
    );
    b.post("/rooms", room("5")).await.problem(409);
}

#[tokio::test]
async fn an_application_serves_on_an_ephemeral_port_until_shut_down() {
    let Some((settings, db)) = settings().await else {
        return;
    };
    let app = Application::build(settings).await.unwrap();
    assert_eq!(
        db.dir.path().join("room.db").exists(),
        BACKEND == Backend::Sqlite,
        "the file exists on SQLite only"
    );
    hotel_service_testing::assert_serves_until_shut_down(app).await;
}

const PUBLIC: &str = "public, max-age=5, stale-if-error=300";

#[tokio::test]
async fn a_room_read_carries_validators_and_conditional_gets_answer_304() {
    let Some(app) = app().await else { return };
    let r = create(&app, room("301")).await;
    let etag = hotel_service_testing::assert_conditional_get(&app, &uri_of(&r), PUBLIC).await;
    assert_eq!(etag, format!("\"{}-1\"", r["id"].as_str().unwrap()));
    let list = hotel_service_testing::assert_conditional_list(&app, "/rooms", PUBLIC).await;
    create(&app, room("302")).await;
    let again = app.get("/rooms").await;
    assert_ne!(
        again.headers["etag"],
        list.as_str(),
        "a new room changes the page's tag"
    );
}

#[tokio::test]
async fn every_write_bumps_the_version_and_if_match_guards_patch_and_retire() {
    let Some(app) = app().await else { return };
    let created = app.post("/rooms", room("303")).await;
    assert_eq!(created.status, 201);
    let uri = uri_of(&created.body);
    assert_eq!(created.headers["location"], uri.as_str());
    let v1 = created.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(app.get(&uri).await.headers["etag"], v1.as_str());
    let patch = json!({"capacity": 3});
    hotel_service_testing::assert_if_match_refused(
        &app,
        Method::PATCH,
        &uri,
        &uri,
        &v1,
        Some(patch.clone()),
    )
    .await;
    let changed = hotel_service_testing::call_with(
        &app,
        Method::PATCH,
        &uri,
        &[("if-match", &v1)],
        Some(patch),
    )
    .await;
    assert_eq!(changed.status, 200, "{:?}", changed.body);
    let v2 = changed.headers["etag"].to_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    assert!(v2.ends_with("-2\""), "{v2}");
    let read = app.get(&uri).await;
    assert_eq!(read.headers["etag"], v2.as_str());
    assert_eq!(read.body["capacity"], 3);
    // The old tag no longer gets a 304: the client's copy is out of date.
    let old =
        hotel_service_testing::call_with(&app, Method::GET, &uri, &[("if-none-match", &v1)], None)
            .await;
    assert_eq!(old.status, 200);
    // A lost update is impossible: a second writer holding v1 is refused.
    let lost = hotel_service_testing::call_with(
        &app,
        Method::PATCH,
        &uri,
        &[("if-match", &v1)],
        Some(json!({"capacity": 4})),
    )
    .await;
    lost.problem(412);
    hotel_service_testing::assert_if_match_refused(&app, Method::DELETE, &uri, &uri, &v2, None)
        .await;
    let retired =
        hotel_service_testing::call_with(&app, Method::DELETE, &uri, &[("if-match", "*")], None)
            .await;
    assert_eq!(retired.status, 200);
    let v3 = retired.headers["etag"].to_str().unwrap().to_owned();
    assert!(v3.ends_with("-3\""), "{v3}");
    let twice = app.delete(&uri).await;
    assert_eq!(
        twice.headers["etag"],
        v3.as_str(),
        "retiring twice changes nothing"
    );
    // Without If-Match a change is made as before.
    let missing = format!("/rooms/{}", uuid::Uuid::new_v4());
    let r = hotel_service_testing::call_with(
        &app,
        Method::PATCH,
        &missing,
        &[("if-match", "\"x\"")],
        Some(json!({"capacity": 2})),
    )
    .await;
    r.problem(404);
}

#[tokio::test]
async fn location_names_the_room_as_the_client_addresses_it_behind_a_proxy() {
    let Some(app) = app().await else { return };
    let r = hotel_service_testing::call_with(
        &app,
        Method::POST,
        "/rooms",
        &[("x-forwarded-prefix", "/api")],
        Some(room("304")),
    )
    .await;
    assert_eq!(r.status, 201);
    let want = format!("/api/rooms/{}", r.body["id"].as_str().unwrap());
    assert_eq!(r.headers["location"], want.as_str());
}

#[tokio::test]
async fn the_cache_settings_choose_the_cache_control_and_the_document_says_so() {
    let Some((settings, db)) = settings().await else {
        return;
    };
    let settings = Settings {
        cache: hotel_service::SharedCache {
            max_age: std::time::Duration::from_secs(60),
            stale_if_error: std::time::Duration::ZERO,
        },
        ..settings
    };
    let pool = connect(&settings).await.unwrap();
    let app = TestApp::new(full_router(&settings, pool), db);
    let r = create(&app, room("305")).await;
    let got = app.get(&uri_of(&r)).await;
    assert_eq!(got.headers["cache-control"], "public, max-age=60");
    let doc = app.get("/openapi.json").await.body;
    let get = &doc["paths"]["/rooms/{id}"]["get"];
    let names: Vec<_> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"If-None-Match") && names.contains(&"If-Modified-Since"));
    let ok = &get["responses"]["200"]["headers"];
    for h in ["ETag", "Last-Modified", "Cache-Control"] {
        assert!(ok[h].is_object(), "{h} documented");
    }
    assert!(
        ok["Cache-Control"]["description"]
            .as_str()
            .unwrap()
            .contains("public, max-age=60")
    );
    assert!(get["responses"]["304"].is_object());
    let links = &doc["paths"]["/rooms"]["post"]["responses"]["201"]["links"];
    let guarded: Vec<_> = links
        .as_object()
        .unwrap()
        .values()
        .filter(|l| l["parameters"]["If-Match"] == "$response.header.ETag")
        .collect();
    assert_eq!(
        guarded.len(),
        2,
        "PATCH and DELETE links pass the ETag: {links}"
    );
    for method in ["patch", "delete"] {
        let op = &doc["paths"]["/rooms/{id}"][method];
        assert!(op["responses"]["412"].is_object(), "{method} documents 412");
        assert!(
            op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "If-Match"),
            "{method} documents If-Match"
        );
    }
}

#[tokio::test]
async fn rooms_stored_before_versions_existed_read_back_as_version_1_last_changed_when_created() {
    let Some((settings, db)) = settings().await else {
        return;
    };
    // The database as the first release left it: only the first migration applied.
    let pool = hotel_service_testing::database_as_released(
        &settings.database_location().unwrap(),
        &settings.database,
        env!("CARGO_MANIFEST_DIR"),
        &["20261129000001_rooms.sql"],
    )
    .await;
    let id = uuid::Uuid::new_v4();
    // 2026-12-05T10:00:00.25Z
    let created_at: i64 = 1_796_464_800_250_000;
    sqlx::query(
        "INSERT INTO rooms (id, number, number_key, kind, capacity, nightly_rate_cents, \
         status, created_at) VALUES ($1, '9', '9', 'single', 1, 100, 'available', $2)",
    )
    .bind(id.to_string())
    .bind(created_at)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let pool = connect(&settings).await.unwrap();
    let app = TestApp::new(full_router(&settings, pool), db);
    let uri = format!("/rooms/{id}");
    let got = app.get(&uri).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.headers["etag"], format!("\"{id}-1\"").as_str());
    assert_eq!(
        got.headers["last-modified"],
        "Sat, 05 Dec 2026 10:00:00 GMT"
    );
    let changed = app.patch(&uri, json!({"capacity": 2})).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.headers["etag"], format!("\"{id}-2\"").as_str());
}
