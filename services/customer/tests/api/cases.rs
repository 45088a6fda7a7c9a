// The cases of api.rs, compiled once per backend (`BACKEND`).

use hotel_customer::{Application, Settings, connect, router};
use hotel_service_testing::{Backend, TempDir, TestApp, TestDb};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashSet;

/// Settings for one test on [`BACKEND`] and what keeps its database; `None` when that
/// backend is not available here (the test is skipped, saying so).
async fn settings() -> Option<(Settings, TestDb)> {
    let db = TestDb::new(BACKEND, "customer-api").await?;
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
    router(pool, &events)
}

async fn create(app: &TestApp, name: &str, email: &str) -> Value {
    let r = app
        .post("/customers", json!({"name": name, "email": email}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    r.body
}

#[tokio::test]
async fn creating_a_customer_answers_201_and_it_reads_back_the_same() {
    let Some(app) = app().await else { return };
    let c = create(&app, "  Ada Lovelace ", "ada@example.com").await;
    assert_eq!(c["name"], "Ada Lovelace");
    assert_eq!(c["email"], "ada@example.com");
    let id = c["id"].as_str().unwrap();
    uuid::Uuid::parse_str(id).unwrap();
    let created = c["created_at"].as_str().unwrap();
    time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339).unwrap();
    let got = app.get(&format!("/customers/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, c);
}

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let Some(app) = app().await else { return };
    for bad in [&b"{"[..], b"{\"name\": }", b"not json", b""] {
        app.call_raw(Method::POST, "/customers", bad)
            .await
            .problem(400);
    }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let Some(app) = app().await else { return };
    let req = http::Request::post("/customers")
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("name=ada"))
        .unwrap();
    app.send(req).await.problem(415);
}

#[tokio::test]
async fn wrong_types_unknown_and_missing_fields_are_422_naming_the_field() {
    let Some(app) = app().await else { return };
    let cases = [
        (json!({"name": 7, "email": "a@b.co"}), "name"),
        (json!({"name": "A", "email": ["a@b.co"]}), "email"),
        (json!({"name": "A", "email": "a@b.co", "vip": true}), "vip"),
        (json!({"email": "a@b.co"}), "name"),
        (json!({"name": "A"}), "email"),
        (json!({"name": null, "email": "a@b.co"}), "name"),
    ];
    for (body, field) in cases {
        app.post("/customers", body).await.names_field(422, field);
    }
    // serde would read a struct from an array of its fields; bodies must be objects.
    app.post("/customers", json!(["Ada", "ada@example.com"]))
        .await
        .names_field(422, "body");
}

#[tokio::test]
async fn impossible_names_and_emails_are_422_naming_the_field() {
    let Some(app) = app().await else { return };
    let long = "x".repeat(201);
    for name in ["", "   ", long.as_str(), "a\u{7}b"] {
        app.post(
            "/customers",
            json!({"name": name, "email": "ok@example.com"}),
        )
        .await
        .names_field(422, "name");
    }
    for email in [
        "",
        "plain",
        "a@b",
        "@example.com",
        "a@@example.com",
        "a b@example.com",
    ] {
        app.post("/customers", json!({"name": "A", "email": email}))
            .await
            .names_field(422, "email");
    }
    let max = "é".repeat(200);
    create(&app, &max, "max@example.com").await;
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413_problem() {
    let Some(app) = app().await else { return };
    let body = format!(
        r#"{{"name": "{}", "email": "a@b.co"}}"#,
        "x".repeat(70 * 1024)
    );
    app.call_raw(Method::POST, "/customers", body)
        .await
        .problem(413);
}

#[tokio::test]
async fn a_duplicate_email_is_a_409_whatever_its_case() {
    let Some(app) = app().await else { return };
    create(&app, "Ada", "ada@example.com").await;
    for email in ["ada@example.com", "ADA@Example.COM"] {
        app.post("/customers", json!({"name": "Other", "email": email}))
            .await
            .problem(409);
    }
}

#[tokio::test]
async fn concurrent_creates_with_one_email_let_exactly_one_win() {
    let Some(app) = app().await else { return };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let router = app.router.clone();
        let email = if i % 2 == 0 {
            "race@example.com"
        } else {
            "RACE@example.com"
        };
        tasks.push(tokio::spawn(async move {
            let probe = TestApp::new(router, TempDir::new("customer-api"));
            probe
                .post(
                    "/customers",
                    json!({"name": format!("n{i}"), "email": email}),
                )
                .await
                .status
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
        app.get("/customers/not-a-uuid").await,
        app.patch("/customers/12", json!({"name": "A"})).await,
        app.delete("/customers/zzz").await,
    ] {
        let body = reply.problem(400);
        assert!(body["detail"].as_str().unwrap().contains("id"), "{body}");
    }
}

#[tokio::test]
async fn an_unknown_id_is_a_404_problem() {
    let Some(app) = app().await else { return };
    let id = uuid::Uuid::new_v4();
    app.get(&format!("/customers/{id}")).await.problem(404);
    app.patch(&format!("/customers/{id}"), json!({"name": "A"}))
        .await
        .problem(404);
    app.delete(&format!("/customers/{id}")).await.problem(404);
}

#[tokio::test]
async fn pagination_walks_every_customer_once_in_a_stable_order() {
    let Some(app) = app().await else { return };
    let mut made = HashSet::new();
    for i in 0..23 {
        made.insert(
            create(&app, &format!("C{i}"), &format!("c{i}@example.com")).await["id"].clone(),
        );
    }
    let walk = |limit: usize| {
        let app = &app;
        async move {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let uri = match &cursor {
                    Some(c) => format!("/customers?limit={limit}&cursor={c}"),
                    None => format!("/customers?limit={limit}"),
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
                pages += 1;
                match r.body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
                assert!(pages < 50, "pagination does not end");
            }
            seen
        }
    };
    let by_7 = walk(7).await;
    assert_eq!(by_7.len(), 23);
    let ids: HashSet<Value> = by_7.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, made, "every customer exactly once");
    let mut sorted = by_7.clone();
    sorted.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    assert_eq!(by_7, sorted, "ordered by (created_at, id)");
    assert_eq!(walk(100).await, by_7, "page size does not change the order");
    assert_eq!(walk(23).await, by_7);
    let default_page = app.get("/customers").await;
    assert_eq!(default_page.body["items"].as_array().unwrap().len(), 20);
}

#[tokio::test]
async fn bad_list_parameters_answer_problems_naming_them() {
    let Some(app) = app().await else { return };
    for uri in [
        "/customers?limit=0",
        "/customers?limit=101",
        "/customers?limit=-3",
    ] {
        app.get(uri).await.names_field(422, "limit");
    }
    app.get("/customers?limit=ten")
        .await
        .names_field(400, "limit");
    app.get("/customers?cursor=nonsense")
        .await
        .names_field(400, "cursor");
    app.get("/customers?cursor=7b7d")
        .await
        .names_field(400, "cursor");
    app.get("/customers?colour=red")
        .await
        .names_field(400, "colour");
}

#[tokio::test]
async fn listing_by_email_finds_the_customer_whatever_the_case() {
    let Some(app) = app().await else { return };
    let ada = create(&app, "Ada", "Ada@Example.com").await;
    create(&app, "Bob", "bob@example.com").await;
    let r = app.get("/customers?email=ada%40EXAMPLE.com").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["items"], json!([ada]));
    assert_eq!(r.body["next_cursor"], Value::Null);
    let none = app.get("/customers?email=nobody%40example.com").await;
    assert_eq!(none.body["items"], json!([]));
}

#[tokio::test]
async fn patch_changes_only_the_fields_given() {
    let Some(app) = app().await else { return };
    let c = create(&app, "Ada", "ada@example.com").await;
    let uri = format!("/customers/{}", c["id"].as_str().unwrap());
    let r = app.patch(&uri, json!({"name": " Ada King "})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Ada King");
    assert_eq!(r.body["email"], "ada@example.com");
    assert_eq!(r.body["created_at"], c["created_at"]);
    let r = app.patch(&uri, json!({"email": "ADA@example.com"})).await;
    assert_eq!(
        r.status, 200,
        "changing only the case of one's own email is fine"
    );
    assert_eq!(r.body["email"], "ADA@example.com");
    assert_eq!(r.body["name"], "Ada King");
    let r = app.patch(&uri, json!({})).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get(&uri).await.body, r.body);
}

#[tokio::test]
async fn patch_validates_like_create_and_refuses_a_taken_email() {
    let Some(app) = app().await else { return };
    let c = create(&app, "Ada", "ada@example.com").await;
    create(&app, "Bob", "bob@example.com").await;
    let uri = format!("/customers/{}", c["id"].as_str().unwrap());
    app.patch(&uri, json!({"email": "BOB@example.com"}))
        .await
        .problem(409);
    app.patch(&uri, json!({"name": ""}))
        .await
        .names_field(422, "name");
    app.patch(&uri, json!({"email": "nope"}))
        .await
        .names_field(422, "email");
    app.patch(&uri, json!({"nickname": "A"}))
        .await
        .names_field(422, "nickname");
    app.patch(&uri, json!({"name": 3}))
        .await
        .names_field(422, "name");
    app.patch(&uri, json!({"email": null}))
        .await
        .names_field(422, "email");
    app.call_raw(Method::PATCH, &uri, "{\"name\"")
        .await
        .problem(400);
    assert_eq!(app.get(&uri).await.body, c, "failed patches change nothing");
}

#[tokio::test]
async fn delete_answers_204_then_the_customer_is_gone() {
    let Some(app) = app().await else { return };
    let c = create(&app, "Ada", "ada@example.com").await;
    let uri = format!("/customers/{}", c["id"].as_str().unwrap());
    let r = app.delete(&uri).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.body, Value::Null);
    app.get(&uri).await.problem(404);
    app.delete(&uri).await.problem(404);
    create(&app, "Ada again", "ada@example.com").await;
}

#[tokio::test]
async fn health_readiness_and_unknown_routes_answer_as_in_every_service() {
    let Some(app) = app().await else { return };
    hotel_service_testing::assert_health_and_unknown_routes(&app, "/nope", "/customers").await;
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let Some(app) = app().await else { return };
    hotel_service_testing::assert_openapi_matches_routes(&app).await;
    let doc = app.get("/openapi.json").await.body;
    for (path, method) in [
        ("/customers", "post"),
        ("/customers", "get"),
        ("/customers/{id}", "get"),
        ("/customers/{id}", "patch"),
        ("/customers/{id}", "delete"),
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
    hotel_service_testing::assert_documents_problems(&doc);
    assert_eq!(
        hotel_common::openapi::to_json(&hotel_customer::openapi()),
        doc
    );
}

#[tokio::test]
async fn names_and_emails_follow_one_rule_on_post_and_patch() {
    let Some(app) = app().await else { return };
    let c = create(&app, "Ada", "ada@example.com").await;
    let uri = format!("/customers/{}", c["id"].as_str().unwrap());
    // 201 characters as sent is too long even when trimming would leave 200.
    let padded = format!(" {}", "x".repeat(200));
    for name in [
        "a\u{85}b",
        "Ada\u{202e}nimda",
        "\u{2066}Ada",
        "\u{a0}\u{3000}",
        " \t ",
        padded.as_str(),
    ] {
        app.post(
            "/customers",
            json!({"name": name, "email": "other@example.com"}),
        )
        .await
        .names_field(422, "name");
        app.patch(&uri, json!({"name": name}))
            .await
            .names_field(422, "name");
    }
    for email in [
        "jos\u{e9}@example.com",
        "ada@b\u{fc}cher.de",
        " other@example.com",
        "other@example.com ",
        "a..b@example.com",
    ] {
        app.post("/customers", json!({"name": "Other", "email": email}))
            .await
            .names_field(422, "email");
        app.patch(&uri, json!({"email": email}))
            .await
            .names_field(422, "email");
    }
    assert_eq!(app.get(&uri).await.body, c, "failed patches change nothing");
}

#[tokio::test]
async fn the_patch_schema_states_the_same_constraints_as_the_post_schema() {
    let Some(app) = app().await else { return };
    let doc = app.get("/openapi.json").await.body;
    let schemas = &doc["components"]["schemas"];
    let resolve = |v: &Value| -> Value {
        match v["$ref"].as_str() {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => v.clone(),
        }
    };
    for field in ["name", "email"] {
        let post = resolve(&schemas["NewCustomer"]["properties"][field]);
        let patch = resolve(&schemas["CustomerPatch"]["properties"][field]);
        assert_eq!(post, patch, "{field}");
        for key in ["minLength", "maxLength", "pattern"] {
            assert!(
                post[key].is_number() || post[key].is_string(),
                "{field} {key}"
            );
        }
    }
    let email = resolve(&schemas["NewCustomer"]["properties"]["email"]);
    assert_eq!(email["format"], "email");
}

#[tokio::test]
async fn an_empty_cursor_means_the_first_page() {
    let Some(app) = app().await else { return };
    create(&app, "Ada", "ada@example.com").await;
    let r = app.get("/customers?cursor=").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn odd_inputs_never_answer_a_server_error() {
    let Some(app) = app().await else { return };
    let c = create(&app, "Ada", "ada@example.com").await;
    let id = c["id"].as_str().unwrap().to_owned();
    let bodies: [&[u8]; 8] = [
        b"null",
        b"[]",
        b"\"text\"",
        b"{\"name\": \"\\u0000\", \"email\": \"a@b.co\"}",
        b"{\"name\": \"a\", \"email\": \"a@b.co\", \"name\": \"b\"}",
        b"{\"name\": 1e400, \"email\": \"a@b.co\"}",
        b"\xff\xfe",
        b"{\"name\": \"\xed\xa0\x80\", \"email\": \"a@b.co\"}",
    ];
    for body in bodies {
        for (method, uri) in [
            (Method::POST, "/customers".to_owned()),
            (Method::PATCH, format!("/customers/{id}")),
        ] {
            let r = app.call_raw(method.clone(), &uri, body).await;
            assert!(r.status.is_client_error(), "{method} {uri} {body:?}: {r:?}");
        }
    }
    for uri in [
        "/customers?email=%ff",
        "/customers?limit=99999999999999999999",
        "/customers/%00",
    ] {
        let r = app.get(uri).await;
        assert!(
            r.status.is_client_error() || r.status.is_success(),
            "{uri}: {r:?}"
        );
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
        TempDir::new("customer-api"),
    );
    let b = TestApp::new(
        full_router(&settings, connect(&settings).await.unwrap()),
        TempDir::new("customer-api"),
    );
    let c = create(&a, "Ada", "ada@example.com").await;
    let seen = b
        .get(&format!("/customers/{}", c["id"].as_str().unwrap()))
        .await;
    assert_eq!(seen.body, c, "replicas share the database");
    b.post(
        "/customers",
        json!({"name": "X", "email": "ADA@example.com"}),
    )
    .await
    .problem(409);
}

#[tokio::test]
async fn an_application_serves_on_an_ephemeral_port_until_shut_down() {
    let Some((settings, db)) = settings().await else {
        return;
    };
    let app = Application::build(settings).await.unwrap();
    assert_eq!(
        db.dir.path().join("customer.db").exists(),
        BACKEND == Backend::Sqlite,
        "the file exists on SQLite only"
    );
    hotel_service_testing::assert_serves_until_shut_down(app).await;
}

const PERSONAL: &str = "private, no-store";

#[tokio::test]
async fn a_customer_read_is_private_carries_validators_and_answers_304() {
    let Some(app) = app().await else { return };
    let c = create(&app, "Grace Hopper", "grace@example.com").await;
    let uri = format!("/customers/{}", c["id"].as_str().unwrap());
    let etag = hotel_service_testing::assert_conditional_get(&app, &uri, PERSONAL).await;
    assert_eq!(etag, format!("\"{}-1\"", c["id"].as_str().unwrap()));
    hotel_service_testing::assert_conditional_list(&app, "/customers", PERSONAL).await;
}

#[tokio::test]
async fn every_write_bumps_the_version_and_if_match_guards_patch_and_delete() {
    let Some(app) = app().await else { return };
    let created = app
        .post(
            "/customers",
            json!({"name": "Alan", "email": "alan@example.com"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let uri = format!("/customers/{}", created.body["id"].as_str().unwrap());
    assert_eq!(created.headers["location"], uri.as_str());
    let v1 = created.headers["etag"].to_str().unwrap().to_owned();
    let patch = json!({"name": "Alan Turing"});
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
    assert!(v2.ends_with("-2\""), "{v2}");
    assert_eq!(app.get(&uri).await.headers["etag"], v2.as_str());
    hotel_service_testing::assert_if_match_refused(&app, Method::DELETE, &uri, &uri, &v2, None)
        .await;
    let stale =
        hotel_service_testing::call_with(&app, Method::DELETE, &uri, &[("if-match", &v1)], None)
            .await;
    stale.problem(412);
    let gone =
        hotel_service_testing::call_with(&app, Method::DELETE, &uri, &[("if-match", &v2)], None)
            .await;
    assert_eq!(gone.status, 204);
    app.get(&uri).await.problem(404);
    let again =
        hotel_service_testing::call_with(&app, Method::DELETE, &uri, &[("if-match", "*")], None)
            .await;
    again.problem(404);
}

#[tokio::test]
async fn location_names_the_customer_as_the_client_addresses_it_behind_a_proxy() {
    let Some(app) = app().await else { return };
    let r = hotel_service_testing::call_with(
        &app,
        Method::POST,
        "/customers",
        &[("x-forwarded-prefix", "/api/")],
        Some(json!({"name": "Edsger", "email": "ew@example.com"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let want = format!("/api/customers/{}", r.body["id"].as_str().unwrap());
    assert_eq!(r.headers["location"], want.as_str());
}

#[tokio::test]
async fn customers_stored_before_versions_existed_read_back_as_version_1_last_changed_when_created()
{
    let Some((settings, db)) = settings().await else {
        return;
    };
    // The database as the first release left it: only the first migration applied.
    let pool = hotel_service_testing::database_as_released(
        &settings.database_location().unwrap(),
        &settings.database,
        env!("CARGO_MANIFEST_DIR"),
        &["20261129000001_customers.sql"],
    )
    .await;
    let id = uuid::Uuid::new_v4();
    // 2026-12-05T10:00:00.25Z
    let created_at: i64 = 1_796_464_800_250_000;
    sqlx::query(
        "INSERT INTO customers (id, name, email, email_key, created_at) \
         VALUES ($1, 'Old Guest', 'old@example.com', 'old@example.com', $2)",
    )
    .bind(id.to_string())
    .bind(created_at)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let pool = connect(&settings).await.unwrap();
    let app = TestApp::new(full_router(&settings, pool), db);
    let uri = format!("/customers/{id}");
    let got = app.get(&uri).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.headers["etag"], format!("\"{id}-1\"").as_str());
    assert_eq!(
        got.headers["last-modified"],
        "Sat, 05 Dec 2026 10:00:00 GMT"
    );
    let changed = app.patch(&uri, json!({"name": "Old Guest Renamed"})).await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.headers["etag"], format!("\"{id}-2\"").as_str());
}
