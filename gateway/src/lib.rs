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
pub mod recent;
pub mod reload;
mod routes;
pub mod settings;
mod shield;
mod write_behind;

pub use settings::{Config, Settings};

use hotel_common::process::{BoxError, ProcessArgs};
use hotel_upstream::{ClientOptions, Source, Target};
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
    /// Serving workers of the gateway (0: one per core); overrides `worker_threads`.
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
    let config = Config::try_from(settings.clone())?;
    let _telemetry = hotel_common::telemetry::init(
        &hotel_common::telemetry::Identity {
            role: "gateway".into(),
            instance: config.instance.clone(),
        },
        args.process.log_format,
    );
    // Before the upstream client is built: it presents this identity to the services.
    hotel_common::tls::internal::install_from(&settings.internal_tls, "gateway")?;
    let api_docs = args.api_docs.clone();
    // The gateway runs on threads of its own, each a current-thread runtime (a worker, see
    // `Application::run_until`); this first one also holds the admin listener and the
    // background tasks. The process runtime only waits for it.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("gateway-worker-0".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(BoxError::from)
                .and_then(|rt| rt.block_on(serve(config, api_docs, settings, args)));
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| BoxError::from("the gateway runtime stopped unexpectedly"))?
}

async fn serve(
    config: Config,
    api_docs: docs::ApiDocs,
    settings: Settings,
    args: GatewayArgs,
) -> Result<(), BoxError> {
    let app = Application::build_with_docs(config, &api_docs).await?;
    app.live()
        .set_loader(&settings, Box::new(move || load_settings(&args)));
    hotel_common::process::announce(app.local_addr());
    // Second, so launchers reading the first `listening on` line still get the edge.
    hotel_common::process::announce_admin(app.admin_addr());
    tracing::info!(
        addr = %app.local_addr(),
        admin = %app.admin_addr(),
        tls = app.tls.is_some(),
        "gateway listening"
    );
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

/// The public listener's TLS: the acceptor and the certificate it reloads.
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    cert: Arc<hotel_common::tls::ReloadingCert>,
    every: Duration,
}

