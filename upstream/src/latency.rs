//! Recent attempt latency of one service, for the hedge delay ("p95 of recent latency").
//!
//! A ring of the last samples, re-sorted every few samples: reading a percentile is a
//! lock and an index, writing is a lock and a store. Old samples fall out as new ones
//! arrive, so the estimate follows the service.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

const WINDOW: usize = 512;
const RESORT_EVERY: u32 = 32;
/// Below this many samples the estimate is not trusted.
const MIN_SAMPLES: usize = 20;

#[derive(Debug)]
struct Ring {
    samples: Vec<u32>,
    next: usize,
    since_sort: u32,
    sorted: Vec<u32>,
}

/// A sliding window of latencies in microseconds.
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    ring: Mutex<Ring>,
    /// The median of the last sort in microseconds (0: not known yet), readable without
    /// the lock: the balancer reads it for every pick.
    median_us: AtomicU32,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            ring: Mutex::new(Ring {
                samples: Vec::with_capacity(WINDOW),
                next: 0,
                since_sort: 0,
                sorted: Vec::new(),
            }),
            median_us: AtomicU32::new(0),
        }
    }
}

impl LatencyWindow {
    /// Records one attempt's latency.
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        let mut r = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if r.samples.len() < WINDOW {
            r.samples.push(us);
        } else {
            let i = r.next;
            r.samples[i] = us;
        }
        r.next = (r.next + 1) % WINDOW;
        r.since_sort += 1;
        if r.since_sort >= RESORT_EVERY || r.sorted.len() < MIN_SAMPLES {
            r.since_sort = 0;
            let mut s = std::mem::take(&mut r.sorted);
            s.clear();
            s.extend_from_slice(&r.samples);
            s.sort_unstable();
            if s.len() >= MIN_SAMPLES {
                self.median_us
                    .store(s[s.len() / 2].max(1), Ordering::Relaxed);
            }
            r.sorted = s;
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
        // The sorted snapshot lags by up to RESORT_EVERY samples.
        let p95 = w.percentile(95.0).unwrap();
        assert!(
            p95 >= Duration::from_millis(60) && p95 <= Duration::from_millis(96),
            "{p95:?}"
        );
        for _ in 0..WINDOW {
            w.record(Duration::from_millis(1));
        }
        assert_eq!(w.percentile(95.0), Some(Duration::from_millis(1)));
    }
}
