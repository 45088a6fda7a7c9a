//! A whole cluster under test, driven as a user drives it: `hotel up` in its own temp
//! data directory with every port ephemeral, `hotel kill|stop|pause|start|...` and
//! `hotel load` as separate processes, `hotel status --json` to observe.
//!
//! On drop, `hotel up` gets SIGTERM (it stops its children in order); whatever is still
//! alive afterwards (a child of a `hotel up` that was killed) is SIGKILLed by pid, and
//! only after checking that the pid still runs with this test's data directory.

#![allow(dead_code, clippy::unwrap_used)] // Shared by two test binaries; each uses a part.

use anyhow::{Context, Result, bail};
use hotel_tests::{TempDir, UP_EPHEMERAL_PORTS, hotel_bin, signal_pid as signal, wait_exit};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// How long `hotel up` may take to start the whole topology on a loaded 2-core machine.
pub const UP_WITHIN: Duration = Duration::from_secs(180);

/// A running `hotel up`.
pub struct Cluster {
    /// The temp directory (removed on drop unless the test panicked); holds `up.out`.
    pub dir: TempDir,
    /// The data directory: `dir`, or a directory in it that `hotel up` creates.
    data: PathBuf,
    up: Child,
    up_log: PathBuf,
    /// Every pid seen in cluster.json, to clean up after a supervisor that died.
    seen: BTreeSet<u32>,
}

/// Whether `pid` is alive and was started with `marker` on its command line.
fn runs_with(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).contains(marker))
        .unwrap_or(false)
}

impl Cluster {
    /// Starts `hotel up ARGS` (with ports 0 and a fresh data dir) and waits until
    /// `cluster.json` says the topology is ready.
    pub async fn up(args: &[&str]) -> Result<Cluster> {
        Self::up_with_env(args, &[]).await
    }

    /// Like [`Cluster::up`] with extra environment for `hotel up` (and its children).
    pub async fn up_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Cluster> {
        Self::wait_up(Self::spawn(args, env)?).await
    }

    /// Like [`Cluster::up`] with a data directory that does not exist yet, so `hotel up`
    /// creates it as it does on a user's first run.
    pub async fn up_in_new_dir(args: &[&str]) -> Result<Cluster> {
        Self::wait_up(Self::spawn_in(args, &[], Some("data"))?).await
    }

