-- Validators (issue 14): every write (a cancellation) bumps `version`, the strong ETag is
-- "<id>-<version>", and `updated_at` (microseconds since the Unix epoch) is
-- Last-Modified. Bookings that exist already start at version 1, last changed when they
-- were cancelled or else created.
ALTER TABLE bookings ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE bookings ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE bookings SET updated_at = COALESCE(cancelled_at, created_at);
