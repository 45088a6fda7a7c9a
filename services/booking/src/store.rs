//! The bookings table: the one place that decides whether a room's nights are free.
//!
//! The overlap check and the insert run in one `db::begin_immediate` transaction, which
//! takes the database's write lock before the check: SQLite's file lock (every replica on
//! the host opens the same file), or on PostgreSQL the service's advisory write lock
//! (replicas on any host). Two replicas taking conflicting requests at the same moment
//! are serialised (the loser waits) and the second one sees the first one's booking.
//! On PostgreSQL the database enforces it besides: the exclusion constraint
//! `bookings_no_overlap` (over `daterange`, with btree_gist) refuses a second confirmed
//! booking of a room for overlapping nights whatever wrote it, answered as the same 409.

use crate::{
    error::BookingError,
    idempotency::StoredResponse,
    model::{Booking, BookingStatus, CancelReason, Stay, format_date},
};
use hotel_common::{
    conditional::{self, IfMatch, Validators, Versioned},
    db,
    page::{Keyset, Page, rfc3339_micros},
};
use hotel_events::Producer;
use sqlx::{AnyPool, FromRow};
use std::collections::HashSet;
use tracing::Instrument;
use uuid::Uuid;

/// A booking as stored.
#[derive(Debug, FromRow)]
struct BookingRow {
    id: String,
    customer_id: String,
    room_id: String,
    check_in: String,
    check_out: String,
    guests: i64,
    status: String,
    total_cents: i64,
    created_at: i64,
    version: i64,
    updated_at: i64,
    cancel_reason: Option<String>,
}

/// The columns of a [`BookingRow`], as a literal so queries stay `&'static str` (sqlx 0.9
/// refuses SQL built at run time).
macro_rules! booking_columns {
    () => {
        "id, customer_id, room_id, check_in, check_out, guests, status, total_cents, created_at, \
         version, updated_at, cancel_reason"
    };
}

impl BookingRow {
    fn into_versioned(self) -> Result<Versioned<Booking>, BookingError> {
        let validators = Validators::of_row(&self.id, self.version, self.updated_at);
        Ok(Versioned {
            value: self.into_booking()?.0,
            validators,
        })
    }

    fn into_booking(self) -> Result<(Booking, Keyset), BookingError> {
        let uuid = |s: &str| {
            Uuid::parse_str(s).map_err(|e| BookingError::Internal(format!("stored id {s:?}: {e}")))
        };
        let status = match self.status.as_str() {
            "confirmed" => BookingStatus::Confirmed,
            "cancelled" => BookingStatus::Cancelled,
            other => return Err(BookingError::Internal(format!("stored status {other:?}"))),
        };
        let id = uuid(&self.id)?;
        let booking = Booking {
            id,
            customer_id: uuid(&self.customer_id)?,
            room_id: uuid(&self.room_id)?,
            check_in: self.check_in,
            check_out: self.check_out,
            guests: self.guests,
            status,
            total_cents: self.total_cents,
            created_at: rfc3339_micros(self.created_at),
            cancel_reason: self.cancel_reason.as_deref().and_then(CancelReason::parse),
        };
        Ok((
            booking,
            Keyset {
                t: self.created_at,
                id,
            },
        ))
    }
}

/// The service's database, and the producer writing its events into the outbox in the
/// same transactions as the bookings they report.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    producer: Producer,
}

/// A booking about to be written: everything but what the database decides.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The new booking's id.
    pub id: Uuid,
    /// Who books.
    pub customer_id: Uuid,
    /// Which room.
    pub room_id: Uuid,
    /// Which nights.
    pub stay: Stay,
    /// How many guests.
    pub guests: i64,
    /// Nights times the nightly rate.
    pub total_cents: i64,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

