//! [`UpstreamClient`]: the stack of [`crate::stack`] as a client of one service, for
//! service-to-service calls (booking calling customer and room), with no second hop
//! through the gateway.

use crate::{
    body::ProxyBody,
    discovery::Target,
    endpoint::EndpointView,
    error::{BoxError, DeadlineExceeded, classify},
    metrics::UpstreamMetrics,
    policy::{InvalidUpstream, Origin, ServicePolicy, bad},
    pool::{ClientOptions, http_client},
    stack::{RouteUpstream, ServiceUpstream, Source},
};
use bytes::Bytes;
use http::{Request, Response};
use std::sync::Arc;

/// A resilient client of one service for service-to-service calls: discovery, p2c,
/// breakers, budgeted retries, hedging and deadlines, exactly as in the gateway.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use hotel_upstream::{Discovery, ServicePolicy, UpstreamClient};
/// let rooms = UpstreamClient::new(
///     "room",
///     Discovery::Registry { url: "http://127.0.0.1:8761".into(), token: Some("t".into()) },
///     &ServicePolicy::default(),
/// )?;
/// let res = rooms.send(http::Request::get("/rooms/42").body(bytes::Bytes::new())?).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    service: Arc<ServiceUpstream>,
    route: RouteUpstream,
}

/// Where an [`UpstreamClient`] finds its instances.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// The registry at `url`, with its token.
    Registry {
        /// Base URL of the registry.
        url: String,
        /// Bearer token, when the registry needs one.
        token: Option<String>,
    },
    /// Fixed base URLs (`http://127.0.0.1:9001`).
    Static(Vec<String>),
}

impl UpstreamClient {
    /// A client of `service` with a validated `policy` (`ServicePolicy::default()` is the
    /// built-in one: deadline 10 s, per-try 2 s, 2 retries, 20 % budget, hedging at p95,
    /// breaker after 5 failures). Fails, naming the key, on a bad service name, registry
    /// URL or instance URL. Must be called inside a tokio runtime.
    pub fn new(
        service: &str,
        discovery: Discovery,
        policy: &ServicePolicy,
    ) -> Result<UpstreamClient, InvalidUpstream> {
        Self::with_metrics(service, discovery, policy, UpstreamMetrics::unregistered())
    }

    /// [`UpstreamClient::new`] counting into `metrics` (which the caller registers, so
    /// its `/metrics` shows attempts, breaker states and retries per instance).
    pub fn with_metrics(
        service: &str,
        discovery: Discovery,
        policy: &ServicePolicy,
        metrics: Arc<UpstreamMetrics>,
    ) -> Result<UpstreamClient, InvalidUpstream> {
        hotel_registry::model::check_name(service).map_err(|e| bad("service", e))?;
        let source = match discovery {
            Discovery::Static(urls) => {
                let mut targets = Vec::with_capacity(urls.len());
                for (n, url) in urls.iter().enumerate() {
                    let origin =
                        Origin::parse(url).map_err(|e| bad(format!("instances[{n}]"), e))?;
                    targets.push(Target {
                        name: format!("{service}-static-{}", n + 1).into(),
                        origin,
                    });
                }
                Source::Fixed(targets)
            }
            Discovery::Registry { url, token } => Source::Registry(
                hotel_registry::client::RegistryClient::new(&url, token)
                    .map_err(|e| bad("registry.url", e))?,
            ),
        };
        let upstream = ServiceUpstream::new(
            service,
            policy,
            source,
            http_client(ClientOptions::default()),
            metrics.clone(),
        );
        let route = upstream.route(service, policy.request.clone(), metrics);
        Ok(UpstreamClient {
            service: upstream,
            route,
        })
    }

    /// Sends `req` (a path such as `/rooms/42`, no scheme or host) to one instance,
    /// retrying and hedging as the policy allows, and reads the whole answer. Errors are
    /// the problems the gateway would answer: 502, 503 (with Retry-After) or 504.
    pub async fn send(
        &self,
        req: Request<Bytes>,
    ) -> Result<Response<Bytes>, hotel_common::Problem> {
        use http_body_util::BodyExt;
        let (parts, body) = req.into_parts();
        let body = if body.is_empty() {
            ProxyBody::empty()
        } else {
            ProxyBody::Buffered(Some(body))
        };
        let req = Request::from_parts(parts, body);
        let deadline = tokio::time::Instant::now() + self.route.policy().deadline;
        match self.route.send(req).await {
            Ok(res) => {
                let (parts, body) = res.into_parts();
                match tokio::time::timeout_at(deadline, body.collect()).await {
                    Ok(Ok(b)) => Ok(Response::from_parts(parts, b.to_bytes())),
                    Ok(Err(e)) => Err(classify(&BoxError::from(e), self.service.name())),
                    Err(_) => Err(classify(
                        &BoxError::from(DeadlineExceeded),
                        self.service.name(),
                    )),
                }
            }
            Err(e) => Err(classify(&e, self.service.name())),
        }
    }

    /// The overall deadline of one call (all attempts).
    pub fn deadline(&self) -> std::time::Duration {
        self.route.policy().deadline
    }

    /// The instances with their breaker state and statistics.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.service.endpoints()
    }
}
