//! Keyset pagination shared by every list endpoint: `{"items": [...], "next_cursor": ...}`.
//!
//! Lists are ordered by `(created_at, id)` and a cursor is the key of the last item
//! returned, so a page never skips or repeats a row even while rows are inserted, unlike
//! `OFFSET`. The cursor is opaque to clients (hex of a small JSON document): they may only
//! hand it back. A cursor that does not decode answers 400 naming `cursor`.

// `Problem` is the error every handler answers with; it is large, but only on the cold path.
#![allow(clippy::result_large_err)]

use crate::problem::{FieldError, Problem};
use http::StatusCode;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// Items per page when the client gives no `limit`.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest `limit` a client may ask for.
pub const MAX_LIMIT: u32 = 100;

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items of this page, in list order.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The position of a row in `(created_at, id)` order: the usual list key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Keyset {
    /// Creation time in microseconds since the Unix epoch.
    pub t: i64,
    /// The row's id, breaking ties between rows created in the same microsecond.
    pub id: Uuid,
}

/// Checks a client's `limit`: absent means [`DEFAULT_LIMIT`], otherwise 1..=[`MAX_LIMIT`]
/// (422 naming `limit`).
pub fn limit(raw: Option<i64>) -> Result<u32, Problem> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=i64::from(MAX_LIMIT)).contains(&n) => Ok(n as u32),
        Some(_) => Err(Problem::invalid_field(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// Encodes a cursor key as an opaque string.
pub fn encode_cursor<K: Serialize>(key: &K) -> String {
    // Serialising a plain struct of numbers and strings cannot fail.
    let json = serde_json::to_vec(key).unwrap_or_default();
    hex::encode(json)
}

/// Decodes a cursor made by [`encode_cursor`]; anything else answers 400 naming `cursor`.
pub fn decode_cursor<K: DeserializeOwned>(cursor: &str) -> Result<K, Problem> {
    let bad = || {
        let message = "is not a cursor this list returned".to_owned();
        let mut p = Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-query",
            format!("query parameter cursor: {message}"),
        );
        p.errors.push(FieldError {
            field: "cursor".to_owned(),
            message,
        });
        p
    };
    // Cursors are short; refusing long ones early bounds the work a client can cause.
    if cursor.len() > 512 {
        return Err(bad());
    }
    let bytes = hex::decode(cursor).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// Decodes the optional `cursor` of a list request: absent or empty means the first page
/// (`None`), anything else must be a cursor this list returned (400 naming `cursor`).
pub fn after<K: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<K>, Problem> {
    match cursor {
        None | Some("") => Ok(None),
        Some(c) => decode_cursor(c).map(Some),
    }
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with `LIMIT limit + 1`: the extra row only tells that
    /// another page exists, and the cursor is the key of the last row kept.
    pub fn from_rows<K: Serialize>(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let limit = limit as usize;
        let next_cursor = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|last| encode_cursor(&key(last)))
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    /// Converts every item, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }

    /// Builds a page from database rows fetched in [`Keyset`] order with
    /// `LIMIT limit + 1`, `convert` turning each row into its item and key. Every row is
    /// converted, the extra one too, so a corrupt stored row fails the page rather than
    /// hiding behind the cursor.
    pub fn from_keyset_rows<R, E>(
        rows: Vec<R>,
        limit: u32,
        convert: impl FnMut(R) -> Result<(T, Keyset), E>,
    ) -> Result<Self, E> {
        let keyed = rows
            .into_iter()
            .map(convert)
            .collect::<Result<Vec<_>, E>>()?;
        Ok(Page::from_rows(keyed, limit, |(_, key)| *key).map(|(item, _)| item))
    }
}

/// The current time in microseconds since the Unix epoch: the `created_at` stored in rows
/// so that keyset order is a plain integer comparison.
pub fn now_micros() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000) as i64
}

/// Formats microseconds since the epoch as RFC 3339 UTC (`2026-11-29T01:45:13.123456Z`).
pub fn rfc3339_micros(micros: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_is_a_400_naming_cursor() {
        let key = Keyset {
            t: 42,
            id: Uuid::new_v4(),
        };
        let c = encode_cursor(&key);
        assert_eq!(decode_cursor::<Keyset>(&c).unwrap(), key);
        for bad in ["zz", "", "7b7d", &"a".repeat(600)] {
            let p = decode_cursor::<Keyset>(bad).unwrap_err();
            assert_eq!(p.status, 400);
            assert_eq!(p.errors[0].field, "cursor");
        }
    }

    #[test]
    fn an_empty_cursor_means_the_first_page() {
        assert_eq!(after::<Keyset>(Some("")).unwrap(), None);
        assert_eq!(after::<Keyset>(None).unwrap(), None);
        assert_eq!(after::<Keyset>(Some("zz")).unwrap_err().status, 400);
    }

    #[test]
    fn limit_defaults_to_20_and_refuses_0_and_101() {
        assert_eq!(limit(None).unwrap(), 20);
        assert_eq!(limit(Some(100)).unwrap(), 100);
        for bad in [0, 101, -1] {
            assert_eq!(limit(Some(bad)).unwrap_err().errors[0].field, "limit");
        }
    }

    #[test]
    fn from_rows_sets_a_cursor_only_when_a_row_was_left_over() {
        let p = Page::from_rows(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(
            decode_cursor::<i32>(p.next_cursor.as_deref().unwrap()).unwrap(),
            2
        );
        let p = Page::from_rows(vec![1, 2], 2, |n| *n);
        assert_eq!(p.next_cursor, None);
    }

    #[test]
    fn timestamps_format_as_rfc3339_with_microseconds() {
        assert_eq!(rfc3339_micros(1_500_000), "1970-01-01T00:00:01.500000Z");
    }
}
