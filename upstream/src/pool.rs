//! [`HttpClient`]: the keep-alive connections to the instances, one pool per serving
//! worker, over our own HTTP/1.1 client connections ([`crate::h1`]).
//!
//! What it does per request, and nothing more: take the newest idle connection to the
//! instance from the calling worker's pool (or open one), send the request in origin
//! form with a `Host` header, and put the connection back once its answer has been read
//! whole. A connection the instance closed while it sat idle is found at checkout (the
//! runtime has seen its end) and dropped, so a request goes out on an open one.
//!
//! Written here rather than taken from hyper-util's legacy client, whose pool did the
//! same work for about 7k instructions per request against this one's 1.3k: a SipHash
//! of the scheme and of the authority byte by byte at checkout and again at return, a
//! boxed 3.4 KB future moved several times, the URI parsed back into origin form,
//! connection metadata copied into every response (see bench/README.md, issue 21).

use crate::{
    body::ProxyBody,
    error::BoxError,
    h1::{AnswerBody, Conn},
};
use bytes::Bytes;
use http::{
    Request, Response, Uri,
    uri::{Authority, Scheme},
};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};
use tower::ServiceExt;

thread_local! {
    /// The serving worker this thread is (see [`HttpClient`]); 0 on every other thread.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as serving worker `index` (a current-thread runtime of its
/// own): an [`HttpClient`] called on it uses pool `index`.
pub fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// Options of the shared client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per instance, in each worker's pool.
    pub pool_max_idle_per_host: usize,
    /// Serving workers, each with its own pool (see [`HttpClient`]); 0 counts as 1.
    pub workers: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_millis(500),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 64,
            workers: 1,
        }
    }
}

/// The HTTP client every instance of every service is reached through: one pool of
/// keep-alive connections per serving worker ([`ClientOptions::workers`]).
///
/// A worker is one thread with a current-thread runtime. A connection is served by a
/// task on the runtime that opened it, so a connection shared between workers would
/// move every request and answer across threads (a wake-up on another core each way).
/// A worker therefore takes connections from its own pool only. Threads that are not
/// serving workers (the admin runtime, health probes, services' clients) use pool 0.
#[derive(Clone, Debug)]
pub struct HttpClient {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    connector: HttpsConnector<HttpConnector>,
    workers: Box<[Mutex<WorkerPool>]>,
    idle_timeout: Duration,
    max_idle: usize,
}

/// One worker's idle connections, by instance: `http://` and `https://` apart, each
/// keyed by the authority as the URI spells it.
#[derive(Debug, Default)]
struct WorkerPool {
    http: HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>,
    https: HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState>,
    /// Whether the task that closes expired connections runs.
    sweeping: bool,
}

impl WorkerPool {
    fn hosts(
        &mut self,
        https: bool,
    ) -> &mut HashMap<Box<str>, Vec<Idle>, foldhash::fast::RandomState> {
        if https {
            &mut self.https
        } else {
            &mut self.http
        }
    }
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Whether it can take a request: not idle past the timeout, and not closed by
    /// its instance.
    fn usable(&mut self, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(self.since) < timeout && self.conn.is_reusable()
    }
}

/// A request the client could not send.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *.connect { "could not connect to the instance" } else { "error sending the request" })]
pub struct ClientError {
    /// Nothing was sent: the connection could not be opened.
    connect: bool,
    #[source]
    source: BoxError,
}

impl ClientError {
    fn connect(e: impl Into<BoxError>) -> ClientError {
        ClientError {
            connect: true,
            source: e.into(),
        }
    }

    fn send(e: impl Into<BoxError>) -> ClientError {
        ClientError {
            connect: false,
            source: e.into(),
        }
    }

    /// Whether the connection could not be opened (nothing reached the instance).
    pub fn is_connect(&self) -> bool {
        self.connect
    }
}

/// The answer to one request (the head; the body streams on).
pub type ResponseFuture =
    futures::future::BoxFuture<'static, Result<Response<AnswerBody>, ClientError>>;

/// Builds the shared client, with one pool per serving worker. `http://` instances are
/// reached in cleartext; `https://` ones (registered so with mutual TLS on) with the
/// process's identity (`hotel_common::tls::internal`), and refused when the process has
/// none.
pub fn http_client(o: ClientOptions) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(o.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let tls = hotel_common::tls::internal::client_config_or_refusing();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    HttpClient {
        shared: Arc::new(Shared {
            connector,
            workers: (0..o.workers.max(1)).map(|_| Mutex::default()).collect(),
            idle_timeout: o.pool_idle_timeout,
            max_idle: o.pool_max_idle_per_host,
        }),
    }
}

