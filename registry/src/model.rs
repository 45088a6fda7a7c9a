//! The registry's wire types, shared by the server, the client library, the gateway and
//! the cluster commands, and the validation of names, URLs and metadata.

use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, time::Duration};

/// Free-form labels of an instance (`version`, `zone`, `pid`, ...), sorted by key.
pub type Metadata = BTreeMap<String, String>;

/// One registered instance of a service, as the registry reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instance {
    /// Service name, such as `room`.
    pub service: String,
    /// Instance name, unique within its service, such as `room-2`.
    pub instance: String,
    /// Base URL requests go to, such as `http://127.0.0.1:40123`.
    pub url: String,
    /// Labels given at registration.
    #[serde(default)]
    pub metadata: Metadata,
    /// Wall-clock time of the (last) registration, RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub registered_at: time::OffsetDateTime,
    /// Milliseconds since the last registration or heartbeat, when the response was made.
    pub last_heartbeat_age_ms: u64,
    /// The lease in milliseconds: without a heartbeat for this long the instance is removed.
    pub lease_ms: u64,
    /// The result of the instance's own readiness check, as its last registration or
    /// heartbeat reported it. Watchers ([`crate::Watcher`]) follow only `passing`
    /// instances; lists show every one. Absent (from an older registry) means passing.
    #[serde(default)]
    pub status: HealthStatus,
    /// Why the check fails, when `status` is `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What an instance's own readiness check (the one its `/readyz` answers) last said, in
/// Consul's words.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Ready: send it traffic.
    #[default]
    Passing,
    /// Not ready (its database is gone, say): keep it registered, send it nothing.
    Critical,
}

impl HealthStatus {
    /// `passing` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Passing => "passing",
            HealthStatus::Critical => "critical",
        }
    }
}

/// Body of `PUT /v1/instances/{service}/{instance}/heartbeat` (optional: a heartbeat
/// without a body reports `passing`, as heartbeats did before they carried a status).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HealthReport {
    /// The result of the instance's readiness check.
    #[serde(default)]
    pub status: HealthStatus,
    /// Why it fails (at most [`MAX_REASON_LEN`] bytes, no control characters); only
    /// meaningful with `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HealthReport {
    /// A passing report.
    pub fn passing() -> HealthReport {
        HealthReport::default()
    }

    /// A critical report with `reason`, made fit for the registry: control characters
    /// become spaces and it is cut to [`MAX_REASON_LEN`] bytes.
    pub fn critical(reason: &str) -> HealthReport {
        let mut clean: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if clean.len() > MAX_REASON_LEN {
            let mut end = MAX_REASON_LEN;
            while !clean.is_char_boundary(end) {
                end -= 1;
            }
            clean.truncate(end);
        }
        HealthReport {
            status: HealthStatus::Critical,
            reason: Some(clean),
        }
    }
}

/// Longest `reason` the registry accepts, in bytes.
pub const MAX_REASON_LEN: usize = 512;

/// Checks a report's reason; the error is the message for field `reason`.
pub fn check_reason(reason: Option<&str>) -> Result<(), String> {
    match reason {
        Some(r) if r.len() > MAX_REASON_LEN => Err(format!("at most {MAX_REASON_LEN} bytes")),
        Some(r) if r.chars().any(char::is_control) => {
            Err("must not contain control characters".to_owned())
        }
        _ => Ok(()),
    }
}

impl Instance {
    /// Whether two reports describe the same endpoint with the same labels (ages,
    /// registration times and health aside): what a watcher compares to decide that
    /// something changed (it publishes passing instances only, so health changes show as
    /// instances leaving and coming back).
    pub fn same_endpoint(&self, other: &Instance) -> bool {
        self.service == other.service
            && self.instance == other.instance
            && self.url == other.url
            && self.metadata == other.metadata
    }
}

/// `GET /v1/services/{service}`: the instances of one service and the service's index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceInstances {
    /// The service name.
    pub service: String,
    /// Moves forward whenever the set of instances (or one's URL, metadata or status)
    /// changes;
    /// pass it back as `?index=` to wait for the next change. Also in `X-Registry-Index`.
    pub index: u64,
    /// The live instances, passing or not, sorted by instance name.
    pub instances: Vec<Instance>,
}

