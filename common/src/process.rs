//! What every role's `main` shares: the common command-line options and the one line a
//! launcher reads to learn the real address.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// Boxed error returned by a role's `run` to the `hotel` binary.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Options every role takes (`hotel registry|gateway|service ...`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProcessArgs {
    /// Address to listen on (port 0 picks a free port); overrides the config file.
    #[arg(long, env = "HOTEL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `HOST:PORT` (or `HOST`) a service registers for peers to reach it at, instead of
    /// the bind address; for `0.0.0.0`/`::` the default is the host's first
    /// non-loopback address. Services only (the registry and the gateway register nothing).
    #[arg(long, env = "HOTEL_ADVERTISE_ADDR")]
    pub advertise: Option<String>,
    /// Directory for databases and state.
    #[arg(long, env = "HOTEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML config file; missing keys take defaults, unknown keys are an error.
    #[arg(long, env = "HOTEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Instance name such as `room-2` (defaults to the role name).
    #[arg(long = "name", env = "HOTEL_INSTANCE")]
    pub instance: Option<String>,
    /// Log line format: text or json.
    #[arg(long, default_value = "text", env = "HOTEL_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: crate::telemetry::LogFormat,
}

fn parse_log_format(s: &str) -> Result<crate::telemetry::LogFormat, String> {
    match s {
        "text" => Ok(crate::telemetry::LogFormat::Text),
        "json" => Ok(crate::telemetry::LogFormat::Json),
        other => Err(format!(
            "unknown log format {other:?}; expected text or json"
        )),
    }
}

impl ProcessArgs {
    /// The config file path, if one was given.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref()
    }
}

/// Prints `listening on http://ADDR` to stdout and flushes: launchers and tests read it.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on http://{addr}");
    let _ = out.flush();
}

/// Prints `admin listening on http://ADDR` to stdout and flushes: a process with a second
/// (admin) listener announces it after its `listening on` line, so launchers that bind
/// it to port 0 learn the real address (`hotel up`).
pub fn announce_admin(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ADMIN_ANNOUNCE_PREFIX}{addr}");
    let _ = out.flush();
}

/// The start of the line [`announce_admin`] prints, before the address.
pub const ADMIN_ANNOUNCE_PREFIX: &str = "admin listening on http://";

/// Environment variable through which `hotel up` tells a child its supervisor's pid.
pub const SUPERVISOR_PID_ENV: &str = "HOTEL_SUPERVISOR_PID";

/// When started by `hotel up`, ask the kernel to send us SIGTERM if the supervisor dies,
/// so a supervisor killed with SIGKILL leaves no orphan instances behind: each one shuts
/// down gracefully (deregisters, drains) instead. Returns whether the link is in place.
///
/// The check of the parent pid after `prctl` closes the race where the supervisor died
/// between spawning us and this call (then we were re-parented already and exit at once).
pub fn follow_supervisor() -> bool {
    let Some(pid) = std::env::var(SUPERVISOR_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return false;
    };
    #[cfg(target_os = "linux")]
    {
        use nix::sys::signal::Signal;
        if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() {
            return false;
        }
        if nix::unistd::getppid().as_raw() != pid {
            let _ = nix::sys::signal::raise(Signal::SIGTERM);
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        false
    }
}
