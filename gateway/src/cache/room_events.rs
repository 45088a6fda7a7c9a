//! Follows the room service's event feed and drops cached answers of rooms that changed,
//! so a change made behind the gateway's back (at a room instance directly, or through
//! another gateway) is not served from this cache until the entry's `max-age` runs out.
//!
//! Runs only with a registry: the feed is read at any live room instance the registry
//! lists (`GET /events?after=SEQ&wait_ms=...`, the embedded bus of `hotel-events`, read
//! here over plain HTTP: the gateway does not depend on the events crate, whose consumers
//! keep an inbox in a database the gateway does not have). At start it applies the
//! updates made since the gateway started (it may have stored answers in the moment
//! before it found the feed), then follows. On `hotel.room.updated`
//! for room `ID`, every route of service `room` drops `{prefix}/ID` (and its queries),
//! `{prefix}` and `{prefix}?...` (lists that may show the room), unless fetched after
//! the event's time (they show the change already; the gateway's own PATCH invalidated
//! and re-fetched before the event arrived). Counted in
//! `gateway_cache_event_invalidations_total` and `gateway_cache_feed_errors_total`.

use super::HttpCache;
use crate::reload::Live;
use bytes::Bytes;
use hotel_registry::client::{RegistryClient, Watcher};
use hotel_upstream::{ClientOptions, HttpClient, ProxyBody};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};
use time::format_description::well_known::Rfc3339;

/// The service whose feed is followed.
const PRODUCER: &str = "room";
/// The event type that invalidates.
pub const ROOM_UPDATED: &str = "hotel.room.updated";
/// Longest blocking read of the feed.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// Wait after a failed read (or while no room instance is live) before the next one.
const BACKOFF: Duration = Duration::from_millis(500);
/// Events read per request.
const BATCH: u32 = 100;
/// At start, a feed with at most this many events is read from its beginning, and the
/// updates since the gateway started are applied (the moment before the follower found
/// the feed); a longer one is followed from its head and the room entries are dropped.
const CATCH_UP: i64 = 1000;

/// A page of the feed (`hotel_events::feed::FeedPage`).
#[derive(Debug, Deserialize)]
struct FeedPage {
    events: Vec<Stored>,
    head: i64,
}

/// One event of the feed: its position and its CloudEvent JSON text.
#[derive(Debug, Deserialize)]
struct Stored {
    seq: i64,
    payload: String,
}

/// The part of a CloudEvent read here.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
    /// RFC 3339.
    #[serde(default)]
    time: Option<String>,
}

/// Starts following room's feed through `registry` for the cache of `live`'s current
/// generation (looked up per event, so a reload that replaces the cache is followed).
pub(crate) fn spawn(live: Arc<Live>, registry: RegistryClient) -> tokio::task::JoinHandle<()> {
    tokio::spawn(follow(live, registry))
}

