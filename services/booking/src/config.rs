//! The booking service's settings: defaults < `config/booking.toml` < `HOTEL_BOOKING__*`
//! environment < command line.

use hotel_common::tls::internal::InternalTlsSettings;
use hotel_common::{
    config::RegistryLink,
    db::{DatabaseSettings, Location},
    process::ProcessArgs,
};
use hotel_events::EventSettings;
use hotel_service::ServiceConfig;
use hotel_upstream::{PolicySettings, ServicePolicy};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Everything the booking service can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// `HOST:PORT` (or `HOST`) to register instead of the bind address; unset: the bind
    /// address, or for `0.0.0.0`/`::` the host's first non-loopback address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory holding `booking.db`; replicas given the same directory share the file.
    pub data_dir: PathBuf,
    /// Instance name such as `booking-2`, for logs, traces and the registry.
    pub instance: String,
    /// How long in-flight requests may finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Base URL of the customer service (`http://127.0.0.1:7001`); the service's own paths
    /// (`/customers/{id}`) are appended. Leave both URLs unset and set `registry.url` to
    /// call every discovered replica through the resilient upstream client instead.
    #[serde(default)]
    pub customer_url: Option<String>,
    /// Base URL of the room service; `/rooms...` is appended.
    #[serde(default)]
    pub room_url: Option<String>,
    /// Whole-call timeout of one request to customer or room.
    #[serde(with = "humantime_serde")]
    pub peer_timeout: Duration,
    /// TCP connect timeout to customer or room: a dead peer is refused fast.
    #[serde(with = "humantime_serde")]
    pub peer_connect_timeout: Duration,
    /// Bytes booking's cache of room and customer answers may take (with `registry.url`,
    /// where the resilient client is used); 0 turns it off.
    pub peer_cache_max_bytes: u64,
    /// How long an `Idempotency-Key` and its stored response are kept (24 h, like Stripe).
    #[serde(with = "humantime_serde")]
    pub idempotency_retention: Duration,
    /// How long a duplicate of a request still in flight (a client retry, a gateway
    /// hedge) waits for the first one to finish and replays its answer, before giving up
    /// with 409.
    #[serde(with = "humantime_serde")]
    pub idempotency_wait: Duration,
    /// How far ahead a stay may begin: a `check_in` more than this many days after today
    /// (UTC) is refused with 422 naming `check_in` (730, two years, by default).
    pub max_days_ahead: u32,
    /// The registry this instance registers with, when `registry.url` is set.
    #[serde(default)]
    pub registry: RegistryLink,
    /// How events are published and consumed (`[events]`): booking reads customer's
    /// and room's feeds (at `customer_url`/`room_url` when set, else through the
    /// registry).
    #[serde(default)]
    pub events: EventSettings,
    /// Bearer token of the fault control endpoint (`/admin/fault`, loopback only);
    /// unset: no endpoint, no faults. `hotel up` sets a fresh one per run.
    #[serde(default)]
    pub fault_token: Option<String>,
    /// The service's database (`[database]`): a SQLite file in `data_dir` (default) or
    /// PostgreSQL (`url = "postgres://..."`), with the pool's size and acquire timeout.
    #[serde(default)]
    pub database: DatabaseSettings,
    /// Mutual TLS with the other components (`[internal_tls]`); off by default.
    #[serde(default)]
    pub internal_tls: InternalTlsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            data_dir: PathBuf::from(".hotel"),
            instance: "booking".to_owned(),
            shutdown_grace: Duration::from_secs(10),
            customer_url: None,
            room_url: None,
            peer_timeout: Duration::from_secs(2),
            peer_connect_timeout: Duration::from_millis(500),
            peer_cache_max_bytes: crate::directory::DEFAULT_PEER_CACHE_BYTES,
            idempotency_retention: Duration::from_secs(24 * 60 * 60),
            idempotency_wait: Duration::from_secs(2),
            max_days_ahead: 730,
            registry: RegistryLink::default(),
            events: EventSettings::default(),
            fault_token: None,
            database: DatabaseSettings::default(),
            internal_tls: InternalTlsSettings::default(),
        }
    }
}

impl Settings {
    /// The database file: `<data_dir>/booking.db`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("booking.db")
    }

    /// Where the database is: `database.url`, else [`Self::database_path`]; an error
    /// names the bad key.
    pub fn database_location(&self) -> Result<Location, String> {
        self.database.location(self.database_path())
    }
}

