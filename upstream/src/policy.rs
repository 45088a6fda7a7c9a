//! Upstream policies: the raw, serde-shaped [`PolicySettings`] block (every key optional,
//! so a block overrides only what it names) and the validated types the stack runs on:
//! [`Policy`] (per request: deadline, retries, hedging), [`BreakerPolicy`] (per instance)
//! and both together as a [`ServicePolicy`]. Every check happens once, in
//! [`PolicySettings::validate`], with a message naming the key; [`Origin`] is a checked
//! instance base URL.

use http::uri::{Authority, Scheme};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A policy block; every key is optional so a block overrides only what it names.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Overall deadline of a request, all attempts and backoff included.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<Duration>,
    /// Timeout of one attempt.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_try_timeout: Option<Duration>,
    /// Retries after the first attempt (0 turns retries off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// First retry backoff; doubles per retry, with full jitter.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_backoff: Option<Duration>,
    /// Upper bound of the retry backoff.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_backoff_max: Option<Duration>,
    /// Retries and hedges may add at most this percentage of the route's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget_percent: Option<f32>,
    /// ...plus this many per second, so a quiet route can still retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget_min_per_sec: Option<u32>,
    /// Whether idempotent requests are hedged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge: Option<bool>,
    /// The latency percentile (of the service's recent attempts) after which a hedge is
    /// sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hedge_percentile: Option<f64>,
    /// The hedge never fires sooner than this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub hedge_min_delay: Option<Duration>,
    /// The hedge fires at the latest after this (also used before latency is known).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub hedge_max_delay: Option<Duration>,
    /// Consecutive failures (connect errors, 5xx, per-try timeouts) that open a breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    /// First open period of a breaker; doubles on each failed probe.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_backoff: Option<Duration>,
    /// Longest open period of a breaker.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_backoff_max: Option<Duration>,
    /// At most this percentage of a service's instances are ejected for errors at once
    /// (at least one); instances that refuse connections are ejected regardless.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u8>,
    /// An instance with attempts in flight that has answered none of them for this long
    /// (and for four times the service's recent p99) is ejected as stalled at once,
    /// without waiting for per-try timeouts, and watched by one health probe.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_stall_after: Option<Duration>,
    /// An instance failing more than this percentage of its attempts over
    /// `failure_percentage_window` is ejected while the rest of its service is healthy
    /// (100 turns it off); health probes bring it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage_threshold: Option<u8>,
    /// ...once it has had at least this many attempts in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_percentage_min_requests: Option<u32>,
    /// The sliding window failure percentages are counted over.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_percentage_window: Option<Duration>,
    /// An instance back from an ejection ramps its share of requests up over this long
    /// (0s turns slow start off).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_start: Option<Duration>,
}

impl PolicySettings {
    /// The built-in defaults, every key set.
    pub fn builtin() -> Self {
        PolicySettings {
            deadline: Some(Duration::from_secs(10)),
            per_try_timeout: Some(Duration::from_secs(2)),
            retries: Some(2),
            retry_backoff: Some(Duration::from_millis(10)),
            retry_backoff_max: Some(Duration::from_millis(250)),
            retry_budget_percent: Some(20.0),
            retry_budget_min_per_sec: Some(10),
            hedge: Some(true),
            hedge_percentile: Some(95.0),
            hedge_min_delay: Some(Duration::from_millis(20)),
            hedge_max_delay: Some(Duration::from_millis(500)),
            breaker_failures: Some(5),
            breaker_backoff: Some(Duration::from_secs(1)),
            breaker_backoff_max: Some(Duration::from_secs(30)),
            max_ejection_percent: Some(50),
            breaker_stall_after: Some(Duration::from_millis(250)),
            failure_percentage_threshold: Some(30),
            failure_percentage_min_requests: Some(20),
            failure_percentage_window: Some(Duration::from_secs(10)),
            slow_start: Some(Duration::from_secs(5)),
        }
    }

    /// `self` with every key `over` sets replaced.
    pub fn overlaid(&self, over: &PolicySettings) -> PolicySettings {
        macro_rules! pick {
            ($($f:ident),*) => { PolicySettings { $($f: over.$f.or(self.$f)),* } };
        }
        pick!(
            deadline,
            per_try_timeout,
            retries,
            retry_backoff,
            retry_backoff_max,
            retry_budget_percent,
            retry_budget_min_per_sec,
            hedge,
            hedge_percentile,
            hedge_min_delay,
            hedge_max_delay,
            breaker_failures,
            breaker_backoff,
            breaker_backoff_max,
            max_ejection_percent,
            breaker_stall_after,
            failure_percentage_threshold,
            failure_percentage_min_requests,
            failure_percentage_window,
            slow_start
        )
    }

