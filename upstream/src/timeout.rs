//! The attempt's one timer: bounds one attempt on one instance by the per-try timeout, so
//! a hung instance costs an attempt, not the request, and by the request's deadline, so
//! no attempt outlives it. The duration comes with the request (routes differ), set by
//! the edge as a [`TryTimeout`] extension; the layer's own value is the fallback.
//!
//! This is also where the route's deadline is enforced: every attempt ends by it, a
//! retry's backoff must end before it (see [`crate::retry`]), and nothing else in the
//! stack waits (the balancer fails fast), so the request cannot outlive its deadline
//! either, without a second timer per request. An attempt cut by the deadline ends with
//! [`DeadlineExceeded`], which the breaker and the endpoint statistics count as a
//! cancelled attempt, like one its caller dropped: it says nothing about the instance.

use crate::error::{BoxError, DeadlineExceeded, PerTryTimeout};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

/// Request extension: the per-try timeout of this request's route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TryTimeout(pub Duration);

/// Builds [`Timeout`] services.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeoutLayer {
    fallback: Duration,
}

impl TimeoutLayer {
    /// Uses `fallback` for requests without a [`TryTimeout`].
    pub(crate) fn new(fallback: Duration) -> Self {
        TimeoutLayer { fallback }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            fallback: self.fallback,
        }
    }
}

/// Fails an attempt with [`PerTryTimeout`] when it takes too long, or with
/// [`DeadlineExceeded`] when the request's deadline comes first.
#[derive(Debug, Clone)]
pub(crate) struct Timeout<S> {
    inner: S,
    fallback: Duration,
}

impl<S, B> tower::Service<http::Request<B>> for Timeout<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (try_timeout, deadline) = crate::retry::limits_of(req.extensions());
        let try_end = Instant::now() + try_timeout.map_or(self.fallback, |t| t.0);
        let (end, by_deadline) = match deadline {
            Some(d) if d.0 <= try_end => (d.0, true),
            _ => (try_end, false),
        };
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep_until(end),
            by_deadline,
        }
    }
}

pin_project! {
    /// Response future of [`Timeout`].
    #[derive(Debug)]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        // Whether `sleep` ends at the request's deadline rather than the per-try timeout.
        by_deadline: bool,
    }
}

impl<F, T, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.inner.poll(cx) {
            return Poll::Ready(r.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) if *this.by_deadline => Poll::Ready(Err(DeadlineExceeded.into())),
            Poll::Ready(()) => Poll::Ready(Err(PerTryTimeout.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::retry::Deadline;
    use tower::{Layer, Service};

    /// An attempt on an instance that never answers, with these limits; returns its error
    /// and how long it took (the clock is paused, so exactly the timer's duration).
    async fn hung_attempt(try_timeout: Option<u64>, deadline: Option<u64>) -> (BoxError, u64) {
        let hung = tower::service_fn(|_: http::Request<()>| {
            futures::future::pending::<Result<(), BoxError>>()
        });
        let mut svc = TimeoutLayer::new(Duration::from_millis(700)).layer(hung);
        let start = Instant::now();
        let mut req = http::Request::new(());
        if let Some(ms) = try_timeout {
            req.extensions_mut()
                .insert(TryTimeout(Duration::from_millis(ms)));
        }
        if let Some(ms) = deadline {
            req.extensions_mut()
                .insert(Deadline(start + Duration::from_millis(ms)));
        }
        let e = svc.call(req).await.unwrap_err();
        (e, start.elapsed().as_millis() as u64)
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_ends_at_its_per_try_timeout_or_the_deadline_whichever_is_first() {
        let (e, took) = hung_attempt(Some(200), Some(500)).await;
        assert!(e.is::<PerTryTimeout>(), "{e}");
        assert_eq!(took, 200);

        let (e, took) = hung_attempt(Some(500), Some(300)).await;
        assert!(e.is::<DeadlineExceeded>(), "{e}");
        assert_eq!(took, 300);

        // Equal: the deadline, set first, decides.
        let (e, took) = hung_attempt(Some(300), Some(300)).await;
        assert!(e.is::<DeadlineExceeded>(), "{e}");
        assert_eq!(took, 300);

        // Without limits on the request, the layer's fallback.
        let (e, took) = hung_attempt(None, None).await;
        assert!(e.is::<PerTryTimeout>(), "{e}");
        assert_eq!(took, 700);

        // A deadline already passed ends the attempt at once.
        let (e, took) = hung_attempt(Some(300), Some(0)).await;
        assert!(e.is::<DeadlineExceeded>(), "{e}");
        assert_eq!(took, 0);
    }
}
