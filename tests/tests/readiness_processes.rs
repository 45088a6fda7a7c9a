//! Active health with real processes: an instance whose readiness fails for real (its
//! database file is no longer where it opened it) keeps running and heartbeating, but
//! the registry marks it critical and the gateway stops routing to it within about a
//! heartbeat; once the file is back it takes traffic again.
//!
//! Two room replicas run on separate data directories, so only one of them breaks, and
//! a room created directly on room-2 tells who answered through the gateway: room-2
//! finds it (200), room-1 does not (404).
//!
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test readiness_processes`.

use anyhow::{Context, Result, bail};
use hotel_tests::{Proc, TempDir, eventually, spawn_gateway_watching, spawn_instance, wait_known};
use serde_json::{Value, json};
use std::{
    path::Path,
    time::{Duration, Instant},
};

const TOKEN: &str = "readiness-processes-token";

fn spawn_room(n: usize, data: &Path, registry: &str, dir: &Path) -> Result<Proc> {
    spawn_instance(
        "room",
        &format!("room-{n}"),
        data,
        &[
            ("HOTEL_ROOM__REGISTRY__URL", registry),
            ("HOTEL_ROOM__REGISTRY__TOKEN", TOKEN),
        ],
        &[],
        dir,
    )
}

/// room-1 as the registry lists it: (status, reason).
async fn registry_entry(c: &reqwest::Client, registry: &str) -> Option<(String, Option<String>)> {
    let v: Value = c
        .get(format!("{registry}/v1/services/room"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let one = v["instances"]
        .as_array()?
        .iter()
        .find(|i| i["instance"] == "room-1")?;
    Some((
        one["status"].as_str()?.to_owned(),
        one["reason"].as_str().map(str::to_owned),
    ))
}

/// The status of one `GET` of the room through the gateway.
async fn get_status(c: &reqwest::Client, url: &str) -> Option<u16> {
    Some(c.get(url).send().await.ok()?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_database_file_is_gone_stops_getting_traffic_and_gets_it_back_once_repaired()
-> Result<()> {
    let dir = TempDir::new("readiness-processes");
    let (data_1, data_2) = (dir.path().join("data-1"), dir.path().join("data-2"));
    std::fs::create_dir_all(&data_1)?;
    std::fs::create_dir_all(&data_2)?;
    let registry = Proc::spawn(
        "registry",
        &["registry", "--listen", "127.0.0.1:0"],
        &[("HOTEL_REGISTRY__TOKEN", TOKEN)],
        dir.path(),
    )?;
    let reg_url = registry.url();
    let room_1 = spawn_room(1, &data_1, &reg_url, dir.path())?;
    let room_2 = spawn_room(2, &data_2, &reg_url, dir.path())?;
    let (gateway, admin) = spawn_gateway_watching(&reg_url, TOKEN, dir.path())?;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    // The gateway to know 2 rooms.
    wait_known(&c, &admin, "room", 2, Duration::from_secs(30)).await?;

    // A room only room-2's database holds.
    let created = c
        .post(format!("{}/rooms", room_2.url()))
        .json(
            &json!({"number": "R2", "kind": "double", "capacity": 2, "nightly_rate_cents": 10000}),
        )
        .send()
        .await?;
    if created.status() != 201 {
        bail!("create on room-2 answered {}", created.status());
    }
    let id = created.json::<Value>().await?["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let through = format!("{}/api/rooms/{id}", gateway.url());
    // Both replicas take traffic: some answers come from room-1 (404).
    eventually(Duration::from_secs(15), "an answer from room-1", || {
        let (c, through) = (&c, &through);
        async move { (get_status(c, through).await? == 404).then_some(()) }
    })
    .await?;

    // Break room-1's readiness for real: its database file leaves its path (the
    // process keeps its open file and keeps heartbeating).
    let db = data_1.join("room.db");
    let moved = data_1.join("room.db.away");
    std::fs::rename(&db, &moved)?;
    let broken_at = Instant::now();
    let ready = c.get(format!("{}/readyz", room_1.url())).send().await?;
    assert_eq!(ready.status(), 503, "room-1's /readyz must fail now");
    // The gateway to drop the not-ready room-1 (one heartbeat and one registry watch,
    // about a second; the bound is for a loaded machine, the MEASURED line says how long).
    wait_known(&c, &admin, "room", 1, Duration::from_secs(15)).await?;
    println!(
        "MEASURED gateway stopped routing to the not-ready instance after {:?}",
        broken_at.elapsed()
    );
    let (status, reason) = registry_entry(&c, &reg_url)
        .await
        .context("room-1 stays registered while not ready")?;
    assert_eq!(status, "critical");
    let reason = reason.context("a critical instance has a reason")?;
    assert!(reason.contains("room.db"), "{reason}");
    // Every answer now comes from room-2.
    for _ in 0..30 {
        let s = get_status(&c, &through).await;
        assert_eq!(s, Some(200), "a request still reached room-1");
    }
    assert_eq!(
        registry_entry(&c, &reg_url).await.map(|e| e.0).as_deref(),
        Some("critical"),
        "room-1 keeps its registration (it still heartbeats) while not ready"
    );

    // Repair: the file is back where it was, and room-1 gets traffic again.
    std::fs::rename(&moved, &db)?;
    let repaired_at = Instant::now();
    // The gateway to take the repaired room-1 back (the same path; the same bound).
    wait_known(&c, &admin, "room", 2, Duration::from_secs(15)).await?;
    println!(
        "MEASURED the repaired instance was back after {:?}",
        repaired_at.elapsed()
    );
    eventually(
        Duration::from_secs(15),
        "an answer from room-1 again",
        || {
            let (c, through) = (&c, &through);
            async move { (get_status(c, through).await? == 404).then_some(()) }
        },
    )
    .await?;
    let logs = registry.log_text();
    assert!(
        logs.contains("instance not ready") && logs.contains("instance ready again"),
        "the registry logs each transition:\n{logs}"
    );
    drop((gateway, room_1, room_2, registry));
    Ok(())
}
