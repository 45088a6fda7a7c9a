//! NATS JetStream for the event tests: whether this run has it, and a private
//! `nats-server -js` per test (`scripts/nats.sh` on free loopback ports and a directory
//! of its own), so that a test can stop and start its broker ("bus down") without
//! touching any other test's.

use anyhow::{Context, Result, bail};
use std::{path::PathBuf, process::Command};

/// The variable `scripts/test.sh` sets once it has installed and started a NATS server
/// (`nats://127.0.0.1:54222`): proof that `nats-server` is here and runs.
pub const URL_VAR: &str = "HOTEL_TEST_NATS_URL";

/// Whether the NATS variants run: `true` when `HOTEL_TEST_NATS_URL` is set; otherwise
/// says they are skipped and answers `false`, except in CI (`CI=true`), where a missing
/// NATS is an error.
pub fn available() -> Result<bool> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Ok(true),
        _ if crate::in_ci() => {
            bail!("{URL_VAR} is required in CI (scripts/test.sh installs and starts nats-server)")
        }
        _ => {
            eprintln!(
                "skipped: {URL_VAR} is not set, so this NATS test did not run \
                 (scripts/test.sh starts a nats-server when it can)"
            );
            Ok(false)
        }
    }
}

/// A `nats-server -js` of one test's own, stopped by pid (through its pid file) and its
/// store removed on drop.
#[derive(Debug)]
pub struct PrivateNats {
    port: u16,
    monitor: u16,
    dir: PathBuf,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl PrivateNats {
    /// Starts one on free ports, its store under `dir`; waits until JetStream answers.
    pub fn start(dir: &std::path::Path) -> Result<PrivateNats> {
        let port = crate::free_port();
        let mut monitor = crate::free_port();
        while monitor == port {
            monitor = crate::free_port();
        }
        let nats = PrivateNats {
            port,
            monitor,
            dir: dir.join(format!("nats-{port}")),
            url: format!("nats://127.0.0.1:{port}"),
        };
        nats.script("start")?;
        Ok(nats)
    }

    /// Stops it (SIGTERM by pid; the store stays, so [`PrivateNats::resume`] brings back
    /// every stream and consumer).
    pub fn stop(&self) -> Result<()> {
        self.script("stop").map(drop)
    }

    /// Starts it again on the same port and store.
    pub fn resume(&self) -> Result<()> {
        self.script("start").map(drop)
    }

    /// The HTTP monitor's base URL (`/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor)
    }

    fn script(&self, action: &str) -> Result<String> {
        let out = Command::new(crate::repo_root().join("scripts/nats.sh"))
            .arg(action)
            .env("HOTEL_NATS_PORT", self.port.to_string())
            .env("HOTEL_NATS_MONITOR_PORT", self.monitor.to_string())
            .env("HOTEL_NATS_DIR", &self.dir)
            .output()
            .context("run scripts/nats.sh")?;
        if !out.status.success() {
            bail!(
                "scripts/nats.sh {action}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