impl HttpClient {
    /// Sends `req` (an absolute `http://` or `https://` URI) on a connection of the
    /// calling worker's pool.
    pub fn request(&self, req: Request<ProxyBody>) -> ResponseFuture {
        let worker = WORKER.with(std::cell::Cell::get);
        let worker = if worker < self.shared.workers.len() {
            worker
        } else {
            0
        };
        Box::pin(send(self.shared.clone(), worker, req))
    }

    /// Idle connections in the calling worker's pool (tests).
    #[cfg(test)]
    fn idle(&self) -> usize {
        let worker = WORKER
            .with(std::cell::Cell::get)
            .min(self.shared.workers.len() - 1);
        let p = self.shared.workers[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        p.http.values().chain(p.https.values()).map(Vec::len).sum()
    }
}

impl tower::Service<Request<ProxyBody>> for HttpClient {
    type Response = Response<AnswerBody>;
    type Error = ClientError;
    type Future = ResponseFuture;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Always ready: a connection is found or made per request.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ProxyBody>) -> ResponseFuture {
        self.request(req)
    }
}

async fn send(
    shared: Arc<Shared>,
    worker: usize,
    req: Request<ProxyBody>,
) -> Result<Response<AnswerBody>, ClientError> {
    let uri = req.uri();
    let https = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP => false,
        Some(s) if *s == Scheme::HTTPS => true,
        _ => {
            return Err(ClientError::connect(format!(
                "{uri} is not an absolute http:// or https:// URI"
            )));
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(ClientError::connect(format!("{uri} names no host")));
    };
    // A request without `Host` gets the connection's (see `host_of`).
    let conn = shared.connection(worker, https, &authority).await?;
    let back = Back {
        shared,
        worker,
        https,
        authority,
    };
    // The request line is written from the path and query (origin form: instances are
    // not proxies).
    conn.send(req, back).await.map_err(ClientError::send)
}

/// The `Host` of requests to `authority`: its host, and its port unless that is the
/// scheme's default.
fn host_of(https: bool, authority: &Authority) -> Bytes {
    let default_port = if https { 443 } else { 80 };
    match authority.port_u16() {
        Some(p) if p != default_port => format!("{}:{p}", authority.host()).into(),
        _ => Bytes::copy_from_slice(authority.host().as_bytes()),
    }
}

/// Where a connection goes back to once its answer has been read.
struct Back {
    shared: Arc<Shared>,
    worker: usize,
    https: bool,
    authority: Authority,
}

impl crate::h1::Reuse for Back {
    fn reuse(self, conn: Conn) {
        if self.shared.max_idle > 0 {
            self.shared
                .keep(self.worker, self.https, self.authority.as_str(), conn);
        }
    }
}

impl Shared {
    /// A connection to the instance: a kept one, else a new one.
    async fn connection(
        &self,
        worker: usize,
        https: bool,
        authority: &Authority,
    ) -> Result<Conn, ClientError> {
        match self.checkout(worker, https, authority.as_str()) {
            Some(conn) => Ok(conn),
            // Boxed: inline, the connect future would make every request's future
            // that much larger, and it is moved into a box whole.
            None => Box::pin(self.connect(https, authority)).await,
        }
    }