/// A gateway with its listeners bound (port 0 picks free ports) and its live state
/// built, ready to serve.
pub struct Application {
    listener: TcpListener,
    admin_listener: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    /// The running configuration and its live state; swapped whole on reload.
    live: Arc<reload::Live>,
    /// The connection limits of `listener`.
    admission: Arc<listener::Admission>,
    /// With `[tls]`: the public listener speaks TLS.
    tls: Option<Tls>,
    admin: axum::Router,
    grace: Duration,
    /// Serving workers: the runtime that calls `run_until` and this many less one
    /// threads of their own.
    workers: usize,
    /// With a registry: follow room's event feed to invalidate cached rooms.
    room_events: Option<hotel_registry::client::RegistryClient>,
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
        let room_events = registry.clone();
        let app = Self::build_from(config, api_docs, move |_, cfg| match &registry {
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
        .await?;
        Ok(Application { room_events, ..app })
    }

    /// Like [`Application::build`] with each service's instance source chosen by
    /// `source` (tests publish instance sets themselves); a reload calls it again for
    /// each new or changed service.
    ///
    /// Every piece of live state is made here, from the plain data in `config`: the
    /// metrics registry, the upstream stacks, the edge protections (key cell, rate-limit
    /// buckets, in-flight counters) and the connection limits.
    pub async fn build_with(
        config: Config,
        source: impl FnMut(&str, &settings::ServiceConfig) -> Source + Send + 'static,
    ) -> Result<Application, BoxError> {
        Self::build_from(config, &docs::ApiDocs::new(), source).await
    }

    /// Like [`Application::build_with`], documenting the services in `api_docs`.
    pub async fn build_from(
        config: Config,
        api_docs: &docs::ApiDocs,
        source: impl FnMut(&str, &settings::ServiceConfig) -> Source + Send + 'static,
    ) -> Result<Application, BoxError> {
        let metrics = metrics::Metrics::new();
        let workers = match config.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let client = hotel_upstream::http_client(ClientOptions {
            connect_timeout: config.connect_timeout,
            pool_idle_timeout: config.pool_idle_timeout,
            pool_max_idle_per_host: config.pool_max_idle_per_host,
            workers,
        });
        let tls = match config.tls.files().map_err(BoxError::from)? {
            Some((cert, key)) => {
                let cert = hotel_common::tls::ReloadingCert::load(cert, key)?;
                let server = hotel_common::tls::server_config(cert.clone())?;
                Some(Tls {
                    acceptor: tokio_rustls::TlsAcceptor::from(server),
                    cert,
                    every: config.tls.reload_interval,
                })
            }
            None => None,
        };
        // The framing inspector cuts a chunked upload off past the largest route limit;
        // each route's own limit is enforced while its body is read (see `edge`). The
        // inspector is the listener's: a reload cannot raise it past its startup value.
        let max_body = config
            .routes
            .iter()
            .map(|r| r.max_body_bytes)
            .fold(config.edge.limits.max_body_bytes, u64::max)
            .max(settings::MAX_BODY_LIMIT);
        let admission = Arc::new(listener::Admission::new(
            &config.edge.limits,
            max_body,
            &config.edge.hygiene,
            metrics.clone(),
        ));
        let (listen, admin_listen) = (config.listen, config.admin_listen);
        let (instance, token, grace) = (
            config.instance.clone(),
            config.admin_token.as_deref().map(Arc::from),
            config.shutdown_grace,
        );
        let live = reload::Live::new(
            reload::Parts {
                client,
                metrics: metrics.clone(),
                docs: api_docs.clone(),
                source: Box::new(source),
            },
            config,
        );
        let admin = admin::router(admin::AdminState {
            instance,
            live: live.clone(),
            metrics,
            token,
        });
        let (listener, addr) = hotel_common::server::bind(listen).await?;
        let (admin_listener, admin_addr) = hotel_common::server::bind(admin_listen).await?;
        Ok(Application {
            listener,
            admin_listener,
            addr,
            admin_addr,
            live,
            admission,
            tls,
            admin,
            grace,
            workers,
            room_events: None,
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

    /// The live API keys of the running configuration, e.g. to reload the keys file
    /// alone (a configuration reload replaces them).
    pub fn api_keys(&self) -> Arc<auth::ApiKeys> {
        self.live.current().protections.keys().clone()
    }

    /// The running configuration, to reload it (see [`reload`]).
    pub fn live(&self) -> &Arc<reload::Live> {
        &self.live
    }

    /// Whether the public listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` resolves: then stops accepting, lets in-flight requests
    /// finish for up to the grace period, and returns. The admin listener keeps answering
    /// during the drain (status, metrics) and stops after it.
    ///
    /// Connections are served by `worker_threads` workers (0: one per core), each with
    /// its own accept loop on the one listening socket: the calling runtime, and a thread
    /// per further worker with a current-thread runtime of its own. A connection stays on
    /// the worker that accepted it, with everything its requests wake (the upstream
    /// connections of that worker's pool, see [`hotel_upstream::HttpClient`]); a busy
    /// worker is late to `accept`, so an idle one takes the next connection. The state
    /// behind the edge (configuration, balancers, breakers, buckets, cache, metrics) is
    /// one, shared by all workers.
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
        let reload = self.live.reload_on_sighup();
        let room_events = self
            .room_events
            .map(|r| cache::room_events::spawn(self.live.clone(), r));
        let metrics = self.live.metrics().clone();
        let cert_watch = self.tls.as_ref().map(|t| {
            t.cert.watch(t.every, move |r| {
                let outcome = match r {
                    Ok(()) => {
                        tracing::info!("TLS certificate reloaded from its files");
                        "accepted"
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; the served one stays");
                        "refused"
                    }
                };
                metrics
                    .tls_cert_reloads
                    .get_or_create(&metrics::ReloadLabels { outcome })
                    .inc();
            })
        });
        let edge = reload::LiveEdge(self.live.clone());
        let acceptor = self.tls.map(|t| t.acceptor);
        // Stops the other workers with this one, or when this future is dropped.
        let stop = CancellationToken::new();
        let stop_others = stop.clone().drop_guard();
        let mut others = Vec::with_capacity(self.workers.saturating_sub(1));
        for index in 1..self.workers {
            others.push(spawn_worker(
                index,
                &self.listener,
                self.admission.clone(),
                edge.clone(),
                acceptor.clone(),
                stop.clone(),
                self.grace,
            )?);
        }
        listener::serve(
            0,
            self.listener,
            self.admission,
            edge,
            acceptor,
            async move {
                shutdown.await;
                stop.cancel();
            },
            self.grace,
        )
        .await;
        drop(stop_others);
        for w in others {
            let _ = w.await;
        }
        reload.abort();
        if let Some(f) = room_events {
            f.abort();
        }
        if let Some(w) = cert_watch {
            w.abort();
        }
        drop(admin_stop);
        let _ = admin.await;
        Ok(())
    }
}

/// Starts serving worker `index`: a thread with a current-thread runtime running its own
/// accept loop on `listener` (the same socket, another descriptor) until `stop`, then
/// draining its connections for up to `grace`. Resolves when the worker has stopped.
fn spawn_worker(
    index: usize,
    listener: &TcpListener,
    admission: Arc<listener::Admission>,
    edge: reload::LiveEdge,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    use std::os::fd::AsFd;
    let socket = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    let (done, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("gateway-worker-{index}"))
        .spawn(move || {
            hotel_upstream::enter_worker(index);
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(l) => {
                            listener::serve(
                                index,
                                l,
                                admission,
                                edge,
                                tls,
                                stop.cancelled_owned(),
                                grace,
                            )
                            .await;
                        }
                        Err(e) => tracing::error!(worker = index, error = %e, "worker not started"),
                    }
                }),
                Err(e) => tracing::error!(worker = index, error = %e, "worker not started"),
            }
            let _ = done.send(());
        })?;
    Ok(stopped)
}
