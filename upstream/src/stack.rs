//! The upstream stack, written once. Outermost first:
//!
//! ```text
//! retry             tower::retry::Retry + RetryPolicy (TpsBudget, backoff, safety;
//!                   a backoff must end before the deadline)
//!  hedge            Hedge: one more attempt after the service's recent p95
//!   shared          SharedBalancer: the one balancer of the service, shared by its
//!                   routes under a short lock (no Buffer task hop)
//!    balance        P2c over latency EWMA x in-flight, excluding tried instances -> 503
//!     breaker       Breaker: per-instance readiness gate, ejection cap
//!      observe      Observe: absolute URI, trace context, client span, stats
//!       try         timeout::Timeout: the per-try timeout, and the route's deadline -> 504
//!        client     a keep-alive connection from the calling worker's pool   -> 502
//!                   (one pool per serving worker, see [`HttpClient`])
//! ```
//!
//! The route's deadline has no layer of its own: each attempt's one timer ends at the
//! per-try timeout or the deadline, whichever comes first (see [`crate::timeout`]).
//! Everything from `shared` down exists once per service; the top two once per route,
//! because routes of one service may have different deadlines, retries and hedging.
//! The same stack backs [`UpstreamClient`](crate::UpstreamClient), which services use
//! to call each other.

use crate::h1::AnswerBody;
use crate::{
    balance::P2c,
    body::ProxyBody,
    breaker::{
        Breaker, BreakerLayer, BreakerShared, BreakerState, EjectionCap, Prober, StallWatch,
        TransitionSink,
    },
    discovery::{DiscoverTargets, MakeEndpoint, Target, Targets},
    endpoint::{Attempts, EndpointStats, EndpointView, Observe},
    error::BoxError,
    hedge::{Hedge, HedgeLayer},
    latency::LatencyWindow,
    metrics::{
        EJECTION_REASONS, EjectionLabels, InstanceLabels, ServiceLabels, TransitionLabels,
        UpstreamMetrics,
    },
    policy::{BreakerPolicy, Policy, ServicePolicy},
    pool::HttpClient,
    retry::{Deadline, Replay, RetryPolicy, RouteShared},
    timeout::{Timeout, TimeoutLayer, TryTimeout},
};
use http::{Request, Response};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;
use tower::{Layer, ServiceExt, retry::Retry};

/// One instance's stack, as the balancer holds it.
pub(crate) type EndpointService = Breaker<Observe<Timeout<HttpClient>>>;

type Balancer = P2c<DiscoverTargets<MakeEndpointStack>, Request<ProxyBody>>;
type Shared = crate::balance::SharedBalancer<Balancer>;

/// A route's stack over its service's shared balancer.
pub(crate) type RouteService = Retry<RetryPolicy, Hedge<Shared>>;

/// `GET /healthz` on one instance through the shared client.
struct HealthProbe {
    client: HttpClient,
    uri: Option<http::Uri>,
}

impl Prober for HealthProbe {
    fn probe(&self) -> futures::future::BoxFuture<'static, Result<http::StatusCode, BoxError>> {
        let client = self.client.clone();
        let uri = self.uri.clone();
        Box::pin(async move {
            let uri = uri.ok_or_else(|| BoxError::from("the instance has no valid URL"))?;
            let mut req = Request::new(ProxyBody::empty());
            *req.uri_mut() = uri;
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static("hotel-gateway-health-probe"),
            );
            let res = client.request(req).await?;
            Ok(res.status())
        })
    }
}

/// Sets breaker gauges and transition and ejection counters of one instance.
struct MetricsSink {
    state: Gauge,
    to_open: Counter,
    to_half_open: Counter,
    to_closed: Counter,
    /// One counter per reason, in the order of `EJECTION_REASONS`.
    ejections: [Counter; 4],
}

impl TransitionSink for MetricsSink {
    fn transition(&self, to: BreakerState) {
        self.state.set(to.gauge());
        match to {
            BreakerState::Open => self.to_open.inc(),
            BreakerState::HalfOpen => self.to_half_open.inc(),
            BreakerState::Closed => self.to_closed.inc(),
        };
    }

    fn ejected(&self, reason: &'static str) {
        if let Some(i) = EJECTION_REASONS.iter().position(|r| *r == reason) {
            self.ejections[i].inc();
        }
    }
}

/// The instances of a service as the status page shows them.
#[derive(Debug, Default)]
pub(crate) struct ServiceView {
    endpoints: Mutex<BTreeMap<Arc<str>, Arc<EndpointStats>>>,
}

