//! Failure-percentage ejection (Envoy's `failure_percentage` outlier detection) and
//! slow start.
//!
//! Consecutive failures miss an instance that fails a third of its requests: the
//! successes in between reset the count, retries hide the failures from clients, and
//! the instance keeps its share. So every instance also counts its attempts and
//! failures over a sliding window (`failure_percentage_window`, 10 buckets), and so does
//! the service as a whole. After a failure, an instance with at least
//! `failure_percentage_min_requests` attempts in the window whose failure percentage is
//! above `failure_percentage_threshold` is ejected, when the rest of the service is
//! healthy (its own failure percentage over the same window is at most the threshold:
//! when every instance fails alike, the fault is not the instance's, and ejecting would
//! only shed capacity) and within the ejection cap. Health probes own its recovery:
//! every [`RATE_PROBE_INTERVAL`] one `GET /healthz`, and [`RATE_RECOVERY_PROBES`] passing
//! in a row bring it back; one failing resets the count. A process that fails half its
//! requests fails half its probes too (a fault injected with `hotel fault` covers
//! `/healthz`), so it stays out until it is fixed, and is back within about a second
//! after.
//!
//! Slow start: an instance whose breaker closes again (after any ejection) ramps its
//! share over `slow_start`: its load as the balancer sees it is divided by its weight,
//! which grows linearly from [`SLOW_START_MIN_WEIGHT`] to 1, so p2c sends it a growing
//! share instead of the whole backlog at once (Envoy's slow start, aggression 1).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tokio::time::Instant;

/// How often a failure-percentage ejected instance is probed (jittered ±25 %).
pub(crate) const RATE_PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Health probes that must pass in a row to bring it back.
pub(crate) const RATE_RECOVERY_PROBES: u32 = 5;

/// The weight a returning instance starts its slow start with.
pub(crate) const SLOW_START_MIN_WEIGHT: f64 = 0.1;

const BUCKETS: usize = 10;
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_BITS: u32 = 64 - 2 * COUNT_BITS;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

fn pack(tag: u64, requests: u64, failures: u64) -> u64 {
    (tag & TAG_MASK) << (2 * COUNT_BITS)
        | (requests.min(COUNT_MAX) << COUNT_BITS)
        | failures.min(COUNT_MAX)
}

fn unpack(v: u64) -> (u64, u64, u64) {
    (
        v >> (2 * COUNT_BITS),
        (v >> COUNT_BITS) & COUNT_MAX,
        v & COUNT_MAX,
    )
}

/// Attempts and failures over a sliding window of ten buckets, lock-free: each bucket is
/// one atomic word holding its slot tag and both counts, so a bucket that rolls over is
/// reset and counted in one compare-and-swap.
#[derive(Debug)]
pub(crate) struct Window {
    epoch: Instant,
    bucket_ns: u64,
    buckets: [AtomicU64; BUCKETS],
}

impl Window {
    /// A window spanning `span`.
    pub(crate) fn new(span: Duration) -> Self {
        Window {
            epoch: Instant::now(),
            bucket_ns: (span.as_nanos() as u64 / BUCKETS as u64).max(1),
            buckets: Default::default(),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_nanos() as u64 / self.bucket_ns
    }

    /// Counts one attempt that ended at `now` (one clock read for several windows).
    pub(crate) fn record_at(&self, failed: bool, now: Instant) {
        let slot = self.slot(now);
        let tag = slot & TAG_MASK;
        let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
        let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            let (t, r, f) = unpack(v);
            let (r, f) = if t == tag { (r, f) } else { (0, 0) };
            Some(pack(tag, r + 1, f + u64::from(failed)))
        });
    }

    /// Attempts and failures in the window now.
    pub(crate) fn totals(&self) -> (u64, u64) {
        let slot = self.slot(Instant::now());
        let mut total = (0, 0);
        for back in 0..(BUCKETS as u64).min(slot + 1) {
            let s = slot - back;
            let (t, r, f) =
                unpack(self.buckets[(s % BUCKETS as u64) as usize].load(Ordering::Acquire));
            if t == s & TAG_MASK {
                total.0 += r;
                total.1 += f;
            }
        }
        total
    }

    /// Forgets everything counted (an instance back from an ejection starts afresh).
    pub(crate) fn reset(&self) {
        for b in &self.buckets {
            b.store(pack(TAG_MASK, 0, 0), Ordering::Release);
        }
    }
}

/// Whether `failures` of `requests` is above `threshold` percent.
pub(crate) fn above(requests: u64, failures: u64, threshold: u8) -> bool {
    requests > 0 && failures * 100 > u64::from(threshold) * requests
}

/// The slow-start weight of an instance that returned `since` ago: from
/// [`SLOW_START_MIN_WEIGHT`] up to 1 at `slow_start`.
pub(crate) fn slow_start_weight(since: Duration, slow_start: Duration) -> f64 {
    if slow_start.is_zero() || since >= slow_start {
        return 1.0;
    }
    (since.as_secs_f64() / slow_start.as_secs_f64()).max(SLOW_START_MIN_WEIGHT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_counts_the_last_span_only() {
        let w = Window::new(Duration::from_secs(10));
        for i in 0..20 {
            w.record_at(i % 2 == 0, Instant::now());
        }
        assert_eq!(w.totals(), (20, 10));
        tokio::time::advance(Duration::from_secs(5)).await;
        w.record_at(true, Instant::now());
        assert_eq!(w.totals(), (21, 11));
        tokio::time::advance(Duration::from_millis(5500)).await;
        assert_eq!(w.totals(), (1, 1), "the first 20 left the window");
        w.reset();
        assert_eq!(w.totals(), (0, 0));
    }

    #[test]
    fn the_threshold_is_exceeded_strictly_and_the_weight_ramps() {
        assert!(above(20, 7, 30));
        assert!(!above(20, 6, 30));
        assert!(!above(0, 0, 30));
        let s = Duration::from_secs(5);
        assert_eq!(slow_start_weight(Duration::ZERO, s), SLOW_START_MIN_WEIGHT);
        assert!((slow_start_weight(Duration::from_millis(2500), s) - 0.5).abs() < 1e-9);
        assert_eq!(slow_start_weight(s, s), 1.0);
        assert_eq!(slow_start_weight(Duration::ZERO, Duration::ZERO), 1.0);
    }
}
