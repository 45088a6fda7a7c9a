//! Budgeted, safe retries: a `tower::retry::Policy` plus the state one route shares (its
//! `TpsBudget`, metrics, the once-only exhaustion log).
//!
//! What is retried: a connect failure always (nothing was sent); a 502/503/504, a
//! per-try timeout or a broken connection only when the request is idempotent (GET,
//! HEAD, PUT, DELETE, OPTIONS, TRACE) or carries an `Idempotency-Key`. Never a POST
//! without a key once it may have reached an instance. Never a streamed body (over the
//! replay buffer). Each retry waits an exponential backoff with full jitter, must fit in
//! the deadline, must be paid for by the budget, and goes to an instance not yet tried
//! (the balancer reads the request's [`Attempts`](crate::endpoint::Attempts)).

use crate::{
    body::ProxyBody,
    endpoint::{AttemptKind, Attempts},
    error::{BoxError, FailureKind},
    latency::LatencyWindow,
    metrics::{RetryLabels, RouteLabels, UpstreamMetrics},
    policy::Policy,
    timeout::TryTimeout,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Request, Response, Uri, Version};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use tokio::time::{Instant, Sleep};
use tower::retry::budget::{Budget, TpsBudget};

/// Request extension: when the request's deadline passes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub Instant);

/// What one route's retry and hedge layers share.
#[derive(Debug)]
pub(crate) struct RouteShared {
    /// Route label (its prefix).
    pub route: Arc<String>,
    /// Service name.
    pub service: Arc<str>,
    /// The route's policy.
    pub policy: Policy,
    /// Retries and hedges draw from this; every request deposits.
    pub budget: TpsBudget,
    /// Set while the budget is empty, so exhaustion is logged once per episode.
    exhausted: AtomicBool,
    /// Metrics.
    pub metrics: Arc<UpstreamMetrics>,
    /// The service's recent attempt latency (hedge delay).
    pub latency: Arc<LatencyWindow>,
}

impl RouteShared {
    /// Shared state of a route.
    pub(crate) fn new(
        route: &str,
        service: Arc<str>,
        policy: Policy,
        metrics: Arc<UpstreamMetrics>,
        latency: Arc<LatencyWindow>,
    ) -> Arc<Self> {
        let budget = TpsBudget::new(
            std::time::Duration::from_secs(10),
            policy.budget_min_per_sec,
            policy.budget_percent / 100.0,
        );
        Arc::new(RouteShared {
            route: Arc::new(route.to_owned()),
            service,
            policy,
            budget,
            exhausted: AtomicBool::new(false),
            metrics,
            latency,
        })
    }

    /// Takes one retry or hedge from the budget; logs the first refusal of an episode.
    pub(crate) fn withdraw(&self, what: &'static str) -> bool {
        if self.budget.withdraw() {
            if self.exhausted.swap(false, Ordering::Relaxed) {
                tracing::info!(route = %self.route, service = %self.service, "retry budget available again");
            }
            return true;
        }
        self.metrics
            .budget_exhausted
            .get_or_create(&RouteLabels {
                route: self.route.clone(),
            })
            .inc();
        if !self.exhausted.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                route = %self.route,
                service = %self.service,
                refused = what,
                "retry budget exhausted: not retrying or hedging until it refills"
            );
        }
        false
    }
}

/// Whether the method is idempotent by definition (RFC 9110 9.2.2).
pub(crate) fn has_idempotent_method<B>(req: &Request<B>) -> bool {
    idempotent_method(req.method())
}

fn idempotent_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
}

/// Whether the request may be sent again after a failed attempt: an idempotent method, or
/// a request whose `Idempotency-Key` lets the service recognise the repeat.
fn idempotent(method: &Method, headers: &HeaderMap) -> bool {
    idempotent_method(method) || headers.contains_key("idempotency-key")
}

/// Why a failed attempt may be retried, or `None`.
pub(crate) fn retry_reason<B, RB>(
    req: &Request<B>,
    result: &Result<Response<RB>, BoxError>,
) -> Option<&'static str> {
    reason_of(req.method(), req.headers(), result)
}

