//! What the Podman tests share (`containers.rs`: compose; `k8s.rs`: the Kubernetes
//! manifests): running podman and the project's scripts, installing podman through
//! `scripts/podman.sh` (skipped when it cannot be installed, except in CI), building the
//! dev image through `scripts/image.sh`, and polling with a deadline that names the last
//! reason a check failed.

#![allow(dead_code, clippy::unwrap_used)] // Shared by two test binaries; each uses a part.

use anyhow::{Context, Result, bail, ensure};
use hotel_tests::{eventually, in_ci, repo_root};
use serde_json::Value;
use std::{
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

/// The exit status of `scripts/podman.sh` and `scripts/kustomize.sh` when what they
/// provide cannot be installed here.
pub const NOT_INSTALLABLE: i32 = 3;

/// A short id for the names and labels of what one test run creates.
pub fn unique() -> String {
    format!(
        "{}{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs `cmd` with no stdin; its output, whatever its status.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    Ok(out)
}

/// Runs `podman ARGS`, failing with its stderr unless it succeeds; its stdout.
pub fn podman(args: &[&str]) -> Result<String> {
    let out = run(Command::new("podman").args(args))?;
    ensure!(
        out.status.success(),
        "podman {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `scripts/NAME ARGS`: its stdout when it succeeds; `None` when it exits
/// [`NOT_INSTALLABLE`] outside CI (the test then says so and passes); an error otherwise,
/// and for [`NOT_INSTALLABLE`] in CI.
pub fn script(name: &str, args: &[&str]) -> Result<Option<String>> {
    let out = run(Command::new(repo_root().join("scripts").join(name))
        .args(args)
        .current_dir(repo_root()))?;
    let why = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()));
    }
    if out.status.code() == Some(NOT_INSTALLABLE) {
        if in_ci() {
            bail!("scripts/{name} {args:?}: required in CI but not installable here:\n{why}");
        }
        eprintln!("skipped: scripts/{name} {args:?} found nothing it could install here ({why})");
        return Ok(None);
    }
    bail!("scripts/{name} {args:?} failed ({}):\n{why}", out.status)
}

/// Builds the dev image as `tag` through `scripts/image.sh` (what users run; the dev
/// profile reuses the debug build's dependency artifacts instead of a second optimised
/// build) and prints how long it took and its size.
pub fn build_image(tag: &str) -> Result<()> {
    let started = Instant::now();
    let out = run(Command::new(repo_root().join("scripts/image.sh"))
        .args(["--profile", "dev", "--tag", tag, "--engine", "podman"])
        .current_dir(repo_root()))?;
    ensure!(
        out.status.success(),
        "scripts/image.sh failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("measured: image built in {:.0?}", started.elapsed());
    let size = podman(&["image", "inspect", "--format", "{{.Size}}", tag])?;
    eprintln!("measured: image size {size} bytes");
    Ok(())
}

/// Polls `check` ([`eventually`]) until it succeeds; on timeout the error names the last
/// reason it failed.
pub async fn until<F, Fut>(within: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let last = Mutex::new(String::new());
    let waited = eventually(within, what, || {
        let attempt = check();
        let last = &last;
        async move {
            match attempt.await {
                Ok(()) => Some(()),
                Err(e) => {
                    *last.lock().unwrap() = format!("{e:#}");
                    None
                }
            }
        }
    })
    .await;
    waited.map_err(|e| anyhow::anyhow!("{e}: {}", last.lock().unwrap()))
}

/// Ok when the registry holds exactly the `expected` (instance, url) pairs across the
/// customer, room and booking services (in any order).
pub async fn exactly_registered(
    http: &reqwest::Client,
    registry: &str,
    token: &str,
    expected: &[(String, String)],
) -> Result<()> {
    let mut found = Vec::new();
    for service in ["customer", "room", "booking"] {
        found.extend(registered(http, registry, token, service).await?);
    }
    found.sort();
    let mut want = expected.to_vec();
    want.sort();
    ensure!(found == want, "registered {found:?}, want {want:?}");
    Ok(())
}

/// The registry's passing instances of `service`: (instance name, URL).
pub async fn registered(
    http: &reqwest::Client,
    registry: &str,
    token: &str,
    service: &str,
) -> Result<Vec<(String, String)>> {
    let v: Value = http
        .get(format!("{registry}/v1/services/{service}?wait=0s"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let list = v.get("instances").unwrap_or(&v);
    Ok(list
        .as_array()
        .context("instances")?
        .iter()
        .filter(|i| i["status"] == "passing")
        .map(|i| {
            (
                i["instance"].as_str().unwrap_or_default().to_owned(),
                i["url"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect())
}