    fn pool(&self, worker: usize) -> std::sync::MutexGuard<'_, WorkerPool> {
        self.workers[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The newest usable idle connection to `authority`, dropping the unusable ones on
    /// the way (closed by the instance, or idle too long).
    fn checkout(&self, worker: usize, https: bool, authority: &str) -> Option<Conn> {
        let mut pool = self.pool(worker);
        let idle = pool.hosts(https).get_mut(authority)?;
        let now = Instant::now();
        while let Some(mut c) = idle.pop() {
            if c.usable(now, self.idle_timeout) {
                return Some(c.conn);
            }
        }
        None
    }

    /// A new connection to the instance.
    async fn connect(&self, https: bool, authority: &Authority) -> Result<Conn, ClientError> {
        let uri = Uri::builder()
            .scheme(if https { Scheme::HTTPS } else { Scheme::HTTP })
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(ClientError::connect)?;
        let io = self
            .connector
            .clone()
            .oneshot(uri)
            .await
            .map_err(ClientError::connect)?;
        Ok(Conn::new(hyper_util::rt::TokioIo::new(io)).with_host(host_of(https, authority)))
    }

    fn keep(self: &Arc<Self>, worker: usize, https: bool, authority: &str, conn: Conn) {
        let mut pool = self.pool(worker);
        let hosts = pool.hosts(https);
        let idle = match hosts.get_mut(authority) {
            Some(idle) => idle,
            None => hosts.entry(authority.into()).or_default(),
        };
        if idle.len() >= self.max_idle {
            // The oldest goes: the newest are the likeliest to be open still.
            idle.remove(0);
        }
        idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        if !pool.sweeping {
            pool.sweeping = true;
            tokio::spawn(sweep(Arc::downgrade(self), worker));
        }
    }
}

/// Closes the idle connections of one worker's pool that have been idle past the
/// timeout or were closed by their instance; ends when the pool is empty (the next
/// kept connection starts it again) or the client is gone.
async fn sweep(shared: Weak<Shared>, worker: usize) {
    // Also when the runtime it runs on ends first: the next kept connection starts one.
    let _running = Sweeping(shared.clone(), worker);
    let Some(every) = shared
        .upgrade()
        .map(|s| s.idle_timeout.max(Duration::from_millis(100)))
    else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(s) = shared.upgrade() else { return };
        let mut guard = s.pool(worker);
        let pool = &mut *guard;
        let now = Instant::now();
        for hosts in [&mut pool.http, &mut pool.https] {
            for idle in hosts.values_mut() {
                idle.retain_mut(|c| c.usable(now, s.idle_timeout));
            }
            hosts.retain(|_, idle| !idle.is_empty());
        }
        if pool.http.is_empty() && pool.https.is_empty() {
            return;
        }
    }
}

/// Marks a worker's pool as swept no longer when its sweeper ends, however it ends.
struct Sweeping(Weak<Shared>, usize);

impl Drop for Sweeping {
    fn drop(&mut self) {
        if let Some(s) = self.0.upgrade() {
            s.pool(self.1).sweeping = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// An instance that answers each request with the client port of its connection.
    async fn echo_port() -> std::net::SocketAddr {
        use axum::extract::ConnectInfo;
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(
                |ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>| async move {
                    peer.port().to_string()
                },
            ),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                l,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
        });
        addr
    }

