//! What the domain services (customer, room, booking) are configured with alike: where to
//! listen, where their database lives, their instance name, how long to drain and where
//! to register. [`ServiceSettings`] is the whole configuration of a service that needs
//! nothing more (customer, room); [`ServiceConfig`] is what a service runner needs to
//! know of any service's settings, including booking's larger ones.
//!
//! Booking keeps its own struct rather than `#[serde(flatten)]`ing this one: serde does
//! not support `flatten` together with `deny_unknown_fields`, and a misspelt key must
//! stay an error naming the key.

use hotel_common::tls::internal::InternalTlsSettings;
use hotel_common::{
    conditional::CacheControl,
    config::RegistryLink,
    db::{DatabaseSettings, Location},
    process::ProcessArgs,
};
use hotel_events::EventSettings;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{fmt::Debug, marker::PhantomData, net::SocketAddr, path::PathBuf, time::Duration};

/// A domain service's role, as a type: its name is the config section, the env var
/// prefix (`HOTEL_<ROLE>__`), the span service name and the database file stem.
pub trait Role: Send + Sync + 'static {
    /// The role name, such as `room`.
    const NAME: &'static str;
    /// The `[cache]` keys of this service: [`SharedCache`] for a public resource (rooms),
    /// [`PersonalData`] (no keys: always `private, no-store`) for personal data.
    type Cache: CacheSettings;
}

/// What a service's `[cache]` section says: the `Cache-Control` of its resources.
pub trait CacheSettings:
    Serialize + DeserializeOwned + Default + Clone + PartialEq + Eq + Debug + Send + Sync + 'static
{
    /// The `Cache-Control` every read of the service answers with.
    fn cache_control(&self) -> CacheControl;
}

/// `[cache]` of a public resource (rooms): shared caches such as the gateway's may keep
/// an answer `max_age` and serve it for `stale_if_error` more when the service fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedCache {
    /// How long any cache may answer with a stored copy (`max-age`, whole seconds).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long past that a cache may still serve it when the service fails
    /// (`stale-if-error`, RFC 5861; 0 leaves the directive out).
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
}

impl Default for SharedCache {
    fn default() -> Self {
        SharedCache {
            max_age: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(300),
        }
    }
}

impl CacheSettings for SharedCache {
    fn cache_control(&self) -> CacheControl {
        CacheControl::shared(self.max_age, self.stale_if_error)
    }
}

/// `[cache]` of personal data (customers, bookings): no keys, because no setting may
/// put personal data in a shared cache; always `private, no-store`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {}

impl CacheSettings for PersonalData {
    fn cache_control(&self) -> CacheControl {
        CacheControl::personal()
    }
}

/// Everything a customer or room instance is configured with (`[<role>]`-scoped TOML
/// keys and `HOTEL_<ROLE>__<KEY>` environment variables over these defaults).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct ServiceSettings<R: Role> {
    /// Address to listen on; port 0 picks a free port (the default: replicas share a host).
    pub listen: SocketAddr,
    /// `HOST:PORT` (or `HOST`, with the bound port) to register, for peers to reach this
    /// instance at; unset: the bind address, or for `0.0.0.0`/`::` the host's first
    /// non-loopback address (the container or pod IP). See `hotel_common::advertise`.
    #[serde(default)]
    pub advertise: Option<String>,
    /// Directory holding `<role>.db`, shared by every replica.
    pub data_dir: PathBuf,
    /// Instance name such as `room-2`, used in logs, traces and the registry.
    pub instance: String,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Where to register; not registering at all when `registry.url` is unset.
    pub registry: RegistryLink,
    /// The `Cache-Control` of the service's answers (see [`Role::Cache`]).
    pub cache: R::Cache,
    /// How events are published and consumed (`[events]`).
    pub events: EventSettings,
    /// Bearer token of the fault control endpoint (`/admin/fault`, loopback only);
    /// unset: no endpoint, no faults. `hotel up` sets a fresh one per run.
    #[serde(default)]
    pub fault_token: Option<String>,
    /// The service's database (`[database]`): a SQLite file in `data_dir` (default) or
    /// PostgreSQL (`url = "postgres://..."`), with the pool's size and acquire timeout.
    pub database: DatabaseSettings,
    /// Mutual TLS with the other components (`[internal_tls]`); off by default.
    pub internal_tls: InternalTlsSettings,
    /// Which service these settings are for; no value, never read from config.
    #[serde(skip)]
    pub role: PhantomData<R>,
}

