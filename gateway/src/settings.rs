//! Gateway configuration: the raw, serde-shaped [`Settings`] (defaults < `gateway.toml` <
//! `HOTEL_GATEWAY__*` environment) and the validated [`Config`] built from it.
//!
//! Policies layer from the general to the specific: built-in defaults < `[policy]` <
//! `[services.<name>.policy]` < `[[routes]].policy`. Breaker keys describe instances, not
//! routes, so they stop at the service level; a route that sets one is refused with a
//! message naming the key. Every check happens once, in `TryFrom`, so the rest of the
//! crate works with types that cannot hold a bad combination. The policy block itself
//! and its checks are `hotel_upstream`'s ([`PolicySettings`], [`Policy`]); this module
//! layers the blocks and names the keys.

use crate::{
    auth::{AuthSettings, Keys},
    hygiene::{HeaderSettings, Hygiene},
    overload::LimitSettings,
    ratelimit::{RateLimitSettings, RateLimits},
};
use hotel_common::config::RegistryLink;
use hotel_upstream::{Origin, Policy, PolicySettings, ServicePolicy};
use http::HeaderName;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

/// Everything `hotel gateway` reads from its configuration, as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Public listener (`127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Admin listener for `/admin/status`, `/metrics`, `/healthz`, `/readyz`.
    pub admin_listen: SocketAddr,
    /// Bearer token the admin endpoints require; without one the admin listener must be
    /// on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Instance name of this gateway, for logs and traces.
    pub instance: String,
    /// Serving workers: threads with a current-thread runtime each, accepting on the one
    /// listening socket, each with its own upstream connection pool; 0 = one per core.
    pub worker_threads: usize,
    /// How long in-flight requests may finish after the shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Request bodies up to this size are buffered so they can be retried or hedged;
    /// larger ones are streamed once, unretried.
    pub retry_buffer_bytes: usize,
    /// TCP connect timeout to an instance.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle keep-alive connections to instances are closed after this long.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per instance.
    pub pool_max_idle_per_host: usize,
    /// Where instances are discovered (`url`, `token`); without a URL only the static
    /// instances under `[services]` are used.
    pub registry: RegistryLink,
    /// The default policy block.
    pub policy: PolicySettings,
    /// Routes, matched by longest path prefix.
    pub routes: Vec<RouteSettings>,
    /// Per-service settings: static instances and policy overrides.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSettings>,
    /// API keys and public paths (see [`crate::auth`]).
    #[serde(default)]
    pub auth: AuthSettings,
    /// Per-client rate limits (see [`crate::ratelimit`]).
    #[serde(default)]
    pub rate_limit: RateLimitSettings,
    /// In-flight, connection, timeout and size limits (see [`crate::overload`]).
    #[serde(default)]
    pub limits: LimitSettings,
    /// Forwarding headers, trusted proxies, stripped and sensitive headers (see
    /// [`crate::hygiene`]).
    #[serde(default)]
    pub headers: HeaderSettings,
    /// Origins whose pages may call the API (see [`crate::cors`]).
    #[serde(default)]
    pub cors: crate::cors::CorsSettings,
    /// The shared HTTP cache (see [`crate::cache`]).
    #[serde(default)]
    pub cache: crate::cache::CacheSettings,
    /// TLS on the public listener (`cert`, `key` PEM paths; see
    /// [`hotel_common::tls`]); cleartext without them.
    #[serde(default)]
    pub tls: hotel_common::tls::TlsSettings,
    /// Mutual TLS to the services and the registry (`enabled`, `ca`, `cert`, `key`; see
    /// [`hotel_common::tls::internal`]). Read at startup only: a reload keeps the
    /// identity the process started with.
    #[serde(default)]
    pub internal_tls: hotel_common::tls::internal::InternalTlsSettings,
}

/// One route: requests whose path starts with `prefix` go to `service`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Path prefix such as `/api/rooms`; matches the prefix itself and paths below it.
    pub prefix: String,
    /// Service name such as `room`.
    pub service: String,
    /// What replaces the prefix on the instance (default: the prefix without `/api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Whether the shared HTTP cache serves this route (default: yes; the RFC 9111 rules
    /// keep personal answers out, as they say `private` or `no-store`).
    #[serde(default = "yes")]
    pub cache: bool,
    /// Largest request body of this route in bytes (default: `limits.max_body_bytes`).
    /// Longer bodies get 413 from the gateway and never reach an instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Overrides of the service's policy for this route.
    #[serde(default)]
    pub policy: PolicySettings,
}

fn yes() -> bool {
    true
}

