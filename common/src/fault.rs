//! Fault injection (Envoy's fault filter, Toxiproxy's toxics) in every service and the
//! registry: a layer that, while a fault is set, delays answers (`latency` ± `jitter`),
//! answers an error status (`error_rate` of requests) or resets the connection without
//! an answer (`abort_rate`), and the control endpoint that sets and clears it.
//!
//! Off by default and cheap when off: [`FaultLayer`]'s service passes each request
//! straight to the inner one after one atomic load, with no allocation.
//!
//! The control endpoint [`FAULT_PATH`] (`GET` the fault, `PUT` a [`FaultSpec`],
//! `DELETE` it; its OpenAPI document [`FaultApi`] at [`FAULT_DOC_PATH`]) exists only when the process was given a fault token (`fault_token`,
//! which `hotel up` generates per run and hands to its children); it answers only
//! loopback peers that present `Authorization: Bearer <token>`. A fault set with `for`
//! expires on its own.
//!
//! The fault covers every route of the process, health checks included (an instance
//! that fails half its requests fails half its health probes too, and that is how a
//! balancer's probes see it recover), except the control endpoint and its document
//! (`/admin/*`), `/metrics` and `/events/status`. Each injected fault is recorded on the server span (`fault.injected =
//! true`, `fault.kind`), logged with the instance name and counted
//! (`faults_injected_total{kind}`).
//!
//! Resetting a connection needs the connection: [`crate::server::serve`] marks every
//! request with its connection's [`ConnAbort`]; the layer sets it, and the connection's
//! I/O then fails every read and write and closes with `SO_LINGER` 0, so the peer gets a
//! TCP reset and not a byte of an answer.

use crate::Problem;
use axum::{
    Router,
    extract::{ConnectInfo, State},
    response::{IntoResponse, Response},
    routing::get,
};
use http::{HeaderMap, StatusCode, header};
use prometheus_client::metrics::{counter::Counter, family::Family};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// The control endpoint's path.
pub const FAULT_PATH: &str = "/admin/fault";

/// Where the control endpoint's OpenAPI document is served (no token needed).
pub const FAULT_DOC_PATH: &str = "/admin/openapi.json";

/// The OpenAPI document of the fault control endpoint.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hotel fault control",
        description = "The fault switch of one instance (a service replica or the registry), \
            on its own listener, present only when the instance was given a fault token \
            (`fault_token`; `hotel up` sets one per run) and answering loopback clients \
            only. While a fault is set, every request but `/admin/*`, `/metrics` and \
            `/events/status` is delayed by `latency` ± `jitter`, then answered with \
            `status` (share `error_rate`) or has its connection reset without an answer \
            (share `abort_rate`); a fault set with `for` clears itself. `hotel fault` \
            reaches it through `hotel up`."
    ),
    paths(get_fault, put_fault, delete_fault),
    components(schemas(FaultSpec, FaultStatus, InjectedCounts)),
    modifiers(&BearerToken)
)]
pub struct FaultApi;

/// Declares the bearer token every operation needs.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "fault_token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("The instance's fault token"))
                        .build(),
                ),
            );
    }
}

/// Longest `latency` a fault may add.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);

/// Longest `for` a fault may be set for.
pub const MAX_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// What to inject, as `PUT /admin/fault` takes it (JSON, durations as `"300ms"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Share of requests answered with `status` instead (0 to 1).
    #[serde(default)]
    pub error_rate: f64,
    /// The status of an injected error (400 to 599; 503 when not given).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Added before every request is handled (at most 60s).
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = String, example = "300ms")]
    pub latency: Duration,
    /// The delay varies uniformly by up to this much either way (at most `latency`).
    #[serde(default, with = "humantime_serde")]
    #[schema(value_type = String, example = "50ms")]
    pub jitter: Duration,
    /// Share of requests whose connection is reset without an answer (0 to 1; with
    /// `error_rate`, at most 1 in total).
    #[serde(default)]
    pub abort_rate: f64,
    /// The fault clears itself after this long (at most 24h); unset: until cleared.
    #[serde(
        default,
        rename = "for",
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "30s")]
    pub duration: Option<Duration>,
}

fn default_status() -> u16 {
    503
}

impl Default for FaultSpec {
    fn default() -> Self {
        FaultSpec {
            error_rate: 0.0,
            status: default_status(),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            abort_rate: 0.0,
            duration: None,
        }
    }
}

