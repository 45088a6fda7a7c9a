//! The protections layer of the edge: what a request must get past before it is routed.
//!
//! In order: message framing (smuggling-shaped requests are refused with 400 and the
//! connection closed), body size by `Content-Length` (413), header hygiene (hop-by-hop,
//! forwarding headers, credentials marked sensitive), API key (401), the client's rate
//! limit (429), the global and per-service in-flight limits (503). Every refusal is
//! counted in `gateway_edge_rejections_total{reason,client}` and logged as an event of the
//! request's span with its reason and client, so an operator sees who is limited and why.
//!
//! [`Protections`] is built once from the configuration ([`Protections::from_settings`]);
//! the connection-level limits (connection count, first byte, header timeout, head size)
//! are applied by the accept loop through [`Protections::configure`] and
//! [`Protections::admit_connection`].

use crate::{
    auth::{self, AuthError, AuthSettings, Keys},
    body::{GatewayBody, full},
    hygiene::{HeaderSettings, Hygiene},
    metrics::Metrics,
    overload::{InFlight, InFlightGuard, LimitSettings},
    ratelimit::{Bucket, Decision, RateLimitSettings, RateLimiter},
    settings::Route,
};
use futures::future::BoxFuture;
use hotel_common::Problem;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use std::{
    cell::RefCell,
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};
use tower::Service;

/// What every request of one client connection shares, built once per connection by
/// [`Protections::connection`] and put on each request by the accept loop.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's socket address.
    pub peer: SocketAddr,
    /// What the framing inspector found on the connection.
    pub flag: crate::framing::Flag,
    /// The forwarding headers of an untrusted peer, made once instead of per request.
    forwarded: Option<crate::hygiene::PeerHeaders>,
}

/// A request's [`ConnInfo`] (a request extension).
#[derive(Debug, Clone)]
pub struct Conn(pub Arc<ConnInfo>);

/// Labels of a refused request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// Why: `missing_key`, `invalid_key`, `revoked_key`, `rate_limited`, `overloaded`,
    /// `service_overloaded`, `body_too_large`, `bad_framing`.
    pub reason: &'static str,
    /// The client name (`anonymous`, `public`, `unauthenticated` before a key was read).
    pub client: Arc<String>,
}

/// Metrics of the protections (registered by [`Metrics::new`]).
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    /// Requests refused, by reason and client.
    pub rejections: Family<RejectionLabels, Counter>,
    /// Requests inside the global in-flight limit now.
    pub in_flight: Gauge,
    /// Client connections open now.
    pub connections: Gauge,
    /// Connections closed by the edge, by reason (`limit`, `slow`).
    pub connections_refused: Family<ConnLabels, Counter>,
}

/// Labels of a refused connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// `limit` (over `max_connections`) or `slow` (no first byte in time).
    pub reason: &'static str,
}

impl EdgeMetrics {
    /// Registers every family in `r`.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "edge_rejections",
            "Requests refused at the edge, by reason and client",
            self.rejections.clone(),
        );
        r.register(
            "edge_in_flight",
            "Requests inside the global in-flight limit",
            self.in_flight.clone(),
        );
        r.register(
            "edge_connections",
            "Client connections open",
            self.connections.clone(),
        );
        r.register(
            "edge_connections_refused",
            "Client connections closed by the edge, by reason",
            self.connections_refused.clone(),
        );
    }
}

/// A client as the edge knows it: its name and the header value sent to services.
#[derive(Debug, Clone)]
struct Client {
    name: Arc<String>,
    header: HeaderValue,
}

impl Client {
    fn new(name: Arc<String>) -> Client {
        let header = HeaderValue::from_str(&name).unwrap_or(HeaderValue::from_static("invalid"));
        Client { name, header }
    }
}

/// The key set and what hangs off it: the clients and their rate-limit buckets.
/// Replaced as a whole when the keys file is reloaded.
#[derive(Debug)]
struct KeyState {
    keys: Keys,
    /// By client index of `keys`.
    clients: Vec<Client>,
    /// By client index; `None` is unlimited.
    buckets: Vec<Option<Arc<Bucket>>>,
}

