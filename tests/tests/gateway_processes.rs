//! The gateway with real processes: a registry, three replicas of a service and the
//! gateway, all the real `hotel` binary on loopback. One replica is killed with SIGKILL
//! in the middle of steady GETs through the gateway: no request may fail.
//!
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test gateway_processes`.

#![allow(
    clippy::unwrap_used,
    clippy::field_reassign_with_default,
    clippy::cloned_ref_to_slice_refs
)]

use anyhow::{Context, Result, bail};
use hotel_tests::{Proc, TempDir, eventually, spawn_gateway_watching, spawn_instance, wait_known};
use serde_json::{Value, json};
use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

const REGISTRY_TOKEN: &str = "gateway-processes-registry-token";

fn spawn_registry(dir: &Path) -> Result<Proc> {
    Proc::spawn(
        "registry",
        &["registry", "--listen", "127.0.0.1:0"],
        &[("HOTEL_REGISTRY__TOKEN", REGISTRY_TOKEN)],
        dir,
    )
}

fn spawn_replica(
    service: &str,
    n: usize,
    data: &Path,
    registry: Option<&str>,
    dir: &Path,
) -> Result<Proc> {
    let name = format!("{service}-{n}");
    let upper = service.to_ascii_uppercase();
    let (url_key, token_key) = (
        format!("HOTEL_{upper}__REGISTRY__URL"),
        format!("HOTEL_{upper}__REGISTRY__TOKEN"),
    );
    let mut envs = vec![];
    if let Some(r) = registry {
        envs.push((url_key.as_str(), r));
        envs.push((token_key.as_str(), REGISTRY_TOKEN));
    }
    spawn_instance(service, &name, data, &envs, &[], dir)
}

/// Steady GETs of `url` from `workers` loops until `stop`; returns (ok, failures, worst).
async fn steady_gets(
    c: reqwest::Client,
    url: String,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>, Duration) {
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (c, url, stop) = (c.clone(), url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut worst) = (0usize, Vec::new(), Duration::ZERO);
            // Bounded in count as well as by the stop flag.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => failed.push(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => failed.push(e.to_string()),
                }
                worst = worst.max(t.elapsed());
            }
            (ok, failed, worst)
        }));
    }
    let (mut ok, mut failed, mut worst) = (0, Vec::new(), Duration::ZERO);
    for t in tasks {
        if let Ok((o, f, w)) = t.await {
            ok += o;
            failed.extend(f);
            worst = worst.max(w);
        }
    }
    (ok, failed, worst)
}

/// `POST {gateway}/api/{path}` with `body`; the id of what it created.
async fn create_through(
    c: &reqwest::Client,
    gateway: &Proc,
    path: &str,
    body: Value,
) -> Result<String> {
    let created = c
        .post(format!("{}/api/{path}", gateway.url()))
        .json(&body)
        .send()
        .await?;
    if created.status() != 201 {
        bail!(
            "create answered {}: {}\ngateway log:\n{}",
            created.status(),
            created.text().await?,
            gateway.log_text()
        );
    }
    Ok(created.json::<Value>().await?["id"]
        .as_str()
        .context("id")?
        .to_owned())
}

/// Three room replicas on one database behind a gateway that lists them statically (no
/// registry), with one room created through it.
struct StaticRooms {
    replicas: Vec<Proc>,
    gateway: Proc,
    /// The gateway's admin port (it does not announce its admin address on stdout).
    admin_port: u16,
    client: reqwest::Client,
    /// `GATEWAY/api/rooms/ID` of the room created.
    room_url: String,
    /// Last, so that it is removed after the processes are gone.
    dir: TempDir,
}

async fn static_rooms(test: &str, room: Value) -> Result<StaticRooms> {
    let dir = TempDir::new(test);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let mut replicas = Vec::new();
    for n in 1..=3 {
        replicas.push(spawn_replica("room", n, &data, None, dir.path())?);
    }
    let instances: Vec<String> = replicas
        .iter()
        .map(|p| format!("\"{}\"", p.url()))
        .collect();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[services.room]\ninstances = [{}]\n",
            instances.join(", ")
        ),
    )?;
    let gateway = Proc::spawn(
        "gateway",
        &[
            "gateway",
            "--config",
            config.to_str().context("utf-8 path")?,
        ],
        &[],
        dir.path(),
    )?;
    let admin_port = gateway.admin_addr()?.port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let id = create_through(&client, &gateway, "rooms", room).await?;
    let room_url = format!("{}/api/rooms/{id}", gateway.url());
    Ok(StaticRooms {
        replicas,
        gateway,
        admin_port,
        client,
        room_url,
        dir,
    })
}

/// Kills one of three running replicas in the middle of steady GETs of `get_url`.
async fn kill_one_under_load(
    c: &reqwest::Client,
    replicas: &mut [Proc],
    get_url: String,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_gets(c.clone(), get_url, 4, stop.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = Instant::now();
    replicas[1].kill9();
    // Long enough for the registry lease (3 s) to drop the dead replica.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, worst) = load.await?;
    println!(
        "kill -9 of {} under load: {ok} ok, {} failed, worst latency {worst:?}, ran {:?} after the kill",
        replicas[1].name,
        failed.len(),
        killed_at.elapsed()
    );
    if !failed.is_empty() {
        bail!(
            "{} requests failed after kill -9, first: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    if ok < 50 {
        bail!("only {ok} requests went through: the load did not run");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_registered_replicas_under_steady_gets_fails_no_request() -> Result<()>
{
    let dir = TempDir::new("gateway-processes");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let registry = spawn_registry(dir.path())?;
    let reg_url = registry.url();
    let customer = |n| spawn_replica("customer", n, &data, Some(&reg_url), dir.path());
    let mut replicas = vec![customer(1)?, customer(2)?, customer(3)?];
    let (gateway, admin) = spawn_gateway_watching(&reg_url, REGISTRY_TOKEN, dir.path())?;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    wait_known(&c, &admin, "customer", 3, Duration::from_secs(30)).await?;

    let ada = json!({"name": "Ada Lovelace", "email": "ada@example.com"});
    let id = create_through(&c, &gateway, "customers", ada).await?;
    kill_one_under_load(
        &c,
        &mut replicas,
        format!("{}/api/customers/{id}", gateway.url()),
    )
    .await?;

    // The registry dropped the dead replica, and the gateway followed.
    wait_known(&c, &admin, "customer", 2, Duration::from_secs(15)).await?;
    // A new replica takes traffic soon after it registers.
    replicas.push(customer(4)?);
    wait_known(&c, &admin, "customer", 3, Duration::from_secs(15)).await?;
    let status_url = format!("{admin}/admin/status");
    eventually(
        Duration::from_secs(15),
        "customer-4 to take traffic",
        || async {
            let _ = c
                .get(format!("{}/api/customers/{id}", gateway.url()))
                .send()
                .await;
            let v: Value = c.get(&status_url).send().await.ok()?.json().await.ok()?;
            let svc = v["services"]
                .as_array()?
                .iter()
                .find(|s| s["service"] == "customer")?
                .clone();
            let n = svc["instances"]
                .as_array()?
                .iter()
                .find(|i| i["instance"] == "customer-4")?["requests"]
                .as_u64()?;
            (n > 0).then_some(())
        },
    )
    .await?;
    drop(registry);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_static_room_replicas_under_steady_gets_fails_no_request() -> Result<()>
{
    let room =
        json!({"number": "101", "kind": "double", "capacity": 2, "nightly_rate_cents": 12000});
    let mut rooms = static_rooms("gateway-processes-static", room).await?;
    kill_one_under_load(&rooms.client, &mut rooms.replicas, rooms.room_url.clone()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_costs_steady_gets_no_error_and_little_latency() -> Result<()> {
    let room =
        json!({"number": "202", "kind": "suite", "capacity": 4, "nightly_rate_cents": 30000});
    let StaticRooms {
        replicas,
        admin_port,
        client: c,
        room_url: url,
        // Bound, not ignored: the gateway and the directory must live to the end.
        gateway: _gateway,
        dir: _dir,
    } = static_rooms("gateway-processes-frozen", room).await?;
    // Warm up so the hedge delay follows real latency.
    for _ in 0..50 {
        c.get(&url).send().await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(steady_gets(c.clone(), url.clone(), 4, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    replicas[0].pause();
    let frozen_at = Instant::now();
    let status_url = format!("http://127.0.0.1:{admin_port}/admin/status");
    // Traffic must leave the frozen replica: either its breaker opens (its attempts time
    // out: per-try timeout 2 s, 5 failures), or p2c over peak-EWMA stops picking it, since
    // its in-flight attempts never finish. Either way, it gets no new attempt for a whole
    // second.
    let room_1 = |v: Value| -> Option<Value> {
        let svc = v["services"]
            .as_array()?
            .iter()
            .find(|s| s["service"] == "room")?
            .clone();
        svc["instances"]
            .as_array()?
            .iter()
            .find(|i| i["instance"] == "room-static-1")
            .cloned()
    };
    let opened = eventually(
        Duration::from_secs(20),
        "traffic to leave the frozen replica",
        || async {
            let v: Value = c.get(&status_url).send().await.ok()?.json().await.ok()?;
            let before = room_1(v)?;
            if before["breaker"] != "closed" {
                return Some(());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let v: Value = c.get(&status_url).send().await.ok()?.json().await.ok()?;
            let after = room_1(v)?;
            (after["breaker"] != "closed"
                || (after["requests"].is_u64() && after["requests"] == before["requests"]))
                .then_some(())
        },
    )
    .await;
    let opened_after = frozen_at.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    replicas[0].resume();
    let (ok, failed, worst) = load.await?;
    println!(
        "SIGSTOP of room-1 under load: {ok} ok, {} failed, worst latency {worst:?}, traffic left it after {opened_after:?}",
        failed.len()
    );
    opened?;
    if !failed.is_empty() {
        bail!(
            "{} requests failed with a frozen replica, first: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    // Hedging answers from another replica: nobody waits for the 2 s per-try timeout.
    if worst >= Duration::from_millis(1900) {
        bail!("worst latency {worst:?}: a frozen replica stalled clients");
    }
    Ok(())
}
