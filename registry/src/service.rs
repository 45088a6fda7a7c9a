//! Running a domain service instance (customer, room, booking) the one way they all run:
//! load settings (defaults < file < `HOTEL_<ROLE>__*` < command line), start telemetry,
//! build, announce the bound address, and serve until SIGTERM/Ctrl-C, registered with
//! the registry while serving when `registry.url` is set.
//!
//! It lives here rather than in `hotel-common` because serving includes the
//! registration ([`register_until`]), and common cannot depend on the registry crate.

use crate::client::register_until;
use axum::Router;
use hotel_common::{
    config,
    config::RegistryLink,
    process::{self, BoxError, ProcessArgs},
    server,
    service::{self, DatabaseService, ServiceConfig, ServiceSettings},
    telemetry,
};
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::net::TcpListener;

/// A service instance whose listener is bound, not yet serving.
pub struct ServiceInstance {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    role: &'static str,
    instance: String,
    registry: RegistryLink,
    shutdown_grace: Duration,
}

impl ServiceInstance {
    /// Binds `settings.listen()` (port 0 picks a free port) for `router`.
    pub async fn bind<S: ServiceConfig>(settings: &S, router: Router) -> Result<Self, BoxError> {
        let (listener, addr) = server::bind(settings.listen()).await?;
        Ok(ServiceInstance {
            listener,
            addr,
            router,
            role: S::ROLE,
            instance: settings.instance().to_owned(),
            registry: settings.registry().clone(),
            shutdown_grace: settings.shutdown_grace(),
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
        // With `registry.url` set, register now that the port is bound, heartbeat while
        // serving, and on shutdown deregister before draining so watchers stop sending
        // new requests first.
        let shutdown = register_until(
            &self.registry,
            self.role,
            &self.instance,
            self.addr,
            shutdown,
        )?;
        tracing::info!(instance = %self.instance, addr = %self.addr, "{} serving", self.role);
        server::serve(self.listener, self.router, shutdown, self.shutdown_grace).await?;
        Ok(())
    }
}

/// The application of a service whose whole state is its database (customer, room):
/// its listener bound and database ready, not yet serving.
pub struct DatabaseApp<R: DatabaseService> {
    instance: ServiceInstance,
    settings: ServiceSettings<R>,
}

impl<R: DatabaseService> DatabaseApp<R> {
    /// Opens and migrates the database, then binds `settings.listen` (port 0 picks a free
    /// port).
    pub async fn build(settings: ServiceSettings<R>) -> Result<Self, BoxError> {
        let pool = service::connect(&settings).await?;
        let instance = ServiceInstance::bind(&settings, R::router(pool)).await?;
        Ok(DatabaseApp { instance, settings })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.instance.local_addr()
    }

    /// The settings this instance runs with.
    pub fn settings(&self) -> &ServiceSettings<R> {
        &self.settings
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for up to
    /// `shutdown_grace`; registered with the registry meanwhile when `registry.url` is set.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        self.instance.run_until(shutdown).await
    }
}

impl<R: DatabaseService> Service for DatabaseApp<R> {
    type Settings = ServiceSettings<R>;
    fn build(settings: Self::Settings) -> impl Future<Output = Result<Self, BoxError>> + Send {
        DatabaseApp::build(settings)
    }
    fn local_addr(&self) -> SocketAddr {
        DatabaseApp::local_addr(self)
    }
    fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        DatabaseApp::run_until(self, shutdown)
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
    let app = A::build(settings).await?;
    process::announce(app.local_addr());
    app.run_until(server::shutdown_signal()).await
}
