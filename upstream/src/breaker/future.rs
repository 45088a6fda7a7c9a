//! [`BreakerFuture`]: the gate's response future; it records the attempt's outcome in the
//! state machine when the inner future finishes, and counts the attempt out when dropped.

use super::{BreakerShared, service::Outcome, stall::AttemptEnd};
use crate::error::BoxError;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

/// Counts the attempt out when it ends, and reports a probe that was dropped before it
/// finished, so the gate does not stay shut.
#[derive(Debug)]
pub(super) struct Recorder {
    pub(super) shared: Arc<BreakerShared>,
    pub(super) probe: bool,
    pub(super) end: AttemptEnd,
    /// When the attempt's outcome was recorded; `None` while it has not been (still
    /// running, dropped, or cut by the deadline). Read once for the outcome and the
    /// stall watch both.
    pub(super) at: Option<tokio::time::Instant>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.ended(self.end, self.at);
        if self.probe && self.at.is_none() {
            self.shared.probe_abandoned();
        }
    }
}

pin_project! {
    /// Response future of [`Breaker`]: records the outcome when the inner one finishes.
    #[derive(Debug)]
    pub struct BreakerFuture<F> {
        #[pin]
        inner: F,
        guard: Recorder,
    }
}

impl<F> BreakerFuture<F> {
    pub(super) fn new(inner: F, guard: Recorder) -> Self {
        BreakerFuture { inner, guard }
    }
}

impl<F, T> Future for BreakerFuture<F>
where
    F: Future<Output = Result<T, BoxError>>,
    Result<T, BoxError>: Outcome,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if crate::error::cut_by_deadline(&out) {
            // Cancelled by the request's deadline: counted out as a dropped attempt.
            return Poll::Ready(out);
        }
        let failure = out.failure();
        this.guard.end = match (&out, failure) {
            (Ok(_), _) => AttemptEnd::Answered,
            (Err(_), Some(_)) => AttemptEnd::Unanswered,
            // The client's body failed, or the instance refused it: the instance is
            // not silent.
            (Err(_), None) => AttemptEnd::Dropped,
        };
        let now = tokio::time::Instant::now();
        this.guard.at = Some(now);
        this.guard.shared.record(failure, this.guard.probe, now);
        Poll::Ready(out)
    }
}
