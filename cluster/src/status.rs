//! `hotel status`: one row per instance joining three views of it: the supervisor's
//! (pid, process state), the registry's (registered, heartbeat age) and the gateway's
//! (breaker state, in-flight, EWMA latency, requests, failures); below the table, the
//! gateway's HTTP cache (hit ratio, hits, stale, misses, entries, bytes).
//!
//! The registry and the gateway are asked directly with the tokens from `cluster.json`;
//! when one of them is down its columns say so and the rest is still shown, because that
//! is exactly when people run `hotel status`.

use crate::{
    control::ControlClient,
    output,
    settings::Role,
    supervisor::{InstanceState, InstanceView, unix_ms},
};
use hotel_common::process::BoxError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::{collections::BTreeMap, path::Path, process::ExitCode, time::Duration};

/// The gateway's view of one instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayView {
    /// Breaker state: closed, open, half-open (or whatever the gateway calls them).
    pub breaker: Option<String>,
    /// Requests in flight now.
    pub in_flight: Option<u64>,
    /// Peak-EWMA latency in milliseconds.
    pub ewma_ms: Option<f64>,
    /// Requests sent to it so far.
    pub requests: Option<u64>,
    /// Failed requests so far.
    pub failures: Option<u64>,
    /// The latest failure: what it was and when (`connect_error`, Unix milliseconds).
    #[serde(default)]
    pub last_error: Option<LastError>,
}

/// The latest failure the gateway saw on an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    /// connect_error, timeout, http_5xx, ...
    pub kind: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl LastError {
    /// `timeout 4s ago`.
    fn describe(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let ago = Duration::from_secs(now.saturating_sub(self.at_unix_ms) / 1000);
        format!("{} {} ago", self.kind, humantime::format_duration(ago))
    }
}

/// One row of `hotel status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRow {
    /// The supervisor's record.
    #[serde(flatten)]
    pub instance: InstanceView,
    /// `registered` (with heartbeat age), `critical` (registered, but its readiness check
    /// fails, so it gets no traffic), `re-registering` (alive and registered with the
    /// registry before a restart of the registry, not yet with the new one), `absent`,
    /// or `unknown` when the registry is down.
    pub registry: String,
    /// Why its readiness check fails, when `registry` is `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_reason: Option<String>,
    /// Milliseconds since its last heartbeat, when registered.
    pub heartbeat_age_ms: Option<u64>,
    /// The gateway's view, when the gateway knows the instance.
    pub gateway: Option<GatewayView>,
}

/// The gateway's HTTP cache, as its `/admin/status` reports it (`cache`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheView {
    /// `(hits + stale) / (hits + stale + misses)`; 0 before any.
    #[serde(default)]
    pub hit_ratio: f64,
    /// Answered from a stored entry (fresh or revalidated).
    #[serde(default)]
    pub hits: u64,
    /// Stale entries served while the upstream failed.
    #[serde(default)]
    pub stale: u64,
    /// Sent upstream.
    #[serde(default)]
    pub misses: u64,
    /// Not cacheable (personal data, unsafe methods).
    #[serde(default)]
    pub bypass: u64,
    /// Entries stored.
    #[serde(default)]
    pub entries: u64,
    /// Bytes stored.
    #[serde(default)]
    pub bytes: u64,
    /// The bound.
    #[serde(default)]
    pub max_bytes: u64,
}

impl CacheView {
    /// `hit ratio 87.5 % (hits 70, stale 0, misses 10, bypass 3; 12 entries, 34 KiB of 64 MiB)`.
    fn describe(&self) -> String {
        let kib = |b: u64| {
            if b >= 1024 * 1024 {
                format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
            } else {
                format!("{:.1} KiB", b as f64 / 1024.0)
            }
        };
        format!(
            "hit ratio {:.1} % (hits {}, stale {}, misses {}, bypass {}; {} entries, {} of {})",
            self.hit_ratio * 100.0,
            self.hits,
            self.stale,
            self.misses,
            self.bypass,
            self.entries,
            kib(self.bytes),
            kib(self.max_bytes)
        )
    }
}

