//! The room service: what can be booked. `POST/GET/PATCH/DELETE /rooms`, backed by its own
//! SQLite database that every replica of the service shares. Rooms are never deleted:
//! `DELETE` retires them, so bookings keep a room to point at.
//!
//! Layout: [`model`] (resource, bodies, validation), [`store`] (SQL), [`routes`]
//! (handlers and OpenAPI), [`error`] (failures as problem+json), [`settings`] and
//! [`startup`] (building and serving an instance).
//!
//! Who may depend on it: the `hotel` binary (the role and its OpenAPI document) and
//! tests (booking's in-process tests run a real room service). No other service may:
//! they call it over HTTP.

pub mod error;
pub mod model;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use settings::Settings;
pub use startup::{Application, connect, openapi, router};

use hotel_common::process::{BoxError, ProcessArgs};

/// The role name: config section, span service name, database file stem.
pub const ROLE: &str = "room";

/// Runs a room instance until SIGTERM or Ctrl-C (`hotel service room`).
pub async fn run(args: ProcessArgs) -> Result<(), BoxError> {
    hotel_service::run::<Application>(args).await
}
