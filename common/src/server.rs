//! Serving with graceful shutdown.
//!
//! On the shutdown signal the listener is closed at once (new connections are refused,
//! so a load balancer's connect fails fast and is retried elsewhere), in-flight requests
//! get `grace` to finish, then the process exits.

use crate::fault::ConnAbort;
use crate::http::{HYPER_HEAD_HEADROOM, SERVICE_MAX_HEADERS};
use crate::tls::internal;
use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// Binds `addr` (port 0 picks a free port) and returns the listener and its real address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The next connection on `listener`; `None` after an accept error (out of file
/// descriptors and the like), which is logged and followed by a 10 ms back-off instead
/// of a spin.
pub async fn accept(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(sp) => Some(sp),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
            None
        }
    }
}

/// Closes `listener` (new connections are refused at once, so a balancer's connect fails
/// fast) and gives the connections `graceful` watches up to `grace` to finish.
pub async fn drain(listener: TcpListener, graceful: GracefulShutdown, grace: Duration) {
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "grace period over; dropping remaining connections");
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains for up to `grace`.
///
/// hyper's own head limits are set [`HYPER_HEAD_HEADROOM`] times above the services'
/// ([`SERVICE_MAX_HEADERS`]; its buffer already holds far more than
/// [`SERVICE_MAX_HEADER_BYTES`](crate::http::SERVICE_MAX_HEADER_BYTES)), so a head past
/// those reaches the router's check and is answered 431 problem+json with the request
/// id instead of hyper's bare 431. (`axum::serve` does not expose these settings.)
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, grace, None).await
}

/// Like [`serve`], for the listener other components call (a service's, the registry's):
/// with mutual TLS on ([`internal`]), it speaks TLS only, requires a client certificate
/// from the cluster's CA, and answers 403 problem+json to a role [`internal::may_call`]
/// does not allow; otherwise it is [`serve`].
pub async fn serve_internal(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    role: &'static str,
) -> std::io::Result<()> {
    let Some(identity) = internal::installed() else {
        return serve(listener, router, shutdown, grace).await;
    };
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| authorize(role, req, next),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config());
    serve_with(listener, router, shutdown, grace, Some(acceptor)).await
}

/// The longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses a request whose client certificate names a role that may not call `server`
/// on that path.
async fn authorize(
    server: &'static str,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    let role = req
        .extensions()
        .get::<internal::PeerRole>()
        .map(|r| r.0.clone());
    match role {
        Some(role) if internal::may_call(server, &role, path) => next.run(req).await,
        role => {
            let role = role.as_deref().unwrap_or("none").to_owned();
            tracing::warn!(
                peer_role = %role,
                path,
                "internal_tls: refused a caller whose certificate's role may not call {server}"
            );
            crate::problem::Problem::new(
                http::StatusCode::FORBIDDEN,
                "forbidden-role",
                format!("a client certificate of role {role:?} may not call {server} at {path}"),
            )
            .with_title("Role not allowed")
            .to_http()
        }
    }
}

async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_headers(SERVICE_MAX_HEADERS * HYPER_HEAD_HEADROOM);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                let Some((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let abort = ConnAbort::default();
                let io = AbortableIo { stream, abort: abort.clone() };
                let router = router.clone();
                let service = move |role: Option<internal::PeerRole>| {
                    TowerToHyperService::new(tower::ServiceExt::map_request(
                        router,
                        move |mut r: http::Request<hyper::body::Incoming>| {
                            r.extensions_mut().insert(ConnectInfo(peer));
                            r.extensions_mut().insert(abort.clone());
                            if let Some(role) = &role {
                                r.extensions_mut().insert(role.clone());
                            }
                            r
                        },
                    ))
                };
                let builder = builder.clone();
                let watcher = graceful.watcher();
                match &tls {
                    None => {
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(io), service(None))
                            .into_owned();
                        tokio::spawn(watcher.watch(conn));
                    }
                    Some(acceptor) => {
                        let accept = acceptor.accept(io);
                        tokio::spawn(async move {
                            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::warn!(%peer, error = %e, "internal_tls: handshake refused");
                                    return;
                                }
                                Err(_) => {
                                    tracing::warn!(%peer, "internal_tls: handshake timed out");
                                    return;
                                }
                            };
                            let role = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(internal::peer_role)
                                .map(|r| internal::PeerRole(r.into()));
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service(role))
                                .into_owned();
                            let _ = watcher.watch(conn).await;
                        });
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    drain(listener, graceful, grace).await;
    Ok(())
}

/// A served connection that the fault layer can reset ([`ConnAbort`]): once raised,
/// every read and write fails, so hyper writes nothing more and drops the connection,
/// and the socket closes with `SO_LINGER` 0: the peer gets a TCP reset, no answer.
struct AbortableIo {
    stream: TcpStream,
    abort: ConnAbort,
}

fn reset() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection reset by a fault",
    )
}

impl AsyncRead for AbortableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.abort.is_raised() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AbortableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.abort.is_raised() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.abort.is_raised() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.abort.is_raised() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.abort.is_raised() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Drop for AbortableIo {
    fn drop(&mut self) {
        if self.abort.is_raised() {
            // Zero linger: close sends RST and does not block.
            let _ = self.stream.set_zero_linger();
        }
    }
}
