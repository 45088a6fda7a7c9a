//! The booking service's JSON shapes (DESIGN.md section 3) and the validated stay they
//! describe.
//!
//! Requests keep dates as strings so that a bad date answers 422 naming the field with a
//! message of our own, instead of serde's; [`Stay::parse`] then turns them into dates that
//! cannot be wrong.

use crate::error::BookingError;
use serde::{Deserialize, Serialize};
use time::{Date, format_description::BorrowedFormatItem, macros::format_description};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

hotel_common::whole_number_field!(
    /// How many guests a booking is for: 1 to 10 (the largest room's capacity), and at
    /// most the room's capacity.
    pub Guests, 1..=10, example = 2
);

/// The most guests a booking may hold (the largest room's capacity).
pub const MAX_GUESTS: i64 = Guests::MAX;
/// The longest stay, in nights.
pub const MAX_NIGHTS: i64 = 30;

const ISO_DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// Body of `POST /bookings`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBooking {
    /// The customer who books (must exist in the customer service).
    pub customer_id: Uuid,
    /// The room booked (must exist, be available and hold `guests`).
    pub room_id: Uuid,
    /// First night, `YYYY-MM-DD`, from today (UTC) to `max_days_ahead` (730) days after.
    #[schema(format = Date, example = "2027-06-01")]
    pub check_in: String,
    /// Departure day, `YYYY-MM-DD`, 1 to 30 nights after `check_in`.
    #[schema(format = Date, example = "2027-06-04")]
    pub check_out: String,
    /// Number of guests, 1 to 10 and at most the room's capacity.
    pub guests: Guests,
}

/// Whether a booking holds its nights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BookingStatus {
    /// The nights are the customer's.
    Confirmed,
    /// The nights were given back.
    Cancelled,
}

impl BookingStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BookingStatus::Confirmed => "confirmed",
            BookingStatus::Cancelled => "cancelled",
        }
    }
}

/// A booking as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Booking {
    /// The booking's id.
    pub id: Uuid,
    /// Who booked.
    pub customer_id: Uuid,
    /// Which room.
    pub room_id: Uuid,
    /// First night, `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub check_in: String,
    /// Departure day, `YYYY-MM-DD` (not a night of the stay).
    #[schema(format = Date)]
    pub check_out: String,
    /// Number of guests.
    pub guests: i64,
    /// confirmed or cancelled.
    pub status: BookingStatus,
    /// Nights times the room's nightly rate at booking time, in cents.
    pub total_cents: i64,
    /// When it was booked, RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Why it was cancelled: `requested` (by `POST /bookings/{id}/cancel`) or
    /// `customer_deleted` (the customer was deleted); null while confirmed.
    pub cancel_reason: Option<CancelReason>,
}

/// Why a booking was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Cancelled through the API.
    Requested,
    /// The customer was deleted (the customer service's `hotel.customer.deleted`).
    CustomerDeleted,
}

impl CancelReason {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::CustomerDeleted => "customer_deleted",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [CancelReason::Requested, CancelReason::CustomerDeleted]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// A customer as the customer service answers it (only what booking needs; other fields
/// are ignored so that the customer service may grow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    /// The customer's id.
    pub id: Uuid,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Email address.
    #[serde(default)]
    pub email: String,
}

/// Whether a room can be booked, as the room service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoomStatus {
    /// Bookable.
    Available,
    /// Temporarily out of service: not bookable.
    Maintenance,
    /// Permanently out of service: not bookable.
    Retired,
}

/// A room as the room service answers it, passed through by `GET /availability`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Room {
    /// The room's id.
    pub id: Uuid,
    /// Room number shown to guests, such as `101`.
    pub number: String,
    /// single, double or suite.
    pub kind: String,
    /// Most guests the room holds.
    pub capacity: i64,
    /// Price of one night in cents.
    pub nightly_rate_cents: i64,
    /// available, maintenance or retired.
    pub status: RoomStatus,
    /// When the room was created, RFC 3339 UTC, when the room service tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Query of `GET /bookings`: one of `customer_id` or `room_id` is required.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this customer's bookings.
    pub customer_id: Option<Uuid>,
    /// Only this room's bookings.
    pub room_id: Option<Uuid>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page; absent or empty means the first page.
    #[param(max_length = 512, pattern = "^[0-9a-f]*$")]
    pub cursor: Option<String>,
}

/// Query of `GET /availability`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AvailabilityQuery {
    /// First night, `YYYY-MM-DD`, from today (UTC) to `max_days_ahead` days after.
    #[param(format = Date)]
    pub check_in: String,
    /// Departure day, `YYYY-MM-DD`, 1 to 30 nights after `check_in`.
    #[param(format = Date)]
    pub check_out: String,
    /// Number of guests, 1 to 10.
    #[param(minimum = 1, maximum = 10)]
    pub guests: i64,
}

/// A page of bookings (`GET /bookings`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BookingPage {
    /// Bookings in the order they were made.
    pub items: Vec<Booking>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Rooms free for the nights asked (`GET /availability`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    /// Available rooms large enough and without a confirmed booking on those nights.
    pub items: Vec<Room>,
}

/// A validated stay: `check_in` before `check_out`, 1 to 30 nights, not in the past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stay {
    /// First night.
    pub check_in: Date,
    /// Departure day.
    pub check_out: Date,
}

