//! `hotel up` and the commands that control a running local cluster (`status`, `kill`,
//! `stop`, `pause`, `resume`, `start`, `scale`), plus `hotel load` and `hotel events tail`.
//!
//! `hotel up` is a supervisor: it spawns the `hotel` binary once per instance (registry,
//! services, gateway), owns those children, and serves a small control API on loopback,
//! with the live dashboard (see [`dashboard`]) on the same listener.
//! The other commands find it through `<data-dir>/cluster.json`.
//!
//! Who may depend on it: the `hotel` binary only. It starts the other roles as child
//! processes of the same binary and talks to them over HTTP, so it depends on none of
//! their crates (only `hotel-common`).

pub mod clusterfile;
pub mod control;
pub mod dashboard;
pub mod events;
pub mod load;
mod output;
pub mod ports;
mod reload;
pub mod settings;
pub mod status;
pub mod supervisor;

use clusterfile::{ClusterFile, Lock};
use control::ControlClient;
use hotel_common::process::BoxError;
use settings::{ReplicaSpec, Role, UpSettings};
use std::{collections::BTreeMap, io::Write, path::PathBuf, process::ExitCode, sync::Arc};
use supervisor::{Supervisor, UpConfig};

/// Commands that launch or control a local cluster.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start a whole local cluster in the foreground: registry, N replicas of each
    /// service, gateway. Ctrl-C stops everything.
    Up(UpArgs),
    /// Show every instance: pid, registry state and the gateway's view (breaker,
    /// in-flight, latency, requests, failures).
    Status(StatusArgs),
    /// Kill an instance with SIGKILL (a crash).
    Kill(NameArgs),
    /// Stop an instance gracefully (SIGTERM: it deregisters and drains).
    Stop(NameArgs),
    /// Freeze an instance with SIGSTOP (a hung process with open sockets).
    Pause(NameArgs),
    /// Thaw a paused instance with SIGCONT.
    Resume(NameArgs),
    /// Start one more replica of a service (or restart the registry or gateway).
    Start(StartArgs),
    /// Start or stop replicas until SERVICE has N: `hotel scale room=3`.
    Scale(ScaleArgs),
    /// Inject a fault into an instance (a service replica or the registry): errors,
    /// latency, connection resets; `--clear` removes it. `hotel status` shows it.
    Fault(FaultArgs),
    /// Send steady, bounded load through the gateway and report ok/errors/latency.
    Load(load::LoadArgs),
    /// Watch the cluster's events: `hotel events tail [--type hotel.booking.*] [--json]`.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Make the gateway read its configuration file again (routes, keys, limits,
    /// policies, cache) without a restart; an invalid file is refused with the reason
    /// and the running configuration stays.
    Reload(ReloadArgs),
}

/// `hotel reload` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Print the gateway's JSON answer.
    #[arg(long)]
    json: bool,
}

/// Where the cluster lives (control commands).
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// The cluster's data directory (holds cluster.json).
    #[arg(long, env = "HOTEL_DATA_DIR", default_value = ".hotel")]
    pub data_dir: PathBuf,
}

