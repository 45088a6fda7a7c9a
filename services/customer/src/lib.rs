//! The customer service: who may book. `POST/GET/PATCH/DELETE /customers`, backed by its
//! own SQLite database that every replica of the service shares.
//!
//! Layout: [`model`] (resource, bodies, validation), [`store`] (SQL), [`events`] (what
//! booking's events do here: the booking counts), [`routes`]
//! (handlers and OpenAPI), [`error`] (failures as problem+json), [`settings`] and
//! [`startup`] (building and serving an instance).
//!
//! Who may depend on it: the `hotel` binary (the role and its OpenAPI document) and
//! tests (booking's in-process tests run a real customer service). No other service
//! may: they call it over HTTP.

pub mod error;
pub mod events;
pub mod model;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::{Application, connect, openapi, router};

use hotel_common::process::{BoxError, ProcessArgs};

/// The role name: config section, span service name, database file stem.
pub const ROLE: &str = "customer";

/// Runs a customer instance until SIGTERM or Ctrl-C (`hotel service customer`).
pub async fn run(args: ProcessArgs) -> Result<(), BoxError> {
    hotel_service::run::<Application>(args).await
}
