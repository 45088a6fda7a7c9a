//! TLS at the edge and live reconfiguration, with real `hotel` processes and real TLS
//! clients: reqwest (rustls) and `curl --cacert`, over h2 and HTTP/1.1; certificates from
//! the same local CA code `hotel up --tls` uses. Also the reload drill: 20 reloads in
//! 10 s under steady load.

#![allow(clippy::unwrap_used)]

mod cluster_support;

use axum::Router;
use cluster_support::Cluster;
use hotel_common::tls::local_ca::{Ca, write};
use hotel_tests::{Proc, TempDir, eventually};
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use time::OffsetDateTime;

const KEY: &str = "hk_tls_0123456789abcdef";

/// A fake room instance answering `[]` at once.
async fn upstream() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = Router::new().fallback(|| async { "[]" });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// SHA-256 hex of a key, as `[[auth.keys]] sha256` wants it.
fn hash(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// Writes `cert`/`key` as the gateway's files in `dir`; returns their paths.
fn write_pair(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("gateway.pem"), dir.join("gateway-key.pem"));
    write(&c, cert, false).unwrap();
    write(&k, key, true).unwrap();
    (c, k)
}

/// A CA certificate in a file, for clients.
fn ca_file(dir: &Path, name: &str, ca: &Ca) -> PathBuf {
    let p = dir.join(name);
    write(&p, &ca.cert_pem, false).unwrap();
    p
}

/// `hotel gateway` with `[tls]` on `pair`, routing `/api/rooms` to `room`.
fn tls_gateway(dir: &TempDir, room: &str, pair: (PathBuf, PathBuf), extra: &str) -> Proc {
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [[auth.keys]]\nclient = \"app\"\nsha256 = \"{}\"\n\
             [services.room]\ninstances = [\"{room}\"]\n\
             [tls]\ncert = {:?}\nkey = {:?}\nreload_interval = \"100ms\"\n{extra}",
            hash(KEY),
            pair.0,
            pair.1
        ),
    )
    .unwrap();
    Proc::spawn(
        "gateway",
        &["gateway", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    )
    .unwrap()
}

/// `https://localhost:PORT`.
fn https(gw: &Proc) -> String {
    format!("https://localhost:{}", gw.addr.port())
}

/// A reqwest client (rustls) that trusts only `ca`.
fn client_trusting(ca: &Ca, http1: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap()])
        .https_only(true)
        .no_proxy()
        .timeout(Duration::from_secs(30));
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

/// `curl ARGS -w '%{http_version} %{http_code}'`: (exit code, what it printed).
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "20",
            "-w",
            "%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The admin listener's `/metrics`.
