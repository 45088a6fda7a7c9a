//! How booking asks the customer and room services what it needs to know.
//!
//! Handlers see only the [`Directory`] trait. Two implementations:
//! - [`UpstreamDirectory`]: the resilient upstream client of `hotel_upstream` (registry
//!   discovery, p2c over peak-EWMA, per-instance breakers, budgeted retries, hedging,
//!   deadlines), the same stack the gateway uses, so booking calls customer and room
//!   replicas directly (DESIGN.md section 1).
//!   Its reads go through a [`CachedClient`] (the gateway's cache rules, from
//!   `hotel_upstream::cache`): a room read while fresh costs no request, a stale one a
//!   conditional request answered 304, concurrent reads of one room one request, and a
//!   room read before still answers while room is down (`stale-if-error`). Customers
//!   are `private, no-store`, so they are never stored.
//! - [`HttpDirectory`]: plain pooled HTTP to one static base URL per service (a single
//!   instance, or a gateway's `/api`).
//!
//! Every failure to get an answer is a [`PeerError`], which the handlers turn into 503
//! (try again) or 502 (the peer answered nonsense), never a 500.

use crate::{
    error::PeerError,
    model::{Customer, Room},
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use futures::future::BoxFuture;
use hotel_upstream::{
    CachedClient, Discovery, ServicePolicy, UpstreamClient,
    cache::{PeerCache, PeerCacheMetrics},
};
use serde::de::DeserializeOwned;
use std::{sync::Arc, time::Duration};
use tracing::Instrument;
use uuid::Uuid;

/// Peer pages are walked at most this far; a room service that keeps returning cursors is
/// broken, and booking must not loop forever on it.
const MAX_ROOM_PAGES: usize = 1_000;

/// What booking needs from the customer and room services.
///
/// Implementations must be cheap to share (`Arc<dyn Directory>`) and must turn every
/// failure into a [`PeerError`]; "does not exist" is `Ok(None)`, not an error.
pub trait Directory: Send + Sync + 'static {
    /// The customer with this id, or `None` when the customer service says 404.
    fn customer(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Customer>, PeerError>>;
    /// The room with this id (whatever its status), or `None` when it does not exist.
    fn room(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Room>, PeerError>>;
    /// Every available room holding at least `min_capacity` guests (all pages).
    fn rooms(&self, min_capacity: i64) -> BoxFuture<'_, Result<Vec<Room>, PeerError>>;
    /// Adds the client's metrics (breaker states, attempts per instance) to the
    /// instance's `/metrics`; nothing by default.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}
}

/// A page as the room service answers it.
#[derive(serde::Deserialize)]
struct RoomPage {
    items: Vec<Room>,
    #[serde(default)]
    next_cursor: Option<String>,
}

/// [`Directory`] over plain HTTP to one static base URL per service, with a pooled
/// client, timeouts, trace-context propagation and one client span per call.
#[derive(Debug, Clone)]
pub struct HttpDirectory {
    client: reqwest::Client,
    customer_url: reqwest::Url,
    room_url: reqwest::Url,
}

impl HttpDirectory {
    /// A directory calling `customer_url` and `room_url` (base URLs; the services' own
    /// paths are appended), giving up on a call after `timeout` and on a connect after
    /// `connect_timeout`.
    pub fn new(
        customer_url: reqwest::Url,
        room_url: reqwest::Url,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let client = hotel_common::tls::internal::reqwest_client()
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpDirectory {
            client,
            customer_url,
            room_url,
        })
    }

    /// `base` + `path` (+ query), keeping any path prefix the base has (`/api`).
    fn url(base: &reqwest::Url, path: &str, query: &[(&str, String)]) -> reqwest::Url {
        let mut url = base.clone();
        let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
        url.set_path(&joined);
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// One GET inside a client span; `Ok(None)` on 404.
    async fn get<T: DeserializeOwned>(
        &self,
        service: &'static str,
        route: &'static str,
        url: reqwest::Url,
    ) -> Result<Option<T>, PeerError> {
        let span = tracing::info_span!(
            "peer",
            otel.name = %format_args!("GET {route}"),
            otel.kind = "client",
            peer.service = service,
            http.request.method = "GET",
            url.full = %url,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let result = self
            .get_in_span::<T>(service, url)
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record(
                "error.type",
                match e {
                    PeerError::Unreachable { .. } => "unreachable",
                    PeerError::Unavailable { .. } => "unavailable",
                    PeerError::Unexpected { .. } => "unexpected",
                },
            );
        }
        result
    }

    async fn get_in_span<T: DeserializeOwned>(
        &self,
        service: &'static str,
        url: reqwest::Url,
    ) -> Result<Option<T>, PeerError> {
        let mut headers = HeaderMap::new();
        hotel_common::telemetry::inject(&mut headers);
        // The caller's request id follows the call, so one id finds every log line.
        if let Some(v) = hotel_common::context::current()
            .and_then(|ctx| HeaderValue::from_str(&ctx.request_id).ok())
        {
            headers.insert(hotel_common::context::REQUEST_ID, v);
        }
        let res = self
            .client
            .get(url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| PeerError::Unreachable {
                service,
                reason: error_chain(&e),
            })?;
        let status = res.status();
        tracing::Span::current().record("http.response.status_code", i64::from(status.as_u16()));
        // A body cut off by a dying peer is "unreachable", a body of the wrong shape is not.
        let bytes = res.bytes().await.map_err(|e| PeerError::Unreachable {
            service,
            reason: error_chain(&e),
        })?;
        decode(service, status, &bytes)
    }
}

/// Reads a peer's answer: 404 is `None`, 5xx and 429 are unavailable, any other non-2xx
/// or a body of the wrong shape is unexpected.
fn decode<T: DeserializeOwned>(
    service: &'static str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<T>, PeerError> {
    if status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(PeerError::Unavailable {
            service,
            status: status.as_u16(),
        });
    }
    if !status.is_success() {
        return Err(PeerError::Unexpected {
            service,
            reason: format!("status {status}"),
        });
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| PeerError::Unexpected {
            service,
            reason: format!("body: {e}"),
        })
}

/// The query of one page of available rooms holding `min_capacity`.
fn rooms_query(min_capacity: i64, cursor: Option<&str>) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("min_capacity", min_capacity.to_string()),
        ("status", "available".to_owned()),
        ("limit", "100".to_owned()),
    ];
    if let Some(c) = cursor {
        query.push(("cursor", c.to_owned()));
    }
    query
}

