//! CloudEvents 1.0 in the JSON event format, with the W3C `traceparent` extension
//! (the distributed tracing extension), as every event of the bus is written.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only `specversion` written and accepted.
pub const SPEC_VERSION: &str = "1.0";

/// One event (CloudEvents 1.0 JSON format). Unknown attributes are ignored on read, as
/// the specification asks of consumers; a missing required one is a malformed event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// Unique per event (a UUID): the inbox key of every consumer.
    pub id: Uuid,
    /// The producing instance, `/hotel/<service>/<instance>`.
    pub source: String,
    /// `hotel.<entity>.<verb>`, such as `hotel.booking.created`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The entity's id.
    pub subject: String,
    /// When the state change happened, RFC 3339 UTC.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The entity as the API shows it (plus what changed, for updates).
    pub data: serde_json::Value,
    /// W3C trace context of the producer's `publish` span, so that the consumer's
    /// `process` span joins the trace of the request that caused the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl CloudEvent {
    /// Reads an event as delivered; the message says what is wrong with a malformed one.
    pub fn parse(payload: &str) -> Result<CloudEvent, String> {
        let event: CloudEvent = serde_json::from_str(payload).map_err(|e| e.to_string())?;
        if event.specversion != SPEC_VERSION {
            return Err(format!("specversion {:?} is not 1.0", event.specversion));
        }
        Ok(event)
    }

    /// `time` in microseconds since the Unix epoch, if it is an RFC 3339 time.
    pub fn time_micros(&self) -> Option<i64> {
        crate::consumer::time_of(&self.time)
    }

    /// The service named in `source` (`/hotel/<service>/<instance>`).
    pub fn source_service(&self) -> Option<&str> {
        self.source.strip_prefix("/hotel/")?.split('/').next()
    }
}

/// The best id a consumer can name for a payload that did not parse: its `id` if there
/// is one, for the dead-letter row and the log line.
pub fn id_of_malformed(payload: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(payload).ok()?;
    v.get("id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_event_round_trips_and_names_its_source_service() {
        let e = CloudEvent {
            specversion: "1.0".into(),
            id: Uuid::new_v4(),
            source: "/hotel/booking/booking-2".into(),
            kind: "hotel.booking.created".into(),
            subject: "b1".into(),
            time: "2026-12-05T23:59:00.000000Z".into(),
            datacontenttype: "application/json".into(),
            data: serde_json::json!({"id": "b1"}),
            traceparent: None,
        };
        let text = serde_json::to_string(&e).unwrap();
        assert!(
            text.contains("\"type\":\"hotel.booking.created\""),
            "{text}"
        );
        assert_eq!(CloudEvent::parse(&text).unwrap(), e);
        assert_eq!(e.source_service(), Some("booking"));
    }

    #[test]
    fn malformed_payloads_say_why_and_keep_their_id_when_they_have_one() {
        assert!(CloudEvent::parse("not json").is_err());
        let missing = r#"{"specversion":"1.0","id":"6c1f0a1e-8d6b-4a53-9b7c-0f6a3f6f4b11"}"#;
        assert!(
            CloudEvent::parse(missing)
                .unwrap_err()
                .contains("missing field")
        );
        assert_eq!(
            id_of_malformed(missing).as_deref(),
            Some("6c1f0a1e-8d6b-4a53-9b7c-0f6a3f6f4b11")
        );
        let v2 = missing.replace("1.0", "2.0");
        assert!(CloudEvent::parse(&v2).is_err());
    }
}
