//! The public listener: which client connections are admitted, and the accept loop that
//! serves them.
//!
//! A connection is closed on accept past `max_connections`, closed unanswered when it
//! sends nothing within `header_timeout`, and otherwise served by hyper's auto builder
//! (HTTP/1.1 and h2) over a [`crate::framing::Inspected`] stream, so the smuggling checks
//! and the head/body deadlines see every byte hyper reads. Each request carries a
//! [`Conn`] with its peer and what the inspector found. With `[tls]` the handshake comes
//! first (within `header_timeout`, counted by outcome), and the inspector reads the
//! decrypted stream. On shutdown the listener stops accepting and open connections get
//! the grace period to finish.

use crate::{
    body::GatewayBody,
    framing::{self, Deadlines, Flag, Inspected, Inspector},
    hygiene::{Hygiene, PeerHeaders},
    metrics::{ConnLabels, HandshakeLabels, Metrics},
    overload::{InFlight, InFlightGuard, LimitSettings},
};
use hotel_common::{http::HYPER_HEAD_HEADROOM, server::accept};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use prometheus_client::metrics::gauge::Gauge;
use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tower::Service;

/// What every request of one client connection shares, built once per connection and
/// put on each of its requests.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The client's socket address.
    pub(crate) peer: SocketAddr,
    /// What the framing inspector found on the connection.
    pub(crate) flag: Flag,
    /// The forwarding headers of an untrusted peer, made once instead of per request.
    pub(crate) forwarded: Option<PeerHeaders>,
}

/// A request's [`ConnInfo`] (a request extension).
#[derive(Debug, Clone)]
pub(crate) struct Conn(pub(crate) Arc<ConnInfo>);

/// The connection-level limits, applied on accept.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: LimitSettings,
    /// Where the framing inspector cuts a chunked body off: the largest route limit.
    max_body: u64,
    /// Makes each connection's forwarding headers.
    hygiene: Hygiene,
    /// Open connections, against `max_connections`.
    connections: Arc<InFlight>,
    metrics: Arc<Metrics>,
    /// Replaces hyper's bare 431 on every connection (see [`hyper_max_headers`]).
    refusal: framing::BareRefusal,
}

/// hyper's inline capacity for header lines (`DEFAULT_MAX_HEADERS`): up to it, hyper
/// parses a head into arrays on the stack; any larger `max_headers` makes it allocate
/// (and fill) two heap arrays of that many entries for every request.
const HYPER_INLINE_HEADERS: usize = 100;

/// hyper's header-line limit for our limit `ours`: hyper's inline default while ours
/// is below it (heads between the two get our 431 from the shield, heads past hyper's
/// get hyper's, replaced on the wire by [`bare_refusal`]), else headroom above ours.
fn hyper_max_headers(ours: usize) -> Option<usize> {
    (ours >= HYPER_INLINE_HEADERS).then(|| ours * HYPER_HEAD_HEADROOM)
}

