//! Hedging: when a request with an idempotent method (GET, HEAD, PUT, DELETE, OPTIONS)
//! has not answered by the service's recent p95 (clamped to
//! `[hedge_min_delay, hedge_max_delay]`), one more attempt goes to
//! another instance and the first good answer wins. A frozen instance then costs a client
//! the hedge delay instead of a whole per-try timeout.
//!
//! Hedges are paid from the route's retry budget. The losing attempt is not cancelled:
//! it runs to its own end (bounded by the per-try timeout) in a task, so a hung instance
//! still collects the timeouts that open its breaker. A hedge that fails fast (a refused
//! connection) is sent once more, elsewhere, while the first attempt may still hang.
//! A POST with an `Idempotency-Key` is
//! retried after a failure but never hedged: the hedge would reach the service while the
//! first attempt still holds the key.

use crate::{
    body::ProxyBody,
    endpoint::AttemptKind,
    error::BoxError,
    metrics::RouteLabels,
    retry::{Replay, RouteShared, clone_request, has_idempotent_method},
};
use futures::future::BoxFuture;
use http::{Request, Response};
use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tower::{Service, ServiceExt};

/// Builds [`Hedge`] services for a route.
#[derive(Debug, Clone)]
pub(crate) struct HedgeLayer {
    shared: Arc<RouteShared>,
}

impl HedgeLayer {
    /// Hedging by `shared`'s policy.
    pub(crate) fn new(shared: Arc<RouteShared>) -> Self {
        HedgeLayer { shared }
    }
}

