//! The dashboard in a real browser: `hotel up` with replicas and steady load, headless
//! Chromium logs in through the `dashboard_url` of `cluster.json`, the instance table
//! fills and updates every second, a click pauses `room-2` (the page and `hotel status`
//! both say paused) and resumes it, a fault is set on `room-1` from the form and cleared
//! from its row, a refused scale shows the problem's detail and `room=3` starts `room-3`,
//! which its kill button kills, the slowest requests link to their traces in the Jaeger
//! UI, booking's view of room and customer (from booking-1's own `/metrics`) fills its
//! panel, and the page cannot call the control API without its CSRF header. Screenshots
//! go to `target/dashboard-test/`.
//!
//! Needs Chromium (`scripts/chromium.sh install`; `scripts/test.sh` exports
//! `HOTEL_TEST_CHROMIUM`): skipped with a message without it, except in CI.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod browser_support;
mod cluster_support;

use browser_support::{Browser, chromium};
use cluster_support::Cluster;
use serde_json::Value;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

/// Where the screenshots go.
fn shots() -> PathBuf {
    hotel_tests::repo_root()
        .join("target")
        .join("dashboard-test")
}

/// The text of one cell of an instance's row (`state`, `fault`, ...).
fn cell(name: &str, class: &str) -> String {
    format!(
        "(document.querySelector('#instances tr[data-instance=\"{name}\"] td.{class}') || {{}}).textContent"
    )
}

