//! RFC 9457 `application/problem+json`: the one error body every process answers with.
//!
//! A `Problem` carries only what a client may see. Internal detail is logged where the
//! error is classified and never copied into `detail`. The request id and trace id are
//! filled in from the request's [`crate::context`] when the response is built, so handlers
//! never thread them by hand.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that failed validation, named by its JSON path (`guests`, `items[2].name`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path or query/path parameter name of the offending field.
    pub field: String,
    /// What is wrong with it, in words a client developer can act on.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; `about:blank` style tags under `/problems/`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    pub title: String,
    /// HTTP status code, repeated in the body as RFC 9457 recommends.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// Fields that failed validation, when the problem is about input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The request id (`x-request-id`) of the request that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The W3C trace id of the request that failed, to find it in Jaeger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Seconds after which a retry may succeed (sent as `Retry-After` too).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with the given status; `kind` is a short slug such as `not-found`.
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Self {
        Problem {
            kind: format!("/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            request_id: None,
            trace_id: None,
            retry_after: None,
        }
    }

    /// 400: the request could not be parsed.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 422: the request parsed but a field holds an impossible value.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        let mut p = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            format!("{field}: {message}"),
        );
        p.errors.push(FieldError { field, message });
        p
    }

    /// 404 for the named resource.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} {id} does not exist"),
        )
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 401 with the given detail.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
        p.retry_after = Some(retry_after_secs);
        p
    }

    /// 500 whose detail says nothing about the cause; log the cause before calling this.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed to handle the request; it has been logged",
        )
    }

    /// Sets the title (the default is the status's reason phrase).
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Adds a `Retry-After` in seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The status as a `StatusCode` (500 if the stored number is not a valid status).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Serialises the body, filling request and trace ids from the current request context.
    pub fn to_body(&self) -> Vec<u8> {
        let mut p = self.clone();
        if let Some(ctx) = crate::context::current() {
            p.request_id.get_or_insert(ctx.request_id);
            if let Some(t) = ctx.trace_id {
                p.trace_id.get_or_insert(t);
            }
        }
        if p.trace_id.is_none() {
            p.trace_id = crate::telemetry::current_trace_id();
        }
        serde_json::to_vec(&p).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Builds an `http::Response` with any body type that can come from bytes.
    pub fn to_http<B: From<Vec<u8>>>(&self) -> http::Response<B> {
        let mut res = http::Response::new(B::from(self.to_body()));
        *res.status_mut() = self.status_code();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl std::error::Error for Problem {}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let res: http::Response<axum::body::Body> = self.to_http();
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_names_the_field_in_detail_and_errors() {
        let p = Problem::invalid_field("guests", "must be between 1 and 10");
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "guests");
        assert!(p.detail.contains("guests"));
    }

    #[test]
    fn unavailable_sets_retry_after_header() {
        let res: http::Response<Vec<u8>> = Problem::unavailable("no instance", 1).to_http();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }
}