/// The answer that replaces hyper's bare 431: problem+json with a request id, as the
/// shield's own 431, counted and logged like it; the connection closes after it.
fn bare_refusal(limits: &LimitSettings, metrics: Arc<Metrics>) -> framing::BareRefusal {
    let detail = format!(
        "the request has more than {} header fields, or a head larger than {} bytes",
        limits.max_headers, limits.max_header_bytes
    );
    let rejected = metrics
        .edge
        .rejections
        .get_or_create_owned(&crate::metrics::RejectionLabels {
            reason: "headers_too_large",
            client: Arc::new("unauthenticated".to_owned()),
        });
    framing::BareRefusal(Arc::new(move |hyper_head: &[u8]| {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut p = hotel_common::Problem::new(
            http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            detail.clone(),
        );
        p.request_id = Some(request_id.clone());
        let body = serde_json::to_vec(&p).unwrap_or_default();
        rejected.inc();
        tracing::info!(
            edge.rejection = "headers_too_large",
            request_id = %request_id,
            http.response.status_code = 431,
            "request refused at the edge: head past the parser's limits"
        );
        // The version hyper answered in ("HTTP/1.1" or "HTTP/1.0").
        let version = std::str::from_utf8(&hyper_head[..8]).unwrap_or("HTTP/1.1");
        let mut out = format!(
            "{version} 431 Request Header Fields Too Large\r\n\
             content-type: {}\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\n\
             connection: close\r\n\r\n",
            hotel_common::problem::PROBLEM_JSON,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }))
}

/// One open client connection; frees its slot when dropped.
#[derive(Debug)]
struct ConnectionSlot {
    _guard: InFlightGuard,
    gauge: Gauge,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Admission {
    /// The limits of `limits`, counting into `metrics`; chunked bodies are cut off past
    /// `max_body`.
    pub(crate) fn new(
        limits: &LimitSettings,
        max_body: u64,
        hygiene: &Hygiene,
        metrics: Arc<Metrics>,
    ) -> Self {
        Admission {
            max_body,
            connections: InFlight::new(limits.max_connections),
            limits: limits.clone(),
            hygiene: hygiene.clone(),
            refusal: bare_refusal(limits, metrics.clone()),
            metrics,
        }
    }

    /// hyper's connection builder with the limits: timer, header timeout, head size,
    /// half-close, HTTP/2 streams.
    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            // hyper's timer runs from the moment it waits for a head, idle time included:
            // it is the keep-alive bound. The head itself is timed from its first byte by
            // the framing inspector (`header_timeout`).
            .header_read_timeout(self.limits.idle_timeout.max(self.limits.header_timeout))
            // hyper answers heads past its own limits itself, bare; ours (the shield's,
            // with problem+json) must be met first.
            .max_buf_size(self.limits.max_header_bytes * HYPER_HEAD_HEADROOM)
            // A client may shut down its write side once its request is out (`nc -q`,
            // `shutdown(SHUT_WR)`) and still wait for the answer (RFC 9112 9.6). Without
            // this, hyper reads that EOF while the response is pending, calls the message
            // incomplete and drops the connection unanswered.
            .half_close(true);
        if let Some(n) = hyper_max_headers(self.limits.max_headers) {
            b.http1().max_headers(n);
        }
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.limits.max_h2_streams)
            .max_header_list_size(
                u32::try_from(self.limits.max_header_bytes * HYPER_HEAD_HEADROOM)
                    .unwrap_or(u32::MAX),
            );
        b
    }

    /// A slot for a new connection, or `None` past `max_connections` (counted).
    fn admit(&self) -> Option<ConnectionSlot> {
        let edge = &self.metrics.edge;
        match self.connections.try_acquire() {
            Some(g) => {
                edge.connections.inc();
                Some(ConnectionSlot {
                    _guard: g,
                    gauge: edge.connections.clone(),
                })
            }
            None => {
                edge.connections_refused
                    .get_or_create(&ConnLabels { reason: "limit" })
                    .inc();
                None
            }
        }
    }

    /// Waits for a new connection's first byte for up to the header timeout; `false`
    /// (counted) when the client stayed silent or closed without sending anything.
    async fn first_byte(&self, stream: &TcpStream) -> bool {
        let ok = crate::overload::first_byte(stream, self.limits.header_timeout).await;
        if !ok {
            self.metrics
                .edge
                .connections_refused
                .get_or_create(&ConnLabels { reason: "slow" })
                .inc();
        }
        ok
    }

    /// Wraps a client connection from `peer` so its request framing is followed (see
    /// [`crate::framing`]), and returns what its requests share.
    fn connection<IO>(&self, stream: IO, peer: SocketAddr) -> (Inspected<IO>, Conn) {
        let flag = Flag::default();
        let io = framing::Inspected::new(
            stream,
            Inspector::new(
                flag.clone(),
                self.limits.max_header_bytes * HYPER_HEAD_HEADROOM,
                self.max_body,
            ),
            Deadlines {
                head: self.limits.header_timeout,
                body: self.limits.body_timeout,
            },
        )
        .refusing(self.refusal.clone());
        let info = ConnInfo {
            peer,
            flag,
            forwarded: self.hygiene.peer_headers(peer),
        };
        (io, Conn(Arc::new(info)))
    }

    /// The TLS handshake of a new connection within the header timeout; `None` (counted
    /// and logged with its reason) when it fails.
    async fn handshake(
        &self,
        tls: &TlsAcceptor,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let outcome =
            match tokio::time::timeout(self.limits.header_timeout, tls.accept(stream)).await {
                Ok(Ok(s)) => {
                    self.count_handshake("ok");
                    return Some(s);
                }
                Ok(Err(e)) => handshake_failure(&e),
                Err(_) => "timeout",
            };
        self.count_handshake(outcome);
        tracing::info!(%peer, reason = outcome, "TLS handshake failed");
        None
    }

    fn count_handshake(&self, outcome: &'static str) {
        self.metrics
            .tls_handshakes
            .get_or_create(&HandshakeLabels { outcome })
            .inc();
    }
}

