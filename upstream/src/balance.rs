//! Power-of-two-choices balancing over peak-EWMA load, built on tower's `ReadyCache`
//! (the building block of `tower::balance::p2c::Balance`) with two differences that
//! `Balance` cannot offer:
//!
//! - a request can exclude instances it already tried ([`Attempts`]), so a retry or a
//!   hedge goes to another instance when one is ready;
//! - with no ready instance (none known, or every breaker open) the call fails at once
//!   with [`NoReadyInstance`] (503) instead of waiting forever.
//!
//! `poll_ready` applies discovery changes and drives not-ready endpoints (open breakers)
//! towards readiness; it is always ready itself. The balancer is not `Clone`: a `Buffer`
//! in front shares it.

use crate::{
    breaker::EjectionCap,
    endpoint::Attempts,
    error::{BoxError, NoReadyInstance},
};
use futures::future::{Either, Ready, ready};
use prometheus_client::metrics::gauge::Gauge;
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};
use tokio::time::Instant;
use tower::{
    Service,
    discover::{Change, Discover},
    ready_cache::ReadyCache,
};

/// What p2c compares: an endpoint's load as of `now`, so that one clock read serves both
/// endpoints a pick looks at (tower's `Load` would read it once per endpoint).
pub(crate) trait LoadAt {
    /// The load; lower is preferred.
    fn load_at(&self, now: Instant) -> f64;
}

/// The balancer of one service.
pub(crate) struct P2c<D, Req>
where
    D: Discover,
    D::Key: std::hash::Hash,
    D::Service: Service<Req>,
{
    service: Arc<str>,
    discover: D,
    discover_done: bool,
    cache: ReadyCache<D::Key, D::Service, Req>,
    cap: Arc<EjectionCap>,
    instances: Gauge,
    /// When every ready endpoint's gate was last polled (see [`SWEEP_EVERY`]).
    last_sweep: Option<Instant>,
    /// The clock at the last `poll_ready`, which runs just before each `call` (under the
    /// shared balancer's lock): the time the pick's loads are taken at.
    polled_at: Instant,
}

/// How often the balancer polls the gates of all ready endpoints, not only the one a
/// request picks: p2c rarely picks an instance whose attempts hang (its in-flight count
/// makes it look loaded), so without the sweep its breaker would notice the stall only
/// when the attempts time out, and eject (and probe) it that late.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(25);

impl<D, Req> P2c<D, Req>
where
    D: Discover<Key = Arc<str>> + Unpin,
    D::Service: Service<Req>,
{
    /// A balancer of `service`'s instances from `discover`; keeps `cap` and the
    /// `instances` gauge told how many instances exist.
    pub(crate) fn new(
        service: Arc<str>,
        discover: D,
        cap: Arc<EjectionCap>,
        instances: Gauge,
    ) -> Self {
        P2c {
            service,
            discover,
            discover_done: false,
            cache: ReadyCache::default(),
            cap,
            instances,
            last_sweep: None,
            polled_at: Instant::now(),
        }
    }
}

impl<D, B> P2c<D, http::Request<B>>
where
    D: Discover<Key = Arc<str>> + Unpin,
    D::Error: std::fmt::Display,
    D::Service: Service<http::Request<B>> + LoadAt,
    <D::Service as Service<http::Request<B>>>::Error: Into<BoxError>,
{
    fn update(&mut self, cx: &mut Context<'_>) {
        let mut changed = false;
        while !self.discover_done {
            match Pin::new(&mut self.discover).poll_discover(cx) {
                Poll::Ready(Some(Ok(Change::Insert(k, svc)))) => {
                    self.cache.push(k, svc);
                    changed = true;
                }
                Poll::Ready(Some(Ok(Change::Remove(k)))) => {
                    self.cache.evict(&k);
                    changed = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(service = %self.service, error = %e, "discovery failed");
                }
                Poll::Ready(None) => self.discover_done = true,
                Poll::Pending => break,
            }
        }
        loop {
            match self.cache.poll_pending(cx) {
                Poll::Ready(Ok(())) | Poll::Pending => break,
                Poll::Ready(Err(failed)) => {
                    // Endpoints never fail readiness (breakers stay Pending); log if one does.
                    tracing::warn!(service = %self.service, error = %failed, "endpoint failed; dropped");
                }
            }
        }
        let now = Instant::now();
        self.polled_at = now;
        if self
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
        {
            self.last_sweep = Some(now);
            // From the end: an endpoint found not ready is swapped out with the last one,
            // which was checked already.
            for i in (0..self.cache.ready_len()).rev() {
                if let Err(e) = self.cache.check_ready_index(cx, i) {
                    tracing::warn!(service = %self.service, error = %e, "endpoint failed; dropped");
                }
            }
        }
        // Counted after `poll_pending`: an evicted endpoint that was pending (its breaker
        // open) stays in the cache's count until then, and a stale total lets the
        // ejection cap eject the last real instance.
        if changed {
            let n = self.cache.len();
            self.cap.set_total(n);
            self.instances.set(n as i64);
        }
    }

    /// Picks a ready endpoint by p2c, avoiding `attempts`' instances when possible.
    fn pick(&mut self, attempts: Option<&Attempts>) -> Option<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            let n = self.cache.ready_len();
            if n == 0 {
                return None;
            }
            let excluded = attempts.filter(|a| !a.is_empty());
            let candidates: Option<Vec<usize>> = excluded.map(|a| {
                let fresh: Vec<usize> = (0..n)
                    .filter(|i| {
                        self.cache
                            .get_ready_index(*i)
                            .is_some_and(|(k, _)| !a.contains(k))
                    })
                    .collect();
                // Every ready instance was tried: trying one again beats failing.
                if fresh.is_empty() {
                    (0..n).collect()
                } else {
                    fresh
                }
            });
            let count = candidates.as_ref().map_or(n, Vec::len);
            let at = |i: usize| candidates.as_ref().map_or(i, |c| c[i]);
            let chosen = if count == 1 {
                at(0)
            } else {
                let a = rand::random_range(0..count);
                let mut b = rand::random_range(0..count - 1);
                if b >= a {
                    b += 1;
                }
                let (ia, ib) = (at(a), at(b));
                let now = self.polled_at;
                let la = self.cache.get_ready_index(ia).map(|(_, s)| s.load_at(now));
                let lb = self.cache.get_ready_index(ib).map(|(_, s)| s.load_at(now));
                match (la, lb) {
                    (Some(la), Some(lb)) if lb < la => ib,
                    _ => ia,
                }
            };
            // The chosen one may have become unready (its breaker opened since): that
            // moves it back to pending, where the next poll_ready drives it.
            match self.cache.check_ready_index(&mut cx, chosen) {
                Ok(true) => return Some(chosen),
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(service = %self.service, error = %e, "endpoint failed; dropped");
                    continue;
                }
            }
        }
    }
}

