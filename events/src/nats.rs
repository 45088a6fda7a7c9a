//! The broker transport of the bus: NATS JetStream, when `events.url = "nats://HOST:PORT"`.
//!
//! The transactional outbox stays: a producer still writes each event in the
//! transaction of its state change ([`crate::Producer::publish`]). What changes is how
//! the events travel:
//!
//! - [`Relay`]: every producing instance publishes its outbox, in order, to one stream
//!   (`events.stream`, default `HOTEL_EVENTS`, subjects `hotel.>`), each event on the
//!   subject of its type (`hotel.booking.created`) with `Nats-Msg-Id` = its id, and moves
//!   the outbox's relay position (table `event_relay`, shared by the replicas) only
//!   after JetStream acknowledged it. A crash between the ack and the position's commit,
//!   or two replicas relaying the same rows, publishes an event again: JetStream drops
//!   the copy within its duplicate window (2 minutes), and the consumers' inbox drops
//!   it after that. Nothing is lost: a row is only passed once the broker has it.
//! - [`NatsSource`]: a consumer reads through a durable pull consumer per consuming
//!   service and producer (`customer-booking`: customer's view of booking's events,
//!   filter `hotel.booking.>`), shared by the service's replicas, which so compete for
//!   the events. It is a [`Source`] like the embedded feed, so handlers do not know which
//!   bus they are on. The consumer relies on its inbox alone (a redelivered event may
//!   come to another replica, so positions say nothing), and acks each event after the
//!   transaction that applied it (or dead-lettered it) committed. An event not acked
//!   within `events.ack_wait` (a replica killed mid-event) is delivered again, to any
//!   replica. `events.max_in_flight` (JetStream's `max_ack_pending`, default 1) keeps a
//!   producer's events in order as on the embedded bus: the next is delivered when the
//!   last is acked.
//!
//! Lag is the broker's count for the durable consumer: events not yet delivered
//! (`num_pending`) plus delivered and not yet acked (`num_ack_pending`).

use crate::{
    cloudevent,
    consumer::{Batch, Delivery, Progress, Source},
    feed,
    metrics::EventMetrics,
    settings::EventSettings,
};
use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{RetentionPolicy, StorageType},
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use hotel_common::page;
use sqlx::AnyPool;
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long JetStream keeps a published event's id to drop a copy published again.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long the stream keeps events (a consumer service down longer loses them).
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a consumer waits for an event before it asks the broker for its lag
/// again, so `/events/status` is never older than this.
pub const LAG_REFRESH: Duration = Duration::from_secs(5);
/// How long a publish waits for JetStream's ack, and a consumer for the broker's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that `url` is `nats://HOST:PORT`; says what is wrong otherwise.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or("must be nats://HOST:PORT")?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("must name the port: nats://HOST:PORT")?;
    if host.is_empty() || host.contains('/') {
        return Err("must be nats://HOST:PORT".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("port {port:?} is not a port number")),
    }
}

/// The subject an event of `kind` from `service` is published on: its type when that
/// is `hotel.<service>.<verb>` and a valid subject, else `hotel.<service>._invalid`, so
/// that a bad event still reaches the consumers of its producer (which dead-letter it).
pub fn subject_of(service: &str, kind: Option<&str>) -> String {
    let prefix = format!("hotel.{service}.");
    let valid = |k: &str| {
        k.starts_with(&prefix)
            && k.split('.').all(|t| {
                !t.is_empty() && !t.chars().any(|c| c.is_whitespace() || c == '*' || c == '>')
            })
    };
    match kind {
        Some(k) if valid(k) => k.to_owned(),
        _ => format!("{prefix}_invalid"),
    }
}

/// The durable consumer of `consumer`'s replicas for `producer`'s events.
pub fn durable_name(consumer: &str, producer: &str) -> String {
    format!("{consumer}-{producer}")
}

