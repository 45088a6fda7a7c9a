//! The room resource as clients see it, the bodies they send, and the rules its fields
//! must follow.

use crate::error::Error;
use hotel_common::extract::non_null;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

hotel_common::text_field!(
    /// The number on a room's door: free text (see `hotel_common::input`) of 1 to 16
    /// characters, kept trimmed; unique among rooms in service ignoring case.
    pub RoomNumber, max = 16, example = "101"
);

hotel_common::whole_number_field!(
    /// Most guests a room holds.
    pub Capacity, 1..=10, example = 2
);

hotel_common::whole_number_field!(
    /// Price of one night in cents, at most 100 000.00: anything above is a typo, not a
    /// price.
    pub RateCents, 1..=10_000_000, example = 12900
);

/// Most guests a room can hold.
pub const MAX_CAPACITY: i64 = Capacity::MAX;

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
    /// The number on the door.
    pub number: RoomNumber,
    /// single, double or suite.
    pub kind: RoomKind,
    /// Most guests, 1 to 10.
    pub capacity: Capacity,
    /// Price of one night in cents, 1 to 10 000 000.
    pub nightly_rate_cents: RateCents,
}

/// The statuses a `PATCH` may set: retiring is `DELETE`'s alone, so `retired` is not
/// offered (and answers 422 naming `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PatchStatus {
    /// Bookable.
    Available,
    /// Temporarily not bookable.
    Maintenance,
}

impl From<PatchStatus> for RoomStatus {
    fn from(s: PatchStatus) -> Self {
        match s {
            PatchStatus::Available => RoomStatus::Available,
            PatchStatus::Maintenance => RoomStatus::Maintenance,
        }
    }
}

/// Body of `PATCH /rooms/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomPatch {
    /// New number, same rules as on create.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub number: Option<RoomNumber>,
    /// New kind.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub kind: Option<RoomKind>,
    /// New capacity, 1 to 10.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub capacity: Option<Capacity>,
    /// New nightly rate, 1 to 10 000 000 cents.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub nightly_rate_cents: Option<RateCents>,
    /// available or maintenance; retiring is `DELETE`.
    #[serde(default, deserialize_with = "non_null")]
    #[schema(nullable = false)]
    pub status: Option<PatchStatus>,
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
    /// `next_cursor` of the previous page; absent or empty means the first page.
    #[param(max_length = 512, pattern = "^[0-9a-f]*$")]
    pub cursor: Option<String>,
}

/// The form of a room number that uniqueness compares.
pub fn number_key(number: &str) -> String {
    number.trim().to_lowercase()
}

/// Checks the `min_capacity` query parameter: 1 to 10.
pub fn valid_min_capacity(n: i64) -> Result<i64, Error> {
    if (1..=MAX_CAPACITY).contains(&n) {
        Ok(n)
    } else {
        Err(Error::invalid(
            "min_capacity",
            format!("must be between 1 and {MAX_CAPACITY}"),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_trimmed_and_bounded_in_characters_before_trimming() {
        assert_eq!(RoomNumber::parse(" 12A ").unwrap().as_str(), "12A");
        assert!(RoomNumber::parse("").is_err());
        assert!(RoomNumber::parse(&"№".repeat(16)).is_ok());
        assert!(RoomNumber::parse(&"1".repeat(17)).is_err());
        assert!(RoomNumber::parse(&format!(" {} ", "1".repeat(15))).is_err());
        assert!(RoomNumber::parse("1\t2").is_err());
        assert!(RoomNumber::parse("\u{a0}").is_err());
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
