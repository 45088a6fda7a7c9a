//! The stack's errors and their one mapping to problem+json.
//!
//! Inside the tower stacks errors are `BoxError`s; each layer that fails on its own
//! (balancer, per-try timeout, deadline) returns a small type from this module, and
//! [`classify`] turns whatever leaves the stack (at the gateway's edge, or out of an
//! [`UpstreamClient`](crate::UpstreamClient)) into a status, once.

use crate::body::RequestBodyError;
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

/// Whether an attempt ended because the request's deadline passed (see
/// [`crate::timeout`]): the attempt is then cancelled, not failed, so it counts neither
/// for nor against its instance.
pub(crate) fn cut_by_deadline<T>(out: &Result<T, BoxError>) -> bool {
    matches!(out, Err(e) if e.is::<DeadlineExceeded>())
}

/// The instance stopped reading the request body and closed or reset the connection
/// while it was being sent: what a server does when a body passes its own limit (it
/// answers 413 early, then closes). Made by [`Observe`](crate::endpoint) from the
/// client's write error, for requests that carried a body.
#[derive(Debug, thiserror::Error)]
#[error("the instance stopped reading the request body")]
pub(crate) struct BodyRefused(#[source] pub BoxError);

/// Whether `e` says that writing the request to the connection failed (the peer closed
/// or reset it), as opposed to reading the answer.
pub(crate) fn is_write_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(a) = e.downcast_ref::<crate::h1::AnswerError>() {
            return matches!(a, crate::h1::AnswerError::Write(_));
        }
        cur = e.source();
    }
    false
}

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
    /// The client's request body failed (past the route's limit, or cut off): nothing
    /// the instance did.
    RequestBody,
    /// The instance stopped reading the request body (its own limit): it answered,
    /// and is not failing.
    BodyRefused,
}

impl FailureKind {
    /// Classifies a stack error.
    pub(crate) fn of(e: &(dyn std::error::Error + 'static)) -> FailureKind {
        // The client's body may be the cause deep inside a client error: look for it
        // first, so it is never taken for a failure of the instance.
        if request_body_error(e).is_some() {
            return FailureKind::RequestBody;
        }
        Self::of_attempt(e)
    }

    fn of_attempt(e: &(dyn std::error::Error + 'static)) -> FailureKind {
        if e.is::<BodyRefused>() {
            FailureKind::BodyRefused
        } else if e.is::<PerTryTimeout>() {
            FailureKind::Timeout
        } else if e.is::<NoReadyInstance>() {
            FailureKind::NoInstance
        } else if e.is::<DeadlineExceeded>() {
            FailureKind::Deadline
        } else if let Some(c) = e.downcast_ref::<crate::pool::ClientError>() {
            if c.is_connect() {
                FailureKind::Connect
            } else {
                FailureKind::Transport
            }
        } else if let Some(inner) = e.source() {
            FailureKind::of_attempt(inner)
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
            FailureKind::RequestBody => "cancelled",
            FailureKind::BodyRefused => "body_refused",
        }
    }

    /// Whether this says something bad about the instance (breaker, stall watch,
    /// failure counts). A client's broken body and an instance refusing a body past its
    /// own limit do not.
    pub(crate) fn is_instance_failure(self) -> bool {
        !matches!(self, FailureKind::RequestBody | FailureKind::BodyRefused)
    }
}

/// The client's [`RequestBodyError`] anywhere in `e`'s chain.
fn request_body_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a RequestBodyError> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<RequestBodyError>() {
            return Some(b);
        }
        cur = e.source();
    }
    None
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
        FailureKind::RequestBody => match request_body_error(e.as_ref()) {
            Some(RequestBodyError::TooLarge { limit }) => too_large(*limit),
            _ => Problem::bad_request("the request body could not be read"),
        },
        FailureKind::BodyRefused => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the request body is larger than {service} accepts"),
        ),
        FailureKind::Connect | FailureKind::Transport => Problem::new(
            StatusCode::BAD_GATEWAY,
            "upstream-unreachable",
            format!("{service} could not be reached"),
        ),
    }
}

/// The 413 for a body longer than `limit` bytes (the gateway's own refusals use it too).
pub fn too_large(limit: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than {limit} bytes"),
    )
}
