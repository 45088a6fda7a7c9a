-- Rooms (PostgreSQL; the SQLite history in ../migrations has the same versions). A room
-- is never deleted, only retired, so bookings keep pointing at it.
CREATE TABLE rooms (
    id                 TEXT   PRIMARY KEY NOT NULL,
    number             TEXT   NOT NULL,
    -- Lower-cased number: "12a" and "12A" are the same door.
    number_key         TEXT   NOT NULL,
    kind               TEXT   NOT NULL CHECK (kind IN ('single', 'double', 'suite')),
    capacity           BIGINT NOT NULL CHECK (capacity BETWEEN 1 AND 10),
    nightly_rate_cents BIGINT NOT NULL CHECK (nightly_rate_cents BETWEEN 1 AND 10000000),
    status             TEXT   NOT NULL CHECK (status IN ('available', 'maintenance', 'retired')),
    -- Microseconds since the Unix epoch; with `id` it is the keyset order of lists.
    created_at         BIGINT NOT NULL
);

-- Numbers are unique among rooms in service; the database enforces it, so concurrent
-- replicas cannot both win.
CREATE UNIQUE INDEX rooms_number_in_service ON rooms (number_key) WHERE status <> 'retired';

CREATE INDEX rooms_by_created ON rooms (created_at, id);