/// A connection to the NATS server and the stream of the bus.
pub struct Broker {
    url: String,
    stream_name: String,
    ack_wait: Duration,
    max_in_flight: u32,
    jetstream: jetstream::Context,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({}, stream {})", self.url, self.stream_name)
    }
}

impl Broker {
    /// Connects to `settings.url` as `instance`. Never waits for the server: when it is
    /// down, the client keeps trying in the background (and says so in the log), and the
    /// relay and the consumers report the failure until it is back.
    pub async fn connect(settings: &EventSettings, instance: &str) -> Result<Arc<Broker>, String> {
        let url = settings.url.clone().ok_or("events.url is not set")?;
        check_url(&url).map_err(|why| format!("events.url = {url:?}: {why}"))?;
        let who = instance.to_owned();
        let client = async_nats::ConnectOptions::new()
            .name(format!("hotel {instance}"))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            // Back within a second of the server's return, whatever the outage.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * u64::try_from(attempts.min(10)).unwrap_or(10))
            })
            .event_callback(move |event| {
                let who = who.clone();
                async move {
                    use async_nats::Event;
                    match event {
                        Event::Connected => tracing::info!(instance = %who, "nats: connected"),
                        Event::Disconnected => {
                            tracing::warn!(instance = %who, "nats: disconnected; reconnecting");
                        }
                        other => tracing::debug!(instance = %who, event = %other, "nats"),
                    }
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| format!("events.url = {url:?}: {e}"))?;
        let mut jetstream = jetstream::new(client);
        jetstream.set_timeout(REQUEST_TIMEOUT);
        Ok(Arc::new(Broker {
            url,
            stream_name: settings.stream.clone(),
            ack_wait: settings.ack_wait,
            max_in_flight: settings.max_in_flight,
            jetstream,
        }))
    }

    /// `nats://HOST:PORT, stream NAME`, for status and logs.
    pub fn describe(&self) -> String {
        format!("{}, stream {}", self.url, self.stream_name)
    }

    /// The stream, created when missing: every subject under `hotel.`, on disk, events
    /// kept for [`MAX_AGE`], copies dropped within [`DUPLICATE_WINDOW`]. Asked for
    /// before every batch the relay publishes and every time a consumer opens, not
    /// cached: a broker that came back with an empty store gets the stream again.
    async fn stream(&self) -> Result<jetstream::stream::Stream, String> {
        self.jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: self.stream_name.clone(),
                subjects: vec!["hotel.>".into()],
                storage: StorageType::File,
                retention: RetentionPolicy::Limits,
                max_age: MAX_AGE,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("stream {} at {}: {e}", self.stream_name, self.url))
    }

    /// The durable pull consumer of `consumer`'s replicas for `producer`'s events,
    /// created when missing (explicit acks, redelivery after `events.ack_wait`, no
    /// limit on redeliveries: a failing event is retried, a bad one dead-lettered; at
    /// most `events.max_in_flight` unacked). An existing one keeps the settings it was
    /// created with.
    async fn durable(&self, consumer: &str, producer: &str) -> Result<PullConsumer, String> {
        let name = durable_name(consumer, producer);
        self.stream()
            .await?
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("hotel.{producer}.>"),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: self.ack_wait,
                    deliver_policy: DeliverPolicy::All,
                    max_deliver: -1,
                    max_ack_pending: i64::from(self.max_in_flight),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("consumer {name} of stream {}: {e}", self.stream_name))
    }
}

/// The broker's handle of one delivered event: acknowledged once the transaction that
/// applied it committed, or handed back for an early redelivery when it failed.
pub struct Receipt(jetstream::Message);

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receipt({})", self.0.subject)
    }
}

impl Receipt {
    /// Acknowledges the event: the broker will not deliver it again (unless the ack is
    /// lost, when the inbox recognises the copy).
    pub(crate) async fn ack(&self) -> Result<(), String> {
        self.0
            .ack()
            .await
            .map_err(|e| format!("acknowledging {}: {e}", self.0.subject))
    }

