//! The booking service: books a room for a customer for some nights, checking both with
//! their services, and never books one room twice for overlapping nights, even when
//! several replicas share one database file and take conflicting requests at once.
//!
//! Codemap: [`config`] settings, [`model`] JSON shapes and date rules, [`directory`] the
//! calls to customer and room, [`store`] the bookings table and its overlap check,
//! [`idempotency`] `Idempotency-Key` handling, [`events`] what customer's and room's
//! events do here (the deletion saga, the room projection), [`routes`] handlers and OpenAPI,
//! [`error`] every failure and its problem+json.
//!
//! Who may depend on it: the `hotel` binary (the role and its OpenAPI document) and
//! tests. It reaches customer and room over HTTP through `hotel-upstream`, never through
//! their crates or databases, and never depends on the gateway.

pub mod config;
pub mod directory;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod model;
pub mod routes;
pub mod store;

pub use config::Settings;
pub use directory::{Directory, HttpDirectory, UpstreamDirectory};
pub use error::{BookingError, PeerError};
pub use routes::{ApiDoc, AppState, document as openapi};

use axum::Router;
use hotel_common::{
    db,
    process::{BoxError, ProcessArgs},
};
use hotel_events::Subscription;
use hotel_service::{Events, Service, ServiceInstance};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

/// The role name: config section, span names, registry service name.
pub const ROLE: &str = "booking";

/// How often expired idempotency keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The full router: the service's routes plus health, problem+json fallbacks, body limit,
/// request context and server span.
pub fn app_router(state: AppState, events: &Events) -> Router {
    let pool = state.store.pool().clone();
    let (routes, doc) = routes::api(state);
    hotel_service::service_router(ROLE, routes, doc, pool, events)
}

/// The migrations compiled into the binary, one history per backend (same versions).
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Opens the database (`database.url`, else `<data_dir>/booking.db`) and brings its
/// schema up to date (replicas starting together take turns: a file lock on SQLite, an
/// advisory lock on PostgreSQL).
pub async fn open_database(settings: &Settings) -> Result<sqlx::AnyPool, BoxError> {
    let location = settings.database_location()?;
    let migrator = match location.backend() {
        db::Backend::Sqlite => &SQLITE,
        db::Backend::Postgres => &POSTGRES,
    };
    hotel_service::database::open_and_migrate(&location, &settings.database, migrator).await
}

/// How booking reaches customer and room: static `customer_url` and `room_url` when set
/// (plain HTTP), otherwise every replica discovered through `registry.url` with the
/// resilient upstream client (`hotel_upstream`). Must be called inside a tokio runtime.
pub fn directory_from(settings: &Settings) -> Result<Arc<dyn Directory>, BoxError> {
    let statics = (
        settings.customer_url.as_deref(),
        settings.room_url.as_deref(),
    );
    if let ((None, None), Some(registry)) = (statics, settings.registry.url.as_deref()) {
        let policy = config::peer_policy(settings.peer_timeout)?;
        let directory = UpstreamDirectory::from_registry(
            registry,
            settings.registry.token.clone(),
            &policy,
            settings.peer_cache_max_bytes,
        )?;
        return Ok(Arc::new(directory));
    }
    let customer_url = config::peer_url("customer_url", statics.0)?;
    let room_url = config::peer_url("room_url", statics.1)?;
    let directory = HttpDirectory::new(
        customer_url,
        room_url,
        settings.peer_timeout,
        settings.peer_connect_timeout,
    )?;
    Ok(Arc::new(directory))
}

/// A bound, ready-to-run booking service (zero2prod style: tests use port 0).
pub struct Application {
    instance: ServiceInstance,
    state: AppState,
}

impl Application {
    /// Opens the database, builds the [`Directory`] the settings ask for (see
    /// [`directory_from`]) and binds the listener.
    pub async fn build(settings: Settings) -> Result<Self, BoxError> {
        let directory = directory_from(&settings)?;
        Self::build_with_directory(settings, directory).await
    }

    /// Like [`Application::build`] with a given [`Directory`] (the resilient upstream
    /// client, or a fake in tests).
    pub async fn build_with_directory(
        settings: Settings,
        directory: Arc<dyn Directory>,
    ) -> Result<Self, BoxError> {
        let pool = open_database(&settings).await?;
        let mut events = Events::new(&settings, pool.clone())?;
        let store = store::Store::new(pool, events.producer.clone());
        // The feeds are read where booking calls the services when their URLs are set,
        // else from any instance the registry knows.
        events.subscribe(
            Subscription {
                producer: "customer",
                handler: Arc::new(crate::events::CustomerDeleted {
                    store: store.clone(),
                }),
            },
            settings.customer_url.clone(),
        );
        events.subscribe(
            Subscription {
                producer: "room",
                handler: Arc::new(crate::events::RoomUpdated),
            },
            settings.room_url.clone(),
        );
        let state = AppState {
            store,
            directory,
            idempotency_retention: settings.idempotency_retention,
            idempotency_wait: settings.idempotency_wait,
            max_days_ahead: settings.max_days_ahead,
        };
        let readiness = hotel_service::database::database_readiness(state.store.pool().clone());
        events
            .instance_metrics
            .register(|r| state.directory.register_metrics(r));
        let router = app_router(state.clone(), &events);
        let instance = ServiceInstance::bind(&settings, router, readiness, events).await?;
        Ok(Application { instance, state })
    }

    /// The bound address (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.instance.local_addr()
    }

    /// The router, for `oneshot` tests.
    pub fn router(&self) -> Router {
        self.instance.router()
    }

    /// Serves until `shutdown` resolves, then drains for `shutdown_grace`; registered
    /// with the registry meanwhile when `registry.url` is set.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        let purge = tokio::spawn(purge_keys(self.state.clone()));
        let served = self.instance.run_until(shutdown).await;
        purge.abort();
        served
    }
}

impl Service for Application {
    type Settings = Settings;
    fn build(settings: Settings) -> impl Future<Output = Result<Self, BoxError>> + Send {
        Application::build(settings)
    }
    fn local_addr(&self) -> SocketAddr {
        Application::local_addr(self)
    }
    fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        Application::run_until(self, shutdown)
    }
}

/// Deletes idempotency keys past their retention, now and every [`PURGE_EVERY`].
async fn purge_keys(state: AppState) {
    let retention = i64::try_from(state.idempotency_retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let before = idempotency::now_ms().saturating_sub(retention);
        match idempotency::purge(state.store.pool(), before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys purged"),
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
        tokio::time::sleep(PURGE_EVERY).await;
    }
}

/// Loads the settings (defaults < config file < `HOTEL_BOOKING__*` < command line), starts
/// telemetry, serves until SIGTERM/Ctrl-C.
pub async fn run(args: ProcessArgs) -> Result<(), BoxError> {
    hotel_service::run::<Application>(args).await
}
