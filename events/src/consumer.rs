//! The consumer side: reading a producer's events through a [`Source`] and applying each
//! once per service through a [`Handler`].
//!
//! Each event is applied in one `BEGIN IMMEDIATE` transaction that also
//!
//! 1. skips it if this service's position for the producer is already at or past it
//!    (another replica got there first: replicas of a service compete for the same
//!    events, and SQLite's write lock, which spans processes, lets one win);
//! 2. inserts its id into the inbox, and skips the effect if the id is there already (a
//!    duplicate delivery, at another position);
//! 3. runs the handler's effect (which may publish events of its own, in the same
//!    transaction, through its [`crate::Producer`]);
//! 4. moves the position.
//!
//! So a kill -9 at any moment leaves either all of it or none of it, and the next reader
//! (a restarted process or another replica) continues from the position.
//!
//! On a broker ([`crate::nats`]) a position proves nothing (an event not acked in time
//! is delivered again, maybe to another replica; with `events.max_in_flight` above 1
//! replicas apply in parallel), so steps 1 and 4 are left out ([`Source::ordered`]): the
//! inbox alone makes each effect happen once, and each event is acked after its
//! transaction committed.
//!
//! A malformed or unknown event is logged once with its id, counted, and stored in the
//! dead-letter table in place of the effect, so the stream moves on. A failed read or a
//! transient failure to apply is retried after `events.retry_backoff`, reported as the
//! last error (on a broker, the events of the batch not yet applied are handed back).

use crate::{
    cloudevent::{self, CloudEvent},
    feed::FeedPage,
    metrics::EventMetrics,
    settings::EventSettings,
};
use futures::future::BoxFuture;
use hotel_common::{db, page};
use hotel_registry::client::{RegistryClient, Watcher};
use sqlx::{AnyConnection, AnyPool};
use std::{sync::Arc, time::Duration};
use tracing::Instrument;

/// One event as a source delivers it.
#[derive(Debug)]
pub struct Delivery {
    /// Its position: in the producer's outbox (embedded feed) or in the broker's stream.
    pub seq: i64,
    /// The CloudEvent JSON text, exactly as delivered.
    pub payload: String,
    /// The broker's handle to ack it by once applied (`None` on the embedded feed,
    /// where the position committed with the effect is the acknowledgement).
    pub receipt: Option<crate::nats::Receipt>,
}

/// What one read of a [`Source`] returned.
#[derive(Debug)]
pub struct Batch {
    /// The events, in the order to apply them.
    pub deliveries: Vec<Delivery>,
    /// How far behind this service is.
    pub progress: Progress,
}

/// How far behind a consumer is, as its source tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The producer's outbox head (embedded feed): the lag is the head minus this
    /// service's position.
    Head(i64),
    /// The broker's count of this service's events not yet acked (`pending`, the batch
    /// included), and the stream position up to which all are acked.
    Pending {
        /// Stream position up to which every event of this consumer is acked.
        acked: i64,
        /// Events not delivered yet plus delivered and not acked yet.
        pending: i64,
    },
    /// The source did not ask this time: the lag last reported, less each event applied.
    Unknown,
}

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The event can never be applied (unknown type, data of the wrong shape): it goes
    /// to the dead-letter table and the stream moves on.
    #[error("rejected: {0}")]
    Reject(String),
    /// The database failed: the transaction is rolled back and the event retried.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl HandleError {
    /// The rejection of an event whose type the handler does not take.
    pub fn unknown_type(event: &CloudEvent) -> HandleError {
        HandleError::Reject(format!("unknown event type {:?}", event.kind))
    }
}

impl CloudEvent {
    /// Ok when the event is of type `kind`, else [`HandleError::unknown_type`].
    pub fn expect_type(&self, kind: &str) -> Result<(), HandleError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(HandleError::unknown_type(self))
        }
    }

    /// `data` as `T`, or the rejection naming what did not fit.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, HandleError> {
        serde_json::from_value(self.data.clone())
            .map_err(|e| HandleError::Reject(format!("data: {e}")))
    }
}

