//! Overload protection: bounded work instead of unbounded queues.
//!
//! - In-flight limits, global and per service: a request past either is answered 503
//!   with `Retry-After` at once (load shedding), never queued. Counting is one atomic
//!   add per limit, released when the response head is ready.
//! - Connection limit: past `max_connections` a new connection is closed on accept.
//! - Slow clients: a connection must send its first byte within `header_timeout`, and
//!   each request head must be complete within `header_timeout` of its first byte
//!   (enforced by [`crate::framing::Inspected`]), and its body within `body_timeout`
//!   of the head (slow POST); a keep-alive connection idle for
//!   `idle_timeout` between requests is closed (hyper's header timer).
//! - Head limits: more than `max_headers` header lines or `max_header_bytes` of head
//!   get 431 problem+json from the shield (hyper's own limits are set
//!   `HYPER_HEAD_HEADROOM` times higher, so it does not answer first with a bare 431).
//! - Size limits: request bodies past their route's limit (`[[routes]] max_body_bytes`,
//!   default `max_body_bytes`) get 413 (see [`crate::shield`]).

use hotel_common::http::{SERVICE_MAX_HEADER_BYTES, SERVICE_MAX_HEADERS};
use serde::{Deserialize, Serialize};

/// Header lines the gateway may add to a request on its way to an instance
/// (`x-request-id`, `traceparent`, `tracestate`, `forwarded`, `x-forwarded-for`,
/// `-proto`, `-host`, `-prefix`, the client header, `content-length`): what
/// `limits.max_headers` must leave room for below the services' limit.
pub const GATEWAY_ADDED_HEADERS: usize = 16;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// `[limits]` as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests in flight in the whole gateway before it sheds (503).
    pub max_in_flight: usize,
    /// Requests in flight to one service before its routes shed (503).
    pub max_in_flight_per_service: usize,
    /// Open client connections; more are closed on accept.
    pub max_connections: usize,
    /// A request head must be complete within this of its first byte, and a new
    /// connection must send its first byte within this (slow-loris defence).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request body must be complete within this of the end of its head (slow-POST
    /// defence).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request body of a route that sets no `max_body_bytes` of its own (413
    /// past it, before any attempt). The default is the services' own limit
    /// ([`hotel_common::http::SERVICE_BODY_LIMIT`]), so the gateway never forwards a
    /// body a service would refuse.
    pub max_body_bytes: u64,
    /// Largest request head in bytes (request line and header fields): 431
    /// problem+json past it. Below the services' own limit
    /// ([`hotel_common::http::SERVICE_MAX_HEADER_BYTES`]), so the gateway answers first.
    pub max_header_bytes: usize,
    /// Most header field lines in a request: 431 problem+json past it. Below the
    /// services' own limit ([`hotel_common::http::SERVICE_MAX_HEADERS`]) with room for
    /// the headers the gateway adds (request id, trace context, forwarding, client).
    pub max_headers: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_h2_streams: u32,
    /// `Retry-After` seconds sent with a shed (503) response.
    pub retry_after_secs: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_in_flight: 4096,
            max_in_flight_per_service: 1024,
            max_connections: 8192,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_body_bytes: hotel_common::http::SERVICE_BODY_LIMIT as u64,
            max_header_bytes: 32 * 1024,
            max_headers: 64,
            max_h2_streams: 256,
            retry_after_secs: 1,
        }
    }
}

impl LimitSettings {
    /// The head limits the shield checks.
    pub fn head(&self) -> hotel_common::http::HeadLimits {
        hotel_common::http::HeadLimits {
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
        }
    }

    /// Checks the values, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_in_flight == 0 {
            return Err("limits.max_in_flight: must be at least 1".into());
        }
        if self.max_in_flight_per_service == 0 {
            return Err("limits.max_in_flight_per_service: must be at least 1".into());
        }
        if self.max_connections == 0 {
            return Err("limits.max_connections: must be at least 1".into());
        }
        if self.header_timeout < Duration::from_millis(10) {
            return Err("limits.header_timeout: must be at least 10ms".into());
        }
        if self.body_timeout < Duration::from_millis(10) {
            return Err("limits.body_timeout: must be at least 10ms".into());
        }
        if self.idle_timeout < Duration::from_millis(10) {
            return Err("limits.idle_timeout: must be at least 10ms".into());
        }
        if self.max_header_bytes < 8192 {
            return Err("limits.max_header_bytes: must be at least 8192".into());
        }
        if self.max_header_bytes >= SERVICE_MAX_HEADER_BYTES {
            return Err(format!(
                "limits.max_header_bytes: must be below the services' limit \
                 ({SERVICE_MAX_HEADER_BYTES}), so the gateway refuses a head first"
            ));
        }
        if !(8..=SERVICE_MAX_HEADERS - GATEWAY_ADDED_HEADERS).contains(&self.max_headers) {
            return Err(format!(
                "limits.max_headers: must be between 8 and {}: the services accept \
                 {SERVICE_MAX_HEADERS} and the gateway adds up to {GATEWAY_ADDED_HEADERS}",
                SERVICE_MAX_HEADERS - GATEWAY_ADDED_HEADERS
            ));
        }
        if self.max_h2_streams == 0 {
            return Err("limits.max_h2_streams: must be at least 1".into());
        }
        Ok(())
    }
}

/// A counter with a ceiling.
#[derive(Debug)]
pub struct InFlight {
    now: AtomicUsize,
    max: usize,
}

/// Holds one unit of an [`InFlight`] until dropped.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    /// A counter allowing `max` at once.
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            now: AtomicUsize::new(0),
            max,
        })
    }

    /// One more, unless the ceiling is reached.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlightGuard> {
        // Add first and undo on overflow: one atomic op on the common path.
        let before = self.now.fetch_add(1, Ordering::Relaxed);
        if before >= self.max {
            self.now.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(InFlightGuard(self.clone()))
    }

    /// How many are held now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    /// The ceiling.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// Waits up to `timeout` for a new connection's first byte; `false` when the client
/// sent nothing in time (or closed). Keeps silent connections from holding a slot.
pub async fn first_byte(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut b)).await,
        Ok(Ok(n)) if n > 0
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_admits_up_to_its_ceiling_and_frees_on_drop() {
        let f = InFlight::new(2);
        let a = f.try_acquire().unwrap();
        let _b = f.try_acquire().unwrap();
        assert!(f.try_acquire().is_none());
        assert_eq!(f.current(), 2);
        drop(a);
        assert!(f.try_acquire().is_some());
        assert_eq!(f.current(), 1);
    }

    #[test]
    fn limits_are_validated_naming_the_key() {
        let l = LimitSettings {
            max_in_flight: 0,
            ..Default::default()
        };
        assert!(
            l.validate()
                .unwrap_err()
                .starts_with("limits.max_in_flight")
        );
        let l = LimitSettings {
            header_timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(
            l.validate()
                .unwrap_err()
                .starts_with("limits.header_timeout")
        );
        assert!(LimitSettings::default().validate().is_ok());
    }
}
