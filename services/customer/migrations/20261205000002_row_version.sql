-- Validators (issue 14): every write bumps `version`, the strong ETag is "<id>-<version>",
-- and `updated_at` (microseconds since the Unix epoch) is Last-Modified. Customers that
-- exist already start at version 1, last changed when they were created.
ALTER TABLE customers ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);
ALTER TABLE customers ADD COLUMN updated_at INTEGER NOT NULL DEFAULT 0;
UPDATE customers SET updated_at = created_at;
