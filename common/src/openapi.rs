//! The OpenAPI side of [`crate::http::finish`]: serves a service's document at
//! `GET /openapi.json` and documents the routes every service gets (`/healthz`,
//! `/readyz`, `/openapi.json`), so the document lists every route the service answers.

use axum::{Router, routing::get};
use std::sync::Arc;
use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref,
    path::{HttpMethod, OperationBuilder},
    response::{Response, ResponseBuilder},
};

/// Adds the shared routes to `doc` and a `GET /openapi.json` route serving it to `routes`.
/// Call before [`crate::http::finish`], which adds the health routes themselves.
pub fn serve(routes: Router, mut doc: OpenApi) -> Router {
    document_shared_routes(&mut doc);
    let doc = Arc::new(to_json(&doc));
    routes.route(
        "/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
}

/// The document as JSON, as it must be served. utoipa 5.5 serialises a Link object's
/// `operationId` and `operationRef` in snake case, which no OpenAPI tool reads; this
/// renames them inside every `links` map.
pub fn to_json(doc: &OpenApi) -> serde_json::Value {
    let mut value = serde_json::to_value(doc).unwrap_or_default();
    fix_links(&mut value);
    value
}

fn fix_links(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let Value::Object(link) = link {
                        for (from, to) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(from) {
                                link.insert(to.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(fix_links);
        }
        Value::Array(items) => items.iter_mut().for_each(fix_links),
        _ => {}
    }
}

/// Documents `/healthz`, `/readyz` and `/openapi.json` under the tag `meta`.
pub fn document_shared_routes(doc: &mut OpenApi) {
    let op = |summary: &str, ok: &str, extra: Option<(&str, &str)>| {
        let mut b = OperationBuilder::new()
            .tag("meta")
            .summary(Some(summary))
            .response("200", Response::new(ok));
        if let Some((status, why)) = extra {
            let problem = ResponseBuilder::new()
                .description(why)
                .content(
                    crate::problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build();
            b = b.response(status, problem);
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

/// Adds OpenAPI `links` to the `201` response of `POST {collection}`: one per operation
/// on each of `items` (`/customers/{id}`), named by its `operationId`, passing the created
/// resource's `id` as the path's `{id}`. Clients and fuzzers follow them from a create to
/// a read, an update and a delete of the same resource.
pub fn link_created(doc: &mut OpenApi, collection: &str, items: &[&str]) {
    use utoipa::openapi::{RefOr, link::Link};
    let targets: Vec<String> = items
        .iter()
        .filter_map(|item| doc.paths.paths.get(*item))
        .flat_map(|p| [&p.get, &p.put, &p.patch, &p.delete, &p.post])
        .flatten()
        .filter_map(|op| op.operation_id.clone())
        .collect();
    let Some(created) = doc
        .paths
        .paths
        .get_mut(collection)
        .and_then(|p| p.post.as_mut())
        .and_then(|op| op.responses.responses.get_mut("201"))
    else {
        return;
    };
    if let RefOr::T(response) = created {
        for op in targets {
            let link = Link::builder()
                .operation_id(op.clone())
                .parameter("id", "$response.body#/id")
                .build();
            response.links.insert(op, RefOr::T(link));
        }
    }
}