async fn follow(live: Arc<Live>, registry: RegistryClient) {
    let watcher = Watcher::start(registry, PRODUCER);
    let client = hotel_upstream::http_client(ClientOptions::default());
    let started = time::OffsetDateTime::now_utc();
    let mut after: Option<i64> = None;
    // Events up to this position were written before the follower found the feed: only
    // those since `started` can concern an answer this gateway stored.
    let mut catch_up = 0i64;
    let mut turn = 0usize;
    loop {
        let instances = watcher.current();
        let Some(instance) = (!instances.is_empty()).then(|| &instances[turn % instances.len()])
        else {
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        // The first read only learns the head (no wait, one event at most).
        let (from, wait) = match after {
            Some(a) => (a, POLL_WAIT),
            None => (0, Duration::ZERO),
        };
        match read(&client, &instance.url, from, wait).await {
            Ok(page) => {
                let Some(pos) = after else {
                    tracing::info!(head = page.head, instance = %instance.url, "following room events for cache invalidation");
                    if page.head <= CATCH_UP {
                        after = Some(0);
                        catch_up = page.head;
                    } else {
                        after = Some(page.head);
                        drop_rooms(&live);
                    }
                    continue;
                };
                if page.head < pos {
                    tracing::warn!(
                        head = page.head,
                        after = pos,
                        "room's feed is behind the position followed (a new database?): following from its head"
                    );
                    after = Some(page.head);
                    drop_rooms(&live);
                    continue;
                }
                for stored in page.events {
                    after = Some(stored.seq);
                    invalidate(&live, &stored, (stored.seq <= catch_up).then_some(started));
                }
            }
            Err(e) => {
                turn = turn.wrapping_add(1);
                if let Some(cache) = &live.current().cache {
                    cache.metrics.cache.feed_errors.inc();
                }
                tracing::warn!(instance = %instance.url, error = %e, "reading room's event feed failed; cached rooms are kept until their max-age");
                tokio::time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Drops every cached answer of the room routes: whatever was stored before the feed was
/// followed (or before it lost its place) may have missed an update.
fn drop_rooms(live: &Live) {
    let generation = live.current();
    if let Some(cache) = &generation.cache {
        for r in generation
            .config
            .routes
            .iter()
            .filter(|r| r.service == PRODUCER)
        {
            cache.purge(&r.prefix);
        }
    }
}

/// One read of the feed at `base`.
async fn read(
    client: &HttpClient,
    base: &str,
    after: i64,
    wait: Duration,
) -> Result<FeedPage, String> {
    let uri = format!(
        "{}/events?after={after}&limit={BATCH}&wait_ms={}&consumer=gateway",
        base.trim_end_matches('/'),
        wait.as_millis()
    );
    let req = Request::get(uri)
        .body(ProxyBody::empty())
        .map_err(|e| e.to_string())?;
    let call = async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body: Bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("status {status}"));
        }
        serde_json::from_slice::<FeedPage>(&body).map_err(|e| format!("body: {e}"))
    };
    tokio::time::timeout(wait + Duration::from_secs(5), call)
        .await
        .map_err(|_| "no answer in time".to_owned())?
}

/// Drops the cached answers `stored` makes stale, when it is a room update (and, with
/// `since`, happened at or after it).
fn invalidate(live: &Live, stored: &Stored, since: Option<time::OffsetDateTime>) {
    let event: Event = match serde_json::from_str(&stored.payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(seq = stored.seq, error = %e, "unreadable event in room's feed; skipped");
            return;
        }
    };
    if event.kind != ROOM_UPDATED {
        return;
    }
    let at = event
        .time
        .as_deref()
        .and_then(|t| time::OffsetDateTime::parse(t, &Rfc3339).ok());
    if let (Some(since), Some(at)) = (since, at)
        && at < since
    {
        return;
    }
    let Some(id) = event.data.pointer("/room/id").and_then(|v| v.as_str()) else {
        tracing::warn!(
            seq = stored.seq,
            "hotel.room.updated without data.room.id; skipped"
        );
        return;
    };
    let generation = live.current();
    let Some(cache) = &generation.cache else {
        return;
    };
    let removed: usize = generation
        .config
        .routes
        .iter()
        .filter(|r| r.service == PRODUCER && r.cache)
        .map(|r| cache.invalidate_entity(&r.prefix, id, at.map(SystemTime::from)))
        .sum();
    cache.metrics.cache.event_invalidations.inc();
    tracing::info!(
        seq = stored.seq,
        room = id,
        removed,
        "hotel.room.updated: cached answers of the room dropped"
    );
}

impl HttpCache {
    /// Drops `{prefix}/{id}` (with any query), `{prefix}` and `{prefix}?...`: the
    /// entity's answers and the lists that may show it; with `changed_at`, only those
    /// fetched before it (an answer fetched after the change already shows it: the
    /// event's time is taken inside the transaction, before its commit). How many were
    /// removed.
    pub fn invalidate_entity(
        &self,
        prefix: &str,
        id: &str,
        changed_at: Option<SystemTime>,
    ) -> usize {
        let removed = std::cell::Cell::new(0usize);
        self.store.retain(|k, e| {
            if changed_at.is_some_and(|at| e.fetched_at() > at) {
                return true;
            }
            let Some(rest) = k.strip_prefix(prefix) else {
                return true;
            };
            let entity = rest
                .strip_prefix('/')
                .and_then(|r| r.strip_prefix(id))
                .is_some_and(|r| r.is_empty() || r.starts_with('?'));
            let list = rest.is_empty() || rest.starts_with('?');
            let keep = !(entity || list);
            if !keep {
                removed.set(removed.get() + 1);
            }
            keep
        });
        self.update_gauges();
        removed.get()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cache::CacheSettings;
    use hotel_upstream::cache::Entry;
    use http::HeaderMap;
    use tokio::time::Instant;

    #[tokio::test]
    async fn a_room_update_drops_the_room_and_the_lists_but_not_other_rooms() {
        let metrics = crate::metrics::Metrics::new();
        let cache = HttpCache::new(
            &CacheSettings::default(),
            metrics.clone(),
            http::HeaderName::from_static("x-client"),
        )
        .unwrap();
        let keys = [
            "/api/rooms/a",
            "/api/rooms/a?x=1",
            "/api/rooms/ab",
            "/api/rooms/b",
            "/api/rooms",
            "/api/rooms?min_capacity=2",
            "/api/roomsx",
            "/api/customers/a",
        ];
        let now = Instant::now();
        for k in keys {
            let entry = Entry::new(
                StatusCode::OK,
                HeaderMap::new(),
                Bytes::from_static(b"{}"),
                &HeaderMap::new(),
                now,
                now,
            );
            cache.insert(k.into(), Arc::new(entry));
        }
        let before = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(
            cache.invalidate_entity("/api/rooms", "a", Some(before)),
            0,
            "fetched after the change: kept"
        );
        assert_eq!(cache.invalidate_entity("/api/rooms", "a", None), 4);
        let left: Vec<&str> = keys
            .into_iter()
            .filter(|k| cache.store.get(*k).is_some())
            .collect();
        assert_eq!(
            left,
            [
                "/api/rooms/ab",
                "/api/rooms/b",
                "/api/roomsx",
                "/api/customers/a"
            ]
        );
    }
}
