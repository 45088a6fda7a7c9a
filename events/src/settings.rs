//! The `[events]` block every domain service takes (`HOTEL_<ROLE>__EVENTS__*`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a service publishes and consumes events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// The broker, `nats://HOST:PORT` (NATS JetStream, see [`crate::nats`]); unset means
    /// the embedded bus: each producer serves its own outbox, nothing to install.
    #[serde(default)]
    pub url: Option<String>,
    /// The JetStream stream every service's events go to (NATS only): one stream,
    /// subjects by event type (`hotel.booking.created`).
    pub stream: String,
    /// How long JetStream waits for a consumer's ack before it delivers the event again
    /// (NATS only): what a consumer replica killed mid-batch costs in delay.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Most events of one producer delivered to this service and not yet acked, across
    /// its replicas (NATS only). 1, the default, applies each producer's events in order,
    /// one at a time, as the embedded bus does (the handlers rely on it: counts clamp at
    /// zero); more lets replicas apply in parallel, out of order, for handlers whose
    /// effects commute. With 1, a replica killed holding an event stalls the service's
    /// consumption until `ack_wait` runs out.
    pub max_in_flight: u32,
    /// Longest blocking read of a producer's feed: a consumer with nothing to do holds
    /// one request open this long, and sees a new event as soon as it is committed.
    #[serde(with = "humantime_serde")]
    pub poll_wait: Duration,
    /// Most events read (and applied) per feed request.
    pub batch: u32,
    /// Wait before trying again after a failed read or a failed apply.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            url: None,
            stream: "HOTEL_EVENTS".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_in_flight: 1,
            poll_wait: Duration::from_secs(20),
            batch: 100,
            retry_backoff: Duration::from_millis(500),
        }
    }
}

impl EventSettings {
    /// Refuses what this build cannot do, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.url {
            crate::nats::check_url(url).map_err(|why| format!("events.url = {url:?}: {why}"))?;
        }
        let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\');
        if self.stream.is_empty() || self.stream.chars().any(bad) {
            return Err(format!(
                "events.stream = {:?}: a JetStream stream name: not empty, no spaces, '.', '*', '>', '/' or '\\'",
                self.stream
            ));
        }
        if self.ack_wait < Duration::from_secs(1) {
            return Err("events.ack_wait must be at least 1s".into());
        }
        if self.max_in_flight == 0 || self.max_in_flight > 10_000 {
            return Err("events.max_in_flight must be 1 to 10000".into());
        }
        if self.batch == 0 || self.batch > 1000 {
            return Err("events.batch must be 1 to 1000".into());
        }
        if self.poll_wait > crate::feed::MAX_WAIT {
            return Err(format!(
                "events.poll_wait must be at most {}s",
                crate::feed::MAX_WAIT.as_secs()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_naming_the_key() {
        assert_eq!(EventSettings::default().validate(), Ok(()));
        let nats = |url: &str| EventSettings {
            url: Some(url.into()),
            ..EventSettings::default()
        };
        assert_eq!(nats("nats://127.0.0.1:4222").validate(), Ok(()));
        assert_eq!(nats("nats://nats.example:4222").validate(), Ok(()));
        for bad in [
            "http://127.0.0.1:4222",
            "nats://",
            "nats://127.0.0.1",
            "127.0.0.1:4222",
        ] {
            assert!(
                nats(bad)
                    .validate()
                    .is_err_and(|e| e.starts_with("events.url")),
                "{bad}"
            );
        }
        let stream = EventSettings {
            stream: "hotel.events".into(),
            ..EventSettings::default()
        };
        assert!(
            stream
                .validate()
                .is_err_and(|e| e.starts_with("events.stream"))
        );
        let none = EventSettings {
            batch: 0,
            ..EventSettings::default()
        };
        assert!(
            none.validate()
                .is_err_and(|e| e.starts_with("events.batch"))
        );
        let long = EventSettings {
            poll_wait: Duration::from_secs(31),
            ..EventSettings::default()
        };
        assert!(
            long.validate()
                .is_err_and(|e| e.starts_with("events.poll_wait"))
        );
    }
}
