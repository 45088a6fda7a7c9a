//! SQLite pools that several replica processes can share safely.
//!
//! WAL lets readers run beside one writer; `busy_timeout` makes a writer wait for
//! another process's write lock instead of failing; services open write transactions with
//! `BEGIN IMMEDIATE` (see [`begin_immediate`]) so a check-then-insert is one atomic step
//! across processes.

use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{path::Path, time::Duration};

/// Opens (creating if missing) the database file at `path`.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
}

/// Starts a write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`),
/// so no other connection or process can write between our reads and our writes.
pub async fn begin_immediate(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Readiness: the database answers a trivial query.
pub async fn ping(pool: &SqlitePool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| format!("database unreachable: {e}"))
}

/// A client span for one database operation, named and attributed per the OpenTelemetry
/// database conventions (`db.system.name`, `db.operation.name`, `db.collection.name`).
/// Use as `query.execute(&pool).instrument(db::span("INSERT", "bookings"))`.
pub fn span(operation: &'static str, table: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = "client",
        db.system.name = "sqlite",
        db.operation.name = operation,
        db.collection.name = table,
        otel.status_code = tracing::field::Empty,
    )
}
