//! The API's documentation, served by the gateway on its public listener:
//! `GET /api/openapi.json` (one OpenAPI 3.1 document for everything routed) and
//! `GET /api/docs` (Swagger UI over it, its files served from the binary, so it works
//! offline). Both are public by default (`auth.public`), yet pass every other edge
//! protection like any request: rate limits, in-flight limits, body limits, hygiene.
//!
//! Where the services' documents come from: the caller hands them in as [`ApiDocs`],
//! keyed by service name. The `hotel` binary links every role, so it builds each
//! service's own document (the same one the service serves at `/openapi.json`) and
//! passes them to [`crate::run`] through [`crate::GatewayArgs::api_docs`]. This crate
//! does not depend on the service crates (booking already depends on it), and the
//! gateway does not fetch `/openapi.json` from instances: the merged document is then
//! the same on every start, does not wait for or change with whichever instance answers
//! first, and is there even when every instance is down. The cost is that a gateway
//! binary only documents the services it was built with, which for this one-binary
//! system is the same code the instances run. A routed service without a document is
//! left out, with a warning in the log.
//!
//! The document is merged once, when the gateway is built (see [`merge`]), and served
//! from memory; it does not change while the gateway runs.

pub mod merge;
pub mod swagger;

use crate::{
    body::{GatewayBody, full},
    routes::RouteTable,
};
use bytes::Bytes;
use hotel_common::Problem;
use http::{HeaderValue, Method, Response, StatusCode, header};
use std::{collections::BTreeMap, sync::Arc};

/// Path of the merged OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/openapi.json";
/// Path of the docs page; its assets live below it.
pub const DOCS_PATH: &str = "/api/docs";

/// The services' own OpenAPI documents (JSON), keyed by service name as the gateway's
/// routes name them (`customer`, `room`, `booking`).
#[derive(Debug, Clone, Default)]
pub struct ApiDocs {
    docs: BTreeMap<String, serde_json::Value>,
}

impl ApiDocs {
    /// No documents: the merged document then holds only what the gateway adds.
    pub fn new() -> Self {
        Self::default()
    }

    /// These documents plus `service`'s (replacing an earlier one of the same name).
    pub fn with(mut self, service: &str, doc: serde_json::Value) -> Self {
        self.docs.insert(service.to_owned(), doc);
        self
    }

    /// The documents, by service name.
    pub fn documents(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.docs
    }

    /// The document a gateway with `routes` serves at `/api/openapi.json` (`version` is
    /// its `info.version`).
    pub fn merged(&self, routes: &[crate::settings::Route], version: &str) -> merge::Merged {
        merge::merge(&self.docs, &RouteTable::new(routes.to_vec()), version)
    }
}

/// The docs endpoints of one gateway: the merged document, serialized once, and the
/// Swagger UI files.
#[derive(Debug, Clone)]
pub struct Docs {
    openapi: Bytes,
    /// Metrics and span label of every docs request.
    pub(crate) label: Arc<String>,
}

impl Docs {
    /// Merges `docs` over the gateway's routes and caches the JSON. Logs every routed
    /// service left out for want of a document.
    pub fn build(docs: &ApiDocs, table: &RouteTable) -> Docs {
        let merged = merge::merge(docs.documents(), table, env!("CARGO_PKG_VERSION"));
        for service in &merged.missing {
            tracing::warn!(
                service = %service,
                path = OPENAPI_PATH,
                "no OpenAPI document known for this routed service: its routes are left out \
                 of the gateway's API document"
            );
        }
        Docs {
            openapi: serde_json::to_vec(&merged.document)
                .unwrap_or_default()
                .into(),
            label: Arc::new(DOCS_PATH.to_owned()),
        }
    }

    /// The merged document as served.
    pub fn openapi_json(&self) -> &Bytes {
        &self.openapi
    }

    /// The answer to a request for a docs path (already normalised), or `None` when
    /// `path` is not one of them.
    pub fn answer(&self, method: &Method, path: &str) -> Option<Response<GatewayBody>> {
        let (body, content_type, cache): (Bytes, &'static str, &'static str) =
            if path == OPENAPI_PATH {
                (self.openapi.clone(), "application/json", "no-cache")
            } else if path == DOCS_PATH {
                (
                    Bytes::from_static(swagger::PAGE.as_bytes()),
                    "text/html; charset=utf-8",
                    "no-cache",
                )
            } else {
                let name = path.strip_prefix(DOCS_PATH)?.strip_prefix('/')?;
                let asset = swagger::asset(name)?;
                (
                    Bytes::from_static(asset.bytes),
                    asset.content_type,
                    "public, max-age=86400",
                )
            };
        if method != Method::GET && method != Method::HEAD {
            let mut res = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "the API documentation only answers GET",
            )
            .to_http::<Bytes>()
            .map(full);
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Some(res);
        }
        let mut res = Response::new(full(body));
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        Some(res)
    }
}
