//! The gateway's shared HTTP cache (RFC 9111, with RFC 5861's `stale-if-error`): it
//! sits between the router and a route's upstream stack, so a read that was served once
//! keeps being served while its service is down.
//!
//! ```text
//! router (route matched, prefix rewritten) > cache > RouteUpstream::send
//! ```
//!
//! - **Key**: the path and query the client sent (`/api/rooms/7?x=1`), so a purge or an
//!   invalidation names URIs as clients see them. One variant per key: a `Vary` answer is
//!   served only to requests whose varying headers match the stored request's; another
//!   variant replaces it. Private answers are never stored (a shared cache must not), so
//!   the key needs no client part and can never mix two clients' personal data.
//! - **Stored**: GET answers (200 and the other heuristically cacheable codes) with
//!   explicit freshness (`s-maxage` or `max-age`), without `no-store`, `private`,
//!   `Vary: *` or `Set-Cookie`, whose `Content-Length` is at most `max_entry_bytes`. A
//!   request with credentials (`Authorization`, an API key) only when the answer says
//!   `public`, `s-maxage` or `must-revalidate`. See
//!   [`hotel_upstream::cache::directives`] (the rules and [`Entry`] are shared with
//!   booking's cache of its peer reads).
//! - **Freshness**: `age = Age header + time in transit + time stored` (the `Date`
//!   header is not used: it has a one-second resolution and the lifetimes here are
//!   seconds); fresh while `age < s-maxage | max-age`. HEAD is answered from a stored GET.
//! - **Revalidation**: a stale entry (or `no-cache` on either side, or a request
//!   `max-age` below the age) is revalidated with `If-None-Match` / `If-Modified-Since`; a
//!   304 refreshes it (headers merged) and the client gets the entry (`REVALIDATED`), or a
//!   304 of its own when its `If-None-Match` matches.
//! - **Coalescing**: concurrent plain GETs of one key that cannot be answered from the
//!   cache wait for the first one's upstream answer (a `watch` channel per key in flight,
//!   bounded by the route's deadline) and are then served from the cache; if that answer
//!   was not storable they go upstream themselves, and the key is marked "pass" for
//!   [`PASS_FOR`] (Varnish's hit-for-miss) so later requests for it (personal data, say)
//!   do not queue behind each other.
//! - **Stale on error**: when the upstream stack answers 500/502/503/504 (its own
//!   failures are already problem+json 502/503/504 here), a stale entry inside its
//!   `stale-if-error` window is served (`STALE`) unless it said `must-revalidate`,
//!   `proxy-revalidate`, `s-maxage` or `no-cache`.
//! - **Invalidation**: a 2xx/3xx answer to an unsafe method drops the target URI and the
//!   same-origin `Location` / `Content-Location` (RFC 9111 section 4.4); with a registry,
//!   `hotel.room.updated` from room's event feed drops the room's answers
//!   ([`room_events`]).
//!
//! The store is `quick_cache` (sync, sharded, S3-FIFO, weighed in bytes): its bound is
//! exact at every insert (a moka cache settles its size in deferred housekeeping), it
//! needs no background thread, and a lookup is a read lock and an `Arc` clone.

pub mod room_events;

pub use hotel_upstream::cache::{CacheControl, Outcome};

use crate::{
    body::{GatewayBody, full},
    metrics::{Metrics, RouteLabels},
};
use hotel_common::Problem;
use hotel_upstream::ProxyBody;
use hotel_upstream::cache::{Coalescer, Entry, Turn, Weigh, storable};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, sync::Cache};
use serde::{Deserialize, Serialize};
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// Response header naming what the cache did: `HIT`, `MISS`, `STALE`, `REVALIDATED` or
/// `BYPASS`.
pub const X_CACHE: &str = "x-cache";
/// [`X_CACHE`] as a `HeaderName`: inserted under a `&str`, the name would be copied into
/// a new allocation on every response.
const X_CACHE_NAME: http::HeaderName = http::HeaderName::from_static(X_CACHE);

