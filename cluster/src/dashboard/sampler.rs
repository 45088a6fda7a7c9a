//! The dashboard's sampler: once a second it joins the supervisor's instances with the
//! gateway's view of them (`/admin/status`, read by the same code as `hotel status`), turns
//! the deltas of the gateway's counters (`/metrics`) into rates, error rates and latency
//! quantiles, derives a feed of what changed, and publishes the result on a `watch`
//! channel that every open page reads.
//!
//! Booking calls room and customer through the same upstream stack as the gateway, and
//! its instances serve that stack's families on their own `/metrics` (under `hotel_`
//! instead of `gateway_`). The sampler scrapes each running booking instance too (over
//! mutual TLS when the cluster runs with `--internal-tls`) and reads them with the same
//! code, so the page shows booking's view of room and customer beside the gateway's.
//!
//! The I/O ([`Sampler::run`]) is kept apart from the arithmetic ([`Sampler::absorb`]), so
//! the second is tested with made-up inputs.

use super::prom::{self, Sample};
use crate::{
    status::{GatewayView, gateway_of, gateway_view},
    supervisor::{InstanceState, InstanceView, Supervisor, unix_ms},
};
use serde::Serialize;
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Arc,
    time::Duration,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the sampler runs.
pub const EVERY: Duration = Duration::from_secs(1);

/// How much history the charts get.
pub const HISTORY: Duration = Duration::from_secs(300);

/// How many feed entries are kept.
pub const FEED_LEN: usize = 200;

/// The metric name prefix of the gateway's upstream families.
const GATEWAY_PREFIX: &str = "gateway_";

/// The metric name prefix of a service instance's families, booking's upstream client's
/// among them.
const SERVICE_PREFIX: &str = "hotel_";

/// Attempt outcomes that count as errors (a cancelled hedge or a refused body does not).
const ERROR_OUTCOMES: [&str; 4] = ["http_5xx", "connect_error", "timeout", "transport_error"];

/// One instance on the page.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    /// The supervisor's record: name, pid, state, active fault.
    #[serde(flatten)]
    pub instance: InstanceView,
    /// The gateway's view: breaker, in-flight, latency EWMA (`None` for the registry and
    /// gateway, or when the gateway does not answer).
    pub gateway: Option<GatewayView>,
    /// Attempts per second the gateway sent it over the last interval.
    pub rps: Option<f64>,
    /// Share of those attempts that failed.
    pub error_rate: Option<f64>,
}

/// One service over one interval, as the gateway saw its attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval (Unix milliseconds).
    pub at_unix_ms: u64,
    /// customer, room or booking.
    pub service: String,
    /// Attempts per second.
    pub rps: f64,
    /// Share of attempts that failed (0 without attempts).
    pub error_rate: f64,
    /// Median attempt latency in milliseconds (`None` without attempts).
    pub p50_ms: Option<f64>,
    /// 99th percentile attempt latency in milliseconds.
    pub p99_ms: Option<f64>,
}

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeedEntry {
    /// Increases by one per entry over the run: a page asks only for newer ones.
    pub seq: u64,
    /// When the sampler saw it (Unix milliseconds).
    pub at_unix_ms: u64,
    /// `breaker`, `ejection`, `retry-budget`, `instance`, `fault` or `gateway`.
    pub kind: &'static str,
    /// Whose view a breaker, ejection or retry-budget entry is: the booking instance
    /// that saw it; `None` for the gateway's and for the supervisor's entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// `info` or `warn`.
    pub level: &'static str,
    /// What happened, in words.
    pub text: String,
}

/// What the sampler publishes each interval.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// Whether the gateway's admin API answered.
    pub gateway_reachable: bool,
    /// The Jaeger UI that trace links open, when traces are exported.
    pub jaeger_url: Option<String>,
    /// Every instance the supervisor knows.
    pub instances: Vec<InstanceRow>,
    /// The latest point of each service.
    pub services: Vec<Point>,
    /// The gateway's `/admin/recent`: the slowest and the failed recent requests.
    pub recent: Option<serde_json::Value>,
    /// Each live booking instance's view of the room and customer instances it calls
    /// (only a running one is asked).
    pub booking: Vec<BookingView>,
}

/// One booking instance's upstream client, as its `/metrics` tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BookingView {
    /// The booking instance (`booking-1`).
    pub instance: String,
    /// Whether its `/metrics` answered this round (a paused instance is not asked).
    pub reachable: bool,
    /// One row per room and customer instance its client knows, by service and name.
    pub upstreams: Vec<UpstreamRow>,
}

