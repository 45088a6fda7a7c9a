//! `hotel gateway`: the resilient gateway, i.e. the edge. It accepts client connections,
//! applies the protections (framing checks, API keys, rate limits, overload shedding,
//! header hygiene), routes `/api/...` by path prefix to the customer, room and booking
//! services, and hands each request to its route's upstream stack from
//! [`hotel_upstream`] (deadline, budgeted retries, hedging, p2c, per-instance breakers,
//! per-try timeouts, one pooled client). Instances come from the registry (blocking
//! queries) or from static config.
//!
//! Module map: [`settings`] (config, validated; the policy types are the upstream
//! crate's), `edge` (the client-facing layers, in order), [`shield`] with [`auth`],
//! [`ratelimit`], [`overload`], [`hygiene`] and [`framing`] (the protections), `routes`
//! (path checks, matching), [`body`] (response bodies), [`metrics`] (edge metrics
//! composed with the upstream ones), `admin` (status, metrics, probes).
//!
//! Dependency rule: this crate depends on `hotel-upstream` for everything past the
//! route match; nothing depends on this crate but the `hotel` binary and the benches.

mod admin;
pub mod auth;
pub mod body;
mod edge;
pub mod framing;
pub mod hygiene;
pub mod metrics;
pub mod overload;
pub mod ratelimit;
mod routes;
pub mod settings;
pub mod shield;

pub use settings::{Config, Settings};

use hotel_common::process::{BoxError, ProcessArgs};
use hotel_upstream::{ClientOptions, ServiceUpstream, Source, Target};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;

/// Command-line options of `hotel gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    /// Options every role takes (listen, config, data dir, name, log format).
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Admin listener (status, metrics, probes); overrides `admin_listen`.
    #[arg(long, env = "HOTEL_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Registry base URL; overrides `registry.url`.
    #[arg(long)]
    pub registry: Option<String>,
    /// Tokio worker threads for the gateway (0: one per core); overrides `worker_threads`.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// API key tools (`hash-key`, `new-key`) instead of serving.
    #[command(subcommand)]
    pub command: Option<auth::KeyCommand>,
}

/// Loads the settings of `hotel gateway` (defaults < file < env < command line).
pub fn load_settings(args: &GatewayArgs) -> Result<Settings, BoxError> {
    let mut s: Settings =
        hotel_common::config::load(&Settings::default(), args.process.config_file(), "gateway")?;
    if let Some(l) = args.process.listen {
        s.listen = l;
    }
    if let Some(a) = args.admin_listen {
        s.admin_listen = a;
    }
    if let Some(n) = &args.process.instance {
        s.instance = n.clone();
    }
    if let Some(r) = &args.registry {
        s.registry.url = Some(r.clone());
    }
    if let Some(w) = args.worker_threads {
        s.worker_threads = w;
    }
    Ok(s)
}

/// Runs the gateway until a shutdown signal.
pub async fn run(args: GatewayArgs) -> Result<(), BoxError> {
    if let Some(cmd) = &args.command {
        return auth::run_key_command(cmd);
    }
    let settings = load_settings(&args)?;
    let config = Config::try_from(settings)?;
    let _telemetry = hotel_common::telemetry::init(
        &hotel_common::telemetry::Identity {
            role: "gateway".into(),
            instance: config.instance.clone(),
        },
        args.process.log_format,
    );
    if config.worker_threads == 0 {
        return serve(config).await;
    }
    // A runtime of its own, so `worker_threads = 1` really is one thread (benchmarks
    // against single-worker proxies); the process runtime only waits for it.
    let threads = config.worker_threads;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gateway-worker".into())
        .spawn(move || {
            // One worker: a current-thread runtime on this thread. Every wake-up is then a
            // local queue push, with no cross-thread notification or work-stealing
            // bookkeeping per task switch (a few per request).
            let mut builder = if threads == 1 {
                tokio::runtime::Builder::new_current_thread()
            } else {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(threads);
                b
            };
            let result = builder
                .thread_name("gateway-worker")
                .enable_all()
                .build()
                .map_err(BoxError::from)
                .and_then(|rt| rt.block_on(serve(config)));
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| BoxError::from("the gateway runtime stopped unexpectedly"))?
}

async fn serve(config: Config) -> Result<(), BoxError> {
    let app = Application::build(config).await?;
    hotel_common::process::announce(app.local_addr());
    // Second, so launchers reading the first `listening on` line still get the edge.
    hotel_common::process::announce_admin(app.admin_addr());
    tracing::info!(addr = %app.local_addr(), admin = %app.admin_addr(), "gateway listening");
    if !app.gateway.protections().0.auth_required() {
        tracing::warn!(
            addr = %app.local_addr(),
            "no API keys configured: every client that can reach this address may call /api \
             (configure [[auth.keys]] or auth.keys_file; see `hotel gateway new-key`)"
        );
    }
    app.run_until(hotel_common::server::shutdown_signal())
        .await?;
    Ok(())
}

/// A gateway with its listeners bound (port 0 picks free ports), ready to serve.
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    gateway: Arc<edge::Gateway>,
    admin: axum::Router,
    grace: Duration,
    services: Vec<Arc<ServiceUpstream>>,
}

