//! The event bus in a domain service instance: its [`Producer`] (the outbox its
//! handlers write), its [`Feed`] (the outbox served to other services), and the
//! consumers of the producers it subscribes to, started while the instance serves.
//! With `events.url` set (NATS JetStream), the instance also relays its outbox to the
//! broker, and its consumers read from the broker instead of the producers' feeds (the
//! feed is still served: `hotel events tail` reads it on either bus).

use crate::settings::ServiceConfig;
use hotel_common::process::BoxError;
use hotel_events::{
    EventMetrics, EventSettings, Producer, Subscription,
    consumer::{Consumer, HttpFeed, Running, Source},
    feed::Feed,
    nats::{Broker, NatsSource, Relay},
};
use hotel_registry::client::RegistryClient;
use sqlx::AnyPool;
use std::sync::Arc;

/// The events of one service instance, built with it, running while it serves; and,
/// because every router is built from it, the instance's fault switch.
pub struct Events {
    /// The instance's fault switch (see `hotel_common::fault`), served by
    /// [`crate::service_router`].
    pub faults: hotel_common::fault::Faults,
    /// The instance's `/metrics` (requests, faults, database, pool, events; booking adds
    /// its upstream client), served by [`crate::service_router`].
    pub instance_metrics: Arc<hotel_common::metrics::InstanceMetrics>,
    /// Writes this service's events into its outbox.
    pub producer: Producer,
    /// Serves the outbox at `/events`, with `/events/status` and `/events/dead`.
    pub feed: Feed,
    pool: AnyPool,
    service: &'static str,
    instance: String,
    settings: EventSettings,
    registry: Option<RegistryClient>,
    consumers: Vec<(Subscription, Option<String>)>,
}

impl Events {
    /// The events of an instance with `settings` over its database `pool` (whose event
    /// tables [`hotel_events::outbox::create_tables`] made). Fails naming the key on a
    /// bad `[events]` block.
    pub fn new<S: ServiceConfig>(settings: &S, pool: AnyPool) -> Result<Events, BoxError> {
        settings.events().validate()?;
        let metrics = EventMetrics::new();
        let registry = RegistryClient::from_link(settings.registry())?;
        let faults = hotel_common::fault::Faults::new(settings.instance(), settings.fault_token());
        let instance_metrics = hotel_common::metrics::InstanceMetrics::new(&faults);
        let events = metrics.clone();
        instance_metrics.append(move || events.encode());
        Ok(Events {
            faults,
            instance_metrics,
            producer: Producer::new(S::ROLE, settings.instance(), metrics.clone()),
            feed: Feed::new(pool.clone(), metrics),
            pool,
            service: S::ROLE,
            instance: settings.instance().to_owned(),
            settings: settings.events().clone(),
            registry,
            consumers: Vec::new(),
        })
    }

    /// Consumes `subscription.producer`'s events: from its feed at `fixed_url` when given,
    /// else from any live instance the registry knows.
    pub fn subscribe(&mut self, subscription: Subscription, fixed_url: Option<String>) {
        self.consumers.push((subscription, fixed_url));
    }

    /// The metrics every event family counts into.
    pub fn metrics(&self) -> &Arc<EventMetrics> {
        self.producer.metrics()
    }

    /// Starts the consumers (and, on NATS, the relay); they stop when the returned
    /// value is dropped.
    pub async fn start(&self) -> Result<Running, BoxError> {
        let mut running = Running::default();
        let broker = match &self.settings.url {
            Some(_) => Some(Broker::connect(&self.settings, &self.instance).await?),
            None => None,
        };
        if let Some(broker) = &broker {
            running.spawn_relay(Relay {
                service: self.service,
                instance: self.instance.clone(),
                pool: self.pool.clone(),
                broker: broker.clone(),
                settings: self.settings.clone(),
                metrics: self.metrics().clone(),
            });
        }
        for (subscription, fixed) in &self.consumers {
            let producer = subscription.producer;
            let source: Arc<dyn Source> = match (&broker, fixed, &self.registry) {
                (Some(broker), _, _) => {
                    Arc::new(NatsSource::new(broker.clone(), self.service, producer))
                }
                (None, Some(url), _) => Arc::new(HttpFeed::fixed(
                    producer,
                    self.service,
                    url.clone(),
                    &self.settings,
                )?),
                (None, None, Some(registry)) => Arc::new(HttpFeed::registry(
                    producer,
                    self.service,
                    registry.clone(),
                    &self.settings,
                )?),
                (None, None, None) => {
                    tracing::warn!(
                        instance = %self.instance,
                        producer,
                        "not consuming {producer} events: no registry.url to find its feed"
                    );
                    continue;
                }
            };
            running.spawn(Consumer {
                service: self.service,
                instance: self.instance.clone(),
                pool: self.pool.clone(),
                subscription: subscription.clone(),
                source,
                settings: self.settings.clone(),
                metrics: self.metrics().clone(),
            });
        }
        Ok(running)
    }
}
