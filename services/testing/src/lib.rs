//! Test harness shared by the domain services' in-process tests: a router over a fresh
//! database file in its own temporary directory, called with `oneshot`, and assertions
//! on the problem+json answers and the OpenAPI document every service serves.
//!
//! A dev-dependency only; it panics on anything unexpected because that is how a test
//! fails.

#![allow(clippy::expect_used)]

use axum::{Router, body::Body};
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub use hotel_testkit::{
    TempDir,
    postgres::{Backend, TestDb},
};

/// Opens the database at `location` as an earlier release left it: only the migrations
/// `names` of the crate at `manifest_dir` (its `env!("CARGO_MANIFEST_DIR")`) applied,
/// from `migrations/` or `migrations-postgres/` by the backend. An upgrade test inserts
/// rows of that release next, then builds the service, which migrates the rest.
pub async fn database_as_released(
    location: &hotel_common::db::Location,
    settings: &hotel_common::db::DatabaseSettings,
    manifest_dir: &str,
    names: &[&str],
) -> sqlx::AnyPool {
    let history = match location.backend() {
        hotel_common::db::Backend::Sqlite => "migrations",
        hotel_common::db::Backend::Postgres => "migrations-postgres",
    };
    let released = TempDir::new("released-migrations");
    let migrations = std::path::Path::new(manifest_dir).join(history);
    for name in names {
        std::fs::copy(migrations.join(name), released.path().join(name))
            .expect("copying a migration");
    }
    let pool = hotel_common::db::open(location, settings)
        .await
        .expect("opening the database");
    sqlx::migrate::Migrator::new(released.path())
        .await
        .expect("reading the released migrations")
        .run(&pool)
        .await
        .expect("applying the released migrations");
    pool
}