impl KeyState {
    /// The state for `keys`; clients already in `before` keep their buckets (a reload
    /// must not refill a limited client's bucket).
    fn new(keys: Keys, limiter: &RateLimiter, before: Option<&KeyState>) -> KeyState {
        let clients: Vec<Client> = keys.clients().iter().cloned().map(Client::new).collect();
        let buckets = clients
            .iter()
            .map(|c| {
                let kept = before.and_then(|b| {
                    b.clients
                        .iter()
                        .position(|o| o.name == c.name)
                        .map(|i| b.buckets[i].clone())
                });
                kept.unwrap_or_else(|| limiter.bucket_for(&c.name))
            })
            .collect();
        KeyState {
            keys,
            clients,
            buckets,
        }
    }
}

/// The current [`KeyState`], read without locks on the request path: each worker thread
/// caches the `Arc` and reloads it only when the generation moved.
#[derive(Debug)]
struct KeyCell {
    id: u64,
    generation: AtomicU64,
    slot: RwLock<Arc<KeyState>>,
}

static CELL_IDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// (cell id, generation, state) per cell this thread has read.
    static KEY_CACHE: RefCell<Vec<(u64, u64, Arc<KeyState>)>> = const { RefCell::new(Vec::new()) };
}

impl KeyCell {
    fn new(state: KeyState) -> KeyCell {
        KeyCell {
            id: CELL_IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            slot: RwLock::new(Arc::new(state)),
        }
    }

    fn current(&self) -> Arc<KeyState> {
        match self.slot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, state: KeyState) {
        let state = Arc::new(state);
        match self.slot.write() {
            Ok(mut g) => *g = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Runs `f` on the current state (this thread's cached copy when still current).
    fn with<R>(&self, f: impl FnOnce(&KeyState) -> R) -> R {
        let generation = self.generation.load(Ordering::Acquire);
        KEY_CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            let i = match cache.iter().position(|e| e.0 == self.id) {
                Some(i) => {
                    if cache[i].1 != generation {
                        cache[i] = (self.id, generation, self.current());
                    }
                    i
                }
                None => {
                    cache.push((self.id, generation, self.current()));
                    cache.len() - 1
                }
            };
            f(&cache[i].2)
        })
    }
}

/// Everything the protections need, validated.
#[derive(Debug)]
pub struct Protections {
    state: KeyCell,
    /// `[auth]` as loaded, to read the keys file again on reload.
    auth: AuthSettings,
    loopback: bool,
    anonymous: Client,
    public_client: Client,
    unauthenticated: Arc<String>,
    public: Vec<String>,
    client_header: HeaderName,
    limiter: RateLimiter,
    hygiene: Hygiene,
    limits: LimitSettings,
    global: Arc<InFlight>,
    /// Route prefixes (longest first) and the index of their service in `services`.
    routes: Vec<(String, usize)>,
    services: Vec<Arc<InFlight>>,
    connections: Arc<InFlight>,
}

/// Where the settings of the protections live in [`crate::Settings`].
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings<'a> {
    /// `[auth]`.
    pub auth: &'a AuthSettings,
    /// `[rate_limit]`.
    pub rate_limit: &'a RateLimitSettings,
    /// `[limits]`.
    pub limits: &'a LimitSettings,
    /// `[headers]`.
    pub headers: &'a HeaderSettings,
}

