//! The slowest and the failed recent requests, with their trace ids, for the dashboard of
//! `hotel up` (`GET /admin/recent`): two small bounded buffers next to the metrics.
//!
//! The hot path pays one atomic load per request: a request is kept only when it failed
//! (status >= 500, rare) or took longer than the fastest request now among the slowest
//! (`slow_floor`); only those take the lock. The slow set is kept per window of
//! [`WINDOW`]: the reader rotates it, so the slowest of a quiet minute do not hide newer
//! ones forever.

use serde::Serialize;
use std::{
    collections::VecDeque,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// How many failed and how many slow requests are kept.
pub const KEEP: usize = 20;

/// How long the slowest of one window stay comparable: the slow set is the slowest of
/// the current window and the one before.
pub const WINDOW: Duration = Duration::from_secs(60);

/// The longest path kept (longer ones are cut, on a character boundary).
const MAX_PATH: usize = 200;

/// One request as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecentRequest {
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// W3C trace id (32 hex digits): the Jaeger UI's `/trace/{id}`.
    pub trace_id: String,
    /// HTTP method.
    pub method: String,
    /// The path as the client sent it, without the query (which may hold personal data).
    pub path: String,
    /// The matched route prefix (`none` when unrouted).
    pub route: String,
    /// Response status.
    pub status: u16,
    /// Time to the response head, in milliseconds.
    pub duration_ms: f64,
}

/// `GET /admin/recent`.
#[derive(Debug, Clone, Serialize)]
pub struct RecentView {
    /// The slowest requests of the last one or two windows, slowest first.
    pub slowest: Vec<RecentRequest>,
    /// The latest failed requests (status >= 500), newest first.
    pub failed: Vec<RecentRequest>,
}

#[derive(Debug)]
struct Slow {
    /// When the current window began.
    since: Instant,
    /// The current window's slowest, slowest first (at most [`KEEP`]).
    current: Vec<RecentRequest>,
    /// The window before.
    previous: Vec<RecentRequest>,
}

/// The two buffers.
#[derive(Debug)]
pub struct RecentRequests {
    /// The failed requests, newest at the back.
    failed: Mutex<VecDeque<RecentRequest>>,
    slow: Mutex<Slow>,
    /// Microseconds a request must exceed to enter the slow set now: the fastest of a
    /// full set, 0 while it has room. Lets the hot path skip the lock.
    slow_floor: AtomicU64,
}

