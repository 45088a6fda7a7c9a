//! What every `hotel` process does alike: layered configuration, problem+json errors,
//! JSON extraction that names the offending field, request ids, health endpoints,
//! graceful serving, SQLite pools and telemetry.
//!
//! Who may depend on it: every crate of the workspace. It depends on no other crate of
//! the project, so it holds nothing that needs the registry, a service or the gateway.

pub mod advertise;
pub mod conditional;
pub mod config;
pub mod context;
pub mod db;
pub mod extract;
pub mod fault;
pub mod health;
pub mod http;
pub mod input;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod problem;
pub mod process;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod turn;

pub use problem::Problem;
