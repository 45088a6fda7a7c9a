//! The admin server: `/admin/status` (every service and instance as the gateway sees
//! them, the HTTP cache, the configuration version), `POST /admin/cache/purge`,
//! `GET /admin/config` (the running configuration, secrets redacted), `POST
//! /admin/reload` (read the configuration again, see [`crate::reload`]), `GET
//! /admin/recent` (the slowest and failed recent requests, see [`crate::recent`]), `/metrics`
//! (Prometheus), `/healthz`, `/readyz`.
//!
//! It listens on loopback by default. With an admin token configured, `/admin/*` and
//! `/metrics` need `Authorization: Bearer <token>` (compared in constant time); the
//! probes stay open so orchestrators need no secret.

use crate::metrics::Metrics;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hotel_common::Problem;
use hotel_upstream::EndpointView;
use serde::Serialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// What the admin server reads.
#[derive(Clone)]
pub struct AdminState {
    /// This gateway's instance name.
    pub instance: String,
    /// The running configuration: its services, cache and version.
    pub live: Arc<crate::reload::Live>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The bearer token, when configured.
    pub token: Option<Arc<str>>,
}

/// `GET /admin/status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Gateway instance name.
    pub gateway: String,
    /// Per service.
    pub services: Vec<ServiceStatus>,
    /// The HTTP cache (absent when `[cache] max_bytes = 0`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::cache::CacheStatus>,
    /// The running configuration's version and load time.
    pub config: crate::reload::ConfigVersion,
}

/// One service in `/admin/status`.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Service name.
    pub service: String,
    /// Instances known from discovery.
    pub known: usize,
    /// Instances ejected by their breakers now.
    pub ejected: usize,
    /// The instances.
    pub instances: Vec<EndpointView>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/admin/status", get(status))
        .route("/admin/cache/purge", post(purge))
        .route("/admin/config", get(config))
        .route("/admin/reload", post(reload))
        .route("/admin/recent", get(recent))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(protected)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .fallback(|| async {
            Problem::new(StatusCode::NOT_FOUND, "no-route", "no such admin route")
        })
        .with_state(state)
}

async fn require_token(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return next.run(req).await;
    }
    let mut res =
        Problem::unauthorized("the admin API needs `Authorization: Bearer <admin token>`")
            .into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"hotel-gateway-admin\""),
    );
    res
}

async fn config(State(s): State<AdminState>) -> axum::Json<serde_json::Value> {
    axum::Json(s.live.settings())
}

/// `POST /admin/reload`: 200 with what changed, or 422 problem+json with the reason the
/// new configuration was refused (the running one stays).
async fn reload(State(s): State<AdminState>) -> Response {
    match s.live.reload().await {
        Ok(r) => axum::Json(r).into_response(),
        Err(e) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "config-refused", e).into_response()
        }
    }
}

async fn status(State(s): State<AdminState>) -> axum::Json<Status> {
    let g = s.live.current();
    axum::Json(Status {
        gateway: s.instance.clone(),
        config: s.live.version(),
        services: g
            .services
            .values()
            .map(|u| ServiceStatus {
                service: u.name().to_owned(),
                known: u.known(),
                ejected: u.ejected(),
                instances: u.endpoints(),
            })
            .collect(),
        cache: g.cache.as_ref().map(|c| c.status()),
    })
}

/// The body of `POST /admin/cache/purge`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    /// Entries whose key (client path and query) starts with this are removed.
    prefix: String,
}

async fn purge(
    State(s): State<AdminState>,
    body: Result<axum::Json<Purge>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let axum::Json(p) = match body {
        Ok(b) => b,
        Err(e) => {
            return Problem::new(StatusCode::BAD_REQUEST, "bad-request", e.body_text())
                .into_response();
        }
    };
    if !p.prefix.starts_with('/') {
        return Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "prefix: must start with '/'",
        )
        .into_response();
    }
    let removed = s
        .live
        .current()
        .cache
        .as_ref()
        .map_or(0, |c| c.purge(&p.prefix));
    axum::Json(serde_json::json!({"prefix": p.prefix, "removed": removed})).into_response()
}

/// `GET /admin/recent`: the slowest and the failed recent requests with their trace ids
/// (see [`crate::recent`]).
async fn recent(State(s): State<AdminState>) -> axum::Json<crate::recent::RecentView> {
    axum::Json(s.metrics.recent.view())
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let mut res = s.metrics.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let g = s.live.current();
    let missing: Vec<&str> = g
        .services
        .values()
        .filter(|u| u.known() == 0)
        .map(|u| u.name())
        .collect();
    if missing.is_empty() {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            format!("no instance known yet of: {}", missing.join(", ")),
        )
        .with_retry_after(1)
        .into_response()
    }
}