    /// Hands the event back, to be delivered again after `delay` (to any replica).
    pub(crate) async fn release(&self, delay: Duration) {
        if let Err(e) = self.0.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::debug!(error = %e, "nak not sent; the event is delivered again after ack_wait");
        }
    }
}

/// The durable consumer and its open message stream.
struct Open {
    consumer: PullConsumer,
    messages: pull::Stream,
    /// When the broker was last asked for the lag: at most every [`LAG_EVERY`] while
    /// events flow, so that asking costs no round trip per event.
    asked: Option<tokio::time::Instant>,
}

/// How often a busy consumer asks the broker for its lag.
pub const LAG_EVERY: Duration = Duration::from_secs(1);

/// A consumer's [`Source`] on NATS JetStream: the durable pull consumer of its service
/// for one producer.
pub struct NatsSource {
    broker: Arc<Broker>,
    consumer: &'static str,
    producer: &'static str,
    /// The consumer and its stream of messages, opened on first read and again after a
    /// failure; one read at a time.
    open: tokio::sync::Mutex<Option<Open>>,
}

impl NatsSource {
    /// `consumer`'s source of `producer`'s events on `broker`.
    pub fn new(broker: Arc<Broker>, consumer: &'static str, producer: &'static str) -> NatsSource {
        NatsSource {
            broker,
            consumer,
            producer,
            open: tokio::sync::Mutex::new(None),
        }
    }

    async fn open(&self, limit: u32) -> Result<Open, String> {
        let consumer = self.broker.durable(self.consumer, self.producer).await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(usize::try_from(limit).unwrap_or(100))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| {
                format!(
                    "pulling from {}: {e}",
                    durable_name(self.consumer, self.producer)
                )
            })?;
        Ok(Open {
            consumer,
            messages,
            asked: None,
        })
    }

    fn delivery(message: jetstream::Message) -> Delivery {
        let seq = message
            .info()
            .ok()
            .and_then(|i| i64::try_from(i.stream_sequence).ok())
            .unwrap_or(0);
        Delivery {
            seq,
            payload: String::from_utf8_lossy(&message.payload).into_owned(),
            receipt: Some(Receipt(message)),
        }
    }
}

impl Source for NatsSource {
    fn read<'a>(
        &'a self,
        _after: i64,
        limit: u32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, String>> {
        Box::pin(async move {
            let mut open = self.open.lock().await;
            if open.is_none() {
                *open = Some(self.open(limit).await?);
            }
            let Some(o) = open.as_mut() else {
                return Err("the consumer is not open".into());
            };
            let name = durable_name(self.consumer, self.producer);
            let mut deliveries = Vec::new();
            let first = tokio::time::timeout(wait.min(LAG_REFRESH), o.messages.next()).await;
            match first {
                Err(_) => {}
                Ok(Some(Ok(m))) => deliveries.push(Self::delivery(m)),
                Ok(Some(Err(e))) => {
                    *open = None;
                    return Err(format!("pulling from {name}: {e}"));
                }
                Ok(None) => {
                    *open = None;
                    return Err(format!("pulling from {name}: the stream ended"));
                }
            }
            // What else has arrived already, without waiting.
            while deliveries.len() < usize::try_from(limit).unwrap_or(100) {
                match o.messages.next().now_or_never() {
                    Some(Some(Ok(m))) => deliveries.push(Self::delivery(m)),
                    _ => break,
                }
            }
            let due = deliveries.is_empty() || o.asked.is_none_or(|t| t.elapsed() >= LAG_EVERY);
            if !due {
                return Ok(Batch {
                    deliveries,
                    progress: Progress::Unknown,
                });
            }
            o.asked = Some(tokio::time::Instant::now());
            let info = tokio::time::timeout(REQUEST_TIMEOUT, o.consumer.get_info()).await;
            let progress = match info {
                Ok(Ok(info)) => Progress::Pending {
                    acked: i64::try_from(info.ack_floor.stream_sequence).unwrap_or(i64::MAX),
                    pending: i64::try_from(info.num_pending)
                        .unwrap_or(i64::MAX)
                        .saturating_add(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX)),
                },
                Ok(Err(e)) if deliveries.is_empty() => {
                    return Err(format!("consumer info of {name}: {e}"));
                }
                Err(_) if deliveries.is_empty() => {
                    return Err(format!("consumer info of {name}: no answer"));
                }
                _ => Progress::Unknown,
            };
            Ok(Batch {
                deliveries,
                progress,
            })
        })
    }

    fn ordered(&self) -> bool {
        false
    }

    fn system(&self) -> &'static str {
        "nats"
    }
}