/// How long a key whose answer could not be stored skips request coalescing.
pub const PASS_FOR: Duration = Duration::from_secs(60);

/// `[cache]` in `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// Bytes the stored answers (bodies, headers, keys) may take; 0 turns the cache off.
    pub max_bytes: u64,
    /// Largest answer body stored; larger ones are streamed through.
    pub max_entry_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
        }
    }
}

impl CacheSettings {
    /// Checks the keys; the message names the failing one.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bytes > 0 && self.max_entry_bytes == 0 {
            return Err("cache.max_entry_bytes: must be above zero".into());
        }
        if self.max_entry_bytes > self.max_bytes && self.max_bytes > 0 {
            return Err("cache.max_entry_bytes: must not exceed cache.max_bytes".into());
        }
        Ok(())
    }
}

/// Labels of `gateway_cache_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// The route prefix.
    pub route: Arc<String>,
    /// `hit`, `miss`, `stale`, `revalidated`, `bypass`.
    pub outcome: &'static str,
}

/// What the cache knew of a key before fetching it.
struct Known {
    /// The stored entry, fresh or not.
    found: Option<Arc<Entry>>,
    /// The key is in pass: its answers were not storable lately.
    passing: bool,
    /// Until when its pass runs (or ran), if it was ever put in pass.
    pass_until: Option<Instant>,
    /// The clock when the request was taken on: its `request_time` (RFC 9111 4.2.3).
    request_time: Instant,
}

/// The cache's metric families (registered by [`Metrics::new`]).
#[derive(Debug, Default)]
pub struct CacheMetrics {
    /// Requests on cache-enabled routes, by route and outcome.
    pub requests: Family<CacheLabels, Counter>,
    /// `requests` series as resolved on the request path.
    pub(crate) request_series: crate::metrics::Resolved<CacheLabels, Counter>,
    /// Bytes stored now.
    pub bytes: Gauge,
    /// Entries stored now.
    pub entries: Gauge,
    /// Entries evicted to stay under `max_bytes`.
    pub evictions: Counter,
    /// Stale answers served because the upstream failed, by route.
    pub stale_served: Family<RouteLabels, Counter>,
    /// `hotel.room.updated` events that dropped a room's cached answers.
    pub event_invalidations: Counter,
    /// Failed reads of room's event feed.
    pub feed_errors: Counter,
}

impl CacheMetrics {
    /// Registers every family in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "cache_requests",
            "Requests on cache-enabled routes, by route and outcome",
            self.requests.clone(),
        );
        r.register(
            "cache_bytes",
            "Bytes stored in the HTTP cache",
            self.bytes.clone(),
        );
        r.register(
            "cache_entries",
            "Entries in the HTTP cache",
            self.entries.clone(),
        );
        r.register(
            "cache_evictions",
            "Entries evicted from the HTTP cache to stay under max_bytes",
            self.evictions.clone(),
        );
        r.register(
            "cache_stale_served",
            "Stale answers served because the upstream failed, by route",
            self.stale_served.clone(),
        );
        r.register(
            "cache_event_invalidations",
            "hotel.room.updated events that dropped the room's cached answers",
            self.event_invalidations.clone(),
        );
        r.register(
            "cache_feed_errors",
            "Failed reads of room's event feed (cache invalidation)",
            self.feed_errors.clone(),
        );
    }
}

/// Counts evictions.
#[derive(Debug, Clone)]
struct Evictions(Counter);

impl Lifecycle<Arc<str>, Arc<Entry>> for Evictions {
    type RequestState = ();
    fn on_evict(&self, _: &mut (), _: Arc<str>, _: Arc<Entry>) {
        self.0.inc();
    }
}

type Store = Cache<Arc<str>, Arc<Entry>, Weigh, DefaultHashBuilder, Evictions>;

