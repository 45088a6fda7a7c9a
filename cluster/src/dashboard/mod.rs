//! The live dashboard of `hotel up`, served on its control listener (loopback only):
//! `/dashboard/login?token=dsh_...` trades the per-run token (in the banner and in
//! `cluster.json` as `dashboard_url`) for an `HttpOnly; SameSite=Strict` session cookie;
//! `/dashboard` is the page (HTML, CSS and JS compiled into the binary, so it works
//! offline); `/dashboard/events` streams the [`sampler`]'s snapshots as server-sent events.
//!
//! The page's buttons call the same control API as the CLI (`/v1/...`), which accepts the
//! session cookie in place of the bearer token only together with `x-hotel-dashboard: 1`:
//! a header another origin cannot send without a CORS preflight, which nothing here
//! answers. Every dashboard answer carries a strict Content-Security-Policy, and a Host
//! other than a loopback name is refused (DNS rebinding).

pub mod prom;
pub mod sampler;

use axum::{
    Router,
    extract::{Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Redirect, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use hotel_common::Problem;
use sampler::Published;
use serde::Deserialize;
use std::{convert::Infallible, sync::Arc, time::Duration};
use subtle::ConstantTimeEq;
use tokio::sync::watch;

/// The session cookie's name.
pub const COOKIE: &str = "hotel_dashboard";

/// The header the page sends with every control call (CSRF protection).
pub const CSRF_HEADER: &str = "x-hotel-dashboard";

/// The Content-Security-Policy of every dashboard answer: only this origin's own script
/// and style, no inline code, no framing, no form posts, no referrer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// The secrets of one run's dashboard.
#[derive(Clone)]
pub struct DashboardAuth {
    /// `dsh_...`: the login token in `dashboard_url`.
    token: Arc<str>,
    /// The session cookie's value, handed out by a successful login.
    session: Arc<str>,
}

impl std::fmt::Debug for DashboardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DashboardAuth([redacted])")
    }
}

fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

impl DashboardAuth {
    /// `token` is the login token (`dsh_...`), `session` the cookie value; both random
    /// per run.
    pub fn new(token: String, session: String) -> Self {
        DashboardAuth {
            token: token.into(),
            session: session.into(),
        }
    }

    /// The login token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether the request carries this run's session cookie.
    pub fn has_session(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .any(|v| same(v, &self.session))
    }

    /// Whether a control call is the dashboard's: the session cookie, the CSRF header
    /// and a loopback Host.
    pub fn allows_control(&self, headers: &HeaderMap) -> Result<(), Box<Problem>> {
        if !self.has_session(headers) {
            return Err(Box::new(Problem::unauthorized(
                "the control API needs the control_token from cluster.json",
            )));
        }
        loopback_host(headers)?;
        if headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
            return Err(Box::new(Problem::new(
                StatusCode::FORBIDDEN,
                "csrf",
                format!("a control call with the dashboard's cookie must carry `{CSRF_HEADER}: 1`"),
            )));
        }
        Ok(())
    }
}

/// Refuses a Host that is not a loopback name: a page on another site whose name was
/// rebound to 127.0.0.1 would otherwise be same-origin with the dashboard.
fn loopback_host(headers: &HeaderMap) -> Result<(), Box<Problem>> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    if matches!(name, "127.0.0.1" | "localhost" | "::1") {
        Ok(())
    } else {
        Err(Box::new(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden-host",
            "the dashboard answers only on a loopback address (127.0.0.1, localhost, [::1])",
        )))
    }
}

/// What the dashboard routes read.
#[derive(Clone)]
struct Dash {
    auth: DashboardAuth,
    /// The sampler's latest publication; each page's event stream watches it.
    feed: watch::Receiver<Arc<Published>>,
}

