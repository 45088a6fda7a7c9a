//! The protections layer of the edge: what a request must get past before it is routed.
//!
//! In order: message framing (smuggling-shaped requests are refused with 400 and the
//! connection closed), the head (`Host` missing from HTTP/1.1, repeated or invalid ->
//! 400, RFC 9112 3.2; more header lines or bytes than `[limits]` allow -> 431), body
//! size by `Content-Length` against the route's limit (413,
//! before any attempt; bodies without a length are counted as they are read, see
//! [`crate::edge`]), header hygiene (hop-by-hop,
//! forwarding headers, credentials marked sensitive), API key (401), the client's rate
//! limit (429), the global and per-service in-flight limits (503). Every refusal is
//! counted in `gateway_edge_rejections_total{reason,client}` and logged as an event of the
//! request's span with its reason and client, so an operator sees who is limited and why.
//!
//! [`Protections`] is the live state the checks share (key cell, buckets, in-flight
//! counters), built once by [`crate::Application::build`] from the validated
//! [`EdgeConfig`]; [`ShieldLayer`] puts it in front of the router. The connection-level
//! limits are the listener's ([`crate::listener`]).

use crate::{
    auth::{self, ApiKeys, AuthError, Client, KeyState},
    body::{GatewayBody, full},
    hygiene::Hygiene,
    listener::{Conn, ConnInfo},
    metrics::{Metrics, RejectionLabels},
    overload::{InFlight, InFlightGuard},
    ratelimit::{Decision, RateLimiter},
    settings::{EdgeConfig, Route},
};
use futures::future::BoxFuture;
use hotel_common::Problem;
use hotel_upstream::too_large;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    task::{Context, Poll},
};
use tower::Service;

/// The shared state of the per-request checks.
#[derive(Debug)]
pub(crate) struct Protections {
    keys: Arc<ApiKeys>,
    anonymous: Client,
    public_client: Client,
    unauthenticated: Arc<String>,
    public: Vec<String>,
    client_header: HeaderName,
    limiter: Arc<RateLimiter>,
    hygiene: Hygiene,
    max_body_bytes: u64,
    /// Header count and head size (431), checked with the `Host` rules (400).
    head: hotel_common::http::HeadLimits,
    retry_after_secs: u64,
    /// Requests in flight in the whole gateway.
    global: Arc<InFlight>,
    /// Route prefixes (longest first), the index of their service in `services`, and
    /// their body limit.
    routes: Vec<(String, usize, u64)>,
    /// Requests in flight per service.
    services: Vec<Arc<InFlight>>,
    /// What `limiter` was built from, so a reload with the same limits keeps it.
    rate_limits: crate::ratelimit::RateLimits,
    /// The limit of `global`, so a reload with the same limit keeps its count.
    max_in_flight: usize,
}