/// One upstream instance as one booking instance's client sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamRow {
    /// room or customer.
    pub service: String,
    /// The instance (`room-1`).
    pub instance: String,
    /// `closed`, `open` or `half-open` (`None` before the client has a breaker for it).
    pub breaker: Option<&'static str>,
    /// Attempts per second over the last interval (`None` in the first round).
    pub rps: Option<f64>,
    /// Share of those attempts that failed.
    pub error_rate: Option<f64>,
    /// Ejections since the booking instance started, every reason together.
    pub ejections: f64,
}

/// The snapshot with the history and feed it belongs to.
#[derive(Debug, Clone)]
pub struct Published {
    /// The latest state.
    pub snapshot: Snapshot,
    /// The last [`HISTORY`] of points, oldest first.
    pub history: Vec<Point>,
    /// The last [`FEED_LEN`] feed entries, oldest first.
    pub feed: Vec<FeedEntry>,
}

/// What one round of I/O brought in.
#[derive(Debug, Default)]
pub struct Input {
    /// Now (Unix milliseconds).
    pub at_unix_ms: u64,
    /// The supervisor's instances.
    pub instances: Vec<InstanceView>,
    /// The gateway's per-instance entries (`None`: it did not answer).
    pub gateway: Option<Vec<(Vec<String>, GatewayView)>>,
    /// The gateway's metric samples (`None`: it did not answer).
    pub metrics: Option<Vec<Sample>>,
    /// Each live booking instance's name and metric samples (`None`: it did not answer,
    /// or was not asked because it is not running).
    pub booking: Vec<(String, Option<Vec<Sample>>)>,
    /// The gateway's `/admin/recent`.
    pub recent: Option<serde_json::Value>,
    /// The Jaeger UI.
    pub jaeger_url: Option<String>,
}

type Key3 = (String, String, String);

type Key2 = (String, String);

/// The upstream counters (the gateway's, or a booking instance's client's) the sampler
/// takes deltas of, and the breaker states.
#[derive(Debug, Default, Clone)]
struct Counters {
    at_unix_ms: u64,
    /// (service, instance, outcome).
    attempts: BTreeMap<Key3, f64>,
    /// (service, instance, le): cumulative bucket counts of attempt durations.
    buckets: BTreeMap<Key3, f64>,
    /// (service, instance, to).
    transitions: BTreeMap<Key3, f64>,
    /// (service, instance, reason).
    ejections: BTreeMap<Key3, f64>,
    /// route.
    budget: BTreeMap<String, f64>,
    /// (service, instance): 0 closed, 1 open, 2 half-open (a gauge).
    breaker: BTreeMap<Key2, f64>,
}

impl Counters {
    /// The upstream families among `samples` whose names start with `prefix`.
    fn from_samples(at_unix_ms: u64, prefix: &str, samples: &[Sample]) -> Self {
        let mut c = Counters {
            at_unix_ms,
            ..Counters::default()
        };
        for s in samples {
            let key = |third: &str| {
                (
                    s.label("service").to_owned(),
                    s.label("instance").to_owned(),
                    s.label(third).to_owned(),
                )
            };
            let Some(name) = s.name.strip_prefix(prefix) else {
                continue;
            };
            match name {
                "upstream_attempts_total" => {
                    c.attempts.insert(key("outcome"), s.value);
                }
                "upstream_attempt_duration_seconds_bucket" => {
                    c.buckets.insert(key("le"), s.value);
                }
                "breaker_transitions_total" => {
                    c.transitions.insert(key("to"), s.value);
                }
                "upstream_ejections_total" => {
                    c.ejections.insert(key("reason"), s.value);
                }
                "retry_budget_exhausted_total" => {
                    c.budget.insert(s.label("route").to_owned(), s.value);
                }
                "breaker_state" => {
                    let k = (
                        s.label("service").to_owned(),
                        s.label("instance").to_owned(),
                    );
                    c.breaker.insert(k, s.value);
                }
                _ => {}
            }
        }
        c
    }
}

/// The seconds from `b` to `c` (at least a millisecond).
fn seconds(c: &Counters, b: &Counters) -> f64 {
    (c.at_unix_ms.saturating_sub(b.at_unix_ms) as f64 / 1000.0).max(0.001)
}

/// The name of a `breaker_state` gauge's value.
fn breaker_name(state: f64) -> Option<&'static str> {
    match state as i64 {
        0 => Some("closed"),
        1 => Some("open"),
        2 => Some("half-open"),
        _ => None,
    }
}

/// Increases of every series present in both maps; a series that went down (the gateway
/// restarted, or forgot an instance that left) counts as no increase.
fn deltas<K: Ord + Clone>(now: &BTreeMap<K, f64>, before: &BTreeMap<K, f64>) -> Vec<(K, f64)> {
    now.iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect()
}

