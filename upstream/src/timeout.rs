//! The per-try timeout: bounds one attempt on one instance, so a hung instance costs an
//! attempt, not the request. The duration comes with the request (routes differ), set by
//! the edge as a [`TryTimeout`] extension; the layer's own value is the fallback.

use crate::error::{BoxError, PerTryTimeout};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Sleep;

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

/// Fails an attempt with [`PerTryTimeout`] when it takes too long.
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
        let d = crate::retry::try_timeout_of(req.extensions()).map_or(self.fallback, |t| t.0);
        TimeoutFuture {
            inner: self.inner.call(req),
            sleep: tokio::time::sleep(d),
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
            Poll::Ready(()) => Poll::Ready(Err(PerTryTimeout.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}