// What the shared service runner reads; the keys themselves stay in `Settings` (see
// `hotel_service::settings` on why booking does not flatten `ServiceSettings`).
impl ServiceConfig for Settings {
    const ROLE: &'static str = crate::ROLE;
    fn listen(&self) -> SocketAddr {
        self.listen
    }
    fn advertise(&self) -> Option<&str> {
        self.advertise.as_deref()
    }
    fn instance(&self) -> &str {
        &self.instance
    }
    fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
    fn registry(&self) -> &RegistryLink {
        &self.registry
    }
    fn events(&self) -> &EventSettings {
        &self.events
    }
    fn fault_token(&self) -> Option<&str> {
        self.fault_token.as_deref()
    }
    fn internal_tls(&self) -> &InternalTlsSettings {
        &self.internal_tls
    }
    fn apply(&mut self, args: &ProcessArgs) {
        hotel_service::settings::apply_args(
            args,
            &mut self.listen,
            &mut self.advertise,
            &mut self.data_dir,
            &mut self.instance,
        );
    }
}

/// The upstream policy of booking's calls to customer and room, validated: the built-in
/// policy with `peer_timeout` as the overall deadline of one call and half of it per try
/// (customer and room answer from one SQLite lookup: half the deadline per try leaves
/// room for a retry or a hedge on another instance). The error names `peer_timeout`.
pub fn peer_policy(peer_timeout: Duration) -> Result<ServicePolicy, String> {
    let overrides = PolicySettings {
        deadline: Some(peer_timeout),
        per_try_timeout: Some(peer_timeout / 2),
        ..PolicySettings::default()
    };
    PolicySettings::builtin()
        .overlaid(&overrides)
        .validate("peer_timeout")
        .map_err(|e| e.to_string())
}

/// Checks a peer base URL from the settings, naming the key when it is missing or wrong.
pub(crate) fn peer_url(key: &str, value: Option<&str>) -> Result<reqwest::Url, String> {
    let env = format!("HOTEL_BOOKING__{}", key.to_ascii_uppercase());
    let raw = value.ok_or_else(|| {
        format!(
            "{key} is not set (config key {key} or {env}; or set only registry.url to discover it)"
        )
    })?;
    let url = reqwest::Url::parse(raw).map_err(|e| format!("{key} {raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{key} {raw:?} must be an http(s) URL with a host"));
    }
    Ok(url)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn env_sets_peer_urls_and_durations() {
        let s: Settings = hotel_common::config::load_with_env(
            &Settings::default(),
            None,
            "booking",
            &[
                ("HOTEL_BOOKING__CUSTOMER_URL", "http://127.0.0.1:1"),
                ("HOTEL_BOOKING__PEER_TIMEOUT", "750ms"),
                ("HOTEL_BOOKING__MAX_DAYS_AHEAD", "30"),
            ],
        )
        .unwrap();
        assert_eq!(s.max_days_ahead, 30);
        assert_eq!(s.customer_url.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(s.peer_timeout, Duration::from_millis(750));
        assert_eq!(s.idempotency_retention, Duration::from_secs(86_400));
    }

    #[test]
    fn the_shipped_config_file_lists_every_key_with_its_default() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/booking.toml");
        hotel_testkit::assert_config_file_lists_the_defaults::<Settings>(&path);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_by_name() {
        let dir = hotel_testkit::TempDir::new("booking-config");
        let path = dir.join("booking.toml");
        std::fs::write(&path, "room_ulr = \"http://x\"\n").unwrap();
        let err =
            hotel_common::config::load_with_env(&Settings::default(), Some(&path), "booking", &[])
                .unwrap_err();
        assert!(err.to_string().contains("room_ulr"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_peer_policy_takes_its_deadline_from_peer_timeout_and_names_it_when_bad() {
        let p = peer_policy(Duration::from_secs(2)).unwrap();
        assert_eq!(p.request.deadline, Duration::from_secs(2));
        assert_eq!(p.request.per_try_timeout, Duration::from_secs(1));
        assert_eq!(p.breaker, hotel_upstream::BreakerPolicy::default());
        let e = peer_policy(Duration::ZERO).unwrap_err();
        assert!(e.starts_with("peer_timeout"), "{e}");
    }

    #[test]
    fn a_missing_or_malformed_peer_url_names_its_key() {
        let e = peer_url("room_url", None).unwrap_err();
        assert!(
            e.contains("room_url") && e.contains("HOTEL_BOOKING__ROOM_URL"),
            "{e}"
        );
        let e = peer_url("customer_url", Some("not a url")).unwrap_err();
        assert!(e.contains("customer_url"), "{e}");
        let e = peer_url("customer_url", Some("ftp://x")).unwrap_err();
        assert!(e.contains("http"), "{e}");
        assert!(peer_url("customer_url", Some("http://127.0.0.1:9/")).is_ok());
    }
}
