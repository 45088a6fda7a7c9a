//! Building and running a room instance: open the shared database, migrate it, bind
//! the listener, serve until shutdown.

use crate::{ROLE, Settings, routes};
use axum::Router;
use hotel_common::{db, process::BoxError};
use hotel_registry::service::{Service, ServiceInstance};
use sqlx::SqlitePool;
use std::{future::Future, net::SocketAddr};

/// The migrations compiled into the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Opens `<data_dir>/room.db` (shared with the other replicas) and brings its schema
/// up to date.
pub async fn connect(settings: &Settings) -> Result<SqlitePool, BoxError> {
    let path = settings.database_path();
    let pool = db::open(&path).await?;
    db::migrate(&pool, &path, &MIGRATOR).await?;
    Ok(pool)
}

/// The OpenAPI document of this service, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes::document();
    hotel_common::openapi::document_shared_routes(&mut doc);
    doc
}

/// The whole HTTP surface: room routes, `/openapi.json`, health and the shared layers.
pub fn router(pool: SqlitePool) -> Router {
    let (routes, doc) = routes::api(pool.clone());
    hotel_common::service::service_router(ROLE, routes, doc, pool)
}

/// A room instance whose listener is bound and database ready, not yet serving.
pub struct Application {
    instance: ServiceInstance,
    settings: Settings,
}

impl Application {
    /// Opens the database and binds `settings.listen` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, BoxError> {
        let pool = connect(&settings).await?;
        let instance = ServiceInstance::bind(&settings, router(pool)).await?;
        Ok(Application { instance, settings })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.instance.local_addr()
    }

    /// The settings this instance runs with.
    pub fn settings(&self) -> &Settings {
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
