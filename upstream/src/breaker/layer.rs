//! [`BreakerLayer`]: puts an instance's [`Breaker`] gate around its endpoint service.

use super::{Breaker, BreakerShared};
use std::sync::Arc;

/// Builds the [`Breaker`] of one instance around its endpoint service. It holds no
/// per-request state: only the handle of the instance's breaker, whose state the status
/// page reads too (so the caller creates it and keeps a clone).
#[derive(Debug, Clone)]
pub(crate) struct BreakerLayer {
    shared: Arc<BreakerShared>,
}

impl BreakerLayer {
    /// A layer whose breaker is `shared` (kept by the caller for status pages).
    pub(crate) fn new(shared: Arc<BreakerShared>) -> Self {
        BreakerLayer { shared }
    }
}

impl<S> tower::Layer<S> for BreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Breaker<S> {
        Breaker::new(inner, self.shared.clone())
    }
}