impl Protections {
    /// The state for `edge` over `routes`. Without `before`, fresh: every bucket full,
    /// nothing in flight. On a reload, `before` is the running state: with the same
    /// `[rate_limit]` its limiter and every remaining client's bucket are kept (a reload
    /// must not refill a limited client), with the same `max_in_flight` the global count.
    pub(crate) fn build(
        edge: &EdgeConfig,
        routes: &[Route],
        before: Option<&Protections>,
    ) -> Protections {
        let same_limits = before.filter(|b| b.rate_limits == edge.rate_limits);
        let limiter = same_limits.map_or_else(
            || Arc::new(RateLimiter::new(&edge.rate_limits)),
            |b| b.limiter.clone(),
        );
        let keys = Arc::new(ApiKeys::succeeding(
            edge.keys.clone(),
            edge.auth.clone(),
            edge.loopback,
            limiter.clone(),
            same_limits.map(|b| &*b.keys),
        ));
        let global = before
            .filter(|b| b.max_in_flight == edge.limits.max_in_flight)
            .map_or_else(
                || InFlight::new(edge.limits.max_in_flight),
                |b| b.global.clone(),
            );
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
                (r.prefix.clone(), idx, r.max_body_bytes)
            })
            .collect();
        let services = names
            .iter()
            .map(|_| InFlight::new(edge.limits.max_in_flight_per_service))
            .collect();
        Protections {
            keys,
            anonymous: Client::new(Arc::new(auth::ANONYMOUS.to_owned())),
            public_client: Client::new(Arc::new(auth::PUBLIC.to_owned())),
            unauthenticated: Arc::new("unauthenticated".to_owned()),
            public: edge.auth.public.clone(),
            client_header: edge.client_header.clone(),
            limiter,
            hygiene: edge.hygiene.clone(),
            max_body_bytes: edge.limits.max_body_bytes,
            head: edge.limits.head(),
            retry_after_secs: edge.limits.retry_after_secs,
            global,
            routes,
            services,
            rate_limits: edge.rate_limits.clone(),
            max_in_flight: edge.limits.max_in_flight,
        }
    }

    /// The live API keys (to reload the keys file alone).
    pub(crate) fn keys(&self) -> &Arc<ApiKeys> {
        &self.keys
    }

    fn route_of(&self, path: &str) -> Option<&(String, usize, u64)> {
        self.routes.iter().find(|(p, _, _)| {
            path == p || (path.starts_with(p.as_str()) && path.as_bytes()[p.len()] == b'/')
        })
    }

    fn service_of(&self, path: &str) -> Option<usize> {
        self.route_of(path).map(|(_, s, _)| *s)
    }

    /// The body limit of the route `path` goes to (the default for unrouted paths).
    fn body_limit_of(&self, path: &str) -> u64 {
        self.route_of(path)
            .map_or(self.max_body_bytes, |(_, _, limit)| *limit)
    }
}

/// Builds [`Shield`] services.
#[derive(Debug, Clone)]
pub(crate) struct ShieldLayer {
    p: Arc<Protections>,
    metrics: Arc<Metrics>,
}

impl ShieldLayer {
    /// The layer over `p`, counting into `metrics`.
    pub(crate) fn new(p: Arc<Protections>, metrics: Arc<Metrics>) -> Self {
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
pub(crate) struct Shield<S> {
    inner: S,
    p: Arc<Protections>,
    metrics: Arc<Metrics>,
}

/// A request's framing headers, read in one pass over its header lines (a handful on
/// most requests) instead of a hashed lookup per question.
struct Framing<'a> {
    te: usize,
    cl: usize,
    first_te: Option<&'a HeaderValue>,
    first_cl: Option<&'a HeaderValue>,
}

impl<'a> Framing<'a> {
    fn of(h: &'a http::HeaderMap) -> Self {
        let mut f = Framing {
            te: 0,
            cl: 0,
            first_te: None,
            first_cl: None,
        };
        for (name, value) in h {
            if name == header::TRANSFER_ENCODING {
                f.te += 1;
                f.first_te.get_or_insert(value);
            } else if name == header::CONTENT_LENGTH {
                f.cl += 1;
                f.first_cl.get_or_insert(value);
            }
        }
        f
    }

    /// What the request is framed like, as far as smuggling goes.
    fn problem(&self) -> Option<&'static str> {
        if self.te > 0 && self.cl > 0 {
            return Some("both Content-Length and Transfer-Encoding");
        }
        if self.cl > 1 {
            return Some("more than one Content-Length");
        }
        if self.te > 1 {
            return Some("more than one Transfer-Encoding");
        }
        if let Some(v) = self.first_te
            && !v.as_bytes().eq_ignore_ascii_case(b"chunked")
        {
            return Some("a Transfer-Encoding other than chunked");
        }
        None
    }

    /// The declared body length, when it is a number.
    fn content_length(&self) -> Option<u64> {
        self.first_cl?.to_str().ok()?.trim().parse().ok()
    }
}

/// Bytes of an `x-request-id: <uuid>` line as [`head_problem`] counts it.
///
/// [`head_problem`]: hotel_common::http::head_problem
const REQUEST_ID_LINE: usize = "x-request-id".len() + 36 + 4;