/// Settings of one service.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// Base URLs (`http://127.0.0.1:9001`) used when no registry is configured.
    #[serde(default)]
    pub instances: Vec<String>,
    /// Overrides of the default policy for every route of this service (and its breakers).
    #[serde(default)]
    pub policy: PolicySettings,
}

impl Default for Settings {
    fn default() -> Self {
        let route = |prefix: &str, service: &str| RouteSettings {
            prefix: prefix.to_owned(),
            service: service.to_owned(),
            rewrite: None,
            cache: true,
            max_body_bytes: None,
            policy: PolicySettings::default(),
        };
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9901)),
            admin_token: None,
            instance: "gateway".to_owned(),
            worker_threads: 0,
            shutdown_grace: Duration::from_secs(10),
            retry_buffer_bytes: 64 * 1024,
            connect_timeout: Duration::from_millis(500),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 64,
            registry: RegistryLink::default(),
            policy: PolicySettings::builtin(),
            routes: vec![
                route("/api/customers", "customer"),
                route("/api/rooms", "room"),
                // Creating a booking talks to two services and a database: more time per
                // try than a plain read.
                RouteSettings {
                    policy: PolicySettings {
                        per_try_timeout: Some(Duration::from_secs(4)),
                        ..PolicySettings::default()
                    },
                    ..route("/api/bookings", "booking")
                },
                route("/api/availability", "booking"),
            ],
            services: BTreeMap::new(),
            auth: Default::default(),
            rate_limit: Default::default(),
            limits: Default::default(),
            headers: Default::default(),
            cors: Default::default(),
            cache: Default::default(),
            tls: Default::default(),
            internal_tls: Default::default(),
        }
    }
}

/// A configuration that does not make sense; the message names the key.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid gateway configuration: {0}")]
pub struct InvalidConfig(pub String);

fn bad(key: impl std::fmt::Display, why: impl std::fmt::Display) -> InvalidConfig {
    InvalidConfig(format!("{key}: {why}"))
}

/// Validates a fully overlaid policy block; `key` names it in messages.
fn validate_policy(key: &str, s: &PolicySettings) -> Result<ServicePolicy, InvalidConfig> {
    s.validate(key).map_err(|e| InvalidConfig(e.0))
}

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Path prefix without a trailing `/`.
    pub prefix: String,
    /// Replacement of the prefix on the instance.
    pub rewrite: String,
    /// Service name.
    pub service: String,
    /// Whether the shared HTTP cache serves this route.
    pub cache: bool,
    /// Largest request body in bytes; longer ones get 413 before any attempt.
    pub max_body_bytes: u64,
    /// The route's policy.
    pub policy: Policy,
}

/// One validated service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Service name.
    pub name: String,
    /// Static instances (name, origin); names are `<service>-static-<n>`.
    pub instances: Vec<(String, Origin)>,
    /// The service-level policy (what a route of it starts from) and the breaker of
    /// each of its instances.
    pub policy: ServicePolicy,
}

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Public listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Admin bearer token (required unless the admin listener is on loopback).
    pub admin_token: Option<String>,
    /// Instance name.
    pub instance: String,
    /// Serving workers (0: one per core).
    pub worker_threads: usize,
    /// Drain period on shutdown.
    pub shutdown_grace: Duration,
    /// Replay buffer cap.
    pub retry_buffer_bytes: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle pooled connection lifetime.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections per instance.
    pub pool_max_idle_per_host: usize,
    /// Registry URL and token, when discovery uses the registry.
    pub registry: Option<(String, Option<String>)>,
    /// Routes, longest prefix first.
    pub routes: Vec<Route>,
    /// Services named by routes, by name.
    pub services: BTreeMap<String, ServiceConfig>,
    /// The edge protections (API keys, rate limits, overload, header hygiene), validated.
    pub edge: EdgeConfig,
    /// CORS at the edge (a tower-http layer: configuration only); `None` when no origin
    /// is allowed.
    pub cors: Option<crate::cors::EdgeCorsLayer>,
    /// `[cache]`, validated (`max_bytes = 0`: no cache).
    pub cache: crate::cache::CacheSettings,
    /// `[tls]`: both files or neither (the files are read by the listener).
    pub tls: hotel_common::tls::TlsSettings,
}

