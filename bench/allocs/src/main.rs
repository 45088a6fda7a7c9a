//! `bench-allocs`: heap allocations per proxied request, through the gateway's real stack.
//!
//! Runs, in one process: three upstreams (hyper servers answering `{"ok":true}` like the
//! benchmark's nginx upstreams), the gateway built by `Application::build` from
//! `config/bench-gateway.toml` (the benchmark's config: retries, hedging, breakers,
//! per-try timeouts) on a current-thread runtime of its own thread, as `worker_threads =
//! 1` runs it, with the process's telemetry set up as `hotel gateway` does (so
//! `RUST_LOG` matters as it does there), and a load client on keep-alive connections.
//!
//! A counting global allocator counts only the allocations made on the gateway's threads
//! (its runtime thread and any blocking-pool thread it starts): the upstreams and the
//! client run on another runtime whose threads are not counted. After a warm-up (pools
//! filled, connections open) it prints allocations and bytes per request over the
//! measured requests; the gateway's background work (readiness polls, timers) in that
//! window is included, and small beside the requests.
//!
//!     cargo run --release -p hotel-bench-allocs -- --requests 20000 --connections 64

use std::{
    alloc::{GlobalAlloc, Layout},
    cell::Cell,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts allocations (and reallocations, as the allocator sees a new block) made on
/// threads marked with [`count_this_thread`].
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
        let traced = TRACE_LEFT.load(Ordering::Relaxed) > 0
            && size as u64 >= TRACE_MIN.load(Ordering::Relaxed)
            && TRACE_LEFT.fetch_sub(1, Ordering::Relaxed) > 0;
        if traced {
            // The backtrace allocates: not counted, not traced.
            COUNTED.with(|c| c.set(false));
            eprintln!(
                "--- allocation of {size} bytes\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            COUNTED.with(|c| c.set(true));
        }
    }
}

/// `--trace N:MIN`: the backtraces of N allocations of at least MIN bytes in the
/// measured window, on stderr (to find where they come from).
static TRACE_LEFT: AtomicU64 = AtomicU64::new(0);
static TRACE_MIN: AtomicU64 = AtomicU64::new(0);

fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

fn snapshot() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

// SAFETY: every method forwards to `hotel_alloc::Allocator` (the `hotel` binary's global
// allocator, so the counts and instructions are the gateway's as it runs) with the
// caller's arguments unchanged; the counting touches only atomics and a
// const-initialised thread-local `Cell` (no allocation, no destructor).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as the caller promised for `alloc`.
        unsafe { hotel_alloc::Allocator.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as the caller promised for `alloc_zeroed`.
        unsafe { hotel_alloc::Allocator.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as the caller promised for `realloc`.
        unsafe { hotel_alloc::Allocator.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller promised for `dealloc`.
        unsafe { hotel_alloc::Allocator.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Parser)]
#[command(
    name = "bench-allocs",
    about = "Heap allocations per request through the gateway's real stack"
)]
struct Args {
    /// Measured requests.
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Requests before measuring (opens the connections, fills the pools).
    #[arg(long, default_value_t = 4_000)]
    warmup: u64,
    /// Keep-alive client connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: u64,
    /// The gateway config (its upstream instances and listen addresses are replaced).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/bench-gateway.toml"))]
    config: PathBuf,
    /// Request path.
    #[arg(long, default_value = "/api/rooms")]
    path: String,
    /// `N:MIN`: print the backtraces of N allocations of at least MIN bytes made in the
    /// measured window (stderr).
    #[arg(long)]
    trace: Option<String>,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let peers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let upstreams = peers.block_on(async {
        let mut addrs = Vec::new();
        for i in 1..=3 {
            addrs.push(upstream(i).await?);
        }
        Ok::<_, BoxError>(addrs)
    })?;