const CLOSE: HeaderValue = HeaderValue::from_static("close");

/// A problem response; `close` asks hyper to close the connection after it (the rest of
/// the request is not read, so the connection cannot be reused safely).
fn refusal(p: Problem, close: bool) -> Response<GatewayBody> {
    let res: Response<Vec<u8>> = p.to_http();
    let mut res = res.map(full);
    if close {
        res.headers_mut().insert(header::CONNECTION, CLOSE);
    }
    res
}

/// As constants: a non-standard name given as `&str` is parsed and copied into a new
/// allocation on every insert.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

fn rate_headers(h: &mut http::HeaderMap, d: &Decision) {
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(d.limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from(d.remaining));
    h.insert(RATELIMIT_RESET, HeaderValue::from(d.reset_secs));
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
        let framing = Framing::of(req.headers());
        let why = if flagged {
            Some("ambiguous framing (Content-Length and Transfer-Encoding together, or repeated)")
        } else {
            framing.problem()
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
        // The head as the client sent it: without the `x-request-id` the edge added.
        let mut head = p.head;
        if req
            .extensions()
            .get::<crate::edge::AddedRequestId>()
            .is_some()
        {
            head.max_headers += 1;
            head.max_header_bytes += REQUEST_ID_LINE;
        }
        if let Some(problem) = hotel_common::http::head_problem(req, head, true) {
            let reason = if problem.status == StatusCode::BAD_REQUEST.as_u16() {
                "bad_host"
            } else {
                "headers_too_large"
            };
            return Err(self.reject(reason, &p.unauthenticated, problem, true));
        }
        let limit = p.body_limit_of(req.uri().path());
        if framing.content_length().is_some_and(|n| n > limit) {
            return Err(self.reject("body_too_large", &p.unauthenticated, too_large(limit), true));
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
        let outcome = p.keys.with(|st| {
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
            headers.remove(crate::auth::X_API_KEY);
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
                    .with_retry_after(p.retry_after_secs),
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
            limit,
            client: client.name.clone(),
            conn,
            _guards: (global, service_guard),
            decision: decision.filter(|_| p.limiter.headers),
        })
    }
}

/// A request that got past the checks: its in-flight slots and rate-limit state.
struct Admitted {
    /// The route's body limit, named in a late 413.
    limit: u64,
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
        // One clone of each shared part: the future reads them through `this`.
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
                    too_large(admitted.limit),
                    true,
                ));
            }
            // An instance's hop-by-hop headers were dropped by the router; its own
            // `Connection: close` (a body left unread) stays.
            this.p.hygiene.clean_response(res.headers_mut());
            if let Some(d) = &admitted.decision {
                rate_headers(res.headers_mut(), d);
            }
            drop(admitted);
            this.metrics
                .edge
                .in_flight
                .set(this.p.global.current() as i64);
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
        assert_eq!(Framing::of(&h).problem(), None);
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        assert_eq!(Framing::of(&h).problem(), None);
        h.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(Framing::of(&h).problem().unwrap().contains("both"));
        let mut h = http::HeaderMap::new();
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        h.append(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert!(
            Framing::of(&h)
                .problem()
                .unwrap()
                .contains("more than one Content-Length")
        );
        let mut h = http::HeaderMap::new();
        h.insert(header::TRANSFER_ENCODING, "gzip, chunked".parse().unwrap());
        assert!(Framing::of(&h).problem().is_some());
        // The length: the first line's, when it is a number.
        let mut h = http::HeaderMap::new();
        assert_eq!(Framing::of(&h).content_length(), None);
        h.insert(header::CONTENT_LENGTH, " 12 ".parse().unwrap());
        h.insert(header::HOST, "a".parse().unwrap());
        assert_eq!(Framing::of(&h).content_length(), Some(12));
        h.insert(header::CONTENT_LENGTH, "twelve".parse().unwrap());
        assert_eq!(Framing::of(&h).content_length(), None);
    }
}