impl ServiceView {
    /// Every known instance.
    pub(crate) fn endpoints(&self) -> Vec<EndpointView> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.view())
            .collect()
    }
}

/// Makes an [`EndpointService`] per discovered instance.
pub(crate) struct MakeEndpointStack {
    service: Arc<str>,
    client: HttpClient,
    breaker: BreakerPolicy,
    per_try: Duration,
    cap: Arc<EjectionCap>,
    metrics: Arc<UpstreamMetrics>,
    latency: Arc<LatencyWindow>,
    view: Arc<ServiceView>,
}

impl MakeEndpoint for MakeEndpointStack {
    type Service = EndpointService;

    fn make(&self, t: &Target) -> EndpointService {
        let svc_label = Arc::new(self.service.to_string());
        let inst_label = Arc::new(t.name.to_string());
        let transition = |to: &'static str| {
            self.metrics
                .breaker_transitions
                .get_or_create_owned(&TransitionLabels {
                    service: svc_label.clone(),
                    instance: inst_label.clone(),
                    to,
                })
        };
        let sink = MetricsSink {
            state: self
                .metrics
                .breaker_state
                .get_or_create_owned(&InstanceLabels {
                    service: svc_label.clone(),
                    instance: inst_label.clone(),
                }),
            to_open: transition("open"),
            to_half_open: transition("half_open"),
            to_closed: transition("closed"),
            ejections: EJECTION_REASONS.map(|reason| {
                self.metrics.ejections.get_or_create_owned(&EjectionLabels {
                    service: svc_label.clone(),
                    instance: inst_label.clone(),
                    reason,
                })
            }),
        };
        sink.state.set(0);
        let breaker = BreakerShared::with_stall_watch(
            self.service.clone(),
            t.name.clone(),
            self.breaker,
            self.cap.clone(),
            Box::new(sink),
            StallWatch {
                after: self.breaker.stall_after,
                latency: self.latency.clone(),
                prober: Arc::new(HealthProbe {
                    client: self.client.clone(),
                    uri: format!("{}{}", t.origin, hotel_common::health::LIVENESS_PATH)
                        .parse()
                        .ok(),
                }),
            },
        );
        let stats = EndpointStats::new(
            self.service.clone(),
            t.name.clone(),
            t.origin.clone(),
            breaker.clone(),
            &self.metrics,
        );
        self.view
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.name.clone(), stats.clone());
        let svc = TimeoutLayer::new(self.per_try).layer(self.client.clone());
        let svc = Observe::new(svc, stats, self.latency.clone());
        // The balancer's load is the instance's own statistics (see `Observe`'s `Load`).
        BreakerLayer::new(breaker).layer(svc)
    }

    fn removed(&self, name: &str) {
        self.view
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.metrics.forget_instance(
            &Arc::new(self.service.to_string()),
            &Arc::new(name.to_owned()),
        );
    }
}

/// Where a service's instances come from.
pub enum Source {
    /// A fixed set (config, tests).
    Fixed(Vec<Target>),
    /// The registry, followed by blocking queries.
    Registry(hotel_registry::client::RegistryClient),
    /// An instance set someone else publishes.
    Watch(watch::Receiver<Targets>),
}

