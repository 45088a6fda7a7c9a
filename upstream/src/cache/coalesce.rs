//! Request coalescing for the caches (the gateway's and booking's peer cache):
//! concurrent misses of one key send one request; the others wait for its answer.

use super::Entry;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio::sync::watch;

type Map = Arc<Mutex<HashMap<Arc<str>, watch::Receiver<()>>>>;

/// Keys with a fetch in flight. A follower waits until the leader's sender (held by its
/// [`Leader`] guard) is dropped, then looks in the store again.
#[derive(Debug, Default)]
pub struct Coalescer {
    inflight: Map,
}

/// What a request does about its key.
pub enum Turn {
    /// A usable stored entry.
    Served(Arc<Entry>),
    /// Another request is fetching it: wait for the change, then look again.
    Wait(watch::Receiver<()>),
    /// This request fetches it; its followers wake when the guard drops.
    Lead(Leader),
}

/// Removes its key from the in-flight map when the leader is done (or cancelled), which
/// wakes the followers.
pub struct Leader {
    inflight: Map,
    key: Arc<str>,
    _done: watch::Sender<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inflight.lock() {
            m.remove(&self.key);
        }
    }
}

impl Coalescer {
    /// Under the in-flight lock: what `stored` finds usable, else the fetch in flight to
    /// wait for, else the lead. Looking in the store under the lock is what makes this
    /// sound: a leader stores before it leaves the map, so a key absent from the map has
    /// its answer in the store already.
    pub fn turn(&self, key: &Arc<str>, stored: impl FnOnce() -> Option<Arc<Entry>>) -> Turn {
        let lead = |tx| {
            Turn::Lead(Leader {
                inflight: self.inflight.clone(),
                key: key.clone(),
                _done: tx,
            })
        };
        let Ok(mut inflight) = self.inflight.lock() else {
            return lead(watch::channel(()).0);
        };
        if let Some(e) = stored() {
            return Turn::Served(e);
        }
        if let Some(rx) = inflight.get(key) {
            return Turn::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        inflight.insert(key.clone(), rx);
        lead(tx)
    }
}
