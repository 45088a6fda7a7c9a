//! The registry's state: instances with leases, per-service indexes, blocking watches
//! and the task that evicts expired leases.
//!
//! All state sits behind one `std::sync::Mutex` that is never held across an `.await`;
//! every operation is a few map look-ups, so contention is negligible even with
//! thousands of heartbeats a second.
//!
//! Indexes follow Consul: one registry-wide counter takes its next value on every change,
//! and a service's index is the counter value of its last change. A blocking watch waits
//! on the service's `tokio::sync::watch` channel, so it wakes the moment the index moves,
//! not on a poll. An index from the future (one handed out by a previous incarnation of
//! the registry) answers at once, so a client never waits out a stale index.
//!
//! Leases run on `tokio::time::Instant`, so tests drive them on a paused clock. Each
//! instance has one entry in an ordered map of deadlines; the reaper sleeps until the
//! earliest one, which a heartbeat only ever moves later, so a healthy cluster wakes the
//! reaper about once per lease and never scans every instance.

use crate::{
    error::RegistryError,
    model::{
        self, HealthReport, HealthStatus, Instance, Metadata, RegisterRequest, Registered,
        ServiceInstances, ServiceList, ServiceSummary,
    },
    settings::Settings,
};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Handle on the registry state; cheap to clone. The reaper task stops when the last
/// handle is dropped or [`Store::close`] is called.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the reaper when a registration brings the earliest deadline forward.
    reaper_wake: Arc<Notify>,
    /// Cancelled by [`Store::close`] or when the store is dropped: ends the reaper and
    /// releases every blocking watch so the server can drain at once.
    closing: CancellationToken,
    _close_on_drop: DropGuard,
    settings: Settings,
}

#[derive(Default)]
struct State {
    /// Registry-wide change counter; a change takes `counter + 1`.
    counter: u64,
    services: BTreeMap<String, ServiceEntry>,
    /// Lease deadlines in order; the `u64` makes equal instants distinct keys.
    deadlines: BTreeMap<(Instant, u64), (String, String)>,
    next_seq: u64,
    instance_count: usize,
}

struct ServiceEntry {
    index: u64,
    instances: BTreeMap<String, Entry>,
    /// Carries `index` to blocking watches of this service.
    changed: watch::Sender<u64>,
}

impl ServiceEntry {
    fn new(index: u64) -> Self {
        ServiceEntry {
            index,
            instances: BTreeMap::new(),
            changed: watch::Sender::new(index),
        }
    }
}

struct Entry {
    url: String,
    metadata: Metadata,
    registered_at: time::OffsetDateTime,
    last_seen: Instant,
    lease: Duration,
    deadline_key: (Instant, u64),
    /// What the instance's own readiness check last said.
    status: HealthStatus,
    /// Why it fails, with `Critical`.
    reason: Option<String>,
}

impl State {
    fn bump(&mut self, service: &str) -> u64 {
        self.counter += 1;
        let index = self.counter;
        if let Some(entry) = self.services.get_mut(service) {
            entry.index = index;
            entry.changed.send_replace(index);
        }
        index
    }

    fn schedule(&mut self, service: &str, instance: &str, deadline: Instant) -> (Instant, u64) {
        self.next_seq += 1;
        let key = (deadline, self.next_seq);
        self.deadlines
            .insert(key, (service.to_owned(), instance.to_owned()));
        key
    }

    fn snapshot(&self, service: &str, now: Instant) -> ServiceInstances {
        let (index, instances) = match self.services.get(service) {
            Some(entry) => (
                entry.index,
                entry
                    .instances
                    .iter()
                    .map(|(name, e)| view(service, name, e, now))
                    .collect(),
            ),
            None => (0, Vec::new()),
        };
        ServiceInstances {
            service: service.to_owned(),
            index,
            instances,
        }
    }
}

fn view(service: &str, name: &str, e: &Entry, now: Instant) -> Instance {
    Instance {
        service: service.to_owned(),
        instance: name.to_owned(),
        url: e.url.clone(),
        metadata: e.metadata.clone(),
        registered_at: e.registered_at,
        last_heartbeat_age_ms: millis(now.saturating_duration_since(e.last_seen)),
        lease_ms: millis(e.lease),
        status: e.status,
        reason: e.reason.clone(),
    }
}

