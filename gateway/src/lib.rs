//! `hotel gateway`: the resilient gateway, i.e. the edge. It accepts client connections,
//! applies the protections (framing checks, API keys, rate limits, overload shedding,
//! header hygiene), routes `/api/...` by path prefix to the customer, room and booking
//! services, and hands each request to its route's upstream stack from
//! [`hotel_upstream`] (deadline, budgeted retries, hedging, p2c, per-instance breakers,
//! per-try timeouts, one pooled client). Instances come from the registry (blocking
//! queries) or from static config.
//!
//! This crate is the gateway role and nothing else: the only dependents meant to exist
//! are the `hotel` binary (through [`run`] and [`GatewayArgs`]) and tests and benches
//! (through [`Application`] on port 0 and the configuration types). It depends on
//! `hotel-upstream` for everything past the route match; services that call each other
//! use that crate, never this one.
//!
//! Module map. Configuration: [`settings`] (raw [`Settings`], validated [`Config`], plain
//! data; the policy types are the upstream crate's), with the edge sections in [`auth`],
//! [`ratelimit`], [`overload`], [`hygiene`], [`cors`]. The edge, outermost first:
//! `listener` (connection admission, the accept loop), `framing` (raw-byte smuggling
//! checks under hyper), `edge` (request context, layer order, router), `shield`
//! (per-request protections), `routes` (path checks, matching), [`cache`] (the shared
//! HTTP cache between the router and the upstream stack), [`body`] (response bodies).
//! Operations: [`metrics`] (edge metrics composed with the upstream ones), `admin` (status, metrics, probes), [`docs`] (the merged OpenAPI document and Swagger
//! UI at `/api/openapi.json` and `/api/docs`).

mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cors;
pub mod docs;
mod edge;
mod framing;
pub mod hygiene;
mod listener;
pub mod metrics;
pub mod overload;
pub mod ratelimit;
mod routes;
pub mod settings;
mod shield;

pub use settings::{Config, Settings};

use hotel_common::process::{BoxError, ProcessArgs};
use hotel_upstream::{ClientOptions, ServiceUpstream, Source, Target};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    /// The services' OpenAPI documents for `/api/openapi.json`; not a command-line
    /// option: the `hotel` binary fills it in (see [`docs`]).
    #[arg(skip)]
    pub api_docs: docs::ApiDocs,
}

/// Loads the settings of `hotel gateway` (defaults < file < env < command line).
fn load_settings(args: &GatewayArgs) -> Result<Settings, BoxError> {
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
    let api_docs = args.api_docs;
    if config.worker_threads == 0 {
        return serve(config, api_docs).await;
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
                .and_then(|rt| rt.block_on(serve(config, api_docs)));
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| BoxError::from("the gateway runtime stopped unexpectedly"))?
}

