//! Running a domain service instance (customer, room, booking) the one way they all run:
//! load settings (defaults < file < `HOTEL_<ROLE>__*` < command line), start telemetry,
//! build, announce the bound address, and serve until SIGTERM/Ctrl-C, registered with
//! the registry while serving when `registry.url` is set.

use crate::{events::Events, settings::ServiceConfig};
use axum::Router;
use hotel_common::{
    config,
    config::RegistryLink,
    health::ReadinessCheck,
    process::{self, BoxError, ProcessArgs},
    server, telemetry,
};
use hotel_registry::client::register_until;
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::net::TcpListener;

/// A service instance whose listener is bound, not yet serving.
pub struct ServiceInstance {
    listener: TcpListener,
    addr: SocketAddr,
    /// `HOST:PORT` registered for peers: see `hotel_common::advertise`.
    advertise: String,
    router: Router,
    /// The check `/readyz` answers with, run again before every heartbeat.
    readiness: ReadinessCheck,
    role: &'static str,
    instance: String,
    registry: RegistryLink,
    shutdown_grace: Duration,
    /// The outbox feed this instance serves and the consumers it runs while serving.
    events: Events,
}

impl ServiceInstance {
    /// Binds `settings.listen()` (port 0 picks a free port) for `router`, whose `/readyz`
    /// answers with `readiness`: the same check is reported to the registry with every
    /// heartbeat, so an instance that is not ready stops getting traffic. `router` serves
    /// `events`' feed (see [`crate::service_router`]); its consumers run while the
    /// instance serves.
    pub async fn bind<S: ServiceConfig>(
        settings: &S,
        router: Router,
        readiness: ReadinessCheck,
        events: Events,
    ) -> Result<Self, BoxError> {
        let (listener, addr) = server::bind(settings.listen()).await?;
        let advertise = hotel_common::advertise::advertised_addr(settings.advertise(), addr)?;
        Ok(ServiceInstance {
            listener,
            addr,
            advertise,
            router,
            readiness,
            role: S::ROLE,
            instance: settings.instance().to_owned(),
            registry: settings.registry().clone(),
            shutdown_grace: settings.shutdown_grace(),
            events,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `HOST:PORT` it registers (peers reach it there).
    pub fn advertised(&self) -> &str {
        &self.advertise
    }

    /// The router it serves, for `oneshot` tests.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for up to
    /// `shutdown_grace`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        // Blocking feed reads answer at once when shutdown starts, so they do not hold
        // up the drain; consumers stop when `consumers` is dropped, after it.
        let feed = self.events.feed.clone();
        let shutdown = async move {
            shutdown.await;
            feed.stop();
        };
        let consumers = self.events.start().await?;
        // With `registry.url` set, register now that the port is bound, heartbeat while
        // serving (each carrying the readiness check's result), and on shutdown
        // deregister before draining so watchers stop sending new requests first.
        let shutdown = register_until(
            &self.registry,
            self.role,
            &self.instance,
            &self.advertise,
            self.readiness,
            shutdown,
        )?;
        tracing::info!(instance = %self.instance, addr = %self.addr, advertised = %self.advertise, "{} serving", self.role);
        server::serve_internal(
            self.listener,
            self.router,
            shutdown,
            self.shutdown_grace,
            self.role,
        )
        .await?;
        drop(consumers);
        Ok(())
    }
}

/// A domain service application that [`run`] can build and serve.
pub trait Service: Sized {
    /// Its settings.
    type Settings: ServiceConfig;
    /// Opens what it needs and binds its listener.
    fn build(settings: Self::Settings) -> impl Future<Output = Result<Self, BoxError>> + Send;
    /// The address actually bound.
    fn local_addr(&self) -> SocketAddr;
    /// Serves until `shutdown` resolves, then drains.
    fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Runs an instance of service `A` until SIGTERM or Ctrl-C (`hotel service <role>`).
pub async fn run<A: Service>(args: ProcessArgs) -> Result<(), BoxError> {
    let role = <A::Settings as ServiceConfig>::ROLE;
    let mut settings: A::Settings =
        config::load(&A::Settings::default(), args.config_file(), role)?;
    settings.apply(&args);
    let _telemetry = telemetry::init(
        &telemetry::Identity {
            role: role.to_owned(),
            instance: settings.instance().to_owned(),
        },
        args.log_format,
    );
    // Before anything builds a client: they all present this identity.
    hotel_common::tls::internal::install_from(settings.internal_tls(), role)?;
    let app = A::build(settings).await?;
    process::announce(app.local_addr());
    app.run_until(server::shutdown_signal()).await
}
