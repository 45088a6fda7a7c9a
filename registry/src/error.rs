//! The registry's errors and their one mapping to problem+json responses.

use axum::response::{IntoResponse, Response};
use hotel_common::{Problem, problem::FieldError};
use http::{HeaderValue, StatusCode, header};

/// Realm named in `WWW-Authenticate` challenges.
pub const REALM: &str = "hotel-registry";

/// Everything a registry request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A service or instance name in the path is malformed.
    #[error("{field}: {message}")]
    BadName {
        /// `service` or `instance`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A query parameter could not be used.
    #[error("query parameter {field}: {message}")]
    BadQuery {
        /// The parameter name.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A body field holds an impossible value.
    #[error("{field}: {message}")]
    InvalidField {
        /// JSON path of the field (`url`, `metadata.zone`, `lease`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Heartbeat or deregistration of an instance the registry does not hold (never
    /// registered, expired, or registered with a registry that has since restarted).
    #[error("instance {service}/{instance} is not registered")]
    UnknownInstance {
        /// Service name.
        service: String,
        /// Instance name.
        instance: String,
    },
    /// A configured limit (`max_instances`, `max_services`) is reached.
    #[error("registry is full: {0}")]
    Full(String),
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    MissingToken,
    /// A bearer token that is not the registry's.
    #[error("wrong bearer token")]
    WrongToken,
}

impl RegistryError {
    /// The problem document a client sees.
    pub fn to_problem(&self) -> Problem {
        match self {
            RegistryError::BadName { field, message } => {
                let mut p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-path",
                    format!("{field}: {message}"),
                );
                p.errors.push(FieldError {
                    field: (*field).to_owned(),
                    message: message.clone(),
                });
                p
            }
            RegistryError::BadQuery { field, message } => {
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
            RegistryError::InvalidField { field, message } => {
                Problem::invalid_field(field.clone(), message.clone())
            }
            RegistryError::UnknownInstance { service, instance } => Problem::new(
                StatusCode::NOT_FOUND,
                "not-registered",
                format!(
                    "instance {instance} of service {service} is not registered; register it again"
                ),
            ),
            RegistryError::Full(what) => {
                Problem::unavailable(format!("the registry is full: {what}"), 5)
            }
            RegistryError::MissingToken => Problem::unauthorized(
                "this endpoint needs `Authorization: Bearer <registry token>`",
            ),
            RegistryError::WrongToken => {
                Problem::unauthorized("the bearer token is not the registry's token")
            }
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let mut res = self.to_problem().into_response();
        let challenge = match self {
            RegistryError::MissingToken => Some(format!("Bearer realm=\"{REALM}\"")),
            RegistryError::WrongToken => {
                Some(format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""))
            }
            _ => None,
        };
        if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        res
    }
}
