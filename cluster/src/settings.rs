//! `hotel up` configuration: topology, ports, data directory and restart policy, from
//! `config/hotel.toml` (defaults < file < `HOTEL_CLUSTER__*` environment < flags).

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

/// A role the supervisor can spawn; the order of the variants is the start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The service registry (one instance).
    Registry,
    /// The customer service.
    Customer,
    /// The room service.
    Room,
    /// The booking service (calls customer and room, so it starts after them).
    Booking,
    /// The gateway (one instance, started last so it finds every service registered).
    Gateway,
}

impl Role {
    /// The three domain services, in start order.
    pub const SERVICES: [Role; 3] = [Role::Customer, Role::Room, Role::Booking];

    /// Every role, in start order.
    pub const ALL: [Role; 5] = [
        Role::Registry,
        Role::Customer,
        Role::Room,
        Role::Booking,
        Role::Gateway,
    ];

    /// The lower-case name used in instance names, env vars and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Registry => "registry",
            Role::Customer => "customer",
            Role::Room => "room",
            Role::Booking => "booking",
            Role::Gateway => "gateway",
        }
    }

    /// Whether this is a domain service (replicated, ephemeral ports).
    pub fn is_service(self) -> bool {
        matches!(self, Role::Customer | Role::Room | Role::Booking)
    }

    /// The `hotel` arguments that run this role.
    pub fn command(self) -> Vec<&'static str> {
        match self {
            Role::Registry => vec!["registry"],
            Role::Gateway => vec!["gateway"],
            service => vec!["service", service.as_str()],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; expected one of registry, customer, room, booking, gateway"
                )
            })
    }
}

/// Replicas per service, as in `config/hotel.toml` `[replicas]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replicas {
    /// Customer service replicas.
    pub customer: u32,
    /// Room service replicas.
    pub room: u32,
    /// Booking service replicas.
    pub booking: u32,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas {
            customer: 2,
            room: 2,
            booking: 2,
        }
    }
}

impl Replicas {
    /// The count for `role` (0 for the singletons' non-service roles).
    pub fn of(&self, role: Role) -> u32 {
        match role {
            Role::Customer => self.customer,
            Role::Room => self.room,
            Role::Booking => self.booking,
            Role::Registry | Role::Gateway => 1,
        }
    }

    /// Applies a `--replicas` flag on top of these counts.
    pub fn apply(&mut self, spec: &ReplicaSpec) {
        if let Some(all) = spec.all {
            *self = Replicas {
                customer: all,
                room: all,
                booking: all,
            };
        }
        for (role, n) in &spec.per {
            match role {
                Role::Customer => self.customer = *n,
                Role::Room => self.room = *n,
                Role::Booking => self.booking = *n,
                Role::Registry | Role::Gateway => {}
            }
        }
    }
}

/// The `--replicas` flag: `3` (every service) or `room=3,booking=2` (those services).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaSpec {
    /// A count for every service.
    pub all: Option<u32>,
    /// Counts for named services.
    pub per: BTreeMap<Role, u32>,
}

/// The most replicas of one service `hotel up` starts: beyond this a laptop thrashes.
pub const MAX_REPLICAS: u32 = 16;

fn parse_count(s: &str, what: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{what}: {s:?} is not a whole number"))?;
    if n > MAX_REPLICAS {
        return Err(format!(
            "{what}: {n} is more than the maximum of {MAX_REPLICAS}"
        ));
    }
    Ok(n)
}

impl FromStr for ReplicaSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut spec = ReplicaSpec::default();
        if !s.contains('=') {
            let n = parse_count(s, "replicas")?;
            if n == 0 {
                return Err("replicas: a cluster needs at least 1 replica of each service".into());
            }
            spec.all = Some(n);
            return Ok(spec);
        }
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, count) = part
                .split_once('=')
                .ok_or_else(|| format!("replicas: {part:?} is not SERVICE=N"))?;
            let role: Role = name.trim().parse()?;
            if !role.is_service() {
                return Err(format!("replicas: {role} always runs exactly one instance"));
            }
            spec.per.insert(role, parse_count(count, role.as_str())?);
        }
        Ok(spec)
    }
}

/// Fixed ports on 127.0.0.1; 0 picks a free port (what tests do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// The gateway's public port.
    pub gateway: u16,
    /// The gateway's admin port (status, metrics).
    pub admin: u16,
    /// The registry's port.
    pub registry: u16,
    /// The supervisor's control port (what `hotel kill|stop|start|...` talk to).
    pub control: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            gateway: 8080,
            admin: 9901,
            registry: 8761,
            control: 0,
        }
    }
}

/// The `hotel up` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpSettings {
    /// Databases, logs, `cluster.json` and the lock file go here.
    pub data_dir: PathBuf,
    /// Replicas per service.
    pub replicas: Replicas,
    /// Ports on loopback.
    pub ports: Ports,
    /// Restart instances that exit without being asked to (crash, `hotel kill`).
    pub restart: bool,
    /// Wait before restarting a crashed instance, so a crash loop does not spin.
    #[serde(with = "humantime_serde")]
    pub restart_delay: Duration,
    /// How long one instance may take to print its address and answer `/readyz`.
    #[serde(with = "humantime_serde")]
    pub ready_timeout: Duration,
    /// How long a stopping instance may drain before it is killed.
    #[serde(with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Registry token; generated per run when empty.
    pub registry_token: String,
    /// Gateway admin token; generated per run when empty.
    pub admin_token: String,
    /// Development API key for the gateway; generated per run when empty.
    pub api_key: String,
}

impl Default for UpSettings {
    fn default() -> Self {
        UpSettings {
            data_dir: PathBuf::from(".hotel"),
            replicas: Replicas::default(),
            ports: Ports::default(),
            restart: false,
            restart_delay: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            registry_token: String::new(),
            admin_token: String::new(),
            api_key: String::new(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_sets_every_service() {
        let spec: ReplicaSpec = "3".parse().unwrap();
        let mut r = Replicas::default();
        r.apply(&spec);
        assert_eq!(
            r,
            Replicas {
                customer: 3,
                room: 3,
                booking: 3
            }
        );
    }

    #[test]
    fn named_counts_override_only_those_services() {
        let spec: ReplicaSpec = "room=3,booking=1".parse().unwrap();
        let mut r = Replicas::default();
        r.apply(&spec);
        assert_eq!(
            r,
            Replicas {
                customer: 2,
                room: 3,
                booking: 1
            }
        );
    }

    #[test]
    fn replica_specs_that_cannot_run_are_rejected_with_the_reason() {
        for (bad, needle) in [
            ("0", "at least 1"),
            ("lots", "not a whole number"),
            ("hotel=2", "unknown role"),
            ("gateway=2", "exactly one"),
            ("room", "not a whole number"),
            ("room=99", "maximum"),
        ] {
            let err = bad.parse::<ReplicaSpec>().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn the_shipped_config_file_lists_every_key_with_its_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hotel.toml");
        hotel_testkit::assert_config_file_lists_the_defaults::<UpSettings>(&path);
    }

    #[test]
    fn environment_overrides_nested_ports() {
        let s: UpSettings = hotel_common::config::load_with_env(
            &UpSettings::default(),
            None,
            "cluster",
            &[
                ("HOTEL_CLUSTER__PORTS__GATEWAY", "0"),
                ("HOTEL_CLUSTER__RESTART", "true"),
            ],
        )
        .unwrap();
        assert_eq!(s.ports.gateway, 0);
        assert!(s.restart);
    }
}