/// What every service answers alike: `/healthz` 200, `/readyz` 200 `ready`, an
/// `unknown` path 404 and `PUT collection` 405, both as problems.
pub async fn assert_health_and_unknown_routes(app: &TestApp, unknown: &str, collection: &str) {
    assert_eq!(app.get("/healthz").await.status, 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");
    app.get(unknown).await.problem(404);
    app.call(Method::PUT, collection, Some(serde_json::json!({})))
        .await
        .problem(405);
}

/// What a test reads back from one call.
#[derive(Debug)]
pub struct Reply {
    /// The response status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The JSON body; `Null` when empty, a string when not JSON.
    pub body: Value,
}

impl Reply {
    /// Asserts a problem+json answer with `status` and returns its body.
    pub fn problem(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/problem+json",
            "{:?}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        &self.body
    }

    /// Asserts a 422 (or `status`) problem naming `field` in `errors`.
    pub fn names_field(&self, status: u16, field: &str) {
        let body = self.problem(status);
        let named = body["errors"]
            .as_array()
            .is_some_and(|errs| errs.iter().any(|e| e["field"] == field));
        assert!(named, "expected {field} named in {body}");
    }
}

/// A service router over its own database.
pub struct TestApp {
    /// The service's whole router (not served; called with `oneshot`).
    pub router: Router,
    /// Its database (the directory of its file, or its PostgreSQL database), removed
    /// with the app.
    pub db: TestDb,
}

impl TestApp {
    /// Wraps `router`, which keeps its database in `db` (a `TempDir` for a SQLite file).
    pub fn new(router: Router, db: impl Into<TestDb>) -> Self {
        TestApp {
            router,
            db: db.into(),
        }
    }

    /// Sends a request with an optional JSON body.
    pub async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).expect("serialise"))
            }
            None => Body::empty(),
        };
        self.send(req.body(body).expect("request")).await
    }

    /// Sends raw bytes as a JSON body.
    pub async fn call_raw(&self, method: Method, uri: &str, bytes: impl Into<Vec<u8>>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes.into()))
            .expect("request");
        self.send(req).await
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.expect("infallible");
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET uri`.
    pub async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    /// `POST uri` with a JSON body.
    pub async fn post(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::POST, uri, Some(body)).await
    }

    /// `PATCH uri` with a JSON body.
    pub async fn patch(&self, uri: &str, body: Value) -> Reply {
        self.call(Method::PATCH, uri, Some(body)).await
    }

    /// `DELETE uri`.
    pub async fn delete(&self, uri: &str) -> Reply {
        self.call(Method::DELETE, uri, None).await
    }
}

/// Replaces `{...}` path parameters of an OpenAPI path with a fresh UUID.
pub fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("closing brace");
        out.push_str(&uuid::Uuid::new_v4().to_string());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Checks that every documented path+method is served and that on every documented path
/// the methods left undocumented answer 405: the document and the router agree.
pub async fn assert_openapi_matches_routes(app: &TestApp) {
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert_eq!(
        doc.body["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    let paths = doc.body["paths"].as_object().expect("paths");
    assert!(!paths.is_empty());
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for (path, item) in paths {
        for method in &all {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let body = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
                .then(|| serde_json::json!({}));
            let reply = app.call(method.clone(), &concrete(path), body).await;
            let no_route = reply.body["type"] == "/problems/no-route";
            let not_allowed = reply.status == StatusCode::METHOD_NOT_ALLOWED;
            if documented {
                assert!(
                    !no_route && !not_allowed,
                    "{method} {path} is documented but not served: {reply:?}"
                );
            } else {
                assert!(
                    not_allowed,
                    "{method} {path} is served but not documented: {reply:?}"
                );
            }
            assert!(
                !reply.status.is_server_error(),
                "{method} {path}: {reply:?}"
            );
        }
    }
}

/// Checks the life of a built application: it is bound to a real (ephemeral) port,
/// answers `/readyz` 200 over plain TCP while serving, stops within 30 s of its shutdown
/// signal without error, and then no longer accepts connections.
pub async fn assert_serves_until_shut_down<A>(app: A)
where
    A: hotel_service::Service + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.expect("read reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    stop.send(()).expect("server still waiting for its signal");
    tokio::time::timeout(std::time::Duration::from_secs(30), server)
        .await
        .expect("server stops after the signal")
        .expect("server task")
        .expect("server ends without error");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
}

/// Asserts that an OpenAPI document lists every failure its handlers can answer: each
/// operation taking a JSON body documents 400 (malformed JSON), 413 (over the body
/// limit), 415 (not JSON) and 422 (a field invalid), and every 4xx and 5xx it documents is
/// `application/problem+json` with the `Problem` schema.
pub fn assert_documents_problems(doc: &Value) {
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let responses = op["responses"].as_object().expect("responses");
            if op.get("requestBody").is_some() {
                for status in ["400", "413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} takes a body but does not document {status}"
                    );
                }
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status} is not documented as problem+json"
                    );
                }
            }
        }
    }
}

/// Sends `method uri` (with a JSON `body`) carrying the extra `headers`.
pub async fn call_with(
    app: &TestApp,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&v).expect("serialise"))
        }
        None => Body::empty(),
    };
    app.send(req.body(body).expect("request")).await
}

/// Checks the validators and conditional GETs of the single entity at `uri` (RFC 9110
/// section 13): a strong `ETag`, `Last-Modified` and `cache_control` on the 200; 304 with
/// no body (ETag and Cache-Control kept) for `If-None-Match` naming it (strong, weak,
/// in a list, or `*`) and for `If-Modified-Since` at or after `Last-Modified`; 200 for
/// another tag or an earlier date. Returns the entity's `ETag`.
pub async fn assert_conditional_get(app: &TestApp, uri: &str, cache_control: &str) -> String {
    let first = app.get(uri).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let etag = first.headers[header::ETAG]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong: {etag}"
    );
    assert_eq!(first.headers[header::CACHE_CONTROL], cache_control);
    let modified = first.headers[header::LAST_MODIFIED]
        .to_str()
        .expect("ascii")
        .to_owned();
    let weak = format!("W/{etag}");
    let listed = format!("\"nope\", {etag}");
    for inm in [etag.as_str(), &weak, &listed, "*"] {
        let r = call_with(app, Method::GET, uri, &[("if-none-match", inm)], None).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-None-Match: {inm}");
        assert_eq!(r.body, Value::Null, "a 304 has no body");
        assert_eq!(r.headers[header::ETAG], etag.as_str());
        assert_eq!(r.headers[header::CACHE_CONTROL], cache_control);
    }
    for inm in ["\"nope\"", "not a tag"] {
        let r = call_with(app, Method::GET, uri, &[("if-none-match", inm)], None).await;
        assert_eq!(r.status, StatusCode::OK, "If-None-Match: {inm}");
        assert_eq!(r.body, first.body);
    }
    let r = call_with(
        app,
        Method::GET,
        uri,
        &[("if-modified-since", &modified)],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-Modified-Since");
    let r = call_with(
        app,
        Method::GET,
        uri,
        &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "modified since 1970");
    let r = call_with(
        app,
        Method::GET,
        uri,
        &[
            ("if-none-match", "\"nope\""),
            ("if-modified-since", &modified),
        ],
        None,
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "If-None-Match wins over If-Modified-Since"
    );
    etag
}

/// Checks the weak `ETag` of the list at `uri` and that `If-None-Match` with it answers
/// 304 until the list changes. Returns the tag.
pub async fn assert_conditional_list(app: &TestApp, uri: &str, cache_control: &str) -> String {
    let page = app.get(uri).await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    let etag = page.headers[header::ETAG]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(etag.starts_with("W/\""), "a page's tag is weak: {etag}");
    assert_eq!(page.headers[header::CACHE_CONTROL], cache_control);
    let r = call_with(app, Method::GET, uri, &[("if-none-match", &etag)], None).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert_eq!(r.body, Value::Null);
    etag
}

/// Checks that `method uri` with an `If-Match` that does not name the current version
/// (another tag, or the current one made weak) is refused with 412
/// `/problems/precondition-failed` and changes nothing (`uri` reads back as before and
/// keeps `etag`).
pub async fn assert_if_match_refused(
    app: &TestApp,
    method: Method,
    uri: &str,
    read: &str,
    etag: &str,
    body: Option<Value>,
) {
    let before = app.get(read).await;
    let weak = format!("W/{etag}");
    for stale in ["\"nope\"", weak.as_str(), "garbage"] {
        let r = call_with(
            app,
            method.clone(),
            uri,
            &[("if-match", stale)],
            body.clone(),
        )
        .await;
        let p = r.problem(412);
        assert_eq!(p["type"], "/problems/precondition-failed", "{p}");
    }
    let after = app.get(read).await;
    assert_eq!(after.body, before.body, "a refused change changes nothing");
    assert_eq!(after.headers[header::ETAG], etag);
}
