//! Extractors whose rejections are problem+json documents naming the offending field.
//!
//! Axum's own `Json`, `Query` and `Path` answer plain text; these wrap the same parsing
//! with `serde_path_to_error`, so `{"guests": "two"}` answers 422 with `guests` named,
//! malformed JSON answers 400 with the line and column, and a body over the limit set by
//! `DefaultBodyLimit` answers 413.

use crate::problem::{FieldError, Problem};
use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{StatusCode, header, request::Parts};
use serde::{Serialize, de::DeserializeOwned};

/// JSON body extractor and response, with problem+json rejections. Bodies must be JSON
/// objects: a top-level array answers 422 naming `body`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let ct = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                ct == "application/json" || ct.ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_problem)?;
        // serde lets a struct be read from an array of its fields in order, so
        // `["Ada", "ada@example.com"]` would pass as a body. Request bodies here are
        // objects; refuse arrays before that quirk can apply.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(Problem::invalid_field("body", "must be a JSON object"));
        }
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn body_problem(e: BytesRejection) -> Problem {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "the request body is larger than this endpoint accepts",
        )
    } else {
        Problem::bad_request("the request body could not be read")
    }
}

/// Parses a JSON document, naming the field that failed.
#[allow(clippy::result_large_err)] // the error path is the rare one; a Problem is its body
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(v) => Ok(v),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            use serde_json::error::Category;
            match inner.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    Err(Problem::bad_request(format!("malformed JSON: {inner}"))
                        .with_title("Malformed JSON"))
                }
                Category::Data => {
                    let message = strip_position(&inner.to_string());
                    let field = if path == "." {
                        field_from_message(&message).unwrap_or_else(|| "body".to_owned())
                    } else {
                        path
                    };
                    let mut p = Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "validation-failed",
                        format!("{field}: {message}"),
                    );
                    p.errors.push(FieldError { field, message });
                    Err(p)
                }
            }
        }
    }
}

/// serde's messages end with " at line 1 column 9": useful for syntax, noise for data.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// For errors at the top level (a missing or unknown field) the name is in the message.
fn field_from_message(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(msg[start..end].to_owned())
}

/// Query-string extractor with problem+json rejections naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Ok(Query(v)),
            Err(err) => {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                let field = if path == "." {
                    field_from_message(&message).unwrap_or_else(|| "query".to_owned())
                } else {
                    path
                };
                let mut p = Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-query",
                    format!("query parameter {field}: {message}"),
                );
                p.errors.push(FieldError { field, message });
                Err(p)
            }
        }
    }
}

/// Path extractor whose rejection is problem+json (a non-UUID id answers 400 naming it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(rej) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-path",
                rej.body_text(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Booking {
        guests: u8,
        nested: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u8,
    }

    #[test]
    fn wrong_type_names_the_field() {
        let p = parse_json::<Booking>(br#"{"guests":"two"}"#).unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.errors[0].field, "guests");
    }

    #[test]
    fn nested_wrong_type_names_the_path() {
        let p = parse_json::<Booking>(br#"{"guests":1,"nested":{"n":-1}}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "nested.n");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let p = parse_json::<Booking>(br#"{"guests":1,"colour":"red"}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "colour", "{p:?}");
        let p = parse_json::<Booking>(br#"{}"#).unwrap_err();
        assert_eq!(p.errors[0].field, "guests", "{p:?}");
    }

    #[test]
    fn malformed_json_is_a_400() {
        let p = parse_json::<Booking>(br#"{"guests":"#).unwrap_err();
        assert_eq!(p.status, 400);
    }
}

/// `deserialize_with` for optional fields of partial updates: a field left out means
/// "keep", while an explicit `null` is refused (and named) rather than silently read as
/// "keep", since no field of a resource can be cleared. Use with `#[serde(default)]`.
pub fn non_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    match <Option<T> as serde::Deserialize>::deserialize(deserializer)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(
            "must not be null; leave the field out to keep its value",
        )),
    }
}

#[cfg(test)]
mod non_null_tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        #[serde(default, deserialize_with = "non_null")]
        name: Option<String>,
    }

    #[test]
    fn an_explicit_null_is_a_422_naming_the_field_and_absence_is_none() {
        assert_eq!(parse_json::<Patch>(br#"{}"#).unwrap().name, None);
        assert_eq!(
            parse_json::<Patch>(br#"{"name":"x"}"#)
                .unwrap()
                .name
                .as_deref(),
            Some("x")
        );
        let p = parse_json::<Patch>(br#"{"name":null}"#).unwrap_err();
        assert_eq!((p.status, p.errors[0].field.as_str()), (422, "name"));
    }
}
