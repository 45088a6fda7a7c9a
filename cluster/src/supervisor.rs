//! The `hotel up` supervisor: it owns every child process of a local cluster, starts
//! them in dependency order, keeps `cluster.json` current, carries out control requests
//! (kill, stop, pause, resume, start, scale) and stops everything in reverse order.
//!
//! Each child runs in its own process group, so a Ctrl-C in the terminal reaches only
//! the supervisor, which then stops the services first (they deregister and drain), the
//! gateway next and the registry last.

use crate::{
    clusterfile::{ClusterFile, InstanceEntry},
    settings::{Role, UpSettings},
};
use hotel_common::fault::FaultSpec;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::{oneshot, watch},
    time::Instant,
};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Spawned; not yet ready.
    Starting,
    /// Answered `/readyz`.
    Running,
    /// Frozen with SIGSTOP.
    Paused,
    /// SIGTERM sent; draining.
    Stopping,
    /// Exited after being asked to stop.
    Stopped,
    /// Exited after `hotel kill`.
    Killed,
    /// Exited on its own (a crash).
    Exited,
    /// Never became ready.
    Failed,
}

impl InstanceState {
    /// Whether the process is (believed to be) alive.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Paused | Self::Stopping
        )
    }

    /// The lower-case name shown in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Killed => "killed",
            Self::Exited => "exited",
            Self::Failed => "failed",
        }
    }
}

/// A fault set on an instance with `hotel fault`, as the supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// What is injected.
    pub spec: FaultSpec,
    /// `error 50% (503), latency 300ms`.
    pub summary: String,
    /// When it clears itself (Unix milliseconds), when set with `for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_ms: Option<u64>,
}

impl ActiveFault {
    /// `error 50% (503), expires in 12s`.
    pub fn describe(&self, now_ms: u64) -> String {
        match self.expires_unix_ms {
            Some(t) => format!(
                "{}, clears in {}s",
                self.summary,
                t.saturating_sub(now_ms).div_ceil(1000)
            ),
            None => format!("{}, until cleared", self.summary),
        }
    }
}

/// One instance as the control API reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    /// `room-2`, `registry`, `gateway`.
    pub name: String,
    /// Its role.
    pub service: String,
    /// OS pid of the current (or last) process.
    pub pid: u32,
    /// `127.0.0.1:PORT` once announced.
    pub address: Option<String>,
    /// Life-cycle state.
    pub state: InstanceState,
    /// How many times the supervisor restarted it after a crash.
    pub restarts: u32,
    /// How the last process ended (`signal 9 (SIGKILL)`, `exit status 1`).
    pub last_exit: Option<String>,
    /// When the current process answered `/readyz` (Unix milliseconds). A service
    /// instance that was ready before the current registry process registered with the
    /// one before it: `hotel status` tells re-registering from absent by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_unix_ms: Option<u64>,
    /// The fault injected into it (`hotel fault`), while one is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<ActiveFault>,
}

/// What the user asked of an instance; decides how its exit is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    None,
    Stop,
    Kill,
}

struct Instance {
    name: String,
    role: Role,
    index: u32,
    pid: u32,
    address: Option<SocketAddr>,
    state: InstanceState,
    intent: Intent,
    restarts: u32,
    last_exit: Option<String>,
    ready_unix_ms: Option<u64>,
    /// Becomes `Some(how)` when the process has been reaped; stop and kill wait on it.
    exited: watch::Receiver<Option<String>>,
    /// The fault set on this process (it dies with the process).
    fault: Option<ActiveFault>,
}

impl Instance {
    fn view(&self) -> InstanceView {
        InstanceView {
            name: self.name.clone(),
            service: self.role.as_str().to_owned(),
            pid: self.pid,
            address: self.address.map(|a| a.to_string()),
            state: self.state,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
            ready_unix_ms: self.ready_unix_ms,
            fault: self
                .fault
                .clone()
                .filter(|f| f.expires_unix_ms.is_none_or(|t| t > unix_ms())),
        }
    }
}

/// Why a control request could not be carried out; the text is shown to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No instance by that name.
    #[error("no instance named {name:?}; known instances: {known}")]
    UnknownInstance {
        /// The name asked for.
        name: String,
        /// Every known name, comma-separated.
        known: String,
    },
    /// The instance is not alive.
    #[error("{name} is not running (it is {state})")]
    NotRunning {
        /// The instance.
        name: String,
        /// Its state.
        state: &'static str,
    },
    /// Starting a singleton that already runs.
    #[error("{0} is already running; there is exactly one {0}")]
    AlreadyRunning(String),
    /// `scale` of the registry or gateway.
    #[error("{0} always runs exactly one instance; use `hotel start {0}` after it stopped")]
    NotScalable(String),
    /// A replica count out of range.
    #[error("replicas: {0}")]
    BadCount(String),
    /// `scale SERVICE=0` without `--force`: it would remove every instance.
    #[error(
        "refusing to stop every {service} instance ({names}): with none left, every request \
         that needs {service} fails with 503 until one is started again. \
         Run `hotel scale {service}=0 --force` to do it anyway"
    )]
    WouldRemoveAll {
        /// The service.
        service: String,
        /// The instances that would be stopped, comma-separated.
        names: String,
    },
    /// The child did not become ready.
    #[error("{0}")]
    StartFailed(String),
    /// The cluster is shutting down.
    #[error("the cluster is shutting down")]
    ShuttingDown,
    /// `hotel fault` on an instance without a fault switch (the gateway).
    #[error("{0} has no fault switch: faults are injected into the services and the registry")]
    NoFaultSwitch(String),
    /// The instance did not take the fault (paused, or refused it).
    #[error("{name} did not answer the fault request: {why}")]
    FaultFailed {
        /// The instance.
        name: String,
        /// What went wrong.
        why: String,
    },
}

