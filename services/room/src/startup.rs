//! Building and running a room instance: open the shared database, migrate it, bind
//! the listener, serve until shutdown.

use crate::{ROLE, Settings, routes, settings::Room};
use axum::Router;
use hotel_common::{conditional::CacheControl, db::Backend, process::BoxError};
use hotel_service::{CacheSettings, DatabaseService, DatabaseState, Events};
use sqlx::AnyPool;

/// The migrations compiled into the binary, one history per backend (same versions).
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Opens `<data_dir>/room.db` (shared with the other replicas) and brings its schema
/// up to date.
pub async fn connect(settings: &Settings) -> Result<AnyPool, BoxError> {
    hotel_service::database::connect(settings).await
}

/// The OpenAPI document of this service with the default `[cache]` settings, as served
/// at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let cache = Settings::default().cache.cache_control();
    let mut doc = routes::document(&cache);
    hotel_common::openapi::document_shared_routes(&mut doc);
    doc
}

/// The whole HTTP surface: room routes (reads answered with `cache`), `/openapi.json`,
/// the event feed, health and the shared layers.
pub fn router(pool: AnyPool, cache: CacheControl, events: &Events) -> Router {
    let state = DatabaseState {
        pool: pool.clone(),
        producer: events.producer.clone(),
    };
    let (routes, doc) = routes::api(state, cache);
    hotel_service::service_router(ROLE, routes, doc, pool, events)
}

/// A room instance whose listener is bound and database ready, not yet serving.
pub type Application = hotel_service::DatabaseApp<Room>;

impl DatabaseService for Room {
    fn migrator(backend: Backend) -> &'static sqlx::migrate::Migrator {
        match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }
    fn router(pool: AnyPool, cache: CacheControl, events: &Events) -> Router {
        router(pool, cache, events)
    }
}
