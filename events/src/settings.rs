//! The `[events]` block every domain service takes (`HOTEL_<ROLE>__EVENTS__*`).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a service publishes and consumes events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// Reserved for a broker (`nats://HOST:PORT`, NATS JetStream); unset means the
    /// embedded bus: each producer serves its own outbox, nothing to install. Setting it
    /// is refused at startup until the broker transport exists.
    #[serde(default)]
    pub url: Option<String>,
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
            return Err(format!(
                "events.url = {url:?}: only the embedded bus is built in so far; leave events.url unset"
            ));
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
    fn what_this_build_cannot_do_is_refused_naming_the_key() {
        assert_eq!(EventSettings::default().validate(), Ok(()));
        let nats = EventSettings {
            url: Some("nats://127.0.0.1:4222".into()),
            ..EventSettings::default()
        };
        assert!(nats.validate().is_err_and(|e| e.starts_with("events.url")));
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