/// Per service (each one the gateway sent attempts to, and each in `known`) a point
/// over the `secs` between `b` and `c`; per instance, attempts per second and error share.
fn rates<'a>(
    c: &Counters,
    b: &Counters,
    secs: f64,
    known: impl Iterator<Item = &'a str>,
) -> (Vec<Point>, BTreeMap<String, (f64, f64)>) {
    // (attempts, failed) per instance and per service.
    let mut per_instance: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut per_service: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((service, instance, outcome), d) in deltas(&c.attempts, &b.attempts) {
        let failed = if ERROR_OUTCOMES.contains(&outcome.as_str()) {
            d
        } else {
            0.0
        };
        for (key, map) in [(instance, &mut per_instance), (service, &mut per_service)] {
            let e = map.entry(key).or_default();
            e.0 += d;
            e.1 += failed;
        }
    }
    let share = |(n, failed): (f64, f64)| if n > 0.0 { failed / n } else { 0.0 };
    // Bucket increases per service, summed over its instances.
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((service, _, le), d) in deltas(&c.buckets, &b.buckets) {
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let list = buckets.entry(service).or_default();
        match list.iter_mut().find(|(l, _)| *l == le) {
            Some(e) => e.1 += d,
            None => list.push((le, d)),
        }
    }
    let services: BTreeSet<String> = c
        .attempts
        .keys()
        .map(|(s, _, _)| s.clone())
        .chain(
            known
                .filter(|s| {
                    crate::settings::Role::SERVICES
                        .iter()
                        .any(|r| r.as_str() == *s)
                })
                .map(str::to_owned),
        )
        .collect();
    let points = services
        .into_iter()
        .map(|service| {
            let tally = per_service.get(&service).copied().unwrap_or_default();
            let mut b = buckets.remove(&service).unwrap_or_default();
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            let ms = |q| prom::quantile(q, &b).map(|s| s * 1000.0);
            Point {
                at_unix_ms: c.at_unix_ms,
                rps: tally.0 / secs,
                error_rate: share(tally),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
                service,
            }
        })
        .collect();
    for v in per_instance.values_mut() {
        *v = (v.0 / secs, share(*v));
    }
    (points, per_instance)
}

/// The sampler's memory between rounds.
#[derive(Debug, Default)]
pub struct Sampler {
    before: Option<Counters>,
    /// Each booking instance's counters in the previous round it answered; an instance
    /// no longer scraped (stopped, restarting) leaves.
    booking_before: BTreeMap<String, Counters>,
    /// Each instance's state and fault summary in the previous round.
    seen: BTreeMap<String, (InstanceState, Option<String>)>,
    /// Whether the gateway answered last round; `None` until it first did.
    gateway_was_reachable: Option<bool>,
    history: VecDeque<Point>,
    feed: VecDeque<FeedEntry>,
    seq: u64,
}

impl Sampler {
    fn push(&mut self, at_unix_ms: u64, kind: &'static str, level: &'static str, text: String) {
        self.push_seen_by(None, at_unix_ms, kind, level, text);
    }

    /// Adds an entry marked as `view`'s (a booking instance's).
    fn push_seen_by(
        &mut self,
        view: Option<&str>,
        at_unix_ms: u64,
        kind: &'static str,
        level: &'static str,
        text: String,
    ) {
        self.seq += 1;
        if self.feed.len() == FEED_LEN {
            self.feed.pop_front();
        }
        self.feed.push_back(FeedEntry {
            seq: self.seq,
            at_unix_ms,
            kind,
            view: view.map(str::to_owned),
            level,
            text,
        });
    }