/// The effect of one producer's events on this service.
pub trait Handler: Send + Sync + 'static {
    /// Applies `event` on `conn`, the connection of the transaction that also records
    /// the inbox row and the position: commit is the caller's.
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        event: &'a CloudEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>>;
}

/// Where a consumer reads a producer's events from: the transport behind the bus. The
/// embedded bus reads the producer's own feed ([`HttpFeed`]); NATS JetStream reads a
/// durable consumer ([`crate::nats::NatsSource`]).
pub trait Source: Send + Sync + 'static {
    /// Up to `limit` events after position `after` (ignored by a broker, which keeps the
    /// position itself), waiting up to `wait` for one when there are none.
    fn read<'a>(
        &'a self,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, String>>;

    /// Whether deliveries come in position order, one reader winning each position (the
    /// embedded feed), so that a position at or past an event means it was applied;
    /// `false` for a broker, where the inbox alone decides.
    fn ordered(&self) -> bool {
        true
    }

    /// `messaging.system` of the `process` spans: `hotel` (embedded) or `nats`.
    fn system(&self) -> &'static str {
        "hotel"
    }
}

/// A producer this service consumes, and the effect of its events.
#[derive(Clone)]
pub struct Subscription {
    /// The producing service, such as `booking`.
    pub producer: &'static str,
    /// What its events do here.
    pub handler: Arc<dyn Handler>,
}

/// Where the embedded feed of a producer is found.
enum Feeds {
    /// Every passing instance the registry knows.
    Registry(Watcher),
    /// A fixed base URL (`customer_url` in booking's settings).
    Static(String),
}

/// The embedded bus's [`Source`]: `GET /events` on any live instance of the producer.
pub struct HttpFeed {
    producer: &'static str,
    consumer: &'static str,
    feeds: Feeds,
    client: reqwest::Client,
    /// Turns to the next instance after a failure.
    turn: std::sync::atomic::AtomicUsize,
}

impl HttpFeed {
    /// The feed of `producer` found through the registry (any passing instance).
    pub fn registry(
        producer: &'static str,
        consumer: &'static str,
        registry: RegistryClient,
        settings: &EventSettings,
    ) -> Result<HttpFeed, String> {
        Self::with(
            producer,
            consumer,
            Feeds::Registry(Watcher::start(registry, producer)),
            settings,
        )
    }

    /// The feed of `producer` at a fixed base URL.
    pub fn fixed(
        producer: &'static str,
        consumer: &'static str,
        url: String,
        settings: &EventSettings,
    ) -> Result<HttpFeed, String> {
        Self::with(
            producer,
            consumer,
            Feeds::Static(url.trim_end_matches('/').to_owned()),
            settings,
        )
    }

    fn with(
        producer: &'static str,
        consumer: &'static str,
        feeds: Feeds,
        settings: &EventSettings,
    ) -> Result<HttpFeed, String> {
        let client = hotel_common::tls::internal::reqwest_client()
            .connect_timeout(Duration::from_secs(1))
            // The blocking read plus room for the answer.
            .timeout(settings.poll_wait + Duration::from_secs(5))
            .build()
            .map_err(|e| format!("events client: {e}"))?;
        Ok(HttpFeed {
            producer,
            consumer,
            feeds,
            client,
            turn: Default::default(),
        })
    }

    fn base_url(&self) -> Result<String, String> {
        use std::sync::atomic::Ordering;
        match &self.feeds {
            Feeds::Static(url) => Ok(url.clone()),
            Feeds::Registry(watcher) => {
                let live = watcher.current();
                if live.is_empty() {
                    return Err(format!(
                        "no live instance of {} serves its feed",
                        self.producer
                    ));
                }
                let n = self.turn.load(Ordering::Relaxed) % live.len();
                Ok(live[n].url.clone())
            }
        }
    }
}

