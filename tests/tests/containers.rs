//! The container deployment, run for real with Podman: the image (`scripts/image.sh`,
//! `Containerfile`, dev profile), the core services of `compose.yaml` started by
//! podman-compose under a project name of its own, `hotel load` through the published
//! gateway port while one service container is stopped (`podman stop`: SIGTERM,
//! deregister, drain, exit 0) and another is killed (`podman kill`: SIGKILL), and not one
//! failed request. Every instance must register its container address (advertise), not
//! loopback. Everything the test created is removed by id at the end, even on failure.
//!
//! Podman, runc and podman-compose come from `scripts/podman.sh install`. When they cannot
//! be installed the test says so and passes, except in CI (`CI=true`), where that fails.
//!
//! Run: `cargo build -p hotel && cargo test -p hotel-tests --test containers -- --nocapture`

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod podman_support;

use anyhow::{Context, Result, bail, ensure};
use hotel_tests::{free_port, hotel_bin, repo_root, signal_pid, wait_exit};
use nix::sys::signal::Signal;
use podman_support::{
    build_image, exactly_registered, podman, registered, run, script, unique, until,
};
use serde_json::Value;
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The core services: everything in compose.yaml but the optional profiles.
const CORE: [&str; 8] = [
    "registry",
    "customer-1",
    "customer-2",
    "room-1",
    "room-2",
    "booking-1",
    "booking-2",
    "gateway",
];
/// Only retryable requests (reads; bookings and cancellations with an Idempotency-Key),
/// as in the drills: a request in flight on a killed instance is retried elsewhere.
const MIX: &str = "availability=3,room=3,customer=2,book=2,cancel=1";