/// The edge protections, validated. Plain data: the live state built from it (the key
/// cell, rate-limit buckets, in-flight counters) belongs to the running gateway and is
/// made by [`crate::Application::build`].
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The API keys as read at startup (`[[auth.keys]]`, the keys file, the dev key).
    pub keys: Keys,
    /// `[auth]` as loaded: a reload reads the keys file again from it.
    pub auth: AuthSettings,
    /// Whether the public listener is on loopback (the dev key is accepted only then).
    pub loopback: bool,
    /// Header carrying the authenticated client name to the services.
    pub client_header: HeaderName,
    /// `[rate_limit]`.
    pub rate_limits: RateLimits,
    /// `[limits]`.
    pub limits: LimitSettings,
    /// `[headers]`.
    pub hygiene: Hygiene,
}

impl EdgeConfig {
    /// Validates the edge sections against the public listener. Errors name the key.
    /// Refuses a gateway without any API key on a non-loopback listener unless
    /// `auth.allow_anonymous` says so.
    fn validate(
        auth: &AuthSettings,
        rate_limit: &RateLimitSettings,
        limits: &LimitSettings,
        headers: &HeaderSettings,
        listen: SocketAddr,
    ) -> Result<EdgeConfig, String> {
        let loopback = listen.ip().is_loopback();
        let keys = Keys::from_settings(auth, loopback)?;
        if keys.is_empty() && !loopback && !auth.allow_anonymous {
            return Err(format!(
                "auth.keys: at least one API key is required when listen ({listen}) is not a \
                 loopback address (or set auth.allow_anonymous = true to serve without keys)"
            ));
        }
        for (i, p) in auth.public.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(format!("auth.public[{i}]: {p:?} must start with '/'"));
            }
        }
        let client_header =
            HeaderName::try_from(auth.client_header.to_ascii_lowercase()).map_err(|_| {
                format!(
                    "auth.client_header: {:?} is not a header name",
                    auth.client_header
                )
            })?;
        limits.validate()?;
        let rate_limits = RateLimits::new(rate_limit, keys.clients())?;
        let hygiene = Hygiene::from_settings(headers)?;
        Ok(EdgeConfig {
            keys,
            auth: auth.clone(),
            loopback,
            client_header,
            rate_limits,
            limits: limits.clone(),
            hygiene,
        })
    }
}

/// The largest body limit a route may have (16 MiB).
pub(crate) const MAX_BODY_LIMIT: u64 = 16 * 1024 * 1024;

fn check_prefix(key: &str, p: &str) -> Result<(), InvalidConfig> {
    if !p.starts_with('/') {
        return Err(bad(key, "must start with '/'"));
    }
    if p.len() > 1 && p.ends_with('/') {
        return Err(bad(key, "must not end with '/'"));
    }
    if p.contains("//") || p.split('/').any(|s| s == "." || s == "..") {
        return Err(bad(key, "must be a normalised path (no '//', '.', '..')"));
    }
    if !p
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
    {
        return Err(bad(
            key,
            "may hold only letters, digits, '/', '-', '_' and '.'",
        ));
    }
    Ok(())
}

impl TryFrom<Settings> for Config {
    type Error = InvalidConfig;