    async fn wait_up(mut cluster: Cluster) -> Result<Cluster> {
        let file = cluster.data.join("cluster.json");
        let up_log = cluster.up_log.clone();
        let deadline = Instant::now() + UP_WITHIN;
        loop {
            if let Ok(Some(status)) = cluster.up.try_wait() {
                bail!(
                    "hotel up exited ({status}) before it was ready:\n{}",
                    std::fs::read_to_string(&up_log).unwrap_or_default()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                cluster.remember(&v);
                // `ready` is set before the banner is printed (the banner probes Jaeger
                // first); tests read the banner, so up means both.
                if v["ready"] == Value::Bool(true)
                    && std::fs::read_to_string(&up_log)
                        .is_ok_and(|out| out.contains("Ctrl-C stops everything."))
                {
                    return Ok(cluster);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "hotel up was not ready within {UP_WITHIN:?}:\n{}",
                    std::fs::read_to_string(&up_log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Spawns `hotel up` without waiting for anything.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Result<Cluster> {
        Self::spawn_in(args, env, None)
    }

    fn spawn_in(args: &[&str], env: &[(&str, &str)], subdir: Option<&str>) -> Result<Cluster> {
        let dir = TempDir::new("hotel-up");
        let data = match subdir {
            Some(s) => dir.path().join(s),
            None => dir.path().to_owned(),
        };
        let up_log = dir.path().join("up.out");
        let out = std::fs::File::create(&up_log)?;
        let mut cmd = Command::new(hotel_bin());
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args(UP_EPHEMERAL_PORTS)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("HOTEL_DATA_DIR")
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let up = cmd.spawn().context("spawn hotel up")?;
        Ok(Cluster {
            dir,
            data,
            up,
            up_log,
            seen: BTreeSet::new(),
        })
    }

    fn remember(&mut self, file: &Value) {
        for i in file["instances"].as_array().into_iter().flatten() {
            if let Some(pid) = i["pid"].as_u64().and_then(|p| u32::try_from(p).ok()) {
                self.seen.insert(pid);
            }
        }
    }

    /// The data directory as a string (for `--data-dir`).
    pub fn data_dir(&self) -> String {
        self.data.display().to_string()
    }

    /// `cluster.json` now.
    pub fn file(&mut self) -> Result<Value> {
        let text =
            std::fs::read_to_string(self.data.join("cluster.json")).context("read cluster.json")?;
        let v: Value = serde_json::from_str(&text)?;
        self.remember(&v);
        Ok(v)
    }

    /// The gateway URL from cluster.json.
    pub fn gateway(&mut self) -> Result<String> {
        self.file()?["gateway_url"]
            .as_str()
            .map(str::to_owned)
            .context("gateway_url")
    }

    /// The dev API key from cluster.json.
    pub fn api_key(&mut self) -> Result<String> {
        self.file()?["api_key"]
            .as_str()
            .map(str::to_owned)
            .context("api_key")
    }

    /// Runs `hotel ARGS --data-dir DIR` to completion.
    pub fn hotel(&mut self, args: &[&str]) -> Output {
        let out = Command::new(hotel_bin())
            .args(args)
            .arg("--data-dir")
            .arg(&self.data)
            .env_remove("HOTEL_DATA_DIR")
            .output()
            .expect("run hotel");
        let _ = self.file();
        out
    }

    /// Runs a control command and fails the test with its output unless it succeeds.
    pub fn control(&mut self, args: &[&str]) -> String {
        let out = self.hotel(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "hotel {args:?} failed: {text}");
        text
    }

    /// `hotel status --json`.
    pub fn status(&mut self) -> Result<Value> {
        let out = self.hotel(&["status", "--json"]);
        if !out.status.success() {
            bail!(
                "hotel status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The status row of one instance.
    pub fn instance(&mut self, name: &str) -> Result<Value> {
        let s = self.status()?;
        s["instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == name))
            .cloned()
            .with_context(|| format!("{name} is not in hotel status: {s}"))
    }

    /// Requests the gateway has sent to `name` (its attempts counter).
    pub fn requests_to(&mut self, name: &str) -> Result<u64> {
        let row = self.instance(name)?;
        row["gateway"]["requests"]
            .as_u64()
            .with_context(|| format!("the gateway reports no request count for {name}: {row}"))
    }

    /// Requests the gateway has sent to every instance of `service` it reports.
    pub fn requests_to_service(&mut self, service: &str) -> Result<u64> {
        let s = self.status()?;
        Ok(s["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["service"] == service)
            .filter_map(|i| i["gateway"]["requests"].as_u64())
            .sum())
    }

    /// Waits until the gateway has sent `name` at least one more request than `base`.
    pub async fn wait_traffic_to(&mut self, name: &str, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let base = self.requests_to(name).unwrap_or(0);
        let deadline = start + within;
        loop {
            if self.requests_to(name).unwrap_or(0) > base {
                return Ok(start.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "no traffic reached {name} within {within:?}: {}",
                    self.status()?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts `hotel load` against this cluster (JSON summary on stdout).
    pub fn load(&self, args: &[&str]) -> Result<Load> {
        let err_path = self
            .dir
            .path()
            .join(format!("load-{}.err", uuid::Uuid::new_v4()));
        let child = Command::new(hotel_bin())
            .arg("load")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&err_path)?))
            .env_remove("HOTEL_DATA_DIR")
            .spawn()
            .context("spawn hotel load")?;
        Ok(Load {
            child: Some(child),
            err_path,
        })
    }

    /// SIGTERM to `hotel up`; waits up to `within` and returns whether it exited 0.
    pub fn shutdown(&mut self, within: Duration) -> bool {
        signal(self.up.id(), Signal::SIGTERM);
        wait_exit(&mut self.up, within).is_some_and(|status| status.success())
    }

    /// Waits up to `within` for `hotel up` to exit by itself; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.up, within)
    }

    /// SIGKILL to `hotel up` alone: its children are orphaned, as after a crash.
    pub fn kill_supervisor(&mut self) {
        let _ = self.up.kill();
        let _ = self.up.wait();
    }

    /// The pid of `hotel up`.
    pub fn up_pid(&self) -> u32 {
        self.up.id()
    }

    /// What `hotel up` printed so far.
    pub fn up_output(&self) -> String {
        std::fs::read_to_string(&self.up_log).unwrap_or_default()
    }

    /// Pids seen in cluster.json that still run with this cluster's data directory.
    pub fn leftover_pids(&self) -> Vec<u32> {
        let marker = self.data_dir();
        self.seen
            .iter()
            .copied()
            .filter(|p| runs_with(*p, &marker))
            .collect()
    }

    /// Where instance logs go.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.data.join("logs").join(format!("{name}.log"))
    }

    /// The data directory path.
    pub fn path(&self) -> &Path {
        &self.data
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.file();
        if !self.shutdown(Duration::from_secs(30)) {
            let _ = self.up.kill();
        }
        let _ = self.up.wait();
        for pid in self.leftover_pids() {
            signal(pid, Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("hotel up output:\n{}", self.up_output());
            let log = std::fs::read_to_string(self.log_path("up")).unwrap_or_default();
            eprintln!("hotel up log (logs/up.log):\n{log}");
        }
    }
}

/// A running `hotel load`.
pub struct Load {
    child: Option<Child>,
    err_path: PathBuf,
}

impl Load {
    /// Waits for the load to end (or SIGINTs it after `within`) and returns its summary.
    pub fn finish(mut self, within: Duration) -> Result<Value> {
        let mut child = self.child.take().context("load already finished")?;
        if wait_exit(&mut child, within).is_none() {
            signal(child.id(), Signal::SIGINT);
        }
        let out = child.wait_with_output()?;
        let progress = std::fs::read_to_string(&self.err_path).unwrap_or_default();
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "hotel load printed no summary ({}):\n{}\n{progress}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Ends the load now (SIGINT: in-flight requests finish) and returns its summary.
    pub fn stop(self) -> Result<Value> {
        if let Some(c) = &self.child {
            signal(c.id(), Signal::SIGINT);
        }
        self.finish(Duration::from_secs(30))
    }

    /// Waits until the load phase runs (its seed data is made and its first per-second
    /// line is out), so a disruption hits steady load rather than the seeding.
    pub async fn wait_running(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self
                .progress()
                .lines()
                .any(|l| l.trim_start().starts_with("1s "))
            {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!(
                    "hotel load exited ({status}) before its load phase:\n{}",
                    self.progress()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "hotel load did not start its load phase within {within:?}:\n{}",
                    self.progress()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its per-second lines so far.
    pub fn progress(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Prints a measured value for the closing note (shown with `--nocapture`).
pub fn measured(drill: &str, what: &str, value: impl std::fmt::Display) {
    eprintln!("MEASURED {drill}: {what} = {value}");
}

/// Asserts that a load summary has no failed request, showing it otherwise.
pub fn assert_no_failures(drill: &str, summary: &Value, load_progress: &str) {
    let errors = summary["errors"].as_u64().unwrap_or(u64::MAX);
    measured(drill, "requests", &summary["requests"]);
    measured(drill, "failed requests", errors);
    measured(drill, "worst latency ms", &summary["latency"]["max_ms"]);
    measured(drill, "p99 latency ms", &summary["latency"]["p99_ms"]);
    assert!(
        summary["requests"].as_u64().unwrap_or(0) > 0,
        "{drill}: no requests were sent: {summary}"
    );
    assert_eq!(
        errors, 0,
        "{drill}: clients saw failures: {summary}\n{load_progress}"
    );
}

/// Waits until `check` holds ([`hotel_tests::eventually_true`]); returns how long it took.
pub async fn until<F: FnMut() -> bool>(within: Duration, what: &str, check: F) -> Result<Duration> {
    let start = Instant::now();
    hotel_tests::eventually_true(within, what, check).await?;
    Ok(start.elapsed())
}