impl Source for HttpFeed {
    fn read<'a>(
        &'a self,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, String>> {
        Box::pin(async move {
            let base = self.base_url()?;
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            let answer = self
                .client
                .get(format!("{base}/events"))
                .query(&[
                    ("after", after.to_string()),
                    ("limit", limit.to_string()),
                    ("wait_ms", wait_ms.to_string()),
                    ("consumer", self.consumer.to_owned()),
                ])
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            let page: Result<FeedPage, String> = match answer {
                Ok(res) => res.json().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            page.map(|p| Batch {
                deliveries: p
                    .events
                    .into_iter()
                    .map(|e| Delivery {
                        seq: e.seq,
                        payload: e.payload,
                        receipt: None,
                    })
                    .collect(),
                progress: Progress::Head(p.head),
            })
            .map_err(|e| {
                self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("reading the {} feed at {base}: {e}", self.producer)
            })
        })
    }
}

/// A running consumer of one producer.
pub struct Consumer {
    /// The consuming service.
    pub service: &'static str,
    /// This instance's name, for logs and spans.
    pub instance: String,
    /// The database holding this service's inbox and positions.
    pub pool: AnyPool,
    /// What to consume.
    pub subscription: Subscription,
    /// Where from.
    pub source: Arc<dyn Source>,
    /// How.
    pub settings: EventSettings,
    /// Counts into.
    pub metrics: Arc<EventMetrics>,
}

/// What became of one delivery.
enum Outcome {
    Applied,
    Duplicate,
    Behind,
    DeadLetter,
}

impl Consumer {
    /// Reads and applies events until the task is aborted.
    pub async fn run(self) {
        let producer = self.subscription.producer;
        tracing::info!(instance = %self.instance, producer, "consuming events");
        // The first read does not wait, so that position, head and lag are known at once.
        let mut wait = Duration::ZERO;
        // The failure last logged: a producer down for a minute is one warning, not 120.
        let mut last_logged: Option<String> = None;
        loop {
            let round = self.round(wait).await;
            wait = self.settings.poll_wait;
            match round {
                Ok(()) => {
                    if last_logged.take().is_some() {
                        tracing::info!(instance = %self.instance, producer, "events: reading again");
                    }
                }
                Err(e) => {
                    if last_logged.as_deref() == Some(e.as_str()) {
                        tracing::debug!(instance = %self.instance, producer, error = %e, "events: will retry");
                    } else {
                        tracing::warn!(instance = %self.instance, producer, error = %e, "events: will retry");
                        last_logged = Some(e.clone());
                    }
                    self.metrics.error(producer, e);
                    tokio::time::sleep(self.settings.retry_backoff).await;
                }
            }
        }
    }

    /// One read and the application of what it returned.
    async fn round(&self, wait: Duration) -> Result<(), String> {
        let producer = self.subscription.producer;
        let ordered = self.source.ordered();
        let after = if ordered {
            position(&self.pool, producer)
                .await
                .map_err(|e| format!("reading the position: {e}"))?
        } else {
            0
        };
        let batch = self.source.read(after, self.settings.batch, wait).await?;
        let progress = batch.progress;
        self.progress(progress, after);
        let mut deliveries = batch.deliveries.into_iter();
        while let Some(delivery) = deliveries.next() {
            let done = match self.apply(&delivery, ordered).await {
                Ok(_) => match &delivery.receipt {
                    Some(receipt) => receipt.ack().await,
                    None => Ok(()),
                },
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                // A broker delivers what is left again after the backoff, to any replica,
                // instead of after its ack wait.
                for rest in std::iter::once(delivery).chain(deliveries) {
                    if let Some(receipt) = &rest.receipt {
                        receipt.release(self.settings.retry_backoff).await;
                    }
                }
                return Err(e);
            }
            match progress {
                Progress::Head(_) => self.progress(progress, delivery.seq),
                Progress::Pending { .. } | Progress::Unknown => self.metrics.one_less(producer),
            }
        }
        self.metrics.recovered(producer);
        Ok(())
    }