/// [`retry_reason`] for a request known by its method and headers.
fn reason_of<RB>(
    method: &Method,
    headers: &HeaderMap,
    result: &Result<Response<RB>, BoxError>,
) -> Option<&'static str> {
    // Guards run only for a failure, so a success never looks at the headers.
    let idem = || idempotent(method, headers);
    match result {
        Ok(res) => match res.status().as_u16() {
            502 if idem() => Some("http_502"),
            503 if idem() => Some("http_503"),
            504 if idem() => Some("http_504"),
            _ => None,
        },
        Err(e) => match FailureKind::of(e.as_ref()) {
            FailureKind::Connect => Some("connect_error"),
            FailureKind::Timeout if idem() => Some("timeout"),
            FailureKind::Transport if idem() => Some("transport_error"),
            _ => None,
        },
    }
}

/// Request extension: the request as the route's stack received it, kept once (see
/// [`crate::stack::RouteUpstream::send`]), so that retries and hedges rebuild an
/// attempt from it only when one actually fires. Without it every request paid for a
/// copy of its headers for the retry layer and another for the hedge layer, although
/// almost none is ever resent.
///
/// The header fields are not copied but moved here: a request that carries a replay
/// holds in its own map only the fields added for its attempt (`traceparent`, say), and
/// goes out with both (see [`Fields`]). A copy of the map was the largest single
/// cost of a proxied request that kept it (about 1k instructions with its allocation
/// and drop).
#[derive(Debug)]
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    /// The client's fields (after the edge's changes), moved out of the request.
    headers: HeaderMap,
    body: Option<Bytes>,
    attempts: Arc<Attempts>,
    try_timeout: TryTimeout,
    deadline: Deadline,
}

impl Replay {
    /// The replay of `req` with what its attempts share, or `None` when its body is
    /// streamed and so cannot be sent twice. Takes `req`'s header fields: the caller
    /// puts the replay on `req`, whose fields it then carries (see [`Fields`]).
    pub(crate) fn of(
        req: &mut Request<ProxyBody>,
        attempts: &Arc<Attempts>,
        try_timeout: TryTimeout,
        deadline: Deadline,
    ) -> Option<Arc<Replay>> {
        let ProxyBody::Buffered(body) = req.body() else {
            return None;
        };
        let body = body.clone();
        Some(Arc::new(Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: std::mem::take(req.headers_mut()),
            body,
            attempts: attempts.clone(),
            try_timeout,
            deadline,
        }))
    }

    /// A new attempt's request: what [`clone_request`] would have copied, carrying this
    /// replay (and with it the header fields, attempts, per-try timeout and deadline)
    /// on.
    pub(crate) fn request(self: &Arc<Self>) -> Request<ProxyBody> {
        let mut r = Request::new(ProxyBody::Buffered(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.version_mut() = self.version;
        r.extensions_mut().insert(self.clone());
        r
    }

    /// What the retry layer keeps while the attempt runs: no copy and no extension (its
    /// [`RetryPolicy`] keeps this replay and rebuilds the request from it if a retry
    /// fires), so keeping it costs no allocation.
    fn placeholder(&self) -> Request<ProxyBody> {
        let mut r = Request::new(ProxyBody::empty());
        *r.method_mut() = self.method.clone();
        r
    }
}

/// The header fields a request goes out with, given its own map and extensions: its
/// own fields, then, when it carries a [`Replay`], the replay's (the client's) but for
/// those its own replace.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    own: &'a HeaderMap,
    replayed: Option<&'a HeaderMap>,
}

impl<'a> Fields<'a> {
    pub(crate) fn of(own: &'a HeaderMap, ext: &'a http::Extensions) -> Self {
        Fields {
            own,
            replayed: ext.get::<Arc<Replay>>().map(|r| &r.headers),
        }
    }

