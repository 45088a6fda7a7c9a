//! Building and running a customer instance: open the shared database, migrate it, bind
//! the listener, serve until shutdown.

use crate::{ROLE, Settings, routes, settings::Customer};
use axum::Router;
use hotel_common::{conditional::CacheControl, db::Backend, process::BoxError};
use hotel_events::Subscription;
use hotel_service::{DatabaseService, DatabaseState, Events};
use sqlx::AnyPool;
use std::sync::Arc;

/// The migrations compiled into the binary, one history per backend (same versions).
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations-postgres");

/// Opens `<data_dir>/customer.db` (shared with the other replicas) and brings its schema
/// up to date.
pub async fn connect(settings: &Settings) -> Result<AnyPool, BoxError> {
    hotel_service::database::connect(settings).await
}

/// The OpenAPI document of this service, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = routes::document();
    hotel_common::openapi::document_shared_routes(&mut doc);
    doc
}

/// The whole HTTP surface: customer routes, `/openapi.json`, the event feed, health and
/// the shared layers.
pub fn router(pool: AnyPool, events: &Events) -> Router {
    let state = DatabaseState {
        pool: pool.clone(),
        producer: events.producer.clone(),
    };
    let (routes, doc) = routes::api(state);
    hotel_service::service_router(ROLE, routes, doc, pool, events)
}

/// A customer instance whose listener is bound and database ready, not yet serving.
pub type Application = hotel_service::DatabaseApp<Customer>;

impl DatabaseService for Customer {
    fn migrator(backend: Backend) -> &'static sqlx::migrate::Migrator {
        match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }
    // Customers are personal data: `PersonalData` has no keys, so `cache` is always
    // `private, no-store`, which the routes answer with of their own accord.
    fn router(pool: AnyPool, _cache: CacheControl, events: &Events) -> Router {
        router(pool, events)
    }
    fn subscriptions(_pool: &AnyPool, _events: &Events) -> Vec<Subscription> {
        vec![Subscription {
            producer: "booking",
            handler: Arc::new(crate::events::BookingCounts),
        }]
    }
}