    /// The client port of the connection `client` sent a GET to `addr` on.
    async fn port(client: &HttpClient, addr: std::net::SocketAddr) -> String {
        let mut req = Request::new(ProxyBody::empty());
        *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
        let body = client.request(req).await.unwrap().into_body();
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// The ports of `n` GETs in a row from a thread marked as worker 1 (with its own
    /// runtime). The calling runtime keeps running meanwhile: it serves pool 0's
    /// connections.
    async fn ports_from_worker_1(
        client: &HttpClient,
        addr: std::net::SocketAddr,
        n: usize,
    ) -> std::collections::HashSet<String> {
        let client = client.clone();
        tokio::task::spawn_blocking(move || {
            enter_worker(1);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut ports = std::collections::HashSet::new();
                for _ in 0..n {
                    ports.insert(port(&client, addr).await);
                }
                ports
            })
        })
        .await
        .unwrap()
    }

    /// The ports of `n` GETs in a row from the calling thread (worker 0).
    async fn ports_from_worker_0(
        client: &HttpClient,
        addr: std::net::SocketAddr,
        n: usize,
    ) -> std::collections::HashSet<String> {
        let mut ports = std::collections::HashSet::new();
        for _ in 0..n {
            ports.insert(port(client, addr).await);
        }
        ports
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_worker_sends_on_connections_of_its_own_pool() {
        let addr = echo_port().await;
        let client = http_client(ClientOptions {
            workers: 2,
            ..Default::default()
        });
        let mut worker_0 = ports_from_worker_0(&client, addr, 5).await;
        let worker_1 = ports_from_worker_1(&client, addr, 5).await;
        worker_0.extend(ports_from_worker_0(&client, addr, 5).await);
        assert!(
            worker_0.is_disjoint(&worker_1),
            "workers shared a connection: worker 0 {worker_0:?}, worker 1 {worker_1:?}"
        );

        // With one pool, the worker-1 thread does take connections worker 0 left idle:
        // the check above can tell the two apart.
        let shared = http_client(ClientOptions::default());
        let mut seen = std::collections::HashSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            seen.extend(ports_from_worker_0(&shared, addr, 2).await);
            if !ports_from_worker_1(&shared, addr, 1)
                .await
                .is_disjoint(&seen)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "one pool, yet the worker-1 thread never took an idle connection"
            );
        }
    }

    /// A bare HTTP/1.1 instance: answers every request on a connection with its path,
    /// `Host` header and the connection's number, then, when `close_after_each` is set,
    /// closes the connection without saying so (as an instance whose keep-alive timeout
    /// just ran out does).
    async fn raw_instance(close_after_each: bool) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut s, _)) = l.accept().await {
                n += 1;
                let conn = n;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let Ok(r) = s.read(&mut chunk).await else {
                            return;
                        };
                        if r == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..r]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("")
                            .to_owned();
                        let body = format!("{target} {host} {conn}");
                        let res = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(res.as_bytes()).await.is_err() || close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn get(client: &HttpClient, uri: String) -> Result<String, ClientError> {
        let mut req = Request::new(ProxyBody::empty());
        *req.uri_mut() = uri.parse().unwrap();
        let body = client.request(req).await?.into_body();
        Ok(String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn requests_go_in_origin_form_with_a_host_header_on_one_kept_connection() {
        let addr = raw_instance(false).await;
        let client = http_client(ClientOptions::default());
        for path in ["/a?b=c", "/", "/rooms/7"] {
            assert_eq!(
                get(&client, format!("http://{addr}{path}")).await.unwrap(),
                format!("{path} {addr} 1"),
                "every request on connection 1, in origin form, with Host"
            );
        }
        assert_eq!(client.idle(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_instance_closed_while_idle_is_not_used_again() {
        let addr = raw_instance(true).await;
        let client = http_client(ClientOptions::default());
        for n in 1..=20 {
            // A POST too: it may go out again only because nothing of it was sent.
            let mut req = Request::new(ProxyBody::empty());
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = format!("http://{addr}/p").parse().unwrap();
            let res = client.request(req).await.unwrap_or_else(|e| {
                panic!(
                    "request {n} failed: {e} ({:?})",
                    std::error::Error::source(&e)
                )
            });
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                body,
                format!("/p {addr} {n}"),
                "request {n} on a new connection"
            );
        }
    }

    #[tokio::test]
    async fn idle_connections_past_the_timeout_are_closed_and_not_used() {
        let addr = raw_instance(false).await;
        let client = http_client(ClientOptions {
            pool_idle_timeout: Duration::from_millis(150),
            ..Default::default()
        });
        assert!(
            get(&client, format!("http://{addr}/"))
                .await
                .unwrap()
                .ends_with(" 1")
        );
        assert_eq!(client.idle(), 1);
        // The sweeper closes it: the pool empties without any request.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while client.idle() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the idle connection was never closed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            get(&client, format!("http://{addr}/"))
                .await
                .unwrap()
                .ends_with(" 2")
        );
    }

    #[tokio::test]
    async fn at_most_the_configured_idle_connections_are_kept_per_instance() {
        let addr = raw_instance(false).await;
        let client = http_client(ClientOptions {
            pool_max_idle_per_host: 2,
            ..Default::default()
        });
        let all =
            futures::future::join_all((0..5).map(|_| get(&client, format!("http://{addr}/"))));
        for r in all.await {
            r.unwrap();
        }
        assert_eq!(client.idle(), 2);
        let none = http_client(ClientOptions {
            pool_max_idle_per_host: 0,
            ..Default::default()
        });
        get(&none, format!("http://{addr}/")).await.unwrap();
        assert_eq!(none.idle(), 0);
    }

    #[tokio::test]
    async fn a_streamed_answer_returns_its_connection_once_read() {
        // Body sent in two writes with a pause: the head arrives before the body ends.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
                            .await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = s.write_all(b"3\r\ndef\r\n0\r\n\r\n").await;
                    }
                });
            }
        });
        let client = http_client(ClientOptions::default());
        for _ in 0..3 {
            assert_eq!(
                get(&client, format!("http://{addr}/")).await.unwrap(),
                "abcdef"
            );
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one connection for all three"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_and_a_relative_uri_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let client = http_client(ClientOptions::default());
        assert!(
            get(&client, format!("http://{addr}/"))
                .await
                .unwrap_err()
                .is_connect()
        );
        assert!(
            get(&client, "/relative".to_owned())
                .await
                .unwrap_err()
                .is_connect()
        );
    }
}
