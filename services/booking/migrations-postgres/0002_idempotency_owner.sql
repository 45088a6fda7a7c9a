-- Who holds an in-flight reservation: `<host>/<pid>/<random>`.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT NOT NULL DEFAULT '';
