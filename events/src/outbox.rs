//! The tables of the bus in a service's own database, and the transactional outbox.
//!
//! Every service's database has the same five tables, created by [`create_tables`] (here
//! rather than in each service's migrations, so that the schema the bus relies on lives
//! in one place):
//!
//! - `event_outbox`: the events this service produced, in commit order. `seq` is an
//!   `AUTOINCREMENT` (identity on PostgreSQL) key assigned inside the producing write
//!   transaction; the database has one writer at a time (SQLite's file lock across
//!   processes, PostgreSQL's advisory write lock across hosts: [`db::begin_immediate`]),
//!   so a reader never sees `seq` N+1 committed before N, and "after N" is a complete
//!   position.
//! - `event_inbox`: ids of the events this service applied (the once-only check).
//! - `event_positions`: per producer, the last feed position applied.
//! - `event_relay`: per broker stream, the last outbox position the broker acknowledged
//!   (NATS JetStream only, see [`crate::nats`]).
//! - `event_dead_letters`: events that could not be applied (malformed, unknown type; on
//!   a broker `seq` is the stream's sequence).

use crate::{cloudevent::CloudEvent, metrics::EventMetrics};
use hotel_common::{db, page};
use serde::Serialize;
use sqlx::{AnyConnection, AnyPool};
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// The bus's tables on SQLite.
const SQLITE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS event_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    -- The CloudEvent exactly as delivered (JSON text).
    body       TEXT    NOT NULL,
    -- Microseconds since the Unix epoch.
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_inbox (
    id         TEXT    PRIMARY KEY NOT NULL,
    producer   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    applied_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_positions (
    producer   TEXT    PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_relay (
    stream     TEXT    PRIMARY KEY NOT NULL,
    seq        INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS event_dead_letters (
    producer   TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    id         TEXT,
    type       TEXT,
    reason     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (producer, seq)
);
";

/// The same tables on PostgreSQL: 64-bit integers, and `seq` from an identity column.
/// Every write transaction holds the service's advisory write lock
/// ([`db::begin_immediate`]) from before `seq` is drawn until it commits, so here too
/// commit order is `seq` order and a reader never sees N+1 without N.
const POSTGRES_TABLES: &str = "
CREATE TABLE IF NOT EXISTS event_outbox (
    seq        BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT    NOT NULL,
    type       TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS event_inbox (
    id         TEXT    PRIMARY KEY NOT NULL,
    producer   TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    type       TEXT    NOT NULL,
    applied_at BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS event_positions (
    producer   TEXT    PRIMARY KEY NOT NULL,
    seq        BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS event_relay (
    stream     TEXT    PRIMARY KEY NOT NULL,
    seq        BIGINT  NOT NULL,
    updated_at BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS event_dead_letters (
    producer   TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    id         TEXT,
    type       TEXT,
    reason     TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    at         BIGINT  NOT NULL,
    PRIMARY KEY (producer, seq)
);
";

/// Creates the bus's tables when missing (idempotent; replicas starting together are
/// serialised by the write lock of [`db::begin_immediate`], on either backend).
pub async fn create_tables(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let tables = match db::Backend::of(pool) {
        db::Backend::Sqlite => SQLITE_TABLES,
        db::Backend::Postgres => POSTGRES_TABLES,
    };
    let mut tx = db::begin_immediate(pool).await?;
    sqlx::raw_sql(tables).execute(&mut *tx).await?;
    tx.commit().await
}

/// Writes events of one service into its outbox, inside the caller's transaction.
#[derive(Clone, Debug)]
pub struct Producer {
    service: &'static str,
    source: Arc<str>,
    metrics: Arc<EventMetrics>,
}

impl Producer {
    /// The producer of `service` instance `instance` (the `source` of its events is
    /// `/hotel/<service>/<instance>`), counting into `metrics`.
    pub fn new(service: &'static str, instance: &str, metrics: Arc<EventMetrics>) -> Producer {
        Producer {
            service,
            source: format!("/hotel/{service}/{instance}").into(),
            metrics,
        }
    }

    /// The service whose outbox this writes.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The metrics of this instance's events.
    pub fn metrics(&self) -> &Arc<EventMetrics> {
        &self.metrics
    }

    /// Writes event `kind` about `subject` with `data` into the outbox on `conn`, which
    /// must be the connection of the transaction making the state change: the event
    /// exists exactly when the change commits. Recorded as a `publish` span, child of the
    /// current one (the request's), whose trace context the event carries.
    pub async fn publish(
        &self,
        conn: &mut AnyConnection,
        kind: &str,
        subject: impl std::fmt::Display,
        data: &impl Serialize,
    ) -> Result<CloudEvent, sqlx::Error> {
        let id = Uuid::new_v4();
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            messaging.system = "hotel",
            messaging.destination.name = %kind,
            messaging.message.id = %id,
        );
        let mut headers = http::HeaderMap::new();
        hotel_common::telemetry::inject_span(&span, &mut headers);
        let traceparent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let now = page::now_micros();
        let event = CloudEvent {
            specversion: crate::cloudevent::SPEC_VERSION.to_owned(),
            id,
            source: self.source.to_string(),
            kind: kind.to_owned(),
            subject: subject.to_string(),
            time: page::rfc3339_micros(now),
            datacontenttype: "application/json".to_owned(),
            data: serde_json::to_value(data).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            traceparent,
        };
        let body = serde_json::to_string(&event).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO event_outbox (id, type, body, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(kind)
        .bind(body)
        .bind(now)
        .execute(&mut *conn)
        .instrument(span.clone())
        .await?;
        span.in_scope(
            || tracing::debug!(event.id = %id, event.type = %kind, "event written to the outbox"),
        );
        self.metrics.published(kind);
        Ok(event)
    }
}

/// One event of a feed: its position and its payload exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Stored {
    /// Position in the producer's outbox.
    pub seq: i64,
    /// The CloudEvent JSON text.
    pub payload: String,
}

/// Up to `limit` events after position `after`, oldest first, and the outbox's head.
pub async fn read_after(
    pool: &AnyPool,
    after: i64,
    limit: u32,
) -> Result<(Vec<Stored>, i64), sqlx::Error> {
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, body FROM event_outbox WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
    let head = match rows.last() {
        Some((seq, _)) => head(pool).await?.max(*seq),
        None => head(pool).await?,
    };
    Ok((
        rows.into_iter()
            .map(|(seq, payload)| Stored { seq, payload })
            .collect(),
        head,
    ))
}

/// The newest position of the outbox (0 when empty).
pub async fn head(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let (head,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM event_outbox")
        .fetch_one(pool)
        .await?;
    Ok(head.unwrap_or(0))
}
