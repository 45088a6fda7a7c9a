//! The database drill on PostgreSQL (DESIGN.md section 7: "database stopped"): `hotel up
//! --postgres` on a private PostgreSQL server of its own (so stopping it disturbs no other
//! test), booking load through the gateway, the server stopped for 5 s and started again.
//!
//! What must hold: clients see only 503 problem answers while it is down (no 500, no
//! answer slower than the load's timeout), bookings succeed again by themselves after it
//! returns, every booking answered 201 is stored (none lost), and every stored booking is
//! the one answer of one `Idempotency-Key` (none doubled).
//!
//! Needs PostgreSQL: runs when `HOTEL_TEST_POSTGRES_URL` is set (scripts/test.sh), says it
//! is skipped otherwise, fails in CI without it.
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test postgres_drill -- --nocapture`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod cluster_support;

use anyhow::{Context, Result, bail};
use cluster_support::{Cluster, measured};
use serde_json::Value;
use sqlx::Connection;
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

/// A PostgreSQL server of this test's own, run by `scripts/postgres.sh` on a free port and
/// its own data directory; stopped and removed on drop.
struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    url: String,
}

impl PrivatePostgres {
    fn script(&self, action: &str) -> Result<String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
        let out = Command::new(script)
            .arg(action)
            .env("HOTEL_PG_PORT", self.port.to_string())
            .env("HOTEL_PG_DIR", &self.dir)
            .output()
            .context("run scripts/postgres.sh")?;
        if !out.status.success() {
            bail!(
                "scripts/postgres.sh {action}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn start() -> Result<PrivatePostgres> {
        let port = hotel_tests::free_port();
        let mut pg = PrivatePostgres {
            port,
            // Under /tmp, not the test's 0700 temp directory: the server runs as the
            // `postgres` user when the test runs as root.
            dir: std::env::temp_dir().join(format!("hotel-postgres-drill-{port}")),
            url: String::new(),
        };
        pg.url = pg.script("start")?;
        Ok(pg)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The bookings in the cluster's booking database, and the idempotency keys whose stored
/// answer is a 201 (each booking of the load was made under a key of its own).
async fn bookings_stored(server: &str) -> Result<(i64, i64)> {
    let mut url = url::Url::parse(server)?;
    url.set_path("hotel_booking");
    let mut conn = sqlx::PgConnection::connect(url.as_str()).await?;
    let (bookings,): (i64,) = sqlx::query_as("SELECT count(*) FROM bookings")
        .fetch_one(&mut conn)
        .await?;
    let (keys,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM idempotency_keys WHERE state = 'completed' AND status = 201",
    )
    .fetch_one(&mut conn)
    .await?;
    conn.close().await.ok();
    Ok((bookings, keys))
}

fn booked(summary: &Value) -> u64 {
    summary["by_op"]["book"]["ok"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_postgres_stopped_for_5_s_under_booking_load_answers_only_503_and_loses_no_booking() {
    const DRILL: &str = "postgres stopped 5 s";
    if hotel_testkit::postgres::server_url().is_none() {
        return;
    }
    let pg = PrivatePostgres::start().unwrap();
    let mut cluster = Cluster::up(&["--replicas", "2", "--postgres", &pg.url])
        .await
        .unwrap();
    let mut load = cluster
        .load(&[
            "--mix",
            "book=1",
            "--rate",
            "20",
            "--duration",
            "20s",
            "--timeout",
            "10s",
            "--max-error-rate",
            "1",
        ])
        .unwrap();
    load.wait_running(Duration::from_secs(60)).await.unwrap();
    // Steady load first, so the outage hits a cluster that was booking fine.
    hotel_tests::eventually_true(Duration::from_secs(30), "3 s of steady load", || {
        load.progress()
            .lines()
            .any(|l| l.trim_start().starts_with("3s "))
    })
    .await
    .unwrap();
    pg.script("stop").unwrap();
    // The outage itself is the point of the drill: five seconds of no database.
    tokio::time::sleep(Duration::from_secs(5)).await;
    pg.script("start").unwrap();
    let back = Instant::now();
    let summary = load.finish(Duration::from_secs(90)).unwrap();
    let progress = load_progress_note(&summary);
    measured(DRILL, "requests", &summary["requests"]);
    measured(DRILL, "bookings made", booked(&summary));
    measured(DRILL, "errors by kind", &summary["errors_by_kind"]);
    measured(DRILL, "worst latency ms", &summary["latency"]["max_ms"]);
    let kinds = summary["errors_by_kind"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        kinds.keys().all(|k| k == "http 503" || k == "http 409"),
        "only 503 (and the business 409 of a taken room) while the database is down: {progress}"
    );
    assert!(
        kinds.contains_key("http 503"),
        "the outage was seen as 503s: {progress}"
    );

    // Recovery by itself: a clean run of bookings within 60 s of the server's return
    // (every run's bookings count, the clean one's and those before it).
    let mut told = booked(&summary);
    let mut recovered = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !recovered && Instant::now() < deadline {
        let s = cluster
            .load(&["--mix", "book=1", "--requests", "10", "--concurrency", "2"])
            .unwrap()
            .finish(Duration::from_secs(60))
            .unwrap();
        told += booked(&s);
        recovered = s["errors"].as_u64() == Some(0);
    }
    assert!(
        recovered,
        "bookings succeed again after the database returns"
    );
    measured(DRILL, "recovered after s", back.elapsed().as_secs_f64());

    // None lost: every booking a client was told about (201) is stored. None doubled:
    // each stored booking is the one answer of one key. A request answered 503 after its
    // booking committed (its attempt outlived the gateway's per-try timeout, the retry
    // found the database gone) is stored once under its key, and a retry with that key
    // replays the 201.
    let (stored, keys) = bookings_stored(&pg.url).await.unwrap();
    let told = i64::try_from(told).unwrap();
    measured(DRILL, "bookings stored", stored);
    measured(
        DRILL,
        "stored but answered 503 (replayable by key)",
        stored - told,
    );
    assert!(
        stored >= told,
        "bookings lost: {told} answered 201, {stored} stored: {progress}"
    );
    assert_eq!(
        stored, keys,
        "a key booked twice, or a booking without its key"
    );
    assert!(cluster.shutdown(Duration::from_secs(60)));
}

fn load_progress_note(summary: &Value) -> String {
    format!("summary {summary}")
}
