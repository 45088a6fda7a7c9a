//! Registry load benchmark (not a CI test): one registry process holding 1,000 instances
//! that heartbeat every second, watched by 50 `Watcher`s; measures the registry's CPU use
//! (from `/proc/<pid>/stat`) with heartbeats alone and with churn, and the latency from
//! sending a registration or deregistration to each watcher of that service publishing
//! the new set (p50/p99).
//!
//! `cargo bench -p hotel-registry --bench registry_load` (release build). The registry
//! runs in a child process (this same executable re-run with `--serve-registry`), so its
//! CPU is measured apart from the load generator's. Knobs (environment):
//! `BENCH_INSTANCES` (1000), `BENCH_SERVICES` (10), `BENCH_WATCHERS` (50),
//! `BENCH_CHANGES` (200), `BENCH_STEADY_SECS` (10).

use hotel_registry::{
    Application, RegistryClient, Settings, Watcher,
    client::{ClientError, WatchOptions},
    model::RegisterRequest,
};
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const TOKEN: &str = "bench-token";

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::args().any(|a| a == "--serve-registry") {
        return rt.block_on(serve());
    }
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this without it, and
    // a minute of load is no test.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "registry_load is a benchmark: run it with `cargo bench -p hotel-registry --bench registry_load`"
        );
        return Ok(());
    }
    rt.block_on(drive())
}

/// Child mode: a registry on an ephemeral loopback port until stdin closes.
async fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        token: Some(TOKEN.into()),
        ..Settings::default()
    };
    let app = Application::build(settings)
        .await
        .map_err(|e| e.to_string())?;
    hotel_common::process::announce(app.addr());
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin()
                .read_line(&mut sink)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await;
    };
    app.run_until(stdin_closed).await?;
    Ok(())
}

/// Registry CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32, tick: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    Duration::from_secs_f64(ticks / tick)
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn drive() -> Result<(), Box<dyn std::error::Error>> {
    let instances = knob("BENCH_INSTANCES", 1000);
    let services = knob("BENCH_SERVICES", 10).max(1);
    let watchers = knob("BENCH_WATCHERS", 50);
    let changes = knob("BENCH_CHANGES", 200);
    let steady = Duration::from_secs(knob("BENCH_STEADY_SECS", 10) as u64);
    let tick = clock_tick();

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--serve-registry")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or("no address line")?
        .to_owned();
    println!("registry pid {pid} at {url}");
    let client = RegistryClient::new(&url, Some(TOKEN.into()))?;
    let service_name = |i: usize| format!("svc-{}", i % services);

    // Heartbeaters: each registers, then heartbeats every second from a random phase.
    let hb_ok = Arc::new(AtomicU64::new(0));
    let hb_err = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    for i in 0..instances {
        let (client, svc, ok, err, stop) = (
            client.clone(),
            service_name(i),
            hb_ok.clone(),
            hb_err.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let name = format!("inst-{i}");
            let body = RegisterRequest {
                url: format!("http://127.0.0.1:{}", 10_000 + i),
                metadata: [("version".to_owned(), "1.0.0".to_owned())].into(),
                lease: None,
                status: Default::default(),
                reason: None,
            };
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1000)).await;
            let mut registered = false;
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let r = if registered {
                    client
                        .heartbeat(&svc, &name, &Default::default())
                        .await
                        .map(|_| ())
                } else {
                    client.register(&svc, &name, &body).await.map(|_| ())
                };
                match r {
                    Ok(()) => {
                        registered = true;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ClientError::NotRegistered) => registered = false,
                    Err(_) => {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }

    // Watchers, spread over the services.
    let mut watches: Vec<(String, Watcher)> = Vec::new();
    for w in 0..watchers {
        let svc = service_name(w);
        let watcher = Watcher::with_options(client.clone(), &svc, WatchOptions::default());
        watches.push((svc, watcher));
    }
    for (_, w) in &watches {
        w.wait_synced(Duration::from_secs(30)).await;
    }
    // Wait until every instance is registered and every watcher has seen them.
    let want = instances / services;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && watches.iter().any(|(_, w)| w.current().len() < want) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{instances} instances in {services} services registered; {watchers} watchers synced");

    // Phase 1: heartbeats only.
    let (c0, t0, hb0) = (
        cpu_time(pid, tick),
        Instant::now(),
        hb_ok.load(Ordering::Relaxed),
    );
    tokio::time::sleep(steady).await;
    let (c1, t1, hb1) = (
        cpu_time(pid, tick),
        Instant::now(),
        hb_ok.load(Ordering::Relaxed),
    );
    let steady_cpu = (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64();
    let hb_rate = (hb1 - hb0) as f64 / (t1 - t0).as_secs_f64();

    // Phase 2: churn. Each change registers or deregisters a probe instance, and we time
    // how long until every watcher of that service publishes the new set.
    let mut samples = Vec::new();
    let (c2, t2) = (cpu_time(pid, tick), Instant::now());
    for k in 0..changes {
        let svc = service_name(k / 2);
        let probe = format!("probe-{}", k / 2);
        let adding = k % 2 == 0;
        let rxs: Vec<_> = watches
            .iter()
            .filter(|(s, _)| *s == svc)
            .map(|(_, w)| w.subscribe())
            .collect();
        let waits = futures::future::join_all(rxs.into_iter().map(|mut rx| {
            let probe = probe.clone();
            async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    rx.wait_for(|set| set.iter().any(|i| i.instance == probe) == adding),
                )
                .await;
                Instant::now()
            }
        }));
        let started = Instant::now();
        let change = async {
            if adding {
                let body = RegisterRequest {
                    url: format!("http://127.0.0.1:{}", 30_000 + k),
                    metadata: Default::default(),
                    lease: Some(Duration::from_secs(60)),
                    status: Default::default(),
                    reason: None,
                };
                client.register(&svc, &probe, &body).await.map(|_| ())
            } else {
                client.deregister(&svc, &probe).await
            }
        };
        let (result, seen) = tokio::join!(change, waits);
        result?;
        samples.extend(seen.into_iter().map(|t| t.duration_since(started)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (c3, t3) = (cpu_time(pid, tick), Instant::now());
    let churn_cpu = (c3 - c2).as_secs_f64() / (t3 - t2).as_secs_f64();
    samples.sort();

    stop.cancel();
    drop(watches);
    drop(child.stdin.take());
    let _ = child.wait();

    println!("--- registry load benchmark ---");
    println!("instances {instances}, services {services}, watchers {watchers}, heartbeat 1s");
    println!(
        "heartbeats: {hb_rate:.0}/s answered, {} errors",
        hb_err.load(Ordering::Relaxed)
    );
    println!(
        "registry CPU, heartbeats only ({:.0}s): {:.1}% of one core",
        (t1 - t0).as_secs_f64(),
        steady_cpu * 100.0
    );
    println!(
        "registry CPU, heartbeats + {changes} changes ({:.0}s): {:.1}% of one core",
        (t3 - t2).as_secs_f64(),
        churn_cpu * 100.0
    );
    println!(
        "watch notification latency (change sent -> watcher published), {} samples: p50 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
    Ok(())
}
