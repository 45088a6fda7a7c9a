//! Every way a booking request can fail, and the one `match` that turns each into a
//! problem+json response.
//!
//! [`PeerError`] (customer or room could not answer) lives here rather than beside the
//! [`Directory`](crate::directory::Directory) that produces it: the directory returns the
//! domain types of `model`, `model` reports [`BookingError`], and `BookingError` wraps
//! `PeerError`, so defining it in `directory` made the modules a cycle.
//!
//! Internal detail (SQL errors, peer error text) is logged here, once, and never copied
//! into the response body.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hotel_common::{Problem, problem::FieldError};
use hotel_service::database_problem;
use uuid::Uuid;

/// Why a peer could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    /// Nothing came back: connect refused, reset, or timed out.
    #[error("{service} unreachable: {reason}")]
    Unreachable {
        /// customer or room.
        service: &'static str,
        /// The transport error, for the log.
        reason: String,
    },
    /// The peer said it cannot serve now (5xx or 429).
    #[error("{service} answered {status}")]
    Unavailable {
        /// customer or room.
        service: &'static str,
        /// The status it answered.
        status: u16,
    },
    /// The peer answered something booking cannot use (an unexpected 4xx, a body that is
    /// not the documented JSON).
    #[error("{service} answered unexpectedly: {reason}")]
    Unexpected {
        /// customer or room.
        service: &'static str,
        /// What was wrong, for the log.
        reason: String,
    },
}

impl PeerError {
    /// The peer's role name.
    pub fn service(&self) -> &'static str {
        match self {
            PeerError::Unreachable { service, .. }
            | PeerError::Unavailable { service, .. }
            | PeerError::Unexpected { service, .. } => service,
        }
    }

    /// Whether a retry later may succeed (503) rather than the peer being broken (502).
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, PeerError::Unexpected { .. })
    }
}

/// A failed booking operation.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// A field parsed but holds an impossible value (422).
    #[error("{field}: {message}")]
    Invalid {
        /// The JSON field or query parameter at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A query parameter is missing or malformed (400).
    #[error("query parameter {field}: {message}")]
    BadQuery {
        /// The parameter at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The `Idempotency-Key` header is not 1 to 255 printable ASCII characters (400).
    #[error("Idempotency-Key: {0}")]
    BadIdempotencyKey(&'static str),
    /// No booking has this id (404).
    #[error("booking {0} does not exist")]
    NotFound(Uuid),
    /// The room already has a confirmed booking on some of the nights asked (409).
    #[error("room {room_id} is already booked from {check_in} to {check_out}")]
    Overlap {
        /// The room asked for.
        room_id: Uuid,
        /// First night of the conflicting booking.
        check_in: String,
        /// Departure day of the conflicting booking.
        check_out: String,
    },
    /// The `Idempotency-Key` was used before with a different body (422).
    #[error("Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    /// A request with the same `Idempotency-Key` is still being processed (409).
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyKeyInFlight,
    /// Customer or room could not be asked (503) or answered nonsense (502).
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A bug or corrupted row: a 500 whose cause is only logged.
    #[error("internal: {0}")]
    Internal(String),
    /// `If-Match` does not name the booking's current version (412, already phrased by
    /// `hotel_common::conditional`). Boxed: a `Problem` is large.
    #[error("precondition failed")]
    PreconditionFailed(Box<Problem>),
}

impl BookingError {
    /// A 422 naming `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        BookingError::Invalid {
            field,
            message: message.into(),
        }
    }

    /// A 400 naming the query parameter `field`.
    pub fn bad_query(field: &'static str, message: impl Into<String>) -> Self {
        BookingError::BadQuery {
            field,
            message: message.into(),
        }
    }

    /// The problem document a client sees for this error.
    pub fn to_problem(&self) -> Problem {
        match self {
            BookingError::Invalid { field, message } => Problem::invalid_field(*field, message),
            BookingError::BadQuery { field, message } => {
                let mut p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-query",
                    format!("query parameter {field}: {message}"),
                );
                p.errors.push(FieldError {
                    field: (*field).to_owned(),
                    message: message.clone(),
                });
                p
            }
            BookingError::BadIdempotencyKey(why) => {
                let mut p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-idempotency-key",
                    format!("Idempotency-Key {why}"),
                );
                p.errors.push(FieldError {
                    field: "Idempotency-Key".to_owned(),
                    message: (*why).to_owned(),
                });
                p
            }
            BookingError::NotFound(id) => Problem::not_found("booking", id),
            BookingError::Overlap {
                room_id,
                check_in,
                check_out,
            } => {
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    "booking-conflict",
                    format!(
                        "room {room_id} is already booked for nights from {check_in} to {check_out}"
                    ),
                )
                .with_title("Room already booked");
                // Name the clashing dates so a client can offer other nights; the other
                // booking's id and customer stay private.
                p.errors.push(FieldError {
                    field: "check_in".to_owned(),
                    message: format!("overlaps a booking from {check_in} to {check_out}"),
                });
                p
            }
            BookingError::IdempotencyKeyReused => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "this Idempotency-Key was already used with a different request body",
                );
                p.errors.push(FieldError {
                    field: "Idempotency-Key".to_owned(),
                    message: "was used with a different body".to_owned(),
                });
                p
            }
            BookingError::IdempotencyKeyInFlight => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                "a request with this Idempotency-Key is still in progress; retry later",
            )
            .with_retry_after(1),
            BookingError::Peer(e) => {
                tracing::warn!(error = %e, "peer call failed");
                if e.is_unavailable() {
                    Problem::unavailable(
                        format!("the {} service is unavailable; retry later", e.service()),
                        1,
                    )
                } else {
                    Problem::new(
                        StatusCode::BAD_GATEWAY,
                        "bad-gateway",
                        format!("the {} service gave an unexpected answer", e.service()),
                    )
                }
            }
            BookingError::Database(e) => {
                database_problem(e, "the booking database is busy; retry later")
            }
            BookingError::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                Problem::internal()
            }
            BookingError::PreconditionFailed(p) => p.as_ref().clone(),
        }
    }
}

impl From<BookingError> for Problem {
    fn from(e: BookingError) -> Self {
        e.to_problem()
    }
}

impl IntoResponse for BookingError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}