/// Why a handshake failed, for the metric label: `alert` (the client refused us, e.g. it
/// does not trust the certificate), `protocol` (not TLS, or no version, cipher suite or
/// ALPN protocol in common), `io` (the connection broke).
fn handshake_failure(e: &std::io::Error) -> &'static str {
    match e
        .get_ref()
        .and_then(|i| i.downcast_ref::<tokio_rustls::rustls::Error>())
    {
        Some(tokio_rustls::rustls::Error::AlertReceived(_)) => "alert",
        Some(_) => "protocol",
        None => "io",
    }
}

/// Serves `edge` on `listener` as serving worker `worker` until `shutdown` resolves; then
/// stops accepting and lets open connections finish for up to `grace` before dropping
/// them.
pub(crate) async fn serve<S>(
    worker: usize,
    listener: TcpListener,
    admission: Arc<Admission>,
    edge: S,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    S: Service<Request, Response = http::Response<GatewayBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(admission.builder());
    let graceful = GracefulShutdown::new();
    let counted =
        admission
            .metrics
            .edge
            .accepted
            .get_or_create_owned(&crate::metrics::WorkerLabels {
                worker: u16::try_from(worker).unwrap_or(u16::MAX),
            });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                let Some((stream, peer)) = accepted else { continue };
                counted.inc();
                // Past max_connections: close at once rather than queue.
                let Some(slot) = admission.admit() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (watcher, builder) = (graceful.watcher(), builder.clone());
                let (admission, edge, tls) = (admission.clone(), edge.clone(), tls.clone());
                tokio::spawn(async move {
                    // A silent connection must not hold its slot forever.
                    if !admission.first_byte(&stream).await {
                        return;
                    }
                    match tls {
                        Some(tls) => {
                            let Some(stream) = admission.handshake(&tls, stream, peer).await
                            else {
                                return;
                            };
                            serve_io(&admission, &builder, watcher, edge, stream, peer).await;
                        }
                        None => {
                            let stream = crate::write_behind::WriteBehind::new(stream);
                            serve_io(&admission, &builder, watcher, edge, stream, peer).await;
                        }
                    }
                    drop(slot);
                });
            }
            () = &mut shutdown => break,
        }
    }
    hotel_common::server::drain(listener, graceful, grace).await;
}

/// Serves one admitted connection (cleartext or decrypted) until it closes.
async fn serve_io<S, IO>(
    admission: &Admission,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    edge: S,
    stream: IO,
    peer: SocketAddr,
) where
    S: Service<Request, Response = http::Response<GatewayBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Each request learns its peer and whether its connection showed smuggling-shaped
    // framing (see `framing`).
    let (io, conn) = admission.connection(stream, peer);
    let svc = tower::ServiceExt::map_request(edge, move |mut r: Request| {
        r.extensions_mut().insert(conn.clone());
        r
    });
    let served = builder
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
        .into_owned();
    let _ = watcher.watch(served).await;
}

/// A client request as hyper hands it to the edge.
type Request = http::Request<Incoming>;