    /// The name of the first breaker key this block sets, if any.
    pub fn breaker_key(&self) -> Option<&'static str> {
        if self.breaker_failures.is_some() {
            Some("breaker_failures")
        } else if self.breaker_backoff.is_some() {
            Some("breaker_backoff")
        } else if self.breaker_backoff_max.is_some() {
            Some("breaker_backoff_max")
        } else if self.max_ejection_percent.is_some() {
            Some("max_ejection_percent")
        } else if self.breaker_stall_after.is_some() {
            Some("breaker_stall_after")
        } else if self.failure_percentage_threshold.is_some() {
            Some("failure_percentage_threshold")
        } else if self.failure_percentage_min_requests.is_some() {
            Some("failure_percentage_min_requests")
        } else if self.failure_percentage_window.is_some() {
            Some("failure_percentage_window")
        } else if self.slow_start.is_some() {
            Some("slow_start")
        } else {
            None
        }
    }
}

/// An upstream setting that does not make sense; the message names the key
/// (`policy.per_try_timeout: must not exceed the deadline (2s)`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct InvalidUpstream(pub String);

pub(crate) fn bad(key: impl std::fmt::Display, why: impl std::fmt::Display) -> InvalidUpstream {
    InvalidUpstream(format!("{key}: {why}"))
}

/// Everything the stack of one service needs: the per-request policy its routes start
/// from and the breaker of each of its instances.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePolicy {
    /// Deadline, per-try timeout, retries and hedging.
    pub request: Policy,
    /// The breaker of each instance.
    pub breaker: BreakerPolicy,
}

/// The per-request part of a policy, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Overall deadline.
    pub deadline: Duration,
    /// Timeout of one attempt (never longer than the deadline).
    pub per_try_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff.
    pub retry_backoff: Duration,
    /// Backoff bound.
    pub retry_backoff_max: Duration,
    /// Budget: percentage of requests that may be retried or hedged.
    pub budget_percent: f32,
    /// Budget: floor of retries per second.
    pub budget_min_per_sec: u32,
    /// Hedging, when on.
    pub hedge: Option<HedgePolicy>,
}

/// When a hedge is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// Percentile of recent latency, in (0, 100).
    pub percentile: f64,
    /// Lower bound of the delay.
    pub min_delay: Duration,
    /// Upper bound of the delay.
    pub max_delay: Duration,
}

/// The per-instance breaker, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open it (at least 1).
    pub failures: u32,
    /// First open period.
    pub backoff: Duration,
    /// Longest open period.
    pub backoff_max: Duration,
    /// Percentage of a service's instances that may be ejected for errors at once.
    pub max_ejection_percent: u8,
    /// No answer for this long with attempts in flight ejects an instance as stalled.
    pub stall_after: Duration,
    /// Failure percentage (of its attempts in `failure_window`) above which an instance
    /// is ejected; 100: never.
    pub failure_threshold: u8,
    /// Attempts in the window before the percentage counts.
    pub failure_min_requests: u32,
    /// The window failure percentages are counted over.
    pub failure_window: Duration,
    /// How long a returning instance ramps its share up (zero: at once).
    pub slow_start: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failures: 5,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_ejection_percent: 50,
            stall_after: Duration::from_millis(250),
            failure_threshold: 30,
            failure_min_requests: 20,
            failure_window: Duration::from_secs(10),
            slow_start: Duration::from_secs(5),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        // The same values as `PolicySettings::builtin()` (a test checks they agree).
        Policy {
            deadline: Duration::from_secs(10),
            per_try_timeout: Duration::from_secs(2),
            retries: 2,
            retry_backoff: Duration::from_millis(10),
            retry_backoff_max: Duration::from_millis(250),
            budget_percent: 20.0,
            budget_min_per_sec: 10,
            hedge: Some(HedgePolicy {
                percentile: 95.0,
                min_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(500),
            }),
        }
    }
}

fn need<T: Copy>(key: &str, field: &str, v: Option<T>) -> Result<T, InvalidUpstream> {
    v.ok_or_else(|| bad(format!("{key}.{field}"), "is missing"))
}

