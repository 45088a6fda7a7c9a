//! The layers every service router gets, in one place: health endpoints, problem+json
//! for unknown routes and methods, the body limit, the request context and the server
//! span.

use crate::{Problem, context, health};
use axum::{Router, extract::DefaultBodyLimit, middleware};
use http::StatusCode;

/// Default request body limit of a service (64 KiB): bookings and customers are tiny.
pub const SERVICE_BODY_LIMIT: usize = 64 * 1024;

/// Wraps a service's routes with the shared layers. `role` names the server span.
pub fn finish(
    role: &'static str,
    routes: Router,
    readiness: health::ReadinessCheck,
    body_limit: usize,
) -> Router {
    routes
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
        .layer(middleware::from_fn(context::request_context))
        .layer(middleware::from_fn_with_state(
            role,
            crate::telemetry::server_span,
        ))
}