/// `hotel up` options; each overrides `config/hotel.toml`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Replicas: `3` for every service, or `room=3,booking=2`.
    #[arg(long)]
    pub replicas: Option<ReplicaSpec>,
    /// Data directory for databases, logs and cluster.json [config: data_dir, default .hotel].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Topology file [default: config/hotel.toml when it exists].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Gateway port on 127.0.0.1 (0: any free port) [default 8080].
    #[arg(long)]
    pub gateway_port: Option<u16>,
    /// Gateway admin port on 127.0.0.1 (0: any free port) [default 9901].
    #[arg(long)]
    pub admin_port: Option<u16>,
    /// Registry port on 127.0.0.1 (0: any free port) [default 8761].
    #[arg(long)]
    pub registry_port: Option<u16>,
    /// Control API port on 127.0.0.1 [default 0: any free port].
    #[arg(long)]
    pub control_port: Option<u16>,
    /// Restart instances that exit unasked (crash, `hotel kill`) after a delay.
    #[arg(long)]
    pub restart: bool,
    /// Export traces to this OTLP endpoint from every process (Jaeger: http://localhost:4317).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The Jaeger UI that the dashboard's trace links open [default: port 16686 on the
    /// OTLP endpoint's host, when --otlp-endpoint is set].
    #[arg(long, value_name = "URL")]
    pub jaeger_ui: Option<String>,
    /// The gateway's configuration file, which `hotel reload` reads again [default:
    /// config/gateway.toml when it exists].
    #[arg(long)]
    pub gateway_config: Option<PathBuf>,
    /// Serve the gateway over HTTPS with a certificate from a local CA, created in
    /// <data-dir>/tls/ on first use (the banner says how to trust it).
    #[arg(long)]
    pub tls: bool,
    /// Mutual TLS between every component (gateway -> services, services -> registry,
    /// booking -> room and customer): each process gets its own certificate from the
    /// local CA in <data-dir>/tls/, naming its role, and refuses callers of the wrong
    /// role. `hotel status` and `hotel events` use the operators' certificate
    /// (`control`) recorded in cluster.json.
    #[arg(long)]
    pub internal_tls: bool,
    /// Put every service's database on this PostgreSQL server
    /// (`postgres://USER@HOST:PORT/DB`): customer, room and booking each get their own
    /// database `hotel_<service>` there, created when missing (and the role may).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Carry the services' events over this NATS JetStream server
    /// (`nats://HOST:PORT`, run with `-js`) instead of the embedded bus: every service
    /// instance gets it as `events.url`.
    #[arg(long = "events", value_name = "URL")]
    pub events: Option<String>,
}

/// `hotel status` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    dir: DataDirArg,
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

/// Options of commands that name one instance.
#[derive(Debug, Clone, clap::Args)]
pub struct NameArgs {
    /// Instance name, such as `room-2`, `registry` or `gateway`.
    name: String,
    #[command(flatten)]
    dir: DataDirArg,
}

/// `hotel start` options.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// customer, room, booking (one more replica), registry or gateway (restart it).
    service: Role,
    #[command(flatten)]
    dir: DataDirArg,
}

/// `hotel scale` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// SERVICE=N, such as `room=3`.
    #[arg(value_parser = parse_scale)]
    target: (Role, u32),
    /// Allow `SERVICE=0`, which stops every instance of the service.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    dir: DataDirArg,
}

/// `hotel fault` options.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("effect").multiple(true).args(["error_rate", "latency", "abort_rate"])))]
pub struct FaultArgs {
    /// Instance name, such as `room-2` or `registry`.
    name: String,
    /// Share of requests answered with `--status` instead (0 to 1).
    #[arg(long, value_name = "R")]
    error_rate: Option<f64>,
    /// Status of an injected error (400 to 599) [default: 503].
    #[arg(long, value_name = "S", requires = "error_rate")]
    status: Option<u16>,
    /// Delay added to every request, such as `300ms`.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    latency: Option<std::time::Duration>,
    /// The delay varies by up to this much either way (at most --latency).
    #[arg(long, value_name = "D", value_parser = parse_duration, requires = "latency")]
    jitter: Option<std::time::Duration>,
    /// Share of requests whose connection is reset without an answer (0 to 1).
    #[arg(long, value_name = "R")]
    abort_rate: Option<f64>,
    /// Clear the fault by itself after this long, such as `30s`.
    #[arg(long = "for", value_name = "D", value_parser = parse_duration)]
    for_: Option<std::time::Duration>,
    /// Remove the fault.
    #[arg(long, conflicts_with_all = ["error_rate", "status", "latency", "jitter", "abort_rate", "for_"])]
    clear: bool,
    #[command(flatten)]
    dir: DataDirArg,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration such as 300ms or 30s: {e}"))
}