/// `hotel status --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The gateway URL.
    pub gateway_url: Option<String>,
    /// Whether the registry answered.
    pub registry_reachable: bool,
    /// Whether the gateway admin API answered.
    pub gateway_reachable: bool,
    /// Every instance.
    pub instances: Vec<StatusRow>,
    /// The gateway's HTTP cache; `None` when the gateway did not answer or runs without
    /// a cache (`[cache] max_bytes = 0`).
    #[serde(default)]
    pub cache: Option<CacheView>,
    /// Per service, its events as one live instance reports them (`GET /events/status`):
    /// `outbox_head`, and per producer it consumes: position, head, lag, applied,
    /// duplicates, dead letters, last error (that instance's counts).
    #[serde(default)]
    pub events: BTreeMap<String, serde_json::Value>,
    /// The gateway's running configuration: `version` (1 at startup, +1 per accepted
    /// `hotel reload`) and `loaded_at`; `None` when the gateway did not answer.
    #[serde(default)]
    pub gateway_config: Option<serde_json::Value>,
}

/// What the registry holds of one instance.
struct RegistryEntry {
    /// Milliseconds since its last heartbeat.
    age: u64,
    /// The reason of a `critical` status; `None` when passing.
    critical: Option<String>,
}

/// Registry entries by instance name.
async fn registry_view(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> Option<BTreeMap<String, RegistryEntry>> {
    let mut seen = BTreeMap::new();
    for role in Role::SERVICES {
        let res = http
            .get(format!("{url}/v1/services/{role}"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        let body: Value = res.error_for_status().ok()?.json().await.ok()?;
        for inst in body
            .get("instances")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(name) = inst.get("instance").and_then(Value::as_str) {
                let age = inst
                    .get("last_heartbeat_age_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let critical = (inst.get("status").and_then(Value::as_str) == Some("critical"))
                    .then(|| {
                        let reason = inst.get("reason").and_then(Value::as_str);
                        reason.unwrap_or("").to_owned()
                    });
                seen.insert(name.to_owned(), RegistryEntry { age, critical });
            }
        }
    }
    Some(seen)
}

fn first<'a>(obj: &'a serde_json::Map<String, Value>, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| obj.get(*k))
}

/// Finds per-instance entries anywhere in the gateway's `/admin/status` document: any
/// object naming an instance (by `instance`/`name`) or an address (`address`/`url`).
fn collect_gateway(value: &Value, out: &mut Vec<(Vec<String>, GatewayView)>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| collect_gateway(v, out)),
        Value::Object(obj) => {
            let keys: Vec<String> = ["instance", "name", "id", "address", "url", "endpoint"]
                .iter()
                .filter_map(|k| obj.get(*k).and_then(Value::as_str))
                .map(|s| {
                    s.trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .trim_end_matches('/')
                        .to_owned()
                })
                .collect();
            let has_stats = first(obj, &["breaker", "in_flight", "requests"]).is_some();
            if !keys.is_empty() && has_stats {
                let num = |names: &[&str]| first(obj, names).and_then(Value::as_u64);
                let breaker =
                    first(obj, &["breaker", "breaker_state", "state"]).and_then(|b| match b {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(o) => {
                            o.get("state").and_then(Value::as_str).map(str::to_owned)
                        }
                        _ => None,
                    });
                out.push((
                    keys,
                    GatewayView {
                        breaker,
                        in_flight: num(&["in_flight", "inflight", "pending"]),
                        ewma_ms: first(
                            obj,
                            &[
                                "ewma_ms",
                                "latency_ewma_ms",
                                "ewma_latency_ms",
                                "peak_ewma_ms",
                            ],
                        )
                        .and_then(Value::as_f64),
                        requests: num(&["requests", "requests_total", "total"]),
                        failures: num(&["failures", "failures_total", "errors"]),
                        last_error: obj
                            .get("last_error")
                            .and_then(|e| serde_json::from_value(e.clone()).ok()),
                    },
                ));
            }
            obj.values().for_each(|v| collect_gateway(v, out));
        }
        _ => {}
    }
}

/// The gateway's per-instance entries, its cache and its configuration version, from
/// `/admin/status`.
pub(crate) type GatewayAnswer = (
    Vec<(Vec<String>, GatewayView)>,
    Option<CacheView>,
    Option<Value>,
);

