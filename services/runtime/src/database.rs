//! A domain service over its database (the SQLite file every replica on the host shares,
//! or PostgreSQL, see `hotel_common::db`): opening it,
//! the router with the readiness check that asks the database, the problem a failed
//! database call answers, and [`DatabaseApp`], the whole application of a service whose
//! only state is its database (customer, room).

use crate::{
    events::Events,
    runner::{Service, ServiceInstance},
    settings::{CacheSettings, Role, ServiceSettings},
};
use axum::Router;
use hotel_common::{
    Problem,
    conditional::CacheControl,
    db,
    health::ReadinessCheck,
    http::{SERVICE_BODY_LIMIT, finish_instance},
    process::BoxError,
};
use sqlx::AnyPool;
use std::{future::Future, net::SocketAddr, sync::Arc};
use utoipa::openapi::OpenApi;

/// A service whose whole state is its database (customer, room): everything
/// [`DatabaseApp`] needs to know of it.
pub trait DatabaseService: Role {
    /// The migrations compiled into the service for `backend` (`migrations/` for SQLite,
    /// `migrations-postgres/`: the same versions, each backend's SQL).
    fn migrator(backend: db::Backend) -> &'static sqlx::migrate::Migrator;
    /// The whole HTTP surface over the database (see [`service_router`]): reads answered
    /// with `cache` (from the `[cache]` settings), changes published through
    /// `events.producer`, and `events.feed` served.
    fn router(pool: AnyPool, cache: CacheControl, events: &Events) -> Router;
    /// The producers whose events this service consumes, and their effects (none by
    /// default).
    fn subscriptions(_pool: &AnyPool, _events: &Events) -> Vec<hotel_events::Subscription> {
        Vec::new()
    }
}

/// Opens the service's database (`database.url`, else `<data_dir>/<role>.db`; shared
/// with the other replicas) and brings its schema up to date, the event bus's tables
/// included.
pub async fn connect<R: DatabaseService>(
    settings: &ServiceSettings<R>,
) -> Result<AnyPool, BoxError> {
    let location = settings.database_location()?;
    open_and_migrate(
        &location,
        &settings.database,
        R::migrator(location.backend()),
    )
    .await
}

/// Opens the database at `location` and brings its schema up to date: `migrator`, then
/// the event bus's tables.
pub async fn open_and_migrate(
    location: &db::Location,
    settings: &db::DatabaseSettings,
    migrator: &sqlx::migrate::Migrator,
) -> Result<AnyPool, BoxError> {
    let pool = db::open(location, settings)
        .await
        .map_err(|e| format!("database {location}: {e}"))?;
    db::migrate(&pool, migrator)
        .await
        .map_err(|e| format!("database {location}: migrating: {e}"))?;
    hotel_events::outbox::create_tables(&pool).await?;
    tracing::info!(
        database = %location,
        db.system.name = location.backend().system_name(),
        "database ready"
    );
    Ok(pool)
}

/// How long `/readyz` waits for the database's answer before it says not ready: a
/// database that is down or unreachable fails the check at once or within this, never
/// hangs it (the heartbeat carries the result, and the gateway stops routing here).
pub const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// The readiness check of a service over `pool` (see [`db::ping`]): what `/readyz`
/// answers.
pub fn database_readiness(pool: AnyPool) -> ReadinessCheck {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { db::ping(&pool, READINESS_TIMEOUT).await })
    })
}

/// The whole HTTP surface of a domain service over its SQLite pool: `routes`, the
/// OpenAPI document `doc` served at `/openapi.json`, the event feed with
/// `/events/status` and `/metrics` (internal, not in `doc`), and `finish_instance`'s
/// shared layers (the fault switch `events.faults` included) with
/// [`database_readiness`] as the readiness check.
pub fn service_router(
    role: &'static str,
    routes: Router,
    doc: OpenApi,
    pool: AnyPool,
    events: &Events,
) -> Router {
    let routes = hotel_common::openapi::serve(routes, doc).merge(events.feed.router());
    watch_pool(&events.instance_metrics, pool.clone());
    finish_instance(
        role,
        routes,
        database_readiness(pool),
        SERVICE_BODY_LIMIT,
        &events.faults,
        &events.instance_metrics,
    )
}

/// `hotel_db_pool_connections{state="idle"|"in_use"}` and `hotel_db_pool_max`, read from
/// `pool` at every scrape.
fn watch_pool(metrics: &hotel_common::metrics::InstanceMetrics, pool: AnyPool) {
    use prometheus_client::{
        encoding::EncodeLabelSet, metrics::family::Family, metrics::gauge::Gauge,
    };
    #[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct StateLabels {
        state: &'static str,
    }
    let connections = Family::<StateLabels, Gauge>::default();
    let max = Gauge::<i64>::default();
    metrics.register(|r| {
        r.register(
            "db_pool_connections",
            "Database pool connections, by state (idle, in_use)",
            connections.clone(),
        );
        r.register(
            "db_pool_max",
            "Most connections the pool opens",
            max.clone(),
        );
    });
    metrics.on_scrape(move || {
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        connections
            .get_or_create(&StateLabels { state: "idle" })
            .set(idle);
        connections
            .get_or_create(&StateLabels { state: "in_use" })
            .set((size - idle).max(0));
        max.set(i64::from(pool.options().get_max_connections()));
    });
}

/// The problem a failed database call answers: 503 with `Retry-After: 1` and `busy` as
/// the detail when the failure is transient (the file is locked by another replica past
/// the busy timeout, the database server is down or unreachable), otherwise 500. Either way the SQL error is logged here and never
/// sent to the client.
pub fn database_problem(e: &sqlx::Error, busy: &str) -> Problem {
    if db::is_transient(e) {
        tracing::warn!(error = %e, "database busy");
        Problem::unavailable(busy, 1)
    } else {
        tracing::error!(error = %e, "database error");
        Problem::internal()
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
        let pool = connect(&settings).await?;
        let readiness = database_readiness(pool.clone());
        let mut events = Events::new(&settings, pool.clone())?;
        for subscription in R::subscriptions(&pool, &events) {
            events.subscribe(subscription, None);
        }
        let router = R::router(pool, settings.cache.cache_control(), &events);
        let instance = ServiceInstance::bind(&settings, router, readiness, events).await?;
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

/// What the handlers of a service over its database share: the pool, and the producer
/// that writes events into the outbox in the same transactions. Handlers take either
/// part alone (`State<AnyPool>`, `State<Producer>`).
#[derive(Clone, Debug)]
pub struct DatabaseState {
    /// The service's database.
    pub pool: AnyPool,
    /// Writes this service's events.
    pub producer: hotel_events::Producer,
}

impl axum::extract::FromRef<DatabaseState> for AnyPool {
    fn from_ref(state: &DatabaseState) -> Self {
        state.pool.clone()
    }
}

impl axum::extract::FromRef<DatabaseState> for hotel_events::Producer {
    fn from_ref(state: &DatabaseState) -> Self {
        state.producer.clone()
    }
}
