//! One stored answer with what RFC 9111 needs to reuse it: its validators, its freshness
//! lifetime and age, the request headers it varies on, and its weight in bytes.

use super::directives::{CacheControl, none_match, vary_names, vary_values};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use quick_cache::Weighter;
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::time::Instant;

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    cc: CacheControl,
    /// When the answer, or the 304 that last confirmed it, arrived.
    response_time: Instant,
    /// Wall-clock time the request that fetched (or last confirmed) it was sent: it
    /// reflects every change committed before then.
    fetched_at: SystemTime,
    /// The age it had on arrival: its `Age` plus the time in transit.
    initial_age: Duration,
    lifetime: Duration,
    /// The request headers it varies on, and their values in the request that fetched it.
    vary: Vec<HeaderName>,
    vary_values: Vec<Option<String>>,
    weight: u64,
}

impl Entry {
    /// The entry for an answer fetched with `req_headers`, sent at `request_time` and
    /// received at `response_time`.
    pub fn new(
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        req_headers: &HeaderMap,
        request_time: Instant,
        response_time: Instant,
    ) -> Entry {
        let cc = CacheControl::of(&headers);
        let age_header = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let vary = vary_names(&headers).unwrap_or_default();
        let vary_values = vary_values(req_headers, &vary);
        // Serving stamps `Age` on a copy of these headers: with the name already present
        // (value replaced on serving), the copy takes it in place, without growing (and
        // rehashing) the map on every hit.
        let mut headers = headers;
        headers.insert(header::AGE, HeaderValue::from_static("0"));
        let weight = 256
            + body.len() as u64
            + headers
                .iter()
                .map(|(k, v)| (k.as_str().len() + v.len() + 32) as u64)
                .sum::<u64>();
        let fetched_at = SystemTime::now()
            .checked_sub(Instant::now().saturating_duration_since(request_time))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Entry {
            status,
            fetched_at,
            lifetime: cc.freshness_lifetime().unwrap_or_default(),
            cc,
            initial_age: age_header + response_time.saturating_duration_since(request_time),
            response_time,
            headers,
            body,
            vary,
            vary_values,
            weight,
        }
    }

    /// The entry after a 304: its headers replaced by the 304's (RFC 9111 section 4.3.4).
    pub fn refreshed(
        &self,
        not_modified: &HeaderMap,
        req_headers: &HeaderMap,
        request_time: Instant,
        response_time: Instant,
    ) -> Entry {
        let mut headers = self.headers.clone();
        for name in not_modified.keys() {
            if name == header::CONTENT_LENGTH {
                continue;
            }
            headers.remove(name);
            for v in not_modified.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        Entry::new(
            self.status,
            headers,
            self.body.clone(),
            req_headers,
            request_time,
            response_time,
        )
    }

    /// The stored status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stored headers (without `Age`).
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The stored body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The answer's `Cache-Control`.
    pub fn cache_control(&self) -> &CacheControl {
        &self.cc
    }

    /// Wall-clock time the request that fetched or last confirmed it was sent.
    pub fn fetched_at(&self) -> SystemTime {
        self.fetched_at
    }

    /// Bytes it takes (body, headers, bookkeeping; not the key).
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Its current age (RFC 9111 section 4.2.3, without the `Date` header).
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.response_time)
    }

    /// Whether it may answer a request with `req_cc` without asking upstream.
    pub fn usable(&self, req_cc: &CacheControl, now: Instant) -> bool {
        let age = self.age(now);
        age < self.lifetime
            && !self.cc.no_cache
            && !req_cc.no_cache
            && req_cc.max_age.is_none_or(|m| age <= m)
    }

    /// Whether it may stand in for a failed upstream now (RFC 5861 `stale-if-error`).
    pub fn stale_usable(&self, now: Instant) -> bool {
        let staleness = self.age(now).saturating_sub(self.lifetime);
        !self.cc.forbids_stale() && self.cc.stale_if_error.is_some_and(|w| staleness <= w)
    }

    /// Whether a request with headers `req` gets this variant.
    pub fn matches(&self, req: &HeaderMap) -> bool {
        self.vary.is_empty() || vary_values(req, &self.vary) == self.vary_values
    }

    /// Its `ETag`.
    pub fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(header::ETAG)
    }

    /// Its `Last-Modified`.
    pub fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(header::LAST_MODIFIED)
    }

    /// Whether it has a validator to revalidate with.
    pub fn validatable(&self) -> bool {
        self.etag().is_some() || self.last_modified().is_some()
    }

    /// Sets the conditional headers that revalidate this entry on a request's headers.
    pub fn condition(&self, h: &mut HeaderMap) {
        h.remove(header::IF_NONE_MATCH);
        h.remove(header::IF_MODIFIED_SINCE);
        if let Some(t) = self.etag() {
            h.insert(header::IF_NONE_MATCH, t.clone());
        }
        if let Some(lm) = self.last_modified() {
            h.insert(header::IF_MODIFIED_SINCE, lm.clone());
        }
    }

    /// The answer to a client: status, headers with its `Age`, and body; a 304 without
    /// body when the client's `If-None-Match` matches, no body for HEAD.
    pub fn respond(
        &self,
        client_inm: Option<&HeaderValue>,
        head: bool,
        now: Instant,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut headers = self.headers.clone();
        headers.insert(header::AGE, age_value(self.age(now).as_secs()));
        if client_inm.is_some_and(|inm| none_match(inm, self.etag())) {
            headers.remove(header::CONTENT_LENGTH);
            (StatusCode::NOT_MODIFIED, headers, Bytes::new())
        } else if head {
            (self.status, headers, Bytes::new())
        } else {
            (self.status, headers, self.body.clone())
        }
    }
}