/// Publishes a producer's outbox to the broker (see the module documentation); one per
/// producing instance.
pub struct Relay {
    /// The producing service.
    pub service: &'static str,
    /// This instance's name, for logs and spans.
    pub instance: String,
    /// The service's database, holding the outbox and the relay position.
    pub pool: AnyPool,
    /// Where to.
    pub broker: Arc<Broker>,
    /// Batch size, waits and backoff.
    pub settings: EventSettings,
    /// Counts into.
    pub metrics: Arc<EventMetrics>,
}

impl Relay {
    /// Publishes until the task is aborted.
    pub async fn run(self) {
        tracing::info!(instance = %self.instance, broker = %self.broker.describe(), "relaying the outbox");
        self.metrics.relay_to(self.broker.describe());
        // Never cancelled: the relay ends when its task is aborted.
        let never = CancellationToken::new();
        let mut last_logged: Option<String> = None;
        loop {
            match self.round(&never).await {
                Ok(()) => {
                    if last_logged.take().is_some() {
                        tracing::info!(instance = %self.instance, "relay: publishing again");
                    }
                    self.metrics.relay_recovered();
                }
                Err(e) => {
                    if last_logged.as_deref() == Some(e.as_str()) {
                        tracing::debug!(instance = %self.instance, error = %e, "relay: will retry");
                    } else {
                        tracing::warn!(instance = %self.instance, error = %e, "relay: will retry");
                        last_logged = Some(e.clone());
                    }
                    self.metrics.relay_error(e);
                    tokio::time::sleep(self.settings.retry_backoff).await;
                }
            }
        }
    }

