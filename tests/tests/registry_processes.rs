//! The registry with real processes: `hotel registry` and `hotel service customer`
//! replicas that register through `HOTEL_CUSTOMER__REGISTRY__*`. A replica killed with
//! SIGKILL leaves when its lease ends; a registry killed and restarted on the same address
//! gets every live replica back within about a heartbeat; a registry frozen (SIGSTOP) past
//! every lease keeps them all on resume; SIGTERM deregisters at once.
//!
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test registry_processes`.

use anyhow::{Context, Result};
use hotel_tests::{Proc, TempDir, eventually, spawn_instance};
use serde_json::Value;
use std::time::{Duration, Instant};

const TOKEN: &str = "registry-processes-token";

fn start_registry(dir: &TempDir, name: &str, listen: &str) -> Result<Proc> {
    Proc::spawn(
        name,
        &["registry", "--listen", listen],
        &[("HOTEL_REGISTRY__TOKEN", TOKEN)],
        dir.path(),
    )
}

fn start_customer(
    dir: &TempDir,
    name: &str,
    registry: &Proc,
    heartbeat: &str,
    lease: &str,
) -> Result<Proc> {
    let url = registry.url();
    spawn_instance(
        "customer",
        name,
        &dir.path().join("data"),
        &[
            ("HOTEL_CUSTOMER__REGISTRY__URL", url.as_str()),
            ("HOTEL_CUSTOMER__REGISTRY__TOKEN", TOKEN),
            ("HOTEL_CUSTOMER__REGISTRY__HEARTBEAT", heartbeat),
            ("HOTEL_CUSTOMER__REGISTRY__LEASE", lease),
        ],
        &[],
        dir.path(),
    )
}

/// The customer instances the registry lists now, as (name, url), or `None` if it does
/// not answer.
async fn listed(http: &reqwest::Client, registry_url: &str) -> Option<Vec<(String, String)>> {
    let res = http
        .get(format!("{registry_url}/v1/services/customer"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let v: Value = res.json().await.ok()?;
    let items = v["instances"].as_array()?;
    Some(
        items
            .iter()
            .map(|i| {
                (
                    i["instance"].as_str().unwrap_or_default().to_owned(),
                    i["url"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    )
}

fn names(list: &[(String, String)]) -> Vec<&str> {
    let mut v: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
    v.sort();
    v
}

async fn wait_for_names(
    http: &reqwest::Client,
    registry: &str,
    want: &[&str],
    within: Duration,
) -> Result<Duration> {
    let started = Instant::now();
    eventually(
        within,
        &format!("registry to list exactly {want:?}"),
        || async {
            listed(http, registry)
                .await
                .filter(|l| names(l) == want)
                .map(|_| ())
        },
    )
    .await?;
    Ok(started.elapsed())
}

/// A registry with two customer replicas registered in it.
struct TwoReplicas {
    registry: Proc,
    c1: Proc,
    c2: Proc,
    http: reqwest::Client,
    /// Last, so that it is removed after the processes are gone.
    dir: TempDir,
}

/// Starts a registry and `customer-1` and `customer-2` heartbeating every second with
/// `lease`, and returns once the registry lists both.
async fn two_replicas(test: &str, lease: &str) -> Result<TwoReplicas> {
    let dir = TempDir::new(test);
    let registry = start_registry(&dir, "registry", "127.0.0.1:0")?;
    let c1 = start_customer(&dir, "customer-1", &registry, "1s", lease)?;
    let c2 = start_customer(&dir, "customer-2", &registry, "1s", lease)?;
    let http = reqwest::Client::new();
    wait_for_names(
        &http,
        &registry.url(),
        &["customer-1", "customer-2"],
        Duration::from_secs(30),
    )
    .await?;
    Ok(TwoReplicas {
        registry,
        c1,
        c2,
        http,
        dir,
    })
}

#[tokio::test]
async fn replicas_register_with_their_real_address_and_a_killed_one_leaves_when_its_lease_ends()
-> Result<()> {
    let TwoReplicas {
        registry,
        mut c1,
        c2,
        http,
        dir: _dir,
    } = two_replicas("registry-kill", "3s").await?;
    let list = listed(&http, &registry.url())
        .await
        .context("registry answers")?;
    for (name, url) in &list {
        let expected = if name == "customer-1" {
            c1.url()
        } else {
            c2.url()
        };
        assert_eq!(url, &expected, "{name} registered under its bound address");
    }

    c1.kill9();
    let killed = Instant::now();
    wait_for_names(
        &http,
        &registry.url(),
        &["customer-2"],
        Duration::from_secs(20),
    )
    .await?;
    let gone = killed.elapsed();
    println!("customer-1 left the registry {gone:?} after kill -9 (heartbeat 1s, lease 3s)");
    // SIGKILL cannot deregister: only the lease (3 s after the last heartbeat, which was
    // at most 1 s before the kill) removes it.
    assert!(
        gone >= Duration::from_millis(1_500),
        "removed after {gone:?}: before its lease could end"
    );
    assert!(gone < Duration::from_secs(15), "removed after {gone:?}");
    let registry_log = registry.log_text();
    assert!(registry_log.contains("lease expired"), "{registry_log}");
    Ok(())
}

#[tokio::test]
async fn a_registry_killed_and_restarted_on_its_address_gets_every_live_replica_back() -> Result<()>
{
    let TwoReplicas {
        mut registry,
        c1: _c1,
        c2: _c2,
        http,
        dir,
    } = two_replicas("registry-restart", "3s").await?;
    let registry_url = registry.url();
    let addr = registry.addr.to_string();

    registry.kill9();
    // The replicas keep serving without a registry.
    assert!(listed(&http, &registry_url).await.is_none());
    let again = start_registry(&dir, "registry-2", &addr)?;
    let restarted = Instant::now();
    assert_eq!(again.url(), registry_url);
    let back = wait_for_names(
        &http,
        &registry_url,
        &["customer-1", "customer-2"],
        Duration::from_secs(20),
    )
    .await?;
    println!(
        "both replicas back {back:?} after the new registry printed its address \
         ({:?} since restart; heartbeat 1s, so the bound is about 2 s)",
        restarted.elapsed()
    );
    assert!(back < Duration::from_secs(10), "took {back:?}");
    Ok(())
}

#[tokio::test]
async fn a_replica_stopped_with_sigterm_deregisters_at_once() -> Result<()> {
    // A 60 s lease: if the replica vanishes within seconds, only deregistration did it.
    let TwoReplicas {
        registry,
        mut c1,
        c2: _c2,
        http,
        dir: _dir,
    } = two_replicas("registry-stop", "60s").await?;
    let index: u64 = {
        let v: Value = http
            .get(format!("{}/v1/services/customer", registry.url()))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .json()
            .await?;
        v["index"].as_u64().context("index")?
    };
    // A blocking watch, as the gateway holds one: it must answer as soon as customer-1 leaves.
    let watch = {
        let http = http.clone();
        let url = format!(
            "{}/v1/services/customer?index={index}&wait=60s",
            registry.url()
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let v: Value = http
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await?
                .json()
                .await?;
            anyhow::Ok((started, Instant::now(), v))
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    let stopped = tokio::task::spawn_blocking(move || {
        let clean = c1.stop(Duration::from_secs(30));
        (clean, c1)
    });
    let (_, woke, v) = tokio::time::timeout(Duration::from_secs(20), watch).await???;
    let seen = woke.duration_since(stopping);
    println!("watch woke {seen:?} after SIGTERM (lease 60s)");
    let left: Vec<&str> = v["instances"]
        .as_array()
        .context("instances")?
        .iter()
        .filter_map(|i| i["instance"].as_str())
        .collect();
    assert_eq!(left, ["customer-2"]);
    assert!(
        seen < Duration::from_secs(10),
        "deregistration took {seen:?}"
    );
    let (clean, c1) = stopped.await?;
    assert!(clean, "customer-1 did not exit cleanly:\n{}", c1.log_text());
    assert!(c1.log_text().contains("deregistered"), "{}", c1.log_text());
    Ok(())
}

#[tokio::test]
async fn a_registry_frozen_past_every_lease_keeps_its_instances_on_resume() -> Result<()> {
    let TwoReplicas {
        registry,
        c1: _c1,
        c2: _c2,
        http,
        dir: _dir,
    } = two_replicas("registry-freeze", "3s").await?;

    registry.pause();
    tokio::time::sleep(Duration::from_secs(5)).await;
    registry.resume();
    // The heartbeats of the freeze were never read, not missing: the first answer after
    // the resume must still list both (without the stall rule they would all be evicted
    // and come back a heartbeat later).
    let first = eventually(
        Duration::from_secs(10),
        "registry to answer after SIGCONT",
        || async { listed(&http, &registry.url()).await },
    )
    .await?;
    assert_eq!(
        names(&first),
        ["customer-1", "customer-2"],
        "{}",
        registry.log_text()
    );
    // And they stay, since their heartbeats resume.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = listed(&http, &registry.url())
        .await
        .context("registry answers")?;
    assert_eq!(names(&later), ["customer-1", "customer-2"]);
    assert!(
        registry.log_text().contains("restarted every lease"),
        "{}",
        registry.log_text()
    );
    Ok(())
}
