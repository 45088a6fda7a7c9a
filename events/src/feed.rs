//! The embedded bus, producer side: a service's outbox served as an ordered feed with a
//! blocking read, on the service's own listener.
//!
//! - `GET /events?after=SEQ&limit=N&wait_ms=MS&consumer=NAME`: up to `limit` events after
//!   position `after`; when there are none, the request waits up to `wait_ms` for one to
//!   be committed (by any replica: the outbox is read from the shared database file, so
//!   on SQLite the wait looks every [`RECHECK`] whether the file or its write-ahead log
//!   changed, a `stat` and no query, and re-reads the outbox when one did or every
//!   [`REREAD`] regardless; on PostgreSQL it queries every [`RECHECK`]) and answers the empty batch when the wait runs out or the
//!   instance starts shutting down. `consumer` names the reader for the
//!   backlog metric.
//! - `GET /events/status`: this instance's view: the outbox head and, per producer it
//!   consumes, position, lag, counts and the last error.
//! - `GET /events/dead`: the events this service could not apply (newest first, at most
//!   1000), what `hotel events dead` lists.
//! - `GET /metrics`: the Prometheus families of [`crate::metrics`].
//!
//! Internal routes between services, like `/healthz`: not in the public OpenAPI document
//! and not routed by the gateway.

use crate::{
    metrics::{ConsumerStatus, EventMetrics, RelayStatus},
    outbox::{self, Stored},
};
use axum::{Json, Router, extract::State, routing::get};
use hotel_common::{Problem, extract::Query};
use serde::{Deserialize, Serialize};
use sqlx::AnyPool;
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// The longest blocking read a feed grants.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting read looks whether the database files changed.
pub const RECHECK: Duration = Duration::from_millis(25);
/// How often a waiting read queries the outbox even when the files look unchanged: a
/// commit that rewrites WAL frames in place within the file system's timestamp tick
/// leaves size and mtime as they were, and this bounds how long it can go unnoticed.
pub const REREAD: Duration = Duration::from_secs(1);
/// The largest batch a feed answers.
pub const MAX_LIMIT: u32 = 1000;

/// The feed of one service instance's outbox.
#[derive(Clone, Debug)]
pub struct Feed {
    pool: AnyPool,
    metrics: Arc<EventMetrics>,
    /// Cancelled when the instance starts shutting down: waiting reads answer at once,
    /// so they do not hold up the drain.
    stop: CancellationToken,
}

/// Query of `GET /events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Position after which to read (0: from the start).
    #[serde(default)]
    pub after: i64,
    /// Most events, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// How long to wait for an event when there is none, in milliseconds (at most 30 000;
    /// default 0: answer at once).
    #[serde(default)]
    pub wait_ms: u64,
    /// The reading service, for the backlog metric.
    pub consumer: Option<String>,
}

/// Answer of `GET /events`.
#[derive(Debug, Serialize, Deserialize)]
pub struct FeedPage {
    /// The events, oldest first.
    pub events: Vec<Stored>,
    /// The newest position of the outbox when the answer was made.
    pub head: i64,
}

/// Answer of `GET /events/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusPage {
    /// The newest position of this service's outbox.
    pub outbox_head: i64,
    /// Per producer this service consumes, this instance's view.
    pub consumers: BTreeMap<String, ConsumerStatusView>,
    /// The relay of the outbox to the broker (NATS JetStream), as this instance sees
    /// it; absent on the embedded bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
}

/// A consumer's status as `/events/status` shows it.
pub type ConsumerStatusView = serde_json::Value;

impl Feed {
    /// The feed of the outbox in `pool`.
    pub fn new(pool: AnyPool, metrics: Arc<EventMetrics>) -> Feed {
        Feed {
            pool,
            metrics,
            stop: CancellationToken::new(),
        }
    }

    /// Ends every waiting read now and every later one at once (the instance is
    /// shutting down).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// `/events`, `/events/status` and `/events/dead` (its metrics are in the
    /// instance's `/metrics`).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/events", get(read))
            .route("/events/status", get(status))
            .route("/events/dead", get(dead))
            .with_state(self.clone())
    }
}

fn unavailable(e: &sqlx::Error) -> Problem {
    tracing::warn!(error = %e, "reading the outbox failed");
    Problem::unavailable("the outbox could not be read; retry shortly", 1)
}

