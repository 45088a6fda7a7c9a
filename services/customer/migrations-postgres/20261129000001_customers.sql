-- Customers (PostgreSQL; the SQLite history in ../migrations has the same versions).
-- `email_key` is the lower-cased email: the database, not the code, keeps emails unique
-- case-insensitively, so two replicas cannot both insert one address.
CREATE TABLE customers (
    id         TEXT   PRIMARY KEY NOT NULL,
    name       TEXT   NOT NULL,
    email      TEXT   NOT NULL,
    email_key  TEXT   NOT NULL UNIQUE,
    -- Microseconds since the Unix epoch; with `id` it is the keyset order of lists.
    created_at BIGINT NOT NULL
);

CREATE INDEX customers_by_created ON customers (created_at, id);
