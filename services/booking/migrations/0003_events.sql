-- Why a booking was cancelled: `requested` (POST /bookings/{id}/cancel) or
-- `customer_deleted` (the customer service's `hotel.customer.deleted` event). NULL while
-- confirmed, and for bookings cancelled before this column existed.
ALTER TABLE bookings ADD COLUMN cancel_reason TEXT
    CHECK (cancel_reason IN ('requested', 'customer_deleted'));

-- Confirmed bookings of one customer, for the cancellations of a deleted customer.
CREATE INDEX IF NOT EXISTS bookings_customer_confirmed
    ON bookings (customer_id, check_out) WHERE status = 'confirmed';

-- Booking's own projection of room statuses, kept from `hotel.room.updated` events: a
-- room in maintenance or retired is refused without asking the room service.
CREATE TABLE IF NOT EXISTS room_statuses (
    room_id    TEXT    PRIMARY KEY NOT NULL,
    status     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);