    /// Folds one round's input into the history and feed and returns what to publish.
    pub fn absorb(&mut self, input: Input) -> Published {
        let now = input.at_unix_ms;
        self.instance_changes(now, &input.instances);
        let reachable = input.gateway.is_some();
        // Only once it has answered: before that the gateway is still starting.
        if self
            .gateway_was_reachable
            .is_some_and(|was| was != reachable)
        {
            let (level, text) = if reachable {
                ("info", "the gateway's admin API answers again".to_owned())
            } else {
                ("warn", "the gateway's admin API does not answer".to_owned())
            };
            self.push(now, "gateway", level, text);
        }
        if reachable || self.gateway_was_reachable.is_some() {
            self.gateway_was_reachable = Some(reachable);
        }

        let counters = input
            .metrics
            .as_deref()
            .map(|m| Counters::from_samples(now, GATEWAY_PREFIX, m));
        // Per instance name: attempts per second and error share.
        let mut per_instance = BTreeMap::new();
        let mut services = Vec::new();
        if let Some(c) = &counters
            && let Some(b) = self.before.take()
        {
            let known = input.instances.iter().map(|i| i.service.as_str());
            (services, per_instance) = rates(c, &b, seconds(c, &b), known);
            self.counter_feed(now, None, c, &b);
        }
        if counters.is_some() {
            self.before = counters;
        }
        let booking = self.booking_views(now, input.booking);
        self.history.extend(services.iter().cloned());
        let oldest = now.saturating_sub(u64::try_from(HISTORY.as_millis()).unwrap_or(u64::MAX));
        while self.history.front().is_some_and(|p| p.at_unix_ms < oldest) {
            self.history.pop_front();
        }

        let instances = input
            .instances
            .into_iter()
            .map(|inst| {
                let gateway = input
                    .gateway
                    .as_deref()
                    .and_then(|entries| gateway_of(&inst, entries));
                let live = inst.state.is_live();
                let (rps, error_rate) = match per_instance.get(&inst.name) {
                    Some((rps, errors)) if live => (Some(*rps), Some(*errors)),
                    _ if live && reachable && gateway.is_some() => (Some(0.0), Some(0.0)),
                    _ => (None, None),
                };
                InstanceRow {
                    instance: inst,
                    gateway,
                    rps,
                    error_rate,
                }
            })
            .collect();
        Published {
            snapshot: Snapshot {
                at_unix_ms: now,
                gateway_reachable: reachable,
                jaeger_url: input.jaeger_url,
                instances,
                services,
                recent: input.recent,
                booking,
            },
            history: self.history.iter().cloned().collect(),
            feed: self.feed.iter().cloned().collect(),
        }
    }

    /// Each scraped booking instance's upstream rows, with rates from the deltas since
    /// its previous answer; its breaker transitions and ejections go to the feed.
    fn booking_views(
        &mut self,
        now: u64,
        scraped: Vec<(String, Option<Vec<Sample>>)>,
    ) -> Vec<BookingView> {
        let mut before = std::mem::take(&mut self.booking_before);
        let mut views = Vec::new();
        for (name, samples) in scraped {
            let Some(samples) = samples else {
                // The baseline stays: the next answer is compared with the last one.
                if let Some(b) = before.remove(&name) {
                    self.booking_before.insert(name.clone(), b);
                }
                views.push(BookingView {
                    instance: name,
                    reachable: false,
                    upstreams: Vec::new(),
                });
                continue;
            };
            let c = Counters::from_samples(now, SERVICE_PREFIX, &samples);
            // Per upstream instance only: the charts stay the gateway's (the client's view).
            let per_instance = before.remove(&name).map(|b| {
                self.counter_feed(now, Some(&name), &c, &b);
                rates(&c, &b, seconds(&c, &b), std::iter::empty()).1
            });
            let known: BTreeSet<Key2> = c
                .breaker
                .keys()
                .cloned()
                .chain(c.attempts.keys().map(|(s, i, _)| (s.clone(), i.clone())))
                .collect();
            let upstreams = known
                .into_iter()
                .map(|(service, instance)| {
                    let (rps, error_rate) = match &per_instance {
                        Some(rates) => {
                            let (rps, errors) = rates.get(&instance).copied().unwrap_or_default();
                            (Some(rps), Some(errors))
                        }
                        None => (None, None),
                    };
                    let ejections = c
                        .ejections
                        .iter()
                        .filter(|((s, i, _), _)| *s == service && *i == instance)
                        .map(|(_, n)| n)
                        .sum();
                    UpstreamRow {
                        breaker: c
                            .breaker
                            .get(&(service.clone(), instance.clone()))
                            .copied()
                            .and_then(breaker_name),
                        rps,
                        error_rate,
                        ejections,
                        service,
                        instance,
                    }
                })
                .collect();
            self.booking_before.insert(name.clone(), c);
            views.push(BookingView {
                instance: name,
                reachable: true,
                upstreams,
            });
        }
        views
    }

    /// Feed entries for the counters that went up: breaker transitions, ejections,
    /// retry-budget exhaustion; `view` names the booking instance whose client saw them
    /// (`None`: the gateway).
    fn counter_feed(&mut self, now: u64, view: Option<&str>, c: &Counters, b: &Counters) {
        let by = view.map_or_else(String::new, |v| format!("{v} \u{2192} "));
        for ((service, instance, to), d) in deltas(&c.transitions, &b.transitions) {
            let level = if to == "open" { "warn" } else { "info" };
            let times = if d > 1.0 {
                format!(" ({d} times)")
            } else {
                String::new()
            };
            let to = to.replace('_', "-");
            let text = format!("{by}{instance} ({service}): breaker {to}{times}");
            self.push_seen_by(view, now, "breaker", level, text);
        }
        for ((service, instance, reason), _) in deltas(&c.ejections, &b.ejections) {
            let reason = reason.replace('_', " ");
            let text = format!("{by}{instance} ({service}) ejected: {reason}");
            self.push_seen_by(view, now, "ejection", "warn", text);
        }
        for (route, d) in deltas(&c.budget, &b.budget) {
            let by = view.map_or_else(String::new, |v| format!("{v}: "));
            let text =
                format!("{by}retry budget exhausted on {route}: {d} retries or hedges not sent");
            self.push_seen_by(view, now, "retry-budget", "warn", text);
        }
    }