impl Protections {
    /// Validates the settings against the public listener and the routes. Errors name
    /// the key. Refuses a gateway without any API key on a non-loopback listener unless
    /// `auth.allow_anonymous` says so.
    pub fn from_settings(
        s: EdgeSettings<'_>,
        listen: SocketAddr,
        routes: &[Route],
    ) -> Result<Protections, String> {
        let loopback = listen.ip().is_loopback();
        let keys = Keys::from_settings(s.auth, loopback)?;
        if keys.is_empty() && !loopback && !s.auth.allow_anonymous {
            return Err(format!(
                "auth.keys: at least one API key is required when listen ({listen}) is not a \
                 loopback address (or set auth.allow_anonymous = true to serve without keys)"
            ));
        }
        for (i, p) in s.auth.public.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(format!("auth.public[{i}]: {p:?} must start with '/'"));
            }
        }
        let client_header = HeaderName::try_from(s.auth.client_header.to_ascii_lowercase())
            .map_err(|_| {
                format!(
                    "auth.client_header: {:?} is not a header name",
                    s.auth.client_header
                )
            })?;
        s.limits.validate()?;
        let limiter = RateLimiter::new(s.rate_limit, keys.clients())?;
        let hygiene = Hygiene::from_settings(s.headers)?;
        let mut names: Vec<&str> = Vec::new();
        let routes = routes
            .iter()
            .map(|r| {
                let idx = match names.iter().position(|n| *n == r.service) {
                    Some(i) => i,
                    None => {
                        names.push(&r.service);
                        names.len() - 1
                    }
                };
                (r.prefix.clone(), idx)
            })
            .collect();
        let services = names
            .iter()
            .map(|_| InFlight::new(s.limits.max_in_flight_per_service))
            .collect();
        Ok(Protections {
            state: KeyCell::new(KeyState::new(keys, &limiter, None)),
            auth: s.auth.clone(),
            loopback,
            anonymous: Client::new(Arc::new(auth::ANONYMOUS.to_owned())),
            public_client: Client::new(Arc::new(auth::PUBLIC.to_owned())),
            unauthenticated: Arc::new("unauthenticated".to_owned()),
            public: s.auth.public.clone(),
            client_header,
            limiter,
            hygiene,
            global: InFlight::new(s.limits.max_in_flight),
            connections: InFlight::new(s.limits.max_connections),
            limits: s.limits.clone(),
            routes,
            services,
        })
    }

    /// Protections from the default settings on loopback, without routes: what a
    /// [`crate::edge::Gateway`] has until it is given its configured ones.
    pub fn open() -> Protections {
        let d = (
            AuthSettings::default(),
            RateLimitSettings::default(),
            LimitSettings::default(),
            HeaderSettings::default(),
        );
        Protections::from_settings(
            EdgeSettings {
                auth: &d.0,
                rate_limit: &d.1,
                limits: &d.2,
                headers: &d.3,
            },
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            &[],
        )
        .unwrap_or_else(|e| unreachable!("the default protections are valid: {e}"))
    }

    /// Whether API keys are required (some key is configured).
    pub fn auth_required(&self) -> bool {
        self.state.with(|st| !st.keys.is_empty())
    }

    /// Reads the keys again (`[[auth.keys]]` as loaded at startup plus the keys file as
    /// it is now) and swaps them in; clients keep their rate-limit buckets. Returns the
    /// number of keys. A key set that fails validation, or that would leave no key when
    /// there were some (turning authentication off), is refused and the old one stays.
    pub fn reload_keys(&self) -> Result<usize, String> {
        let keys = Keys::from_settings(&self.auth, self.loopback)?;
        let before = self.state.current();
        if keys.is_empty() && !before.keys.is_empty() {
            return Err(
                "auth.keys_file: the reloaded key set is empty; refusing to turn \
                        authentication off (restart without keys to do that)"
                    .to_owned(),
            );
        }
        let n = keys.len();
        self.state
            .replace(KeyState::new(keys, &self.limiter, Some(&before)));
        Ok(n)
    }

    /// Reloads the keys on every SIGHUP (like `nginx -s reload` for the key file), until
    /// the returned task is aborted.
    pub fn reload_on_sighup(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let p = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("SIGHUP handler unavailable: API keys reload only on restart");
                return;
            };
            while hup.recv().await.is_some() {
                match p.reload_keys() {
                    Ok(n) => tracing::info!(keys = n, "API keys reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "API keys not reloaded; the old ones stay")
                    }
                }
            }
        })
    }

    /// The connection-level limits: timer, header timeout, head size, HTTP/2 streams.
    pub fn configure<E>(&self, b: &mut hyper_util::server::conn::auto::Builder<E>) {
        b.http1()
            .timer(hyper_util::rt::TokioTimer::new())
            // hyper's timer runs from the moment it waits for a head, idle time included:
            // it is the keep-alive bound. The head itself is timed from its first byte by
            // the framing inspector (`header_timeout`).
            .header_read_timeout(self.limits.idle_timeout.max(self.limits.header_timeout))
            .max_buf_size(self.limits.max_header_bytes)
            // A client may shut down its write side once its request is out (`nc -q`,
            // `shutdown(SHUT_WR)`) and still wait for the answer (RFC 9112 9.6). Without
            // this, hyper reads that EOF while the response is pending, calls the message
            // incomplete and drops the connection unanswered.
            .half_close(true);
        b.http2()
            .timer(hyper_util::rt::TokioTimer::new())
            .max_concurrent_streams(self.limits.max_h2_streams)
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX));
    }

    /// A slot for a new connection, or `None` past `max_connections` (counted).
    pub fn admit_connection(self: &Arc<Self>, m: &Metrics) -> Option<ConnectionSlot> {
        match self.connections.try_acquire() {
            Some(g) => {
                m.edge.connections.inc();
                Some(ConnectionSlot {
                    _guard: g,
                    gauge: m.edge.connections.clone(),
                })
            }
            None => {
                m.edge
                    .connections_refused
                    .get_or_create(&ConnLabels { reason: "limit" })
                    .inc();
                None
            }
        }
    }

    /// Wraps a client connection from `peer` so its request framing is followed (see
    /// [`crate::framing`]), and returns what its requests share.
    pub fn connection(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> (crate::framing::Inspected<tokio::net::TcpStream>, Conn) {
        let flag = crate::framing::Flag::default();
        let io = crate::framing::Inspected::new(
            stream,
            crate::framing::Inspector::new(
                flag.clone(),
                self.limits.max_header_bytes,
                self.limits.max_body_bytes,
            ),
            crate::framing::Deadlines {
                head: self.limits.header_timeout,
                body: self.limits.body_timeout,
            },
        );
        let info = ConnInfo {
            peer,
            flag,
            forwarded: self.hygiene.peer_headers(peer),
        };
        (io, Conn(Arc::new(info)))
    }

    /// Waits for a new connection's first byte for up to the header timeout; `false`
    /// (counted) when the client stayed silent.
    pub async fn first_byte(&self, stream: &tokio::net::TcpStream, m: &Metrics) -> bool {
        let ok = crate::overload::first_byte(stream, self.limits.header_timeout).await;
        if !ok {
            m.edge
                .connections_refused
                .get_or_create(&ConnLabels { reason: "slow" })
                .inc();
        }
        ok
    }

    fn service_of(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .find(|(p, _)| {
                path == p || (path.starts_with(p.as_str()) && path.as_bytes()[p.len()] == b'/')
            })
            .map(|(_, s)| *s)
    }
}

