//! The OpenAPI side of [`crate::http::finish`]: serves a service's document at
//! `GET /openapi.json` and documents the routes every service gets (`/healthz`,
//! `/readyz`, `/openapi.json`), so the document lists every route the service answers.

use axum::{Router, routing::get};
use std::sync::Arc;
use utoipa::openapi::{
    OpenApi,
    path::{HttpMethod, OperationBuilder},
    response::Response,
};

/// Adds the shared routes to `doc` and a `GET /openapi.json` route serving it to `routes`.
/// Call before [`crate::http::finish`], which adds the health routes themselves.
pub fn serve(routes: Router, mut doc: OpenApi) -> Router {
    document_shared_routes(&mut doc);
    let doc = Arc::new(doc);
    routes.route(
        "/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
}

/// Documents `/healthz`, `/readyz` and `/openapi.json` under the tag `meta`.
pub fn document_shared_routes(doc: &mut OpenApi) {
    let op = |summary: &str, ok: &str, extra: Option<(&str, &str)>| {
        let mut b = OperationBuilder::new()
            .tag("meta")
            .summary(Some(summary))
            .response("200", Response::new(ok));
        if let Some((status, why)) = extra {
            b = b.response(status, Response::new(why));
        }
        b.build()
    };
    doc.paths.add_path_operation(
        crate::health::LIVENESS_PATH,
        vec![HttpMethod::Get],
        op("Liveness: the process answers", "alive", None),
    );
    doc.paths.add_path_operation(
        crate::health::READINESS_PATH,
        vec![HttpMethod::Get],
        op(
            "Readiness: dependencies such as the database answer",
            "ready",
            Some(("503", "not ready; problem+json says why, with Retry-After")),
        ),
    );
    doc.paths.add_path_operation(
        "/openapi.json",
        vec![HttpMethod::Get],
        op("This OpenAPI document", "the document", None),
    );
}