    /// Waits for outbox rows past the relay position, publishes them, and moves the
    /// position past those the broker acknowledged.
    async fn round(&self, never: &CancellationToken) -> Result<(), String> {
        let db = |e: sqlx::Error| format!("relay position: {e}");
        let after = relay_position(&self.pool, &self.broker.stream_name)
            .await
            .map_err(db)?;
        let (rows, head) = feed::read_waiting(
            &self.pool,
            after,
            self.settings.batch,
            self.settings.poll_wait,
            never,
        )
        .await
        .map_err(|e| format!("reading the outbox: {e}"))?;
        self.metrics.relay_position(after, head);
        if rows.is_empty() {
            return Ok(());
        }
        let js = &self.broker.jetstream;
        self.broker.stream().await?;
        // Pipelined: every publish sent, then the acks awaited in order.
        let mut sent = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = cloudevent::id_of_malformed(&row.payload)
                .unwrap_or_else(|| format!("{}-outbox-{}", self.service, row.seq));
            let parsed = cloudevent::CloudEvent::parse(&row.payload).ok();
            let kind = parsed.as_ref().map(|e| e.kind.as_str());
            let subject = subject_of(self.service, kind);
            let span = tracing::info_span!(
                "relay",
                otel.kind = "producer",
                otel.status_code = tracing::field::Empty,
                messaging.system = "nats",
                messaging.destination.name = %subject,
                messaging.message.id = %id,
                event.seq = row.seq,
                instance = %self.instance,
            );
            if let Some(tp) = parsed
                .as_ref()
                .and_then(|e| e.traceparent.as_deref())
                .and_then(|v| http::HeaderValue::from_str(v).ok())
            {
                let mut headers = http::HeaderMap::new();
                headers.insert("traceparent", tp);
                hotel_common::telemetry::set_parent_from(&span, &headers);
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(row.payload.clone().into())
                .message_id(id.as_str());
            let ack = js
                .send_publish(subject.clone(), publish)
                .instrument(span.clone())
                .await
                .map_err(|e| {
                    hotel_common::telemetry::record_error(&span, e.to_string());
                    format!("publishing {subject} to {}: {e}", self.broker.describe())
                });
            let time = parsed
                .as_ref()
                .and_then(|e| crate::consumer::time_of(&e.time));
            sent.push((row.seq, ack, span, time));
        }
        let mut acked = after;
        let mut failure = None;
        for (seq, ack, span, time) in sent {
            let result = match ack {
                Ok(ack) => ack
                    .await
                    .map_err(|e| format!("{} did not acknowledge: {e}", self.broker.describe())),
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => {
                    if ack.duplicate {
                        span.in_scope(|| tracing::debug!(event.seq = seq, "already in the stream"));
                    }
                    let latency = time.map(|t| (page::now_micros() - t) as f64 / 1e6);
                    self.metrics.relayed(latency);
                    acked = seq;
                }
                Err(e) => {
                    hotel_common::telemetry::record_error(&span, e.clone());
                    failure = Some(e);
                    break;
                }
            }
        }
        if acked > after {
            set_relay_position(&self.pool, &self.broker.stream_name, acked)
                .await
                .map_err(db)?;
            self.metrics.relay_position(acked, head);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The last outbox position the broker acknowledged for `stream` (0 before the first).
pub async fn relay_position(pool: &AnyPool, stream: &str) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT seq FROM event_relay WHERE stream = $1")
        .bind(stream)
        .fetch_optional(pool)
        .await?;
    Ok(row.map_or(0, |(seq,)| seq))
}

/// Moves the relay position of `stream` to `seq`, never back (another replica may be
/// ahead).
async fn set_relay_position(pool: &AnyPool, stream: &str, seq: i64) -> Result<(), sqlx::Error> {
    let mut tx = hotel_common::db::begin_immediate(pool).await?;
    sqlx::query(
        "INSERT INTO event_relay (stream, seq, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (stream) DO UPDATE SET seq = CASE WHEN event_relay.seq > $2 THEN event_relay.seq ELSE $2 END, \
         updated_at = $3",
    )
    .bind(stream)
    .bind(seq)
    .bind(page::now_micros())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_go_on_the_subject_of_their_type_and_bad_ones_on_their_producers_invalid_subject() {
        assert_eq!(
            subject_of("booking", Some("hotel.booking.created")),
            "hotel.booking.created"
        );
        assert_eq!(subject_of("booking", None), "hotel.booking._invalid");
        assert_eq!(
            subject_of("booking", Some("hotel.customer.deleted")),
            "hotel.booking._invalid"
        );
        assert_eq!(
            subject_of("booking", Some("hotel.booking.a b")),
            "hotel.booking._invalid"
        );
        assert_eq!(
            subject_of("booking", Some("hotel.booking.>")),
            "hotel.booking._invalid"
        );
        assert_eq!(durable_name("customer", "booking"), "customer-booking");
    }

    #[test]
    fn only_nats_urls_with_a_port_are_taken() {
        assert_eq!(check_url("nats://127.0.0.1:4222"), Ok(()));
        assert!(check_url("nats://127.0.0.1").is_err());
        assert!(check_url("nats://:4222").is_err());
        assert!(check_url("nats://h:0").is_err());
        assert!(check_url("tls://h:4222").is_err());
    }
}