impl Stay {
    /// Parses and checks the two dates against `today` (UTC) and the horizon of
    /// `max_days_ahead` days, naming the field at fault.
    pub fn parse(
        check_in: &str,
        check_out: &str,
        today: Date,
        max_days_ahead: u32,
    ) -> Result<Stay, BookingError> {
        let check_in_date = parse_date("check_in", check_in)?;
        let check_out_date = parse_date("check_out", check_out)?;
        if check_in_date < today {
            return Err(BookingError::invalid(
                "check_in",
                format!("is in the past (today is {})", format_date(today)),
            ));
        }
        let last = today
            .checked_add(time::Duration::days(i64::from(max_days_ahead)))
            .unwrap_or(Date::MAX);
        if check_in_date > last {
            return Err(BookingError::invalid(
                "check_in",
                format!(
                    "is more than {max_days_ahead} days ahead (the last check_in accepted today is {})",
                    format_date(last)
                ),
            ));
        }
        let nights = (check_out_date - check_in_date).whole_days();
        if nights < 1 {
            return Err(BookingError::invalid("check_out", "must be after check_in"));
        }
        if nights > MAX_NIGHTS {
            return Err(BookingError::invalid(
                "check_out",
                format!("a stay is at most {MAX_NIGHTS} nights; this one is {nights}"),
            ));
        }
        Ok(Stay {
            check_in: check_in_date,
            check_out: check_out_date,
        })
    }

    /// Number of nights, 1 to 30.
    pub fn nights(&self) -> i64 {
        (self.check_out - self.check_in).whole_days()
    }
}

/// Checks a guest count: 1 to 10.
pub fn check_guests(guests: i64) -> Result<(), BookingError> {
    if (1..=MAX_GUESTS).contains(&guests) {
        Ok(())
    } else {
        Err(BookingError::invalid(
            "guests",
            format!("must be between 1 and {MAX_GUESTS}"),
        ))
    }
}

/// Parses a strict `YYYY-MM-DD` date (no sign, no time, no week dates).
fn parse_date(field: &'static str, raw: &str) -> Result<Date, BookingError> {
    let well_shaped = raw.len() == 10 && raw.bytes().next().is_some_and(|b| b.is_ascii_digit());
    match Date::parse(raw, ISO_DATE) {
        Ok(d) if well_shaped => Ok(d),
        _ => Err(BookingError::invalid(
            field,
            format!("{raw:?} is not a date in YYYY-MM-DD form"),
        )),
    }
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(d: Date) -> String {
    d.format(ISO_DATE).unwrap_or_default()
}

/// Today's date in UTC: the earliest allowed check-in.
pub fn today_utc() -> Date {
    time::OffsetDateTime::now_utc().date()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::date;

    const TODAY: Date = date!(2030 - 01 - 10);
    const HORIZON: u32 = 730;

    fn field_of(e: BookingError) -> String {
        match e {
            BookingError::Invalid { field, .. } => field.to_owned(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn a_stay_of_one_to_thirty_nights_from_today_is_accepted() {
        assert_eq!(
            Stay::parse("2030-01-10", "2030-01-11", TODAY, HORIZON)
                .unwrap()
                .nights(),
            1
        );
        assert_eq!(
            Stay::parse("2030-01-10", "2030-02-09", TODAY, HORIZON)
                .unwrap()
                .nights(),
            30
        );
    }

    #[test]
    fn zero_or_thirty_one_nights_or_the_past_name_the_field() {
        assert_eq!(
            field_of(Stay::parse("2030-01-12", "2030-01-12", TODAY, HORIZON).unwrap_err()),
            "check_out"
        );
        assert_eq!(
            field_of(Stay::parse("2030-01-12", "2030-01-11", TODAY, HORIZON).unwrap_err()),
            "check_out"
        );
        assert_eq!(
            field_of(Stay::parse("2030-01-10", "2030-02-10", TODAY, HORIZON).unwrap_err()),
            "check_out"
        );
        assert_eq!(
            field_of(Stay::parse("2030-01-09", "2030-01-11", TODAY, HORIZON).unwrap_err()),
            "check_in"
        );
    }

    #[test]
    fn a_check_in_past_the_horizon_names_check_in_and_the_last_day_is_accepted() {
        // 2030-01-10 + 730 days = 2032-01-10 (2032 is a leap year).
        assert!(Stay::parse("2032-01-10", "2032-01-11", TODAY, HORIZON).is_ok());
        let e = Stay::parse("2032-01-11", "2032-01-12", TODAY, HORIZON).unwrap_err();
        assert_eq!(field_of(e), "check_in");
        assert_eq!(
            field_of(Stay::parse("9999-12-01", "9999-12-02", TODAY, HORIZON).unwrap_err()),
            "check_in"
        );
        assert!(Stay::parse("2030-01-10", "2030-01-11", TODAY, 0).is_ok());
        assert!(Stay::parse("9999-12-01", "9999-12-02", TODAY, u32::MAX).is_ok());
    }

    #[test]
    fn malformed_dates_name_the_field() {
        for bad in [
            "2030-02-30",
            "2030-13-01",
            "30-01-01",
            "2030-1-1",
            "+030-01-01",
            "2030-01-01T00:00",
            "",
        ] {
            assert_eq!(
                field_of(Stay::parse(bad, "2030-03-01", TODAY, HORIZON).unwrap_err()),
                "check_in",
                "{bad}"
            );
            assert_eq!(
                field_of(Stay::parse("2030-02-01", bad, TODAY, HORIZON).unwrap_err()),
                "check_out",
                "{bad}"
            );
        }
    }

    #[test]
    fn guests_must_be_one_to_ten() {
        assert!(check_guests(1).is_ok() && check_guests(10).is_ok());
        assert_eq!(field_of(check_guests(0).unwrap_err()), "guests");
        assert_eq!(field_of(check_guests(11).unwrap_err()), "guests");
    }
}