impl<S> tower::Layer<S> for HedgeLayer {
    type Service = Hedge<S>;
    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The hedging service.
#[derive(Debug, Clone)]
pub(crate) struct Hedge<S> {
    inner: S,
    shared: Arc<RouteShared>,
}

impl RouteShared {
    /// How long to wait before hedging, or `None` when this route does not hedge.
    pub(crate) fn hedge_delay(&self) -> Option<Duration> {
        let h = self.policy.hedge?;
        let d = self.latency.percentile(h.percentile).unwrap_or(h.max_delay);
        Some(d.clamp(h.min_delay, h.max_delay))
    }
}

/// Where the hedge's request comes from.
enum HedgeCopy {
    /// Rebuilt from the request's replay when the hedge fires.
    Later(Arc<Replay>),
    /// Copied up front (a request without a replay, as in unit tests of this layer).
    Now(Box<Request<ProxyBody>>),
}

fn acceptable<RB>(r: &Result<Response<RB>, BoxError>) -> bool {
    matches!(r, Ok(res) if !res.status().is_server_error())
}

impl<S, RB> Service<Request<ProxyBody>> for Hedge<S>
where
    S: Service<Request<ProxyBody>, Response = Response<RB>, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<RB>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ProxyBody>) -> Self::Future {
        // The method first: it is free, the delay takes a lock. With a `Replay` the hedge's
        // copy is made only if the hedge fires.
        let plan = match has_idempotent_method(&req).then(|| self.shared.hedge_delay()) {
            Some(Some(delay)) => match req.extensions().get::<Arc<Replay>>() {
                Some(r) => Some((delay, HedgeCopy::Later(r.clone()))),
                None => clone_request(&req).map(|r| (delay, HedgeCopy::Now(Box::new(r)))),
            },
            _ => None,
        };
        let first = self.inner.call(req);
        let Some((delay, copy)) = plan else {
            return Box::pin(first);
        };
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        // Boxed here, where it is made: moved into the async block unboxed, the attempt's
        // whole future (balancer, breaker, client) would be copied twice more.
        let mut first = Box::pin(first);
        Box::pin(async move {
            tokio::select! {
                biased;
                r = &mut first => return r,
                _ = tokio::time::sleep(delay) => {}
            }
            if !shared.withdraw("hedge") {
                return first.await;
            }
            // A hedge that fails fast (a refused connection to an instance not ejected yet)
            // says nothing about the first attempt, which may still hang: hedge once more,
            // elsewhere (the balancer skips the instances tried), if the budget allows. Only
            // a request with a replay can be copied twice.
            let (mut once, replay) = match copy {
                HedgeCopy::Later(r) => (None, Some(r)),
                HedgeCopy::Now(r) => (Some(r), None),
            };
            let mut again = replay.is_some();
            loop {
                let mut hedge_req = match (once.take(), &replay) {
                    (Some(r), _) => *r,
                    (None, Some(r)) => r.request(),
                    (None, None) => return first.await,
                };
                shared
                    .metrics
                    .hedges
                    .get_or_create(&RouteLabels {
                        route: shared.route.clone(),
                    })
                    .inc();
                tracing::debug!(route = %shared.route, delay_ms = delay.as_millis() as u64, "hedging");
                hedge_req.extensions_mut().insert(AttemptKind::Hedge);
                let mut second = Box::pin(inner.clone().oneshot(hedge_req));
                tokio::select! {
                    r = &mut first => {
                        return if acceptable(&r) {
                            tokio::spawn(async move { let _ = second.await; });
                            r
                        } else {
                            second.await
                        };
                    }
                    r = &mut second => {
                        if acceptable(&r) {
                            tokio::spawn(async move { let _ = first.await; });
                            return r;
                        }
                        // Past the deadline (see `timeout`), the first attempt ends now too.
                        if crate::error::cut_by_deadline(&r)
                            || !(std::mem::take(&mut again) && shared.withdraw("hedge"))
                        {
                            return first.await;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::{latency::LatencyWindow, metrics::UpstreamMetrics, policy::Policy};
    use tower_test::mock;

    type Res = Response<()>;

    fn layer() -> HedgeLayer {
        let mut policy = Policy::default();
        policy.hedge = Some(crate::policy::HedgePolicy {
            percentile: 95.0,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        });
        HedgeLayer::new(RouteShared::new(
            "/api/rooms",
            "room".into(),
            policy,
            UpstreamMetrics::unregistered(),
            Arc::new(LatencyWindow::default()),
        ))
    }

    fn req(method: http::Method) -> Request<ProxyBody> {
        Request::builder()
            .method(method)
            .uri("/rooms")
            .body(ProxyBody::empty())
            .unwrap()
    }

    async fn no_request_within(
        handle: &mut mock::Handle<Request<ProxyBody>, Res>,
        d: Duration,
    ) -> bool {
        // `None` means the service was dropped: no request can come anymore either.
        !matches!(
            tokio::time::timeout(d, handle.next_request()).await,
            Ok(Some(_))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_get_is_hedged_after_the_delay_and_the_first_answer_wins() {
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::Layer::layer(&layer(), svc);
        let call = tokio::spawn(svc.oneshot(req(http::Method::GET)));
        let (_, first) = handle.next_request().await.unwrap();
        // No latency known yet: the hedge waits for hedge_max_delay (100 ms).
        assert!(
            no_request_within(&mut handle, Duration::from_millis(90)).await,
            "hedged too early"
        );
        let (hedge, second) = handle.next_request().await.unwrap();
        assert_eq!(
            hedge.extensions().get::<crate::endpoint::AttemptKind>(),
            Some(&crate::endpoint::AttemptKind::Hedge)
        );
        second.send_response(Response::new(()));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hedge_that_fails_fast_is_sent_once_more_but_not_twice() {
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::Layer::layer(&layer(), svc);
        let mut r = req(http::Method::GET);
        let replay = Replay::of(
            &mut r,
            &Arc::new(crate::endpoint::Attempts::default()),
            crate::timeout::TryTimeout(Duration::from_secs(1)),
            crate::retry::Deadline(tokio::time::Instant::now() + Duration::from_secs(3)),
        )
        .unwrap();
        r.extensions_mut().insert(replay);
        let call = tokio::spawn(svc.oneshot(r));
        // The first attempt hangs (a frozen instance); the hedge is refused at once (a
        // killed one not ejected yet): one more hedge goes out.
        let (_, first) = handle.next_request().await.unwrap();
        let (_, refused) = handle.next_request().await.unwrap();
        refused.send_error(BoxError::from("connection refused"));
        let (again, second) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .expect("no second hedge after a hedge that failed fast")
            .unwrap();
        assert_eq!(
            again.extensions().get::<crate::endpoint::AttemptKind>(),
            Some(&crate::endpoint::AttemptKind::Hedge)
        );
        // That one fails fast too: no third hedge; the first attempt decides.
        second.send_error(BoxError::from("connection refused"));
        assert!(no_request_within(&mut handle, Duration::from_secs(5)).await);
        first.send_response(Response::new(()));
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_answer_sends_no_hedge() {
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::Layer::layer(&layer(), svc);
        let call = tokio::spawn(svc.oneshot(req(http::Method::GET)));
        let (_, first) = handle.next_request().await.unwrap();
        first.send_response(Response::new(()));
        call.await.unwrap().unwrap();
        assert!(no_request_within(&mut handle, Duration::from_secs(5)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_with_an_idempotency_key_is_not_hedged_either() {
        // A key makes a POST safe to retry after a failure, but a hedge would reach the
        // service while the first attempt still holds the key and double its work.
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::Layer::layer(&layer(), svc);
        let mut r = req(http::Method::POST);
        r.headers_mut()
            .insert("idempotency-key", http::HeaderValue::from_static("k-1"));
        let call = tokio::spawn(svc.oneshot(r));
        let (_, first) = handle.next_request().await.unwrap();
        assert!(no_request_within(&mut handle, Duration::from_secs(5)).await);
        first.send_response(Response::new(()));
        call.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_without_key_is_never_hedged() {
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::Layer::layer(&layer(), svc);
        let call = tokio::spawn(svc.oneshot(req(http::Method::POST)));
        let (_, first) = handle.next_request().await.unwrap();
        assert!(no_request_within(&mut handle, Duration::from_secs(5)).await);
        first.send_response(Response::new(()));
        call.await.unwrap().unwrap();
    }

    #[test]
    fn the_delay_follows_recent_latency_within_its_bounds() {
        let l = layer();
        let s = &l.shared;
        assert_eq!(s.hedge_delay(), Some(Duration::from_millis(100)));
        for _ in 0..100 {
            s.latency.record(Duration::from_millis(1));
        }
        assert_eq!(
            s.hedge_delay(),
            Some(Duration::from_millis(20)),
            "floored at hedge_min_delay"
        );
        for _ in 0..600 {
            s.latency.record(Duration::from_millis(50));
        }
        assert_eq!(s.hedge_delay(), Some(Duration::from_millis(50)));
    }
}
