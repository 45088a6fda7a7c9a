//! CORS for browser clients of the API and the docs, at the edge: `[cors]
//! allowed_origins`. With none configured (the default) the layer is not in the stack
//! at all: no CORS headers, and `OPTIONS` is routed like any method.
//!
//! With origins configured, `tower_http::cors` answers every `OPTIONS` (the preflight)
//! itself, between the request context and the protections: browsers send preflights
//! without credentials, so they must not need an API key, and they never reach an
//! instance. The protections still run for the real request that follows, and their
//! refusals (401, 429, 503) carry the CORS headers, so a page can read them.

use crate::body::{GatewayBody, full};
use http::{HeaderName, HeaderValue, Method, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tower::Layer;
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

/// `[cors]` as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins (`https://app.example.com`) whose pages may call the API; `["*"]` allows
    /// any. Empty (the default): no CORS at all.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        CorsSettings {
            allowed_origins: Vec::new(),
            max_age: Duration::from_secs(600),
        }
    }
}

/// Request headers a page may send: content, credentials, idempotency, tracing.
const ALLOW_HEADERS: [&str; 7] = [
    "content-type",
    "authorization",
    "x-api-key",
    "idempotency-key",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// Response headers a page may read besides the safelisted ones.
const EXPOSE_HEADERS: [&str; 7] = [
    "x-request-id",
    "x-trace-id",
    "retry-after",
    "location",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
];

impl CorsSettings {
    /// The layer these settings describe, `None` when no origin is allowed. Errors name
    /// the key.
    pub fn layer(&self) -> Result<Option<EdgeCorsLayer>, String> {
        if self.allowed_origins.is_empty() {
            return Ok(None);
        }
        let origin = if self.allowed_origins.iter().any(|o| o == "*") {
            if self.allowed_origins.len() > 1 {
                return Err("cors.allowed_origins: \"*\" must be the only entry".to_owned());
            }
            AllowOrigin::any()
        } else {
            let mut list = Vec::with_capacity(self.allowed_origins.len());
            for (i, o) in self.allowed_origins.iter().enumerate() {
                let ok = (o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && o.split("://")
                        .nth(1)
                        .is_some_and(|h| !h.is_empty() && !h.contains('/'));
                let value = HeaderValue::from_str(o)
                    .ok()
                    .filter(|_| ok)
                    .ok_or_else(|| {
                        format!(
                            "cors.allowed_origins[{i}]: {o:?} is not an origin \
                         (scheme://host[:port], no path)"
                        )
                    })?;
                list.push(value);
            }
            AllowOrigin::list(list)
        };
        let cors = CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(ALLOW_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSE_HEADERS.map(HeaderName::from_static))
            .max_age(self.max_age);
        Ok(Some(EdgeCorsLayer(cors)))
    }
}

/// The edge's response body with the `Default` (empty) that `tower_http::cors` needs
/// for the preflight answers it makes.
#[derive(Debug)]
pub struct CorsBody(pub GatewayBody);

impl Default for CorsBody {
    fn default() -> Self {
        CorsBody(full(bytes::Bytes::new()))
    }
}

type Wrap = fn(Response<GatewayBody>) -> Response<CorsBody>;
type Unwrap = fn(Response<CorsBody>) -> Response<GatewayBody>;

fn wrap(r: Response<GatewayBody>) -> Response<CorsBody> {
    r.map(CorsBody)
}

fn unwrap_body(r: Response<CorsBody>) -> Response<GatewayBody> {
    r.map(|b| b.0)
}

/// `tower_http::cors` over the edge's body type.
#[derive(Debug, Clone)]
pub struct EdgeCorsLayer(CorsLayer);

/// The service [`EdgeCorsLayer`] builds.
pub type EdgeCors<S> = tower::util::MapResponse<Cors<tower::util::MapResponse<S, Wrap>>, Unwrap>;

impl<S> Layer<S> for EdgeCorsLayer {
    type Service = EdgeCors<S>;
    fn layer(&self, inner: S) -> EdgeCors<S> {
        let inner = tower::util::MapResponse::new(inner, wrap as Wrap);
        tower::util::MapResponse::new(self.0.layer(inner), unwrap_body as Unwrap)
    }
}