    fn try_from(s: Settings) -> Result<Config, InvalidConfig> {
        let admin_token = s.admin_token.filter(|t| !t.is_empty());
        if admin_token.is_none() && !s.admin_listen.ip().is_loopback() {
            return Err(bad(
                "admin_token",
                format!(
                    "is required when admin_listen ({}) is not a loopback address",
                    s.admin_listen
                ),
            ));
        }
        if admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(bad("admin_token", "must be at least 16 characters"));
        }
        if s.retry_buffer_bytes > 16 * 1024 * 1024 {
            return Err(bad("retry_buffer_bytes", "must be 16 MiB or less"));
        }
        if s.connect_timeout.is_zero() {
            return Err(bad("connect_timeout", "must be above zero"));
        }
        if s.worker_threads > 1024 {
            return Err(bad("worker_threads", "must be 1024 or fewer"));
        }
        let base = PolicySettings::builtin().overlaid(&s.policy);
        validate_policy("policy", &base)?;
        if s.routes.is_empty() {
            return Err(bad("routes", "at least one route is needed"));
        }
        for name in s.services.keys() {
            if !s.routes.iter().any(|r| &r.service == name) {
                return Err(bad(
                    format!("services.{name}"),
                    "no route uses this service",
                ));
            }
        }
        let mut services = BTreeMap::new();
        let mut routes = Vec::with_capacity(s.routes.len());
        for (i, r) in s.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            check_prefix(&format!("{key}.prefix"), &r.prefix)?;
            if r.prefix == "/" {
                return Err(bad(format!("{key}.prefix"), "'/' is the gateway's index"));
            }
            if s.routes[..i].iter().any(|o| o.prefix == r.prefix) {
                return Err(bad(
                    format!("{key}.prefix"),
                    format!("{} is used twice", r.prefix),
                ));
            }
            hotel_registry::model::check_name(&r.service)
                .map_err(|e| bad(format!("{key}.service"), e))?;
            let rewrite = match &r.rewrite {
                Some(w) => {
                    check_prefix(&format!("{key}.rewrite"), w)?;
                    w.clone()
                }
                None => r
                    .prefix
                    .strip_prefix("/api")
                    .filter(|p| p.starts_with('/'))
                    .unwrap_or(&r.prefix)
                    .to_owned(),
            };
            if let Some(k) = r.policy.breaker_key() {
                return Err(bad(
                    format!("{key}.policy.{k}"),
                    format!(
                        "breakers belong to instances: set it in [services.{}.policy]",
                        r.service
                    ),
                ));
            }
            if !services.contains_key(&r.service) {
                let svc = s.services.get(&r.service).cloned().unwrap_or_default();
                let skey = format!("services.{}", r.service);
                let merged = base.overlaid(&svc.policy);
                let policy = validate_policy(&format!("{skey}.policy"), &merged)?;
                let mut instances = Vec::with_capacity(svc.instances.len());
                for (n, url) in svc.instances.iter().enumerate() {
                    let origin =
                        Origin::parse(url).map_err(|e| bad(format!("{skey}.instances[{n}]"), e))?;
                    instances.push((format!("{}-static-{}", r.service, n + 1), origin));
                }
                services.insert(
                    r.service.clone(),
                    ServiceConfig {
                        name: r.service.clone(),
                        instances,
                        policy,
                    },
                );
            }
            let svc_policy = s
                .services
                .get(&r.service)
                .map(|x| x.policy.clone())
                .unwrap_or_default();
            let merged = base.overlaid(&svc_policy).overlaid(&r.policy);
            let policy = validate_policy(&format!("{key}.policy"), &merged)?.request;
            let max_body_bytes = r.max_body_bytes.unwrap_or(s.limits.max_body_bytes);
            if !(1..=MAX_BODY_LIMIT).contains(&max_body_bytes) {
                return Err(bad(
                    format!("{key}.max_body_bytes"),
                    "must be between 1 and 16 MiB",
                ));
            }
            routes.push(Route {
                prefix: r.prefix.clone(),
                rewrite,
                service: r.service.clone(),
                cache: r.cache,
                max_body_bytes,
                policy,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let registry = match s.registry.url.filter(|u| !u.is_empty()) {
            Some(url) => {
                Origin::parse(url.trim_end_matches('/')).map_err(|e| bad("registry.url", e))?;
                Some((
                    url.trim_end_matches('/').to_owned(),
                    s.registry.token.filter(|t| !t.is_empty()),
                ))
            }
            None => None,
        };
        let edge = EdgeConfig::validate(&s.auth, &s.rate_limit, &s.limits, &s.headers, s.listen)
            .map_err(InvalidConfig)?;
        s.cache.validate().map_err(InvalidConfig)?;
        s.tls.files().map_err(InvalidConfig)?;
        Ok(Config {
            tls: s.tls,
            cache: s.cache,
            edge,
            cors: s.cors.layer().map_err(InvalidConfig)?,
            listen: s.listen,
            admin_listen: s.admin_listen,
            admin_token,
            instance: s.instance,
            worker_threads: s.worker_threads,
            shutdown_grace: s.shutdown_grace,
            retry_buffer_bytes: s.retry_buffer_bytes,
            connect_timeout: s.connect_timeout,
            pool_idle_timeout: s.pool_idle_timeout,
            pool_max_idle_per_host: s.pool_max_idle_per_host,
            registry,
            routes,
            services,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_validate_into_four_routes_and_three_services() {
        let c = Config::try_from(Settings::default()).unwrap();
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.services.len(), 3);
        let rooms = c.routes.iter().find(|r| r.prefix == "/api/rooms").unwrap();
        assert_eq!(rooms.rewrite, "/rooms");
        assert_eq!(rooms.policy.deadline, Duration::from_secs(10));
        // The services' own limit: the gateway never forwards a body they would refuse.
        for r in &c.routes {
            assert_eq!(
                r.max_body_bytes,
                hotel_common::http::SERVICE_BODY_LIMIT as u64
            );
        }
    }

    #[test]
    fn a_route_body_limit_overrides_the_default_and_is_bounded() {
        let mut s = Settings::default();
        s.routes[1].max_body_bytes = Some(1024);
        let c = Config::try_from(s.clone()).unwrap();
        let rooms = c.routes.iter().find(|r| r.prefix == "/api/rooms").unwrap();
        assert_eq!(rooms.max_body_bytes, 1024);
        s.routes[1].max_body_bytes = Some(0);
        let e = Config::try_from(s).unwrap_err();
        assert!(e.0.starts_with("routes[1].max_body_bytes"), "{e}");
    }

    #[test]
    fn a_route_policy_overrides_the_service_and_default_blocks() {
        let mut s = Settings::default();
        s.policy.retries = Some(1);
        s.services.insert(
            "room".into(),
            ServiceSettings {
                instances: vec!["http://127.0.0.1:9001".into()],
                policy: PolicySettings {
                    deadline: Some(Duration::from_secs(3)),
                    ..Default::default()
                },
            },
        );
        s.routes[1].policy.per_try_timeout = Some(Duration::from_millis(300));
        let c = Config::try_from(s).unwrap();
        let rooms = c.routes.iter().find(|r| r.prefix == "/api/rooms").unwrap();
        assert_eq!(rooms.policy.retries, 1);
        assert_eq!(rooms.policy.deadline, Duration::from_secs(3));
        assert_eq!(rooms.policy.per_try_timeout, Duration::from_millis(300));
        assert_eq!(c.services["room"].instances[0].0, "room-static-1");
    }

    #[test]
    fn per_try_timeout_longer_than_the_deadline_is_refused_naming_the_key() {
        let mut s = Settings::default();
        s.routes[0].policy.per_try_timeout = Some(Duration::from_secs(60));
        let e = Config::try_from(s).unwrap_err();
        assert!(e.0.starts_with("routes[0].policy.per_try_timeout"), "{e}");
    }

    #[test]
    fn a_breaker_key_on_a_route_is_refused_with_a_pointer_to_the_service_block() {
        let mut s = Settings::default();
        s.routes[2].policy.breaker_failures = Some(3);
        let e = Config::try_from(s).unwrap_err();
        assert!(e.0.contains("routes[2].policy.breaker_failures"), "{e}");
        assert!(e.0.contains("[services.booking.policy]"), "{e}");
    }

    #[test]
    fn a_public_listener_without_keys_is_refused_unless_anonymous_is_allowed() {
        let mut s = Settings::default();
        s.listen = "0.0.0.0:8080".parse().unwrap();
        let e = Config::try_from(s.clone()).unwrap_err();
        assert!(e.0.starts_with("auth.keys"), "{e}");
        s.auth.allow_anonymous = true;
        let c = Config::try_from(s).unwrap();
        assert!(c.edge.keys.is_empty());
    }

    #[test]
    fn a_public_admin_listener_without_a_token_is_refused() {
        let mut s = Settings::default();
        s.admin_listen = "0.0.0.0:9901".parse().unwrap();
        let e = Config::try_from(s).unwrap_err();
        assert!(e.0.starts_with("admin_token"), "{e}");
    }

    #[test]
    fn bad_prefixes_and_instance_urls_are_refused() {
        let mut s = Settings::default();
        s.routes[0].prefix = "/api/../x".into();
        assert!(
            Config::try_from(s)
                .unwrap_err()
                .0
                .starts_with("routes[0].prefix")
        );
        let mut s = Settings::default();
        s.services.insert(
            "room".into(),
            ServiceSettings {
                instances: vec!["ftp://x".into()],
                ..Default::default()
            },
        );
        assert!(
            Config::try_from(s)
                .unwrap_err()
                .0
                .starts_with("services.room.instances[0]")
        );
    }

    #[test]
    fn settings_from_toml_reject_unknown_keys() {
        let dir = hotel_testkit::TempDir::new("gw-cfg");
        let p = dir.join("gateway.toml");
        std::fs::write(&p, "[policy]\ndeadlne = \"1s\"\n").unwrap();
        let e = hotel_common::config::load_with_env(&Settings::default(), Some(&p), "gateway", &[])
            .unwrap_err();
        assert!(e.to_string().contains("deadlne"), "{e}");
        std::fs::write(
            &p,
            "[policy]\ndeadline = \"5s\"\nper_try_timeout = \"500ms\"\n",
        )
        .unwrap();
        let s: Settings = hotel_common::config::load_with_env(
            &Settings::default(),
            Some(&p),
            "gateway",
            &[("HOTEL_GATEWAY__REGISTRY__URL", "http://127.0.0.1:8761")],
        )
        .unwrap();
        let c = Config::try_from(s).unwrap();
        // 5 s: the bookings route's built-in 4 s per-try timeout must fit inside it.
        assert_eq!(c.routes[0].policy.deadline, Duration::from_secs(5));
        assert_eq!(c.registry.as_ref().unwrap().0, "http://127.0.0.1:8761");
    }
}