/// Logs an instance's readiness turning, once per transition.
fn log_transition(service: &str, instance: &str, status: HealthStatus, reason: Option<&str>) {
    let reason = reason.unwrap_or("");
    match status {
        HealthStatus::Critical => {
            tracing::warn!(service, instance, reason, "instance not ready");
        }
        HealthStatus::Passing => tracing::info!(service, instance, "instance ready again"),
    }
}

fn check_report(report: &HealthReport) -> Result<(), RegistryError> {
    model::check_reason(report.reason.as_deref()).map_err(|message| RegistryError::InvalidField {
        field: "reason".into(),
        message,
    })
}

/// The reason kept for a report: only a critical one has one.
fn kept_reason(report: HealthReport) -> Option<String> {
    match report.status {
        HealthStatus::Passing => None,
        HealthStatus::Critical => report.reason,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn check_names(service: &str, instance: &str) -> Result<(), RegistryError> {
    model::check_name(service).map_err(|message| RegistryError::BadName {
        field: "service",
        message,
    })?;
    model::check_name(instance).map_err(|message| RegistryError::BadName {
        field: "instance",
        message,
    })
}

/// Whether a registration was new or replaced/renewed an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The instance was not registered before.
    Created,
    /// The instance was registered; its lease is renewed and its URL/metadata replaced.
    Updated,
}

impl Store {
    /// Creates the state and starts the reaper task on the current runtime.
    pub fn start(settings: &Settings) -> Store {
        let closing = CancellationToken::new();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            reaper_wake: Arc::new(Notify::new()),
            closing: closing.clone(),
            _close_on_drop: closing.clone().drop_guard(),
            settings: settings.clone(),
        });
        tokio::spawn(reap(
            Arc::downgrade(&inner),
            inner.reaper_wake.clone(),
            closing,
        ));
        Store { inner }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than stopping the registry would, so keep serving.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Releases every blocking watch and stops the reaper (at shutdown).
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Registers or re-registers an instance and starts (or renews) its lease. The index
    /// moves only if the instance is new or its URL or metadata changed, so a client
    /// re-registering after a registry restart or a lost heartbeat wakes no watcher.
    pub fn register(
        &self,
        service: &str,
        instance: &str,
        req: RegisterRequest,
    ) -> Result<(Registered, Outcome), RegistryError> {
        check_names(service, instance)?;
        let s = &self.inner.settings;
        let url = model::check_url(&req.url).map_err(|message| RegistryError::InvalidField {
            field: "url".into(),
            message,
        })?;
        model::check_metadata(&req.metadata, s.max_metadata_keys, s.max_metadata_value_len)
            .map_err(|(field, message)| RegistryError::InvalidField { field, message })?;
        let report = HealthReport {
            status: req.status,
            reason: req.reason,
        };
        check_report(&report)?;
        let status = report.status;
        let reason = kept_reason(report);
        let lease = req.lease.unwrap_or(s.default_lease);
        if lease < s.min_lease || lease > s.max_lease {
            return Err(RegistryError::InvalidField {
                field: "lease".into(),
                message: format!(
                    "must lie between {} and {}",
                    humantime::format_duration(s.min_lease),
                    humantime::format_duration(s.max_lease)
                ),
            });
        }

        let now = Instant::now();
        let mut st = self.lock();
        let known_service = st.services.contains_key(service);
        let existing = st
            .services
            .get(service)
            .and_then(|e| e.instances.get(instance));
        let outcome = if existing.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        };
        if outcome == Outcome::Created {
            if st.instance_count >= s.max_instances {
                return Err(RegistryError::Full(format!(
                    "max_instances = {}",
                    s.max_instances
                )));
            }
            if !known_service && st.services.len() >= s.max_services {
                return Err(RegistryError::Full(format!(
                    "max_services = {}",
                    s.max_services
                )));
            }
        }
        let changed = existing
            .is_none_or(|e| e.url != url || e.metadata != req.metadata || e.status != status);
        let turned = existing.is_some_and(|e| e.status != status);
        let registered_at = match existing {
            Some(e) if !changed => e.registered_at,
            _ => time::OffsetDateTime::now_utc(),
        };
        if let Some(old_key) = existing.map(|e| e.deadline_key) {
            st.deadlines.remove(&old_key);
        }
        let deadline_key = st.schedule(service, instance, now + lease);
        let earliest = st.deadlines.keys().next() == Some(&deadline_key);
        let entry = Entry {
            url,
            metadata: req.metadata,
            registered_at,
            last_seen: now,
            lease,
            deadline_key,
            status,
            reason,
        };
        let svc = st
            .services
            .entry(service.to_owned())
            .or_insert_with(|| ServiceEntry::new(0));
        svc.instances.insert(instance.to_owned(), entry);
        if outcome == Outcome::Created {
            st.instance_count += 1;
        }
        let index = if changed {
            st.bump(service)
        } else {
            st.services[service].index
        };
        let stored = view(
            service,
            instance,
            &st.services[service].instances[instance],
            now,
        );
        drop(st);
        if earliest {
            self.inner.reaper_wake.notify_one();
        }
        if changed {
            tracing::info!(service, instance, url = %stored.url, index, ?outcome, status = status.as_str(), "instance registered");
        }
        if turned {
            log_transition(service, instance, status, stored.reason.as_deref());
        }
        Ok((
            Registered {
                instance: stored,
                index,
            },
            outcome,
        ))
    }

    /// Renews an instance's lease and records its readiness `report`. A change of status
    /// moves the service's index (so watchers see a critical instance leave and a passing
    /// one return); a new reason alone does not. Unknown instances answer
    /// [`RegistryError::UnknownInstance`] so the client registers again.
    pub fn heartbeat(
        &self,
        service: &str,
        instance: &str,
        report: HealthReport,
    ) -> Result<Registered, RegistryError> {
        check_names(service, instance)?;
        check_report(&report)?;
        let status = report.status;
        let reason = kept_reason(report);
        let now = Instant::now();
        let mut st = self.lock();
        let unknown = || RegistryError::UnknownInstance {
            service: service.to_owned(),
            instance: instance.to_owned(),
        };
        let (old_key, lease) = {
            let e = st
                .services
                .get(service)
                .and_then(|svc| svc.instances.get(instance))
                .ok_or_else(unknown)?;
            (e.deadline_key, e.lease)
        };
        st.deadlines.remove(&old_key);
        let key = st.schedule(service, instance, now + lease);
        let svc = st.services.get_mut(service).ok_or_else(unknown)?;
        let e = svc.instances.get_mut(instance).ok_or_else(unknown)?;
        e.last_seen = now;
        e.deadline_key = key;
        let turned = e.status != status;
        e.status = status;
        e.reason = reason;
        let stored = view(service, instance, e, now);
        let index = if turned {
            st.bump(service)
        } else {
            st.services[service].index
        };
        drop(st);
        if turned {
            log_transition(service, instance, status, stored.reason.as_deref());
        }
        Ok(Registered {
            instance: stored,
            index,
        })
    }

    /// Removes an instance at once (graceful shutdown) and wakes the service's watchers.
    pub fn deregister(&self, service: &str, instance: &str) -> Result<u64, RegistryError> {
        check_names(service, instance)?;
        let mut st = self.lock();
        let removed = st
            .services
            .get_mut(service)
            .and_then(|svc| svc.instances.remove(instance));
        let Some(e) = removed else {
            return Err(RegistryError::UnknownInstance {
                service: service.to_owned(),
                instance: instance.to_owned(),
            });
        };
        st.deadlines.remove(&e.deadline_key);
        st.instance_count -= 1;
        let index = st.bump(service);
        drop(st);
        tracing::info!(service, instance, index, "instance deregistered");
        Ok(index)
    }

    /// Every known service with its instance count.
    pub fn services(&self) -> ServiceList {
        let st = self.lock();
        ServiceList {
            index: st.counter,
            services: st
                .services
                .iter()
                .map(|(name, e)| ServiceSummary {
                    service: name.clone(),
                    instances: e.instances.len(),
                    passing: e
                        .instances
                        .values()
                        .filter(|i| i.status == HealthStatus::Passing)
                        .count(),
                    index: e.index,
                })
                .collect(),
        }
    }

    /// Every instance of every service, and the registry-wide index (for the text page).
    pub fn all_instances(&self) -> (u64, Vec<Instance>) {
        let now = Instant::now();
        let st = self.lock();
        let all = st
            .services
            .iter()
            .flat_map(|(svc, e)| {
                e.instances
                    .iter()
                    .map(move |(name, i)| view(svc, name, i, now))
            })
            .collect();
        (st.counter, all)
    }

    /// The instances of `service` now (an unknown service has none, at index 0).
    pub fn instances(&self, service: &str) -> Result<ServiceInstances, RegistryError> {
        model::check_name(service).map_err(|message| RegistryError::BadName {
            field: "service",
            message,
        })?;
        Ok(self.lock().snapshot(service, Instant::now()))
    }

    /// Consul-style blocking query: answers at once when `after` is `None`, when the
    /// service's index is already past `after`, or when `after` is from the future (a
    /// previous registry's index); otherwise waits until the index moves past `after` or
    /// `wait` ends, and answers the state then (the same index on a timeout).
    pub async fn watch(
        &self,
        service: &str,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<ServiceInstances, RegistryError> {
        model::check_name(service).map_err(|message| RegistryError::BadName {
            field: "service",
            message,
        })?;
        let Some(after) = after else {
            return Ok(self.lock().snapshot(service, Instant::now()));
        };
        let mut changed = {
            let mut st = self.lock();
            if after > st.counter {
                return Ok(st.snapshot(service, Instant::now()));
            }
            if !st.services.contains_key(service) {
                // Watching a service before any instance registers is normal (a gateway
                // starting first); remember the name so its first registration wakes us.
                if st.services.len() >= self.inner.settings.max_services {
                    let max = self.inner.settings.max_services;
                    return Err(RegistryError::Full(format!("max_services = {max}")));
                }
                st.services.insert(service.to_owned(), ServiceEntry::new(0));
            }
            let entry = &st.services[service];
            if entry.index > after {
                return Ok(st.snapshot(service, Instant::now()));
            }
            // Subscribing under the lock means no change can slip in between the check
            // above and the wait below.
            entry.changed.subscribe()
        };
        let closing = self.inner.closing.clone();
        let _ = tokio::time::timeout(wait, async {
            tokio::select! {
                _ = changed.wait_for(|index| *index > after) => {}
                _ = closing.cancelled() => {}
            }
        })
        .await;
        Ok(self.lock().snapshot(service, Instant::now()))
    }

    /// Restarts every lease from `now` (after a stall); answers how many there are.
    fn restart_leases(&self, now: Instant) -> usize {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.deadlines.clear();
        for (service, svc) in st.services.iter_mut() {
            for (name, e) in svc.instances.iter_mut() {
                st.next_seq += 1;
                let key = (now + e.lease, st.next_seq);
                e.deadline_key = key;
                st.deadlines.insert(key, (service.clone(), name.clone()));
            }
        }
        st.deadlines.len()
    }

    /// Removes every instance whose deadline is at or before `now`; answers the earliest
    /// remaining deadline.
    fn evict_expired(&self, now: Instant) -> Option<Instant> {
        let mut st = self.lock();
        let mut evicted = Vec::new();
        while let Some(entry) = st.deadlines.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (service, instance) = entry.remove();
            let removed = st
                .services
                .get_mut(&service)
                .and_then(|s| s.instances.remove(&instance));
            if let Some(e) = removed {
                st.instance_count -= 1;
                let index = st.bump(&service);
                evicted.push((service, instance, e.lease, index));
            }
        }
        let next = st.deadlines.keys().next().map(|k| k.0);
        drop(st);
        for (service, instance, lease, index) in evicted {
            tracing::warn!(
                service, instance, index, lease = %humantime::format_duration(lease),
                "lease expired without a heartbeat; instance removed"
            );
        }
        next
    }
}