/// Outcome counts since start, for `/admin/status`.
#[derive(Debug, Default)]
struct Counts {
    hit: AtomicU64,
    miss: AtomicU64,
    stale: AtomicU64,
    revalidated: AtomicU64,
    bypass: AtomicU64,
}

/// The cache object of `/admin/status`.
#[derive(Debug, Serialize)]
pub struct CacheStatus {
    /// Entries stored.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The bound.
    pub max_bytes: u64,
    /// Requests answered from a stored entry (`HIT` and `REVALIDATED`).
    pub hits: u64,
    /// Requests sent upstream (`MISS`).
    pub misses: u64,
    /// Stale entries served for a failed upstream (`STALE`).
    pub stale: u64,
    /// Of `hits`, the ones confirmed by a 304.
    pub revalidated: u64,
    /// Requests that were not cacheable (`BYPASS`).
    pub bypass: u64,
    /// Entries evicted to stay under `max_bytes`.
    pub evictions: u64,
    /// `(hits + stale) / (hits + stale + misses)`; 0 before any.
    pub hit_ratio: f64,
}

/// What a route tells the cache about itself.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// The route prefix (metrics label).
    pub label: Arc<String>,
    /// The route's overall deadline: the longest a request waits for another's fetch.
    pub deadline: Duration,
}

/// The shared HTTP cache of one gateway.
pub struct HttpCache {
    store: Store,
    /// Keys with an upstream fetch in flight (one request per key at a time).
    inflight: Coalescer,
    /// Keys whose last answer was not storable, until when: not coalesced.
    passes: Cache<Arc<str>, Instant>,
    max_bytes: u64,
    max_entry_bytes: u64,
    metrics: Arc<Metrics>,
    counts: Counts,
    /// The header the shield sets to the authenticated client's name.
    client_header: HeaderName,
}

impl std::fmt::Debug for HttpCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCache")
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