impl Draft {
    /// The booking this draft becomes once written.
    pub fn to_booking(&self) -> Booking {
        Booking {
            id: self.id,
            customer_id: self.customer_id,
            room_id: self.room_id,
            check_in: format_date(self.stay.check_in),
            check_out: format_date(self.stay.check_out),
            guests: self.guests,
            status: BookingStatus::Confirmed,
            total_cents: self.total_cents,
            created_at: rfc3339_micros(self.created_at),
            cancel_reason: None,
        }
    }
}

/// The database's own refusal of an overlap (PostgreSQL's exclusion constraint
/// `bookings_no_overlap`) is the same 409 as the check above it: the check names the
/// clashing stay, the constraint only guarantees there is one, so the 409 names the
/// requested nights. Anything else stays a database error.
fn overlap_or(e: sqlx::Error, draft: &Draft) -> BookingError {
    if db::is_exclusion_violation(&e, "bookings_no_overlap") {
        tracing::warn!(room_id = %draft.room_id, "overlap refused by the database's exclusion constraint");
        BookingError::Overlap {
            room_id: draft.room_id,
            check_in: format_date(draft.stay.check_in),
            check_out: format_date(draft.stay.check_out),
        }
    } else {
        BookingError::from(e)
    }
}

/// The booking with `id` read through `conn` (the pool, or a transaction).
async fn fetch<'c, E>(
    backend: db::Backend,
    conn: E,
    id: Uuid,
) -> Result<Versioned<Booking>, BookingError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row: Option<BookingRow> = sqlx::query_as(concat!(
        "SELECT ",
        booking_columns!(),
        " FROM bookings WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(conn)
    .instrument(db::span(backend, "SELECT", "bookings"))
    .await?;
    match row {
        Some(row) => row.into_versioned(),
        None => Err(BookingError::NotFound(id)),
    }
}

impl Store {
    /// Wraps an open pool (migrations already run) and the producer of booking events.
    pub fn new(pool: AnyPool, producer: Producer) -> Self {
        Store { pool, producer }
    }

    /// The pool, for readiness checks and the idempotency table.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Writes `draft` unless a confirmed booking of the same room overlaps its nights
    /// (409 naming that booking's dates), with `hotel.booking.created` in the outbox in
    /// the same transaction. When `idempotency` (key, owner, response) is
    /// given, the key's row is completed with that response in the same transaction, so a
    /// booking and its replayable response exist together or not at all.
    pub async fn insert_if_free(
        &self,
        draft: &Draft,
        idempotency: Option<(&str, &str, &StoredResponse)>,
    ) -> Result<Booking, BookingError> {
        let backend = db::Backend::of(&self.pool);
        let check_in = format_date(draft.stay.check_in);
        let check_out = format_date(draft.stay.check_out);
        let room_id = draft.room_id.to_string();
        let mut tx = db::begin_immediate(&self.pool)
            .instrument(db::span(backend, "BEGIN IMMEDIATE", "bookings"))
            .await?;
        // Stays are half-open [check_in, check_out): a stay leaving on the 5th does not
        // clash with one arriving on the 5th.
        let clash: Option<(String, String)> = sqlx::query_as(
            "SELECT check_in, check_out FROM bookings \
             WHERE room_id = $1 AND status = 'confirmed' AND check_in < $3 AND check_out > $2 \
             ORDER BY check_in LIMIT 1",
        )
        .bind(&room_id)
        .bind(&check_in)
        .bind(&check_out)
        .fetch_optional(&mut *tx)
        .instrument(db::span(backend, "SELECT", "bookings"))
        .await?;
        if let Some((clash_in, clash_out)) = clash {
            return Err(BookingError::Overlap {
                room_id: draft.room_id,
                check_in: clash_in,
                check_out: clash_out,
            });
        }
        sqlx::query(
            "INSERT INTO bookings \
             (id, customer_id, room_id, check_in, check_out, guests, status, total_cents, created_at, \
              version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'confirmed', $7, $8, 1, $8)",
        )
        .bind(draft.id.to_string())
        .bind(draft.customer_id.to_string())
        .bind(&room_id)
        .bind(&check_in)
        .bind(&check_out)
        .bind(draft.guests)
        .bind(draft.total_cents)
        .bind(draft.created_at)
        .execute(&mut *tx)
        .instrument(db::span(backend, "INSERT", "bookings"))
        .await
        .map_err(|e| overlap_or(e, draft))?;
        let booking = draft.to_booking();
        self.producer
            .publish(&mut tx, hotel_events::BOOKING_CREATED, booking.id, &booking)
            .await?;
        if let Some((key, owner, response)) = idempotency {
            // Lost the key to a takeover: roll back, the owner now answers for it.
            if !crate::idempotency::complete_in(&mut tx, key, owner, response).await? {
                return Err(BookingError::IdempotencyKeyInFlight);
            }
        }
        tx.commit()
            .instrument(db::span(backend, "COMMIT", "bookings"))
            .await?;
        Ok(booking)
    }

    /// The producer of booking events.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The booking with this id, with its validators.
    pub async fn get(&self, id: Uuid) -> Result<Versioned<Booking>, BookingError> {
        let backend = db::Backend::of(&self.pool);
        fetch(backend, &self.pool, id).await
    }

    /// One page of bookings, oldest first, filtered by customer and/or room, starting
    /// after `after`.
    pub async fn list(
        &self,
        customer_id: Option<Uuid>,
        room_id: Option<Uuid>,
        after: Option<Keyset>,
        limit: u32,
    ) -> Result<(Page<Booking>, Validators), BookingError> {
        let backend = db::Backend::of(&self.pool);
        let rows: Vec<BookingRow> = sqlx::query_as(concat!(
            "SELECT ",
            booking_columns!(),
            " FROM bookings \
             WHERE ($1 IS NULL OR customer_id = $1) AND ($2 IS NULL OR room_id = $2) \
               AND ($3 IS NULL OR created_at > $3 OR (created_at = $3 AND id > $4)) \
             ORDER BY created_at, id LIMIT $5"
        ))
        .bind(customer_id.map(|u| u.to_string()))
        .bind(room_id.map(|u| u.to_string()))
        .bind(after.map(|k| k.t))
        .bind(after.map(|k| k.id.to_string()))
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .instrument(db::span(backend, "SELECT", "bookings"))
        .await?;
        let versions: Vec<(String, i64)> = rows
            .iter()
            .take(limit as usize)
            .map(|r| (r.id.clone(), r.version))
            .collect();
        let page = Page::from_keyset_rows(rows, limit, BookingRow::into_booking)?;
        let tag = conditional::list_tag(versions, page.next_cursor.as_deref());
        Ok((page, Validators::tag(tag)))
    }

    /// Cancels a booking, freeing its nights and bumping its version, with
    /// `hotel.booking.cancelled` in the same transaction; cancelling a cancelled booking
    /// changes nothing (and publishes nothing) and answers it as it is. 412 when
    /// `condition` (`If-Match`) does not name the current version.
    pub async fn cancel(
        &self,
        id: Uuid,
        now_micros: i64,
        condition: Option<&IfMatch>,
    ) -> Result<Versioned<Booking>, BookingError> {
        let backend = db::Backend::of(&self.pool);
        let mut tx = db::begin_immediate(&self.pool)
            .instrument(db::span(backend, "BEGIN IMMEDIATE", "bookings"))
            .await?;
        let current = fetch(backend, &mut *tx, id).await?;
        conditional::check(
            condition,
            &format!("booking {id}"),
            &current.validators.etag,
        )
        .map_err(|p| BookingError::PreconditionFailed(Box::new(p)))?;
        if current.value.status == BookingStatus::Cancelled {
            return Ok(current);
        }
        sqlx::query(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = $2, \
             cancel_reason = 'requested', version = version + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(now_micros)
        .execute(&mut *tx)
        .instrument(db::span(backend, "UPDATE", "bookings"))
        .await?;
        let cancelled = fetch(backend, &mut *tx, id).await?;
        self.producer
            .publish(
                &mut tx,
                hotel_events::BOOKING_CANCELLED,
                id,
                &cancelled.value,
            )
            .await?;
        tx.commit()
            .instrument(db::span(backend, "COMMIT", "bookings"))
            .await?;
        Ok(cancelled)
    }

    /// Cancels the confirmed bookings of `customer_id` that are not over (check-out
    /// after `today`, `YYYY-MM-DD`) with `cancel_reason = customer_deleted`, on the
    /// connection of the event's transaction, publishing `hotel.booking.cancelled` for
    /// each. Answers how many.
    pub async fn cancel_for_customer(
        &self,
        conn: &mut sqlx::AnyConnection,
        customer_id: Uuid,
        today: &str,
        now_micros: i64,
    ) -> Result<usize, BookingError> {
        let backend = db::Backend::of(&self.pool);
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM bookings \
             WHERE customer_id = $1 AND status = 'confirmed' AND check_out > $2 ORDER BY created_at, id",
        )
        .bind(customer_id.to_string())
        .bind(today)
        .fetch_all(&mut *conn)
        .instrument(db::span(backend, "SELECT", "bookings"))
        .await?;
        for (id,) in &ids {
            sqlx::query(
                "UPDATE bookings SET status = 'cancelled', cancelled_at = $2, \
                 cancel_reason = 'customer_deleted', version = version + 1, updated_at = $2 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(now_micros)
            .execute(&mut *conn)
            .instrument(db::span(backend, "UPDATE", "bookings"))
            .await?;
            let id = Uuid::parse_str(id)
                .map_err(|e| BookingError::Internal(format!("stored id {id:?}: {e}")))?;
            let booking = fetch(backend, &mut *conn, id).await?.value;
            self.producer
                .publish(conn, hotel_events::BOOKING_CANCELLED, id, &booking)
                .await?;
        }
        Ok(ids.len())
    }

    /// Records a room's status from a `hotel.room.updated` event of time `at_micros`, on
    /// the connection of the event's transaction; an update older than the one recorded
    /// changes nothing.
    pub async fn set_room_status(
        conn: &mut sqlx::AnyConnection,
        room_id: Uuid,
        status: &str,
        at_micros: i64,
    ) -> Result<(), sqlx::Error> {
        let backend = db::Backend::of_conn(conn);
        sqlx::query(
            "INSERT INTO room_statuses (room_id, status, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (room_id) DO UPDATE SET status = $2, updated_at = $3 \
             WHERE room_statuses.updated_at <= $3",
        )
        .bind(room_id.to_string())
        .bind(status)
        .bind(at_micros)
        .execute(conn)
        .instrument(db::span(backend, "UPSERT", "room_statuses"))
        .await?;
        Ok(())
    }

    /// The status of a room as this service's projection knows it (`None`: no event
    /// about it yet).
    pub async fn room_status(&self, room_id: Uuid) -> Result<Option<String>, BookingError> {
        let backend = db::Backend::of(&self.pool);
        let row: Option<(String,)> =
            sqlx::query_as("SELECT status FROM room_statuses WHERE room_id = $1")
                .bind(room_id.to_string())
                .fetch_optional(&self.pool)
                .instrument(db::span(backend, "SELECT", "room_statuses"))
                .await?;
        Ok(row.map(|(s,)| s))
    }

    /// Rooms with a confirmed booking on any night of `stay`.
    pub async fn booked_rooms(&self, stay: &Stay) -> Result<HashSet<Uuid>, BookingError> {
        let backend = db::Backend::of(&self.pool);
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT room_id FROM bookings \
             WHERE status = 'confirmed' AND check_in < $2 AND check_out > $1",
        )
        .bind(format_date(stay.check_in))
        .bind(format_date(stay.check_out))
        .fetch_all(&self.pool)
        .instrument(db::span(backend, "SELECT", "bookings"))
        .await?;
        ids.into_iter()
            .map(|(s,)| {
                Uuid::parse_str(&s)
                    .map_err(|e| BookingError::Internal(format!("stored room id {s:?}: {e}")))
            })
            .collect()
    }
}