/// One open client connection; frees its slot when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    _guard: InFlightGuard,
    gauge: Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Builds [`Shield`] services.
#[derive(Debug, Clone)]
pub struct ShieldLayer {
    p: Arc<Protections>,
    metrics: Arc<Metrics>,
}

impl ShieldLayer {
    /// The layer over `p`, counting into `metrics`.
    pub fn new(p: Arc<Protections>, metrics: Arc<Metrics>) -> Self {
        ShieldLayer { p, metrics }
    }
}

impl<S> tower::Layer<S> for ShieldLayer {
    type Service = Shield<S>;
    fn layer(&self, inner: S) -> Shield<S> {
        Shield {
            inner,
            p: self.p.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The protections in front of the router.
#[derive(Debug, Clone)]
pub struct Shield<S> {
    inner: S,
    p: Arc<Protections>,
    metrics: Arc<Metrics>,
}

/// What a request is framed like, as far as smuggling goes.
fn framing_problem(h: &http::HeaderMap) -> Option<&'static str> {
    let te = h.get_all(header::TRANSFER_ENCODING).iter().count();
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    if te > 0 && cl > 0 {
        return Some("both Content-Length and Transfer-Encoding");
    }
    if cl > 1 {
        return Some("more than one Content-Length");
    }
    if te > 1 {
        return Some("more than one Transfer-Encoding");
    }
    if let Some(v) = h.get(header::TRANSFER_ENCODING)
        && !v.as_bytes().eq_ignore_ascii_case(b"chunked")
    {
        return Some("a Transfer-Encoding other than chunked");
    }
    None
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// A problem response; `close` asks hyper to close the connection after it (the rest of
/// the request is not read, so the connection cannot be reused safely).
fn refusal(p: Problem, close: bool) -> Response<GatewayBody> {
    let res: Response<Vec<u8>> = p.to_http();
    let mut res = res.map(full);
    if close {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

fn too_large(limit: u64) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        format!("the request body is larger than {limit} bytes"),
    )
}

fn rate_headers(h: &mut http::HeaderMap, d: &Decision) {
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
}

impl<S> Shield<S> {
    fn reject(
        &self,
        reason: &'static str,
        client: &Arc<String>,
        p: Problem,
        close: bool,
    ) -> Response<GatewayBody> {
        self.metrics
            .edge
            .rejections
            .get_or_create(&RejectionLabels {
                reason,
                client: client.clone(),
            })
            .inc();
        tracing::info!(
            edge.rejection = reason,
            client = %client,
            http.response.status_code = p.status,
            "request refused at the edge"
        );
        refusal(p, close)
    }

    fn unauthorized(&self, st: &KeyState, e: AuthError) -> Response<GatewayBody> {
        let p = &*self.p;
        let (who, detail, challenge) = match e {
            AuthError::Missing => (
                &p.unauthenticated,
                "an API key is required: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
                "Bearer realm=\"hotel\"",
            ),
            AuthError::Invalid => (
                &p.unauthenticated,
                "the API key is not valid",
                "Bearer realm=\"hotel\", error=\"invalid_token\"",
            ),
            AuthError::Revoked(c) => (
                &st.clients[c as usize].name,
                "the API key has been revoked",
                "Bearer realm=\"hotel\", error=\"invalid_token\", error_description=\"revoked\"",
            ),
        };
        let mut res = self.reject(e.reason(), who, Problem::unauthorized(detail), false);
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        res
    }

    /// Runs every check; `Err` is the refusal to send.
    #[allow(clippy::result_large_err)]
    fn admit(&self, req: &mut Request<Incoming>) -> Result<Admitted, Response<GatewayBody>> {
        let p = &*self.p;
        let conn = req.extensions().get::<Conn>().map(|c| c.0.clone());
        let peer = conn
            .as_ref()
            .map_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), |c| c.peer);
        let flagged = conn.as_ref().is_some_and(|c| c.flag.is_raised());
        let why = if flagged {
            Some("ambiguous framing (Content-Length and Transfer-Encoding together, or repeated)")
        } else {
            framing_problem(req.headers())
        };
        if let Some(why) = why {
            tracing::debug!(headers = %p.hygiene.redacted(req.headers()), "ambiguous framing");
            return Err(self.reject(
                "bad_framing",
                &p.unauthenticated,
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "bad-framing",
                    format!("the request has {why}; refused to prevent request smuggling"),
                ),
                true,
            ));
        }
        if content_length(req.headers()).is_some_and(|n| n > p.limits.max_body_bytes) {
            return Err(self.reject(
                "body_too_large",
                &p.unauthenticated,
                too_large(p.limits.max_body_bytes),
                true,
            ));
        }
        let public = auth::is_public(&p.public, req.uri().path());
        let service = p.service_of(req.uri().path());
        let headers = req.headers_mut();
        crate::hygiene::remove_connection_listed(headers);
        p.hygiene.mark_sensitive(headers);
        p.hygiene.set_forwarded(
            headers,
            peer,
            conn.as_ref().and_then(|c| c.forwarded.as_ref()),
        );
        // Who is asking: a configured client, or nobody in particular; and that client's
        // rate-limit decision. Read from this thread's copy of the key state.
        let outcome = p.state.with(|st| {
            let who: Option<usize> = if st.keys.is_empty() {
                None
            } else {
                match st.keys.check(auth::presented_key(headers)) {
                    Ok(i) => Some(i as usize),
                    Err(_) if public => None,
                    Err(e) => return Err(self.unauthorized(st, e)),
                }
            };
            let client = match who {
                Some(i) => st.clients[i].clone(),
                None if st.keys.is_empty() => p.anonymous.clone(),
                None => p.public_client.clone(),
            };
            let decision = match who {
                Some(i) => st.buckets[i].as_ref().map(|b| p.limiter.check_bucket(b)),
                None => p.limiter.check_ip(p.hygiene.client_ip(headers, peer.ip())),
            };
            Ok((client, decision, who.is_some()))
        });
        let (client, decision, authenticated) = outcome?;
        // The services must never see the key, nor a client name the client chose.
        if authenticated {
            headers.remove(header::AUTHORIZATION);
            headers.remove("x-api-key");
        }
        headers.insert(p.client_header.clone(), client.header.clone());
        if let Some(d) = decision.filter(|d| !d.allowed) {
            let mut res = self.reject(
                "rate_limited",
                &client.name,
                Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    format!(
                        "rate limit of client {} exceeded; retry after {} s",
                        client.name, d.retry_after_secs
                    ),
                )
                .with_retry_after(d.retry_after_secs),
                false,
            );
            if p.limiter.headers {
                rate_headers(res.headers_mut(), &d);
            }
            return Err(res);
        }
        let shed = |reason, detail: &str| {
            self.reject(
                reason,
                &client.name,
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", detail)
                    .with_retry_after(p.limits.retry_after_secs),
                false,
            )
        };
        let Some(global) = p.global.try_acquire() else {
            return Err(shed(
                "overloaded",
                "the gateway is at its in-flight limit; retry shortly",
            ));
        };
        let service_guard = match service {
            Some(s) => match p.services[s].try_acquire() {
                Some(g) => Some(g),
                None => {
                    return Err(shed(
                        "service_overloaded",
                        "this service is at its in-flight limit; retry shortly",
                    ));
                }
            },
            None => None,
        };
        self.metrics.edge.in_flight.set(p.global.current() as i64);
        Ok(Admitted {
            client: client.name.clone(),
            conn,
            _guards: (global, service_guard),
            decision: decision.filter(|_| p.limiter.headers),
        })
    }
}