/// How late the reaper may wake before we conclude the registry itself was stopped.
const STALL: Duration = Duration::from_secs(1);

/// The reaper: sleeps until the earliest lease deadline (or until a registration brings
/// an earlier one), evicts what expired, repeats.
///
/// If it wakes more than [`STALL`] after it meant to, the registry process was frozen
/// (SIGSTOP, a suspended VM) or starved, and the heartbeats of that time were never
/// read, not missing. Evicting then would empty every service at once; instead every
/// lease restarts from now, as etcd does after a leader change.
async fn reap(store: Weak<Inner>, wake: Arc<Notify>, closing: CancellationToken) {
    let mut planned: Option<Instant> = None;
    loop {
        let next = match store.upgrade() {
            Some(inner) => {
                let store = Store { inner };
                let now = Instant::now();
                let late = planned.map(|p| now.saturating_duration_since(p));
                if let Some(late) = late.filter(|l| *l > STALL) {
                    let renewed = store.restart_leases(now);
                    tracing::warn!(
                        stalled = %humantime::format_duration(late), renewed,
                        "the registry was not running for a while; restarted every lease instead of evicting"
                    );
                }
                store.evict_expired(now)
            }
            None => return,
        };
        planned = next;
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = wake.notified() => {}
            _ = closing.cancelled() => return,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(url: &str) -> RegisterRequest {
        RegisterRequest {
            url: url.to_owned(),
            metadata: Metadata::new(),
            lease: None,
            status: HealthStatus::Passing,
            reason: None,
        }
    }

    fn names(s: &ServiceInstances) -> Vec<&str> {
        s.instances.iter().map(|i| i.instance.as_str()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_expires_at_its_end_and_not_a_millisecond_before() {
        let store = Store::start(&Settings::default());
        store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2_999)).await;
        assert_eq!(names(&store.instances("room").unwrap()), ["room-1"]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(store.instances("room").unwrap().instances.is_empty());
        assert_eq!(store.services().services[0].instances, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_frozen_past_every_lease_restarts_them_instead_of_evicting() {
        let store = Store::start(&Settings::default());
        store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        store
            .register("room", "room-2", req("http://127.0.0.1:2"))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The whole process stops for 10 s (SIGSTOP): time jumps past every lease.
        tokio::time::advance(Duration::from_secs(10)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            names(&store.instances("room").unwrap()),
            ["room-1", "room-2"]
        );
        // Leases now run from the resume: room-1 heartbeats, room-2 does not.
        tokio::time::sleep(Duration::from_secs(2)).await;
        store
            .heartbeat("room", "room-1", HealthReport::passing())
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        assert_eq!(names(&store.instances("room").unwrap()), ["room-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_extend_the_lease_from_the_moment_they_arrive() {
        let store = Store::start(&Settings::default());
        store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            store
                .heartbeat("room", "room-1", HealthReport::passing())
                .unwrap();
        }
        // 10 s after registering, alive thanks to the last heartbeat at 10 s.
        tokio::time::sleep(Duration::from_millis(2_999)).await;
        assert_eq!(names(&store.instances("room").unwrap()), ["room-1"]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(store.instances("room").unwrap().instances.is_empty());
        let err = store
            .heartbeat("room", "room-1", HealthReport::passing())
            .unwrap_err();
        assert!(matches!(err, RegistryError::UnknownInstance { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_requested_short_lease_is_honoured_even_after_longer_ones() {
        let store = Store::start(&Settings::default());
        store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        let mut short = req("http://127.0.0.1:2");
        short.lease = Some(Duration::from_millis(500));
        store.register("room", "room-2", short).unwrap();
        tokio::time::sleep(Duration::from_millis(501)).await;
        assert_eq!(names(&store.instances("room").unwrap()), ["room-1"]);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_wakes_a_blocked_watcher_with_a_new_index() {
        let store = Store::start(&Settings::default());
        let (reg, _) = store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        let started = Instant::now();
        let seen = store
            .watch("room", Some(reg.index), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(seen.index > reg.index);
        assert!(seen.instances.is_empty());
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_returns_on_change_and_times_out_with_the_same_index() {
        let store = Store::start(&Settings::default());
        let first = store
            .watch("room", None, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(first.index, 0);

        let started = Instant::now();
        let timed_out = store
            .watch("room", Some(first.index), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(timed_out.index, first.index);
        assert_eq!(started.elapsed(), Duration::from_secs(5));

        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.watch("room", Some(0), Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        let started = Instant::now();
        let changed = waiter.await.unwrap().unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(names(&changed), ["room-1"]);
        assert!(changed.index > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn renewing_a_registration_unchanged_does_not_move_the_index() {
        let store = Store::start(&Settings::default());
        let (a, o1) = store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        let (b, o2) = store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        assert_eq!((o1, o2), (Outcome::Created, Outcome::Updated));
        assert_eq!(a.index, b.index);
        let (c, _) = store
            .register("room", "room-1", req("http://127.0.0.1:9"))
            .unwrap();
        assert!(c.index > b.index);
    }

    #[tokio::test(start_paused = true)]
    async fn an_index_from_a_previous_registry_answers_at_once() {
        let store = Store::start(&Settings::default());
        let started = Instant::now();
        let s = store
            .watch("room", Some(9_999), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(s.index, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_store_releases_blocked_watchers() {
        let store = Store::start(&Settings::default());
        let waiter = {
            let store = store.clone();
            tokio::spawn(
                async move { store.watch("room", Some(0), Duration::from_secs(300)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        store.close();
        let started = Instant::now();
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_critical_heartbeat_moves_the_index_keeps_the_instance_listed_and_passing_brings_it_back()
     {
        let store = Store::start(&Settings::default());
        let (reg, _) = store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .watch("room", Some(reg.index), Duration::from_secs(30))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sick = store
            .heartbeat("room", "room-1", HealthReport::critical("database gone"))
            .unwrap();
        assert!(sick.index > reg.index);
        let seen = waiter.await.unwrap().unwrap();
        assert_eq!(seen.index, sick.index);
        assert_eq!(seen.instances[0].status, HealthStatus::Critical);
        assert_eq!(seen.instances[0].reason.as_deref(), Some("database gone"));
        assert_eq!(store.services().services[0].passing, 0);
        // The same status with another reason updates the reason without waking watchers.
        let again = store
            .heartbeat("room", "room-1", HealthReport::critical("still gone"))
            .unwrap();
        assert_eq!(again.index, sick.index);
        assert_eq!(again.instance.reason.as_deref(), Some("still gone"));
        let well = store
            .heartbeat("room", "room-1", HealthReport::passing())
            .unwrap();
        assert!(well.index > sick.index);
        assert_eq!(well.instance.status, HealthStatus::Passing);
        assert_eq!(well.instance.reason, None);
        // A registration reports its status too; a too-long reason is refused.
        let mut sick_again = req("http://127.0.0.1:1");
        sick_again.status = HealthStatus::Critical;
        sick_again.reason = Some("x".repeat(model::MAX_REASON_LEN + 1));
        let err = store.register("room", "room-1", sick_again).unwrap_err();
        assert!(matches!(err, RegistryError::InvalidField { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_instance_limit_refuses_new_instances_but_renews_known_ones() {
        let settings = Settings {
            max_instances: 1,
            ..Settings::default()
        };
        let store = Store::start(&settings);
        store
            .register("room", "room-1", req("http://127.0.0.1:1"))
            .unwrap();
        let err = store
            .register("room", "room-2", req("http://127.0.0.1:2"))
            .unwrap_err();
        assert!(matches!(err, RegistryError::Full(_)));
        assert!(
            store
                .register("room", "room-1", req("http://127.0.0.1:1"))
                .is_ok()
        );
        store.deregister("room", "room-1").unwrap();
        assert!(
            store
                .register("room", "room-2", req("http://127.0.0.1:2"))
                .is_ok()
        );
    }
}
