-- Bookings and the idempotency keys of their create requests.
--
-- Replicas migrate one shared file in turns (`hotel_common::db::migrate` holds a file
-- lock); IF NOT EXISTS keeps a re-run harmless all the same.

-- Dates are ISO `YYYY-MM-DD` text, so text order is date order and the overlap check
-- compares text. Times are microseconds since the Unix epoch (`hotel_common::page`), the
-- key of keyset pagination with the id.
CREATE TABLE IF NOT EXISTS bookings (
    id           TEXT PRIMARY KEY NOT NULL,
    customer_id  TEXT NOT NULL,
    room_id      TEXT NOT NULL,
    check_in     TEXT NOT NULL,
    check_out    TEXT NOT NULL,
    guests       INTEGER NOT NULL CHECK (guests BETWEEN 1 AND 10),
    status       TEXT NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    total_cents  INTEGER NOT NULL CHECK (total_cents >= 0),
    created_at   INTEGER NOT NULL,
    cancelled_at INTEGER,
    CHECK (check_in < check_out)
);

-- The overlap check: confirmed bookings of one room by date.
CREATE INDEX IF NOT EXISTS bookings_room_nights
    ON bookings (room_id, check_in, check_out) WHERE status = 'confirmed';
-- Availability: every confirmed booking touching a date range.
CREATE INDEX IF NOT EXISTS bookings_nights
    ON bookings (check_in, check_out) WHERE status = 'confirmed';
-- Keyset pages of one customer's or one room's bookings.
CREATE INDEX IF NOT EXISTS bookings_customer_page ON bookings (customer_id, created_at, id);
CREATE INDEX IF NOT EXISTS bookings_room_page ON bookings (room_id, created_at, id);

-- One row per Idempotency-Key seen on POST /bookings. A row is reserved `in_flight`
-- before the work starts (so a concurrent duplicate is refused with 409), then either
-- completed with the response to replay or deleted when the response was a 5xx.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key          TEXT PRIMARY KEY NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_flight', 'completed')),
    status       INTEGER,
    content_type TEXT,
    location     TEXT,
    body         BLOB,
    -- Unix milliseconds: keys older than the retention are purged.
    created_at   INTEGER NOT NULL,
    -- Unix milliseconds when the in-flight reservation was taken; a reservation older
    -- than the lease belonged to a process that died and may be taken over.
    locked_at    INTEGER NOT NULL
);

CREATE INDEX IF NOT EXISTS idempotency_keys_created ON idempotency_keys (created_at);
