//! The layers every service router gets, in one place: health endpoints, problem+json
//! for unknown routes and methods, the body limit, the head checks (`Host` as RFC 9112
//! 3.2 requires, header count and size: [`head_problem`]), the request context and the
//! server span, credentials marked sensitive, and gzip for JSON bodies the client accepts gzip for.
//!
//! Compression happens here, at the services, not at the gateway: the gateway streams an
//! instance's body through untouched (`Content-Encoding` included), so a compressed answer
//! costs the gateway nothing, and clients that do not send `Accept-Encoding: gzip` (the
//! gateway's own upstream client, booking's calls to customer and room, the tests) get
//! the plain body as before.

use crate::{
    Problem, context,
    fault::{FaultLayer, Faults},
    health,
};
use axum::{Router, extract::DefaultBodyLimit, middleware};
use http::{HeaderMap, HeaderName, StatusCode, Version, header};
use tower_http::{
    compression::{CompressionLayer, Predicate, predicate::SizeAbove},
    sensitive_headers::SetSensitiveHeadersLayer,
};

/// Default request body limit of a service (64 KiB): bookings and customers are tiny.
pub const SERVICE_BODY_LIMIT: usize = 64 * 1024;

/// Most header field lines a service accepts in a request (431 problem+json past it).
/// Above the gateway's own default (`[limits] max_headers`, 64) plus the headers the
/// gateway adds, so a request the gateway passes is never refused here for its head.
pub const SERVICE_MAX_HEADERS: usize = 100;

/// Largest request head (request line and header fields) a service accepts, in bytes
/// (431 problem+json past it). Above the gateway's default (`[limits]
/// max_header_bytes`, 32 KiB).
pub const SERVICE_MAX_HEADER_BYTES: usize = 64 * 1024;

/// How far above a server's own head limits hyper's are set: hyper answers a head past
/// its limits itself, with a bare 431 and no body, so our checks (which answer
/// problem+json with the request id) must see the head first.
pub const HYPER_HEAD_HEADROOM: usize = 4;

/// Limits on a request head, checked by [`head_problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Most header field lines.
    pub max_headers: usize,
    /// Largest head in bytes: request line plus `name: value\r\n` per field.
    pub max_header_bytes: usize,
}

impl HeadLimits {
    /// The services' limits.
    pub const SERVICE: HeadLimits = HeadLimits {
        max_headers: SERVICE_MAX_HEADERS,
        max_header_bytes: SERVICE_MAX_HEADER_BYTES,
    };
}

/// What is wrong with a request's head, as the problem to answer: a `Host` header
/// missing from an HTTP/1.1 request, repeated, or not a valid authority (400, RFC 9112
/// 3.2), or more header lines or bytes than `limits` allow (431). The `Host` rules are
/// rules of messages read from a connection (`from_wire`); a request built in-process
/// (a router called with `oneshot`) has no `Host` to check.
pub fn head_problem<B>(
    req: &http::Request<B>,
    limits: HeadLimits,
    from_wire: bool,
) -> Option<Problem> {
    let h = req.headers();
    if h.len() > limits.max_headers {
        return Some(too_many_headers(format!(
            "the request has more than {} header fields",
            limits.max_headers
        )));
    }
    let uri = req.uri();
    // Origin form (nearly every request) without formatting the URI anew.
    let target = match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (None, None, Some(pq)) => pq.as_str().len(),
        _ => uri.to_string().len(),
    };
    let line = req.method().as_str().len() + target + 12;
    let size = h
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4);
    if size > limits.max_header_bytes {
        return Some(too_many_headers(format!(
            "the request head is larger than {} bytes",
            limits.max_header_bytes
        )));
    }
    // HTTP/2 and HTTP/3 carry the authority in `:authority`; RFC 9112 rules are HTTP/1's.
    if !from_wire || !matches!(req.version(), Version::HTTP_10 | Version::HTTP_11) {
        return None;
    }
    let mut hosts = h.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() == Version::HTTP_11 => {
            Some(bad_host("an HTTP/1.1 request must carry a Host header"))
        }
        (Some(_), Some(_)) => Some(bad_host("the request carries more than one Host header")),
        (Some(v), None) if !v.is_empty() && !is_authority(v.as_bytes()) => {
            Some(bad_host("the Host header is not a valid host[:port]"))
        }
        _ => None,
    }
}

