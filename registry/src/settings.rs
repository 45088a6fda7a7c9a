//! Registry configuration: the raw serde struct read from `config/registry.toml` and
//! `HOTEL_REGISTRY__*`, and its validation.

use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

/// Everything `hotel registry` can be told. Defaults suit a local cluster.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Instance name used in logs and traces.
    pub instance: String,
    /// Bearer token every endpoint except `/healthz` and `/readyz` requires. Without one
    /// the registry runs open, and only when it listens on loopback (see [`Settings::check`]).
    pub token: Option<String>,
    /// Lease given to a registration that does not ask for one.
    #[serde(with = "humantime_serde")]
    pub default_lease: Duration,
    /// Shortest lease a registration may ask for.
    #[serde(with = "humantime_serde")]
    pub min_lease: Duration,
    /// Longest lease a registration may ask for.
    #[serde(with = "humantime_serde")]
    pub max_lease: Duration,
    /// How long a blocking watch waits when the request names no `wait`.
    #[serde(with = "humantime_serde")]
    pub default_wait: Duration,
    /// Longest `wait` honoured; longer ones are clamped to it (as Consul does).
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    /// How long in-flight requests get to finish after the shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Most instances held at once, over all services.
    pub max_instances: usize,
    /// Most distinct service names known at once (watching a name makes it known).
    pub max_services: usize,
    /// Most metadata entries per instance.
    pub max_metadata_keys: usize,
    /// Longest metadata value, in bytes.
    pub max_metadata_value_len: usize,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Bearer token of the fault control endpoint (`/admin/fault`, loopback only);
    /// unset: no endpoint, no faults. `hotel up` sets a fresh one per run.
    #[serde(default)]
    pub fault_token: Option<String>,
    /// Mutual TLS with the other components (`[internal_tls]`); off by default.
    #[serde(default)]
    pub internal_tls: hotel_common::tls::internal::InternalTlsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8761)),
            instance: "registry".to_owned(),
            token: None,
            default_lease: Duration::from_secs(3),
            min_lease: Duration::from_millis(500),
            max_lease: Duration::from_secs(300),
            default_wait: Duration::from_secs(30),
            max_wait: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            max_instances: 10_000,
            max_services: 1_000,
            max_metadata_keys: 32,
            max_metadata_value_len: 512,
            body_limit: 4 * 1024,
            fault_token: None,
            internal_tls: Default::default(),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Written out so that the token never reaches a log line.
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("instance", &self.instance)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("default_lease", &self.default_lease)
            .field("min_lease", &self.min_lease)
            .field("max_lease", &self.max_lease)
            .field("default_wait", &self.default_wait)
            .field("max_wait", &self.max_wait)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_instances", &self.max_instances)
            .field("max_services", &self.max_services)
            .field("max_metadata_keys", &self.max_metadata_keys)
            .field("max_metadata_value_len", &self.max_metadata_value_len)
            .field("body_limit", &self.body_limit)
            .field(
                "fault_token",
                &self.fault_token.as_ref().map(|_| "<redacted>"),
            )
            .field("internal_tls", &self.internal_tls)
            .finish()
    }
}

impl Settings {
    /// Rejects impossible combinations, naming the key. An empty token counts as none.
    ///
    /// Without a token the registry refuses to listen on anything but loopback: like a
    /// Consul dev agent it is open to local processes only, and a registry reachable from
    /// a network must not let anyone register an instance that receives real traffic.
    pub fn check(mut self) -> Result<Settings, String> {
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            self.token = None;
        }
        if self.token.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "token: required when listening on {} (not loopback); set HOTEL_REGISTRY__TOKEN",
                self.listen
            ));
        }
        if self.min_lease.is_zero() || self.min_lease > self.max_lease {
            return Err("min_lease: must be above zero and at most max_lease".to_owned());
        }
        if self.default_lease < self.min_lease || self.default_lease > self.max_lease {
            return Err("default_lease: must lie between min_lease and max_lease".to_owned());
        }
        if self.default_wait.is_zero() || self.default_wait > self.max_wait {
            return Err("default_wait: must be above zero and at most max_wait".to_owned());
        }
        if self.max_instances == 0 {
            return Err("max_instances: must be at least 1".to_owned());
        }
        if self.max_services == 0 {
            return Err("max_services: must be at least 1".to_owned());
        }
        if self.body_limit < 256 {
            return Err("body_limit: must be at least 256 bytes".to_owned());
        }
        Ok(self)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_open_registry_may_only_listen_on_loopback() {
        let open_public = Settings {
            listen: "0.0.0.0:8761".parse().unwrap(),
            ..Settings::default()
        };
        let err = open_public.check().unwrap_err();
        assert!(err.starts_with("token"), "{err}");
        assert!(Settings::default().check().is_ok());
        let guarded = Settings {
            listen: "0.0.0.0:8761".parse().unwrap(),
            token: Some("s3cret".into()),
            ..Settings::default()
        };
        assert!(guarded.check().is_ok());
    }

    #[test]
    fn the_shipped_config_file_lists_every_key_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/registry.toml");
        hotel_testkit::assert_config_file_lists_the_defaults::<Settings>(&path);
    }

    #[test]
    fn the_token_comes_from_the_environment() {
        let loaded: Settings = hotel_common::config::load_with_env(
            &Settings::default(),
            None,
            "registry",
            &[
                ("HOTEL_REGISTRY__TOKEN", "abc"),
                ("HOTEL_REGISTRY__DEFAULT_LEASE", "5s"),
            ],
        )
        .unwrap();
        assert_eq!(loaded.token.as_deref(), Some("abc"));
        assert_eq!(loaded.default_lease, Duration::from_secs(5));
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let s = Settings {
            token: Some("s3cret".into()),
            ..Settings::default()
        };
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn a_blank_token_counts_as_none() {
        let s = Settings {
            token: Some("  ".into()),
            ..Settings::default()
        }
        .check()
        .unwrap();
        assert_eq!(s.token, None);
    }

    #[test]
    fn a_default_lease_outside_the_bounds_names_the_key() {
        let s = Settings {
            default_lease: Duration::from_secs(301),
            ..Settings::default()
        };
        assert!(s.check().unwrap_err().starts_with("default_lease"));
    }
}
