//! `GET /healthz` (the process is alive) and `GET /readyz` (it can do its work now).

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use futures::future::BoxFuture;
use http::StatusCode;
use std::sync::Arc;

/// The liveness path every process answers (also what the gateway's health probes ask).
pub const LIVENESS_PATH: &str = "/healthz";

/// The readiness path.
pub const READINESS_PATH: &str = "/readyz";

/// Answers whether the process can serve now (database reachable, dependencies known).
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A router with `/healthz` and `/readyz`; merge it into a service's router.
pub fn router(check: ReadinessCheck) -> Router {
    Router::new()
        .route(
            LIVENESS_PATH,
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(READINESS_PATH, get(readyz))
        .with_state(check)
}

async fn readyz(State(check): State<ReadinessCheck>) -> axum::response::Response {
    match check().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(why) => {
            tracing::warn!(reason = %why, "not ready");
            crate::Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", why)
                .with_retry_after(1)
                .into_response()
        }
    }
}

/// A readiness check that is always ready (for processes without dependencies).
pub fn always_ready() -> ReadinessCheck {
    Arc::new(|| Box::pin(async { Ok(()) }))
}
