//! In-process tests of every room endpoint and every way a request can be wrong, on each
//! backend: `sqlite::` and `postgres::` run the same cases (`api/cases.rs`); the
//! PostgreSQL ones need `HOTEL_TEST_POSTGRES_URL` (set by scripts/test.sh) and say they
//! are skipped without it, except in CI where they fail.

#![allow(clippy::unwrap_used)]

mod sqlite {
    const BACKEND: hotel_service_testing::Backend = hotel_service_testing::Backend::Sqlite;
    include!("api/cases.rs");
}

mod postgres {
    const BACKEND: hotel_service_testing::Backend = hotel_service_testing::Backend::Postgres;
    include!("api/cases.rs");
}
