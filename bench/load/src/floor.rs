//! `bench-floor`: the benchmark's floor, a bare hyper forwarder (see bench/README).
//!
//! What hyper alone costs on the gateway's path: an HTTP/1.1 hyper server, a pooled
//! hyper-util client (the gateway's connector settings: `TCP_NODELAY`, 128 idle
//! connections per upstream), round robin over the upstreams, served by workers as the
//! gateway serves (a current-thread runtime, accept loop and pool each), and nothing else: no
//! layers, no retries, no breakers, no metrics, no spans, no header rewriting. An error
//! from the upstream is a bare 502. `bench/run.sh` measures it beside the peers and the
//! gateway, so each table says how much of the gap to nginx is the library and how much
//! is ours.
//!
//!     bench-floor --listen 127.0.0.1:18080 --upstream 127.0.0.1:18081 --upstream ...

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode, Uri, uri::Authority};
use http_body_util::{Either, Empty};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "bench-floor",
    about = "A bare hyper forwarder: the benchmark's floor"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long)]
    listen: SocketAddr,
    /// An upstream `HOST:PORT`; repeatable; requests go round robin.
    #[arg(long = "upstream", required = true)]
    upstreams: Vec<Authority>,
    /// Serving workers, as the gateway's `worker_threads`.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

type FloorBody = Either<Incoming, Empty<Bytes>>;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves with `--workers` workers as the gateway does: each a thread with a
/// current-thread runtime, its own accept loop on the one listening socket, and its own
/// connection pool.
fn run(args: Args) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    println!("listening on http://{}", listener.local_addr()?);
    let upstreams: Arc<[Authority]> = args.upstreams.into();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let (listener, upstreams, next) = (listener.try_clone()?, upstreams.clone(), next.clone());
        workers.push(std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| rt.block_on(serve(listener, upstreams, next)))
        }));
    }
    for w in workers {
        w.join()
            .map_err(|_| std::io::Error::other("a worker panicked"))??;
    }
    Ok(())
}

async fn serve(
    listener: std::net::TcpListener,
    upstreams: Arc<[Authority]>,
    next: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(128)
        .build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        // Like the gateway's listener; a socket that refuses it is served anyway.
        let _ = stream.set_nodelay(true);
        let (client, upstreams, next) = (client.clone(), upstreams.clone(), next.clone());
        let svc = service_fn(move |req: Request<Incoming>| {
            let i = next.fetch_add(1, Ordering::Relaxed) % upstreams.len();
            forward(client.clone(), upstreams[i].clone(), req)
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<FloorBody>, std::convert::Infallible> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(upstream);
    parts.path_and_query = req.uri().path_and_query().cloned();
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    match Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return Ok(bad_gateway()),
    }
    Ok(match client.request(req).await {
        Ok(res) => res.map(Either::Left),
        Err(_) => bad_gateway(),
    })
}

fn bad_gateway() -> Response<FloorBody> {
    let mut res = Response::new(Either::Right(Empty::new()));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}