    /// Records `progress` (with this service's `position` in an ordered feed).
    fn progress(&self, progress: Progress, position: i64) {
        let producer = self.subscription.producer;
        match progress {
            Progress::Head(head) => self.metrics.position(producer, position, head),
            Progress::Pending { acked, pending } => self.metrics.pending(producer, acked, pending),
            Progress::Unknown => {}
        }
    }

    /// Applies one delivery in its own transaction (see the module documentation).
    async fn apply(&self, delivery: &Delivery, ordered: bool) -> Result<Outcome, String> {
        let producer = self.subscription.producer;
        let parsed = CloudEvent::parse(&delivery.payload);
        let span = tracing::info_span!(
            "process",
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = self.source.system(),
            messaging.destination.name = tracing::field::Empty,
            messaging.message.id = tracing::field::Empty,
            messaging.consumer.group.name = self.service,
            event.seq = delivery.seq,
            instance = %self.instance,
        );
        if let Ok(event) = &parsed {
            span.record("messaging.destination.name", event.kind.as_str());
            span.record("messaging.message.id", event.id.to_string().as_str());
            if let Some(tp) = event
                .traceparent
                .as_deref()
                .and_then(|v| http::HeaderValue::from_str(v).ok())
            {
                let mut headers = http::HeaderMap::new();
                headers.insert("traceparent", tp);
                hotel_common::telemetry::set_parent_from(&span, &headers);
            }
        }
        let outcome = self
            .apply_in(delivery, parsed, ordered)
            .instrument(span.clone())
            .await;
        match &outcome {
            Ok(Outcome::DeadLetter) => hotel_common::telemetry::record_error(&span, "dead letter"),
            Err(e) => hotel_common::telemetry::record_error(&span, e.clone()),
            _ => {}
        }
        if let Ok(Outcome::Duplicate) = outcome {
            self.metrics.duplicate(producer);
        }
        outcome
    }

