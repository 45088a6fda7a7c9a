-- Validators: every write bumps `version`, the strong ETag is "<id>-<version>", and
-- `updated_at` (microseconds since the Unix epoch) is Last-Modified.
ALTER TABLE rooms ADD COLUMN version BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE rooms ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE rooms SET updated_at = created_at;
