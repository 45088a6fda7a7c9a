//! The gateway's edge as a real `hotel gateway` process: keys from a keys file made with
//! `hotel gateway hash-key`, load shedding with its memory measured from /proc while the
//! upstream (a fake in this test process) holds every request, and the refusal to serve
//! a public address without keys.

#![allow(clippy::unwrap_used)]

use axum::{Router, extract::State};
use hotel_tests::{Proc, TempDir, eventually, hotel_bin};
use std::{
    io::Write,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// A fake room instance that counts requests and holds each until released.
struct Held {
    url: String,
    hits: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

async fn held_upstream() -> Held {
    let hits = Arc::new(AtomicUsize::new(0));
    let (release, rx) = watch::channel(false);
    let state = (hits.clone(), rx);
    let app = Router::new()
        .fallback(
            |State((hits, mut rx)): State<(Arc<AtomicUsize>, watch::Receiver<bool>)>| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = tokio::time::timeout(Duration::from_secs(120), rx.wait_for(|r| *r)).await;
                "[]"
            },
        )
        .with_state(state);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Held { url, hits, release }
}

/// `hotel gateway hash-key`, fed the key on stdin.
fn hash_key(key: &str) -> String {
    let mut child = Command::new(hotel_bin())
        .args(["gateway", "hash-key"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn gateway_config(dir: &TempDir, upstream: &str, keys: &str, extra: &str) -> String {
    let keys_file = dir.path().join("keys");
    std::fs::write(&keys_file, keys).unwrap();
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [auth]\nkeys_file = {keys_file:?}\n\
             [policy]\nretries = 0\nhedge = false\ndeadline = \"90s\"\nper_try_timeout = \"90s\"\n\
             [services.room]\ninstances = [\"{upstream}\"]\n{extra}"
        ),
    )
    .unwrap();
    cfg.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_process_sheds_at_once_with_flat_memory_while_its_upstream_holds_every_request()
{
    let dir = TempDir::new("edge-shed");
    let up = held_upstream().await;
    let key = "hk_test_0123456789abcdef0123456789";
    let cfg = gateway_config(
        &dir,
        &up.url,
        &format!("# test keys\nloadgen:{}\n", hash_key(key)),
        "[limits]\nmax_in_flight = 16\n[rate_limit.default]\nrate = 1000000.0\nburst = 1000000\n",
    );
    let gw = Proc::spawn("gateway", &["gateway", "--config", &cfg], &[], dir.path()).unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let url = format!("{}/api/rooms", gw.url());
    // Wrong and missing keys first: refused at the edge.
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    // Sixteen requests fill the in-flight limit and stay there. Each asks for its own
    // URL: the HTTP cache would coalesce sixteen misses of one URL into one attempt.
    let held: Vec<_> = (0..16)
        .map(|i| {
            tokio::spawn(
                client
                    .get(format!("{url}?held={i}"))
                    .bearer_auth(key)
                    .send(),
            )
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "16 requests held upstream",
        || async { (up.hits.load(Ordering::SeqCst) == 16).then_some(()) },
    )
    .await
    .unwrap();
    // Then a flood: 64 concurrent clients, 100 requests each, all shed.
    let flood = |rounds: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let tasks: Vec<_> = (0..64)
                .map(|_| {
                    let (client, url) = (client.clone(), url.clone());
                    tokio::spawn(async move {
                        let mut worst = Duration::ZERO;
                        for _ in 0..rounds {
                            let t = Instant::now();
                            let r = client.get(&url).bearer_auth(key).send().await.unwrap();
                            assert_eq!(r.status(), 503);
                            assert_eq!(r.headers()["retry-after"], "1");
                            worst = worst.max(t.elapsed());
                        }
                        worst
                    })
                })
                .collect();
            let mut worst = Duration::ZERO;
            for t in tasks {
                worst = worst.max(t.await.unwrap());
            }
            worst
        }
    };
    // Warm-up: connections, allocator arenas, metric series.
    flood(10).await;
    let before = rss_kib(gw.pid());
    let start = Instant::now();
    let worst = flood(100).await;
    let took = start.elapsed();
    let after = rss_kib(gw.pid());
    eprintln!(
        "6400 shed requests in {took:?} ({:.0}/s), worst {worst:?}; gateway RSS {before} -> {after} KiB",
        6400.0 / took.as_secs_f64()
    );
    assert!(
        worst < Duration::from_secs(5),
        "a shed answer took {worst:?}"
    );
    assert!(
        after < before + 16 * 1024,
        "gateway memory grew from {before} to {after} KiB while shedding"
    );
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        16,
        "shed requests reached the upstream"
    );
    up.release.send_replace(true);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
}

#[test]
fn a_gateway_on_a_public_address_without_keys_refuses_to_start_and_says_why() {
    let dir = TempDir::new("edge-open");
    let out = Command::new(hotel_bin())
        .args(["gateway", "--listen", "0.0.0.0:0"])
        .env("HOTEL_GATEWAY__ADMIN_LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.keys"), "{err}");
    assert!(err.contains("allow_anonymous"), "{err}");
}

#[tokio::test]
async fn sighup_reloads_the_keys_file_so_a_new_key_works_and_a_revoked_one_stops() {
    let dir = TempDir::new("edge-hup");
    let up = held_upstream().await;
    up.release.send_replace(true);
    let (old, new) = ("hk_old_0123456789abcdef", "hk_new_0123456789abcdef");
    let cfg = gateway_config(&dir, &up.url, &format!("app:{}\n", hash_key(old)), "");
    let gw = Proc::spawn("gateway", &["gateway", "--config", &cfg], &[], dir.path()).unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/api/rooms", gw.url());
    let status = |key: &'static str| {
        let r = client.get(&url).bearer_auth(key).send();
        async move { r.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(status(old).await, 200);
    assert_eq!(status(new).await, 401);
    std::fs::write(
        dir.path().join("keys"),
        format!("!app:{}\napp:{}\n", hash_key(old), hash_key(new)),
    )
    .unwrap();
    gw.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(Duration::from_secs(30), "the new key to work", || async {
        (status(new).await == 200).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(status(old).await, 401);
    assert!(gw.log_text().contains("configuration reloaded"));
}