/// A stored entry as a gateway answer (see [`Entry::respond`]).
fn respond(
    e: &Entry,
    client_inm: Option<&HeaderValue>,
    head: bool,
    now: Instant,
) -> Response<GatewayBody> {
    let (status, headers, body) = e.respond(client_inm, head, now);
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

fn problem(p: Problem) -> Response<GatewayBody> {
    let res: Response<Vec<u8>> = p.to_http();
    res.map(full)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn body_is_empty(b: &ProxyBody) -> bool {
    matches!(b, ProxyBody::Buffered(None))
        || matches!(b, ProxyBody::Buffered(Some(b)) if b.is_empty())
}

impl HttpCache {
    /// The cache `settings` describe, counting into `metrics`; `None` when
    /// `max_bytes = 0`. `client_header` is where the shield names the client.
    pub fn new(
        settings: &CacheSettings,
        metrics: Arc<Metrics>,
        client_header: HeaderName,
    ) -> Option<Arc<HttpCache>> {
        if settings.max_bytes == 0 {
            return None;
        }
        // Each shard holds an equal part of the bound; keep a part at least 8 entries of
        // the largest size, so a large entry is never refused by its shard alone.
        let shards = (settings.max_bytes / (8 * settings.max_entry_bytes.max(1))).clamp(1, 16);
        let options = OptionsBuilder::new()
            .estimated_items_capacity((settings.max_bytes / 2048).clamp(32, 1 << 20) as usize)
            .weight_capacity(settings.max_bytes)
            .shards(shards as usize)
            .build()
            .ok()?;
        let store = Cache::with_options(
            options,
            Weigh,
            DefaultHashBuilder::default(),
            Evictions(metrics.cache.evictions.clone()),
        );
        let max_entry_bytes = settings.max_entry_bytes.min(store.shard_capacity() / 2);
        Some(Arc::new(HttpCache {
            store,
            inflight: Coalescer::default(),
            passes: Cache::new(16 * 1024),
            max_bytes: settings.max_bytes,
            max_entry_bytes,
            metrics,
            counts: Counts::default(),
            client_header,
        }))
    }

    /// Answers `req` (whose client-facing path and query is `key`) from the cache, or
    /// through `fetch` (the route's upstream stack, errors already mapped to
    /// problem+json), storing what may be stored. Sets `x-cache` and the metrics; the
    /// [`Outcome`] is returned for the edge to record on the request span.
    pub async fn serve<F, Fut>(
        self: &Arc<Self>,
        route: &RouteInfo,
        key: Arc<str>,
        req: Request<ProxyBody>,
        fetch: F,
    ) -> (Response<GatewayBody>, Outcome)
    where
        F: FnOnce(Request<ProxyBody>) -> Fut,
        Fut: Future<Output = Response<GatewayBody>>,
    {
        let (mut res, outcome) = self.answer(route, &key, req, fetch).await;
        res.headers_mut()
            .insert(X_CACHE_NAME, HeaderValue::from_static(outcome.as_str()));
        let m = &self.metrics.cache;
        m.request_series
            .get(
                &CacheLabels {
                    route: route.label.clone(),
                    outcome: outcome.label(),
                },
                |l| m.requests.get_or_create_owned(l),
            )
            .inc();
        let count = match outcome {
            Outcome::Hit => &self.counts.hit,
            Outcome::Miss => &self.counts.miss,
            Outcome::Stale => &self.counts.stale,
            Outcome::Revalidated => &self.counts.revalidated,
            Outcome::Bypass => &self.counts.bypass,
        };
        count.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(route = %route.label, key = %key, outcome = outcome.as_str(), status = res.status().as_u16(), "cache");
        (res, outcome)
    }

    async fn answer<F, Fut>(
        self: &Arc<Self>,
        route: &RouteInfo,
        key: &Arc<str>,
        req: Request<ProxyBody>,
        fetch: F,
    ) -> (Response<GatewayBody>, Outcome)
    where
        F: FnOnce(Request<ProxyBody>) -> Fut,
        Fut: Future<Output = Response<GatewayBody>>,
    {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            let host = req.headers().get(header::HOST).cloned();
            let res = fetch(req).await;
            let s = res.status();
            if !method.is_safe() && (s.is_success() || s.is_redirection()) {
                self.invalidate_after(key, res.headers(), host.as_ref());
            }
            return (res, Outcome::Bypass);
        }
        let req_cc = CacheControl::of(req.headers());
        if req_cc.no_store || !body_is_empty(req.body()) {
            return (fetch(req).await, Outcome::Bypass);
        }
        let head = method == Method::HEAD;
        let client_inm = req.headers().get(header::IF_NONE_MATCH).cloned();
        let mut now = Instant::now();
        let found = self.lookup(key, req.headers());
        if let Some(e) = &found
            && e.usable(&req_cc, now)
        {
            return (respond(e, client_inm.as_ref(), head, now), Outcome::Hit);
        }
        if req_cc.only_if_cached {
            let p = Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "not-cached",
                "only-if-cached: no fresh stored answer",
            );
            return (problem(p), Outcome::Miss);
        }
        if head {
            let res = fetch(req).await;
            return self.stale_or(route, key, found, res, head);
        }
        // In pass: its answers were not storable lately (see `fetch_and_store`).
        let pass_until = self.passes.get(key);
        let passing = pass_until.is_some_and(|until| until > now);
        let plain = !req_cc.no_cache
            && req_cc.max_age.is_none()
            && !passing
            && client_inm.is_none()
            && !req.headers().contains_key(header::IF_MODIFIED_SINCE);
        let mut _leader = None;
        let mut found = found;
        if plain {
            match self.turn(key, req.headers(), &req_cc) {
                Turn::Served(e) => {
                    return (respond(&e, None, false, Instant::now()), Outcome::Hit);
                }
                Turn::Lead(l) => _leader = Some(l),
                Turn::Wait(mut rx) => {
                    let waited = tokio::time::timeout(route.deadline, rx.changed()).await;
                    now = Instant::now();
                    found = self.lookup(key, req.headers());
                    if let Some(e) = &found
                        && e.usable(&req_cc, now)
                    {
                        return (respond(e, None, false, now), Outcome::Hit);
                    }
                    if waited.is_err() {
                        let p = Problem::new(
                            StatusCode::GATEWAY_TIMEOUT,
                            "deadline-exceeded",
                            "the upstream did not answer in time",
                        );
                        return self.stale_or(route, key, found, problem(p), false);
                    }
                }
            }
        }
        let known = Known {
            found,
            passing,
            pass_until,
            request_time: now,
        };
        self.fetch_and_store(route, key, req, &req_cc, known, fetch)
            .await
    }

    /// The stored entry for `key` when it fits the request's varying headers.
    fn lookup(&self, key: &Arc<str>, req: &HeaderMap) -> Option<Arc<Entry>> {
        self.store.get(key).filter(|e| e.matches(req))
    }

    /// A usable entry, a fetch to wait for, or the lead (see [`Coalescer::turn`]).
    fn turn(&self, key: &Arc<str>, req: &HeaderMap, req_cc: &CacheControl) -> Turn {
        self.inflight.turn(key, || {
            self.lookup(key, req)
                .filter(|e| e.usable(req_cc, Instant::now()))
        })
    }

    /// `res` unless it is an upstream failure and `found` may stand in for it.
    fn stale_or(
        &self,
        route: &RouteInfo,
        key: &str,
        found: Option<Arc<Entry>>,
        res: Response<GatewayBody>,
        head: bool,
    ) -> (Response<GatewayBody>, Outcome) {
        let failed = matches!(res.status().as_u16(), 500 | 502 | 503 | 504);
        let now = Instant::now();
        match found {
            Some(e) if failed && e.stale_usable(now) => {
                tracing::warn!(
                    route = %route.label,
                    key = %key,
                    upstream_status = res.status().as_u16(),
                    age_secs = e.age(now).as_secs(),
                    "upstream failed: served a stale cached answer (stale-if-error)"
                );
                self.metrics
                    .cache
                    .stale_served
                    .get_or_create(&RouteLabels {
                        route: route.label.clone(),
                    })
                    .inc();
                (respond(&e, None, head, now), Outcome::Stale)
            }
            _ => (res, Outcome::Miss),
        }
    }

    async fn fetch_and_store<F, Fut>(
        &self,
        route: &RouteInfo,
        key: &Arc<str>,
        mut req: Request<ProxyBody>,
        req_cc: &CacheControl,
        known: Known,
        fetch: F,
    ) -> (Response<GatewayBody>, Outcome)
    where
        F: FnOnce(Request<ProxyBody>) -> Fut,
        Fut: Future<Output = Response<GatewayBody>>,
    {
        let Known {
            found,
            passing,
            pass_until,
            request_time,
        } = known;
        let client_inm = req.headers().get(header::IF_NONE_MATCH).cloned();
        let validating = found.as_ref().filter(|e| e.validatable()).cloned();
        if let Some(e) = &validating {
            e.condition(req.headers_mut());
        }
        // The request's headers are kept for the entry (the values its `Vary` names) and
        // for a revalidation. A key in pass (its answers were not storable lately) keeps
        // no copy: most of its answers go straight through, and should one become
        // storable it is not stored this time but the pass ends, so the next is.
        let req_headers = (!passing || validating.is_some()).then(|| req.headers().clone());
        let authenticated = self.authenticated(req.headers());
        let res = fetch(req).await;
        let response_time = Instant::now();
        let status = res.status();
        if status == StatusCode::NOT_MODIFIED
            && let Some(old) = validating
            && let Some(req_headers) = &req_headers
        {
            let entry =
                Arc::new(old.refreshed(res.headers(), req_headers, request_time, response_time));
            let res_cc = entry.cache_control();
            if storable(
                &Method::GET,
                req_cc,
                entry.status(),
                res_cc,
                entry.headers(),
                authenticated,
            )
            .is_ok()
            {
                self.insert(key.clone(), entry.clone());
            } else {
                self.remove(key);
            }
            return (
                respond(&entry, client_inm.as_ref(), false, response_time),
                Outcome::Revalidated,
            );
        }
        if status.is_server_error() {
            return self.stale_or(route, key, found, res, false);
        }
        let res_cc = CacheControl::of(res.headers());
        let fits = content_length(res.headers()).is_some_and(|n| n <= self.max_entry_bytes);
        let verdict = storable(
            &Method::GET,
            req_cc,
            status,
            &res_cc,
            res.headers(),
            authenticated,
        )
        .and_then(|()| {
            fits.then_some(())
                .ok_or("no Content-Length, or above max_entry_bytes")
        });
        if let Err(why) = verdict {
            if found.is_some() {
                self.remove(key);
            }
            // A pass renewed at most once per half of it: not one more write to the
            // shared map per request on a key that is never storable.
            if pass_until.is_none_or(|until| until < response_time + PASS_FOR / 2) {
                self.passes.insert(key.clone(), response_time + PASS_FOR);
            }
            tracing::debug!(route = %route.label, key = %key, why, "answer not stored");
            return (res, Outcome::Miss);
        }
        let Some(req_headers) = req_headers else {
            self.passes.remove(key);
            tracing::debug!(route = %route.label, key = %key, "storable again: stored from the next answer");
            return (res, Outcome::Miss);
        };
        let (parts, body) = res.into_parts();
        let bytes = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                tracing::warn!(route = %route.label, error = %e, "upstream body could not be read");
                let p = Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream-unreachable",
                    "the upstream answer broke off",
                );
                return (problem(p), Outcome::Miss);
            }
        };
        // `x-cache` is stamped on every answer from the entry: present in the stored
        // headers, it replaces in place on a hit instead of growing the copied map.
        let mut stored = parts.headers.clone();
        stored.insert(X_CACHE_NAME, HeaderValue::from_static("HIT"));
        let entry = Entry::new(
            parts.status,
            stored,
            bytes.clone(),
            &req_headers,
            request_time,
            response_time,
        );
        self.insert(key.clone(), Arc::new(entry));
        self.passes.remove(key);
        (Response::from_parts(parts, full(bytes)), Outcome::Miss)
    }

    /// Whether the request carried credentials: `Authorization`, an API key, or (the
    /// shield removes both once checked) a client name other than anonymous/public.
    fn authenticated(&self, h: &HeaderMap) -> bool {
        h.contains_key(header::AUTHORIZATION)
            || h.contains_key(crate::auth::X_API_KEY)
            || h.get(&self.client_header).is_some_and(|v| {
                v.as_bytes() != crate::auth::ANONYMOUS.as_bytes()
                    && v.as_bytes() != crate::auth::PUBLIC.as_bytes()
            })
    }

    fn insert(&self, key: Arc<str>, entry: Arc<Entry>) {
        self.store.insert(key, entry);
        self.update_gauges();
    }

    fn remove(&self, key: &str) -> bool {
        let removed = self.store.remove(key).is_some();
        if removed {
            self.update_gauges();
        }
        removed
    }

    fn update_gauges(&self) {
        let m = &self.metrics.cache;
        m.bytes
            .set(i64::try_from(self.store.weight()).unwrap_or(i64::MAX));
        m.entries
            .set(i64::try_from(self.store.len()).unwrap_or(i64::MAX));
    }

    /// RFC 9111 section 4.4: after a successful unsafe request, the target URI and the
    /// same-origin `Location` and `Content-Location` are stale.
    fn invalidate_after(&self, key: &str, res: &HeaderMap, host: Option<&HeaderValue>) {
        let mut gone = usize::from(self.remove(key));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(v) = res.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let path = if v.starts_with('/') && !v.starts_with("//") {
                Some(v.to_owned())
            } else {
                v.parse::<http::Uri>().ok().and_then(|u| {
                    let same = u.authority().map(|a| a.as_str().as_bytes())
                        == host.map(HeaderValue::as_bytes);
                    same.then(|| u.path_and_query().map(|p| p.as_str().to_owned()))
                        .flatten()
                })
            };
            if let Some(p) = path {
                gone += usize::from(self.remove(&p));
            }
        }
        tracing::debug!(
            key,
            removed = gone,
            "cache invalidated after an unsafe request"
        );
    }

    /// Removes every entry whose key (client path and query) starts with `prefix`; how
    /// many were removed.
    pub fn purge(&self, prefix: &str) -> usize {
        let removed = std::cell::Cell::new(0usize);
        self.store.retain(|k, _| {
            let keep = !k.starts_with(prefix);
            if !keep {
                removed.set(removed.get() + 1);
            }
            keep
        });
        self.update_gauges();
        tracing::info!(prefix, removed = removed.get(), "cache purged");
        removed.get()
    }

    /// The numbers `/admin/status` shows.
    pub fn status(&self) -> CacheStatus {
        let c = &self.counts;
        let revalidated = c.revalidated.load(Ordering::Relaxed);
        let hits = c.hit.load(Ordering::Relaxed) + revalidated;
        let misses = c.miss.load(Ordering::Relaxed);
        let stale = c.stale.load(Ordering::Relaxed);
        let served = hits + stale;
        CacheStatus {
            entries: self.store.len() as u64,
            bytes: self.store.weight(),
            max_bytes: self.max_bytes,
            hits,
            misses,
            stale,
            revalidated,
            bypass: c.bypass.load(Ordering::Relaxed),
            evictions: self.metrics.cache.evictions.get(),
            hit_ratio: if served + misses == 0 {
                0.0
            } else {
                served as f64 / (served + misses) as f64
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn cache() -> Arc<HttpCache> {
        HttpCache::new(
            &CacheSettings::default(),
            Metrics::new(),
            HeaderName::from_static("x-client"),
        )
        .unwrap()
    }

    /// One GET of `key` through `cache`, answered by an instance that says `no-store`.
    async fn get_unstorable(
        cache: &Arc<HttpCache>,
        key: &Arc<str>,
        fetched: &AtomicUsize,
    ) -> Outcome {
        let route = RouteInfo {
            label: Arc::new("/api/rooms".to_owned()),
            deadline: Duration::from_secs(3),
        };
        let req = Request::builder()
            .uri(&**key)
            .body(ProxyBody::empty())
            .unwrap();
        let (res, outcome) = cache
            .serve(&route, key.clone(), req, |_| async {
                fetched.fetch_add(1, Ordering::SeqCst);
                let mut res = Response::new(full("fresh each time"));
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from_static("15"));
                res
            })
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        outcome
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_in_pass_has_its_pass_renewed_once_half_of_it_has_run_not_per_request() {
        let cache = cache();
        let key: Arc<str> = "/api/rooms/7".into();
        let fetched = AtomicUsize::new(0);
        let start = Instant::now();
        assert_eq!(get_unstorable(&cache, &key, &fetched).await, Outcome::Miss);
        assert_eq!(cache.passes.get(&key), Some(start + PASS_FOR));
        // Inside the first half: each answer goes through, the pass stays as it was.
        tokio::time::advance(PASS_FOR / 4).await;
        assert_eq!(get_unstorable(&cache, &key, &fetched).await, Outcome::Miss);
        assert_eq!(cache.passes.get(&key), Some(start + PASS_FOR));
        // Past half of it: the next unstorable answer renews it from now.
        tokio::time::advance(PASS_FOR / 2).await;
        let now = Instant::now();
        assert_eq!(get_unstorable(&cache, &key, &fetched).await, Outcome::Miss);
        assert_eq!(cache.passes.get(&key), Some(now + PASS_FOR));
        // Never stored, every request reached the instance.
        assert_eq!(fetched.load(Ordering::SeqCst), 3);
        assert!(cache.store.get(&key).is_none());
    }
}