async fn read(
    State(feed): State<Feed>,
    Query(q): Query<FeedQuery>,
) -> Result<Json<FeedPage>, Problem> {
    if q.after < 0 {
        return Err(Problem::invalid_field("after", "must be 0 or more"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::invalid_field("limit", "must be 1 to 1000"));
    }
    let wait = Duration::from_millis(q.wait_ms);
    if wait > MAX_WAIT {
        return Err(Problem::invalid_field("wait_ms", "must be at most 30000"));
    }
    let (events, head) = read_waiting(&feed.pool, q.after, limit, wait, &feed.stop)
        .await
        .map_err(|e| unavailable(&e))?;
    feed.metrics.served(q.consumer.as_deref(), q.after, head);
    Ok(Json(FeedPage { events, head }))
}

/// Up to `limit` events of the outbox in `pool` after position `after`, with its head;
/// when there are none, waits up to `wait` for one to be committed (by any process: see
/// the module documentation), and answers the empty batch when the wait runs out or
/// `stop` is cancelled. The feed's blocking read, and the NATS relay's wait for work.
pub async fn read_waiting(
    pool: &AnyPool,
    after: i64,
    limit: u32,
    wait: Duration,
    stop: &CancellationToken,
) -> Result<(Vec<Stored>, i64), sqlx::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    let path = sqlite_file(pool);
    loop {
        // Taken before the query: a commit after it changes the stamp, so it is never
        // missed between the query and the next look.
        let seen = path.as_deref().map(Stamp::of);
        let read_at = tokio::time::Instant::now();
        let (events, head) = outbox::read_after(pool, after, limit).await?;
        let done =
            !events.is_empty() || tokio::time::Instant::now() >= deadline || stop.is_cancelled();
        if done {
            return Ok((events, head));
        }
        let reread = (read_at + REREAD).min(deadline);
        loop {
            tokio::select! {
                () = tokio::time::sleep(RECHECK) => {}
                () = stop.cancelled() => {}
            }
            // PostgreSQL has no file to look at: the outbox is queried every RECHECK.
            let changed = match (&path, &seen) {
                (Some(path), Some(seen)) => Stamp::of(path) != *seen,
                _ => true,
            };
            if stop.is_cancelled() || tokio::time::Instant::now() >= reread || changed {
                break;
            }
        }
    }
}

/// The file of a SQLite pool; `None` on PostgreSQL.
fn sqlite_file(pool: &AnyPool) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    let url = &pool.connect_options().database_url;
    if url.scheme() != "sqlite" {
        return None;
    }
    sqlx::sqlite::SqliteConnectOptions::from_str(url.as_str())
        .ok()
        .map(|o| o.get_filename().to_owned())
}

/// Size and modification time of a SQLite database file and its write-ahead log: a
/// commit by any process appends to (or after a checkpoint rewrites) the log, which
/// changes one of them.
#[derive(Debug, PartialEq, Eq)]
struct Stamp([Option<(std::time::SystemTime, u64)>; 2]);

impl Stamp {
    fn of(db: &std::path::Path) -> Stamp {
        let look = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().unwrap_or(std::time::UNIX_EPOCH), m.len()))
        };
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Stamp([look(db), look(std::path::Path::new(&wal))])
    }
}

async fn status(State(feed): State<Feed>) -> Result<Json<StatusPage>, Problem> {
    let outbox_head = outbox::head(&feed.pool)
        .await
        .map_err(|e| unavailable(&e))?;
    let consumers = feed
        .metrics
        .status()
        .into_iter()
        .map(|(producer, s): (String, ConsumerStatus)| {
            (producer, serde_json::to_value(s).unwrap_or_default())
        })
        .collect();
    Ok(Json(StatusPage {
        outbox_head,
        consumers,
        relay: feed.metrics.relay(),
    }))
}

/// One dead letter as `/events/dead` shows it.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
pub struct DeadLetter {
    /// The producing service.
    pub producer: String,
    /// Its position in the producer's feed.
    pub seq: i64,
    /// The event's id, when it had a readable one.
    pub id: Option<String>,
    /// The event's type, when it parsed.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: Option<String>,
    /// Why it was not applied.
    pub reason: String,
    /// The payload as delivered.
    pub body: String,
    /// When it was set aside, microseconds since the Unix epoch.
    pub at: i64,
}

/// Answer of `GET /events/dead`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadPage {
    /// Newest first.
    pub items: Vec<DeadLetter>,
}

async fn dead(State(feed): State<Feed>) -> Result<Json<DeadPage>, Problem> {
    let items = sqlx::query_as(
        "SELECT producer, seq, id, type, reason, body, at FROM event_dead_letters \
         ORDER BY at DESC, producer, seq DESC LIMIT 1000",
    )
    .fetch_all(&feed.pool)
    .await
    .map_err(|e| unavailable(&e))?;
    Ok(Json(DeadPage { items }))
}