/// One line of `GET /v1/services`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceSummary {
    /// The service name.
    pub service: String,
    /// How many instances are registered now (0 once all have left).
    pub instances: usize,
    /// How many of them are passing their readiness check.
    #[serde(default)]
    pub passing: usize,
    /// The service's index.
    pub index: u64,
}

/// `GET /v1/services`: every known service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceList {
    /// The registry-wide index (the highest of the services' indexes).
    pub index: u64,
    /// Services sorted by name.
    pub services: Vec<ServiceSummary>,
}

/// Body of `PUT /v1/instances/{service}/{instance}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Base URL of the instance: `http://` or `https://`, host and port, no query.
    pub url: String,
    /// Labels, bounded in count and size.
    #[serde(default)]
    pub metadata: Metadata,
    /// Lease asked for ("3s"); the registry's default when absent.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<Duration>,
    /// The instance's readiness when registering; passing when absent.
    #[serde(default)]
    pub status: HealthStatus,
    /// Why it is not ready, with `critical`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Answer to register and heartbeat: the instance as stored now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registered {
    /// The stored instance.
    pub instance: Instance,
    /// The service's index after the call.
    pub index: u64,
}

/// Header carrying the index of a service (or of the registry, for lists).
pub const INDEX_HEADER: &str = "x-registry-index";

/// Checks a service or instance name: 1 to 63 of lowercase ASCII letters, digits and
/// `-`, starting with a letter or digit (a DNS label, so names fit hostnames and metrics).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err("must be 1 to 63 characters long".to_owned());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only lowercase letters, digits and '-'".to_owned());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-'".to_owned());
    }
    Ok(())
}

/// Checks and normalises a base URL: http(s), a host, no credentials, query or fragment.
/// The answer has no trailing `/`, so callers can append paths.
pub fn check_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must use http or https".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_owned());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// Checks metadata against the limits; the error names the offending entry as a field
/// path (`metadata.zone`).
pub fn check_metadata(
    metadata: &Metadata,
    max_keys: usize,
    max_value_len: usize,
) -> Result<(), (String, String)> {
    if metadata.len() > max_keys {
        return Err((
            "metadata".to_owned(),
            format!("at most {max_keys} entries are allowed"),
        ));
    }
    for (k, v) in metadata {
        let key_ok = !k.is_empty()
            && k.len() <= 64
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !key_ok {
            return Err((
                format!("metadata.{}", k.chars().take(64).collect::<String>()),
                "keys are 1 to 64 of letters, digits, '-', '_' and '.'".to_owned(),
            ));
        }
        if v.len() > max_value_len {
            return Err((
                format!("metadata.{k}"),
                format!("at most {max_value_len} bytes"),
            ));
        }
        if v.chars().any(char::is_control) {
            return Err((
                format!("metadata.{k}"),
                "must not contain control characters".to_owned(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(check_name("room-2").is_ok());
        assert!(check_name("a").is_ok());
        assert!(check_name(&"a".repeat(63)).is_ok());
        assert!(check_name(&"a".repeat(64)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("Room").is_err());
        assert!(check_name("room_2").is_err());
        assert!(check_name("-room").is_err());
        assert!(check_name("room.x").is_err());
    }

    #[test]
    fn urls_must_be_plain_http_bases() {
        assert_eq!(
            check_url("http://127.0.0.1:4000/").unwrap(),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            check_url("https://room.internal/api").unwrap(),
            "https://room.internal/api"
        );
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("127.0.0.1:4000").is_err());
        assert!(check_url("http://u:p@host").is_err());
        assert!(check_url("http://host/?q=1").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn metadata_errors_name_the_entry() {
        let mut m = Metadata::new();
        m.insert("zone".into(), "x".repeat(600));
        assert_eq!(check_metadata(&m, 32, 512).unwrap_err().0, "metadata.zone");
        let many: Metadata = (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(check_metadata(&many, 32, 512).unwrap_err().0, "metadata");
        let mut bad = Metadata::new();
        bad.insert("a b".into(), "v".into());
        assert_eq!(check_metadata(&bad, 32, 512).unwrap_err().0, "metadata.a b");
    }
}
