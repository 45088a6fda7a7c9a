//! [`CachedClient`]: an [`UpstreamClient`] with a private HTTP cache in front, for a
//! service's own reads of its peers (booking reading rooms), so a repeated read costs no
//! peer query while the answer is fresh and a 304 while it is stale.
//!
//! The same rules as the gateway's shared cache, from the same parts ([`Entry`],
//! [`storable`]): only GET answers with explicit freshness and without `no-store` or
//! `private` are stored (customers are `private, no-store`: never); a fresh entry is a
//! `HIT`; a stale one is revalidated with `If-None-Match` / `If-Modified-Since` and a 304
//! refreshes it (`REVALIDATED`); concurrent misses of one key send one request; when the
//! peer fails (an error after the client's retries, or a 5xx) an entry inside its
//! `stale-if-error` window answers (`STALE`). Every answer carries no credentials, so the
//! key is the service and the path.

use super::{
    coalesce::{Coalescer, Turn},
    directives::{CacheControl, storable},
    entry::{Entry, Outcome, Weigh},
};
use crate::client::UpstreamClient;
use bytes::Bytes;
use hotel_common::Problem;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use quick_cache::{DefaultHashBuilder, OptionsBuilder, sync::Cache};
use std::{sync::Arc, time::Duration};
use tokio::time::Instant;

/// How long a key whose answer could not be stored skips request coalescing.
const PASS_FOR: Duration = Duration::from_secs(60);

/// Labels of the `peer_cache_*` families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// The peer service, such as `room`.
    pub service: &'static str,
}

/// The peer cache's metric families: `hits`, `misses`, `revalidations`, `stale` (each
/// `_total`, by service) and `bytes` stored now.
#[derive(Debug, Default)]
pub struct PeerCacheMetrics {
    /// Reads answered from a fresh entry.
    pub hits: Family<PeerLabels, Counter>,
    /// Reads sent to the peer (stored or not).
    pub misses: Family<PeerLabels, Counter>,
    /// Stale entries confirmed by a 304.
    pub revalidations: Family<PeerLabels, Counter>,
    /// Stale entries served because the peer failed.
    pub stale: Family<PeerLabels, Counter>,
    /// Bytes stored now.
    pub bytes: Gauge,
}

impl PeerCacheMetrics {
    /// Registers every family in `r` (whose prefix, if any, comes first).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "peer_cache_hits",
            "Peer reads answered from a fresh cached entry, by service",
            self.hits.clone(),
        );
        r.register(
            "peer_cache_misses",
            "Peer reads sent to the peer, by service",
            self.misses.clone(),
        );
        r.register(
            "peer_cache_revalidations",
            "Stale cached peer answers confirmed by a 304, by service",
            self.revalidations.clone(),
        );
        r.register(
            "peer_cache_stale",
            "Stale cached peer answers served because the peer failed, by service",
            self.stale.clone(),
        );
        r.register(
            "peer_cache_bytes",
            "Bytes stored in the peer cache",
            self.bytes.clone(),
        );
    }
}

type Store = Cache<Arc<str>, Arc<Entry>, Weigh>;

/// The store one process's [`CachedClient`]s share, bounded in bytes.
pub struct PeerCache {
    store: Store,
    /// Keys with a peer request in flight (one request per key at a time).
    inflight: Coalescer,
    /// Keys whose last answer was not storable, until when: not coalesced.
    passes: Cache<Arc<str>, Instant>,
    max_entry_bytes: u64,
    metrics: Arc<PeerCacheMetrics>,
}

impl std::fmt::Debug for PeerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCache")
            .field("bytes", &self.store.weight())
            .finish_non_exhaustive()
    }
}

