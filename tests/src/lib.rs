//! Helpers for system tests: start the real `hotel` binary as child processes on loopback,
//! learn their real addresses from the `listening on http://ADDR` line, control them with
//! signals, and end every one of them (by PID) when the test ends, even on panic.
//!
//! Who may depend on it: nothing but this crate's own test files; it spawns the built
//! `hotel` binary and links none of the roles (the tracing tests alone link
//! `hotel-common`, as a dev-dependency, to run in-process apps).

pub mod nats;

use anyhow::{Context, Result, bail};
pub use hotel_testkit::{TempDir, eventually, eventually_true};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, OnceLock, mpsc},
    time::{Duration, Instant},
};

/// The repository's root directory (scripts, config, compose files).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Whether this run is CI (`CI=true`): a tool a test needs is then required, not
/// skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The `hotel` binary built beside this test binary (`target/<profile>/hotel`).
///
/// `cargo test --workspace` builds it (the `hotel` crate has integration tests); when
/// running this crate alone, `cargo build -p hotel` first. `HOTEL_BIN` overrides.
pub fn hotel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOTEL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>/hotel
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("hotel");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p hotel` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// The `hotel up` flags that put every listener of a cluster on an ephemeral port, so that
/// tests can run side by side; the real addresses are in its `cluster.json`.
pub const UP_EPHEMERAL_PORTS: [&str; 8] = [
    "--gateway-port",
    "0",
    "--admin-port",
    "0",
    "--registry-port",
    "0",
    "--control-port",
    "0",
];

/// A loopback port that was free a moment ago, for a listener that a process does not
/// announce on stdout (a container's published port, a database server's). Another
/// process may take it before it is used: prefer port 0 and the announced address.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    l.local_addr().expect("local address").port()
}

/// Sends `sig` to process `pid`; a process that is already gone is not an error.
pub fn signal_pid(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(raw), sig);
    }
}

/// Polls `child` every 20 ms for up to `within`; its exit status if it exited by then.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `hotel` child process. Killed (SIGKILL, then reaped) on drop.
pub struct Proc {
    /// A label for messages, such as `room-1`.
    pub name: String,
    /// The address from its `listening on` line.
    pub addr: SocketAddr,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The address from its `admin listening on` line, once printed (a gateway's).
    admin: Arc<OnceLock<SocketAddr>>,
    child: Child,
}

impl Proc {
    /// Spawns `hotel ARGS...` with extra environment, waits (up to 60 s) for its
    /// `listening on http://ADDR` line, and returns it. Output goes to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)], log_dir: &Path) -> Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let err_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        let mut cmd = Command::new(hotel_bin());
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err_file))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().with_context(|| format!("spawn {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        let log_copy = log.clone();
        let admin = Arc::new(OnceLock::new());
        let admin_seen = admin.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_copy)
                .ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening on http://")
                    && let (Some(tx), Ok(a)) = (tx.take(), rest.trim().parse::<SocketAddr>())
                {
                    let _ = tx.send(a);
                }
                if let Some(rest) = line.strip_prefix(hotel_common::process::ADMIN_ANNOUNCE_PREFIX)
                    && let Ok(a) = rest.trim().parse::<SocketAddr>()
                {
                    let _ = admin_seen.set(a);
                }
                if let Some(f) = out.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("{name} did not print its address within 60 s; log:\n{text}");
            }
        };
        Ok(Proc {
            name: name.to_owned(),
            addr,
            log,
            admin,
            child,
        })
    }

    /// The address from its `admin listening on http://ADDR` line (a gateway prints it
    /// right after its public one), waiting up to 10 s for it.
    pub fn admin_addr(&self) -> Result<SocketAddr> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = self.admin.get() {
                return Ok(*a);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} printed no admin address within 10 s; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        signal_pid(self.child.id(), sig);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait up to `within` for a clean exit; returns whether it exited 0.
    pub fn stop(&mut self, within: Duration) -> bool {
        self.signal(Signal::SIGCONT);
        self.signal(Signal::SIGTERM);
        if let Some(status) = wait_exit(&mut self.child, within) {
            return status.success();
        }
        self.kill9();
        false
    }

    /// SIGSTOP: the process hangs with its sockets open.
    pub fn pause(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(Signal::SIGCONT);
    }

    /// The process's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Spawns one instance as `hotel up` would: `hotel service ROLE` (or `hotel registry` for
/// role `registry`) named `name`, on a loopback ephemeral port, with its data in `data`
/// and `extra` arguments after those; see [`Proc::spawn`] for `envs` and `log_dir`.
pub fn spawn_instance(
    role: &str,
    name: &str,
    data: &Path,
    envs: &[(&str, &str)],
    extra: &[&str],
    log_dir: &Path,
) -> Result<Proc> {
    let data = data.to_str().context("the data directory is not UTF-8")?;
    let mut args = if role == "registry" {
        vec!["registry"]
    } else {
        vec!["service", role]
    };
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--name",
        name,
    ]);
    args.extend_from_slice(extra);
    Proc::spawn(name, &args, envs, log_dir)
}

/// The date `days` from today (UTC) as `YYYY-MM-DD`: stays in tests are relative to today,
/// since booking refuses a check_in in the past or past its horizon (730 days).
pub fn day(days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(days);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A gateway process that discovers its instances from the registry at `registry_url`
/// (with `token`), its public listener on an ephemeral port; returns it and its admin
/// base URL (`http://127.0.0.1:PORT`).
pub fn spawn_gateway_watching(
    registry_url: &str,
    token: &str,
    log_dir: &Path,
) -> Result<(Proc, String)> {
    let gateway = Proc::spawn(
        "gateway",
        &[
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[
            ("HOTEL_GATEWAY__REGISTRY__URL", registry_url),
            ("HOTEL_GATEWAY__REGISTRY__TOKEN", token),
        ],
        log_dir,
    )?;
    let admin = gateway.admin_addr()?;
    Ok((gateway, format!("http://{admin}")))
}

/// Waits until the gateway whose admin base URL is `admin` routes to exactly `n`
/// instances of `service` (its `/admin/status`).
pub async fn wait_known(
    c: &reqwest::Client,
    admin: &str,
    service: &str,
    n: u64,
    within: Duration,
) -> Result<()> {
    let url = format!("{admin}/admin/status");
    eventually(
        within,
        &format!("{n} instances of {service} in {url}"),
        || async {
            let v: serde_json::Value = c.get(&url).send().await.ok()?.json().await.ok()?;
            let known = v["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == service)?["known"]
                .as_u64()?;
            (known == n).then_some(())
        },
    )
    .await?;
    Ok(())
}

/// Waits until `GET url` answers 2xx.
pub async fn wait_ready(client: &reqwest::Client, url: &str, within: Duration) -> Result<()> {
    eventually(within, url, || async {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => Some(()),
            _ => None,
        }
    })
    .await
    .map_err(Into::into)
}
