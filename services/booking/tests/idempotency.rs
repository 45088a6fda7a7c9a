//! `Idempotency-Key` on `POST /bookings`: one booking per key however often and however
//! concurrently it is sent, replays marked, misuse refused.

#![allow(clippy::unwrap_used)]

mod support;

mod sqlite {
    const BACKEND: super::support::Backend = super::support::Backend::Sqlite;
    include!("idempotency/cases.rs");
}

mod postgres {
    const BACKEND: super::support::Backend = super::support::Backend::Postgres;
    include!("idempotency/cases.rs");
}
