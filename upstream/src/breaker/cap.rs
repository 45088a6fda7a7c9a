//! The ejection cap: how many of a service's instances the breakers may eject at once.

use super::outlier::Window;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// How many of a service's instances exist and how many are ejected: shared by the
/// breakers of one service, updated by the balancer as instances come and go.
#[derive(Debug)]
pub(crate) struct EjectionCap {
    pub(super) total: AtomicUsize,
    /// Ejected for errors or stalls: what the cap limits.
    pub(super) ejected: AtomicUsize,
    /// Ejected because they refuse connections: no capacity at all, never capped.
    pub(super) refused: AtomicUsize,
    pub(super) max_percent: u8,
    /// Set while the cap holds an instance in rotation, so the log says it once.
    pub(super) capped_logged: AtomicBool,
    /// Attempts and failures of the whole service over the failure-percentage window:
    /// whether the rest of the service is healthy.
    pub(super) window: Window,
}

/// Which count an ejected breaker holds a place in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Within the cap (errors, stalls).
    Capped,
    /// Refused connections.
    Refused,
}

impl EjectionCap {
    /// A cap allowing `max_percent` of the instances out at once (with a 10 s
    /// failure-percentage window).
    #[cfg(test)]
    pub(crate) fn new(max_percent: u8) -> Arc<Self> {
        Self::with_window(max_percent, Duration::from_secs(10))
    }

    /// A cap allowing `max_percent` of the instances out at once, counting the service's
    /// failures over `window`.
    pub(crate) fn with_window(max_percent: u8, window: Duration) -> Arc<Self> {
        Arc::new(EjectionCap {
            total: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            max_percent,
            capped_logged: AtomicBool::new(false),
            window: Window::new(window),
        })
    }

    /// Records the number of known instances.
    pub(crate) fn set_total(&self, n: usize) {
        self.total.store(n, Ordering::Relaxed);
    }

    /// Instances ejected now, for any reason.
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed)
    }

    /// How many instances errors and stalls may eject: the percentage (at least one) of
    /// the instances that still accept connections, but never all of those. An instance
    /// that refuses connections is no capacity, so it does not use up the allowance of
    /// the others (a killed instance must not keep a frozen one in rotation).
    pub(super) fn allowed(&self) -> usize {
        let live = self
            .total
            .load(Ordering::Relaxed)
            .saturating_sub(self.refused.load(Ordering::Relaxed));
        (live * self.max_percent as usize / 100)
            .max(1)
            .min(live.saturating_sub(1))
    }

    /// Takes an ejection slot: within the cap, or (`refused`) always.
    pub(super) fn try_acquire(&self, refused: bool) -> Option<Slot> {
        if refused {
            self.refused.fetch_add(1, Ordering::AcqRel);
            return Some(Slot::Refused);
        }
        let allowed = self.allowed();
        let mut cur = self.ejected.load(Ordering::Relaxed);
        loop {
            if cur >= allowed {
                return None;
            }
            match self
                .ejected
                .compare_exchange(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Slot::Capped),
                Err(now) => cur = now,
            }
        }
    }

    pub(super) fn release(&self, slot: Slot) {
        let count = match slot {
            Slot::Capped => &self.ejected,
            Slot::Refused => &self.refused,
        };
        let _ = count.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |v| v.checked_sub(1));
        self.capped_logged.store(false, Ordering::Relaxed);
    }
}