/// The state `hotel status --json` reports for `name`.
fn status_state(c: &mut Cluster, name: &str) -> String {
    c.instance(name).unwrap()["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_live_and_its_buttons_pause_fault_and_clear_instances() {
    let Some(chromium) = chromium() else {
        return;
    };
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    // Traces go to a port where nothing listens unless a Jaeger was started for the
    // tests: the links to the Jaeger UI are there either way.
    let otlp = std::env::var("HOTEL_TEST_OTLP_ENDPOINT")
        .unwrap_or_else(|_| format!("http://127.0.0.1:{}", hotel_tests::free_port()));
    let jaeger_ui =
        std::env::var("HOTEL_TEST_JAEGER").unwrap_or_else(|_| "http://127.0.0.1:16686".to_owned());
    let jaeger_ui = jaeger_ui.trim_end_matches('/');
    let mut c = Cluster::up(&[
        "--replicas",
        "customer=1,room=2,booking=1",
        "--otlp-endpoint",
        &otlp,
        "--jaeger-ui",
        jaeger_ui,
    ])
    .await
    .unwrap();
    phase("hotel up ready");
    let file = c.file().unwrap();
    let url = file["dashboard_url"].as_str().unwrap().to_owned();
    let control = file["control_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{control}/dashboard/login?token=dsh_")),
        "{url}"
    );
    assert!(c.up_output().contains(&url), "the banner lacks {url}");
    let mut load = c
        .load(&[
            "--rate",
            "30",
            "--duration",
            "180s",
            "--mix",
            "availability=2,room=4,customer=2,book=2,cancel=1",
        ])
        .unwrap();
    load.wait_running(Duration::from_secs(60)).await.unwrap();
    phase("load running");

    let browser = Browser::launch(&chromium, 1400, 1500).await.unwrap();
    let page = browser.new_page().await.unwrap();
    phase("chromium up");
    page.navigate(&url).await.unwrap();
    // Logged in and redirected: the token is out of the address bar.
    page.wait_for(
        "the page after login",
        Duration::from_secs(20),
        "location.pathname",
        |v| v == "/dashboard",
    )
    .await
    .unwrap();
    let rows = page
        .wait_for(
            "the instance table to fill",
            Duration::from_secs(20),
            "Array.from(document.querySelectorAll('#instances tr[data-instance]'), r => r.dataset.instance).sort().join(' ')",
            |v| v == "booking-1 customer-1 gateway registry room-1 room-2",
        )
        .await
        .unwrap();
    phase(&format!("table filled: {rows}"));
    // Updated about once a second: four snapshots in a row, stamped by the sampler, each
    // at most 1.5 s after the one before (the page is polled every 100 ms).
    let mut stamps: Vec<u64> = Vec::new();
    let started = Instant::now();
    while stamps.len() < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "snapshots seen in 10 s: {stamps:?}"
        );
        if let Value::String(s) = page.eval("document.body.dataset.updated").await.unwrap()
            && let Ok(t) = s.parse::<u64>()
            && t > 0
            && stamps.last() != Some(&t)
        {
            stamps.push(t);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gaps: Vec<u64> = stamps.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g <= 1500),
        "gaps between snapshots: {gaps:?} ms"
    );
    // The gateway's view reaches the page: room traffic, a closed breaker.
    page.wait_for(
        "room-1's breaker and rate",
        Duration::from_secs(20),
        &format!("[{}, {}]", cell("room-1", "breaker"), cell("room-1", "rps")),
        |v| v[0] == "closed" && v[1].as_str().is_some_and(|r| r != "-"),
    )
    .await
    .unwrap();
    assert_eq!(
        page.eval(&cell("room-2", "state")).await.unwrap(),
        "running"
    );
    // Booking's view, scraped from booking-1's own /metrics: the load's bookings go
    // through its upstream client to customer and room, so the panel names each of
    // their instances, with a closed breaker and a rate.
    let seen = page
        .wait_for(
            "booking's view of room and customer",
            Duration::from_secs(30),
            "Array.from(document.querySelectorAll('#booking-view tr[data-upstream]'), r => \
             [r.dataset.from, r.dataset.upstream, r.querySelector('td.breaker').textContent, \
              r.querySelector('td.rps').textContent].join(' '))",
            |v| {
                let rows: Vec<&str> = v
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                ["customer-1", "room-1", "room-2"].iter().all(|up| {
                    rows.iter().any(|r| {
                        r.strip_prefix(&format!("booking-1 {up} closed "))
                            .is_some_and(|rps| rps != "-")
                    })
                })
            },
        )
        .await
        .unwrap();
    phase(&format!("booking's view filled: {seen}"));
    // A paused booking instance is not asked (it would hold the sampler's round up), and
    // its row says why; resumed, its rows come back.
    let booking_1 = "#booking-view tr[data-from=\"booking-1\"]";
    page.click("#instances tr[data-instance=\"booking-1\"] button[data-action=\"pause\"]")
        .await
        .unwrap();
    page.wait_for(
        "booking-1 paused in booking's view",
        Duration::from_secs(10),
        &format!("(document.querySelector('{booking_1} td.empty') || {{}}).textContent"),
        |v| v == "not asked (paused)",
    )
    .await
    .unwrap();
    page.click("#instances tr[data-instance=\"booking-1\"] button[data-action=\"resume\"]")
        .await
        .unwrap();
    page.wait_for(
        "booking-1's rows back after resume",
        Duration::from_secs(20),
        &format!("document.querySelectorAll('{booking_1}[data-upstream]').length"),
        |v| v.as_u64().is_some_and(|n| n >= 3),
    )
    .await
    .unwrap();
    phase("booking-1 paused and resumed: its view says so, then fills again");

    // Pause from the page.
    page.click("#instances tr[data-instance=\"room-2\"] button[data-action=\"pause\"]")
        .await
        .unwrap();
    page.wait_for(
        "room-2 paused on the page",
        Duration::from_secs(10),
        &cell("room-2", "state"),
        |v| v == "paused",
    )
    .await
    .unwrap();
    assert_eq!(status_state(&mut c, "room-2"), "paused");
    phase("room-2 paused from the page; hotel status agrees");
    page.wait_for(
        "the pause in the feed",
        Duration::from_secs(5),
        "document.querySelector('#feed').textContent",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("room-2: running -> paused"))
        },
    )
    .await
    .unwrap();
    page.screenshot(&shots().join("paused.png")).await.unwrap();
    page.click("#instances tr[data-instance=\"room-2\"] button[data-action=\"resume\"]")
        .await
        .unwrap();
    page.wait_for(
        "room-2 running again",
        Duration::from_secs(10),
        &cell("room-2", "state"),
        |v| v == "running",
    )
    .await
    .unwrap();
    assert_eq!(status_state(&mut c, "room-2"), "running");
    phase("room-2 resumed from the page");

    // A fault from the form, cleared from the row.
    page.eval(
        "(() => { const f = document.querySelector('#fault-form'); \
         f.instance.value = 'room-1'; f.error_rate.value = '0.5'; f.status.value = '503'; \
         return f.instance.value; })()",
    )
    .await
    .unwrap();
    page.click("#fault-form button[type=submit]").await.unwrap();
    page.wait_for(
        "room-1's fault on the page",
        Duration::from_secs(10),
        &cell("room-1", "fault"),
        |v| v.as_str().is_some_and(|t| t.contains("error 50% (503)")),
    )
    .await
    .unwrap();
    let row = c.instance("room-1").unwrap();
    assert_eq!(row["fault"]["spec"]["error_rate"], 0.5, "{row}");
    phase("fault set on room-1 from the page; hotel status agrees");
    // The slowest requests link to their traces.
    let link = page
        .wait_for(
            "a trace link among the slowest requests",
            Duration::from_secs(10),
            "(document.querySelector('#slowest a') || {}).href",
            |v| v.is_string(),
        )
        .await
        .unwrap();
    let link = link.as_str().unwrap();
    let id = link
        .strip_prefix(&format!("{jaeger_ui}/trace/"))
        .unwrap_or_else(|| panic!("{link}"));
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{link}"
    );
    // The fault shows before the picture: room-1's error rate, or (when the share of
    // failures in its window ran past the threshold) its ejection in the feed.
    page.wait_for(
        "room-1's errors or ejection on the page",
        Duration::from_secs(20),
        &format!(
            "[{}, document.querySelector('#feed').textContent]",
            cell("room-1", "errors")
        ),
        |v| {
            v[0].as_str().is_some_and(|t| t != "-" && t != "0.0 %")
                || v[1]
                    .as_str()
                    .is_some_and(|t| t.contains("room-1 (room) ejected"))
        },
    )
    .await
    .unwrap();
    page.screenshot(&shots().join("fault.png")).await.unwrap();
    page.click("#instances tr[data-instance=\"room-1\"] button[data-action=\"clear\"]")
        .await
        .unwrap();
    page.wait_for(
        "room-1's fault cleared on the page",
        Duration::from_secs(10),
        &cell("room-1", "fault"),
        |v| v == "",
    )
    .await
    .unwrap();
    assert!(c.instance("room-1").unwrap()["fault"].is_null());
    phase("fault cleared from the page");

    // Scale from the page: a count past the maximum comes back as the problem's detail;
    // room=3 starts room-3, which the row's kill button then kills.
    page.eval(
        "(() => { const f = document.querySelector('#service-form'); \
         f.service.value = 'room'; f.replicas.value = '99'; return f.service.value; })()",
    )
    .await
    .unwrap();
    page.click("#scale").await.unwrap();
    page.wait_for(
        "the refusal under the form",
        Duration::from_secs(10),
        "document.querySelector('#toast').textContent",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("more than the maximum of 16"))
        },
    )
    .await
    .unwrap();
    page.eval("document.querySelector('#service-form').replicas.value = '3'")
        .await
        .unwrap();
    page.click("#scale").await.unwrap();
    page.wait_for(
        "room-3 running on the page",
        Duration::from_secs(60),
        &cell("room-3", "state"),
        |v| v == "running",
    )
    .await
    .unwrap();
    phase("room scaled to 3 from the page");
    page.click("#instances tr[data-instance=\"room-3\"] button[data-action=\"kill\"]")
        .await
        .unwrap();
    page.wait_for(
        "room-3 killed on the page",
        Duration::from_secs(15),
        &cell("room-3", "state"),
        |v| v == "killed",
    )
    .await
    .unwrap();
    assert_eq!(status_state(&mut c, "room-3"), "killed");
    phase("room-3 killed from the page");

    // The page's cookie alone does not make a control call: the CSRF header is needed.
    let refused = page
        .eval("fetch('/v1/instances/room-2/pause', {method: 'POST'}).then(r => r.status)")
        .await
        .unwrap();
    assert_eq!(refused, 403);
    assert_eq!(status_state(&mut c, "room-2"), "running");
    page.screenshot(&shots().join("dashboard.png"))
        .await
        .unwrap();
    phase("screenshots saved");

    browser.close().await;
    let summary = load.stop().unwrap();
    assert!(summary["ok"].as_u64().unwrap_or(0) > 0, "{summary}");
    assert!(c.shutdown(Duration::from_secs(60)));
    phase("done");
}