/// Walks every page of `GET /rooms`, `fetch` getting one page for a query.
async fn all_rooms<F, Fut>(min_capacity: i64, mut fetch: F) -> Result<Vec<Room>, PeerError>
where
    F: FnMut(Vec<(&'static str, String)>) -> Fut,
    Fut: std::future::Future<Output = Result<Option<RoomPage>, PeerError>>,
{
    let mut rooms = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_ROOM_PAGES {
        let page = fetch(rooms_query(min_capacity, cursor.as_deref()))
            .await?
            .ok_or_else(|| PeerError::Unexpected {
                service: "room",
                reason: "GET /rooms answered 404".into(),
            })?;
        rooms.extend(page.items);
        match page.next_cursor {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            Some(_) => {
                return Err(PeerError::Unexpected {
                    service: "room",
                    reason: "GET /rooms repeated its cursor".into(),
                });
            }
            None => return Ok(rooms),
        }
    }
    Err(PeerError::Unexpected {
        service: "room",
        reason: format!("GET /rooms had more than {MAX_ROOM_PAGES} pages"),
    })
}

/// The error and its sources on one line (reqwest's own Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

impl Directory for HttpDirectory {
    fn customer(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Customer>, PeerError>> {
        let url = Self::url(&self.customer_url, &format!("/customers/{id}"), &[]);
        Box::pin(self.get("customer", "/customers/{id}", url))
    }

    fn room(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Room>, PeerError>> {
        let url = Self::url(&self.room_url, &format!("/rooms/{id}"), &[]);
        Box::pin(self.get("room", "/rooms/{id}", url))
    }

    fn rooms(&self, min_capacity: i64) -> BoxFuture<'_, Result<Vec<Room>, PeerError>> {
        Box::pin(all_rooms(min_capacity, move |query| {
            let url = Self::url(&self.room_url, "/rooms", &query);
            self.get("room", "/rooms", url)
        }))
    }
}

/// Bytes booking's cache of peer answers may take by default (`peer_cache_max_bytes`).
pub const DEFAULT_PEER_CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// [`Directory`] over the resilient upstream client, one per service, each behind the
/// shared peer cache.
#[derive(Clone)]
pub struct UpstreamDirectory {
    customer: CachedClient,
    room: CachedClient,
    /// Both clients count into these (`hotel_upstream_*`, `hotel_breaker_*`).
    metrics: Arc<hotel_upstream::UpstreamMetrics>,
    /// The peer cache counts into these (`hotel_peer_cache_*`).
    cache_metrics: Arc<PeerCacheMetrics>,
}

impl std::fmt::Debug for UpstreamDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamDirectory").finish_non_exhaustive()
    }
}

impl UpstreamDirectory {
    /// Clients of the customer and room services found through `customer` / `room`
    /// discovery, with the built-in upstream policy except for the overall `deadline` of
    /// one call (and half of it per try): see [`crate::config::peer_policy`]. Must be
    /// called inside a tokio runtime.
    pub fn new(
        customer: Discovery,
        room: Discovery,
        deadline: Duration,
    ) -> Result<Self, hotel_common::process::BoxError> {
        let policy = crate::config::peer_policy(deadline)?;
        Self::with_policy(customer, room, &policy)
    }

    /// Clients of the customer and room services with a validated `policy` and a peer
    /// cache of [`DEFAULT_PEER_CACHE_BYTES`]. Must be called inside a tokio runtime.
    pub fn with_policy(
        customer: Discovery,
        room: Discovery,
        policy: &ServicePolicy,
    ) -> Result<Self, hotel_common::process::BoxError> {
        Self::with_cache(customer, room, policy, DEFAULT_PEER_CACHE_BYTES)
    }

    /// Clients of the customer and room services with a validated `policy`, sharing a
    /// peer cache of `peer_cache_max_bytes` (0: none). Must be called inside a tokio
    /// runtime.
    pub fn with_cache(
        customer: Discovery,
        room: Discovery,
        policy: &ServicePolicy,
        peer_cache_max_bytes: u64,
    ) -> Result<Self, hotel_common::process::BoxError> {
        let metrics = hotel_upstream::UpstreamMetrics::unregistered();
        let cache_metrics = Arc::new(PeerCacheMetrics::default());
        let cache = PeerCache::new(peer_cache_max_bytes, cache_metrics.clone());
        let client = |service: &'static str, discovery| {
            UpstreamClient::with_metrics(service, discovery, policy, metrics.clone())
                .map(|c| CachedClient::new(service, c, cache.clone()))
        };
        Ok(UpstreamDirectory {
            customer: client("customer", customer)?,
            room: client("room", room)?,
            metrics,
            cache_metrics,
        })
    }

    /// Both services discovered through the registry at `url`, with `policy` and a peer
    /// cache of `peer_cache_max_bytes`.
    pub fn from_registry(
        url: &str,
        token: Option<String>,
        policy: &ServicePolicy,
        peer_cache_max_bytes: u64,
    ) -> Result<Self, hotel_common::process::BoxError> {
        let discovery = || Discovery::Registry {
            url: url.to_owned(),
            token: token.clone(),
        };
        Self::with_cache(discovery(), discovery(), policy, peer_cache_max_bytes)
    }

    /// One GET of `path_and_query` inside a span; `Ok(None)` on 404.
    async fn get<T: DeserializeOwned>(
        &self,
        service: &'static str,
        route: &'static str,
        path_and_query: String,
    ) -> Result<Option<T>, PeerError> {
        // The upstream client records one client span per attempt beneath this one.
        let span = tracing::info_span!(
            "peer",
            otel.name = %format_args!("GET {route}"),
            peer.service = service,
            http.request.method = "GET",
            url.path = %path_and_query,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            cache = tracing::field::Empty,
        );
        let client = if service == "customer" {
            &self.customer
        } else {
            &self.room
        };
        let call = async {
            let mut req = axum::http::Request::get(path_and_query.as_str());
            if let Some(ctx) = hotel_common::context::current() {
                req = req.header(hotel_common::context::REQUEST_ID, ctx.request_id);
            }
            let req = req
                .body(axum::body::Bytes::new())
                .map_err(|e| PeerError::Unexpected {
                    service,
                    reason: e.to_string(),
                })?;
            match client.send(req).await {
                Ok((res, outcome)) => {
                    let span = tracing::Span::current();
                    span.record(
                        "http.response.status_code",
                        i64::from(res.status().as_u16()),
                    );
                    span.record("cache", outcome.as_str());
                    decode(service, res.status(), res.body())
                }
                // 502/503/504 from the client: no instance, breakers open, connect
                // failures or the deadline, all after its retries. Worth a retry later.
                Err(problem) => Err(PeerError::Unreachable {
                    service,
                    reason: problem.detail,
                }),
            }
        };
        let result = call.instrument(span.clone()).await;
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }
}

