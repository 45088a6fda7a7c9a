//! The event bus of the domain services (DESIGN.md section 7).
//!
//! - [`cloudevent`]: events are CloudEvents 1.0 JSON with a W3C `traceparent` extension.
//! - [`outbox`]: a producer writes the event row in the same SQLite transaction as the
//!   state change ([`Producer::publish`]), so a change without its event cannot happen.
//!   The outbox table is an ordered log (`seq`).
//! - [`feed`]: the embedded bus. Each producer serves its own outbox as an ordered feed
//!   with a blocking read, `GET /events?after=SEQ&wait_ms=...`, on its own listener; any
//!   replica can serve it, since replicas share the database file. Nothing to install, and
//!   as durable as the database: a kill -9 of any process loses nothing.
//! - [`consumer`]: a consumer service reads a producer's feed through a [`Source`] (the
//!   embedded feed found through the registry, or NATS JetStream: [`nats`]), and applies each event in one transaction with its inbox
//!   row and its position, so each effect happens once per service however often the
//!   event is delivered and however many replicas read. A malformed or unknown event goes
//!   to the dead-letter table instead of blocking the stream.
//! - [`nats`]: the broker transport, when `events.url = "nats://HOST:PORT"`: a relay per
//!   producing instance publishes the outbox to one JetStream stream (dedupe by event
//!   id), and each consuming service reads through a durable pull consumer shared by its
//!   replicas, acking after the inbox transaction commits.
//! - [`metrics`]: `/metrics` of each service: outbox head, backlog per consumer, lag,
//!   applied, duplicates, dead letters, last error.
//!
//! Who may depend on it: `hotel-service` (which serves the feed and runs the consumers
//! of every domain service) and the domain services (customer, room, booking), which
//! publish their events and handle the ones they consume. Never the gateway: events are
//! not part of the public API.
//!
//! ```text
//! hotel-common <- hotel-registry <- hotel-events <- hotel-service <- customer, room, booking
//! ```

pub mod cloudevent;
pub mod consumer;
pub mod feed;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod settings;

pub use cloudevent::CloudEvent;
pub use consumer::{Batch, Delivery, HandleError, Handler, Progress, Source, Subscription};
pub use metrics::EventMetrics;
pub use outbox::Producer;
pub use settings::EventSettings;

/// `hotel.booking.created`: data is the booking as the API shows it.
pub const BOOKING_CREATED: &str = "hotel.booking.created";
/// `hotel.booking.cancelled`: data is the cancelled booking as the API shows it.
pub const BOOKING_CANCELLED: &str = "hotel.booking.cancelled";
/// `hotel.customer.deleted`: data is the customer as the API showed it before deletion.
pub const CUSTOMER_DELETED: &str = "hotel.customer.deleted";
/// `hotel.room.updated`: data is `{"room": ROOM, "changes": [FIELD...]}`.
pub const ROOM_UPDATED: &str = "hotel.room.updated";
