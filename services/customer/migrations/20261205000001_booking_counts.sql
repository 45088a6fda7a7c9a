-- Each customer's bookings by status, kept from the booking service's events
-- (`hotel.booking.created`, `hotel.booking.cancelled`): a projection, written only by
-- the event consumer, in the transaction that records the event in the inbox.
CREATE TABLE customer_bookings (
    customer_id TEXT    PRIMARY KEY NOT NULL,
    active      INTEGER NOT NULL DEFAULT 0,
    cancelled   INTEGER NOT NULL DEFAULT 0
);