impl Application {
    /// Builds the upstream stacks and binds both listeners. Instances come from the
    /// registry when one is configured, else from `[services.<name>] instances`.
    pub async fn build(config: Config) -> Result<Application, BoxError> {
        let registry = match &config.registry {
            Some((url, token)) => Some(hotel_registry::client::RegistryClient::new(
                url,
                token.clone(),
            )?),
            None => None,
        };
        Self::build_with(config, |name, cfg| match &registry {
            Some(c) => Source::Registry(c.clone()),
            None => {
                let _ = name;
                Source::Fixed(
                    cfg.instances
                        .iter()
                        .map(|(n, o)| Target {
                            name: n.as_str().into(),
                            origin: o.clone(),
                        })
                        .collect(),
                )
            }
        })
        .await
    }

    /// Like [`Application::build`] with each service's instance source chosen by
    /// `source` (tests publish instance sets themselves).
    pub async fn build_with(
        config: Config,
        mut source: impl FnMut(&str, &settings::ServiceConfig) -> Source,
    ) -> Result<Application, BoxError> {
        let metrics = metrics::Metrics::new();
        let client = hotel_upstream::http_client(ClientOptions {
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
        });
        let mut services = std::collections::BTreeMap::new();
        for (name, cfg) in &config.services {
            let s = ServiceUpstream::new(
                name,
                &cfg.policy,
                source(name, cfg),
                client.clone(),
                metrics.upstream.clone(),
            );
            services.insert(name.clone(), s);
        }
        let upstreams = config
            .routes
            .iter()
            .map(|r| {
                services[&r.service].route(&r.prefix, r.policy.clone(), metrics.upstream.clone())
            })
            .collect();
        let table = routes::RouteTable::new(config.routes.clone());
        let gateway = Arc::new(
            edge::Gateway::new(table, upstreams, metrics.clone(), config.retry_buffer_bytes)
                .with_protections(config.protections.clone()),
        );
        let services: Vec<_> = services.into_values().collect();
        let admin = admin::router(admin::AdminState {
            instance: config.instance.clone(),
            services: services.clone(),
            metrics,
            token: config.admin_token.as_deref().map(Arc::from),
        });
        let (listener, addr) = hotel_common::server::bind(config.listen).await?;
        let (admin_listener, admin_addr) = hotel_common::server::bind(config.admin_listen).await?;
        Ok(Application {
            listener,
            admin_listener,
            addr,
            admin_addr,
            gateway,
            admin,
            grace: config.shutdown_grace,
            services,
        })
    }

    /// The public address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The edge protections (keys, limits), e.g. to reload the keys file.
    pub fn protections(&self) -> &Arc<shield::Protections> {
        self.gateway.protections().0
    }

    /// The services with their live state (what `/admin/status` shows).
    pub fn services(&self) -> &[Arc<ServiceUpstream>] {
        &self.services
    }

    /// Serves until `shutdown` resolves: then stops accepting, lets in-flight requests
    /// finish for up to the grace period, and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = tokio_util_free_token::Token::default();
        let admin_stop = token.clone();
        let admin = tokio::spawn(hotel_common::server::serve(
            self.admin_listener,
            self.admin,
            async move { admin_stop.wait().await },
            Duration::from_secs(1),
        ));
        let (shield, metrics) = self.gateway.protections();
        let (shield, metrics) = (shield.clone(), metrics.clone());
        let edge = edge::stack(self.gateway);
        let mut builder = auto::Builder::new(TokioExecutor::new());
        shield.configure(&mut builder);
        let reload_keys = shield.reload_on_sighup();
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(sp) => sp,
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    };
                    // Past max_connections: close at once rather than queue.
                    let Some(slot) = shield.admit_connection(&metrics) else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let (watcher, builder) = (graceful.watcher(), builder.clone());
                    let (shield, metrics, edge) = (shield.clone(), metrics.clone(), edge.clone());
                    tokio::spawn(async move {
                        // A silent connection must not hold its slot forever.
                        if !shield.first_byte(&stream, &metrics).await {
                            return;
                        }
                        // Each request learns its peer and whether its connection showed
                        // smuggling-shaped framing (see `framing`).
                        let (io, conn_info) = shield.connection(stream, peer);
                        let svc = tower::ServiceExt::map_request(
                            edge,
                            move |mut r: http::Request<hyper::body::Incoming>| {
                                r.extensions_mut().insert(conn_info.clone());
                                r
                            },
                        );
                        let conn = builder
                            .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
                            .into_owned();
                        let _ = watcher.watch(conn).await;
                        drop(slot);
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        tracing::info!("shutting down: draining in-flight requests");
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(self.grace) => {
                tracing::warn!(grace = ?self.grace, "grace period over; dropping remaining connections");
            }
        }
        reload_keys.abort();
        token.fire();
        let _ = admin.await;
        Ok(())
    }
}

/// A one-shot "stop now" signal between the edge and the admin server.
mod tokio_util_free_token {
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// Fired once; every waiter (now or later) sees it.
    #[derive(Clone, Default)]
    pub struct Token(Arc<(Notify, std::sync::atomic::AtomicBool)>);

    impl Token {
        pub fn fire(&self) {
            self.0.1.store(true, std::sync::atomic::Ordering::SeqCst);
            self.0.0.notify_waiters();
        }

        pub async fn wait(&self) {
            loop {
                let notified = self.0.0.notified();
                if self.0.1.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        }
    }
}