/// Whether `host` is a valid `host[:port]`, as [`http::uri::Authority`] parses it.
/// The usual value (a name or IPv4 address, an optional port) is recognised from its
/// bytes; anything else goes to `Authority`, whose parse copies the value into a new
/// buffer (about 300 instructions, on every request).
fn is_authority(host: &[u8]) -> bool {
    // 1: a letter, digit, `.` or `-`; 2: a colon.
    const PLAIN: [u8; 256] = {
        let mut t = [0u8; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            if c.is_ascii_alphanumeric() || c == b'.' || c == b'-' {
                t[b] = 1;
            } else if c == b':' {
                t[b] = 2;
            }
            b += 1;
        }
        t
    };
    let mut colons = 0;
    let mut plain = !host.is_empty();
    for &b in host {
        let class = PLAIN[b as usize];
        plain &= class != 0;
        colons += usize::from(class == 2);
    }
    // Such a value has no `@`, `%`, brackets or path, so `Authority` takes it exactly
    // when it has at most one colon and is not empty.
    if plain && colons <= 1 {
        return true;
    }
    http::uri::Authority::try_from(host).is_ok()
}

fn too_many_headers(detail: String) -> Problem {
    Problem::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers-too-large",
        detail,
    )
}

fn bad_host(detail: &str) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad-host", detail)
}

/// Refuses a request whose head [`head_problem`] finds fault with. It runs before the
/// request context adds its `x-request-id` (which would count against the limits), so
/// it names the request id itself, as the context layer would.
async fn check_head(
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    // `serve` marks every request read from a connection with its peer.
    let from_wire = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some();
    let Some(mut p) = head_problem(&req, HeadLimits::SERVICE, from_wire) else {
        return next.run(req).await;
    };
    let request_id = context::request_id_of(req.headers());
    tracing::info!(status = p.status, detail = %p.detail, request_id = %request_id, "request head refused");
    p.request_id = Some(request_id.clone());
    let mut res = p.into_response();
    let h = res.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&request_id) {
        h.insert(context::REQUEST_ID_NAME, v);
    }
    // A head this wrong says nothing good about what follows on the connection.
    h.insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    res
}

/// Bodies smaller than this are sent as they are: gzip would save a few bytes for a
/// checksum and a header, at a CPU cost on every request.
pub const COMPRESS_ABOVE_BYTES: u64 = 1024;

/// Headers whose values are credentials: marked sensitive on requests and responses so a
/// `Debug` print of the headers (a log line, a panic message) shows `Sensitive` instead.
pub fn sensitive_headers() -> [HeaderName; 4] {
    [
        header::AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
        header::COOKIE,
        header::SET_COOKIE,
    ]
}

/// Whether a response is compressed: JSON (`application/json`, `application/problem+json`)
/// above [`COMPRESS_ABOVE_BYTES`], and nothing else (`/metrics` text, health answers).
fn compress_json() -> impl Predicate {
    let json = |_: StatusCode, _: Version, h: &HeaderMap, _: &http::Extensions| {
        h.get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let ct = ct.split(';').next().unwrap_or("").trim();
                ct.eq_ignore_ascii_case("application/json")
                    || ct.eq_ignore_ascii_case("application/problem+json")
            })
    };
    // JSON only, so the default predicate's exclusions (images, gRPC, event streams)
    // are implied.
    SizeAbove::new(COMPRESS_ABOVE_BYTES).and(json)
}

/// Wraps a service's routes with the shared layers. `role` names the server span.
/// Without a fault switch: for fakes and tests; instances use [`finish_instance`].
pub fn finish(
    role: &'static str,
    routes: Router,
    readiness: health::ReadinessCheck,
    body_limit: usize,
) -> Router {
    let faults = Faults::disabled();
    let metrics = crate::metrics::InstanceMetrics::new(&faults);
    finish_instance(role, routes, readiness, body_limit, &faults, &metrics)
}

/// [`finish`] for a real instance (every service and the registry): also its fault
/// switch, the control endpoint [`crate::fault::FAULT_PATH`] (when `faults` has a
/// token) and the fault layer, inside the server span and the request context so an
/// injected fault is on the span and its problem carries the request id; and its
/// `/metrics` (`metrics`, which counts and times every request).
pub fn finish_instance(
    role: &'static str,
    routes: Router,
    readiness: health::ReadinessCheck,
    body_limit: usize,
    faults: &Faults,
    metrics: &std::sync::Arc<crate::metrics::InstanceMetrics>,
) -> Router {
    routes
        .merge(faults.router())
        .merge(metrics.router())
        .merge(health::router(readiness))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no-route", "no such route") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not accept that method",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            CompressionLayer::new()
                .gzip(true)
                .compress_when(compress_json()),
        )
        .layer(FaultLayer::new(faults.clone()))
        .layer(middleware::from_fn(context::request_context))
        .layer(middleware::from_fn_with_state(
            metrics.clone(),
            crate::metrics::InstanceMetrics::layer,
        ))
        // Sees the head as the client sent it; names the request id itself.
        .layer(middleware::from_fn(check_head))
        .layer(middleware::from_fn_with_state(
            role,
            crate::telemetry::server_span,
        ))
        // Outermost, so the headers are marked before any layer or handler can print them.
        .layer(SetSensitiveHeadersLayer::new(sensitive_headers()))
}

