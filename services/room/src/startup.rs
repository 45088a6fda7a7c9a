//! Building and running a room instance: open the shared database, migrate it, bind
//! the listener, serve until shutdown.

use crate::{ROLE, Settings, routes};
use axum::Router;
use hotel_common::{
    db, health,
    http::{SERVICE_BODY_LIMIT, finish},
    process::BoxError,
    server,
};
use sqlx::SqlitePool;
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;

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
    let routes = hotel_common::openapi::serve(routes, doc);
    let readiness: health::ReadinessCheck = Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { db::ping(&pool).await })
    });
    finish(ROLE, routes, readiness, SERVICE_BODY_LIMIT)
}

/// A room instance whose listener is bound and database ready, not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    settings: Settings,
}

impl Application {
    /// Opens the database and binds `settings.listen` (port 0 picks a free port).
    pub async fn build(settings: Settings) -> Result<Self, BoxError> {
        let pool = connect(&settings).await?;
        let (listener, addr) = server::bind(settings.listen).await?;
        Ok(Application {
            listener,
            addr,
            router: router(pool),
            settings,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The settings this instance runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests for up to
    /// `shutdown_grace`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        // With `registry.url` set, register now that the port is bound, heartbeat while
        // serving, and on shutdown deregister before draining.
        let shutdown = hotel_registry::client::register_until(
            &self.settings.registry,
            "room",
            &self.settings.instance,
            self.addr,
            shutdown,
        )?;
        tracing::info!(instance = %self.settings.instance, addr = %self.addr, "room serving");
        server::serve(
            self.listener,
            self.router,
            shutdown,
            self.settings.shutdown_grace,
        )
        .await?;
        Ok(())
    }
}