impl PeerCache {
    /// A store of at most `max_bytes` (entries above an eighth of it are not stored),
    /// counting into `metrics`; `None` when `max_bytes` is 0 (no caching).
    pub fn new(max_bytes: u64, metrics: Arc<PeerCacheMetrics>) -> Option<Arc<PeerCache>> {
        if max_bytes == 0 {
            return None;
        }
        let options = OptionsBuilder::new()
            .estimated_items_capacity((max_bytes / 1024).clamp(16, 1 << 18) as usize)
            .weight_capacity(max_bytes)
            .shards(((max_bytes / (1 << 20)) as usize).clamp(1, 8))
            .build()
            .ok()?;
        let store = Cache::with_options(
            options,
            Weigh,
            DefaultHashBuilder::default(),
            Default::default(),
        );
        Some(Arc::new(PeerCache {
            max_entry_bytes: (max_bytes / 8).min(store.shard_capacity() / 2),
            store,
            inflight: Coalescer::default(),
            passes: Cache::new(4096),
            metrics,
        }))
    }

    fn lookup(&self, key: &str, req: &HeaderMap) -> Option<Arc<Entry>> {
        self.store.get(key).filter(|e| e.matches(req))
    }

    fn insert(&self, key: Arc<str>, entry: Arc<Entry>) {
        self.store.insert(key, entry);
        self.metrics
            .bytes
            .set(i64::try_from(self.store.weight()).unwrap_or(i64::MAX));
    }

    fn remove(&self, key: &str) {
        if self.store.remove(key).is_some() {
            self.metrics
                .bytes
                .set(i64::try_from(self.store.weight()).unwrap_or(i64::MAX));
        }
    }

    /// A usable entry, a fetch to wait for, or the lead (see [`Coalescer::turn`]).
    fn turn(&self, key: &Arc<str>, req: &HeaderMap) -> Turn {
        self.inflight.turn(key, || {
            self.lookup(key, req)
                .filter(|e| e.usable(&CacheControl::default(), Instant::now()))
        })
    }
}

/// An [`UpstreamClient`] whose GETs go through a [`PeerCache`] (or straight through when
/// there is none).
#[derive(Debug, Clone)]
pub struct CachedClient {
    client: UpstreamClient,
    service: &'static str,
    cache: Option<Arc<PeerCache>>,
}

impl CachedClient {
    /// `client` of `service`, caching in `cache` when there is one.
    pub fn new(
        service: &'static str,
        client: UpstreamClient,
        cache: Option<Arc<PeerCache>>,
    ) -> CachedClient {
        CachedClient {
            client,
            service,
            cache,
        }
    }

    /// Sends `req` (a path such as `/rooms/42`) like [`UpstreamClient::send`], answering
    /// GETs from the cache when the rules allow; with what the cache did. Logged at
    /// debug; the caller records the outcome on its span.
    pub async fn send(&self, req: Request<Bytes>) -> Result<(Response<Bytes>, Outcome), Problem> {
        let Some(cache) = &self.cache else {
            return Ok((self.client.send(req).await?, Outcome::Bypass));
        };
        let key: Arc<str> = format!("{}{}", self.service, req.uri()).into();
        let answer = self.answer(cache, &key, req).await;
        let outcome = match &answer {
            Ok((_, o)) => *o,
            Err(_) => Outcome::Miss,
        };
        let labels = PeerLabels {
            service: self.service,
        };
        let m = &cache.metrics;
        match outcome {
            Outcome::Hit => m.hits.get_or_create(&labels).inc(),
            Outcome::Miss => m.misses.get_or_create(&labels).inc(),
            Outcome::Revalidated => m.revalidations.get_or_create(&labels).inc(),
            Outcome::Stale => m.stale.get_or_create(&labels).inc(),
            Outcome::Bypass => 0,
        };
        tracing::debug!(
            peer.service = self.service,
            key = %key,
            cache = outcome.as_str(),
            "peer cache"
        );
        answer
    }