async fn metrics(gw: &Proc) -> String {
    let admin = admin_addr(gw).await;
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The admin address from the gateway's `admin listening on` line (printed right after
/// the `listening on` line that [`Proc::spawn`] waits for).
async fn admin_addr(gw: &Proc) -> String {
    eventually(Duration::from_secs(10), "the admin address", || async {
        gw.log_text()
            .lines()
            .find_map(|l| l.strip_prefix("admin listening on http://"))
            .map(|a| a.trim().to_owned())
    })
    .await
    .unwrap()
}

fn counter(text: &str, start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_h2_and_http1_over_tls_to_clients_that_trust_its_ca() {
    let dir = TempDir::new("tls-edge");
    let ca = Ca::new("test CA").unwrap();
    let pair = write_pair(dir.path(), &ca.issue(&["localhost", "127.0.0.1"]).unwrap());
    let gw = tls_gateway(&dir, &upstream().await, pair, "");
    let url = format!("{}/api/rooms", https(&gw));

    let h2 = client_trusting(&ca, false)
        .get(&url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(h2.status(), 200);
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    assert!(h2.headers().contains_key("x-request-id"));
    let h1 = client_trusting(&ca, true)
        .get(&url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(h1.status(), 200);
    assert_eq!(h1.version(), reqwest::Version::HTTP_11);
    // No key over TLS is still problem+json 401.
    let anon = client_trusting(&ca, false).get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401);

    let cacert = ca_file(dir.path(), "ca.pem", &ca);
    let cacert = cacert.to_str().unwrap();
    let auth = format!("authorization: Bearer {KEY}");
    assert_eq!(
        curl(&["--cacert", cacert, "--http2", "-H", &auth, &url]),
        (0, "2 200".to_owned())
    );
    assert_eq!(
        curl(&["--cacert", cacert, "--http1.1", "-H", &auth, &url]),
        (0, "1.1 200".to_owned())
    );
    // TLS 1.2 is the oldest version offered: a TLS 1.1 client finds no common version.
    let (code, _) = curl(&["--cacert", cacert, "--tlsv1.1", "--tls-max", "1.1", &url]);
    assert_ne!(code, 0);
    let (code, _) = curl(&[
        "--cacert",
        cacert,
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "-H",
        &auth,
        &url,
    ]);
    assert_eq!(code, 0);
    // Cleartext to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/api/rooms", gw.addr))
        .timeout(Duration::from_secs(20))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    let m = metrics(&gw).await;
    assert!(
        counter(&m, "gateway_tls_handshakes_total{outcome=\"ok\"}") >= 6.0,
        "{m}"
    );
    assert!(
        counter(&m, "gateway_tls_handshakes_total{outcome=\"protocol\"}") >= 2.0,
        "{m}"
    );
    assert!(gw.log_text().contains("TLS handshake failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_refuse_a_certificate_from_another_ca_or_an_expired_one() {
    let dir = TempDir::new("tls-refused");
    let ca = Ca::new("test CA").unwrap();
    let other = Ca::new("another CA").unwrap();
    let room = upstream().await;
    let gw = tls_gateway(
        &dir,
        &room,
        write_pair(dir.path(), &ca.issue(&["localhost"]).unwrap()),
        "",
    );
    let url = format!("{}/api/rooms", https(&gw));
    let wrong = client_trusting(&other, false).get(&url).send().await;
    assert!(wrong.is_err(), "{wrong:?}");
    let other_file = ca_file(dir.path(), "other.pem", &other);
    // curl 60: the peer certificate cannot be authenticated with the given CA.
    assert_eq!(
        curl(&["--cacert", other_file.to_str().unwrap(), &url]).0,
        60
    );
    eventually(Duration::from_secs(10), "the refusals counted", || async {
        let m = metrics(&gw).await;
        (counter(&m, "gateway_tls_handshakes_total{outcome=\"alert\"}") >= 2.0).then_some(())
    })
    .await
    .unwrap();

    let expired_dir = TempDir::new("tls-expired");
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue_between(
            &["localhost"],
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .unwrap();
    let gw = tls_gateway(
        &expired_dir,
        &room,
        write_pair(expired_dir.path(), &expired),
        "",
    );
    let url = format!("{}/api/rooms", https(&gw));
    let err = client_trusting(&ca, false)
        .get(&url)
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("expired"),
        "{err:?}"
    );
    let ca_path = ca_file(expired_dir.path(), "ca.pem", &ca);
    assert_eq!(curl(&["--cacert", ca_path.to_str().unwrap(), &url]).0, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_refused() {
    let dir = TempDir::new("tls-renew");
    let old_ca = Ca::new("old CA").unwrap();
    let new_ca = Ca::new("new CA").unwrap();
    let gw = tls_gateway(
        &dir,
        &upstream().await,
        write_pair(dir.path(), &old_ca.issue(&["localhost"]).unwrap()),
        "",
    );
    let url = format!("{}/api/rooms", https(&gw));
    // One long-lived connection opened before the renewal: it must keep working.
    let kept = client_trusting(&old_ca, false);
    assert_eq!(
        kept.get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let renewed = client_trusting(&new_ca, false);
    assert!(renewed.get(&url).send().await.is_err());

    write_pair(dir.path(), &new_ca.issue(&["localhost"]).unwrap());
    eventually(
        Duration::from_secs(10),
        "the renewed certificate served",
        || async {
            let r = client_trusting(&new_ca, false)
                .get(&url)
                .bearer_auth(KEY)
                .send()
                .await;
            r.ok().filter(|r| r.status() == 200).map(|_| ())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        kept.get(&url)
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A key that does not fit the certificate: refused, logged, the renewed pair stays.
    let (_, stray_key) = new_ca.issue(&["localhost"]).unwrap();
    write(&dir.path().join("gateway-key.pem"), &stray_key, true).unwrap();
    eventually(
        Duration::from_secs(10),
        "the broken pair refused",
        || async {
            let m = metrics(&gw).await;
            (counter(
                &m,
                "gateway_tls_certificate_reloads_total{outcome=\"refused\"}",
            ) >= 1.0)
                .then_some(())
        },
    )
    .await
    .unwrap();
    assert!(gw.log_text().contains("TLS certificate not reloaded"));
    let r = client_trusting(&new_ca, false)
        .get(&url)
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics(&gw).await;
    assert_eq!(
        counter(
            &m,
            "gateway_tls_certificate_reloads_total{outcome=\"accepted\"}"
        ),
        1.0,
        "{m}"
    );
}

/// The drill of the issue: under steady load, 20 reloads in 10 s that add and remove a
/// route and a key and change a rate limit. Requests on the unchanged route never fail;
/// after each reload the removed key is refused and the added one accepted within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_reloads_under_load_fail_no_request_and_take_effect_within_a_second() {
    let dir = TempDir::new("reload-drill");
    let room = upstream().await;
    let cfg = dir.path().join("gateway.toml");
    let (steady, a, b) = (
        "hk_steady_0123456789abcdef",
        "hk_alpha_0123456789abcdef",
        "hk_bravo_0123456789abcdef",
    );
    // Version `i`: the steady key, key A or B in turn, the route /api/extra every other
    // time, and a rate limit for the steady client that moves.
    let write_version = |i: usize| {
        let (key, extra_route) = if i.is_multiple_of(2) {
            (a, true)
        } else {
            (b, false)
        };
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [[auth.keys]]\nclient = \"steady\"\nsha256 = \"{}\"\n\
             [[auth.keys]]\nclient = \"turn\"\nsha256 = \"{}\"\n\
             [rate_limit.clients.steady]\nrate = {}.0\nburst = 100000\n\
             [services.room]\ninstances = [\"{room}\"]\n\
             [[routes]]\nprefix = \"/api/rooms\"\nservice = \"room\"\n",
            hash(steady),
            hash(key),
            100_000 + i
        );
        if extra_route {
            text.push_str("[[routes]]\nprefix = \"/api/extra\"\nservice = \"room\"\n");
        }
        let tmp = cfg.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
    };
    write_version(0);
    let gw = Proc::spawn(
        "gateway",
        &["gateway", "--config", cfg.to_str().unwrap()],
        &[],
        dir.path(),
    )
    .unwrap();
    let admin = admin_addr(&gw).await;
    let base = gw.url();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Steady load on the unchanged route: four loops until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{base}/api/rooms"));
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = client.get(&url).bearer_auth(steady).send().await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let status = |key: &'static str, path: &'static str| {
        let r = client.get(format!("{base}{path}")).bearer_auth(key).send();
        async move { r.await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 1..=20 {
        write_version(i);
        // Half by SIGHUP, half by the admin API (what `hotel reload` calls).
        if i.is_multiple_of(2) {
            gw.signal(nix::sys::signal::Signal::SIGHUP);
        } else {
            let r = client
                .post(format!("http://{admin}/admin/reload"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        }
        let t = Instant::now();
        let (added, removed) = if i.is_multiple_of(2) { (a, b) } else { (b, a) };
        let extra = if i.is_multiple_of(2) { 200 } else { 404 };
        eventually(Duration::from_secs(1), "the reload in effect", || async {
            (status(added, "/api/rooms").await == 200
                && status(removed, "/api/rooms").await == 401
                && status(added, "/api/extra").await == extra)
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("reload {i}: {e}"));
        slowest = slowest.max(t.elapsed());
        // 20 reloads in 10 s.
        let due = Duration::from_millis(500 * i as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{ok} ok");
    assert!(ok > 100, "too little load to mean anything: {ok}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    let m = metrics(&gw).await;
    assert_eq!(
        counter(&m, "gateway_config_reloads_total{outcome=\"accepted\"}"),
        20.0
    );
    assert_eq!(counter(&m, "gateway_config_version "), 21.0);
    eprintln!("reload drill: {ok} ok, 0 failed, slowest reload in effect after {slowest:?}");
}

/// `hotel up --tls`: a local CA in the data directory, the gateway on https, trusted with
/// `curl --cacert`; `hotel reload` re-reads the gateway's file and `hotel status` shows
/// the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotel_up_tls_serves_https_from_a_local_ca_and_hotel_reload_applies_the_file() {
    let conf = TempDir::new("up-tls-conf");
    let gw_file = conf.path().join("gateway.toml");
    std::fs::write(
        &gw_file,
        "[rate_limit]\ndefault = { rate = 100.0, burst = 200 }\n",
    )
    .unwrap();
    let mut c = Cluster::up(&[
        "--replicas",
        "1",
        "--tls",
        "--gateway-config",
        gw_file.to_str().unwrap(),
    ])
    .await
    .unwrap();
    let file = c.file().unwrap();
    let gateway = file["gateway_url"].as_str().unwrap().to_owned();
    assert!(gateway.starts_with("https://"), "{file}");
    let ca = file["ca_cert"].as_str().unwrap().to_owned();
    assert!(Path::new(&ca).starts_with(c.data_dir()), "{ca}");
    assert!(c.up_output().contains("--cacert"), "{}", c.up_output());
    let key = c.api_key().unwrap();
    let auth = format!("authorization: Bearer {key}");
    let url = format!("{gateway}/api/rooms");
    assert_eq!(
        curl(&["--cacert", &ca, "-H", &auth, &url]),
        (0, "2 200".to_owned())
    );
    assert_eq!(curl(&[&url]).0, 60, "untrusted without --cacert");
    // `hotel load` is cleartext only, and says so instead of failing every request.
    let load = c.hotel(&["load", "--requests", "1"]);
    assert!(!load.status.success());
    assert!(String::from_utf8_lossy(&load.stderr).contains("cleartext"));

    std::fs::write(
        &gw_file,
        "[rate_limit]\ndefault = { rate = 50.0, burst = 100 }\n",
    )
    .unwrap();
    let out = c.hotel(&["reload"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("configuration version 2 (changed: rate_limit)"),
        "{text}"
    );
    std::fs::write(
        &gw_file,
        "[rate_limit]\ndefault = { rate = -1.0, burst = 100 }\n",
    )
    .unwrap();
    let out = c.hotel(&["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rate_limit.default"), "{err}");
    let status = c.hotel(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("gateway config: version 2"), "{text}");
    assert_eq!(
        curl(&["--cacert", &ca, "-H", &auth, &url]),
        (0, "2 200".to_owned())
    );
    assert!(c.shutdown(Duration::from_secs(30)));
}