impl FaultArgs {
    /// The fault asked for (`None` with `--clear`), checked; errors name the flag.
    fn spec(&self) -> Result<Option<hotel_common::fault::FaultSpec>, String> {
        if self.clear {
            return Ok(None);
        }
        let defaults = hotel_common::fault::FaultSpec::default();
        let spec = hotel_common::fault::FaultSpec {
            error_rate: self.error_rate.unwrap_or(0.0),
            status: self.status.unwrap_or(defaults.status),
            latency: self.latency.unwrap_or_default(),
            jitter: self.jitter.unwrap_or_default(),
            abort_rate: self.abort_rate.unwrap_or(0.0),
            duration: self.for_,
        };
        spec.validate().map_err(|(field, why)| {
            if field == "error_rate" && self.error_rate.is_none() {
                "give --error-rate, --latency or --abort-rate (or --clear)".to_owned()
            } else {
                format!("--{}: {why}", field.replace('_', "-"))
            }
        })?;
        Ok(Some(spec))
    }
}

fn parse_scale(s: &str) -> Result<(Role, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not SERVICE=N (e.g. room=3)"))?;
    let role: Role = name.trim().parse()?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a whole number"))?;
    Ok((role, n))
}

/// Runs a cluster command; the exit code is the command's verdict.
pub async fn run(cmd: ClusterCommand) -> Result<ExitCode, BoxError> {
    match cmd {
        ClusterCommand::Up(args) => up(args).await,
        ClusterCommand::Status(args) => status::run(&args.dir.data_dir, args.json).await,
        ClusterCommand::Kill(a) => act(&a, "kill").await,
        ClusterCommand::Stop(a) => act(&a, "stop").await,
        ClusterCommand::Pause(a) => act(&a, "pause").await,
        ClusterCommand::Resume(a) => act(&a, "resume").await,
        ClusterCommand::Start(a) => {
            let client = ControlClient::open(&a.dir.data_dir)?;
            let views = client.start(a.service.as_str()).await?;
            output::print_changes("started", &views);
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Scale(a) => {
            let client = ControlClient::open(&a.dir.data_dir)?;
            let (role, n) = a.target;
            let views = client.scale(role.as_str(), n, a.force).await?;
            if views.is_empty() {
                output::line(&format!("{role} already has {n} replicas"));
            }
            for v in &views {
                let verb = if v.state.is_live() {
                    "started"
                } else {
                    "stopped"
                };
                output::print_changes(verb, std::slice::from_ref(v));
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Fault(a) => {
            let spec = a.spec()?;
            let client = ControlClient::open(&a.dir.data_dir)?;
            let views = client.fault(&a.name, spec.as_ref()).await?;
            let now = supervisor::unix_ms();
            for v in &views {
                match &v.fault {
                    Some(f) => output::line(&format!("{}: fault set: {}", v.name, f.describe(now))),
                    None => output::line(&format!("{}: no fault", v.name)),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::Load(args) => load::run(args).await,
        ClusterCommand::Events(cmd) => events::run(cmd).await,
        ClusterCommand::Reload(a) => reload::run(&a.dir.data_dir, a.json).await,
    }
}

async fn act(a: &NameArgs, action: &str) -> Result<ExitCode, BoxError> {
    let client = ControlClient::open(&a.dir.data_dir)?;
    let views = client.act(&a.name, action).await?;
    let verb = match action {
        "kill" => "killed",
        "stop" => "stopped",
        "pause" => "paused",
        _ => "resumed",
    };
    output::print_changes(verb, &views);
    Ok(ExitCode::SUCCESS)
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Kills instances a previous `hotel up` of this data directory left running (it was
/// killed itself, so it could not stop them); they would hold its ports and databases.
/// A pid counts only if it still runs `hotel` with this data directory on its command line.
fn reap_orphans(data_dir: &std::path::Path) {
    let Ok(old) = ClusterFile::read(data_dir) else {
        return;
    };
    let marker = data_dir.display().to_string();
    for inst in old.instances {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", inst.pid)).unwrap_or_default();
        if clusterfile::pid_alive(inst.pid) && String::from_utf8_lossy(&cmdline).contains(&marker) {
            tracing::warn!(instance = %inst.name, pid = inst.pid, "killing an instance left running by a previous hotel up");
            if let Ok(raw) = i32::try_from(inst.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(raw),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Warns when the data directory (made by someone else, or by an older `hotel up`) lets
/// other users in: it holds `cluster.json` with every token.
fn warn_if_shared(data_dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(data_dir)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            dir = %data_dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the data directory is open to other users and will hold every token of the cluster; `chmod 700` it"
        );
    }
}

/// Resolves settings: defaults < config file < `HOTEL_CLUSTER__*` < flags.
fn resolve(args: &UpArgs) -> Result<UpSettings, BoxError> {
    let default_file = PathBuf::from("config/hotel.toml");
    let file = match &args.config {
        Some(p) => Some(p.clone()),
        None if default_file.exists() => Some(default_file),
        None => None,
    };
    let mut s: UpSettings =
        hotel_common::config::load(&UpSettings::default(), file.as_deref(), "cluster")?;
    if let Some(spec) = &args.replicas {
        s.replicas.apply(spec);
    }
    if let Some(d) = &args.data_dir {
        s.data_dir = d.clone();
    }
    let ports = &mut s.ports;
    for (flag, port) in [
        (args.gateway_port, &mut ports.gateway),
        (args.admin_port, &mut ports.admin),
        (args.registry_port, &mut ports.registry),
        (args.control_port, &mut ports.control),
    ] {
        if let Some(p) = flag {
            *port = p;
        }
    }
    s.restart |= args.restart;
    for role in Role::SERVICES {
        if s.replicas.of(role) == 0 {
            return Err(format!(
                "replicas.{role}: a cluster needs at least 1 replica of each service"
            )
            .into());
        }
    }
    Ok(s)
}

/// The Jaeger UI for an OTLP endpoint on the same host (Jaeger serves both).
fn jaeger_ui(endpoint: &str) -> String {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .filter(|h| !h.is_empty())
        .unwrap_or("localhost");
    format!("http://{host}:16686")
}

/// `--jaeger-ui`: an http(s) URL, without a trailing slash.
fn checked_jaeger_ui(url: &str) -> Result<String, BoxError> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("--jaeger-ui {url:?}: give an http:// or https:// URL"))?;
    if rest.is_empty() || rest.contains(['"', '<', '>', ' ', '\'']) {
        return Err(format!("--jaeger-ui {url:?}: not a URL").into());
    }
    Ok(url.to_owned())
}

/// The fixed ports of a cluster, with the settings that choose each.
fn fixed_ports(s: &UpSettings) -> [ports::FixedPort; 4] {
    use ports::FixedPort;
    let p = &s.ports;
    [
        FixedPort {
            what: "registry",
            port: p.registry,
            flag: "--registry-port",
            key: "registry",
        },
        FixedPort {
            what: "gateway",
            port: p.gateway,
            flag: "--gateway-port",
            key: "gateway",
        },
        FixedPort {
            what: "gateway admin",
            port: p.admin,
            flag: "--admin-port",
            key: "admin",
        },
        FixedPort {
            what: "control API",
            port: p.control,
            flag: "--control-port",
            key: "control",
        },
    ]
}

/// Where `hotel up` writes its own log: `<data-dir>/logs/up.log`. The terminal is kept
/// for the banner; only warnings and errors reach it as well.
pub const UP_LOG: &str = "up.log";

fn init_logging(
    data_dir: &std::path::Path,
) -> Result<hotel_common::telemetry::TelemetryGuard, BoxError> {
    use std::os::unix::fs::OpenOptionsExt;
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let path = data_dir.join("logs").join(UP_LOG);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(clusterfile::FILE_MODE)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let writer = Arc::new(file).and(std::io::stderr.with_max_level(tracing::Level::WARN));
    Ok(hotel_common::telemetry::init_with_writer(
        &hotel_common::telemetry::Identity {
            role: "up".into(),
            instance: "up".into(),
        },
        hotel_common::telemetry::LogFormat::Text,
        hotel_common::telemetry::BoxMakeWriter::new(writer),
    ))
}

async fn up(args: UpArgs) -> Result<ExitCode, BoxError> {
    let settings = resolve(&args)?;
    // Every file this process and its children create is the owner's only (the modes
    // are also set explicitly where the files are made; this covers the rest).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    clusterfile::private_dir(&settings.data_dir.join("logs"))
        .map_err(|e| format!("cannot create {}: {e}", settings.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&settings.data_dir)?;
    let _lock = Lock::acquire(&data_dir)?;
    let _telemetry = init_logging(&data_dir)?;
    warn_if_shared(&data_dir);
    reap_orphans(&data_dir);
    ports::check_free(&fixed_ports(&settings))?;
    let pick = |configured: &str, prefix: &str| {
        if configured.is_empty() {
            random_token(prefix)
        } else {
            configured.to_owned()
        }
    };
    let otlp = args.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
    let gateway_config = match &args.gateway_config {
        Some(p) => Some(
            std::fs::canonicalize(p)
                .map_err(|e| format!("--gateway-config {}: {e}", p.display()))?,
        ),
        None => std::fs::canonicalize("config/gateway.toml").ok(),
    };
    let tls = if args.tls {
        Some(hotel_common::tls::local_ca::ensure(&data_dir.join("tls"))?)
    } else {
        None
    };
    let internal_tls = if args.internal_tls {
        let files = hotel_common::tls::local_ca::ensure_roles(
            &data_dir.join("tls"),
            &hotel_common::tls::internal::IDENTITIES,
        )?;
        // The supervisor calls the services' /readyz and /admin/fault as `control`.
        let control = &files[hotel_common::tls::internal::CONTROL_ROLE];
        hotel_common::tls::internal::install(hotel_common::tls::internal::Identity::load(
            hotel_common::tls::internal::CONTROL_ROLE,
            &control.ca,
            &control.cert,
            &control.key,
        )?);
        Some(files)
    } else {
        None
    };
    let mut databases = BTreeMap::new();
    if let Some(server) = args.postgres.as_deref().filter(|u| !u.trim().is_empty()) {
        for role in Role::SERVICES {
            let url = hotel_common::db::ensure_postgres_database(server, &format!("hotel_{role}"))
                .await
                .map_err(|e| format!("--postgres: {e}"))?;
            databases.insert(role, url);
        }
    }
    let events_url = match args.events.as_deref().map(str::trim) {
        Some(url) if !url.is_empty() => {
            hotel_events::nats::check_url(url).map_err(|why| format!("--events {url:?}: {why}"))?;
            Some(url.to_owned())
        }
        _ => None,
    };
    let cfg = UpConfig {
        databases,
        events_url,
        registry_token: pick(&settings.registry_token, "reg_"),
        admin_token: pick(&settings.admin_token, "adm_"),
        api_key: pick(&settings.api_key, "hk_dev_"),
        control_token: random_token("ctl_"),
        fault_token: random_token("flt_"),
        exe: std::env::current_exe()?,
        otlp_endpoint: otlp.clone(),
        data_dir: data_dir.clone(),
        settings,
        gateway_config,
        tls,
        internal_tls,
    };
    let (listener, control_addr) =
        hotel_common::server::bind(([127, 0, 0, 1], cfg.settings.ports.control).into()).await?;
    let control_token = cfg.control_token.clone();
    let jaeger = match (&args.jaeger_ui, otlp.as_deref()) {
        (Some(url), Some(_)) => Some(checked_jaeger_ui(url)?),
        (Some(_), None) => {
            return Err("--jaeger-ui: traces are exported only with --otlp-endpoint".into());
        }
        (None, endpoint) => endpoint.map(jaeger_ui),
    };
    let dashboard = dashboard::DashboardAuth::new(random_token("dsh_"), random_token("dss_"));
    let sup = Supervisor::new(cfg, format!("http://{control_addr}"), jaeger);
    sup.set_dashboard_url(format!(
        "http://{control_addr}/dashboard/login?token={}",
        dashboard.token()
    ));
    sup.cluster_file().write(&data_dir)?;
    let stop_control = tokio_util::sync::CancellationToken::new();
    let (published, watching) = tokio::sync::watch::channel(Arc::new(
        dashboard::sampler::Sampler::default().absorb(Default::default()),
    ));
    let sampler = tokio::spawn(dashboard::sampler::Sampler::default().run(
        Arc::clone(&sup),
        published,
        stop_control.clone(),
    ));
    let app = control::router(Arc::clone(&sup), control_token, Some(dashboard.clone()))
        .merge(dashboard::router(dashboard, watching));
    let control = tokio::spawn(hotel_common::server::serve(
        listener,
        app,
        stop_control.clone().cancelled_owned(),
        std::time::Duration::from_secs(1),
    ));

    let shutdown = hotel_common::server::shutdown_signal();
    tokio::pin!(shutdown);
    let started = tokio::select! {
        r = sup.start_all() => Some(r),
        () = &mut shutdown => None,
    };
    let mut code = match started {
        Some(Ok(())) => {
            sup.mark_ready();
            let file = sup.cluster_file();
            let jaeger = match &file.jaeger_url {
                Some(url) => Some(output::JaegerKind::probe(url).await),
                None => None,
            };
            output::print_banner(&file, &sup.instances(), &data_dir, jaeger);
            shutdown.await;
            output::line(
                "stopping: services, then the gateway, then the registry (Ctrl-C again to kill them)",
            );
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "hotel up: {e}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    };
    // A second Ctrl-C while draining kills what is left, as docker compose does.
    tokio::select! {
        () = sup.shutdown() => {}
        () = hotel_common::server::shutdown_signal() => {
            output::line("second signal: killing every instance now");
            sup.kill_all().await;
            code = ExitCode::FAILURE;
        }
    }
    stop_control.cancel();
    let _ = control.await;
    let _ = sampler.await;
    sup.remove_cluster_file();
    output::line("stopped");
    Ok(code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scale_targets_parse_service_and_count() {
        assert_eq!(parse_scale("room=3").unwrap(), (Role::Room, 3));
        assert!(parse_scale("room").unwrap_err().contains("SERVICE=N"));
        assert!(parse_scale("spa=1").unwrap_err().contains("unknown role"));
    }

    #[test]
    fn fault_flags_become_a_checked_spec_and_bad_ones_name_the_flag() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            fault: FaultArgs,
        }
        let spec = |args: &[&str]| {
            let mut all = vec!["hotel", "room-2"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
                .map_err(|e| e.to_string())?
                .fault
                .spec()
        };
        let s = spec(&["--error-rate", "0.5", "--latency", "300ms", "--for", "30s"])
            .unwrap()
            .unwrap();
        assert_eq!(s.error_rate, 0.5);
        assert_eq!(s.status, 503);
        assert_eq!(s.latency, std::time::Duration::from_millis(300));
        assert_eq!(s.duration, Some(std::time::Duration::from_secs(30)));
        assert!(spec(&["--clear"]).unwrap().is_none());
        assert!(
            spec(&[])
                .unwrap_err()
                .contains("--error-rate, --latency or --abort-rate")
        );
        assert!(
            spec(&["--error-rate", "2"])
                .unwrap_err()
                .contains("--error-rate")
        );
        assert!(
            spec(&["--error-rate", "0.1", "--status", "200"])
                .unwrap_err()
                .contains("--status")
        );
        assert!(spec(&["--latency", "soon"]).unwrap_err().contains("soon"));
        assert!(spec(&["--clear", "--error-rate", "0.1"]).is_err());
    }

    #[test]
    fn jaeger_ui_flag_takes_http_urls_only() {
        assert_eq!(
            checked_jaeger_ui("http://127.0.0.1:16686/").unwrap(),
            "http://127.0.0.1:16686"
        );
        assert!(checked_jaeger_ui("javascript:alert(1)").is_err());
        assert!(checked_jaeger_ui("http://a\"b").is_err());
        assert!(checked_jaeger_ui("http://").is_err());
    }

    #[test]
    fn jaeger_ui_is_on_the_otlp_host() {
        assert_eq!(jaeger_ui("http://127.0.0.1:4317"), "http://127.0.0.1:16686");
        assert_eq!(
            jaeger_ui("http://jaeger:4318/v1/traces"),
            "http://jaeger:16686"
        );
    }

    #[test]
    fn generated_tokens_differ_and_carry_their_prefix() {
        let a = random_token("hk_dev_");
        assert!(a.starts_with("hk_dev_") && a.len() == 39);
        assert_ne!(a, random_token("hk_dev_"));
    }
}