/// Keeps a source publishing as long as the service lives.
enum SourceGuard {
    Fixed(#[allow(dead_code)] watch::Sender<Targets>),
    Registry(#[allow(dead_code)] hotel_registry::client::Watcher),
    None,
}

/// One service: its balancer (behind a buffer), breakers and statistics.
pub struct ServiceUpstream {
    name: Arc<str>,
    shared: Shared,
    latency: Arc<LatencyWindow>,
    view: Arc<ServiceView>,
    cap: Arc<EjectionCap>,
    targets: watch::Receiver<Targets>,
    _source: SourceGuard,
}

impl std::fmt::Debug for ServiceUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceUpstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServiceUpstream {
    /// Builds the shared part of the stack of service `name`: its balancer over the
    /// instances `source` gives, each behind a breaker of `policy.breaker` and a per-try
    /// timeout of `policy.request` (must run inside a tokio runtime: discovery and probes
    /// spawn tasks).
    pub fn new(
        name: &str,
        policy: &ServicePolicy,
        source: Source,
        client: HttpClient,
        metrics: Arc<UpstreamMetrics>,
    ) -> Arc<Self> {
        let service = name;
        let name: Arc<str> = service.into();
        let (targets, guard) = match source {
            Source::Fixed(t) => {
                let (tx, rx) = crate::discovery::fixed(t);
                (rx, SourceGuard::Fixed(tx))
            }
            Source::Registry(c) => {
                let (w, rx) = crate::discovery::from_registry(c, service);
                (rx, SourceGuard::Registry(w))
            }
            Source::Watch(rx) => (rx, SourceGuard::None),
        };
        let cap = EjectionCap::with_window(
            policy.breaker.max_ejection_percent,
            policy.breaker.failure_window,
        );
        let latency = Arc::new(LatencyWindow::default());
        let view = Arc::new(ServiceView::default());
        let make = MakeEndpointStack {
            service: name.clone(),
            client,
            breaker: policy.breaker,
            per_try: policy.request.per_try_timeout,
            cap: cap.clone(),
            metrics: metrics.clone(),
            latency: latency.clone(),
            view: view.clone(),
        };
        let gauge = metrics.instances.get_or_create_owned(&ServiceLabels {
            service: Arc::new(service.to_owned()),
        });
        let balancer = P2c::new(
            name.clone(),
            DiscoverTargets::new(targets.clone(), make),
            cap.clone(),
            gauge,
        );
        let shared = crate::balance::SharedBalancer::new(balancer);
        Arc::new(ServiceUpstream {
            name,
            shared,
            latency,
            view,
            cap,
            targets,
            _source: guard,
        })
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its instances with their statistics: every instance discovery knows now, with
    /// zero counters until it has had traffic.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        // Discovery changes reach the balancer (and so the view) when it is used; an idle
        // service must not hide its instances, nor keep showing ones that left.
        self.shared.refresh::<Request<ProxyBody>>();
        self.view.endpoints()
    }

    /// How many instances discovery knows now.
    pub fn known(&self) -> usize {
        self.targets.borrow().len()
    }

    /// How many instances are ejected now.
    pub fn ejected(&self) -> usize {
        self.cap.ejected()
    }

    /// A route's stack over this service.
    pub fn route(
        self: &Arc<Self>,
        label: &str,
        policy: Policy,
        metrics: Arc<UpstreamMetrics>,
    ) -> RouteUpstream {
        let shared = RouteShared::new(
            label,
            self.name.clone(),
            policy,
            metrics,
            self.latency.clone(),
        );
        // No deadline layer: the per-try timer of every attempt ends by the deadline
        // (see `timeout`), and a retry's backoff must end before it (see `retry`).
        let svc = tower::ServiceBuilder::new()
            .layer(tower::retry::RetryLayer::new(RetryPolicy::new(
                shared.clone(),
            )))
            .layer(HedgeLayer::new(shared.clone()))
            .service(self.shared.clone());
        RouteUpstream { shared, svc }
    }
}

/// One route's stack.
#[derive(Clone)]
pub struct RouteUpstream {
    /// Route state (policy, budget, metrics).
    pub(crate) shared: Arc<RouteShared>,
    svc: RouteService,
}

impl std::fmt::Debug for RouteUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteUpstream")
            .field("route", &self.shared.route)
            .finish_non_exhaustive()
    }
}

impl RouteUpstream {
    /// The route label (its prefix).
    pub fn route(&self) -> &Arc<String> {
        &self.shared.route
    }

    /// The service the route reaches.
    pub fn service(&self) -> &Arc<str> {
        &self.shared.service
    }

    /// The route's policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Sends a request (path and query only; the instance is chosen below) through the
    /// whole stack.
    pub fn send(
        &self,
        mut req: Request<ProxyBody>,
    ) -> impl std::future::Future<Output = Result<Response<AnswerBody>, BoxError>> + Send + 'static
    {
        use tower::retry::budget::Budget;
        let p = &self.shared.policy;
        self.shared.budget.deposit();
        let attempts = Arc::new(Attempts::default());
        let try_timeout = TryTimeout(p.per_try_timeout);
        let deadline = Deadline(tokio::time::Instant::now() + p.deadline);
        // What every retry and hedge this request may need is made from: it takes the
        // request's header fields (no copy; see `Replay`), and carries the attempts,
        // per-try timeout and deadline too, so it is the request's one extension (each
        // extension is a boxed map entry; see `retry::attempts_of`).
        let replay = (p.retries > 0 || p.hedge.is_some())
            .then(|| Replay::of(&mut req, &attempts, try_timeout, deadline))
            .flatten();
        let ext = req.extensions_mut();
        match replay {
            Some(r) => {
                ext.insert(r);
            }
            None => {
                ext.insert(attempts);
                ext.insert(try_timeout);
                ext.insert(deadline);
            }
        }
        self.svc.clone().oneshot(req)
    }
}