/// A request that got past the checks: its in-flight slots and rate-limit state.
struct Admitted {
    client: Arc<String>,
    /// The connection: a chunked body past the limit is noticed on its framing flag.
    conn: Option<Arc<ConnInfo>>,
    _guards: (InFlightGuard, Option<InFlightGuard>),
    decision: Option<Decision>,
}

impl<S> Service<Request<Incoming>> for Shield<S>
where
    S: Service<Request<Incoming>, Response = Response<GatewayBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<GatewayBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        let p = self.p.clone();
        let metrics = self.metrics.clone();
        let this = Shield {
            inner: (),
            p: self.p.clone(),
            metrics: self.metrics.clone(),
        };
        // The checks run inside the future, so their log events belong to the request's
        // span and their problems carry its request id.
        Box::pin(async move {
            let admitted = match this.admit(&mut req) {
                Ok(a) => a,
                Err(res) => return Ok(res),
            };
            let Ok(mut res) = inner.call(req).await;
            if admitted
                .conn
                .as_ref()
                .is_some_and(|c| c.flag.body_too_large())
            {
                // The inspector cut the upload off; whatever the router made of the broken
                // body, the client's answer is 413.
                return Ok(this.reject(
                    "body_too_large",
                    &admitted.client,
                    too_large(p.limits.max_body_bytes),
                    true,
                ));
            }
            p.hygiene.clean_response(res.headers_mut());
            if let Some(d) = &admitted.decision {
                rate_headers(res.headers_mut(), d);
            }
            drop(admitted);
            metrics.edge.in_flight.set(p.global.current() as i64);
            Ok(res)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_shaped_framing_is_recognised() {
        let mut h = http::HeaderMap::new();
        assert_eq!(framing_problem(&h), None);
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(framing_problem(&h), None);
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(framing_problem(&h).unwrap().contains("both"));
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(
            framing_problem(&h)
                .unwrap()
                .contains("more than one Content-Length")
        );
        let mut h = http::HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "gzip, chunked".parse().unwrap());
        assert!(framing_problem(&h).is_some());
    }

    #[test]
    fn a_public_listener_without_keys_is_refused_unless_anonymous_is_allowed() {
        let mut auth = AuthSettings::default();
        let (rl, lim, hd) = (
            RateLimitSettings::default(),
            LimitSettings::default(),
            HeaderSettings::default(),
        );
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let e = Protections::from_settings(
            EdgeSettings {
                auth: &auth,
                rate_limit: &rl,
                limits: &lim,
                headers: &hd,
            },
            listen,
            &[],
        )
        .unwrap_err();
        assert!(e.starts_with("auth.keys"), "{e}");
        auth.allow_anonymous = true;
        let p = Protections::from_settings(
            EdgeSettings {
                auth: &auth,
                rate_limit: &rl,
                limits: &lim,
                headers: &hd,
            },
            listen,
            &[],
        )
        .unwrap();
        assert!(!p.auth_required());
    }
}
