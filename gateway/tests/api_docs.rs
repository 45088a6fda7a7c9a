//! In-process tests of the API documentation the gateway serves: the merged OpenAPI
//! document at `/api/openapi.json` and Swagger UI at `/api/docs`, on a real
//! `Application` (port 0) with API keys configured, so "public" is tested for real.

#![allow(clippy::unwrap_used)]

mod support;

use hotel_gateway::{Application, Config, Settings, docs::ApiDocs, ratelimit::Limit};
use serde_json::{Value, json};
use support::{Gw, client, json, key, loopback};

const KEY: &str = "web-key-0123456789abcdef";

/// What a service's own document looks like: `room` and `booking` each have a `Room`
/// (different), both have the same `Stay`, both use the operation id `get`, and both
/// document routes the gateway does not route (`/healthz`).
fn service_docs() -> ApiDocs {
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let room = json!({
        "openapi": "3.1.0",
        "info": {"title": "room", "version": "1"},
        "tags": [{"name": "rooms"}],
        "paths": {
            "/rooms": {"post": {"operationId": "create", "tags": ["rooms"], "responses": {
                "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Room"}}}},
                "413": {"description": "body over 64 KiB", "content": {"application/problem+json": {"schema": problem}}}
            }}},
            "/rooms/{id}": {"get": {"operationId": "get", "responses": {
                "200": {"description": "the room", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Room"}}}}
            }}},
            "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}}
        },
        "components": {"schemas": {
            "Room": {"type": "object", "properties": {"number": {"type": "string"}, "stay": {"$ref": "#/components/schemas/Stay"}}},
            "Stay": {"type": "object", "properties": {"nights": {"type": "integer"}}}
        }}
    });
    let booking = json!({
        "openapi": "3.1.0",
        "info": {"title": "booking", "version": "1"},
        "tags": [{"name": "bookings"}],
        "paths": {
            "/bookings/{id}": {"get": {"operationId": "get", "responses": {"200": {"description": "the booking"}}}},
            "/bookings/{id}/cancel": {"post": {"responses": {"200": {"description": "cancelled"}}}},
            "/availability": {"get": {"responses": {"200": {"description": "free rooms", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Room"}}}}}}},
            "/openapi.json": {"get": {"responses": {"200": {"description": "this"}}}}
        },
        "components": {"schemas": {
            "Room": {"type": "object", "properties": {"id": {"type": "string"}}},
            "Stay": {"type": "object", "properties": {"nights": {"type": "integer"}}}
        }}
    });
    ApiDocs::new().with("room", room).with("booking", booking)
}

/// A gateway with an API key, the default routes (no instances) and `docs`.
async fn gateway(docs: &ApiDocs, tweak: impl FnOnce(&mut Settings)) -> Gw {
    let mut s = loopback();
    s.auth.keys = vec![key("web", KEY, false)];
    tweak(&mut s);
    let app = Application::build_with_docs(Config::try_from(s).unwrap(), docs)
        .await
        .unwrap();
    Gw::start(app)
}

async fn document(gw: &Gw) -> Value {
    let res = client()
        .get(gw.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    json(res).await
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn the_document_is_public_and_lists_the_services_under_the_gateway_paths() {
    let gw = gateway(&service_docs(), |_| {}).await;
    let doc = document(&gw).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(
        paths,
        [
            "/api/availability",
            "/api/bookings/{id}",
            "/api/bookings/{id}/cancel",
            "/api/rooms",
            "/api/rooms/{id}",
        ],
        "rewritten by the routes; unrouted service paths (/healthz, /openapi.json) and the \
         service without a document (customer) left out"
    );
    assert_eq!(
        doc["tags"],
        json!([{"name": "bookings"}, {"name": "rooms"}])
    );
    // Public docs do not make the API public.
    let api = client().get(gw.url("/api/rooms")).send().await.unwrap();
    assert_eq!(api.status(), 401);
}

#[tokio::test]
async fn every_operation_requires_the_api_key_and_lists_the_gateway_answers() {
    let gw = gateway(&service_docs(), |_| {}).await;
    let doc = document(&gw).await;
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(
        schemes["apiKey"],
        json!({"type": "apiKey", "in": "header", "name": "x-api-key",
               "description": "An API key issued for the client"})
    );
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Problem"]["properties"]["status"].is_object());
    let ops = operations(&doc);
    assert_eq!(ops.len(), 5);
    for (path, method, op) in ops {
        let at = format!("{method} {path}");
        assert_eq!(
            op["security"],
            json!([{"apiKey": []}, {"bearer": []}]),
            "{at}"
        );
        for status in ["401", "413", "429", "502", "503", "504"] {
            let r = &op["responses"][status];
            assert_eq!(
                r["content"]["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{at} {status}"
            );
            let retry_after = r["headers"]["Retry-After"]["schema"]["type"] == "integer";
            assert_eq!(
                retry_after,
                status == "429" || status == "503",
                "{at} {status}"
            );
        }
    }
    // A status the service documents itself keeps its meaning and gains the gateway's.
    let own = doc["paths"]["/api/rooms"]["post"]["responses"]["413"]["description"]
        .as_str()
        .unwrap();
    assert!(own.starts_with("body over 64 KiB; or: "), "{own}");
    // The services' own answers are untouched.
    assert_eq!(
        doc["paths"]["/api/rooms/{id}"]["get"]["responses"]["200"]["description"],
        "the room"
    );
}

#[tokio::test]
async fn clashing_components_and_operation_ids_are_made_unique_and_refs_follow() {
    let gw = gateway(&service_docs(), |_| {}).await;
    let doc = document(&gw).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    // booking merges first (services in name order) and keeps `Room`; room's differs.
    assert_eq!(schemas["Room"]["properties"]["id"]["type"], "string");
    assert_eq!(
        schemas["room.Room"]["properties"]["stay"]["$ref"], "#/components/schemas/Stay",
        "an identical component is kept once, under its own name"
    );
    assert!(!schemas.contains_key("room.Stay"));
    let room_ref = &doc["paths"]["/api/rooms/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["$ref"];
    assert_eq!(room_ref, "#/components/schemas/room.Room");
    let availability_ref = &doc["paths"]["/api/availability"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"]["$ref"];
    assert_eq!(availability_ref, "#/components/schemas/Room");
    assert_eq!(
        doc["paths"]["/api/bookings/{id}"]["get"]["operationId"],
        "get"
    );
    assert_eq!(
        doc["paths"]["/api/rooms/{id}"]["get"]["operationId"],
        "room_get"
    );
}

#[tokio::test]
async fn without_service_documents_the_document_still_has_what_the_gateway_adds() {
    let gw = gateway(&ApiDocs::new(), |_| {}).await;
    let doc = document(&gw).await;
    assert_eq!(doc["paths"], json!({}));
    assert_eq!(
        doc["components"]["securitySchemes"]["apiKey"]["name"],
        "x-api-key"
    );
}

#[tokio::test]
async fn the_docs_page_and_every_file_it_references_are_served_offline() {
    let gw = gateway(&service_docs(), |_| {}).await;
    let c = client();
    let page = c.get(gw.url("/api/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    let refs: Vec<&str> = html
        .split(['"'])
        .filter(|s| s.starts_with("/api/docs/"))
        .collect();
    assert_eq!(refs.len(), 6, "{refs:?}");
    for r in refs {
        let res = c.get(gw.url(r)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{r}");
        let expected = match r.rsplit('.').next().unwrap() {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "png" => "image/png",
            other => panic!("unexpected file type {other}"),
        };
        assert_eq!(res.headers()["content-type"], expected, "{r}");
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{r}");
        let body = res.bytes().await.unwrap();
        assert!(body.len() > 100, "{r} is {} bytes", body.len());
        if r.ends_with("swagger-initializer.js") {
            let js = String::from_utf8(body.to_vec()).unwrap();
            assert!(js.contains("url: \"/api/openapi.json\""), "{js}");
            assert!(js.contains("validatorUrl: null"), "{js}");
        }
    }
    let missing = c.get(gw.url("/api/docs/nope.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let post = c.post(gw.url("/api/docs")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn docs_requests_pass_the_edge_protections_like_any_other() {
    let gw = gateway(&service_docs(), |s| {
        s.rate_limit.per_ip = Some(Limit {
            rate: 0.01,
            burst: 2,
        });
    })
    .await;
    let c = client();
    let url = gw.url("/api/openapi.json");
    for _ in 0..2 {
        let res = c.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key("x-request-id"));
    }
    let limited = c.get(&url).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // An operator who lists the public paths replaces the default: docs need a key then.
    let closed = gateway(&service_docs(), |s| s.auth.public = vec!["/".into()]).await;
    let res = c.get(closed.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = c
        .get(closed.url("/api/openapi.json"))
        .header("x-api-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
