-- Why a booking was cancelled: `requested` or `customer_deleted`; NULL while confirmed.
ALTER TABLE bookings ADD COLUMN cancel_reason TEXT
    CHECK (cancel_reason IN ('requested', 'customer_deleted'));

-- Confirmed bookings of one customer, for the cancellations of a deleted customer.
CREATE INDEX bookings_customer_confirmed
    ON bookings (customer_id, check_out) WHERE status = 'confirmed';

-- Booking's own projection of room statuses, kept from `hotel.room.updated` events.
CREATE TABLE room_statuses (
    room_id    TEXT   PRIMARY KEY NOT NULL,
    status     TEXT   NOT NULL,
    updated_at BIGINT NOT NULL
);
