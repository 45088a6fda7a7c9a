//! The stack's errors and their one mapping to problem+json.
//!
//! Inside the tower stacks errors are `BoxError`s; each layer that fails on its own
//! (balancer, per-try timeout, deadline) returns a small type from this module, and
//! [`classify`] turns whatever leaves the stack (at the gateway's edge, or out of an
//! [`UpstreamClient`](crate::UpstreamClient)) into a status, once.

use hotel_common::Problem;
use http::StatusCode;

/// Boxed error inside tower stacks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// No instance of the service can take a request now: none known, or every breaker open.
#[derive(Debug, thiserror::Error)]
#[error("no ready instance of {service} ({known} known)")]
pub(crate) struct NoReadyInstance {
    /// The service.
    pub service: std::sync::Arc<str>,
    /// How many instances are known (all of them ejected when above zero).
    pub known: usize,
}

/// One attempt took longer than the per-try timeout.
#[derive(Debug, Default, thiserror::Error)]
#[error("the attempt timed out")]
pub(crate) struct PerTryTimeout;

/// The request's overall deadline passed.
#[derive(Debug, Default, thiserror::Error)]
#[error("the request deadline passed")]
pub(crate) struct DeadlineExceeded;

/// What kind of failure an attempt error is, for retries, breakers and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Nothing was sent: the connection could not be opened.
    Connect,
    /// The per-try timeout fired.
    Timeout,
    /// No instance was ready.
    NoInstance,
    /// The deadline passed.
    Deadline,
    /// Anything else on the wire (reset, bad response) after the request may have been sent.
    Transport,
}

impl FailureKind {
    /// Classifies a stack error.
    pub(crate) fn of(e: &(dyn std::error::Error + 'static)) -> FailureKind {
        if e.is::<PerTryTimeout>() {
            FailureKind::Timeout
        } else if e.is::<NoReadyInstance>() {
            FailureKind::NoInstance
        } else if e.is::<DeadlineExceeded>() || e.is::<tower::timeout::error::Elapsed>() {
            FailureKind::Deadline
        } else if let Some(c) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if c.is_connect() {
                FailureKind::Connect
            } else {
                FailureKind::Transport
            }
        } else if let Some(inner) = e.source() {
            FailureKind::of(inner)
        } else {
            FailureKind::Transport
        }
    }

    /// A short label for metrics and spans.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect_error",
            FailureKind::Timeout => "timeout",
            FailureKind::NoInstance => "no_instance",
            FailureKind::Deadline => "deadline",
            FailureKind::Transport => "transport_error",
        }
    }
}

/// Maps an error that reached the edge to the problem the client sees. Internal detail
/// stays in the log; the body says what happened in client terms.
pub fn classify(e: &BoxError, service: &str) -> Problem {
    match FailureKind::of(e.as_ref()) {
        FailureKind::Deadline | FailureKind::Timeout => Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            "deadline-exceeded",
            format!("{service} did not answer in time"),
        ),
        FailureKind::NoInstance => {
            Problem::unavailable(format!("no healthy instance of {service} is available"), 1)
        }
        FailureKind::Connect | FailureKind::Transport => Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unreachable",
            format!("{service} could not be reached"),
        ),
    }
}
