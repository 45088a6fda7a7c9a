-- Validators: every write (a cancellation) bumps `version`, the strong ETag is
-- "<id>-<version>", and `updated_at` (microseconds since the Unix epoch) is Last-Modified.
ALTER TABLE bookings ADD COLUMN version BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE bookings ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE bookings SET updated_at = COALESCE(cancelled_at, created_at);