impl<D, B> Service<http::Request<B>> for P2c<D, http::Request<B>>
where
    D: Discover<Key = Arc<str>> + Unpin,
    D::Error: std::fmt::Display,
    D::Service: Service<http::Request<B>> + LoadAt,
    <D::Service as Service<http::Request<B>>>::Error: Into<BoxError>,
{
    type Response = <D::Service as Service<http::Request<B>>>::Response;
    type Error = BoxError;
    type Future = Either<
        Ready<Result<Self::Response, BoxError>>,
        futures::future::ErrInto<<D::Service as Service<http::Request<B>>>::Future, BoxError>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.update(cx);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use futures::TryFutureExt;
        let attempts = crate::retry::attempts_of(req.extensions()).cloned();
        let picked = self.pick(attempts.as_deref());
        // Called where it stands: `pick` has just polled it ready (its breaker takes a
        // half-open permit in `call`, and the next pick polls it again). tower's
        // `call_ready_index` would move it to the pending set, a task for
        // `FuturesUnordered` and an index-map removal and insertion per request, only for
        // the next poll to move it straight back.
        let Some((k, svc)) = picked.and_then(|i| self.cache.get_ready_index_mut(i)) else {
            return Either::Left(ready(Err(NoReadyInstance {
                service: self.service.clone(),
                known: self.cache.len(),
            }
            .into())));
        };
        if let Some(a) = &attempts {
            a.push(k.clone());
        }
        Either::Right(svc.call(req).err_into())
    }
}

/// One service's balancer shared by every request without a task hop: each call locks
/// it briefly, applies discovery changes, re-polls the endpoints that were not ready and
/// picks one. A `tower::buffer::Buffer` would do the same through a channel and a worker
/// task (two wake-ups per request).
///
/// Polling happens with a no-op waker on purpose: the balancer never makes a request
/// wait (no ready endpoint answers 503 at once), so nobody needs waking; endpoints that
/// become ready (a breaker's open period ends, a probe returns) are noticed by the next
/// call, which polls them again. Timers and probes still wake their own entries inside
/// the ready cache, so the next poll finds them.
pub(crate) struct SharedBalancer<S> {
    inner: Arc<std::sync::Mutex<S>>,
}

impl<S> Clone for SharedBalancer<S> {
    fn clone(&self) -> Self {
        SharedBalancer {
            inner: self.inner.clone(),
        }
    }
}

impl<S> SharedBalancer<S> {
    /// Shares `balancer`.
    pub(crate) fn new(balancer: S) -> Self {
        SharedBalancer {
            inner: Arc::new(std::sync::Mutex::new(balancer)),
        }
    }
}

impl<S> SharedBalancer<S> {
    /// Applies discovery changes and re-polls waiting endpoints without sending anything:
    /// the balancer otherwise does this only when a request comes, and status pages must
    /// show an instance from the moment it is discovered (and not once it has left).
    pub(crate) fn refresh<Req>(&self)
    where
        S: Service<Req>,
    {
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = b.poll_ready(&mut Context::from_waker(Waker::noop()));
    }
}

impl<S, Req> Service<Req> for SharedBalancer<S>
where
    S: Service<Req, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = S::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> S::Future {
        // A panic while holding the lock leaves a usable balancer behind: recover it.
        let mut b = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut cx = Context::from_waker(Waker::noop());
        // P2c is always ready; its poll_ready only does the bookkeeping.
        let _ = b.poll_ready(&mut cx);
        b.call(req)
    }
}