/// The resolved settings of one `hotel up` run.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Settings after file, environment and flags.
    pub settings: UpSettings,
    /// Absolute data directory.
    pub data_dir: PathBuf,
    /// The `hotel` executable to spawn.
    pub exe: PathBuf,
    /// OTLP endpoint passed to every child, when set.
    pub otlp_endpoint: Option<String>,
    /// Each service's `database.url` (`hotel up --postgres`); a service missing here
    /// keeps its SQLite file in the data directory.
    pub databases: BTreeMap<Role, String>,
    /// Every service's `events.url` (`hotel up --events nats://...`); `None`: the
    /// embedded bus.
    pub events_url: Option<String>,
    /// Bearer token of the registry.
    pub registry_token: String,
    /// Bearer token of the gateway admin API.
    pub admin_token: String,
    /// Development API key of the gateway.
    pub api_key: String,
    /// Bearer token of the control API.
    pub control_token: String,
    /// Bearer token of every instance's fault control endpoint (`/admin/fault`).
    pub fault_token: String,
    /// The gateway's configuration file (`--config`), what `hotel reload` re-reads.
    pub gateway_config: Option<PathBuf>,
    /// With `--tls`: the local CA and the gateway's certificate.
    pub tls: Option<hotel_common::tls::local_ca::Files>,
    /// With `--internal-tls`: every role's certificate for mutual TLS (and `control`'s,
    /// the supervisor's and the CLI's own), by role.
    pub internal_tls: Option<BTreeMap<String, hotel_common::tls::local_ca::RoleFiles>>,
}

/// The supervisor of one local cluster. Cheap to share (`Arc`).
pub struct Supervisor {
    cfg: UpConfig,
    /// Every instance ever started (dead ones stay until replaced) and the base of
    /// `cluster.json`; held only for short, non-async sections.
    state: Mutex<State>,
    http: reqwest::Client,
    /// Set once shutdown begins: no more restarts or starts.
    shutting_down: AtomicBool,
}

struct State {
    instances: Vec<Instance>,
    file: ClusterFile,
    /// The addresses of the registry and gateway, reused when they are restarted so that
    /// every client keeps its URL.
    fixed: BTreeMap<Role, SocketAddr>,
    /// Set when `cluster.json` has been removed at the end: nothing writes it again.
    closed: bool,
}

/// Environment variables that configure a child process in `hotel up`; the contract with
/// the other roles' `Settings` (`HOTEL_<ROLE>__<KEY>`).
fn child_env(role: Role, cfg: &UpConfig, urls: &ChildUrls) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let prefix = format!("HOTEL_{}__", role.as_str().to_ascii_uppercase());
    match role {
        Role::Registry => {
            env.push((format!("{prefix}TOKEN"), cfg.registry_token.clone()));
            env.push((format!("{prefix}FAULT_TOKEN"), cfg.fault_token.clone()));
        }
        Role::Gateway => {
            env.push((format!("{prefix}REGISTRY__URL"), urls.registry.clone()));
            env.push((
                format!("{prefix}REGISTRY__TOKEN"),
                cfg.registry_token.clone(),
            ));
            env.push((format!("{prefix}ADMIN_TOKEN"), cfg.admin_token.clone()));
            if let Some(a) = urls.admin {
                env.push((format!("{prefix}ADMIN_LISTEN"), a.to_string()));
            }
            // Accepted only while the gateway listens on loopback, as it does here.
            env.push((format!("{prefix}AUTH__DEV_KEY"), cfg.api_key.clone()));
            if let Some(tls) = &cfg.tls {
                env.push((
                    format!("{prefix}TLS__CERT"),
                    tls.gateway_cert.display().to_string(),
                ));
                env.push((
                    format!("{prefix}TLS__KEY"),
                    tls.gateway_key.display().to_string(),
                ));
            }
        }
        _ => {
            env.push((format!("{prefix}REGISTRY__URL"), urls.registry.clone()));
            env.push((
                format!("{prefix}REGISTRY__TOKEN"),
                cfg.registry_token.clone(),
            ));
            env.push((format!("{prefix}FAULT_TOKEN"), cfg.fault_token.clone()));
            if let Some(url) = cfg.databases.get(&role) {
                env.push((format!("{prefix}DATABASE__URL"), url.clone()));
            }
            if let Some(url) = &cfg.events_url {
                env.push((format!("{prefix}EVENTS__URL"), url.clone()));
            }
        }
    }
    if let Some(files) = cfg.internal_tls.as_ref().and_then(|f| f.get(role.as_str())) {
        env.push((format!("{prefix}INTERNAL_TLS__ENABLED"), "true".into()));
        for (key, path) in [
            ("CA", &files.ca),
            ("CERT", &files.cert),
            ("KEY", &files.key),
        ] {
            env.push((
                format!("{prefix}INTERNAL_TLS__{key}"),
                path.display().to_string(),
            ));
        }
    }
    if let Some(endpoint) = &cfg.otlp_endpoint {
        env.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
    }
    env
}