/// The path prefix a proxy in front of a service strips (`X-Forwarded-Prefix: /api`), so
/// that a `Location` names the resource as the client addresses it
/// (`/api/rooms/{id}`). Anything but a plain path of at most 64 characters is ignored
/// rather than echoed; no header is the empty prefix.
pub fn forwarded_prefix(headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| {
            p.len() <= 64
                && p.starts_with('/')
                && !p.contains("..")
                && !p.contains("//")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        })
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::{body::Body, routing::get};
    use http::Request;
    use http_body_util::BodyExt;
    use std::io::Read;
    use tower::ServiceExt;

    #[test]
    fn host_values_are_judged_as_authority_judges_them() {
        // Every value up to four bytes over an alphabet that reaches each of `Authority`'s
        // rules (colons, brackets, `@`, `%`, a path, a space), and some longer ones.
        let alphabet = b"a9.-:[]@%/ ";
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        let mut last = values.clone();
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|v| {
                    alphabet.iter().map(move |&b| {
                        let mut v = v.clone();
                        v.push(b);
                        v
                    })
                })
                .collect();
            values.extend(last.iter().cloned());
        }
        for v in [
            "127.0.0.1:18080",
            "localhost",
            "rooms.example:80",
            "[::1]:8080",
            "a:b:c",
            "user@host:1",
            "host:99999",
            "HOST.Example:x",
        ] {
            values.push(v.as_bytes().to_vec());
        }
        for v in &values {
            assert_eq!(
                is_authority(v),
                http::uri::Authority::try_from(v.as_slice()).is_ok(),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    /// A service whose `/big` answers ~4 KiB of JSON, `/small` a few bytes, `/text` 4 KiB
    /// of plain text, and `/seen` whether the request's credentials were marked sensitive.
    fn app() -> Router {
        let big = serde_json::json!({"items": vec!["room"; 800]});
        let routes = Router::new()
            .route("/big", get(move || async move { axum::Json(big) }))
            .route(
                "/small",
                get(|| async { axum::Json(serde_json::json!({"ok": 1})) }),
            )
            .route("/text", get(|| async { "x".repeat(4096) }))
            .route(
                "/seen",
                get(|h: HeaderMap| async move {
                    let sensitive = |n: &str| h.get(n).is_some_and(|v| v.is_sensitive());
                    axum::Json(serde_json::json!({
                        "authorization": sensitive("authorization"),
                        "x-api-key": sensitive("x-api-key"),
                        "cookie": sensitive("cookie"),
                        "accept": sensitive("accept"),
                    }))
                }),
            );
        finish("test", routes, health::always_ready(), SERVICE_BODY_LIMIT)
    }

    async fn get_with(path: &str, headers: &[(&str, &str)]) -> http::Response<Body> {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn bytes(res: http::Response<Body>) -> Vec<u8> {
        res.into_body().collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn json_above_the_floor_is_gzipped_when_the_client_accepts_gzip() {
        let res = get_with("/big", &[("accept-encoding", "gzip")]).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
        let zipped = bytes(res).await;
        let mut plain = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut plain)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&plain).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 800);
        assert!(zipped.len() < plain.len() / 4);
    }

    #[tokio::test]
    async fn without_accept_encoding_small_bodies_or_non_json_nothing_is_compressed() {
        let plain = get_with("/big", &[]).await;
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        serde_json::from_slice::<serde_json::Value>(&bytes(plain).await).unwrap();
        for path in ["/small", "/text", "/nope"] {
            let res = get_with(path, &[("accept-encoding", "gzip")]).await;
            assert!(
                res.headers().get(header::CONTENT_ENCODING).is_none(),
                "{path} was compressed"
            );
        }
    }

    #[tokio::test]
    async fn credentials_are_marked_sensitive_before_the_handler_sees_them() {
        let res = get_with(
            "/seen",
            &[
                ("authorization", "Bearer k"),
                ("x-api-key", "k"),
                ("cookie", "a=b"),
                ("accept", "application/json"),
            ],
        )
        .await;
        let v: serde_json::Value = serde_json::from_slice(&bytes(res).await).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"authorization": true, "x-api-key": true, "cookie": true, "accept": false})
        );
    }
}