    /// The request's own fields (those added for its attempt, when it has a replay).
    pub(crate) fn own(self) -> &'a HeaderMap {
        self.own
    }

    /// The replay's fields, when the request has one: they go out after the request's
    /// own, but for those [`replaced`] by them.
    pub(crate) fn replayed(self) -> Option<&'a HeaderMap> {
        self.replayed
    }

    /// All of them, in order (tests).
    #[cfg(test)]
    pub(crate) fn to_vec(self) -> Vec<(&'a HeaderName, &'a http::HeaderValue)> {
        let mut all: Vec<_> = self.own.iter().collect();
        if let Some(r) = self.replayed {
            all.extend(r.iter().filter(|(n, _)| !replaced(self.own, n)));
        }
        all
    }
}

/// Whether `own` has a field named `name`. An attempt's own fields are few, so they
/// are compared one by one rather than the name hashed.
pub(crate) fn replaced(own: &HeaderMap, name: &HeaderName) -> bool {
    if own.keys_len() <= 8 {
        own.keys().any(|k| k == name)
    } else {
        own.contains_key(name)
    }
}

/// The instances `ext`'s request was sent to: its own extension, or its replay's.
pub(crate) fn attempts_of(ext: &http::Extensions) -> Option<&Arc<Attempts>> {
    ext.get::<Arc<Attempts>>()
        .or_else(|| ext.get::<Arc<Replay>>().map(|r| &r.attempts))
}

/// The per-try timeout and deadline of `ext`'s request, from its replay when it has one
/// (an attempt made from a replay carries nothing else), else from its own extensions.
pub(crate) fn limits_of(ext: &http::Extensions) -> (Option<TryTimeout>, Option<Deadline>) {
    match ext.get::<Arc<Replay>>() {
        Some(r) => (Some(r.try_timeout), Some(r.deadline)),
        None => (
            ext.get::<TryTimeout>().copied(),
            ext.get::<Deadline>().copied(),
        ),
    }
}

/// Copies a request for another attempt (same extensions that matter), when its body
/// is buffered. For a request without a [`Replay`] (one with a replay is copied by
/// [`Replay::request`]).
pub(crate) fn clone_request(req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    let body = req.body().try_clone()?;
    let mut r = Request::new(body);
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    let ext = req.extensions();
    let out = r.extensions_mut();
    if let Some(a) = attempts_of(ext) {
        out.insert(a.clone());
    }
    let (try_timeout, deadline) = limits_of(ext);
    if let Some(t) = try_timeout {
        out.insert(t);
    }
    if let Some(d) = deadline {
        out.insert(d);
    }
    Some(r)
}

/// The retry policy of one route (cloned per request; `retries` counts this request's).
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    shared: Arc<RouteShared>,
    retries: u32,
    /// This request's replay, when it has one: taken in `clone_request`, before tower
    /// clones the policy into the request's future, and read by `retry` (the request
    /// tower keeps is then a bare placeholder).
    replay: Option<Arc<Replay>>,
}

impl RetryPolicy {
    /// The policy of a route.
    pub(crate) fn new(shared: Arc<RouteShared>) -> Self {
        RetryPolicy {
            shared,
            retries: 0,
            replay: None,
        }
    }

    fn backoff(&self) -> std::time::Duration {
        let p = &self.shared.policy;
        let exp = p.retry_backoff.saturating_mul(1u32 << self.retries.min(16));
        exp.min(p.retry_backoff_max)
            .mul_f64(rand::random_range(0.0..1.0))
    }
}

impl<RB> tower::retry::Policy<Request<ProxyBody>, Response<RB>, BoxError> for RetryPolicy {
    type Future = Sleep;

