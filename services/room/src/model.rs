//! The room resource as clients see it, the bodies they send, and the rules its fields
//! must follow.

use crate::error::Error;
use hotel_common::extract::non_null;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// Longest room number, in characters, after trimming.
pub const MAX_NUMBER_CHARS: usize = 16;
/// Most guests a room can hold.
pub const MAX_CAPACITY: i64 = 10;
/// Highest nightly rate accepted (100 000.00): anything above is a typo, not a price.
pub const MAX_RATE_CENTS: i64 = 10_000_000;

/// What sort of room it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomKind {
    /// One bed for one.
    Single,
    /// One bed for two, or two beds.
    Double,
    /// Several rooms.
    Suite,
}

/// Whether a room can be booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    /// Bookable.
    Available,
    /// Temporarily not bookable; can go back to available.
    Maintenance,
    /// Taken out of service for good (by `DELETE`); cannot change any more.
    Retired,
}

impl RoomKind {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Single => "single",
            RoomKind::Double => "double",
            RoomKind::Suite => "suite",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [RoomKind::Single, RoomKind::Double, RoomKind::Suite]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

impl RoomStatus {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomStatus::Available => "available",
            RoomStatus::Maintenance => "maintenance",
            RoomStatus::Retired => "retired",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        [
            RoomStatus::Available,
            RoomStatus::Maintenance,
            RoomStatus::Retired,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Room {
    /// Assigned by the service; kept when the room is retired.
    pub id: Uuid,
    /// The number on the door, unique among rooms in service ignoring case.
    #[schema(example = "101")]
    pub number: String,
    /// What sort of room it is.
    pub kind: RoomKind,
    /// Most guests, 1 to 10.
    #[schema(example = 2, minimum = 1, maximum = 10)]
    pub capacity: i64,
    /// Price of one night in cents.
    #[schema(example = 12900)]
    pub nightly_rate_cents: i64,
    /// Whether it can be booked.
    pub status: RoomStatus,
    /// RFC 3339 UTC creation time.
    #[schema(format = DateTime, example = "2026-11-29T01:45:13.123456Z")]
    pub created_at: String,
}

/// Body of `POST /rooms`. New rooms are available.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoom {
    /// 1 to 16 characters after trimming.
    #[schema(example = "101", min_length = 1, max_length = 16)]
    pub number: String,
    /// single, double or suite.
    pub kind: RoomKind,
    /// 1 to 10.
    #[schema(example = 2, minimum = 1, maximum = 10)]
    pub capacity: i64,
    /// 1 to 10 000 000.
    #[schema(example = 12900, minimum = 1, maximum = 10_000_000)]
    pub nightly_rate_cents: i64,
}

/// Body of `PATCH /rooms/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    /// New number, same rules as on create.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, min_length = 1, max_length = 16)]
    pub number: Option<String>,
    /// New kind.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub kind: Option<RoomKind>,
    /// New capacity, 1 to 10.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, minimum = 1, maximum = 10)]
    pub capacity: Option<i64>,
    /// New nightly rate, 1 to 10 000 000 cents.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false, minimum = 1, maximum = 10_000_000)]
    pub nightly_rate_cents: Option<i64>,
    /// available or maintenance; retiring is `DELETE`.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub status: Option<RoomStatus>,
}

/// Query of `GET /rooms`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only rooms of this kind.
    pub kind: Option<RoomKind>,
    /// Only rooms holding at least this many guests (1 to 10).
    #[param(minimum = 1, maximum = 10)]
    pub min_capacity: Option<i64>,
    /// Only rooms in this status.
    pub status: Option<RoomStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A checked room number: trimmed, 1..=16 characters, no control characters.
pub fn valid_number(raw: &str) -> Result<String, Error> {
    let number = raw.trim();
    if number.is_empty() {
        return Err(Error::invalid("number", "must not be empty"));
    }
    if number.chars().count() > MAX_NUMBER_CHARS {
        return Err(Error::invalid(
            "number",
            format!("must be at most {MAX_NUMBER_CHARS} characters"),
        ));
    }
    if number.chars().any(char::is_control) {
        return Err(Error::invalid(
            "number",
            "must not contain control characters",
        ));
    }
    Ok(number.to_owned())
}

/// The form of a room number that uniqueness compares.
pub fn number_key(number: &str) -> String {
    number.trim().to_lowercase()
}

/// Checks a capacity given as `field` (`capacity` or `min_capacity`).
pub fn valid_capacity(field: &'static str, n: i64) -> Result<i64, Error> {
    if (1..=MAX_CAPACITY).contains(&n) {
        Ok(n)
    } else {
        Err(Error::invalid(
            field,
            format!("must be between 1 and {MAX_CAPACITY}"),
        ))
    }
}

/// Checks a nightly rate in cents.
pub fn valid_rate(n: i64) -> Result<i64, Error> {
    if (1..=MAX_RATE_CENTS).contains(&n) {
        Ok(n)
    } else {
        Err(Error::invalid(
            "nightly_rate_cents",
            format!("must be between 1 and {MAX_RATE_CENTS}"),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_trimmed_and_bounded_in_characters() {
        assert_eq!(valid_number(" 12A ").unwrap(), "12A");
        assert!(valid_number("").is_err());
        assert!(valid_number(&"№".repeat(16)).is_ok());
        assert!(valid_number(&"1".repeat(17)).is_err());
        assert!(valid_number("1\t2").is_err());
        assert_eq!(number_key("12A"), number_key(" 12a"));
    }

    #[test]
    fn kinds_and_statuses_round_trip_through_their_stored_form() {
        for k in [RoomKind::Single, RoomKind::Double, RoomKind::Suite] {
            assert_eq!(RoomKind::parse(k.as_str()), Some(k));
        }
        for s in [
            RoomStatus::Available,
            RoomStatus::Maintenance,
            RoomStatus::Retired,
        ] {
            assert_eq!(RoomStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(RoomKind::parse("Suite"), None);
    }
}
