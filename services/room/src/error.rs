//! Everything a room request can fail with, turned into problem+json in one `match`.

use axum::response::{IntoResponse, Response};
use hotel_common::Problem;
use hotel_service::database_problem;
use uuid::Uuid;

/// Why a room request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field parsed but holds an impossible value (422 naming it).
    #[error("{field}: {message}")]
    Invalid {
        /// The JSON field or query parameter at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// No room has this id (404).
    #[error("room {0} not found")]
    NotFound(Uuid),
    /// Another room in service already has this number, compared case-insensitively (409).
    #[error("room number already in use")]
    NumberTaken,
    /// The room is retired and can no longer change (409).
    #[error("room {0} is retired")]
    Retired(Uuid),
    /// A problem already phrased for the client, such as a bad cursor or limit.
    /// Boxed because a `Problem` is large and errors travel through every `?`.
    #[error("{0}")]
    Client(Box<Problem>),
    /// The database failed; the detail is logged, never sent.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// A 422 naming `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            message: message.into(),
        }
    }

    /// The problem document a client sees.
    pub fn to_problem(&self) -> Problem {
        match self {
            Error::Invalid { field, message } => Problem::invalid_field(*field, message.clone()),
            Error::NotFound(id) => Problem::not_found("room", id),
            Error::NumberTaken => Problem::conflict(
                "another room in service already has this number (numbers ignore case)",
            ),
            Error::Retired(id) => {
                Problem::conflict(format!("room {id} is retired and can no longer be changed"))
            }
            Error::Client(p) => p.as_ref().clone(),
            Error::Database(e) => database_problem(e, "the room database is busy; retry shortly"),
        }
    }
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::Client(Box::new(p))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}