impl PolicySettings {
    /// Validates a fully overlaid block (every key set, e.g.
    /// `PolicySettings::builtin().overlaid(&mine)`); `key` names the block in messages.
    pub fn validate(&self, key: &str) -> Result<ServicePolicy, InvalidUpstream> {
        let s = self;
        let deadline = need(key, "deadline", s.deadline)?;
        let per_try = need(key, "per_try_timeout", s.per_try_timeout)?;
        if deadline.is_zero() {
            return Err(bad(format!("{key}.deadline"), "must be above zero"));
        }
        if per_try.is_zero() {
            return Err(bad(format!("{key}.per_try_timeout"), "must be above zero"));
        }
        if per_try > deadline {
            return Err(bad(
                format!("{key}.per_try_timeout"),
                format!(
                    "must not exceed the deadline ({})",
                    humantime::format_duration(deadline)
                ),
            ));
        }
        let retries = need(key, "retries", s.retries)?;
        if retries > 10 {
            return Err(bad(format!("{key}.retries"), "must be 10 or fewer"));
        }
        let backoff = need(key, "retry_backoff", s.retry_backoff)?;
        let backoff_max = need(key, "retry_backoff_max", s.retry_backoff_max)?;
        if backoff > backoff_max {
            return Err(bad(
                format!("{key}.retry_backoff"),
                "must not exceed retry_backoff_max",
            ));
        }
        let percent = need(key, "retry_budget_percent", s.retry_budget_percent)?;
        if !(0.0..=1000.0).contains(&percent) {
            return Err(bad(
                format!("{key}.retry_budget_percent"),
                "must be between 0 and 1000",
            ));
        }
        let min_per_sec = need(key, "retry_budget_min_per_sec", s.retry_budget_min_per_sec)?;
        let hedge = if need(key, "hedge", s.hedge)? {
            let percentile = need(key, "hedge_percentile", s.hedge_percentile)?;
            if !(percentile > 0.0 && percentile < 100.0) {
                return Err(bad(
                    format!("{key}.hedge_percentile"),
                    "must be between 0 and 100 (exclusive)",
                ));
            }
            let min_delay = need(key, "hedge_min_delay", s.hedge_min_delay)?;
            let max_delay = need(key, "hedge_max_delay", s.hedge_max_delay)?;
            if min_delay.is_zero() {
                return Err(bad(format!("{key}.hedge_min_delay"), "must be above zero"));
            }
            if min_delay > max_delay {
                return Err(bad(
                    format!("{key}.hedge_min_delay"),
                    "must not exceed hedge_max_delay",
                ));
            }
            Some(HedgePolicy {
                percentile,
                min_delay,
                max_delay,
            })
        } else {
            None
        };
        let failures = need(key, "breaker_failures", s.breaker_failures)?;
        if failures == 0 {
            return Err(bad(format!("{key}.breaker_failures"), "must be at least 1"));
        }
        let b_backoff = need(key, "breaker_backoff", s.breaker_backoff)?;
        let b_max = need(key, "breaker_backoff_max", s.breaker_backoff_max)?;
        if b_backoff.is_zero() {
            return Err(bad(format!("{key}.breaker_backoff"), "must be above zero"));
        }
        if b_backoff > b_max {
            return Err(bad(
                format!("{key}.breaker_backoff"),
                "must not exceed breaker_backoff_max",
            ));
        }
        let ejection = need(key, "max_ejection_percent", s.max_ejection_percent)?;
        if ejection > 100 {
            return Err(bad(
                format!("{key}.max_ejection_percent"),
                "must be between 0 and 100",
            ));
        }
        let stall_after = need(key, "breaker_stall_after", s.breaker_stall_after)?;
        if stall_after.is_zero() {
            return Err(bad(
                format!("{key}.breaker_stall_after"),
                "must be above zero",
            ));
        }
        let failure_threshold = need(
            key,
            "failure_percentage_threshold",
            s.failure_percentage_threshold,
        )?;
        if !(1..=100).contains(&failure_threshold) {
            return Err(bad(
                format!("{key}.failure_percentage_threshold"),
                "must be between 1 and 100 (100 turns it off)",
            ));
        }
        let failure_min_requests = need(
            key,
            "failure_percentage_min_requests",
            s.failure_percentage_min_requests,
        )?;
        if failure_min_requests == 0 {
            return Err(bad(
                format!("{key}.failure_percentage_min_requests"),
                "must be at least 1",
            ));
        }
        let failure_window = need(
            key,
            "failure_percentage_window",
            s.failure_percentage_window,
        )?;
        if failure_window < Duration::from_millis(100) || failure_window > Duration::from_secs(600)
        {
            return Err(bad(
                format!("{key}.failure_percentage_window"),
                "must be between 100ms and 10m",
            ));
        }
        let slow_start = need(key, "slow_start", s.slow_start)?;
        if slow_start > Duration::from_secs(600) {
            return Err(bad(format!("{key}.slow_start"), "must be at most 10m"));
        }
        Ok(ServicePolicy {
            request: Policy {
                deadline,
                per_try_timeout: per_try,
                retries,
                retry_backoff: backoff,
                retry_backoff_max: backoff_max,
                budget_percent: percent,
                budget_min_per_sec: min_per_sec,
                hedge,
            },
            breaker: BreakerPolicy {
                failures,
                backoff: b_backoff,
                backoff_max: b_max,
                max_ejection_percent: ejection,
                stall_after,
                failure_threshold,
                failure_min_requests,
                failure_window,
                slow_start,
            },
        })
    }
}

/// Where an instance is: scheme and authority of its base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
}

impl Origin {
    /// Parses a base URL such as `http://127.0.0.1:9001` or, with mutual TLS between the
    /// components, `https://127.0.0.1:9001` (a trailing `/` is allowed, a path is not).
    pub fn parse(url: &str) -> Result<Origin, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!(
                "{url:?}: only http:// and https:// instances are supported"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} has no host"))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!("{url:?} must not have a path or query"));
        }
        Ok(Origin { scheme, authority })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_is_the_validated_builtin_block() {
        let p = PolicySettings::builtin().validate("policy").unwrap();
        assert_eq!(p.request, Policy::default());
        assert_eq!(p.breaker, BreakerPolicy::default());
    }
}
