//! The HTTP cache core both caches use (RFC 9111, RFC 5861 `stale-if-error`): the
//! gateway's shared cache and [`CachedClient`], a service's private cache of its reads of
//! its peers. Written once here, so the two cannot drift.
//!
//! - [`directives`]: `Cache-Control` parsing and the header-only rules (what may be
//!   stored, freshness lifetime, `Vary`, `If-None-Match` matching).
//! - [`entry`]: one stored answer with its validators, freshness and age; the byte
//!   [`Weigh`]er of a bounded store; the [`Outcome`] of a request.
//! - [`client`]: [`CachedClient`] over an [`crate::UpstreamClient`], with its
//!   [`PeerCache`] store and metrics.

pub mod client;
pub mod coalesce;
pub mod directives;
pub mod entry;

pub use client::{CachedClient, PeerCache, PeerCacheMetrics, PeerLabels};
pub use coalesce::{Coalescer, Turn};
pub use directives::{CacheControl, none_match, storable, vary_names, vary_values};
pub use entry::{Entry, Outcome, Weigh};
