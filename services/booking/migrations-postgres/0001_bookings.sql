-- Bookings and the idempotency keys of their create requests (PostgreSQL; the SQLite
-- history in ../migrations has the same versions).
--
-- Dates are ISO `YYYY-MM-DD` text, as on SQLite, so text order is date order and the
-- queries are the same on both backends. Times are microseconds since the Unix epoch.
CREATE TABLE bookings (
    id           TEXT   PRIMARY KEY NOT NULL,
    customer_id  TEXT   NOT NULL,
    room_id      TEXT   NOT NULL,
    check_in     TEXT   NOT NULL CHECK (check_in ~ '^\d{4}-\d{2}-\d{2}$'),
    check_out    TEXT   NOT NULL CHECK (check_out ~ '^\d{4}-\d{2}-\d{2}$'),
    guests       BIGINT NOT NULL CHECK (guests BETWEEN 1 AND 10),
    status       TEXT   NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    total_cents  BIGINT NOT NULL CHECK (total_cents >= 0),
    created_at   BIGINT NOT NULL,
    cancelled_at BIGINT,
    CHECK (check_in < check_out)
);

-- The no-overlap guarantee, enforced by the database itself across every replica on
-- every host: no two confirmed bookings of one room whose nights intersect. Stays are
-- half-open [check_in, check_out), so leaving on the 5th and arriving on the 5th do not
-- clash. `booking_nights` is declared IMMUTABLE (which an index needs) although a
-- text-to-date cast is only STABLE in general: the CHECKs above admit only ISO
-- `YYYY-MM-DD`, whose reading does not depend on DateStyle. btree_gist supplies the `=`
-- on text inside a GiST index.
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE FUNCTION booking_nights(check_in TEXT, check_out TEXT) RETURNS daterange
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT daterange(check_in::date, check_out::date, '[)') $$;
ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap
    EXCLUDE USING gist (room_id WITH =, booking_nights(check_in, check_out) WITH &&)
    WHERE (status = 'confirmed');

-- The overlap check the service runs before inserting (to name the clashing booking).
CREATE INDEX bookings_room_nights
    ON bookings (room_id, check_in, check_out) WHERE status = 'confirmed';
-- Availability: every confirmed booking touching a date range.
CREATE INDEX bookings_nights ON bookings (check_in, check_out) WHERE status = 'confirmed';
-- Keyset pages of one customer's or one room's bookings.
CREATE INDEX bookings_customer_page ON bookings (customer_id, created_at, id);
CREATE INDEX bookings_room_page ON bookings (room_id, created_at, id);

-- One row per Idempotency-Key seen on POST /bookings (see the SQLite history).
CREATE TABLE idempotency_keys (
    key          TEXT   PRIMARY KEY NOT NULL,
    request_hash TEXT   NOT NULL,
    state        TEXT   NOT NULL CHECK (state IN ('in_flight', 'completed')),
    status       BIGINT,
    content_type TEXT,
    location     TEXT,
    body         BYTEA,
    created_at   BIGINT NOT NULL,
    locked_at    BIGINT NOT NULL
);

CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