/// An `Age` value; the first [`AGES`] seconds come from a table (a clone is a reference
/// count), so a hit does not allocate to print its age.
fn age_value(secs: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| (0..AGES).map(HeaderValue::from).collect());
    usize::try_from(secs)
        .ok()
        .and_then(|s| table.get(s))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(secs))
}

/// Ages (seconds) whose `Age` values are precomputed.
const AGES: u64 = 1024;

/// Weighs an entry in bytes (body, headers, key, bookkeeping) for a byte-bounded store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Weigh;

impl Weighter<Arc<str>, Arc<Entry>> for Weigh {
    fn weight(&self, key: &Arc<str>, val: &Arc<Entry>) -> u64 {
        key.len() as u64 + val.weight
    }
}

/// What a cache did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from a fresh entry.
    Hit,
    /// Sent upstream (and stored when the answer allowed it).
    Miss,
    /// A stale entry stood in for a failed upstream.
    Stale,
    /// A stale entry was confirmed by a 304 and served.
    Revalidated,
    /// Not a cacheable request (method, body, `no-store`): passed through.
    Bypass,
}

impl Outcome {
    /// The `x-cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Revalidated => "REVALIDATED",
            Outcome::Bypass => "BYPASS",
        }
    }

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Bypass => "bypass",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(cc: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_is_fresh_for_its_lifetime_then_stale_usable_for_its_window() {
        let t0 = Instant::now();
        let e = Entry::new(
            StatusCode::OK,
            answer("public, max-age=5, stale-if-error=10"),
            Bytes::from_static(b"{}"),
            &HeaderMap::new(),
            t0,
            t0,
        );
        let cc = CacheControl::default();
        assert!(e.usable(&cc, t0 + Duration::from_secs(4)));
        assert!(!e.usable(&cc, t0 + Duration::from_secs(5)));
        assert!(e.stale_usable(t0 + Duration::from_secs(15)));
        assert!(!e.stale_usable(t0 + Duration::from_secs(16)));
        let mut h = HeaderMap::new();
        e.condition(&mut h);
        assert_eq!(h[header::IF_NONE_MATCH], "\"v1\"");
        let later = t0 + Duration::from_secs(7);
        let r = e.refreshed(
            &answer("public, max-age=5"),
            &HeaderMap::new(),
            later,
            later,
        );
        assert!(r.usable(&cc, later + Duration::from_secs(1)));
        assert_eq!(r.body(), &Bytes::from_static(b"{}"));
        let (status, headers, body) =
            r.respond(Some(&HeaderValue::from_static("\"v1\"")), false, later);
        assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
        assert_eq!(headers[header::AGE], "0");
    }
}
