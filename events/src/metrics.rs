//! What a service's `/metrics` (Prometheus text) and `/events/status` (JSON) say about
//! its events: as a producer, the outbox head and each consumer's backlog; as a
//! consumer, per producer, its position, lag, applied events, duplicates, dead letters
//! and the last error. One [`EventMetrics`] per process object (a `Registry` each, so
//! several apps can share a test process).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::Serialize;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

/// Labels naming a producing service (on a consumer's families).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProducerLabels {
    /// The producing service, such as `booking`.
    pub producer: String,
}

/// Labels naming a consuming service (on a producer's families).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// The consuming service as it named itself on its feed requests.
    pub consumer: String,
}

/// Labels of an applied event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppliedLabels {
    /// The producing service.
    pub producer: String,
    /// The event type.
    pub event_type: String,
}

/// Labels of a published event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// The event type.
    pub event_type: String,
}

/// One consumer's state as `/events/status` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// The last feed position applied (or skipped) by this service.
    pub position: i64,
    /// The producer's newest position, as its feed last said.
    pub head: i64,
    /// Events written by the producer and not yet applied here: `head - position`.
    pub lag: i64,
    /// Events this instance applied.
    pub applied: u64,
    /// Deliveries this instance recognised as already applied (inbox hit).
    pub duplicates: u64,
    /// Events this instance sent to the dead-letter table.
    pub dead_letters: u64,
    /// The last failure reading the feed or applying an event, until the next success.
    pub last_error: Option<String>,
}

/// The relay's state as `/events/status` shows it (NATS JetStream only: the embedded
/// bus has no relay, consumers read the outbox itself).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RelayStatus {
    /// Where the outbox is published: `nats://HOST:PORT`, stream `NAME`.
    pub broker: String,
    /// The last outbox position the broker acknowledged (shared by the replicas).
    pub position: i64,
    /// Outbox events not yet acknowledged by the broker: `head - position`.
    pub backlog: i64,
    /// Events this instance published and the broker acknowledged.
    pub published: u64,
    /// The last failure publishing, until the next success.
    pub last_error: Option<String>,
}

/// The events metrics of one service instance.
pub struct EventMetrics {
    registry: Registry,
    published: Family<TypeLabels, Counter>,
    outbox_head: Gauge,
    backlog: Family<ConsumerLabels, Gauge>,
    applied: Family<AppliedLabels, Counter>,
    duplicates: Family<ProducerLabels, Counter>,
    dead_letters: Family<ProducerLabels, Counter>,
    errors: Family<ProducerLabels, Counter>,
    lag: Family<ProducerLabels, Gauge>,
    delay: Family<ProducerLabels, Histogram, fn() -> Histogram>,
    relayed: Counter,
    relay_errors: Counter,
    publish_latency: Histogram,
    /// What `/events/status` says of the relay; `None` on the embedded bus.
    relay: Mutex<Option<RelayStatus>>,
    /// Per producer, what `/events/status` answers; written by the consumer tasks.
    status: Mutex<BTreeMap<String, ConsumerStatus>>,
}

impl std::fmt::Debug for EventMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventMetrics")
    }
}

