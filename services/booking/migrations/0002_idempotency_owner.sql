-- Who holds an in-flight reservation: `<host>/<pid>/<random>`. Renewals, completion and
-- release only touch a reservation they own, and another process can tell at once that
-- the owner on this host has died (no /proc/<pid>) instead of waiting out the lease.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT NOT NULL DEFAULT '';