impl FaultSpec {
    /// Checks the spec; the error is `(field, why)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let rate = |field: &'static str, r: f64| {
            if r.is_finite() && (0.0..=1.0).contains(&r) {
                Ok(())
            } else {
                Err((field, format!("must be between 0 and 1, not {r}")))
            }
        };
        rate("error_rate", self.error_rate)?;
        rate("abort_rate", self.abort_rate)?;
        if self.error_rate + self.abort_rate > 1.0 {
            return Err((
                "abort_rate",
                "error_rate and abort_rate together must not exceed 1".into(),
            ));
        }
        if !(400..=599).contains(&self.status) {
            return Err(("status", format!("must be 400 to 599, not {}", self.status)));
        }
        if self.latency > MAX_LATENCY {
            return Err(("latency", "must be at most 60s".into()));
        }
        if self.jitter > self.latency {
            return Err(("jitter", "must not exceed latency".into()));
        }
        if let Some(d) = self.duration {
            if d.is_zero() {
                return Err(("for", "must be above zero".into()));
            }
            if d > MAX_FOR {
                return Err(("for", "must be at most 24h".into()));
            }
        }
        if self.error_rate == 0.0 && self.abort_rate == 0.0 && self.latency.is_zero() {
            return Err((
                "error_rate",
                "nothing to inject: set error_rate, abort_rate or latency above zero".into(),
            ));
        }
        Ok(())
    }

    /// A short human description (`error 50% (503), latency 300ms ± 50ms`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.error_rate > 0.0 {
            parts.push(format!(
                "error {}% ({})",
                percent(self.error_rate),
                self.status
            ));
        }
        if self.abort_rate > 0.0 {
            parts.push(format!("abort {}%", percent(self.abort_rate)));
        }
        if !self.latency.is_zero() {
            let mut l = format!("latency {}", humantime::format_duration(self.latency));
            if !self.jitter.is_zero() {
                l.push_str(&format!(" ± {}", humantime::format_duration(self.jitter)));
            }
            parts.push(l);
        }
        parts.join(", ")
    }
}

fn percent(r: f64) -> String {
    let p = (r * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// What `GET`/`PUT`/`DELETE /admin/fault` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaultStatus {
    /// The instance answering.
    pub instance: String,
    /// The fault in force, if any.
    pub fault: Option<FaultSpec>,
    /// Milliseconds until it clears itself, when it was set with `for`.
    pub expires_in_ms: Option<u64>,
    /// Faults injected since the process started, by kind.
    pub injected: InjectedCounts,
}

/// Counts of injected faults, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InjectedCounts {
    /// Requests answered with the fault's status.
    pub error: u64,
    /// Connections reset without an answer.
    pub abort: u64,
    /// Requests delayed.
    pub latency: u64,
}

struct Active {
    spec: FaultSpec,
    expires: Option<Instant>,
}

/// The injected-fault counters (`faults_injected_total{kind}`), one handle per kind.
#[derive(Debug, Clone)]
pub struct FaultCounters {
    /// The family, by kind.
    pub family: Family<crate::metrics::KindLabels, Counter>,
    /// Errors answered.
    pub error: Counter,
    /// Connections reset.
    pub abort: Counter,
    /// Requests delayed.
    pub latency: Counter,
}

impl Default for FaultCounters {
    fn default() -> Self {
        let family = Family::<crate::metrics::KindLabels, Counter>::default();
        let of = |kind| {
            family
                .get_or_create(&crate::metrics::KindLabels { kind })
                .clone()
        };
        FaultCounters {
            error: of("error"),
            abort: of("abort"),
            latency: of("latency"),
            family,
        }
    }
}

struct Inner {
    /// Whether a fault may be set: the one load a request pays when none is.
    armed: AtomicBool,
    active: RwLock<Option<Arc<Active>>>,
    instance: String,
    /// SHA-256 of the control token; `None`: no control endpoint.
    token: Option<[u8; 32]>,
    counters: FaultCounters,
}