impl Default for RecentRequests {
    fn default() -> Self {
        RecentRequests {
            failed: Mutex::new(VecDeque::with_capacity(KEEP)),
            slow: Mutex::new(Slow {
                since: Instant::now(),
                current: Vec::with_capacity(KEEP + 1),
                previous: Vec::new(),
            }),
            slow_floor: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl RecentRequests {
    /// Offers one finished request; `path` is only read when it is kept.
    pub fn offer(
        &self,
        trace_id: &str,
        method: &str,
        path: &str,
        route: &str,
        status: u16,
        took: Duration,
    ) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let failed = status >= 500;
        let slow = micros > self.slow_floor.load(Ordering::Relaxed);
        if !failed && !slow {
            return;
        }
        let mut end = path.len().min(MAX_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let entry = RecentRequest {
            at_unix_ms: unix_ms(),
            trace_id: trace_id.to_owned(),
            method: method.to_owned(),
            path: path[..end].to_owned(),
            route: route.to_owned(),
            status,
            duration_ms: took.as_secs_f64() * 1000.0,
        };
        if failed {
            let mut q = lock(&self.failed);
            if q.len() == KEEP {
                q.pop_front();
            }
            q.push_back(entry.clone());
        }
        if slow {
            let mut s = lock(&self.slow);
            let at = s
                .current
                .partition_point(|e| e.duration_ms >= entry.duration_ms);
            s.current.insert(at, entry);
            s.current.truncate(KEEP);
            if s.current.len() == KEEP {
                let floor = s.current.last().map_or(0.0, |e| e.duration_ms * 1000.0);
                self.slow_floor.store(floor as u64, Ordering::Relaxed);
            }
        }
    }

    /// What `/admin/recent` answers; starts a new slow window when the current one is
    /// older than [`WINDOW`].
    pub fn view(&self) -> RecentView {
        let slowest = {
            let mut s = lock(&self.slow);
            if s.since.elapsed() >= WINDOW {
                s.previous = std::mem::take(&mut s.current);
                s.since = Instant::now();
                self.slow_floor.store(0, Ordering::Relaxed);
            }
            let mut all: Vec<RecentRequest> =
                s.current.iter().chain(&s.previous).cloned().collect();
            all.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
            all.truncate(KEEP);
            all
        };
        let failed = lock(&self.failed).iter().rev().cloned().collect();
        RecentView { slowest, failed }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn keeps_the_slowest_sorted_and_bounded_and_skips_fast_ones_once_full() {
        let r = RecentRequests::default();
        for i in 1..=(KEEP as u64 * 2) {
            r.offer("t", "GET", &format!("/r/{i}"), "/api/rooms", 200, ms(i));
        }
        let v = r.view();
        assert_eq!(v.slowest.len(), KEEP);
        assert_eq!(v.slowest[0].path, format!("/r/{}", KEEP * 2));
        assert!(
            v.slowest
                .windows(2)
                .all(|w| w[0].duration_ms >= w[1].duration_ms)
        );
        assert!(v.failed.is_empty());
        // Faster than every kept one: not even locked for.
        r.offer("t", "GET", "/fast", "/api/rooms", 200, ms(1));
        assert!(r.view().slowest.iter().all(|e| e.path != "/fast"));
    }

    #[test]
    fn keeps_the_latest_failures_newest_first_with_their_trace_ids() {
        let r = RecentRequests::default();
        for i in 0..(KEEP + 5) {
            r.offer(
                &format!("{i:032x}"),
                "POST",
                "/api/bookings",
                "/api/bookings",
                503,
                ms(0),
            );
        }
        r.offer("x", "GET", "/ok", "/api/rooms", 404, ms(0));
        let v = r.view();
        assert_eq!(v.failed.len(), KEEP);
        assert_eq!(v.failed[0].trace_id, format!("{:032x}", KEEP + 4));
        assert!(v.failed.iter().all(|e| e.status == 503));
    }

    #[test]
    fn long_paths_are_cut_on_a_character_boundary() {
        let r = RecentRequests::default();
        let path = format!("/{}", "é".repeat(300));
        r.offer("t", "GET", &path, "none", 500, ms(3));
        let kept = &r.view().failed[0].path;
        assert!(kept.len() <= MAX_PATH && path.starts_with(kept.as_str()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_window_lets_faster_requests_in_again_and_the_old_ones_age_out() {
        let r = RecentRequests::default();
        for i in 0..KEEP as u64 {
            r.offer("old", "GET", "/old", "/api/rooms", 200, ms(100 + i));
        }
        r.offer("new", "GET", "/new", "/api/rooms", 200, ms(5));
        assert!(r.view().slowest.iter().all(|e| e.trace_id == "old"));
        tokio::time::advance(WINDOW).await;
        let _ = r.view();
        for _ in 0..KEEP {
            r.offer("new", "GET", "/new", "/api/rooms", 200, ms(5));
        }
        // Both windows count: the old ones are still the slowest.
        assert!(r.view().slowest.iter().all(|e| e.trace_id == "old"));
        tokio::time::advance(WINDOW).await;
        let v = r.view();
        assert_eq!(v.slowest.len(), KEEP);
        assert!(v.slowest.iter().all(|e| e.trace_id == "new"));
        tokio::time::advance(WINDOW).await;
        let _ = r.view();
        tokio::time::advance(WINDOW).await;
        assert!(r.view().slowest.is_empty());
    }
}