fn delay_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl EventMetrics {
    /// Creates and registers every family under the `hotel_events` prefix.
    pub fn new() -> Arc<EventMetrics> {
        let mut registry = Registry::with_prefix("hotel_events");
        let published = Family::<TypeLabels, Counter>::default();
        let outbox_head = Gauge::default();
        let backlog = Family::<ConsumerLabels, Gauge>::default();
        let applied = Family::<AppliedLabels, Counter>::default();
        let duplicates = Family::<ProducerLabels, Counter>::default();
        let dead_letters = Family::<ProducerLabels, Counter>::default();
        let errors = Family::<ProducerLabels, Counter>::default();
        let lag = Family::<ProducerLabels, Gauge>::default();
        let delay = Family::<ProducerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            delay_histogram,
        );
        registry.register(
            "published",
            "Events written to this service's outbox by this instance, by type",
            published.clone(),
        );
        registry.register(
            "outbox_head",
            "The newest position of this service's outbox, as last served or written",
            outbox_head.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Events of this outbox a consumer had not read yet at its last feed request",
            backlog.clone(),
        );
        registry.register(
            "applied",
            "Events applied by this instance, by producer and type",
            applied.clone(),
        );
        registry.register(
            "duplicates",
            "Deliveries of an event already applied (inbox hit), by producer",
            duplicates.clone(),
        );
        registry.register(
            "dead_letters",
            "Malformed or unknown events stored as dead letters, by producer",
            dead_letters.clone(),
        );
        registry.register(
            "consumer_errors",
            "Failed feed reads and failed applies (retried), by producer",
            errors.clone(),
        );
        registry.register(
            "consumer_lag",
            "Events the producer has written that this service has not applied",
            lag.clone(),
        );
        let relayed = Counter::default();
        let relay_errors = Counter::default();
        let publish_latency = delay_histogram();
        registry.register(
            "relayed",
            "Outbox events this instance published to the broker (NATS JetStream) and the broker acknowledged",
            relayed.clone(),
        );
        registry.register(
            "relay_errors",
            "Failed publishes to the broker (retried)",
            relay_errors.clone(),
        );
        registry.register(
            "publish_latency_seconds",
            "From an event's time (its commit on the producer) to the broker's ack of it",
            publish_latency.clone(),
        );
        registry.register(
            "process_delay_seconds",
            "From an event's time (its commit on the producer) to its effect's commit here",
            delay.clone(),
        );
        Arc::new(EventMetrics {
            registry,
            published,
            outbox_head,
            backlog,
            applied,
            duplicates,
            dead_letters,
            errors,
            lag,
            delay,
            relayed,
            relay_errors,
            publish_latency,
            relay: Mutex::new(None),
            status: Mutex::new(BTreeMap::new()),
        })
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("event metrics could not be encoded");
        }
        out
    }

    /// Every consumer's status, by producer.
    pub fn status(&self) -> BTreeMap<String, ConsumerStatus> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The relay's status, when this instance publishes to a broker.
    pub fn relay(&self) -> Option<RelayStatus> {
        self.relay.lock().ok().and_then(|r| r.clone())
    }

    fn with_relay(&self, f: impl FnOnce(&mut RelayStatus)) {
        if let Ok(mut r) = self.relay.lock() {
            f(r.get_or_insert_with(RelayStatus::default));
        }
    }

    pub(crate) fn relay_to(&self, broker: String) {
        self.with_relay(|r| r.broker = broker);
    }

    /// The relay's position and the outbox head: the backlog, also as
    /// `outbox_backlog{consumer="broker"}`.
    pub(crate) fn relay_position(&self, position: i64, head: i64) {
        let backlog = head.saturating_sub(position).max(0);
        self.outbox_head.set(head);
        self.backlog
            .get_or_create(&ConsumerLabels {
                consumer: "broker".to_owned(),
            })
            .set(backlog);
        self.with_relay(|r| {
            r.position = r.position.max(position);
            r.backlog = backlog;
        });
    }

    pub(crate) fn relayed(&self, latency: Option<f64>) {
        self.relayed.inc();
        if let Some(l) = latency {
            self.publish_latency.observe(l);
        }
        self.with_relay(|r| {
            r.published += 1;
            r.last_error = None;
        });
    }

    pub(crate) fn relay_error(&self, error: String) {
        self.relay_errors.inc();
        self.with_relay(|r| r.last_error = Some(error));
    }

    pub(crate) fn relay_recovered(&self) {
        self.with_relay(|r| r.last_error = None);
    }

    fn with_status(&self, producer: &str, f: impl FnOnce(&mut ConsumerStatus)) {
        if let Ok(mut map) = self.status.lock() {
            f(map.entry(producer.to_owned()).or_default());
        }
    }

    pub(crate) fn published(&self, kind: &str) {
        self.published
            .get_or_create(&TypeLabels {
                event_type: kind.to_owned(),
            })
            .inc();
    }

    pub(crate) fn served(&self, consumer: Option<&str>, after: i64, head: i64) {
        self.outbox_head.set(head);
        if let Some(consumer) = consumer {
            self.backlog
                .get_or_create(&ConsumerLabels {
                    consumer: consumer.to_owned(),
                })
                .set(head.saturating_sub(after).max(0));
        }
    }

    pub(crate) fn position(&self, producer: &str, position: i64, head: i64) {
        let lag = head.saturating_sub(position).max(0);
        self.lag
            .get_or_create(&ProducerLabels {
                producer: producer.to_owned(),
            })
            .set(lag);
        self.with_status(producer, |s| {
            s.position = position;
            s.head = s.head.max(head);
            s.lag = s.head.saturating_sub(position).max(0);
        });
    }

    /// A broker's count: `pending` events not yet acked, all acked up to `acked`.
    pub(crate) fn pending(&self, producer: &str, acked: i64, pending: i64) {
        self.lag
            .get_or_create(&ProducerLabels {
                producer: producer.to_owned(),
            })
            .set(pending);
        self.with_status(producer, |s| {
            s.position = acked;
            s.head = acked.saturating_add(pending);
            s.lag = pending;
        });
    }

    /// One event of a broker's count acked: the lag one less (until the next count).
    pub(crate) fn one_less(&self, producer: &str) {
        let mut lag = 0;
        self.with_status(producer, |s| {
            s.lag = (s.lag - 1).max(0);
            s.head = s.position.saturating_add(s.lag);
            lag = s.lag;
        });
        self.lag
            .get_or_create(&ProducerLabels {
                producer: producer.to_owned(),
            })
            .set(lag);
    }

    pub(crate) fn applied(&self, producer: &str, kind: &str, delay: Option<f64>) {
        self.applied
            .get_or_create(&AppliedLabels {
                producer: producer.to_owned(),
                event_type: kind.to_owned(),
            })
            .inc();
        if let Some(d) = delay {
            self.delay
                .get_or_create(&ProducerLabels {
                    producer: producer.to_owned(),
                })
                .observe(d);
        }
        self.with_status(producer, |s| {
            s.applied += 1;
            s.last_error = None;
        });
    }

    pub(crate) fn duplicate(&self, producer: &str) {
        self.duplicates
            .get_or_create(&ProducerLabels {
                producer: producer.to_owned(),
            })
            .inc();
        self.with_status(producer, |s| s.duplicates += 1);
    }

    pub(crate) fn dead_letter(&self, producer: &str) {
        self.dead_letters
            .get_or_create(&ProducerLabels {
                producer: producer.to_owned(),
            })
            .inc();
        self.with_status(producer, |s| s.dead_letters += 1);
    }

    pub(crate) fn error(&self, producer: &str, error: String) {
        self.errors
            .get_or_create(&ProducerLabels {
                producer: producer.to_owned(),
            })
            .inc();
        self.with_status(producer, |s| s.last_error = Some(error));
    }

    pub(crate) fn recovered(&self, producer: &str) {
        self.with_status(producer, |s| s.last_error = None);
    }
}