pub(crate) async fn gateway_view(
    http: &reqwest::Client,
    admin_url: &str,
    token: &str,
) -> Option<GatewayAnswer> {
    let res = http
        .get(format!("{admin_url}/admin/status"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?;
    let body: Value = res.json().await.ok()?;
    let mut out = Vec::new();
    collect_gateway(&body, &mut out);
    let cache = body
        .get("cache")
        .filter(|c| c.is_object())
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    let config = body.get("config").filter(|c| c.is_object()).cloned();
    Some((out, cache, config))
}

/// The gateway's entry for `inst` among `entries` (from [`gateway_view`]). By address
/// first: a restarted instance keeps its name but not its address, and the gateway may
/// still hold the old endpoint's counters.
pub(crate) fn gateway_of(
    inst: &InstanceView,
    entries: &[(Vec<String>, GatewayView)],
) -> Option<GatewayView> {
    let by_address = inst
        .address
        .as_deref()
        .and_then(|a| entries.iter().find(|(keys, _)| keys.iter().any(|k| k == a)));
    let has_address = |keys: &[String]| {
        keys.iter()
            .any(|k| k.parse::<std::net::SocketAddr>().is_ok())
    };
    by_address
        .or_else(|| {
            entries
                .iter()
                .find(|(keys, _)| !has_address(keys) && keys.contains(&inst.name))
        })
        .map(|(_, v)| v.clone())
}

/// Gathers the joined view of the cluster in `data_dir`.
pub async fn gather(data_dir: &Path) -> Result<Status, BoxError> {
    let client = ControlClient::open(data_dir)?;
    let instances = client.instances().await?;
    client.file.install_identity()?;
    let http = hotel_common::tls::internal::reqwest_client()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()?;
    let file = &client.file;
    let (registry, gateway) = tokio::join!(
        async {
            match &file.registry_url {
                Some(u) => registry_view(&http, u, &file.registry_token).await,
                None => None,
            }
        },
        async {
            match &file.admin_url {
                Some(u) => gateway_view(&http, u, &file.admin_token).await,
                None => None,
            }
        }
    );
    let registry_instance = instances
        .iter()
        .find(|i| i.service == Role::Registry.as_str() && i.state.is_live())
        .cloned();
    let now = unix_ms();
    let rows = instances
        .into_iter()
        .map(|inst| {
            let (registry_state, age, reason) =
                if !Role::SERVICES.iter().any(|r| r.as_str() == inst.service) {
                    ("-".to_owned(), None, None)
                } else {
                    match &registry {
                        None => ("unknown".to_owned(), None, None),
                        Some(map) => match map.get(&inst.name) {
                            Some(RegistryEntry {
                                age,
                                critical: None,
                            }) => ("registered".to_owned(), Some(*age), None),
                            Some(RegistryEntry {
                                age,
                                critical: Some(why),
                            }) => ("critical".to_owned(), Some(*age), Some(why.clone())),
                            None if re_registering(&inst, registry_instance.as_ref(), now) => {
                                ("re-registering".to_owned(), None, None)
                            }
                            None => ("absent".to_owned(), None, None),
                        },
                    }
                };
            let gw = gateway
                .as_ref()
                .and_then(|(entries, _, _)| gateway_of(&inst, entries));
            StatusRow {
                instance: inst,
                registry: registry_state,
                registry_reason: reason,
                heartbeat_age_ms: age,
                gateway: gw,
            }
        })
        .collect::<Vec<StatusRow>>();
    let mut events = BTreeMap::new();
    for role in Role::SERVICES {
        let Some(addr) = rows
            .iter()
            .find(|r| r.instance.service == role.as_str() && r.instance.state.is_live())
            .and_then(|r| r.instance.address.clone())
        else {
            continue;
        };
        let answer = http
            .get(format!(
                "{}/events/status",
                hotel_common::tls::internal::base_url(addr)
            ))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        if let Ok(res) = answer
            && let Ok(v) = res.json::<serde_json::Value>().await
        {
            events.insert(role.as_str().to_owned(), v);
        }
    }
    Ok(Status {
        events,
        gateway_url: file.gateway_url.clone(),
        registry_reachable: registry.is_some(),
        gateway_reachable: gateway.is_some(),
        instances: rows,
        gateway_config: gateway.as_ref().and_then(|(_, _, c)| c.clone()),
        cache: gateway.and_then(|(_, cache, _)| cache),
    })
}

/// How long after a registry restart a live instance missing from it counts as
/// re-registering rather than absent: a heartbeat (1 s) finds the new registry, and
/// registration retries with backoff; past this something else is wrong.
const REREGISTER_WITHIN_MS: u64 = 10_000;

/// Whether `inst`, missing from the registry, is on its way back: it is alive and not
/// frozen, was ready (so registered) before the current registry process was, and that
/// registry started only moments ago.
fn re_registering(inst: &InstanceView, registry: Option<&InstanceView>, now_ms: u64) -> bool {
    let Some(reg_ready) = registry.and_then(|r| r.ready_unix_ms) else {
        return false;
    };
    matches!(inst.state, InstanceState::Running)
        && inst.ready_unix_ms.is_some_and(|t| t < reg_ready)
        && now_ms.saturating_sub(reg_ready) < REREGISTER_WITHIN_MS
}

/// `0.4s`: a heartbeat age.
fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// An EWMA latency, or `-` before the first answer (the gateway reports 0 until then).
fn ewma(g: &GatewayView) -> String {
    match g.ewma_ms {
        Some(v) if v > 0.0 && g.requests.unwrap_or(1) > g.failures.unwrap_or(0) => {
            format!("{v:.1}ms")
        }
        _ => "-".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

/// Renders the status table.
pub fn render(status: &Status) -> String {
    let rows: Vec<Vec<String>> = status
        .instances
        .iter()
        .map(|r| {
            let g = r.gateway.clone().unwrap_or_default();
            vec![
                r.instance.name.clone(),
                r.instance.pid.to_string(),
                r.instance.address.clone().unwrap_or_else(|| "-".into()),
                r.instance.state.as_str().to_owned(),
                match &r.registry_reason {
                    Some(why) => format!("{} ({why})", r.registry),
                    None => r.registry.clone(),
                },
                opt(r.heartbeat_age_ms.map(seconds)),
                opt(g.breaker.clone()),
                opt(g.in_flight),
                ewma(&g),
                opt(g.requests),
                opt(g.failures),
                g.last_error
                    .as_ref()
                    .map(LastError::describe)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut text = output::table(
        &[
            "NAME",
            "PID",
            "ADDRESS",
            "STATE",
            "REGISTRY",
            "HEARTBEAT",
            "BREAKER",
            "IN-FLIGHT",
            "EWMA",
            "REQUESTS",
            "FAILURES",
            "LAST ERROR",
        ],
        &rows,
    );
    let now = unix_ms();
    for r in &status.instances {
        if let Some(f) = &r.instance.fault {
            text.push_str(&format!("fault: {} {}\n", r.instance.name, f.describe(now)));
        }
    }
    if !status.registry_reachable {
        text.push_str(
            "registry: not reachable (instances keep serving; they re-register when it is back)\n",
        );
    }
    if !status.gateway_reachable {
        text.push_str("gateway admin: not reachable\n");
    } else if let Some(cache) = &status.cache {
        text.push_str(&format!("gateway cache: {}\n", cache.describe()));
    } else {
        text.push_str("gateway cache: off\n");
    }
    if let Some(c) = &status.gateway_config {
        text.push_str(&format!(
            "gateway config: version {}, loaded {}\n",
            c["version"],
            c["loaded_at"].as_str().unwrap_or("?")
        ));
    }
    for (service, e) in &status.events {
        let mut line = format!("events: {service} outbox {}", e["outbox_head"]);
        if let Some(relay) = e.get("relay").filter(|r| r.is_object()) {
            line.push_str(&format!(
                " (relayed to {}: backlog {}",
                relay["broker"].as_str().unwrap_or("?"),
                relay["backlog"]
            ));
            if let Some(err) = relay["last_error"].as_str() {
                line.push_str(&format!(", last error: {err}"));
            }
            line.push(')');
        }
        for (producer, c) in e["consumers"].as_object().into_iter().flatten() {
            line.push_str(&format!(
                "; reads {producer}: lag {}, applied {}, dead {}",
                c["lag"], c["applied"], c["dead_letters"]
            ));
            if let Some(err) = c["last_error"].as_str() {
                line.push_str(&format!(", last error: {err}"));
            }
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// `hotel status [--json]`.
pub async fn run(data_dir: &Path, json: bool) -> Result<ExitCode, BoxError> {
    let status = gather(data_dir).await?;
    if json {
        output::line(&serde_json::to_string_pretty(&status)?);
    } else {
        output::line(render(&status).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn view(name: &str, service: &str, ready: Option<u64>) -> InstanceView {
        InstanceView {
            name: name.into(),
            service: service.into(),
            pid: 7,
            address: Some("127.0.0.1:5001".into()),
            state: InstanceState::Running,
            restarts: 0,
            last_exit: None,
            ready_unix_ms: ready,
            fault: None,
        }
    }

    #[test]
    fn the_table_shows_heartbeat_age_and_no_ewma_before_the_first_answer() {
        let row = |name: &str, age, gateway| StatusRow {
            instance: view(name, "room", Some(1)),
            registry: "registered".into(),
            registry_reason: None,
            heartbeat_age_ms: age,
            gateway,
        };
        let idle = GatewayView {
            breaker: Some("closed".into()),
            in_flight: Some(0),
            ewma_ms: Some(0.0),
            requests: Some(0),
            failures: Some(0),
            last_error: None,
        };
        let busy = GatewayView {
            ewma_ms: Some(2.3),
            requests: Some(5),
            ..idle.clone()
        };
        let text = render(&Status {
            gateway_url: None,
            registry_reachable: true,
            gateway_reachable: true,
            instances: vec![
                row("room-1", Some(412), Some(idle)),
                row("room-2", Some(1500), Some(busy)),
            ],
            cache: Some(CacheView {
                hit_ratio: 0.875,
                hits: 70,
                misses: 10,
                entries: 12,
                bytes: 34 * 1024,
                max_bytes: 64 * 1024 * 1024,
                ..CacheView::default()
            }),
            events: BTreeMap::from([
                (
                    "customer".to_owned(),
                    serde_json::json!({"outbox_head": 3, "consumers": {"booking": {
                        "lag": 2, "applied": 7, "dead_letters": 1, "last_error": null}}}),
                ),
                (
                    "room".to_owned(),
                    serde_json::json!({"outbox_head": 9, "consumers": {}, "relay": {
                        "broker": "nats://127.0.0.1:4222, stream HOTEL_EVENTS",
                        "position": 5, "backlog": 4, "published": 5, "last_error": null}}),
                ),
            ]),
            gateway_config: Some(
                serde_json::json!({"version": 3, "loaded_at": "2026-12-06T03:00:00Z"}),
            ),
        });
        assert!(
            text.contains("gateway config: version 3, loaded 2026-12-06T03:00:00Z"),
            "{text}"
        );
        assert!(
            text.contains(
                "gateway cache: hit ratio 87.5 % (hits 70, stale 0, misses 10, bypass 0; \
                 12 entries, 34.0 KiB of 64.0 MiB)"
            ),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let cells = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(cells(lines[0])[5], "HEARTBEAT", "{text}");
        let (idle, busy) = (cells(lines[1]), cells(lines[2]));
        assert_eq!(idle[5], "0.4s", "{text}");
        assert_eq!(idle[8], "-", "idle EWMA: {text}");
        assert_eq!(busy[5], "1.5s", "{text}");
        assert_eq!(busy[8], "2.3ms", "{text}");
        assert!(
            lines[3..]
                .contains(&"events: customer outbox 3; reads booking: lag 2, applied 7, dead 1"),
            "{text}"
        );
        assert!(
            lines[3..].contains(
                &"events: room outbox 9 (relayed to nats://127.0.0.1:4222, stream HOTEL_EVENTS: backlog 4)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_live_instance_missing_from_a_just_restarted_registry_is_re_registering() {
        let now = 100_000;
        let registry = view("registry", "registry", Some(now - 500));
        let old = view("room-1", "room", Some(now - 60_000));
        assert!(re_registering(&old, Some(&registry), now));
        // Ready after the registry started: it never was registered with an older one.
        let new = view("room-2", "room", Some(now - 100));
        assert!(!re_registering(&new, Some(&registry), now));
        // Frozen: it cannot re-register.
        let paused = InstanceView {
            state: InstanceState::Paused,
            ..old.clone()
        };
        assert!(!re_registering(&paused, Some(&registry), now));
        // Long after the restart, missing means absent.
        assert!(!re_registering(
            &old,
            Some(&registry),
            now + REREGISTER_WITHIN_MS
        ));
        assert!(!re_registering(&old, None, now));
    }

    #[test]
    fn gateway_entries_are_found_by_instance_name_or_address() {
        let doc = serde_json::json!({
            "services": {
                "room": {"instances": [
                    {"instance": "room-1", "address": "http://127.0.0.1:5001", "breaker": "closed",
                     "in_flight": 2, "ewma_ms": 3.5, "requests": 10, "failures": 1},
                    {"url": "http://127.0.0.1:5002/", "breaker": {"state": "open"}, "requests": 4,
                     "last_error": {"kind": "timeout", "at_unix_ms": 1}}
                ]}
            }
        });
        let mut out = Vec::new();
        collect_gateway(&doc, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[0].0.contains(&"room-1".to_owned()));
        assert_eq!(out[0].1.in_flight, Some(2));
        assert_eq!(out[0].1.ewma_ms, Some(3.5));
        assert_eq!(out[1].0, vec!["127.0.0.1:5002".to_owned()]);
        assert_eq!(out[1].1.breaker.as_deref(), Some("open"));
        assert_eq!(
            out[1].1.last_error.as_ref().map(|e| e.kind.as_str()),
            Some("timeout")
        );
    }
}