    async fn answer(
        &self,
        cache: &Arc<PeerCache>,
        key: &Arc<str>,
        req: Request<Bytes>,
    ) -> Result<(Response<Bytes>, Outcome), Problem> {
        let req_cc = CacheControl::of(req.headers());
        if req.method() != Method::GET || !req.body().is_empty() || req_cc.no_store {
            return Ok((self.client.send(req).await?, Outcome::Bypass));
        }
        let now = Instant::now();
        let mut found = cache.lookup(key, req.headers());
        if let Some(e) = &found
            && e.usable(&req_cc, now)
        {
            return Ok((response(e, now), Outcome::Hit));
        }
        let plain = req_cc == CacheControl::default()
            && cache.passes.get(key).is_none_or(|until| until <= now)
            && !req.headers().contains_key(header::IF_NONE_MATCH)
            && !req.headers().contains_key(header::IF_MODIFIED_SINCE);
        let mut _leader = None;
        if plain {
            match cache.turn(key, req.headers()) {
                Turn::Served(e) => return Ok((response(&e, Instant::now()), Outcome::Hit)),
                Turn::Lead(l) => _leader = Some(l),
                Turn::Wait(mut rx) => {
                    // Bounded by the client's own deadline: the leader's call ends by then.
                    let _ = tokio::time::timeout(self.client.deadline(), rx.changed()).await;
                    let now = Instant::now();
                    found = cache.lookup(key, req.headers());
                    if let Some(e) = &found
                        && e.usable(&req_cc, now)
                    {
                        return Ok((response(e, now), Outcome::Hit));
                    }
                }
            }
        }
        self.fetch_and_store(cache, key, req, &req_cc, found).await
    }

    async fn fetch_and_store(
        &self,
        cache: &PeerCache,
        key: &Arc<str>,
        mut req: Request<Bytes>,
        req_cc: &CacheControl,
        found: Option<Arc<Entry>>,
    ) -> Result<(Response<Bytes>, Outcome), Problem> {
        let validating = found.as_ref().filter(|e| e.validatable()).cloned();
        if let Some(e) = &validating {
            e.condition(req.headers_mut());
        }
        let req_headers = req.headers().clone();
        let request_time = Instant::now();
        let sent = self.client.send(req).await;
        let response_time = Instant::now();
        let stale = |found: Option<Arc<Entry>>| {
            found
                .filter(|e| e.stale_usable(response_time))
                .map(|e| (response(&e, response_time), Outcome::Stale))
        };
        let res = match sent {
            Ok(res) => res,
            Err(problem) => {
                return match stale(found) {
                    Some(served) => {
                        tracing::warn!(
                            peer.service = self.service,
                            key = %key,
                            status = problem.status,
                            "peer failed: served a stale cached answer (stale-if-error)"
                        );
                        Ok(served)
                    }
                    None => Err(problem),
                };
            }
        };
        let status = res.status();
        if status == StatusCode::NOT_MODIFIED
            && let Some(old) = validating
        {
            let entry =
                Arc::new(old.refreshed(res.headers(), &req_headers, request_time, response_time));
            let ok = storable(
                &Method::GET,
                req_cc,
                entry.status(),
                entry.cache_control(),
                entry.headers(),
                false,
            );
            if ok.is_ok() {
                cache.insert(key.clone(), entry.clone());
            } else {
                cache.remove(key);
            }
            return Ok((response(&entry, response_time), Outcome::Revalidated));
        }
        if status.is_server_error() {
            if let Some(served) = stale(found) {
                tracing::warn!(
                    peer.service = self.service,
                    key = %key,
                    status = status.as_u16(),
                    "peer failed: served a stale cached answer (stale-if-error)"
                );
                return Ok(served);
            }
            return Ok((res, Outcome::Miss));
        }
        let res_cc = CacheControl::of(res.headers());
        let verdict = storable(&Method::GET, req_cc, status, &res_cc, res.headers(), false)
            .and_then(|()| {
                (res.body().len() as u64 <= cache.max_entry_bytes)
                    .then_some(())
                    .ok_or("above the largest entry")
            });
        match verdict {
            Ok(()) => {
                let entry = Entry::new(
                    status,
                    res.headers().clone(),
                    res.body().clone(),
                    &req_headers,
                    request_time,
                    response_time,
                );
                cache.insert(key.clone(), Arc::new(entry));
                cache.passes.remove(key);
            }
            Err(why) => {
                if found.is_some() {
                    cache.remove(key);
                }
                cache.passes.insert(key.clone(), response_time + PASS_FOR);
                tracing::trace!(key = %key, why, "peer answer not stored");
            }
        }
        Ok((res, Outcome::Miss))
    }
}

/// A stored entry as a peer answer, with its `Age`.
fn response(e: &Entry, now: Instant) -> Response<Bytes> {
    let (status, headers, body) = e.respond(None, false, now);
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}