    let mut settings: hotel_gateway::Settings = hotel_common::config::load_with_env(
        &hotel_gateway::Settings::default(),
        Some(&args.config),
        "gateway",
        &[],
    )?;
    settings.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.admin_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    for service in settings.services.values_mut() {
        service.instances = upstreams.iter().map(|a| format!("http://{a}")).collect();
    }
    let config = hotel_gateway::Config::try_from(settings)?;

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let gateway = std::thread::Builder::new()
        .name("gateway-worker".into())
        .spawn(move || -> Result<(), String> {
            count_this_thread();
            let _ = tid_tx.send(
                std::fs::read_link("/proc/thread-self")
                    .ok()
                    .map(|t| std::path::Path::new("/proc").join(t)),
            );
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_start(count_this_thread)
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let _telemetry = hotel_common::telemetry::init(
                    &hotel_common::telemetry::Identity {
                        role: "gateway".into(),
                        instance: "gateway-allocs".into(),
                    },
                    hotel_common::telemetry::LogFormat::Text,
                );
                let app = hotel_gateway::Application::build(config)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = addr_tx.send(app.local_addr());
                app.run_until(async move {
                    let _ = stop_rx.await;
                })
                .await
                .map_err(|e| e.to_string())
            })
        })?;
    let addr = addr_rx.recv().map_err(|_| "the gateway did not start")?;
    // `/proc/<pid>/task/<tid>` of the gateway's runtime thread, for its CPU time.
    let task = tid_rx.recv().ok().flatten();

    let senders = peers.block_on(async {
        let senders = connect(addr, args.connections).await?;
        drive(senders, addr, &args.path, args.warmup).await
    })?;
    let (a0, b0) = snapshot();
    let cpu0 = task.as_deref().and_then(cpu_ns);
    if let Some((n, min)) = args.trace.as_deref().and_then(|t| t.split_once(':')) {
        TRACE_MIN.store(min.parse()?, Ordering::Relaxed);
        TRACE_LEFT.store(n.parse()?, Ordering::Relaxed);
    }
    let senders = peers.block_on(drive(senders, addr, &args.path, args.requests))?;
    let (a1, b1) = snapshot();
    let cpu1 = task.as_deref().and_then(cpu_ns);
    drop(senders);
    let _ = stop_tx.send(());
    gateway
        .join()
        .map_err(|_| "the gateway thread panicked")??;

    let n = args.requests as f64;
    println!(
        "RUST_LOG={}; {} requests on {} connections after {} warm-up requests",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "(unset)".into()),
        args.requests,
        args.connections,
        args.warmup
    );
    println!(
        "allocations per request: {:.1}\nbytes allocated per request: {:.0}",
        (a1 - a0) as f64 / n,
        (b1 - b0) as f64 / n
    );
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        // User and system time of the gateway's thread; the client and the upstreams run on
        // other threads. Comparable between builds of one profile on a quiet machine.
        println!(
            "gateway thread CPU per request: {:.2} us",
            (c1 - c0) as f64 / n / 1000.0
        );
    }
    Ok(())
}

/// Nanoseconds a thread has run on a CPU, from `/proc/.../task/<tid>/schedstat`.
fn cpu_ns(task: &std::path::Path) -> Option<u64> {
    let s = std::fs::read_to_string(task.join("schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// An upstream like the benchmark's nginx: `{"ok":true}` and `X-Upstream: uN` for any
/// request; returns its address.
async fn upstream(i: usize) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let name = http::HeaderValue::from_str(&format!("u{i}"))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let name = name.clone();
            let svc = service_fn(move |_req: Request<Incoming>| {
                let mut res = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                let h = res.headers_mut();
                h.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                h.insert("x-upstream", name.clone());
                std::future::ready(Ok::<_, std::convert::Infallible>(res))
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// `connections` keep-alive HTTP/1.1 connections to `addr`.
async fn connect(addr: SocketAddr, connections: u64) -> Result<Vec<Sender>, BoxError> {
    let mut senders = Vec::new();
    for _ in 0..connections.max(1) {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        senders.push(send);
    }
    Ok(senders)
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// `requests` GETs of `path` at `addr` over the open connections, one in flight on each;
/// every answer must be 200. Hands the connections back.
async fn drive(
    senders: Vec<Sender>,
    addr: SocketAddr,
    path: &str,
    requests: u64,
) -> Result<Vec<Sender>, BoxError> {
    let left = Arc::new(AtomicU64::new(requests));
    let uri: http::Uri = path.parse()?;
    let host = addr.to_string();
    let mut tasks = Vec::new();
    for mut send in senders {
        let (left, uri, host) = (left.clone(), uri.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let req = Request::get(uri.clone())
                    .header(http::header::HOST, host.as_str())
                    .body(Empty::<Bytes>::new())?;
                send.ready().await?;
                let res = send.send_request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                if status != StatusCode::OK {
                    return Err(BoxError::from(format!("the gateway answered {status}")));
                }
            }
            Ok::<_, BoxError>(send)
        }));
    }
    let mut senders = Vec::new();
    for t in tasks {
        senders.push(t.await??);
    }
    Ok(senders)
}
