//! `hotel-upstream`: the outbound resilience stack, written once. Whoever calls a
//! service's instances directly goes through it: the gateway (one stack per route) and
//! services calling each other ([`UpstreamClient`], e.g. booking calling customer and
//! room). Outermost first:
//!
//! ```text
//! retry             budgeted, safe retries on another instance; a
//!                   backoff must end before the deadline             (retry)
//!  hedge            one more attempt after the service's recent p95  (hedge)
//!   shared          the service's one balancer, shared by its routes (balance)
//!    balance        p2c over latency EWMA x in-flight, fails fast    (balance) -> 503
//!     breaker       per-instance readiness gate, stall and refusal
//!                   ejection, ejection cap                           (breaker)
//!      observe      absolute URI, trace context, client span, stats  (endpoint)
//!       try         the per-try timeout, and the deadline over all
//!                   attempts: one timer, whichever ends first        (timeout) -> 504
//!        client     keep-alive connections, a pool per worker        (pool)    -> 502
//! ```
//!
//! Around it: `stack` assembles the layers (`ServiceUpstream` once per service,
//! `RouteUpstream` once per route); `client` is [`UpstreamClient`]; `discovery` feeds
//! instances from the registry or a fixed set ([`Source`]); `policy` validates a
//! [`PolicySettings`] block into a [`ServicePolicy`] once, at config time, naming the
//! key; `metrics` holds the families ([`UpstreamMetrics`]), registered into a registry
//! the caller owns; `latency` the service's recent latency window (hedge delay, stall
//! threshold); `body` the replayable [`ProxyBody`]; `error` the stack's errors, which
//! leave it as a `BoxError` that [`classify`] maps to 502/503/504 once. [`cache`] is the
//! HTTP cache core (directives, entries, outcome) of the gateway's cache and of
//! [`CachedClient`], a service's cache of its reads of its peers.
//!
//! Dependency rule: the gateway and the services may depend on this crate; it never
//! depends on the gateway (nor on any service).

mod balance;
mod batch;
mod body;
mod breaker;
pub mod cache;
mod client;
mod discovery;
mod endpoint;
mod error;
mod h1;
mod hedge;
mod latency;
mod metrics;
mod policy;
mod pool;
mod retry;
mod stack;
mod timeout;

pub use body::{ProxyBody, RequestBodyError};
pub use breaker::BreakerState;
pub use cache::CachedClient;
pub use client::{Discovery, UpstreamClient};
pub use discovery::{Target, Targets};
pub use endpoint::{EndpointView, LastError};
pub use error::{BoxError, classify, too_large};
pub use h1::{AnswerBody, AnswerError, HOP_BY_HOP};
pub use metrics::{UpstreamMetrics, latency_histogram};
pub use policy::{
    BreakerPolicy, HedgePolicy, InvalidUpstream, Origin, Policy, PolicySettings, ServicePolicy,
};
pub use pool::{ClientError, ClientOptions, HttpClient, enter_worker, http_client};
pub use stack::{RouteUpstream, ServiceUpstream, Source};