async fn serve(config: Config, api_docs: docs::ApiDocs) -> Result<(), BoxError> {
    let app = Application::build_with_docs(config, &api_docs).await?;
    hotel_common::process::announce(app.local_addr());
    // Second, so launchers reading the first `listening on` line still get the edge.
    hotel_common::process::announce_admin(app.admin_addr());
    tracing::info!(addr = %app.local_addr(), admin = %app.admin_addr(), "gateway listening");
    if !app.api_keys().required() {
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

/// A gateway with its listeners bound (port 0 picks free ports) and its live state
/// built, ready to serve.
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    gateway: Arc<edge::Gateway>,
    /// The connection limits of `listener`.
    admission: Arc<listener::Admission>,
    keys: Arc<auth::ApiKeys>,
    admin: axum::Router,
    grace: Duration,
}

impl Application {
    /// Builds the upstream stacks and binds both listeners. Instances come from the
    /// registry when one is configured, else from `[services.<name>] instances`. The
    /// API document holds no service's paths (see [`Application::build_with_docs`]).
    pub async fn build(config: Config) -> Result<Application, BoxError> {
        Self::build_with_docs(config, &docs::ApiDocs::new()).await
    }

    /// Like [`Application::build`], documenting the services in `api_docs` at
    /// `/api/openapi.json`.
    pub async fn build_with_docs(
        config: Config,
        api_docs: &docs::ApiDocs,
    ) -> Result<Application, BoxError> {
        let registry = match &config.registry {
            Some((url, token)) => Some(hotel_registry::client::RegistryClient::new(
                url,
                token.clone(),
            )?),
            None => None,
        };
        Self::build_from(config, api_docs, |_, cfg| match &registry {
            Some(c) => Source::Registry(c.clone()),
            None => Source::Fixed(
                cfg.instances
                    .iter()
                    .map(|(n, o)| Target {
                        name: n.as_str().into(),
                        origin: o.clone(),
                    })
                    .collect(),
            ),
        })
        .await
    }

    /// Like [`Application::build`] with each service's instance source chosen by
    /// `source` (tests publish instance sets themselves).
    ///
    /// Every piece of live state is made here, from the plain data in `config`: the
    /// metrics registry, the upstream stacks, the edge protections (key cell, rate-limit
    /// buckets, in-flight counters) and the connection limits.
    pub async fn build_with(
        config: Config,
        source: impl FnMut(&str, &settings::ServiceConfig) -> Source,
    ) -> Result<Application, BoxError> {
        Self::build_from(config, &docs::ApiDocs::new(), source).await
    }

    /// Like [`Application::build_with`], documenting the services in `api_docs`.
    pub async fn build_from(
        config: Config,
        api_docs: &docs::ApiDocs,
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
        let protections = Arc::new(shield::Protections::new(&config.edge, &config.routes));
        let keys = protections.keys().clone();
        // The framing inspector cuts a chunked upload off past the largest route limit;
        // each route's own limit is enforced while its body is read (see `edge`).
        let max_body = config
            .routes
            .iter()
            .map(|r| r.max_body_bytes)
            .fold(config.edge.limits.max_body_bytes, u64::max);
        let admission = Arc::new(listener::Admission::new(
            &config.edge.limits,
            max_body,
            &config.edge.hygiene,
            metrics.clone(),
        ));
        let cache = cache::HttpCache::new(
            &config.cache,
            metrics.clone(),
            config.edge.client_header.clone(),
        );
        let table = routes::RouteTable::new(config.routes.clone());
        let api_docs = docs::Docs::build(api_docs, &table);
        let gateway = Arc::new(
            edge::Gateway::new(
                table,
                upstreams,
                protections,
                metrics.clone(),
                config.retry_buffer_bytes,
            )
            .with_docs(api_docs)
            .with_cors(config.cors.clone())
            .with_cache(cache.clone()),
        );
        let services: Vec<_> = services.into_values().collect();
        let admin = admin::router(admin::AdminState {
            instance: config.instance.clone(),
            services,
            metrics,
            token: config.admin_token.as_deref().map(Arc::from),
            cache,
        });
        let (listener, addr) = hotel_common::server::bind(config.listen).await?;
        let (admin_listener, admin_addr) = hotel_common::server::bind(config.admin_listen).await?;
        Ok(Application {
            listener,
            admin_listener,
            addr,
            admin_addr,
            gateway,
            admission,
            keys,
            admin,
            grace: config.shutdown_grace,
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

    /// The live API keys, e.g. to reload the keys file.
    pub fn api_keys(&self) -> &Arc<auth::ApiKeys> {
        &self.keys
    }

    /// Serves until `shutdown` resolves: then stops accepting, lets in-flight requests
    /// finish for up to the grace period, and returns. The admin listener keeps answering
    /// during the drain (status, metrics) and stops after it.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        // Stops the admin server after the drain, or when this future is dropped.
        let admin_stop = CancellationToken::new();
        let admin = tokio::spawn(hotel_common::server::serve(
            self.admin_listener,
            self.admin,
            admin_stop.clone().cancelled_owned(),
            Duration::from_secs(1),
        ));
        let admin_stop = admin_stop.drop_guard();
        let reload_keys = self.keys.reload_on_sighup();
        listener::serve(
            self.listener,
            self.admission,
            edge::stack(self.gateway),
            shutdown,
            self.grace,
        )
        .await;
        reload_keys.abort();
        drop(admin_stop);
        let _ = admin.await;
        Ok(())
    }
}
