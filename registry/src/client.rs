//! The registry client library: one-off calls ([`RegistryClient`]), keeping an instance
//! registered ([`Registration`], [`register_until`]) and following a service's instances
//! ([`Watcher`]).
//!
//! A registration runs the instance's readiness check (the one its `/readyz` answers)
//! before every heartbeat and reports the result; a watcher publishes only the instances
//! whose last report passed, so an instance that is alive but not ready (its database is
//! gone) stops getting traffic within about one heartbeat, and gets it back at the first
//! heartbeat after it recovers.
//!
//! Both background loops are built so that the registry is never a single point of
//! failure: a registration retries with jittered backoff while the registry is
//! unreachable and registers again the moment it answers (a restarted registry is empty);
//! a watcher keeps publishing the last known instances while the registry is down and,
//! right after it comes back, keeps instances that have not re-registered yet for one
//! lease, so a registry restart never empties a gateway's endpoint set.

use crate::model::{
    self, HealthReport, HealthStatus, Instance, Metadata, RegisterRequest, Registered,
    ServiceInstances, ServiceList,
};
use hotel_common::{config::RegistryLink, health::ReadinessCheck};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::{future::Future, sync::Arc, time::Duration};
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::{CancellationToken, DropGuard};

/// Timeout of a single non-blocking call.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// First retry delay after a failure; doubles up to a cap.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The registry URL in the configuration is not usable.
    #[error("registry url {0}")]
    BadUrl(String),
    /// A service or instance name that the registry would refuse.
    #[error("{field}: {message}")]
    BadName {
        /// `service` or `instance`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No answer: connection refused, reset or timed out.
    #[error("registry unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The registry does not hold this instance (expired, or the registry restarted).
    #[error("the registry does not know this instance")]
    NotRegistered,
    /// The registry refused our token (or we sent none).
    #[error("the registry refused the token (401)")]
    Unauthorized,
    /// Any other error answer; `detail` comes from its problem document.
    #[error("the registry answered {status}: {detail}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The problem's `detail`, or the start of the body.
        detail: String,
    },
    /// A success answer whose body is not what the API promises.
    #[error("unreadable registry answer: {0}")]
    Decode(String),
}

