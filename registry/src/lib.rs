//! `hotel registry`: where service instances announce themselves and where the gateway
//! and the services learn who is alive, plus the client library every other process uses.
//!
//! The registry holds soft state only. Instances register with a lease and renew it by
//! heartbeat; one whose heartbeats stop disappears when its lease ends; a graceful stop
//! deregisters at once. Watchers use Consul-style blocking queries and are woken within
//! milliseconds of a change. If the registry restarts it starts empty and every instance
//! is back within about one heartbeat, because a heartbeat that answers 404 (or fails)
//! makes the client register again; meanwhile watchers keep their last known set.
//!
//! Codemap: [`settings`] (configuration), [`model`] (wire types and validation),
//! [`store`] (leases, indexes, watches), [`api`] (HTTP routes and auth), [`client`]
//! (`RegistryClient`, `Registration`, `Watcher`, `register_until`) and [`error`]. The
//! runner every domain service uses, which registers through the client, is in the
//! `hotel-service` crate.
//!
//! Who may depend on it: the `hotel` binary (the role), `hotel-service` and the gateway
//! (the client: registration, heartbeats, watches), `hotel-upstream` (discovery) and
//! `hotel up`. It depends only on `hotel-common`.

pub mod api;
pub mod client;
pub mod error;
pub mod model;
pub mod settings;
pub mod store;

pub use client::{Registration, RegistryClient, Watcher};
pub use model::{Instance, Metadata, ServiceInstances, ServiceList, ServiceSummary};
pub use settings::Settings;

use hotel_common::process::{BoxError, ProcessArgs};
use std::{future::Future, net::SocketAddr};
use store::Store;
use tokio::net::TcpListener;

/// A registry bound to its address, ready to serve (zero2prod style: tests build one on
/// port 0 and read [`Application::addr`]).
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    store: Store,
    settings: Settings,
}

impl Application {
    /// Validates `settings`, binds the listener and builds the state and routes.
    pub async fn build(settings: Settings) -> Result<Application, BoxError> {
        let settings = settings.check()?;
        let (listener, addr) = hotel_common::server::bind(settings.listen).await?;
        let store = Store::start(&settings);
        let router = api::router(store.clone(), &settings);
        Ok(Application {
            listener,
            addr,
            router,
            store,
            settings,
        })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (`https://` with mutual TLS on).
    pub fn url(&self) -> String {
        hotel_common::tls::internal::base_url(self.addr)
    }

    /// The state, for in-process tests.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` resolves; then releases blocked watchers at once (they
    /// answer their current state) and drains for up to `shutdown_grace`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let store = self.store.clone();
        let shutdown = async move {
            shutdown.await;
            store.close();
        };
        hotel_common::server::serve_internal(
            self.listener,
            self.router,
            shutdown,
            self.settings.shutdown_grace,
            "registry",
        )
        .await
    }
}

/// Runs `hotel registry` until SIGTERM or Ctrl-C.
pub async fn run(args: ProcessArgs) -> Result<(), BoxError> {
    let mut settings: Settings =
        hotel_common::config::load(&Settings::default(), args.config_file(), "registry")?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if let Some(name) = &args.instance {
        settings.instance = name.clone();
    }
    let _telemetry = hotel_common::telemetry::init(
        &hotel_common::telemetry::Identity {
            role: "registry".to_owned(),
            instance: settings.instance.clone(),
        },
        args.log_format,
    );
    hotel_common::tls::internal::install_from(&settings.internal_tls, "registry")?;
    let app = Application::build(settings.clone()).await?;
    if settings
        .token
        .as_deref()
        .is_none_or(|t| t.trim().is_empty())
    {
        tracing::warn!(
            addr = %app.addr(),
            "no token configured: the registry is open to every local process; \
             set HOTEL_REGISTRY__TOKEN to require one"
        );
    } else {
        tracing::info!("bearer token required on every endpoint but /healthz and /readyz");
    }
    tracing::info!(addr = %app.addr(), "registry listening");
    hotel_common::process::announce(app.addr());
    app.run_until(hotel_common::server::shutdown_signal())
        .await?;
    tracing::info!("registry stopped");
    Ok(())
}

/// The router alone (for `oneshot` tests), over a fresh store.
pub fn router(settings: &Settings) -> (axum::Router, Store) {
    let store = Store::start(settings);
    (api::router(store.clone(), settings), store)
}