    fn retry(
        &mut self,
        req: &mut Request<ProxyBody>,
        result: &mut Result<Response<RB>, BoxError>,
    ) -> Option<Sleep> {
        // With a replay, `req` is a placeholder (see `Replay`): the replay knows the
        // request.
        let reason = match &self.replay {
            Some(r) => reason_of(&r.method, &r.headers, result),
            None => retry_reason(req, result),
        }?;
        if self.retries >= self.shared.policy.retries {
            return None;
        }
        let backoff = self.backoff();
        let deadline = match &self.replay {
            Some(r) => Some(r.deadline),
            None => limits_of(req.extensions()).1,
        };
        if let Some(Deadline(d)) = deadline
            && Instant::now() + backoff >= d
        {
            return None;
        }
        if !self.shared.withdraw("retry") {
            return None;
        }
        if let Some(r) = &self.replay {
            *req = r.request();
        }
        self.retries += 1;
        req.extensions_mut().insert(AttemptKind::Retry(reason));
        self.shared
            .metrics
            .retries
            .get_or_create(&RetryLabels {
                route: self.shared.route.clone(),
                reason,
            })
            .inc();
        let tried = attempts_of(req.extensions())
            .map(|a| a.tried())
            .unwrap_or_default();
        tracing::info!(
            route = %self.shared.route,
            reason,
            retry = self.retries,
            after = ?tried,
            backoff_ms = backoff.as_millis() as u64,
            "retrying on another instance"
        );
        Some(tokio::time::sleep(backoff))
    }