/// The addresses a child is told about.
struct ChildUrls {
    /// `http://ADDR` of the registry.
    registry: String,
    /// The gateway's admin address.
    admin: Option<SocketAddr>,
}

/// Environment a child must not inherit from `hotel up`: these would override the flags
/// and files the supervisor chooses for it.
const SCRUBBED_ENV: [&str; 5] = [
    "HOTEL_LISTEN",
    "HOTEL_DATA_DIR",
    "HOTEL_CONFIG",
    "HOTEL_INSTANCE",
    "HOTEL_LOG_FORMAT",
];

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(sig)) => match Signal::try_from(sig) {
                Ok(name) => format!("signal {sig} ({})", name.as_str()),
                Err(_) => format!("signal {sig}"),
            },
            _ => "ended".to_owned(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// Now, in milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn signal(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

impl Supervisor {
    /// A supervisor with nothing started yet; `control_url` is where its control API
    /// listens.
    pub fn new(cfg: UpConfig, control_url: String, jaeger_url: Option<String>) -> Arc<Self> {
        let file = ClusterFile {
            api_key: cfg.api_key.clone(),
            admin_token: cfg.admin_token.clone(),
            registry_token: cfg.registry_token.clone(),
            control_url,
            control_token: cfg.control_token.clone(),
            supervisor_pid: std::process::id(),
            jaeger_url,
            ca_cert: cfg.tls.as_ref().map(|t| t.ca_cert.display().to_string()),
            internal_tls: cfg
                .internal_tls
                .as_ref()
                .and_then(|f| f.get(hotel_common::tls::internal::CONTROL_ROLE))
                .map(crate::clusterfile::IdentityFiles::from),
            ..ClusterFile::default()
        };
        // With --internal-tls, `hotel up` installed the operators' identity first.
        let http = hotel_common::tls::internal::reqwest_client()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Arc::new(Supervisor {
            cfg,
            state: Mutex::new(State {
                instances: Vec::new(),
                file,
                fixed: BTreeMap::new(),
                closed: false,
            }),
            http,
            shutting_down: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resolved configuration.
    pub fn config(&self) -> &UpConfig {
        &self.cfg
    }

    /// Every instance, in start order (role, then index).
    pub fn instances(&self) -> Vec<InstanceView> {
        let st = self.lock();
        let mut v: Vec<_> = st
            .instances
            .iter()
            .map(|i| (i.role, i.index, i.view()))
            .collect();
        v.sort_by_key(|(r, i, _)| (*r, *i));
        v.into_iter().map(|(_, _, view)| view).collect()
    }

    /// A copy of what `cluster.json` holds now.
    pub fn cluster_file(&self) -> ClusterFile {
        Self::snapshot(&self.lock())
    }

    fn snapshot(st: &State) -> ClusterFile {
        let mut file = st.file.clone();
        let mut live: Vec<_> = st.instances.iter().filter(|i| i.state.is_live()).collect();
        live.sort_by_key(|i| (i.role, i.index));
        file.instances = live
            .into_iter()
            .map(|i| InstanceEntry {
                name: i.name.clone(),
                service: i.role.as_str().to_owned(),
                pid: i.pid,
                address: i.address.map(|a| a.to_string()),
                state: i.state.as_str().to_owned(),
            })
            .collect();
        file
    }

    /// Rewrites `cluster.json`; called with the state lock held so writes keep their order.
    fn persist(&self, st: &State) {
        if st.closed {
            return;
        }
        if let Err(e) = Self::snapshot(st).write(&self.cfg.data_dir) {
            tracing::warn!(error = %e, "cannot write cluster.json");
        }
    }

    /// Records the dashboard's login URL for `cluster.json` (`dashboard_url`).
    pub fn set_dashboard_url(&self, url: String) {
        let mut st = self.lock();
        st.file.dashboard_url = Some(url);
        self.persist(&st);
    }

    /// Marks the initial topology ready in `cluster.json`.
    pub fn mark_ready(&self) {
        let mut st = self.lock();
        st.file.ready = true;
        self.persist(&st);
    }

    fn registry_url(&self) -> String {
        self.lock().file.registry_url.clone().unwrap_or_default()
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.cfg.data_dir.join("logs").join(format!("{name}.log"))
    }

    /// Starts the initial topology in dependency order: registry, customer and room,
    /// booking, gateway. Stops at the first instance that does not become ready.
    pub async fn start_all(self: &Arc<Self>) -> Result<(), ControlError> {
        let ports = self.cfg.settings.ports.clone();
        let registry = self
            .launch(
                Role::Registry,
                1,
                SocketAddr::from(([127, 0, 0, 1], ports.registry)),
            )
            .await?;
        {
            let mut st = self.lock();
            st.file.registry_url = Some(hotel_common::tls::internal::base_url(registry));
            st.fixed.insert(Role::Registry, registry);
            self.persist(&st);
        }
        for group in [&[Role::Customer, Role::Room][..], &[Role::Booking][..]] {
            let mut starts = Vec::new();
            for role in group {
                for index in 1..=self.cfg.settings.replicas.of(*role) {
                    starts.push(self.launch(*role, index, SocketAddr::from(([127, 0, 0, 1], 0))));
                }
            }
            for result in futures::future::join_all(starts).await {
                result?;
            }
        }
        let gateway = self
            .launch(
                Role::Gateway,
                1,
                SocketAddr::from(([127, 0, 0, 1], ports.gateway)),
            )
            .await?;
        let mut st = self.lock();
        let scheme = if self.cfg.tls.is_some() {
            "https"
        } else {
            "http"
        };
        st.file.gateway_url = Some(format!("{scheme}://{gateway}"));
        st.fixed.insert(Role::Gateway, gateway);
        self.persist(&st);
        Ok(())
    }

    /// The instance name of `role` number `index`: `room-2`; singletons keep their role.
    fn name_of(role: Role, index: u32) -> String {
        if role.is_service() {
            format!("{role}-{index}")
        } else {
            role.as_str().to_owned()
        }
    }

    /// Where the gateway's admin listener binds: the address it had before (a restarted
    /// gateway keeps its admin URL), else the configured port on loopback. Port 0 lets the
    /// gateway pick a free port, which it announces (`admin listening on http://ADDR`):
    /// no port is picked here and released for the gateway to race for.
    fn admin_listen(&self) -> SocketAddr {
        let st = self.lock();
        st.file
            .admin_url
            .as_deref()
            .and_then(|u| u.trim_start_matches("http://").parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], self.cfg.settings.ports.admin)))
    }

    /// Spawns one instance, waits for its address and its `/readyz`, and returns the
    /// address. On failure the child is killed and the error carries its log's tail.
    async fn launch(
        self: &Arc<Self>,
        role: Role,
        index: u32,
        listen: SocketAddr,
    ) -> Result<SocketAddr, ControlError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ControlError::ShuttingDown);
        }
        let name = Self::name_of(role, index);
        let log_path = self.log_path(&name);
        let fail = |why: String| {
            let tail = log_tail(&log_path, 20);
            ControlError::StartFailed(format!(
                "{name} {why}; last lines of {}:\n{tail}",
                log_path.display()
            ))
        };
        let admin = if role == Role::Gateway {
            Some(self.admin_listen())
        } else {
            None
        };
        let urls = ChildUrls {
            registry: self.registry_url(),
            admin,
        };
        let env = child_env(role, &self.cfg, &urls);
        let mut log = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(crate::clusterfile::FILE_MODE)
            .open(&log_path)
            .await
        {
            Ok(f) => f,
            Err(e) => return Err(fail(format!("cannot open its log: {e}"))),
        };
        let header = format!(
            "--- {} hotel up: starting {name} ({}) on {listen}\n",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            role.command().join(" ")
        );
        let _ = log.write_all(header.as_bytes()).await;
        let stderr = match log.try_clone().await {
            Ok(f) => f.into_std().await,
            Err(e) => return Err(fail(format!("cannot open its log: {e}"))),
        };
        let mut cmd = tokio::process::Command::new(&self.cfg.exe);
        cmd.args(role.command());
        if let (Role::Gateway, Some(file)) = (role, &self.cfg.gateway_config) {
            cmd.arg("--config").arg(file);
        }
        cmd.arg("--name")
            .arg(&name)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--data-dir")
            .arg(&self.cfg.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            // Its own process group: the terminal's Ctrl-C reaches only the supervisor,
            // which stops the children in order.
            .process_group(0)
            .kill_on_drop(false);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(env);
        // The child stops (gracefully) if this supervisor dies, even by SIGKILL.
        cmd.env(
            hotel_common::process::SUPERVISOR_PID_ENV,
            std::process::id().to_string(),
        );
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Err(fail(format!("could not be spawned: {e}"))),
        };
        let pid = child.id().unwrap_or(0);
        let (exit_tx, exit_rx) = watch::channel(None);
        {
            let mut st = self.lock();
            let restarts = st
                .instances
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.restarts)
                .unwrap_or(0);
            st.instances.retain(|i| i.name != name);
            st.instances.push(Instance {
                name: name.clone(),
                role,
                index,
                pid,
                address: None,
                state: InstanceState::Starting,
                intent: Intent::None,
                restarts,
                last_exit: None,
                ready_unix_ms: None,
                exited: exit_rx.clone(),
                fault: None,
            });
            self.persist(&st);
        }
        tracing::info!(instance = %name, pid, "started");

        // Copies the child's stdout into its log and reports the announced address.
        // The gateway also announces its admin address, on a line of its own.
        let (addr_tx, addr_rx) = oneshot::channel();
        let (admin_tx, admin_rx) = oneshot::channel();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(async move {
                let mut addr_tx = Some(addr_tx);
                let mut admin_tx = Some(admin_tx);
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(rest) = line.strip_prefix("listening on http://")
                        && let Ok(a) = rest.trim().parse::<SocketAddr>()
                        && let Some(tx) = addr_tx.take()
                    {
                        let _ = tx.send(a);
                    }
                    if let Some(rest) =
                        line.strip_prefix(hotel_common::process::ADMIN_ANNOUNCE_PREFIX)
                        && let Ok(a) = rest.trim().parse::<SocketAddr>()
                        && let Some(tx) = admin_tx.take()
                    {
                        let _ = tx.send(a);
                    }
                    let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                }
            });
        }
        // Reaps the child and records how it ended.
        let sup = Arc::clone(self);
        let waited_name = name.clone();
        tokio::spawn(async move {
            let how = describe_exit(child.wait().await);
            // Record first, then wake the waiters: whoever waits for the exit then sees
            // the new state (and cluster.json already says so).
            sup.on_exit(&waited_name, pid, how.clone());
            let _ = exit_tx.send(Some(how));
        });

        let deadline = Instant::now() + self.cfg.settings.ready_timeout;
        let addr = match tokio::time::timeout_at(deadline, addr_rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) => {
                let mut rx = exit_rx.clone();
                let how =
                    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Option::is_some))
                        .await
                        .ok()
                        .and_then(|r| r.ok().and_then(|v| v.clone()))
                        .unwrap_or_else(|| "closed its output".into());
                self.mark_failed(&name, pid);
                return Err(fail(format!("exited ({how}) before it was ready")));
            }
            Err(_) => {
                self.mark_failed(&name, pid);
                signal(pid, Signal::SIGKILL);
                return Err(fail(format!(
                    "did not print its address within {}",
                    humantime::format_duration(self.cfg.settings.ready_timeout)
                )));
            }
        };
        {
            let mut st = self.lock();
            if let Some(i) = st
                .instances
                .iter_mut()
                .find(|i| i.name == name && i.pid == pid)
            {
                i.address = Some(addr);
            }
            self.persist(&st);
        }
        // The gateway's admin address is the one it announces (its port may have been 0).
        let admin = match admin {
            None => None,
            Some(_) => match tokio::time::timeout_at(deadline, admin_rx).await {
                Ok(Ok(a)) => {
                    let mut st = self.lock();
                    st.file.admin_url = Some(format!("http://{a}"));
                    self.persist(&st);
                    Some(a)
                }
                Ok(Err(_)) => {
                    self.mark_failed(&name, pid);
                    signal(pid, Signal::SIGKILL);
                    return Err(fail(
                        "closed its output without announcing its admin address".into(),
                    ));
                }
                Err(_) => {
                    self.mark_failed(&name, pid);
                    signal(pid, Signal::SIGKILL);
                    return Err(fail(format!(
                        "did not print its admin address within {}",
                        humantime::format_duration(self.cfg.settings.ready_timeout)
                    )));
                }
            },
        };
        // The gateway serves its health on the admin listener.
        let ready_url = match admin {
            Some(a) => format!("http://{a}/readyz"),
            None => format!("{}/readyz", hotel_common::tls::internal::base_url(addr)),
        };
        let mut last;
        loop {
            if let Some(how) = exit_rx.borrow().clone() {
                self.mark_failed(&name, pid);
                return Err(fail(format!("exited ({how}) before it was ready")));
            }
            match self
                .http
                .get(&ready_url)
                .bearer_auth(&self.cfg.admin_token)
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => last = format!("/readyz answered {}", r.status()),
                Err(e) => last = format!("/readyz: {e}"),
            }
            if Instant::now() >= deadline {
                self.mark_failed(&name, pid);
                signal(pid, Signal::SIGKILL);
                return Err(fail(format!(
                    "was not ready within {} ({last})",
                    humantime::format_duration(self.cfg.settings.ready_timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        {
            let mut st = self.lock();
            if let Some(i) = st
                .instances
                .iter_mut()
                .find(|i| i.name == name && i.pid == pid)
                && i.state == InstanceState::Starting
            {
                i.state = InstanceState::Running;
                i.ready_unix_ms = Some(unix_ms());
            }
            self.persist(&st);
        }
        tracing::info!(instance = %name, pid, %addr, "ready");
        Ok(addr)
    }

    fn mark_failed(&self, name: &str, pid: u32) {
        let mut st = self.lock();
        if let Some(i) = st
            .instances
            .iter_mut()
            .find(|i| i.name == name && i.pid == pid)
        {
            i.state = InstanceState::Failed;
            i.intent = Intent::Stop;
        }
        self.persist(&st);
    }

    /// Records that a child was reaped and, under `--restart`, schedules its restart.
    fn on_exit(self: &Arc<Self>, name: &str, pid: u32, how: String) {
        let restart = {
            let mut st = self.lock();
            let Some(i) = st
                .instances
                .iter_mut()
                .find(|i| i.name == name && i.pid == pid)
            else {
                return;
            };
            let was = i.state;
            i.state = match (was, i.intent) {
                (InstanceState::Failed, _) => InstanceState::Failed,
                (_, Intent::Stop) => InstanceState::Stopped,
                (_, Intent::Kill) => InstanceState::Killed,
                (_, Intent::None) => InstanceState::Exited,
            };
            i.last_exit = Some(how.clone());
            i.fault = None;
            let restart = self.cfg.settings.restart
                && !self.shutting_down.load(Ordering::SeqCst)
                && matches!(i.state, InstanceState::Killed | InstanceState::Exited);
            let info = (i.role, i.index, i.address);
            let state = i.state;
            self.persist(&st);
            match state {
                InstanceState::Stopped => tracing::info!(instance = %name, pid, %how, "stopped"),
                _ => {
                    tracing::warn!(instance = %name, pid, %how, state = state.as_str(), "instance exited")
                }
            }
            restart.then_some(info)
        };
        if let Some((role, index, address)) = restart {
            let sup = Arc::clone(self);
            let name = name.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(sup.cfg.settings.restart_delay).await;
                // The user may have started a replacement in the meantime.
                let still_dead = sup
                    .lock()
                    .instances
                    .iter()
                    .any(|i| i.name == name && i.pid == pid);
                if !still_dead || sup.shutting_down.load(Ordering::SeqCst) {
                    return;
                }
                let listen = match role {
                    Role::Registry | Role::Gateway => {
                        address.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
                    }
                    _ => SocketAddr::from(([127, 0, 0, 1], 0)),
                };
                {
                    let mut st = sup.lock();
                    if let Some(i) = st.instances.iter_mut().find(|i| i.name == name) {
                        i.restarts += 1;
                    }
                }
                tracing::info!(instance = %name, "restarting after a crash");
                if let Err(e) = sup.launch(role, index, listen).await {
                    tracing::error!(instance = %name, error = %e, "restart failed");
                }
            });
        }
    }

    fn known_names(st: &State) -> String {
        let mut names: Vec<_> = st
            .instances
            .iter()
            .map(|i| (i.role, i.index, i.name.clone()))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|(_, _, n)| n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Finds a live instance, or explains why it cannot be acted on.
    fn live(&self, st: &State, name: &str) -> Result<usize, ControlError> {
        let Some(pos) = st.instances.iter().position(|i| i.name == name) else {
            return Err(ControlError::UnknownInstance {
                name: name.to_owned(),
                known: Self::known_names(st),
            });
        };
        let i = &st.instances[pos];
        if !i.state.is_live() {
            return Err(ControlError::NotRunning {
                name: name.to_owned(),
                state: i.state.as_str(),
            });
        }
        Ok(pos)
    }

    /// SIGKILL, then waits until the process is reaped.
    pub async fn kill(&self, name: &str) -> Result<InstanceView, ControlError> {
        let (pid, mut exited) = {
            let mut st = self.lock();
            let pos = self.live(&st, name)?;
            let i = &mut st.instances[pos];
            i.intent = Intent::Kill;
            (i.pid, i.exited.clone())
        };
        signal(pid, Signal::SIGKILL);
        let _ =
            tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some)).await;
        self.view_of(name)
    }

    /// SIGTERM (after SIGCONT, in case it is frozen), waits for the drain, and kills it if
    /// it outlives the grace period.
    pub async fn stop(&self, name: &str) -> Result<InstanceView, ControlError> {
        let (pid, mut exited) = {
            let mut st = self.lock();
            let pos = self.live(&st, name)?;
            let i = &mut st.instances[pos];
            i.intent = Intent::Stop;
            i.state = InstanceState::Stopping;
            let out = (i.pid, i.exited.clone());
            self.persist(&st);
            out
        };
        signal(pid, Signal::SIGCONT);
        signal(pid, Signal::SIGTERM);
        let grace = self.cfg.settings.stop_grace + Duration::from_secs(2);
        if tokio::time::timeout(grace, exited.wait_for(Option::is_some))
            .await
            .is_err()
        {
            tracing::warn!(instance = %name, pid, "did not stop within its grace period; killing it");
            signal(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(10), exited.wait_for(Option::is_some))
                .await;
        }
        self.view_of(name)
    }

    /// SIGSTOP: the process hangs with its sockets open, like a stuck instance.
    pub fn pause(&self, name: &str) -> Result<InstanceView, ControlError> {
        let mut st = self.lock();
        let pos = self.live(&st, name)?;
        let i = &mut st.instances[pos];
        signal(i.pid, Signal::SIGSTOP);
        if i.state == InstanceState::Running {
            i.state = InstanceState::Paused;
        }
        let view = i.view();
        self.persist(&st);
        Ok(view)
    }

    /// SIGCONT.
    pub fn resume(&self, name: &str) -> Result<InstanceView, ControlError> {
        let mut st = self.lock();
        let pos = self.live(&st, name)?;
        let i = &mut st.instances[pos];
        signal(i.pid, Signal::SIGCONT);
        if i.state == InstanceState::Paused {
            i.state = InstanceState::Running;
        }
        let view = i.view();
        self.persist(&st);
        Ok(view)
    }

    /// Sets (`Some`) or clears (`None`) the fault of a live service or registry instance
    /// through its fault control endpoint; `spec` was validated by the caller.
    pub async fn fault(
        &self,
        name: &str,
        spec: Option<FaultSpec>,
    ) -> Result<InstanceView, ControlError> {
        let (addr, pid) = {
            let st = self.lock();
            let pos = self.live(&st, name)?;
            let i = &st.instances[pos];
            if i.role == Role::Gateway {
                return Err(ControlError::NoFaultSwitch(name.to_owned()));
            }
            if i.state == InstanceState::Paused {
                return Err(ControlError::NotRunning {
                    name: name.to_owned(),
                    state: i.state.as_str(),
                });
            }
            let Some(addr) = i.address else {
                return Err(ControlError::NotRunning {
                    name: name.to_owned(),
                    state: i.state.as_str(),
                });
            };
            (addr, i.pid)
        };
        let url = format!(
            "{}{}",
            hotel_common::tls::internal::base_url(addr),
            hotel_common::fault::FAULT_PATH
        );
        let req = match &spec {
            Some(s) => self.http.put(&url).json(s),
            None => self.http.delete(&url),
        };
        let failed = |why: String| ControlError::FaultFailed {
            name: name.to_owned(),
            why,
        };
        let res = req
            .bearer_auth(&self.cfg.fault_token)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            let detail = serde_json::from_str::<hotel_common::Problem>(&body)
                .map(|p| p.detail)
                .unwrap_or(body);
            return Err(failed(format!("{status}: {detail}")));
        }
        let answer: hotel_common::fault::FaultStatus =
            res.json().await.map_err(|e| failed(e.to_string()))?;
        {
            let mut st = self.lock();
            if let Some(i) = st
                .instances
                .iter_mut()
                .find(|i| i.name == name && i.pid == pid)
            {
                i.fault = answer.fault.map(|spec| ActiveFault {
                    summary: spec.describe(),
                    spec,
                    expires_unix_ms: answer.expires_in_ms.map(|ms| unix_ms() + ms),
                });
            }
        }
        match &spec {
            Some(s) => tracing::warn!(instance = %name, fault = %s.describe(), "fault set"),
            None => tracing::info!(instance = %name, "fault cleared"),
        }
        self.view_of(name)
    }

    fn view_of(&self, name: &str) -> Result<InstanceView, ControlError> {
        let st = self.lock();
        st.instances
            .iter()
            .find(|i| i.name == name)
            .map(Instance::view)
            .ok_or_else(|| ControlError::UnknownInstance {
                name: name.to_owned(),
                known: Self::known_names(&st),
            })
    }

    /// Starts one more replica of a service under the next free name, or restarts the
    /// registry or gateway (on its old address) when it is not running.
    pub async fn start(self: &Arc<Self>, role: Role) -> Result<InstanceView, ControlError> {
        let (index, listen) = {
            let st = self.lock();
            if role.is_service() {
                let used: Vec<u32> = st
                    .instances
                    .iter()
                    .filter(|i| i.role == role && i.state.is_live())
                    .map(|i| i.index)
                    .collect();
                let index = (1..).find(|n| !used.contains(n)).unwrap_or(1);
                (index, SocketAddr::from(([127, 0, 0, 1], 0)))
            } else {
                if st
                    .instances
                    .iter()
                    .any(|i| i.role == role && i.state.is_live())
                {
                    return Err(ControlError::AlreadyRunning(role.as_str().to_owned()));
                }
                let port = match role {
                    Role::Registry => self.cfg.settings.ports.registry,
                    _ => self.cfg.settings.ports.gateway,
                };
                (
                    1,
                    st.fixed
                        .get(&role)
                        .copied()
                        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], port))),
                )
            }
        };
        self.launch(role, index, listen).await?;
        self.view_of(&Self::name_of(role, index))
    }

    /// Starts or gracefully stops replicas until `replicas` are live; the highest-numbered
    /// go first. Scaling to 0 stops a whole service and needs `force`.
    pub async fn scale(
        self: &Arc<Self>,
        role: Role,
        replicas: u32,
        force: bool,
    ) -> Result<Vec<InstanceView>, ControlError> {
        if !role.is_service() {
            return Err(ControlError::NotScalable(role.as_str().to_owned()));
        }
        if replicas > crate::settings::MAX_REPLICAS {
            return Err(ControlError::BadCount(format!(
                "{replicas} is more than the maximum of {}",
                crate::settings::MAX_REPLICAS
            )));
        }
        let mut live: Vec<(u32, String)> = {
            let st = self.lock();
            st.instances
                .iter()
                .filter(|i| {
                    i.role == role && i.state.is_live() && i.state != InstanceState::Stopping
                })
                .map(|i| (i.index, i.name.clone()))
                .collect()
        };
        live.sort();
        if replicas == 0 && !live.is_empty() && !force {
            return Err(ControlError::WouldRemoveAll {
                service: role.as_str().to_owned(),
                names: live
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let mut changed = Vec::new();
        let have = u32::try_from(live.len()).unwrap_or(u32::MAX);
        if have < replicas {
            for _ in have..replicas {
                changed.push(self.start(role).await?);
            }
        } else {
            let surplus = &live[usize::try_from(replicas).unwrap_or(0)..];
            let stops = surplus.iter().map(|(_, name)| self.stop(name));
            for r in futures::future::join_all(stops).await {
                changed.push(r?);
            }
        }
        Ok(changed)
    }

    /// SIGKILLs every live instance and waits until each is reaped.
    pub async fn kill_all(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let names: Vec<String> = {
            let st = self.lock();
            st.instances
                .iter()
                .filter(|i| i.state.is_live())
                .map(|i| i.name.clone())
                .collect()
        };
        futures::future::join_all(names.iter().map(|n| self.kill(n))).await;
    }

    /// Removes `cluster.json` for good: the cluster is gone.
    pub fn remove_cluster_file(&self) {
        let mut st = self.lock();
        st.closed = true;
        let _ = std::fs::remove_file(ClusterFile::path(&self.cfg.data_dir));
    }

    /// Stops everything: services first (they deregister and drain), then the gateway,
    /// then the registry.
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let order: [&[Role]; 3] = [&Role::SERVICES, &[Role::Gateway], &[Role::Registry]];
        for roles in order {
            let names: Vec<String> = {
                let st = self.lock();
                st.instances
                    .iter()
                    .filter(|i| roles.contains(&i.role) && i.state.is_live())
                    .map(|i| i.name.clone())
                    .collect()
            };
            futures::future::join_all(names.iter().map(|n| self.stop(n))).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn child_environment_names_match_each_roles_settings_keys() {
        let cfg = UpConfig {
            settings: UpSettings::default(),
            data_dir: PathBuf::from("/tmp/x"),
            exe: PathBuf::from("hotel"),
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            databases: BTreeMap::from([(Role::Room, "postgres://db/hotel_room".to_owned())]),
            events_url: Some("nats://127.0.0.1:4222".into()),
            registry_token: "rt".into(),
            admin_token: "at".into(),
            api_key: "key".into(),
            control_token: "ct".into(),
            fault_token: "ft".into(),
            gateway_config: None,
            tls: None,
            internal_tls: None,
        };
        let urls = |admin| ChildUrls {
            registry: "http://r".into(),
            admin,
        };
        let room = child_env(Role::Room, &cfg, &urls(None));
        assert!(room.contains(&("HOTEL_ROOM__REGISTRY__URL".into(), "http://r".into())));
        assert!(room.contains(&(
            "HOTEL_ROOM__DATABASE__URL".into(),
            "postgres://db/hotel_room".into()
        )));
        assert!(room.contains(&("HOTEL_ROOM__REGISTRY__TOKEN".into(), "rt".into())));
        assert!(room.contains(&(
            "HOTEL_ROOM__EVENTS__URL".into(),
            "nats://127.0.0.1:4222".into()
        )));
        assert!(room.contains(&(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://127.0.0.1:4317".into()
        )));
        let gw = child_env(
            Role::Gateway,
            &cfg,
            &urls(Some(SocketAddr::from(([127, 0, 0, 1], 9)))),
        );
        assert!(gw.contains(&("HOTEL_GATEWAY__AUTH__DEV_KEY".into(), "key".into())));
        // Booking discovers customer and room through the registry, like the gateway.
        let booking = child_env(Role::Booking, &cfg, &urls(None));
        assert!(
            booking.iter().all(|(k, _)| !k.ends_with("_URL")
                || k.contains("REGISTRY")
                || k.contains("EVENTS"))
        );
        assert!(
            gw.iter().all(|(k, _)| !k.contains("EVENTS")),
            "the gateway takes no events.url"
        );
        assert!(gw.contains(&("HOTEL_GATEWAY__ADMIN_LISTEN".into(), "127.0.0.1:9".into())));
        assert!(gw.contains(&("HOTEL_GATEWAY__ADMIN_TOKEN".into(), "at".into())));
        let reg = child_env(Role::Registry, &cfg, &urls(None));
        assert!(reg.contains(&("HOTEL_REGISTRY__TOKEN".into(), "rt".into())));
    }

    #[test]
    fn exits_are_described_by_code_or_signal_name() {
        use std::process::ExitStatus;
        assert_eq!(
            describe_exit(Ok(ExitStatus::from_raw(1 << 8))),
            "exit status 1"
        );
        assert_eq!(
            describe_exit(Ok(ExitStatus::from_raw(9))),
            "signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn instance_names_number_services_and_not_singletons() {
        assert_eq!(Supervisor::name_of(Role::Room, 2), "room-2");
        assert_eq!(Supervisor::name_of(Role::Registry, 1), "registry");
    }
}