/// `path?query` with the query form-encoded.
fn with_query(path: &str, query: &[(&str, String)]) -> String {
    let encoded = reqwest::Url::parse("http://peer").map(|mut url| {
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url.query().map(str::to_owned)
    });
    match encoded {
        Ok(Some(q)) => format!("{path}?{q}"),
        _ => path.to_owned(),
    }
}

impl Directory for UpstreamDirectory {
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
        self.cache_metrics.register(registry);
    }
    fn customer(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Customer>, PeerError>> {
        Box::pin(self.get("customer", "/customers/{id}", format!("/customers/{id}")))
    }

    fn room(&self, id: Uuid) -> BoxFuture<'_, Result<Option<Room>, PeerError>> {
        Box::pin(self.get("room", "/rooms/{id}", format!("/rooms/{id}")))
    }

    fn rooms(&self, min_capacity: i64) -> BoxFuture<'_, Result<Vec<Room>, PeerError>> {
        Box::pin(all_rooms(min_capacity, move |query| {
            self.get("room", "/rooms", with_query("/rooms", &query))
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_path_prefix_and_encode_the_query() {
        let base = reqwest::Url::parse("http://127.0.0.1:8080/api/").unwrap();
        let u = HttpDirectory::url(&base, "/rooms", &[("cursor", "a b&c".to_owned())]);
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/api/rooms?cursor=a+b%26c");
        let base = reqwest::Url::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(
            HttpDirectory::url(&base, "/customers/x", &[]).as_str(),
            "http://127.0.0.1:9/customers/x"
        );
        assert_eq!(
            with_query("/rooms", &[("cursor", "a b&c".to_owned())]),
            "/rooms?cursor=a+b%26c"
        );
        assert_eq!(with_query("/rooms/1", &[]), "/rooms/1");
    }
}
