-- Each customer's bookings by status, kept from the booking service's events: a
-- projection, written only by the event consumer, in the transaction that records the
-- event in the inbox.
CREATE TABLE customer_bookings (
    customer_id TEXT   PRIMARY KEY NOT NULL,
    active      BIGINT NOT NULL DEFAULT 0,
    cancelled   BIGINT NOT NULL DEFAULT 0
);