/// The dashboard's routes (`/dashboard/...`), to merge into the control router.
pub fn router(auth: DashboardAuth, feed: watch::Receiver<Arc<Published>>) -> Router {
    let state = Dash { auth, feed };
    let private = Router::new()
        .route(
            "/dashboard",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/dashboard/events", get(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), need_session));
    Router::new()
        .route("/dashboard/login", get(login))
        .merge(private)
        .layer(middleware::from_fn(guard))
        .with_state(state)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Loopback Host only, and the security headers on every answer.
async fn guard(req: Request, next: Next) -> Response {
    let mut res = match loopback_host(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(p) => p.into_response(),
    };
    let h = res.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

async fn need_session(State(d): State<Dash>, req: Request, next: Next) -> Response {
    if d.auth.has_session(req.headers()) {
        next.run(req).await
    } else {
        Problem::unauthorized(
            "log in first: open the dashboard_url that hotel up printed (also in cluster.json)",
        )
        .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct Login {
    token: Option<String>,
}

/// `GET /dashboard/login?token=dsh_...`: the cookie, and on to the page (303), so the
/// token leaves the address bar.
async fn login(
    State(d): State<Dash>,
    query: Result<Query<Login>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let given = query.ok().and_then(|Query(q)| q.token).unwrap_or_default();
    if given.is_empty() || !same(&given, d.auth.token()) {
        return Problem::unauthorized(
            "token: not this run's dashboard token; open the dashboard_url that hotel up printed (also in cluster.json)",
        )
        .into_response();
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        d.auth.session
    );
    let mut res = Redirect::to("/dashboard").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// `GET /dashboard/events`: one `tick` event per sampler round with the snapshot, the
/// history points and the feed entries this page has not had yet (all of them first).
async fn events(
    State(d): State<Dash>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = d.feed.clone();
    let stream = futures::stream::unfold(
        (rx, 0u64, 0u64, true),
        |(mut rx, mut last_point, mut last_seq, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let published = rx.borrow_and_update().clone();
            let points: Vec<_> = published
                .history
                .iter()
                .filter(|p| p.at_unix_ms > last_point)
                .collect();
            let feed: Vec<_> = published.feed.iter().filter(|f| f.seq > last_seq).collect();
            last_point = points.last().map_or(last_point, |p| p.at_unix_ms);
            last_seq = feed.last().map_or(last_seq, |f| f.seq);
            let body = serde_json::json!({
                "snapshot": published.snapshot,
                "points": points,
                "feed": feed,
            });
            let event = Event::default().event("tick").data(body.to_string());
            Some((Ok(event), (rx, last_point, last_seq, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> Router {
        let (_tx, rx) = watch::channel(Arc::new(
            sampler::Sampler::default().absorb(sampler::Input::default()),
        ));
        // The sender is dropped: an event stream ends after its first event.
        router(DashboardAuth::new("dsh_t".into(), "dss_s".into()), rx)
    }

    async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = axum::http::Request::builder()
            .uri(path)
            .header("host", "127.0.0.1:9");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    #[tokio::test]
    async fn login_trades_the_token_for_a_strict_http_only_cookie_and_redirects() {
        let (status, headers, _) = get("/dashboard/login?token=dsh_t", &[]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers["location"], "/dashboard");
        let cookie = headers["set-cookie"].to_str().unwrap();
        assert!(cookie.starts_with("hotel_dashboard=dss_s;"), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert_eq!(headers["content-security-policy"], CSP);
        for bad in [
            "/dashboard/login?token=dsh_x",
            "/dashboard/login",
            "/dashboard/login?token=",
        ] {
            let (status, headers, body) = get(bad, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
            assert_eq!(headers["content-type"], "application/problem+json");
            assert!(!headers.contains_key("set-cookie"));
            assert!(body.contains("dashboard_url"), "{body}");
        }
    }

    #[tokio::test]
    async fn the_page_its_assets_and_events_need_the_session() {
        for path in [
            "/dashboard",
            "/dashboard/app.js",
            "/dashboard/app.css",
            "/dashboard/events",
        ] {
            let (status, headers, _) = get(path, &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(headers["content-type"], "application/problem+json");
            let (status, _, _) = get(path, &[("cookie", "hotel_dashboard=dsh_t")]).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path}: the login token is no session"
            );
        }
        let session = [("cookie", "hotel_dashboard=dss_s")];
        let (status, headers, body) = get("/dashboard", &session).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(headers["content-security-policy"], CSP);
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        // Nothing inline that the policy would block.
        assert!(
            !body.contains("<script>") && !body.contains("style=") && !body.contains("onclick")
        );
        let (_, headers, js) = get("/dashboard/app.js", &session).await;
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        assert!(js.contains("x-hotel-dashboard") && !js.contains("innerHTML"));
        let (status, headers, body) = get("/dashboard/events", &session).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/event-stream");
        assert!(body.starts_with("event: tick\ndata: {"), "{body}");
    }

    #[tokio::test]
    async fn only_loopback_host_names_are_answered() {
        for host in ["127.0.0.1:9", "localhost:9", "[::1]:9"] {
            let mut req = axum::http::Request::builder().uri("/dashboard/login?token=dsh_t");
            req = req.header("host", host);
            let res = app()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::SEE_OTHER, "{host}");
        }
        let req = axum::http::Request::builder()
            .uri("/dashboard/login?token=dsh_t")
            .header("host", "attacker.example:9")
            .body(Body::empty())
            .unwrap();
        let res = app().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert!(!res.headers().contains_key("set-cookie"));
    }
}