    fn clone_request(&mut self, req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
        if self.shared.policy.retries == 0 {
            return None;
        }
        match req.extensions().get::<Arc<Replay>>() {
            Some(r) => {
                self.replay = Some(r.clone());
                Some(r.placeholder())
            }
            None => {
                self.replay = None;
                clone_request(req)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use std::time::Duration;
    use tower::{Service, ServiceExt};
    use tower_test::mock;

    type Res = Response<()>;

    fn shared(policy: Policy) -> Arc<RouteShared> {
        RouteShared::new(
            "/api/rooms",
            "room".into(),
            policy,
            UpstreamMetrics::unregistered(),
            Arc::new(LatencyWindow::default()),
        )
    }

    fn status(code: u16) -> Res {
        let mut r = Response::new(());
        *r.status_mut() = http::StatusCode::from_u16(code).unwrap();
        r
    }

    fn req(method: http::Method, key: bool) -> Request<ProxyBody> {
        let mut b = Request::builder().method(method).uri("/rooms/1");
        if key {
            b = b.header("idempotency-key", "k-1");
        }
        let mut r = b
            .body(ProxyBody::Buffered(Some(bytes::Bytes::from_static(b"{}"))))
            .unwrap();
        r.extensions_mut().insert(Arc::new(Attempts::default()));
        r
    }

    /// Sends `r` through a retry layer over a mock; the mock answers every attempt with
    /// `code`. Returns how many attempts reached the mock.
    async fn attempts_for(policy: Policy, r: Request<ProxyBody>, code: u16) -> (u16, usize) {
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::retry::Retry::new(RetryPolicy::new(shared(policy)), svc);
        let call = tokio::spawn(svc.oneshot(r));
        let mut seen = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), handle.next_request()).await {
                Ok(Some((_, send))) => {
                    seen += 1;
                    send.send_response(status(code));
                }
                _ => break,
            }
            if call.is_finished() {
                break;
            }
        }
        let res = call.await.unwrap().unwrap();
        (res.status().as_u16(), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_without_key_is_never_resent_after_a_response() {
        let (status, seen) =
            attempts_for(Policy::default(), req(http::Method::POST, false), 503).await;
        assert_eq!((status, seen), (503, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_get_answered_503_is_retried_up_to_the_limit() {
        let (status, seen) =
            attempts_for(Policy::default(), req(http::Method::GET, false), 503).await;
        assert_eq!((status, seen), (503, 3), "one attempt and two retries");
    }

    #[tokio::test(start_paused = true)]
    async fn a_post_with_an_idempotency_key_is_retried() {
        let (_, seen) = attempts_for(Policy::default(), req(http::Method::POST, true), 502).await;
        assert_eq!(seen, 3);
    }

    /// The mock's next request, answered with `code`.
    async fn answer(
        handle: &mut mock::Handle<Request<ProxyBody>, Res>,
        code: u16,
    ) -> Request<ProxyBody> {
        let (r, send) = handle.next_request().await.unwrap();
        send.send_response(status(code));
        r
    }

    #[tokio::test(start_paused = true)]
    async fn a_replayed_request_is_resent_whole_and_the_next_request_is_not_taken_for_it() {
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let mut svc = tower::retry::Retry::new(RetryPolicy::new(shared(Policy::default())), svc);
        // As `RouteUpstream::send` sends it: the request with its replay.
        let mut first = req(http::Method::POST, true);
        let replay = Replay::of(
            &mut first,
            &Arc::new(Attempts::default()),
            TryTimeout(std::time::Duration::from_secs(1)),
            Deadline(Instant::now() + Duration::from_secs(3)),
        )
        .unwrap();
        first.extensions_mut().insert(replay);
        let call = tokio::spawn(svc.ready().await.unwrap().call(first));
        answer(&mut handle, 503).await;
        let again = answer(&mut handle, 200).await;
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
        assert_eq!(again.method(), http::Method::POST);
        assert_eq!(again.uri(), "/rooms/1");
        let fields = Fields::of(again.headers(), again.extensions()).to_vec();
        assert_eq!(
            fields,
            vec![(
                &http::HeaderName::from_static("idempotency-key"),
                &http::HeaderValue::from_static("k-1")
            )]
        );
        assert!(matches!(again.body(), ProxyBody::Buffered(Some(b)) if b == "{}"));
        // The same service, a request without a replay: its retry resends it, not the
        // replay the policy kept for the first.
        let call = tokio::spawn(
            svc.ready()
                .await
                .unwrap()
                .call(req(http::Method::GET, false)),
        );
        answer(&mut handle, 503).await;
        let again = answer(&mut handle, 200).await;
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
        assert_eq!(again.method(), http::Method::GET);
        assert!(
            Fields::of(again.headers(), again.extensions())
                .to_vec()
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_500_is_not_retried_even_for_a_get() {
        let (_, seen) = attempts_for(Policy::default(), req(http::Method::GET, false), 500).await;
        assert_eq!(seen, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_budget_stops_retries() {
        let policy = Policy {
            retries: 5,
            budget_percent: 0.0,
            budget_min_per_sec: 0,
            ..Policy::default()
        };
        let s = shared(policy.clone());
        let (svc, mut handle) = mock::pair::<Request<ProxyBody>, Res>();
        let svc = tower::retry::Retry::new(RetryPolicy::new(s.clone()), svc);
        let call = tokio::spawn(svc.oneshot(req(http::Method::GET, false)));
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(status(503));
        assert_eq!(call.await.unwrap().unwrap().status(), 503);
        let exhausted = s
            .metrics
            .budget_exhausted
            .get_or_create(&RouteLabels {
                route: s.route.clone(),
            })
            .get();
        assert_eq!(exhausted, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn connect_errors_are_retried_even_for_a_post_without_key() {
        let r = req(http::Method::POST, false);
        assert_eq!(
            retry_reason::<_, ()>(&r, &Err(Box::new(ConnectRefused) as BoxError)),
            None
        );
        // What the pooled client returns when nothing was sent:
        let err = hyper_util_connect_error().await;
        assert_eq!(retry_reason::<_, ()>(&r, &Err(err)), Some("connect_error"));
        let timeout: BoxError = Box::new(crate::error::PerTryTimeout);
        assert_eq!(
            retry_reason::<_, ()>(&r, &Err(timeout)),
            None,
            "a timed-out POST may have been applied"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("some other error")]
    struct ConnectRefused;

    async fn hyper_util_connect_error() -> BoxError {
        // A port that was just free: connecting is refused.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let client = crate::pool::http_client(Default::default());
        let r = Request::get(format!("http://{addr}/"))
            .body(ProxyBody::empty())
            .unwrap();
        client.request(r).await.map(|_| ()).unwrap_err().into()
    }
}
