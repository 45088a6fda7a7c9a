//! What the domain services (customer, room, booking) are configured with alike: where to
//! listen, where their database lives, their instance name, how long to drain and where
//! to register. [`ServiceSettings`] is the whole configuration of a service that needs
//! nothing more (customer, room); [`ServiceConfig`] is what a service runner needs to
//! know of any service's settings, including booking's larger ones.
//!
//! Booking keeps its own struct rather than `#[serde(flatten)]`ing this one: serde does
//! not support `flatten` together with `deny_unknown_fields`, and a misspelt key must
//! stay an error naming the key.

use hotel_common::{config::RegistryLink, process::ProcessArgs};
use hotel_events::EventSettings;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{marker::PhantomData, net::SocketAddr, path::PathBuf, time::Duration};

/// A domain service's role, as a type: its name is the config section, the env var
/// prefix (`HOTEL_<ROLE>__`), the span service name and the database file stem.
pub trait Role: Send + Sync + 'static {
    /// The role name, such as `room`.
    const NAME: &'static str;
}

/// Everything a customer or room instance is configured with (`[<role>]`-scoped TOML
/// keys and `HOTEL_<ROLE>__<KEY>` environment variables over these defaults).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct ServiceSettings<R: Role> {
    /// Address to listen on; port 0 picks a free port (the default: replicas share a host).
    pub listen: SocketAddr,
    /// Directory holding `<role>.db`, shared by every replica.
    pub data_dir: PathBuf,
    /// Instance name such as `room-2`, used in logs, traces and the registry.
    pub instance: String,
    /// How long in-flight requests may run after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Where to register; not registering at all when `registry.url` is unset.
    pub registry: RegistryLink,
    /// How events are published and consumed (`[events]`).
    pub events: EventSettings,
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
            data_dir: self.data_dir.clone(),
            instance: self.instance.clone(),
            shutdown_grace: self.shutdown_grace,
            registry: self.registry.clone(),
            events: self.events.clone(),
            role: PhantomData,
        }
    }
}

impl<R: Role> PartialEq for ServiceSettings<R> {
    fn eq(&self, other: &Self) -> bool {
        self.listen == other.listen
            && self.data_dir == other.data_dir
            && self.instance == other.instance
            && self.shutdown_grace == other.shutdown_grace
            && self.registry == other.registry
            && self.events == other.events
    }
}

impl<R: Role> Eq for ServiceSettings<R> {}

impl<R: Role> Default for ServiceSettings<R> {
    fn default() -> Self {
        ServiceSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: PathBuf::from(".hotel"),
            instance: R::NAME.to_owned(),
            shutdown_grace: Duration::from_secs(10),
            registry: RegistryLink::default(),
            events: EventSettings::default(),
            role: PhantomData,
        }
    }
}

impl<R: Role> ServiceSettings<R> {
    /// The database file every replica opens: `<data_dir>/<role>.db`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(format!("{}.db", R::NAME))
    }

    /// Applies the command-line options, which win over file and environment.
    pub fn apply(&mut self, args: &ProcessArgs) {
        apply_args(
            args,
            &mut self.listen,
            &mut self.data_dir,
            &mut self.instance,
        );
    }
}

/// Applies `--listen`, `--data-dir` and `--name`, which win over file and environment, to
/// the settings fields they override.
pub fn apply_args(
    args: &ProcessArgs,
    listen: &mut SocketAddr,
    data_dir: &mut PathBuf,
    instance: &mut String,
) {
    if let Some(addr) = args.listen {
        *listen = addr;
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
    /// Instance name.
    fn instance(&self) -> &str;
    /// How long in-flight requests may run after a shutdown signal.
    fn shutdown_grace(&self) -> Duration;
    /// Where to register.
    fn registry(&self) -> &RegistryLink;
    /// How events are published and consumed.
    fn events(&self) -> &EventSettings;
    /// Applies the command-line options, which win over file and environment.
    fn apply(&mut self, args: &ProcessArgs);
}

impl<R: Role> ServiceConfig for ServiceSettings<R> {
    const ROLE: &'static str = R::NAME;
    fn listen(&self) -> SocketAddr {
        self.listen
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
                ("HOTEL_ROOM__REGISTRY__URL", "http://127.0.0.1:8761"),
                ("HOTEL_ROOM__REGISTRY__HEARTBEAT", "500ms"),
            ],
        )
        .unwrap();
        assert_eq!(s.shutdown_grace, Duration::from_secs(3));
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
    fn a_file_with_every_key_loads() {
        let path = std::env::temp_dir().join(format!("hotel-room-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7100\"\ndata_dir = \"/var/lib/hotel\"\ninstance = \"room-1\"\n\
             shutdown_grace = \"2s\"\n[registry]\nurl = \"http://127.0.0.1:8761\"\n\
             token = \"t\"\nheartbeat = \"2s\"\nlease = \"6s\"\n",
        )
        .unwrap();
        let loaded = load_with_env(&Settings::default(), Some(&path), "room", &[]);
        let _ = std::fs::remove_file(&path);
        let s: Settings = loaded.unwrap();
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
            data_dir: Some("/tmp/x".into()),
            instance: Some("room-3".into()),
            ..ProcessArgs::default()
        };
        s.apply(&args);
        assert_eq!(s.listen.port(), 7001);
        assert_eq!(s.database_path(), PathBuf::from("/tmp/x/room.db"));
        assert_eq!(s.instance, "room-3");
    }
}