/// The fault switch of one process (cheap to clone).
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("instance", &self.inner.instance)
            .field("control", &self.inner.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Faults {
    /// The switch of `instance`; the control endpoint exists only with a non-empty
    /// `token`.
    pub fn new(instance: &str, token: Option<&str>) -> Faults {
        Faults {
            inner: Arc::new(Inner {
                armed: AtomicBool::new(false),
                active: RwLock::new(None),
                instance: instance.to_owned(),
                token: token
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Sha256::digest(t.as_bytes()).into()),
                counters: FaultCounters::default(),
            }),
        }
    }

    /// A switch with no control endpoint: never a fault (tests, fakes).
    pub fn disabled() -> Faults {
        Faults::new("", None)
    }

    /// The counters, for a metrics registry.
    pub fn counters(&self) -> &FaultCounters {
        &self.inner.counters
    }

    /// Sets `spec` (validated by the caller), replacing any fault in force.
    pub fn set(&self, spec: FaultSpec) {
        let expires = spec.duration.map(|d| Instant::now() + d);
        tracing::warn!(
            instance = %self.inner.instance,
            fault = %spec.describe(),
            for_ms = spec.duration.map(|d| d.as_millis() as u64),
            "fault set"
        );
        *self.write() = Some(Arc::new(Active { spec, expires }));
        self.inner.armed.store(true, Ordering::Release);
    }

    /// Clears the fault in force; whether there was one.
    pub fn clear(&self) -> bool {
        let had = self.write().take().is_some();
        self.inner.armed.store(false, Ordering::Release);
        if had {
            tracing::warn!(instance = %self.inner.instance, "fault cleared");
        }
        had
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Active>>> {
        self.inner.active.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The fault in force now (an expired one is cleared here).
    fn current(&self) -> Option<Arc<Active>> {
        if !self.inner.armed.load(Ordering::Acquire) {
            return None;
        }
        let active = self
            .inner
            .active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        if active.expires.is_some_and(|t| Instant::now() >= t) {
            let mut g = self.write();
            if g.as_ref().is_some_and(|a| Arc::ptr_eq(a, &active)) {
                *g = None;
                self.inner.armed.store(false, Ordering::Release);
                tracing::warn!(instance = %self.inner.instance, "fault expired");
            }
            return None;
        }
        Some(active)
    }

    /// What the control endpoint answers.
    pub fn status(&self) -> FaultStatus {
        let active = self.current();
        let c = &self.inner.counters;
        FaultStatus {
            instance: self.inner.instance.clone(),
            fault: active.as_ref().map(|a| a.spec.clone()),
            expires_in_ms: active
                .as_ref()
                .and_then(|a| a.expires)
                .map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64),
            injected: InjectedCounts {
                error: c.error.get(),
                abort: c.abort.get(),
                latency: c.latency.get(),
            },
        }
    }

    /// The control endpoint (`GET`, `PUT`, `DELETE` [`FAULT_PATH`]); empty without a
    /// token.
    pub fn router(&self) -> Router {
        if self.inner.token.is_none() {
            return Router::new();
        }
        let doc = Arc::new(crate::openapi::to_json(
            &<FaultApi as utoipa::OpenApi>::openapi(),
        ));
        Router::new()
            .route(
                FAULT_PATH,
                get(get_fault).put(put_fault).delete(delete_fault),
            )
            .route(
                FAULT_DOC_PATH,
                get(move || {
                    let doc = doc.clone();
                    async move { axum::Json(doc.as_ref().clone()) }
                }),
            )
            .with_state(self.clone())
    }

    /// Loopback peer with the right bearer token, or the problem to answer.
    fn admit(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<(), Box<Problem>> {
        // A request built in-process (`oneshot`) has no peer: it is this process.
        if peer.is_some_and(|p| !p.ip().is_loopback()) {
            return Err(Box::new(Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the fault control endpoint answers loopback clients only",
            )));
        }
        let Some(expected) = self.inner.token else {
            return Err(Box::new(Problem::new(
                StatusCode::NOT_FOUND,
                "no-route",
                "no such route",
            )));
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let ok = presented.is_some_and(|t| {
            let digest: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            bool::from(digest.ct_eq(&expected))
        });
        if ok {
            Ok(())
        } else {
            Err(Box::new(Problem::unauthorized(
                "the fault control endpoint needs `Authorization: Bearer <fault token>`",
            )))
        }
    }
}

type Peer = Option<axum::Extension<ConnectInfo<SocketAddr>>>;

/// `GET /admin/fault`: the fault in force and the counts injected so far.
#[utoipa::path(
    get, path = "/admin/fault", tag = "fault",
    security(("fault_token" = [])),
    responses(
        (status = 200, description = "The fault in force (`fault` is null when none), \
            milliseconds until it clears itself, and the faults injected since start", body = FaultStatus),
        (status = 401, description = "No or wrong bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a loopback client", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get_fault(
    State(f): State<Faults>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<axum::Json<FaultStatus>, Problem> {
    f.admit(peer.map(|c| c.0.0), &headers).map_err(|p| *p)?;
    Ok(axum::Json(f.status()))
}

/// `PUT /admin/fault`: sets the fault (replacing any other).
#[utoipa::path(
    put, path = "/admin/fault", tag = "fault",
    security(("fault_token" = [])),
    request_body(content = FaultSpec, description = "What to inject; at least one of \
        `error_rate`, `abort_rate`, `latency` above zero. Durations as `\"300ms\"`."),
    responses(
        (status = 200, description = "Set (it replaces any fault in force); the new state", body = FaultStatus),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or wrong bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a loopback client", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field out of range or unknown, named in `errors`", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn put_fault(
    State(f): State<Faults>,
    peer: Peer,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<FaultStatus>, Problem> {
    f.admit(peer.map(|c| c.0.0), &headers).map_err(|p| *p)?;
    let spec: FaultSpec = crate::extract::parse_json(&body)?;
    spec.validate()
        .map_err(|(field, why)| Problem::invalid_field(field, why))?;
    f.set(spec);
    Ok(axum::Json(f.status()))
}

/// `DELETE /admin/fault`: clears the fault (no fault is not an error).
#[utoipa::path(
    delete, path = "/admin/fault", tag = "fault",
    security(("fault_token" = [])),
    responses(
        (status = 200, description = "Cleared (also when none was set); the new state", body = FaultStatus),
        (status = 401, description = "No or wrong bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a loopback client", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_fault(
    State(f): State<Faults>,
    peer: Peer,
    headers: HeaderMap,
) -> Result<axum::Json<FaultStatus>, Problem> {
    f.admit(peer.map(|c| c.0.0), &headers).map_err(|p| *p)?;
    f.clear();
    Ok(axum::Json(f.status()))
}

/// The connection a request came on, as far as resetting it goes: set by
/// [`crate::server::serve`] on every request, raised by the fault layer to reset it.
#[derive(Debug, Clone, Default)]
pub struct ConnAbort(pub Arc<AtomicBool>);

impl ConnAbort {
    /// Whether the connection is to be reset.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Puts [`FaultService`] around a router's routes.
#[derive(Debug, Clone)]
pub struct FaultLayer {
    faults: Faults,
}

impl FaultLayer {
    /// The layer of the switch `faults`.
    pub fn new(faults: Faults) -> Self {
        FaultLayer { faults }
    }
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            faults: self.faults.clone(),
        }
    }
}

/// Injects the fault in force, if any, into the requests it passes on.
#[derive(Debug, Clone)]
pub struct FaultService<S> {
    inner: S,
    faults: Faults,
}

/// What to do to one request.
#[derive(Debug, Clone, Copy)]
struct Plan {
    delay: Duration,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    Error(StatusCode),
    Abort,
}

impl Plan {
    fn draw(spec: &FaultSpec) -> Plan {
        let delay = if spec.jitter.is_zero() {
            spec.latency
        } else {
            let j = spec.jitter.as_secs_f64();
            let d = spec.latency.as_secs_f64() + rand::random_range(-j..=j);
            Duration::from_secs_f64(d.max(0.0))
        };
        let r: f64 = rand::random();
        let outcome = if r < spec.abort_rate {
            Outcome::Abort
        } else if r < spec.abort_rate + spec.error_rate {
            Outcome::Error(
                StatusCode::from_u16(spec.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            )
        } else {
            Outcome::Pass
        };
        Plan { delay, outcome }
    }

    /// `fault.kind`: what was injected, such as `latency+error`.
    fn kind(&self) -> Option<&'static str> {
        match (self.delay.is_zero(), self.outcome) {
            (true, Outcome::Pass) => None,
            (false, Outcome::Pass) => Some("latency"),
            (true, Outcome::Error(_)) => Some("error"),
            (false, Outcome::Error(_)) => Some("latency+error"),
            (true, Outcome::Abort) => Some("abort"),
            (false, Outcome::Abort) => Some("latency+abort"),
        }
    }
}

/// Paths a fault never touches: its own switch and document (`/admin/*`), and what
/// shows the instance's state (`/metrics`, `/events/status`), so the fault can be
/// watched and undone.
fn exempt(path: &str) -> bool {
    path.starts_with("/admin/") || matches!(path, "/metrics" | "/events/status")
}

impl<S> tower::Service<axum::extract::Request> for FaultService<S>
where
    S: tower::Service<axum::extract::Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use futures::future::Either;
        let Some(active) = self.faults.current() else {
            return Either::Left(self.inner.call(req));
        };
        if exempt(req.uri().path()) {
            return Either::Left(self.inner.call(req));
        }
        let plan = Plan::draw(&active.spec);
        let Some(kind) = plan.kind() else {
            return Either::Left(self.inner.call(req));
        };
        // The service readied for this call is the one to use; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let faults = self.faults.clone();
        Either::Right(Box::pin(async move {
            let span = tracing::Span::current();
            span.record("fault.injected", true);
            span.record("fault.kind", kind);
            let c = &faults.inner.counters;
            tracing::info!(
                instance = %faults.inner.instance,
                fault.kind = kind,
                delay_ms = plan.delay.as_millis() as u64,
                path = %req.uri().path(),
                "fault injected"
            );
            if !plan.delay.is_zero() {
                c.latency.inc();
                tokio::time::sleep(plan.delay).await;
            }
            match plan.outcome {
                Outcome::Pass => inner.call(req).await,
                Outcome::Error(status) => {
                    c.error.inc();
                    Ok(Problem::new(
                        status,
                        "fault-injected",
                        format!("fault injected by `hotel fault {}`", faults.inner.instance),
                    )
                    .into_response())
                }
                Outcome::Abort => {
                    c.abort.inc();
                    match req.extensions().get::<ConnAbort>() {
                        Some(conn) => {
                            conn.0.store(true, Ordering::Release);
                            // Never written: the connection fails its next write.
                            Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response())
                        }
                        // In-process (no connection to reset): the nearest thing.
                        None => Ok(Problem::new(
                            StatusCode::BAD_GATEWAY,
                            "fault-injected",
                            "connection reset injected (no connection to reset)",
                        )
                        .into_response()),
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked_naming_the_field() {
        let ok = FaultSpec {
            error_rate: 0.5,
            ..FaultSpec::default()
        };
        assert!(ok.validate().is_ok());
        let field = |s: FaultSpec| s.validate().unwrap_err().0;
        assert_eq!(field(FaultSpec::default()), "error_rate");
        assert_eq!(
            field(FaultSpec {
                error_rate: 1.5,
                ..FaultSpec::default()
            }),
            "error_rate"
        );
        assert_eq!(
            field(FaultSpec {
                error_rate: 0.6,
                abort_rate: 0.6,
                ..FaultSpec::default()
            }),
            "abort_rate"
        );
        assert_eq!(
            field(FaultSpec {
                error_rate: 0.1,
                status: 200,
                ..FaultSpec::default()
            }),
            "status"
        );
        assert_eq!(
            field(FaultSpec {
                latency: Duration::from_millis(10),
                jitter: Duration::from_millis(20),
                ..FaultSpec::default()
            }),
            "jitter"
        );
        assert_eq!(
            field(FaultSpec {
                latency: Duration::from_millis(10),
                duration: Some(Duration::ZERO),
                ..FaultSpec::default()
            }),
            "for"
        );
    }

    #[test]
    fn the_wire_form_uses_human_durations_and_for() {
        let s: FaultSpec =
            serde_json::from_str(r#"{"latency":"300ms","jitter":"50ms","for":"30s"}"#).unwrap();
        assert_eq!(s.latency, Duration::from_millis(300));
        assert_eq!(s.duration, Some(Duration::from_secs(30)));
        assert_eq!(s.status, 503);
        assert_eq!(s.describe(), "latency 300ms ± 50ms");
        assert!(serde_json::from_str::<FaultSpec>(r#"{"latncy":"1s"}"#).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_set_for_a_while_expires_on_its_own() {
        let f = Faults::new("room-1", Some("t"));
        f.set(FaultSpec {
            error_rate: 1.0,
            duration: Some(Duration::from_secs(5)),
            ..FaultSpec::default()
        });
        assert!(f.status().fault.is_some());
        assert_eq!(f.status().expires_in_ms, Some(5000));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(f.status().fault.is_none());
        assert!(f.current().is_none());
    }
}