    /// Feed entries for instances that appeared, changed state, or got or lost a fault.
    fn instance_changes(&mut self, now: u64, instances: &[InstanceView]) {
        let first_round = self.seen.is_empty();
        let mut seen = BTreeMap::new();
        for i in instances {
            let fault = i.fault.as_ref().map(|f| f.summary.clone());
            let before = self.seen.get(&i.name).cloned();
            if !first_round {
                match &before {
                    None => self.push(
                        now,
                        "instance",
                        "info",
                        format!("{}: {}", i.name, i.state.as_str()),
                    ),
                    Some((state, _)) if *state != i.state => {
                        let level = match i.state {
                            InstanceState::Running | InstanceState::Starting => "info",
                            _ => "warn",
                        };
                        let text =
                            format!("{}: {} -> {}", i.name, state.as_str(), i.state.as_str());
                        self.push(now, "instance", level, text);
                    }
                    _ => {}
                }
            }
            let fault_before = before.and_then(|(_, f)| f);
            if fault != fault_before {
                match &fault {
                    Some(f) => self.push(now, "fault", "warn", format!("{}: fault {f}", i.name)),
                    None if i.state.is_live() => {
                        self.push(now, "fault", "info", format!("{}: fault cleared", i.name));
                    }
                    None => {}
                }
            }
            seen.insert(i.name.clone(), (i.state, fault));
        }
        self.seen = seen;
    }

    /// Samples every [`EVERY`] until `stop`, publishing on `tx`.
    pub async fn run(
        mut self,
        sup: Arc<Supervisor>,
        tx: watch::Sender<Arc<Published>>,
        stop: CancellationToken,
    ) {
        // With --internal-tls, `hotel up` installed the operators' identity before the
        // sampler started: booking's listener wants it; the gateway's admin API is plain
        // http either way.
        let http = match hotel_common::tls::internal::reqwest_client()
            .timeout(Duration::from_millis(800))
            .no_proxy()
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "the dashboard's sampler has no HTTP client");
                return;
            }
        };
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let input = fetch(&sup, &http).await;
            tx.send_replace(Arc::new(self.absorb(input)));
        }
    }
}

/// `GET /metrics` of the booking instance at `addr` (`HOST:PORT`), parsed; `None`
/// when it does not answer.
async fn scrape_booking(http: &reqwest::Client, addr: &str) -> Option<Vec<Sample>> {
    let url = format!("{}/metrics", hotel_common::tls::internal::base_url(addr));
    let res = http.get(url).send().await.ok()?.error_for_status().ok()?;
    Some(prom::parse(&res.text().await.ok()?))
}