/// A handle for calling the registry; cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RegistryClient {
    /// A client for the registry at `base_url` (`http://127.0.0.1:8761`), sending `token`
    /// as a bearer token when given.
    pub fn new(base_url: &str, token: Option<String>) -> Result<RegistryClient, ClientError> {
        let base = model::check_url(base_url).map_err(ClientError::BadUrl)?;
        let http = hotel_common::tls::internal::reqwest_client()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::BadUrl(format!("cannot build an HTTP client: {e}")))?;
        let token = token.filter(|t| !t.trim().is_empty());
        Ok(RegistryClient { base, token, http })
    }

    /// The client a [`RegistryLink`] describes; `None` when it names no registry.
    pub fn from_link(link: &RegistryLink) -> Result<Option<RegistryClient>, ClientError> {
        match link.url.as_deref().filter(|u| !u.trim().is_empty()) {
            None => Ok(None),
            Some(url) => RegistryClient::new(url, link.token.clone()).map(Some),
        }
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let mut headers = http::HeaderMap::new();
        hotel_common::telemetry::inject(&mut headers);
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(headers)
            .timeout(timeout);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.map_err(ClientError::Unreachable)?;
        match res.status() {
            s if s.is_success() => Ok(res),
            StatusCode::NOT_FOUND => Err(ClientError::NotRegistered),
            StatusCode::UNAUTHORIZED => Err(ClientError::Unauthorized),
            s => {
                let text = res.text().await.unwrap_or_default();
                let detail = serde_json::from_str::<hotel_common::Problem>(&text)
                    .map(|p| p.detail)
                    .unwrap_or_else(|_| text.chars().take(200).collect());
                Err(ClientError::Rejected {
                    status: s.as_u16(),
                    detail,
                })
            }
        }
    }

    async fn json<T: DeserializeOwned>(res: reqwest::Response) -> Result<T, ClientError> {
        let bytes = res.bytes().await.map_err(ClientError::Unreachable)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Registers (or re-registers) an instance; idempotent.
    pub async fn register(
        &self,
        service: &str,
        instance: &str,
        req: &RegisterRequest,
    ) -> Result<Registered, ClientError> {
        let path = instance_path(service, instance)?;
        let body = serde_json::to_value(req).map_err(|e| ClientError::Decode(e.to_string()))?;
        let res = self
            .call(Method::PUT, &path, Some(body), CALL_TIMEOUT)
            .await?;
        Self::json(res).await
    }

    /// Renews an instance's lease and reports its readiness;
    /// [`ClientError::NotRegistered`] means register again.
    pub async fn heartbeat(
        &self,
        service: &str,
        instance: &str,
        report: &HealthReport,
    ) -> Result<Registered, ClientError> {
        let path = format!("{}/heartbeat", instance_path(service, instance)?);
        let body = serde_json::to_value(report).map_err(|e| ClientError::Decode(e.to_string()))?;
        let res = self
            .call(Method::PUT, &path, Some(body), CALL_TIMEOUT)
            .await?;
        Self::json(res).await
    }

    /// Removes an instance at once. An instance the registry does not hold counts as
    /// removed.
    pub async fn deregister(&self, service: &str, instance: &str) -> Result<(), ClientError> {
        let path = instance_path(service, instance)?;
        match self.call(Method::DELETE, &path, None, CALL_TIMEOUT).await {
            Ok(_) | Err(ClientError::NotRegistered) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every known service with its instance count.
    pub async fn services(&self) -> Result<ServiceList, ClientError> {
        let res = self
            .call(Method::GET, "/v1/services", None, CALL_TIMEOUT)
            .await?;
        Self::json(res).await
    }

    /// The instances of one service now.
    pub async fn instances(&self, service: &str) -> Result<ServiceInstances, ClientError> {
        check(service, "service")?;
        let path = format!("/v1/services/{service}");
        let res = self.call(Method::GET, &path, None, CALL_TIMEOUT).await?;
        Self::json(res).await
    }

    /// Blocking query: answers when the service's index moves past `index`, or after
    /// about `wait` with the same index.
    pub async fn watch(
        &self,
        service: &str,
        index: u64,
        wait: Duration,
    ) -> Result<ServiceInstances, ClientError> {
        check(service, "service")?;
        let wait_ms = wait.as_millis();
        let path = format!("/v1/services/{service}?index={index}&wait={wait_ms}ms");
        // The registry may add up to wait/16 of jitter; leave room for it and the network.
        let timeout = wait + wait / 8 + CALL_TIMEOUT;
        let res = self.call(Method::GET, &path, None, timeout).await?;
        Self::json(res).await
    }
}

fn check(name: &str, field: &'static str) -> Result<(), ClientError> {
    model::check_name(name).map_err(|message| ClientError::BadName { field, message })
}

fn instance_path(service: &str, instance: &str) -> Result<String, ClientError> {
    check(service, "service")?;
    check(instance, "instance")?;
    Ok(format!("/v1/instances/{service}/{instance}"))
}

/// Exponential backoff from [`BACKOFF_BASE`] capped at `cap`, with jitter in the upper
/// half so that instances cut off together do not come back in lockstep.
fn backoff(failures: u32, cap: Duration) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let d = exp.min(cap);
    d.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// What [`Registration`] registers.
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// Service name, such as `room`.
    pub service: String,
    /// Instance name, such as `room-2`.
    pub instance: String,
    /// The instance's base URL, such as `http://127.0.0.1:40123`.
    pub url: String,
    /// Labels (version, zone, pid...).
    pub metadata: Metadata,
    /// Interval between heartbeats; also the cap of the retry backoff, so a returning
    /// registry sees the instance again within about one interval.
    pub heartbeat: Duration,
    /// Lease asked for.
    pub lease: Duration,
}

/// Consecutive readiness checks that must run out of time before a passing instance is
/// reported critical (Kubernetes' `failureThreshold` and Consul's
/// `failures_before_critical` default to 3 as well). A check that answers with an error
/// (the database file is gone) is critical at once; a slow one is usually a starved CPU,
/// and flipping every starved replica to critical at the same moment would leave a
/// service with no instance at all.
const SLOW_CHECKS_BEFORE_CRITICAL: u32 = 3;

/// Runs `check` for at most `within`: the report the next registration or heartbeat
/// carries, and whether it ran out of time (then critical too).
async fn run_check(check: &ReadinessCheck, within: Duration) -> (HealthReport, bool) {
    match tokio::time::timeout(within, check()).await {
        Ok(Ok(())) => (HealthReport::passing(), false),
        Ok(Err(why)) => (HealthReport::critical(&why), false),
        Err(_) => (
            HealthReport::critical(&format!(
                "readiness check did not answer within {} ({SLOW_CHECKS_BEFORE_CRITICAL} times in a row)",
                humantime::format_duration(within)
            )),
            true,
        ),
    }
}

/// Keeps one instance registered until [`Registration::shutdown`] (which deregisters) or
/// drop (which only stops heartbeating; the lease then runs out).
pub struct Registration {
    client: RegistryClient,
    spec: RegistrationSpec,
    /// Stops the heartbeat loop.
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// Whether the registry currently holds the instance, as the loop last learned.
    registered: watch::Receiver<bool>,
    /// How long `shutdown` waits after deregistering, so watchers act on it before the
    /// server stops accepting connections.
    linger: Duration,
}

impl Registration {
    /// Starts registering and heartbeating in the background, always reporting
    /// passing. Never fails: while the registry is unreachable or refuses, the loop
    /// retries and logs state changes.
    pub fn start(client: RegistryClient, spec: RegistrationSpec) -> Registration {
        Registration::with_check(client, spec, hotel_common::health::always_ready())
    }

    /// Like [`Registration::start`], running `check` (the instance's readiness check, the
    /// one its `/readyz` answers) before every registration and heartbeat and reporting
    /// its result: passing, or critical with the check's error as the reason. A check
    /// gets at most half a heartbeat interval to answer.
    pub fn with_check(
        client: RegistryClient,
        spec: RegistrationSpec,
        check: ReadinessCheck,
    ) -> Registration {
        let stop = CancellationToken::new();
        let (tx, registered) = watch::channel(false);
        let task = tokio::spawn(keep_registered(
            client.clone(),
            spec.clone(),
            check,
            stop.clone(),
            tx,
        ));
        Registration {
            client,
            spec,
            stop,
            task: Some(task),
            registered,
            linger: Duration::from_millis(200),
        }
    }

    /// Whether the registry held the instance at the last attempt.
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Waits until the instance is registered, up to `within`; answers whether it is.
    pub async fn wait_registered(&self, within: Duration) -> bool {
        let mut rx = self.registered.clone();
        tokio::time::timeout(within, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops heartbeating, deregisters (for at most a couple of seconds: the registry
    /// may be down, and then the lease expires instead), then waits briefly so watchers
    /// stop routing here before the server stops accepting connections.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let RegistrationSpec {
            service, instance, ..
        } = &self.spec;
        match self.client.deregister(service, instance).await {
            Ok(()) => {
                tracing::info!(service, instance, "deregistered from the registry");
                tokio::time::sleep(self.linger).await;
            }
            Err(e) => tracing::warn!(
                service, instance, error = %e,
                "could not deregister; the registry drops the instance when its lease ends"
            ),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn keep_registered(
    client: RegistryClient,
    spec: RegistrationSpec,
    check: ReadinessCheck,
    stop: CancellationToken,
    registered: watch::Sender<bool>,
) {
    let RegistrationSpec {
        service, instance, ..
    } = &spec;
    let mut known = false;
    let mut failures = 0u32;
    // What the check said last time, to log only its transitions.
    let mut last_status = HealthStatus::Passing;
    // Checks in a row that ran out of time.
    let mut slow = 0u32;
    loop {
        let started = Instant::now();
        // While the registry is (or was just) unreachable we register rather than
        // heartbeat: registering is idempotent and a restarted registry is empty.
        let call = async {
            let (mut report, timed_out) = run_check(&check, spec.heartbeat / 2).await;
            slow = if timed_out { slow + 1 } else { 0 };
            if timed_out
                && slow < SLOW_CHECKS_BEFORE_CRITICAL
                && last_status == HealthStatus::Passing
            {
                tracing::debug!(
                    service,
                    instance,
                    slow,
                    "readiness check ran out of time; still passing"
                );
                report = HealthReport::passing();
            }
            if report.status != last_status {
                last_status = report.status;
                match &report.reason {
                    Some(reason) => tracing::warn!(
                        service,
                        instance,
                        reason,
                        "readiness check fails; reporting critical to the registry"
                    ),
                    None => tracing::info!(
                        service,
                        instance,
                        "readiness check passes again; reporting passing to the registry"
                    ),
                }
            }
            if known {
                client.heartbeat(service, instance, &report).await
            } else {
                let body = RegisterRequest {
                    url: spec.url.clone(),
                    metadata: spec.metadata.clone(),
                    lease: Some(spec.lease),
                    status: report.status,
                    reason: report.reason,
                };
                client.register(service, instance, &body).await
            }
        };
        // A frozen registry must not hold up shutdown for a whole call timeout.
        let result = tokio::select! {
            r = call => r,
            _ = stop.cancelled() => return,
        };
        let delay = match result {
            Ok(_) => {
                if !known {
                    tracing::info!(service, instance, url = %spec.url, registry = client.url(), "registered");
                }
                known = true;
                failures = 0;
                registered.send_replace(true);
                spec.heartbeat
            }
            Err(ClientError::NotRegistered) if known => {
                tracing::info!(
                    service,
                    instance,
                    "the registry forgot this instance; registering again"
                );
                known = false;
                registered.send_replace(false);
                Duration::ZERO
            }
            Err(e) => {
                known = false;
                registered.send_replace(false);
                failures += 1;
                // Log when the trouble starts and then rarely, not on every retry.
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        service, instance, error = %e, failures,
                        "cannot register with the registry; retrying (the service keeps serving)"
                    );
                }
                backoff(failures, spec.heartbeat)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(started + delay) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Wires a service replica into the registry. When `link.url` is set, registers
/// `service/instance` at `http://<advertise>` (`https://` with mutual TLS on) (`HOST:PORT`, see
/// `hotel_common::advertise`; with `version` and `pid` metadata) and keeps it
/// registered, reporting the result of `readiness` with every heartbeat; returns the future to hand to the server as its shutdown signal: it
/// resolves once `signal` fired and the instance is deregistered, so the server drains
/// only after watchers have stopped sending new requests. Without a registry URL it
/// resolves when `signal` does (standalone mode).
///
/// ```text
/// let shutdown = hotel_registry::client::register_until(
///     &settings.registry, "room", &instance, "10.88.0.5:7000", readiness,
///     hotel_common::server::shutdown_signal())?;
/// hotel_common::server::serve(listener, router, shutdown, grace).await?;
/// ```
pub fn register_until(
    link: &RegistryLink,
    service: &str,
    instance: &str,
    advertise: &str,
    readiness: ReadinessCheck,
    signal: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = ()> + Send + 'static, ClientError> {
    let registration = match RegistryClient::from_link(link)? {
        None => {
            tracing::info!(
                service,
                instance,
                "no registry configured; running standalone"
            );
            None
        }
        Some(client) => {
            check(service, "service")?;
            check(instance, "instance")?;
            let mut metadata = Metadata::new();
            metadata.insert("version".into(), env!("CARGO_PKG_VERSION").into());
            metadata.insert("pid".into(), std::process::id().to_string());
            let spec = RegistrationSpec {
                service: service.to_owned(),
                instance: instance.to_owned(),
                url: hotel_common::tls::internal::base_url(advertise),
                metadata,
                heartbeat: link.heartbeat,
                lease: link.lease,
            };
            Some(Registration::with_check(client, spec, readiness))
        }
    };
    Ok(async move {
        signal.await;
        if let Some(registration) = registration {
            registration.shutdown().await;
        }
    })
}

/// How a [`Watcher`] polls.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Longest blocking query (the registry clamps it to its `max_wait`).
    pub wait: Duration,
    /// After the registry comes back (or restarts), instances missing from its answer
    /// are kept this long, giving them time to re-register. Use the instances' lease.
    pub settle: Duration,
    /// Cap of the retry backoff while the registry is unreachable.
    pub max_backoff: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            wait: Duration::from_secs(30),
            settle: Duration::from_secs(3),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Follows the passing instances of one service: publishes the current set as soon as
/// the registry answers, then every change, within milliseconds (blocking queries). An
/// instance whose readiness check fails (status `critical`) is left out while it stays
/// registered, and is back once it reports passing. While the registry is unreachable
/// the last known set stays published. Stops when dropped.
pub struct Watcher {
    instances: watch::Receiver<Arc<Vec<Instance>>>,
    synced: watch::Receiver<bool>,
    /// Cancels the polling task when the watcher is dropped.
    _stop: DropGuard,
}

impl Watcher {
    /// Starts watching `service` with default options.
    pub fn start(client: RegistryClient, service: &str) -> Watcher {
        Watcher::with_options(client, service, WatchOptions::default())
    }

    /// Starts watching `service`.
    pub fn with_options(client: RegistryClient, service: &str, options: WatchOptions) -> Watcher {
        let (tx, instances) = watch::channel(Arc::new(Vec::new()));
        let (synced_tx, synced) = watch::channel(false);
        let stop = CancellationToken::new();
        tokio::spawn(follow(
            client,
            service.to_owned(),
            options,
            tx,
            synced_tx,
            stop.clone(),
        ));
        Watcher {
            instances,
            synced,
            _stop: stop.drop_guard(),
        }
    }

    /// A receiver of the instance set: `changed()` fires on every change. Keep the
    /// `Watcher` alive as long as the receiver is used.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<Instance>>> {
        self.instances.clone()
    }

    /// The instance set now (empty until the registry first answered).
    pub fn current(&self) -> Arc<Vec<Instance>> {
        self.instances.borrow().clone()
    }

    /// Waits up to `within` for the first answer from the registry; answers whether it came.
    pub async fn wait_synced(&self, within: Duration) -> bool {
        let mut rx = self.synced.clone();
        tokio::time::timeout(within, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

async fn follow(
    client: RegistryClient,
    service: String,
    options: WatchOptions,
    tx: watch::Sender<Arc<Vec<Instance>>>,
    synced: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut index: Option<u64> = None;
    let mut failures = 0u32;
    // Until this instant, instances missing from the registry's answers are kept.
    let mut settle_until: Option<Instant> = None;
    // Instances published before the registry went away that it has not reported since.
    let mut carried: Vec<Instance> = Vec::new();
    loop {
        let now = Instant::now();
        let wait = match settle_until {
            // Come back when the settle period ends, to drop what did not return.
            Some(t) if !carried.is_empty() => options
                .wait
                .min(t.saturating_duration_since(now))
                .max(Duration::from_millis(10)),
            _ => options.wait,
        };
        let call = async {
            match index {
                None => client.instances(&service).await,
                Some(i) => client.watch(&service, i, wait).await,
            }
        };
        let result = tokio::select! {
            r = call => r,
            _ = stop.cancelled() => return,
        };
        match result {
            Ok(found) => {
                if failures > 0 {
                    tracing::info!(service, index = found.index, "registry reachable again");
                }
                let restarted = index.is_some_and(|i| found.index < i);
                if failures > 0 || restarted {
                    settle_until = Some(Instant::now() + options.settle);
                    carried = tx.borrow().iter().cloned().collect();
                }
                if settle_until.is_some_and(|t| t <= Instant::now()) {
                    settle_until = None;
                    carried.clear();
                }
                failures = 0;
                index = Some(found.index);
                let mut next = found.instances;
                // An instance is carried only until the registry reports it again (passing
                // or not); after that, the registry's word (including a later removal) is
                // final.
                carried.retain(|o| !next.iter().any(|n| n.instance == o.instance));
                next.retain(|i| i.status == HealthStatus::Passing);
                if !carried.is_empty() {
                    next.extend(carried.iter().cloned());
                    next.sort_by(|a, b| a.instance.cmp(&b.instance));
                }
                tx.send_if_modified(|cur| {
                    let same = cur.len() == next.len()
                        && cur.iter().zip(&next).all(|(a, b)| a.same_endpoint(b));
                    if !same {
                        tracing::debug!(service, instances = next.len(), "instance set changed");
                        *cur = Arc::new(next);
                    }
                    !same
                });
                synced.send_replace(true);
            }
            Err(e) => {
                failures += 1;
                // A new registry starts its indexes afresh: ask without one next time.
                index = None;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(
                        service, error = %e, failures, kept = tx.borrow().len(),
                        "cannot watch the registry; keeping the last known instances"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures, options.max_backoff)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_within_the_cap_with_jitter() {
        let cap = Duration::from_secs(1);
        for failures in 1..40 {
            let d = backoff(failures, cap);
            let full = BACKOFF_BASE
                .saturating_mul(1 << (failures - 1).min(16))
                .min(cap);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn a_link_without_a_url_means_standalone_and_a_bad_url_is_an_error() {
        assert!(
            RegistryClient::from_link(&RegistryLink::default())
                .unwrap()
                .is_none()
        );
        let bad = RegistryLink {
            url: Some("localhost:8761".into()),
            ..RegistryLink::default()
        };
        assert!(matches!(
            RegistryClient::from_link(&bad),
            Err(ClientError::BadUrl(_))
        ));
    }

    #[test]
    fn the_client_never_prints_its_token() {
        let c = RegistryClient::new("http://127.0.0.1:8761", Some("s3cret".into())).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