/// `KEY=value` from deploy/compose/hotel.env.
fn env_file_value(key: &str) -> Result<String> {
    let text = std::fs::read_to_string(repo_root().join("deploy/compose/hotel.env"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .with_context(|| format!("{key} missing from deploy/compose/hotel.env"))
}

/// What the test created, removed by id when it ends (also on panic): containers,
/// networks, volumes and pods labelled with the project, then the image tag.
struct Project {
    name: String,
    image: String,
}

impl Project {
    fn ids(&self, kind: &[&str], format: &str) -> Vec<String> {
        let label = format!("label=io.podman.compose.project={}", self.name);
        let mut args = kind.to_vec();
        args.extend(["--filter", &label, "--format", format]);
        podman(&args)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The id of the container of compose service `service`.
    fn container(&self, service: &str) -> Result<String> {
        let label = format!("label=com.docker.compose.service={service}");
        let project = format!("label=io.podman.compose.project={}", self.name);
        let id = podman(&[
            "ps", "-a", "--filter", &project, "--filter", &label, "--format", "{{.ID}}",
        ])?;
        ensure!(
            !id.is_empty() && !id.contains('\n'),
            "no single container for {service}: {id:?}"
        );
        Ok(id)
    }

    /// The container's address on the project network.
    fn address(&self, id: &str) -> Result<String> {
        let ip = podman(&[
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            id,
        ])?;
        ip.split_whitespace()
            .next()
            .map(str::to_owned)
            .with_context(|| format!("container {id} has no address"))
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for id in self.ids(&["ps", "-a"], "{{.ID}} {{.Names}}") {
            let (id, name) = id.split_once(' ').unwrap_or((&id, ""));
            let out = run(Command::new("podman").args(["logs", "--tail", "30", id]));
            if let Ok(out) = out {
                all.push_str(&format!(
                    "--- {name}\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        all
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        // `--volumes`: also the anonymous /data volumes of the containers without a named
        // one (registry, gateway). Twice: podman-compose turns `depends_on` into
        // `--requires`, and podman refuses to remove the registry before its dependents.
        for _ in 0..2 {
            for id in self.ids(&["ps", "-a"], "{{.ID}}") {
                let _ = podman(&["rm", "--force", "--volumes", "--time", "0", &id]);
            }
        }
        for pod in self.ids(&["pod", "ls"], "{{.ID}}") {
            let _ = podman(&["pod", "rm", "--force", &pod]);
        }
        for net in self.ids(&["network", "ls"], "{{.ID}}") {
            let _ = podman(&["network", "rm", &net]);
        }
        for vol in self.ids(&["volume", "ls"], "{{.Name}}") {
            let _ = podman(&["volume", "rm", "--force", &vol]);
        }
        let _ = podman(&["rmi", &self.image]);
    }
}

/// `hotel load` against the published gateway, in the background.
struct Load {
    child: Option<Child>,
    err_path: PathBuf,
}

impl Load {
    fn progress(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// Its JSON summary, once it ends by itself (or SIGINT after `within`).
    fn finish(mut self, within: Duration) -> Result<(Value, String)> {
        let mut child = self.child.take().context("load already finished")?;
        if wait_exit(&mut child, within).is_none() {
            signal_pid(child.id(), Signal::SIGINT);
        }
        let out = child.wait_with_output()?;
        let progress = self.progress();
        let summary = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "hotel load printed no summary ({}):\n{progress}",
                out.status
            )
        })?;
        Ok((summary, progress))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.err_path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_in_podman_serves_through_a_stop_and_a_kill_without_a_failed_request()
-> Result<()> {
    // podman, runc and podman-compose (scripts/podman.sh); skipped where they cannot be
    // installed, except in CI.
    let Some(compose) = script("podman.sh", &["compose"])? else {
        return Ok(());
    };
    let compose = PathBuf::from(compose);
    let root = repo_root();
    let unique = unique();
    let image = format!("localhost/hotel-test:{unique}");
    let project = Project {
        name: format!("hoteltest{unique}"),
        image: image.clone(),
    };

    // The image, through the script users run.
    build_image(&image)?;

    // The core services, the gateway published on a loopback port of our own.
    let port = free_port();
    let started = Instant::now();
    let out = run(Command::new(&compose)
        .args(["--project-name", &project.name, "--file"])
        .arg(root.join("compose.yaml"))
        .args(["up", "--detach"])
        .args(CORE)
        .env("HOTEL_IMAGE", &image)
        .env("HOTEL_GATEWAY_PUBLISH", format!("127.0.0.1:{port}"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .current_dir(&root))?;
    ensure!(
        out.status.success(),
        "podman-compose up failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every replica registered, passing, at its container's address (not loopback): the
    // registry is reached at its container address on the project network.
    let token = env_file_value("HOTEL_REGISTRY__TOKEN")?;
    let key = env_file_value("HOTEL_API_KEY")?;
    let registry = format!(
        "http://{}:8761",
        project.address(&project.container("registry")?)?
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()?;
    let mut expected = Vec::new();
    for name in &CORE[1..7] {
        let ip = project.address(&project.container(name)?)?;
        expected.push((name.to_string(), format!("http://{ip}:7000")));
    }
    let waited = until(
        Duration::from_secs(90),
        "every replica registered at its container address",
        || {
            let (http, registry, token, expected) = (&http, &registry, &token, &expected);
            async move { exactly_registered(http, registry, token, expected).await }
        },
    )
    .await;
    if let Err(e) = waited {
        bail!("{e}\n{}", project.logs());
    }
    eprintln!(
        "measured: cluster up and registered in {:.0?}",
        started.elapsed()
    );

    // The image's healthcheck (`hotel probe`: no shell or curl in it) passes. Podman
    // schedules healthchecks with systemd timers; without systemd, run them directly.
    for name in ["registry", "room-1", "gateway"] {
        let id = project.container(name)?;
        until(
            Duration::from_secs(30),
            &format!("{name} is healthy"),
            || {
                let id = id.clone();
                async move {
                    podman(&["healthcheck", "run", &id])?;
                    Ok(())
                }
            },
        )
        .await?;
    }

    // The gateway answers through the published port.
    let gateway = format!("http://127.0.0.1:{port}");
    until(
        Duration::from_secs(30),
        "the gateway routes to rooms",
        || {
            let (http, gateway, key) = (&http, &gateway, &key);
            async move {
                let res = http
                    .get(format!("{gateway}/api/rooms"))
                    .bearer_auth(key)
                    .send()
                    .await?;
                ensure!(res.status() == 200, "GET /api/rooms: {}", res.status());
                Ok(())
            }
        },
    )
    .await?;

    // Bounded load through the published port.
    let err_path = std::env::temp_dir().join(format!("hotel-containers-load-{unique}.err"));
    let child = Command::new(hotel_bin())
        .args(["load", "--json", "--url", &gateway, "--api-key", &key])
        .args(["--rate", "20", "--duration", "25s", "--mix", MIX])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&err_path)?))
        .spawn()
        .context("spawn hotel load")?;
    let load = Load {
        child: Some(child),
        err_path,
    };
    until(Duration::from_secs(60), "the load phase runs", || {
        let progress = load.progress();
        async move {
            ensure!(
                progress.lines().any(|l| l.trim_start().starts_with("2s ")),
                "not yet:\n{progress}"
            );
            Ok(())
        }
    })
    .await?;

    // A graceful stop: SIGTERM, deregister, drain, exit 0 within the 10 s grace.
    let room = project.container("room-1")?;
    let stopping = Instant::now();
    podman(&["stop", "--time", "10", &room])?;
    let stop_took = stopping.elapsed();
    let code = podman(&["inspect", "--format", "{{.State.ExitCode}}", &room])?;
    eprintln!("measured: podman stop room-1 took {stop_took:.1?}, exit code {code}");
    ensure!(
        code == "0",
        "room-1 exited {code} after SIGTERM\n{}",
        project.logs()
    );
    ensure!(
        stop_took < Duration::from_secs(10),
        "room-1 took {stop_took:?} to stop"
    );
    until(Duration::from_secs(10), "room-1 left the registry", || {
        let (http, registry, token) = (&http, &registry, &token);
        async move {
            let rooms = registered(http, registry, token, "room").await?;
            ensure!(rooms.iter().all(|(n, _)| n != "room-1"), "{rooms:?}");
            Ok(())
        }
    })
    .await?;

    // A crash: SIGKILL, no deregistration; the gateway's retries and breakers cover it.
    let customer = project.container("customer-2")?;
    podman(&["kill", &customer])?;
    eprintln!("measured: killed customer-2");

    let (summary, progress) = load.finish(Duration::from_secs(90))?;
    let errors = summary["errors"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "measured: {} requests, {errors} failed, p99 {} ms, max {} ms",
        summary["requests"], summary["latency"]["p99_ms"], summary["latency"]["max_ms"]
    );
    ensure!(
        summary["requests"].as_u64().unwrap_or(0) > 100,
        "too few requests: {summary}"
    );
    ensure!(
        errors == 0,
        "clients saw failures: {summary}\n{progress}\n{}",
        project.logs()
    );
    drop(project);
    Ok(())
}