// Written out rather than derived: derives would demand `R: Clone + PartialEq`, and `R`
// is only a marker.
impl<R: Role> Clone for ServiceSettings<R> {
    fn clone(&self) -> Self {
        ServiceSettings {
            listen: self.listen,
            advertise: self.advertise.clone(),
            data_dir: self.data_dir.clone(),
            instance: self.instance.clone(),
            shutdown_grace: self.shutdown_grace,
            registry: self.registry.clone(),
            cache: self.cache.clone(),
            events: self.events.clone(),
            fault_token: self.fault_token.clone(),
            database: self.database.clone(),
            internal_tls: self.internal_tls.clone(),
            role: PhantomData,
        }
    }
}

impl<R: Role> PartialEq for ServiceSettings<R> {
    fn eq(&self, other: &Self) -> bool {
        self.listen == other.listen
            && self.advertise == other.advertise
            && self.data_dir == other.data_dir
            && self.instance == other.instance
            && self.shutdown_grace == other.shutdown_grace
            && self.registry == other.registry
            && self.cache == other.cache
            && self.events == other.events
            && self.fault_token == other.fault_token
            && self.database == other.database
            && self.internal_tls == other.internal_tls
    }
}

impl<R: Role> Eq for ServiceSettings<R> {}

impl<R: Role> Default for ServiceSettings<R> {
    fn default() -> Self {
        ServiceSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            data_dir: PathBuf::from(".hotel"),
            instance: R::NAME.to_owned(),
            shutdown_grace: Duration::from_secs(10),
            registry: RegistryLink::default(),
            cache: R::Cache::default(),
            events: EventSettings::default(),
            fault_token: None,
            database: DatabaseSettings::default(),
            internal_tls: InternalTlsSettings::default(),
            role: PhantomData,
        }
    }
}

impl<R: Role> ServiceSettings<R> {
    /// The database file every replica opens: `<data_dir>/<role>.db`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(format!("{}.db", R::NAME))
    }

    /// Where the database is: `database.url`, else [`Self::database_path`]; an error
    /// names the bad key.
    pub fn database_location(&self) -> Result<Location, String> {
        self.database.location(self.database_path())
    }

    /// Applies the command-line options, which win over file and environment.
    pub fn apply(&mut self, args: &ProcessArgs) {
        apply_args(
            args,
            &mut self.listen,
            &mut self.advertise,
            &mut self.data_dir,
            &mut self.instance,
        );
    }
}

/// Applies `--listen`, `--advertise`, `--data-dir` and `--name`, which win over file and
/// environment, to the settings fields they override.
pub fn apply_args(
    args: &ProcessArgs,
    listen: &mut SocketAddr,
    advertise: &mut Option<String>,
    data_dir: &mut PathBuf,
    instance: &mut String,
) {
    if let Some(addr) = args.listen {
        *listen = addr;
    }
    if let Some(addr) = &args.advertise {
        *advertise = Some(addr.clone());
    }
    if let Some(dir) = &args.data_dir {
        *data_dir = dir.clone();
    }
    if let Some(name) = &args.instance {
        *instance = name.clone();
    }
}

/// What a service runner needs of a domain service's settings.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default + Send + 'static {
    /// The role: config section, env var prefix, registry service name.
    const ROLE: &'static str;
    /// Address to listen on.
    fn listen(&self) -> SocketAddr;
    /// What to register instead of the bind address, if anything (`HOST:PORT` or `HOST`).
    fn advertise(&self) -> Option<&str>;
    /// Instance name.
    fn instance(&self) -> &str;
    /// How long in-flight requests may run after a shutdown signal.
    fn shutdown_grace(&self) -> Duration;
    /// Where to register.
    fn registry(&self) -> &RegistryLink;
    /// How events are published and consumed.
    fn events(&self) -> &EventSettings;
    /// The fault control endpoint's token, if it has one.
    fn fault_token(&self) -> Option<&str>;
    /// Mutual TLS with the other components.
    fn internal_tls(&self) -> &InternalTlsSettings;
    /// Applies the command-line options, which win over file and environment.
    fn apply(&mut self, args: &ProcessArgs);
}

