//! Discovery: the instance set of a service as a `tower::discover` stream.
//!
//! The source is a `watch` channel holding the whole current set (from the registry's
//! blocking queries, or fixed from config). [`DiscoverTargets`] diffs each new set
//! against the last by instance name and yields `Insert`/`Remove` changes; a changed
//! address is a remove plus an insert. When the source stops publishing (registry down)
//! nothing is removed: the last set stays in use.

use crate::policy::Origin;
use futures::Stream;
use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

/// One instance to send traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Instance name, unique within the service (`room-2`).
    pub name: Arc<str>,
    /// Where it listens.
    pub origin: Origin,
}

/// A service's instance set.
pub type Targets = Arc<Vec<Target>>;

/// Turns a target into a balancer endpoint, and hears when one leaves.
pub(crate) trait MakeEndpoint {
    /// The endpoint service.
    type Service;
    /// Builds the endpoint of a new instance.
    fn make(&self, target: &Target) -> Self::Service;
    /// The instance left the set.
    fn removed(&self, name: &str);
}

/// A `Discover` stream over a watched instance set.
pub(crate) struct DiscoverTargets<M: MakeEndpoint> {
    sets: WatchStream<Targets>,
    known: HashMap<Arc<str>, Origin>,
    queue: VecDeque<Change<Arc<str>, M::Service>>,
    make: M,
}

impl<M: MakeEndpoint> DiscoverTargets<M> {
    /// Follows `rx`, starting with its current value.
    pub(crate) fn new(rx: watch::Receiver<Targets>, make: M) -> Self {
        DiscoverTargets {
            sets: WatchStream::new(rx),
            known: HashMap::new(),
            queue: VecDeque::new(),
            make,
        }
    }

    fn diff(&mut self, set: &[Target]) {
        let gone: Vec<Arc<str>> = self
            .known
            .iter()
            .filter(|(name, origin)| !set.iter().any(|t| &t.name == *name && &t.origin == *origin))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.known.remove(&name);
            self.make.removed(&name);
            tracing::info!(instance = %name, "instance left");
            self.queue.push_back(Change::Remove(name));
        }
        for t in set {
            if !self.known.contains_key(&t.name) {
                self.known.insert(t.name.clone(), t.origin.clone());
                tracing::info!(instance = %t.name, address = %t.origin, "instance joined");
                self.queue
                    .push_back(Change::Insert(t.name.clone(), self.make.make(t)));
            }
        }
    }
}

impl<M> Stream for DiscoverTargets<M>
where
    M: MakeEndpoint + Unpin,
    M::Service: Unpin,
{
    type Item = Result<Change<Arc<str>, M::Service>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(c) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(c)));
            }
            match Pin::new(&mut this.sets).poll_next(cx) {
                Poll::Ready(Some(set)) => this.diff(&set),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A fixed instance set (static config), with the sender kept alive by the caller.
pub(crate) fn fixed(targets: Vec<Target>) -> (watch::Sender<Targets>, watch::Receiver<Targets>) {
    watch::channel(Arc::new(targets))
}

/// Follows a service in the registry: the watcher's instance sets, as targets. Instances
/// with an address the gateway cannot use are skipped (and logged).
pub(crate) fn from_registry(
    client: hotel_registry::client::RegistryClient,
    service: &str,
) -> (hotel_registry::client::Watcher, watch::Receiver<Targets>) {
    let watcher = hotel_registry::client::Watcher::start(client, service);
    let mut rx = watcher.subscribe();
    let convert = |set: &[hotel_registry::model::Instance]| -> Targets {
        Arc::new(
            set.iter()
                .filter_map(|i| match Origin::parse(&i.url) {
                    Ok(origin) => Some(Target {
                        name: i.instance.as_str().into(),
                        origin,
                    }),
                    Err(e) => {
                        tracing::warn!(instance = %i.instance, error = %e, "ignoring instance");
                        None
                    }
                })
                .collect(),
        )
    };
    let (tx, out) = watch::channel(convert(&rx.borrow_and_update()));
    tokio::spawn(async move {
        // Ends when the watcher is dropped (its sender closes) or nobody listens anymore.
        while rx.changed().await.is_ok() {
            let set = convert(&rx.borrow_and_update());
            if tx.send(set).is_err() {
                break;
            }
        }
    });
    (watcher, out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use futures::StreamExt;

    struct Names;
    impl MakeEndpoint for Names {
        type Service = String;
        fn make(&self, t: &Target) -> String {
            t.origin.to_string()
        }
        fn removed(&self, _: &str) {}
    }

    fn t(name: &str, port: u16) -> Target {
        Target {
            name: name.into(),
            origin: Origin::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        }
    }

    fn show(c: Change<Arc<str>, String>) -> String {
        match c {
            Change::Insert(k, v) => format!("+{k} {v}"),
            Change::Remove(k) => format!("-{k}"),
        }
    }

    #[tokio::test]
    async fn set_changes_become_inserts_and_removes_by_instance_name() {
        let (tx, rx) = fixed(vec![t("room-1", 1), t("room-2", 2)]);
        let mut d = DiscoverTargets::new(rx, Names);
        let mut first = vec![
            show(d.next().await.unwrap().unwrap()),
            show(d.next().await.unwrap().unwrap()),
        ];
        first.sort();
        assert_eq!(
            first,
            ["+room-1 http://127.0.0.1:1", "+room-2 http://127.0.0.1:2"]
        );
        tx.send(Arc::new(vec![t("room-2", 2), t("room-3", 3)]))
            .unwrap();
        assert_eq!(show(d.next().await.unwrap().unwrap()), "-room-1");
        assert_eq!(
            show(d.next().await.unwrap().unwrap()),
            "+room-3 http://127.0.0.1:3"
        );
        tx.send(Arc::new(vec![t("room-2", 22), t("room-3", 3)]))
            .unwrap();
        assert_eq!(show(d.next().await.unwrap().unwrap()), "-room-2");
        assert_eq!(
            show(d.next().await.unwrap().unwrap()),
            "+room-2 http://127.0.0.1:22"
        );
        drop(tx);
        assert!(
            d.next().await.is_none(),
            "a closed source ends the stream; the set stays"
        );
    }
}
