//! What every domain service process (customer, room, booking) does alike, in one place:
//! what it is configured with ([`settings`]), how it opens and answers for its SQLite
//! database ([`database`]), its events ([`events`]: the outbox, the feed others read,
//! the consumers it runs), and how it runs ([`runner`]): load settings, start
//! telemetry, bind, announce the address, register with the registry while serving
//! (heartbeats carry the result of the instance's own readiness check, the one
//! `/readyz` answers), and on shutdown deregister, then drain.
//!
//! # Why a crate of its own
//!
//! Settings used to live in `hotel-common` and the runner in `hotel-registry`, split only
//! because running includes registering and `hotel-common` cannot depend on the registry.
//! The other ways out were worse: moving the registry client into `hotel-common` would
//! put an HTTP client of one particular server into the crate every process (the
//! registry itself included) builds on, and keeping the runner in `hotel-registry` makes
//! the registry server crate know about service databases and routers. So the
//! dependencies point one way, each crate knowing only what is below it:
//!
//! ```text
//! hotel-common  <-  hotel-registry (server + client)  <-  hotel-events  <-  hotel-service  <-  customer, room, booking
//! ```
//!
//! The gateway and the registry are not domain services and do not use this crate.

pub mod database;
pub mod events;
pub mod runner;
pub mod settings;

pub use database::{DatabaseApp, DatabaseService, DatabaseState, database_problem, service_router};
pub use events::Events;
pub use runner::{Service, ServiceInstance, run};
pub use settings::{
    CacheSettings, PersonalData, Role, ServiceConfig, ServiceSettings, SharedCache,
};