    async fn apply_in(
        &self,
        delivery: &Delivery,
        parsed: Result<CloudEvent, String>,
        ordered: bool,
    ) -> Result<Outcome, String> {
        let producer = self.subscription.producer;
        let backend = db::Backend::of(&self.pool);
        let db_err = |e: sqlx::Error| {
            format!(
                "applying event at {producer} position {}: {e}",
                delivery.seq
            )
        };
        // A replica that got there first has moved the position: skip without taking the
        // write lock (checked again under it below).
        if ordered && delivery.seq <= position(&self.pool, producer).await.map_err(db_err)? {
            return Ok(Outcome::Behind);
        }
        let mut tx = db::begin_immediate(&self.pool)
            .instrument(db::span(backend, "BEGIN IMMEDIATE", "event_inbox"))
            .await
            .map_err(db_err)?;
        if ordered && delivery.seq <= position(&mut *tx, producer).await.map_err(db_err)? {
            return Ok(Outcome::Behind);
        }
        let event = match parsed {
            Ok(event) => event,
            Err(why) => {
                let id = cloudevent::id_of_malformed(&delivery.payload);
                self.dead_letter(
                    &mut tx,
                    delivery,
                    ordered,
                    id.as_deref(),
                    None,
                    &format!("malformed: {why}"),
                )
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                return Ok(Outcome::DeadLetter);
            }
        };
        let now = page::now_micros();
        let fresh = sqlx::query(
            "INSERT INTO event_inbox (id, producer, seq, type, applied_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(event.id.to_string())
        .bind(producer)
        .bind(delivery.seq)
        .bind(&event.kind)
        .bind(now)
        .execute(&mut *tx)
        .instrument(db::span(backend, "INSERT", "event_inbox"))
        .await
        .map_err(db_err)?
        .rows_affected()
            == 1;
        if !fresh {
            tracing::info!(instance = %self.instance, event.id = %event.id, event.type = %event.kind, "duplicate delivery: already applied");
            if ordered {
                set_position(&mut tx, producer, delivery.seq)
                    .await
                    .map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            return Ok(Outcome::Duplicate);
        }
        match self.subscription.handler.handle(&mut tx, &event).await {
            Ok(()) => {
                if ordered {
                    set_position(&mut tx, producer, delivery.seq)
                        .await
                        .map_err(db_err)?;
                }
                tx.commit()
                    .instrument(db::span(backend, "COMMIT", "event_inbox"))
                    .await
                    .map_err(db_err)?;
                let delay = time_of(&event.time).map(|t| (now - t) as f64 / 1e6);
                self.metrics.applied(producer, &event.kind, delay);
                tracing::info!(instance = %self.instance, event.id = %event.id, event.type = %event.kind, event.subject = %event.subject, "event applied");
                Ok(Outcome::Applied)
            }
            Err(HandleError::Reject(why)) => {
                // Undo whatever the handler did before refusing, then record the refusal.
                tx.rollback().await.map_err(db_err)?;
                let mut tx = db::begin_immediate(&self.pool).await.map_err(db_err)?;
                if ordered && delivery.seq <= position(&mut *tx, producer).await.map_err(db_err)? {
                    return Ok(Outcome::Behind);
                }
                let id = event.id.to_string();
                self.dead_letter(
                    &mut tx,
                    delivery,
                    ordered,
                    Some(&id),
                    Some(&event.kind),
                    &why,
                )
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(Outcome::DeadLetter)
            }
            Err(HandleError::Database(e)) => Err(db_err(e)),
        }
    }

    async fn dead_letter(
        &self,
        tx: &mut AnyConnection,
        delivery: &Delivery,
        ordered: bool,
        id: Option<&str>,
        kind: Option<&str>,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        let producer = self.subscription.producer;
        let backend = db::Backend::of_conn(tx);
        sqlx::query(
            "INSERT INTO event_dead_letters (producer, seq, id, type, reason, body, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (producer, seq) DO UPDATE SET id = excluded.id, type = excluded.type, \
               reason = excluded.reason, body = excluded.body, at = excluded.at",
        )
        .bind(producer)
        .bind(delivery.seq)
        .bind(id)
        .bind(kind)
        .bind(reason)
        .bind(&delivery.payload)
        .bind(page::now_micros())
        .execute(&mut *tx)
        .instrument(db::span(backend, "INSERT", "event_dead_letters"))
        .await?;
        if ordered {
            set_position(tx, producer, delivery.seq).await?;
        }
        self.metrics.dead_letter(producer);
        tracing::warn!(
            instance = %self.instance,
            producer,
            event.seq = delivery.seq,
            event.id = id.unwrap_or("unknown"),
            reason,
            "event stored as a dead letter"
        );
        Ok(())
    }
}

/// This service's position in `producer`'s feed (0 before the first event).
pub async fn position<'c, E>(conn: E, producer: &str) -> Result<i64, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row: Option<(i64,)> = sqlx::query_as("SELECT seq FROM event_positions WHERE producer = $1")
        .bind(producer)
        .fetch_optional(conn)
        .await?;
    Ok(row.map_or(0, |(seq,)| seq))
}

async fn set_position(
    conn: &mut AnyConnection,
    producer: &str,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO event_positions (producer, seq, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (producer) DO UPDATE SET seq = CASE WHEN event_positions.seq > $2 THEN event_positions.seq ELSE $2 END, \
         updated_at = $3",
    )
    .bind(producer)
    .bind(seq)
    .bind(page::now_micros())
    .execute(conn)
    .await?;
    Ok(())
}

/// Microseconds since the epoch of an RFC 3339 time, if it is one.
pub(crate) fn time_of(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

/// Consumer tasks that end when this is dropped.
#[derive(Debug, Default)]
pub struct Running(Vec<tokio::task::JoinHandle<()>>);

impl Running {
    /// Starts `consumer` on its own task.
    pub fn spawn(&mut self, consumer: Consumer) {
        self.0.push(tokio::spawn(consumer.run()));
    }

    /// Starts `relay` on its own task.
    pub fn spawn_relay(&mut self, relay: crate::nats::Relay) {
        self.0.push(tokio::spawn(relay.run()));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