impl<R: Role> ServiceConfig for ServiceSettings<R> {
    const ROLE: &'static str = R::NAME;
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
        ServiceSettings::apply(self, args);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hotel_common::config::load_with_env;

    /// A role for the tests; every role behaves the same.
    #[derive(Debug)]
    struct Room;

    impl Role for Room {
        const NAME: &'static str = "room";
        type Cache = SharedCache;
    }

    type Settings = ServiceSettings<Room>;

    #[test]
    fn environment_overrides_defaults_and_unknown_keys_fail() {
        let s: Settings = load_with_env(
            &Settings::default(),
            None,
            "room",
            &[
                ("HOTEL_ROOM__SHUTDOWN_GRACE", "3s"),
                ("HOTEL_ROOM__ADVERTISE", "room-1:7000"),
                ("HOTEL_ROOM__REGISTRY__URL", "http://127.0.0.1:8761"),
                ("HOTEL_ROOM__REGISTRY__HEARTBEAT", "500ms"),
            ],
        )
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
        assert_eq!(s.advertise.as_deref(), Some("room-1:7000"));
        assert_eq!(s.registry.url.as_deref(), Some("http://127.0.0.1:8761"));
        assert_eq!(s.registry.heartbeat, Duration::from_millis(500));
        assert_eq!(s.registry.lease, Duration::from_secs(3));
        assert_eq!(s.data_dir, PathBuf::from(".hotel"));
        let err = load_with_env(
            &Settings::default(),
            None,
            "room",
            &[("HOTEL_ROOM__LISTNE", "x")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn cache_keys_make_the_cache_control_and_personal_data_takes_none() {
        let s: Settings = load_with_env(
            &Settings::default(),
            None,
            "room",
            &[
                ("HOTEL_ROOM__CACHE__MAX_AGE", "30s"),
                ("HOTEL_ROOM__CACHE__STALE_IF_ERROR", "0s"),
            ],
        )
        .unwrap();
        assert_eq!(s.cache.cache_control().value(), "public, max-age=30");
        assert_eq!(
            Settings::default().cache.cache_control().value(),
            "public, max-age=5, stale-if-error=300"
        );
        #[derive(Debug)]
        struct Customer;
        impl Role for Customer {
            const NAME: &'static str = "customer";
            type Cache = PersonalData;
        }
        let err = load_with_env(
            &ServiceSettings::<Customer>::default(),
            None,
            "customer",
            &[("HOTEL_CUSTOMER__CACHE__MAX_AGE", "30s")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("max_age"), "{err}");
        assert_eq!(
            ServiceSettings::<Customer>::default()
                .cache
                .cache_control()
                .value(),
            "private, no-store"
        );
    }

    #[test]
    fn a_file_with_every_key_loads() {
        let dir = hotel_testkit::TempDir::new("runtime-settings");
        let path = dir.join("room.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7100\"\nadvertise = \"room-1:7100\"\ndata_dir = \"/var/lib/hotel\"\ninstance = \"room-1\"\n\
             shutdown_grace = \"2s\"\n[registry]\nurl = \"http://127.0.0.1:8761\"\n\
             token = \"t\"\nheartbeat = \"2s\"\nlease = \"6s\"\n",
        )
        .unwrap();
        let s: Settings = load_with_env(&Settings::default(), Some(&path), "room", &[]).unwrap();
        assert_eq!(s.listen.port(), 7100);
        assert_eq!(s.instance, "room-1");
        assert_eq!(s.shutdown_grace, Duration::from_secs(2));
        assert_eq!(s.registry.token.as_deref(), Some("t"));
        assert_eq!(s.registry.lease, Duration::from_secs(6));
    }

    #[test]
    fn command_line_wins_over_configuration() {
        let mut s = Settings::default();
        let args = ProcessArgs {
            listen: Some("127.0.0.1:7001".parse().unwrap()),
            advertise: Some("10.0.0.4".into()),
            data_dir: Some("/tmp/x".into()),
            instance: Some("room-3".into()),
            ..ProcessArgs::default()
        };
        s.apply(&args);
        assert_eq!(s.listen.port(), 7001);
        assert_eq!(s.database_path(), PathBuf::from("/tmp/x/room.db"));
        assert_eq!(s.instance, "room-3");
        assert_eq!(s.advertise.as_deref(), Some("10.0.0.4"));
    }
}
