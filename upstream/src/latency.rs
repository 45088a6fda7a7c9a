//! Recent attempt latency of one service, for the hedge delay ("p95 of recent latency").
//!
//! A ring of the last samples beside the same samples kept sorted: writing is a lock,
//! a store and a shift of the sorted copy between the old sample's place and the new
//! one's (two binary searches); reading a percentile is a lock and an index. Old samples
//! fall out as new ones arrive, so the estimate follows the service.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

const WINDOW: usize = 512;
/// Below this many samples the estimate is not trusted.
const MIN_SAMPLES: usize = 20;

#[derive(Debug)]
struct Ring {
    /// The last samples in arrival order; `next` is overwritten next once it is full.
    samples: Vec<u32>,
    next: usize,
    /// `samples`, sorted.
    sorted: Vec<u32>,
}

/// A sliding window of latencies in microseconds.
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    ring: Mutex<Ring>,
    /// The median in microseconds (0: not known yet), readable without the lock: the
    /// balancer reads it for every pick.
    median_us: AtomicU32,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            ring: Mutex::new(Ring {
                samples: Vec::with_capacity(WINDOW),
                next: 0,
                sorted: Vec::with_capacity(WINDOW),
            }),
            median_us: AtomicU32::new(0),
        }
    }
}

impl Ring {
    /// Adds `us`, dropping the oldest sample once the window is full.
    fn push(&mut self, us: u32) {
        let sorted = &mut self.sorted;
        if self.samples.len() < WINDOW {
            self.samples.push(us);
            let at = sorted.partition_point(|&x| x < us);
            sorted.insert(at, us);
            // The ring wraps to slot 0 once it is full.
            self.next = self.samples.len() % WINDOW;
        } else {
            let old = std::mem::replace(&mut self.samples[self.next], us);
            self.next = (self.next + 1) % WINDOW;
            // Where `old` is, and where `us` goes; only the samples between move.
            let Ok(old_at) = sorted.binary_search(&old) else {
                // Every sample of the ring is in its sorted copy; were it not, sort anew.
                sorted.clone_from(&self.samples);
                sorted.sort_unstable();
                return;
            };
            let at = sorted.partition_point(|&x| x < us);
            if at <= old_at {
                sorted.copy_within(at..old_at, at + 1);
                sorted[at] = us;
            } else {
                // `old` < `us`: without `old`, `us` goes one place earlier.
                sorted.copy_within(old_at + 1..at, old_at);
                sorted[at - 1] = us;
            }
        }
    }
}

impl LatencyWindow {
    /// Records one attempt's latency.
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        let mut r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        r.push(us);
        if r.sorted.len() >= MIN_SAMPLES {
            self.median_us
                .store(r.sorted[r.sorted.len() / 2].max(1), Ordering::Relaxed);
        }
    }

    /// The service's median attempt latency, once enough samples are known.
    pub(crate) fn median(&self) -> Option<Duration> {
        match self.median_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        }
    }

    /// The `p`-th percentile (0 < p < 100), when enough samples are known.
    pub(crate) fn percentile(&self, p: f64) -> Option<Duration> {
        let r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if r.sorted.len() < MIN_SAMPLES {
            return None;
        }
        let idx = ((p / 100.0) * (r.sorted.len() - 1) as f64).round() as usize;
        r.sorted
            .get(idx)
            .map(|us| Duration::from_micros(u64::from(*us)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn percentile_follows_the_recent_samples() {
        let w = LatencyWindow::default();
        assert_eq!(w.percentile(95.0), None);
        for i in 1..=100u64 {
            w.record(Duration::from_millis(i));
        }
        assert_eq!(w.percentile(95.0), Some(Duration::from_millis(95)));
        assert_eq!(w.median(), Some(Duration::from_millis(51)));
        for _ in 0..WINDOW {
            w.record(Duration::from_millis(1));
        }
        assert_eq!(w.percentile(95.0), Some(Duration::from_millis(1)));
    }

    /// Every percentile and the median match a sort of the last `WINDOW` samples, after
    /// each sample, through repeated values and a full turn of the ring and more.
    #[test]
    fn percentiles_match_a_sort_of_the_window_after_every_sample() {
        let w = LatencyWindow::default();
        let mut all = Vec::new();
        let mut x: u64 = 12345;
        for n in 0..(3 * WINDOW + 77) {
            // A small range, so values repeat; jumps now and then.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let us = if n % 97 == 0 {
                50_000
            } else {
                100 + (x >> 33) % 400
            };
            w.record(Duration::from_micros(us));
            all.push(us);
            let mut window = all[all.len().saturating_sub(WINDOW)..].to_vec();
            window.sort_unstable();
            if window.len() < MIN_SAMPLES {
                assert_eq!(w.percentile(50.0), None);
                continue;
            }
            for p in [1.0, 50.0, 95.0, 99.0] {
                let idx = ((p / 100.0) * (window.len() - 1) as f64).round() as usize;
                assert_eq!(
                    w.percentile(p),
                    Some(Duration::from_micros(window[idx])),
                    "p{p} after {} samples",
                    n + 1
                );
            }
            assert_eq!(
                w.median(),
                Some(Duration::from_micros(window[window.len() / 2])),
                "median after {} samples",
                n + 1
            );
        }
    }
}