/// One round of I/O: the supervisor's instances, the gateway's status, metrics and
/// recent requests, and every live booking instance's metrics, concurrently.
async fn fetch(sup: &Supervisor, http: &reqwest::Client) -> Input {
    let file = sup.cluster_file();
    let instances = sup.instances();
    // Only a running instance is asked: a paused one would hold the round up to the
    // timeout, and one starting or stopping may not listen. They are listed unanswered.
    let booking = futures::future::join_all(
        instances
            .iter()
            .filter(|i| i.service == crate::settings::Role::Booking.as_str() && i.state.is_live())
            .map(|i| {
                let name = i.name.clone();
                let addr = i
                    .address
                    .clone()
                    .filter(|_| i.state == InstanceState::Running);
                async move {
                    let samples = match addr {
                        Some(addr) => scrape_booking(http, &addr).await,
                        None => None,
                    };
                    (name, samples)
                }
            }),
    );
    let token = &sup.config().admin_token;
    let gateway = async {
        let Some(admin) = &file.admin_url else {
            return (None, None, None);
        };
        let get = |path: &str| http.get(format!("{admin}{path}")).bearer_auth(token).send();
        let (g, m, r) = tokio::join!(
            gateway_view(http, admin, token),
            async {
                let res = get("/metrics").await.ok()?.error_for_status().ok()?;
                res.text().await.ok()
            },
            async {
                let res = get("/admin/recent").await.ok()?.error_for_status().ok()?;
                res.json::<serde_json::Value>().await.ok()
            }
        );
        (
            g.map(|(entries, _, _)| entries),
            m.map(|t| prom::parse(&t)),
            r,
        )
    };
    let ((gateway, metrics, recent), booking) = tokio::join!(gateway, booking);
    Input {
        at_unix_ms: unix_ms(),
        instances,
        gateway,
        metrics,
        booking,
        recent,
        jaeger_url: file.jaeger_url,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::supervisor::ActiveFault;

    fn instance(name: &str, state: InstanceState) -> InstanceView {
        InstanceView {
            name: name.into(),
            service: name.split('-').next().unwrap().into(),
            pid: 1,
            address: Some(format!("127.0.0.1:{}", 1000 + name.len())),
            state,
            restarts: 0,
            last_exit: None,
            ready_unix_ms: None,
            fault: None,
        }
    }

    /// The gateway's metric text for room-1 and room-2 with these counts.
    fn metrics(ok: [u64; 2], failed: [u64; 2], opened: u64, budget: u64) -> Vec<Sample> {
        let mut t = String::new();
        for (i, name) in ["room-1", "room-2"].iter().enumerate() {
            t += &format!(
                "gateway_upstream_attempts_total{{service=\"room\",instance=\"{name}\",outcome=\"success\"}} {}\n",
                ok[i]
            );
            t += &format!(
                "gateway_upstream_attempts_total{{service=\"room\",instance=\"{name}\",outcome=\"http_5xx\"}} {}\n",
                failed[i]
            );
            // Every attempt took between 1 and 2 ms.
            let n = ok[i] + failed[i];
            t += &format!(
                "gateway_upstream_attempt_duration_seconds_bucket{{le=\"0.001\",service=\"room\",instance=\"{name}\"}} 0\n"
            );
            t += &format!(
                "gateway_upstream_attempt_duration_seconds_bucket{{le=\"0.002\",service=\"room\",instance=\"{name}\"}} {n}\n"
            );
            t += &format!(
                "gateway_upstream_attempt_duration_seconds_bucket{{le=\"+Inf\",service=\"room\",instance=\"{name}\"}} {n}\n"
            );
        }
        t += &format!(
            "gateway_breaker_transitions_total{{service=\"room\",instance=\"room-2\",to=\"open\"}} {opened}\n"
        );
        t += &format!(
            "gateway_upstream_ejections_total{{service=\"room\",instance=\"room-2\",reason=\"failure_percentage\"}} {opened}\n"
        );
        t += &format!("gateway_retry_budget_exhausted_total{{route=\"/api/rooms\"}} {budget}\n");
        prom::parse(&t)
    }

    fn input(at: u64, instances: Vec<InstanceView>, m: Option<Vec<Sample>>) -> Input {
        Input {
            at_unix_ms: at,
            instances,
            gateway: m.as_ref().map(|_| Vec::new()),
            metrics: m,
            booking: Vec::new(),
            recent: None,
            jaeger_url: None,
        }
    }

    #[test]
    fn rates_error_shares_and_quantiles_come_from_counter_deltas() {
        let mut s = Sampler::default();
        let up = || {
            vec![
                instance("room-1", InstanceState::Running),
                instance("room-2", InstanceState::Running),
            ]
        };
        let first = s.absorb(input(10_000, up(), Some(metrics([100, 50], [0, 0], 0, 0))));
        // The first round only sets the baseline.
        assert!(first.history.is_empty() && first.feed.is_empty());
        // Two seconds later: room-1 did 40 more (all fine), room-2 20 more, 10 failed.
        let p = s.absorb(input(12_000, up(), Some(metrics([140, 60], [0, 10], 1, 3))));
        let room = &p.snapshot.services[0];
        assert_eq!(room.service, "room");
        assert!((room.rps - 30.0).abs() < 1e-9, "{room:?}");
        assert!((room.error_rate - 10.0 / 60.0).abs() < 1e-9);
        let p50 = room.p50_ms.unwrap();
        assert!((1.0..=2.0).contains(&p50), "{p50}");
        let rows = &p.snapshot.instances;
        assert!((rows[0].rps.unwrap() - 20.0).abs() < 1e-9);
        assert_eq!(rows[0].error_rate, Some(0.0));
        assert!((rows[1].error_rate.unwrap() - 0.5).abs() < 1e-9);
        assert_eq!(p.history, vec![room.clone()]);
        let kinds: Vec<_> = p.feed.iter().map(|f| (f.kind, f.level)).collect();
        assert_eq!(
            kinds,
            [
                ("breaker", "warn"),
                ("ejection", "warn"),
                ("retry-budget", "warn")
            ]
        );
        assert!(p.feed[0].text.contains("room-2") && p.feed[0].text.contains("open"));
        assert!(p.feed[1].text.contains("failure percentage"));
        assert!(p.feed[2].text.contains("/api/rooms") && p.feed[2].text.contains('3'));
        // A gateway restart (counters back to 0) is no negative rate.
        let p = s.absorb(input(13_000, up(), Some(metrics([1, 1], [0, 0], 0, 0))));
        assert!(p.snapshot.services[0].rps >= 0.0);
        assert_eq!(p.feed.len(), 3);
    }

    #[test]
    fn state_and_fault_changes_and_the_gateway_going_away_enter_the_feed() {
        let mut s = Sampler::default();
        let m = || Some(metrics([1, 1], [0, 0], 0, 0));
        s.absorb(input(
            1_000,
            vec![instance("room-1", InstanceState::Running)],
            m(),
        ));
        let mut faulty = instance("room-1", InstanceState::Running);
        faulty.fault = Some(ActiveFault {
            spec: Default::default(),
            summary: "error 50% (503)".into(),
            expires_unix_ms: None,
        });
        let p = s.absorb(input(
            2_000,
            vec![faulty, instance("room-2", InstanceState::Starting)],
            m(),
        ));
        let texts: Vec<_> = p.feed.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["room-1: fault error 50% (503)", "room-2: starting"]);
        let p = s.absorb(input(
            3_000,
            vec![
                instance("room-1", InstanceState::Paused),
                instance("room-2", InstanceState::Running),
            ],
            None,
        ));
        let texts: Vec<_> = p.feed.iter().skip(2).map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "room-1: running -> paused",
                "room-1: fault cleared",
                "room-2: starting -> running",
                "the gateway's admin API does not answer",
            ]
        );
        assert!(!p.snapshot.gateway_reachable);
        assert!(p.snapshot.instances.iter().all(|i| i.rps.is_none()));
    }

    #[test]
    fn a_gateway_still_starting_is_not_reported_as_coming_back() {
        let mut s = Sampler::default();
        let up = || vec![instance("room-1", InstanceState::Running)];
        s.absorb(input(1_000, up(), None));
        s.absorb(input(2_000, up(), None));
        let p = s.absorb(input(3_000, up(), Some(metrics([1, 1], [0, 0], 0, 0))));
        assert!(p.feed.is_empty(), "{:?}", p.feed);
        let p = s.absorb(input(4_000, up(), None));
        assert_eq!(p.feed.len(), 1);
        let p = s.absorb(input(5_000, up(), Some(metrics([1, 1], [0, 0], 0, 0))));
        assert_eq!(p.feed[1].text, "the gateway's admin API answers again");
    }

    #[test]
    fn a_round_without_the_gateway_keeps_the_baseline() {
        let mut s = Sampler::default();
        let up = || vec![instance("room-1", InstanceState::Running)];
        s.absorb(input(1_000, up(), Some(metrics([10, 0], [0, 0], 0, 0))));
        let p = s.absorb(input(2_000, up(), None));
        assert!(p.snapshot.services.is_empty());
        let p = s.absorb(input(3_000, up(), Some(metrics([30, 0], [0, 0], 0, 0))));
        assert!((p.snapshot.services[0].rps - 10.0).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn history_keeps_five_minutes_and_the_feed_is_bounded() {
        let mut s = Sampler::default();
        let up = || vec![instance("room-1", InstanceState::Running)];
        let mut last = None;
        for i in 0..400u64 {
            let p = s.absorb(input(i * 1000, up(), Some(metrics([i, 0], [0, 0], i, 0))));
            last = Some(p);
        }
        let p = last.unwrap();
        let span = p.history.last().unwrap().at_unix_ms - p.history[0].at_unix_ms;
        assert!(span <= 300_000, "{span}");
        assert!(p.history.len() >= 299);
        assert_eq!(p.feed.len(), FEED_LEN);
        assert!(p.feed.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    /// booking-1's `/metrics` as its upstream client writes it (under `hotel_`, beside
    /// its own request families): `[ok, failed]` attempts to room-1, room-2 and
    /// customer-1, room-2's breaker state, how often it opened and was ejected.
    fn booking_metrics(attempts: [[u64; 2]; 3], room2: u8, opened: u64) -> Vec<Sample> {
        let mut t = String::from(
            "# TYPE hotel_http_requests counter\n\
             hotel_http_requests_total{route=\"/bookings\",method=\"POST\",status=\"201\"} 9\n\
             gateway_upstream_attempts_total{service=\"room\",instance=\"room-1\",outcome=\"http_5xx\"} 99\n",
        );
        for ([ok, failed], (service, name)) in attempts.iter().zip([
            ("room", "room-1"),
            ("room", "room-2"),
            ("customer", "customer-1"),
        ]) {
            let labels = format!("service=\"{service}\",instance=\"{name}\"");
            t += &format!("hotel_upstream_attempts_total{{{labels},outcome=\"success\"}} {ok}\n");
            t += &format!(
                "hotel_upstream_attempts_total{{{labels},outcome=\"connect_error\"}} {failed}\n"
            );
            let state = if name == "room-2" { room2 } else { 0 };
            t += &format!("hotel_breaker_state{{{labels}}} {state}\n");
        }
        let room2 = "service=\"room\",instance=\"room-2\"";
        t += &format!("hotel_breaker_transitions_total{{{room2},to=\"open\"}} {opened}\n");
        t += &format!(
            "hotel_upstream_ejections_total{{{room2},reason=\"consecutive_failures\"}} {opened}\n"
        );
        prom::parse(&t)
    }

    fn with_booking(at: u64, samples: Option<Vec<Sample>>) -> Input {
        Input {
            booking: vec![("booking-1".to_owned(), samples)],
            ..input(
                at,
                vec![instance("booking-1", InstanceState::Running)],
                None,
            )
        }
    }

    #[test]
    fn booking_s_view_of_room_and_customer_comes_from_its_own_metrics() {
        let mut s = Sampler::default();
        let p = s.absorb(with_booking(
            10_000,
            Some(booking_metrics([[10, 0], [5, 0], [10, 0]], 0, 0)),
        ));
        let view = &p.snapshot.booking[0];
        assert_eq!(view.instance, "booking-1");
        assert!(view.reachable);
        let names: Vec<_> = view
            .upstreams
            .iter()
            .map(|u| format!("{}/{}", u.service, u.instance))
            .collect();
        assert_eq!(names, ["customer/customer-1", "room/room-1", "room/room-2"]);
        // The first answer only sets the baseline; the breakers are known at once.
        assert!(view.upstreams.iter().all(|u| u.rps.is_none()));
        assert!(view.upstreams.iter().all(|u| u.breaker == Some("closed")));
        assert!(p.feed.is_empty());

        // Two seconds later: 20 more to room-1, 2 more and 6 refused connections to
        // room-2, whose breaker opened and which was ejected; 10 more to customer-1.
        let p = s.absorb(with_booking(
            12_000,
            Some(booking_metrics([[30, 0], [7, 6], [20, 0]], 1, 1)),
        ));
        let rows = &p.snapshot.booking[0].upstreams;
        let (customer, room1, room2) = (&rows[0], &rows[1], &rows[2]);
        assert_eq!(customer.rps, Some(5.0));
        assert_eq!(room1.rps, Some(10.0));
        assert_eq!(room1.error_rate, Some(0.0));
        assert_eq!(room2.rps, Some(4.0));
        assert_eq!(room2.error_rate, Some(0.75));
        assert_eq!(room2.breaker, Some("open"));
        assert_eq!((room1.ejections, room2.ejections), (0.0, 1.0));
        // The gateway's families in the same text are not booking's.
        assert!(p.snapshot.services.is_empty());
        let feed: Vec<_> = p
            .feed
            .iter()
            .map(|f| (f.kind, f.view.as_deref(), f.text.as_str()))
            .collect();
        assert_eq!(
            feed,
            [
                (
                    "breaker",
                    Some("booking-1"),
                    "booking-1 \u{2192} room-2 (room): breaker open"
                ),
                (
                    "ejection",
                    Some("booking-1"),
                    "booking-1 \u{2192} room-2 (room) ejected: consecutive failures"
                ),
            ]
        );
        let json = serde_json::to_value(&p.feed[0]).unwrap();
        assert_eq!(json["view"], "booking-1");

        // booking-1 does not answer once: shown so, and its baseline is kept.
        let p = s.absorb(with_booking(13_000, None));
        assert_eq!(
            p.snapshot.booking,
            [BookingView {
                instance: "booking-1".into(),
                reachable: false,
                upstreams: Vec::new(),
            }]
        );
        let p = s.absorb(with_booking(
            14_000,
            Some(booking_metrics([[40, 0], [7, 6], [20, 0]], 2, 1)),
        ));
        let rows = &p.snapshot.booking[0].upstreams;
        assert_eq!(rows[1].rps, Some(5.0));
        assert_eq!(rows[2].rps, Some(0.0));
        assert_eq!(rows[2].breaker, Some("half-open"));
        assert_eq!(p.feed.len(), 2, "{:?}", p.feed);
        // Gone from the scrape (stopped): gone from the page and from the baselines.
        let p = s.absorb(Input {
            booking: Vec::new(),
            ..with_booking(15_000, None)
        });
        assert!(p.snapshot.booking.is_empty());
        assert!(s.booking_before.is_empty());
    }
}
