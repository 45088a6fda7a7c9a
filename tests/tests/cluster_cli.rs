//! `hotel up` and the cluster control commands, run as a user runs them: real processes,
//! each test in its own data directory with every port ephemeral.
//!
//! Run with `cargo build -p hotel && cargo test -p hotel-tests --test cluster_cli`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod cluster_support;

use cluster_support::{Cluster, until};
use hotel_tests::UP_EPHEMERAL_PORTS;

use std::{process::Command, time::Duration};

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_reports_real_addresses_writes_logs_and_sigterm_stops_every_instance() {
    let mut c = Cluster::up(&["--replicas", "1"]).await.unwrap();
    let file = c.file().unwrap();
    for key in ["gateway_url", "admin_url", "registry_url", "control_url"] {
        let url = file[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing: {file}"));
        assert!(
            url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
            "{key} = {url}"
        );
    }
    for key in ["api_key", "admin_token", "registry_token"] {
        assert!(
            file[key].as_str().is_some_and(|s| s.len() >= 16),
            "{key}: {file}"
        );
    }
    let instances = file["instances"].as_array().unwrap().clone();
    let names: Vec<&str> = instances
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["registry", "customer-1", "room-1", "booking-1", "gateway"]
    );
    for i in &instances {
        assert!(alive(i["pid"].as_u64().unwrap()), "{i}");
        assert!(
            c.log_path(i["name"].as_str().unwrap()).exists(),
            "no log for {i}"
        );
    }
    // The admin URL is the one the gateway announced (it bound port 0): it answers, and
    // lists every discovered instance, traffic or not.
    let admin_url = file["admin_url"].as_str().unwrap();
    let status: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("{admin_url}/admin/status"))
        .bearer_auth(file["admin_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["instances"].as_array().unwrap())
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    for name in ["customer-1", "room-1", "booking-1"] {
        assert!(listed.contains(&name), "{name} not in {status}");
    }
    let out = c.up_output();
    for needle in [
        "room-1",
        "Authorization: Bearer",
        "curl",
        file["gateway_url"].as_str().unwrap(),
    ] {
        assert!(out.contains(needle), "the banner lacks {needle:?}:\n{out}");
    }

    assert!(
        c.shutdown(Duration::from_secs(60)),
        "hotel up did not exit 0:\n{}",
        c.up_output()
    );
    for i in &instances {
        assert!(!alive(i["pid"].as_u64().unwrap()), "{i} survived hotel up");
    }
    assert!(
        !c.path().join("cluster.json").exists(),
        "cluster.json outlived the cluster"
    );
    // Services stop first and the registry last (hotel up's own log says so).
    let out = std::fs::read_to_string(c.log_path("up")).unwrap();
    let pos = |name: &str| {
        out.find(&format!("stopped instance={name} "))
            .unwrap_or_else(|| panic!("{name} not stopped:\n{out}"))
    };
    assert!(
        pos("room-1") < pos("gateway") && pos("gateway") < pos("registry"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_on_the_same_data_dir_is_refused_while_the_first_runs() {
    let c = Cluster::up(&["--replicas", "1"]).await.unwrap();
    let out = Command::new(hotel_tests::hotel_bin())
        .args(["up", "--data-dir", &c.data_dir()])
        .args(UP_EPHEMERAL_PORTS)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already running") && err.contains(&c.up_pid().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_stop_pause_resume_start_and_scale_change_the_instances_they_name() {
    let mut c = Cluster::up(&["--replicas", "1"]).await.unwrap();

    let before = c.instance("room-1").unwrap();
    let out = c.control(&["kill", "room-1"]);
    assert!(out.contains("killed room-1"), "{out}");
    let after = c.instance("room-1").unwrap();
    assert_eq!(after["state"], "killed", "{after}");
    assert!(!alive(before["pid"].as_u64().unwrap()));
    assert!(
        !c.file().unwrap()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "room-1")
    );

    // The next free name is reused, on a new process.
    let out = c.control(&["start", "room"]);
    assert!(out.contains("started room-1"), "{out}");
    let restarted = c.instance("room-1").unwrap();
    assert_eq!(restarted["state"], "running");
    assert_ne!(restarted["pid"], before["pid"]);

    c.control(&["pause", "room-1"]);
    assert_eq!(c.instance("room-1").unwrap()["state"], "paused");
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", restarted["pid"])).unwrap();
    assert!(stat.contains(") T "), "SIGSTOP did not stop it: {stat}");
    c.control(&["resume", "room-1"]);
    assert_eq!(c.instance("room-1").unwrap()["state"], "running");

    let out = c.control(&["scale", "room=3"]);
    assert!(out.contains("room-2") && out.contains("room-3"), "{out}");
    let out = c.control(&["scale", "room=1"]);
    assert!(
        out.contains("stopped room-3") && out.contains("stopped room-2"),
        "{out}"
    );
    assert_eq!(c.instance("room-2").unwrap()["state"], "stopped");
    // A graceful stop deregisters at once.
    assert_eq!(c.instance("room-2").unwrap()["registry"], "absent");

    let out = c.hotel(&["kill", "room-9"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("room-9") && err.contains("known instances") && err.contains("booking-1"),
        "{err}"
    );

    let out = c.hotel(&["stop", "room-2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));

    let out = c.hotel(&["scale", "gateway=2"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exactly one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_restart_a_killed_instance_comes_back_under_its_name() {
    let mut c = Cluster::up(&["--replicas", "1", "--restart"])
        .await
        .unwrap();
    let pid = c.instance("customer-1").unwrap()["pid"].clone();
    c.control(&["kill", "customer-1"]);
    let took = until(Duration::from_secs(60), "customer-1 restarted", || {
        c.instance("customer-1")
            .is_ok_and(|i| i["state"] == "running" && i["pid"] != pid && i["restarts"] == 1)
    })
    .await
    .unwrap();
    cluster_support::measured(
        "restart policy",
        "kill to running again",
        format!("{took:?}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_cannot_start_fails_up_naming_it_with_its_log() {
    // An unknown key makes every room replica refuse its configuration.
    let mut c = Cluster::spawn(&["--replicas", "1"], &[("HOTEL_ROOM__NO_SUCH_KEY", "1")]).unwrap();
    let status = c.wait_exit(Duration::from_secs(180));
    let text = c.up_output();
    assert!(
        status.is_some_and(|s| !s.success()),
        "hotel up should fail and exit non-zero ({status:?}):\n{text}"
    );
    assert!(
        text.contains("room-1") && text.contains("no_such_key"),
        "{text}"
    );
    assert!(
        c.leftover_pids().is_empty(),
        "instances outlived a failed hotel up: {:?}",
        c.leftover_pids()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_follow_a_killed_hotel_up_down_and_a_new_up_replaces_its_lock() {
    let mut c = Cluster::up(&["--replicas", "1"]).await.unwrap();
    let old: Vec<u64> = c.file().unwrap()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_u64().unwrap())
        .collect();
    c.kill_supervisor();
    // Each child asked the kernel for SIGTERM on its supervisor's death, so none is left
    // behind: they deregister and drain on their own.
    until(
        Duration::from_secs(30),
        "the instances of the killed hotel up to stop",
        || old.iter().all(|p| !alive(*p)),
    )
    .await
    .unwrap();
    // The control commands notice the supervisor is gone.
    let out = c.hotel(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));

    let mut again = Command::new(hotel_tests::hotel_bin())
        .args(["up", "--replicas", "1", "--data-dir", &c.data_dir()])
        .args(UP_EPHEMERAL_PORTS)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let new_pid = again.id();
    let ready = until(
        Duration::from_secs(180),
        "the second hotel up to be ready",
        || {
            c.file()
                .is_ok_and(|f| f["ready"] == true && f["supervisor_pid"] == new_pid)
        },
    )
    .await;
    let orphans: Vec<u64> = old.iter().copied().filter(|p| alive(*p)).collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = again.wait().unwrap();
    ready.unwrap();
    assert!(
        orphans.is_empty(),
        "orphans of the killed hotel up still run: {orphans:?}"
    );
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_endpoint_reaches_every_instance_and_the_banner_names_jaeger() {
    // Nothing listens there: export fails quietly, which is all this test needs.
    let endpoint = "http://127.0.0.1:9";
    let mut c = Cluster::up(&["--replicas", "1", "--otlp-endpoint", endpoint])
        .await
        .unwrap();
    assert!(
        c.up_output().contains("http://127.0.0.1:16686"),
        "{}",
        c.up_output()
    );
    assert_eq!(c.file().unwrap()["jaeger_url"], "http://127.0.0.1:16686");
    for i in c.file().unwrap()["instances"].as_array().unwrap() {
        let environ = std::fs::read(format!("/proc/{}/environ", i["pid"])).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            environ
                .split('\0')
                .any(|kv| kv == format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}")),
            "{} has no OTLP endpoint",
            i["name"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_demands_the_printed_dev_api_key() {
    let mut c = Cluster::up(&["--replicas", "1"]).await.unwrap();
    let (gw, key) = (c.gateway().unwrap(), c.api_key().unwrap());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("{gw}/api/rooms");
    let without = http.get(&url).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let wrong = http
        .get(&url)
        .bearer_auth("hk_dev_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let with = http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(
        with.status(),
        200,
        "{}",
        with.text().await.unwrap_or_default()
    );
}

#[test]
fn control_commands_without_a_cluster_say_how_to_start_one() {
    let dir = hotel_tests::TempDir::new("hotel-nocluster");
    let out = Command::new(hotel_tests::hotel_bin())
        .args(["kill", "room-1", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no cluster") && err.contains("hotel up"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_through_a_healthy_cluster_reports_every_request_ok() {
    let c = Cluster::up(&["--replicas", "1"]).await.unwrap();
    let summary = c
        .load(&[
            "--requests",
            "150",
            "--rate",
            "50",
            "--mix",
            "availability=2,room=2,customer=2,book=2,cancel=1,signup=1",
        ])
        .unwrap();
    let s = summary.finish(Duration::from_secs(90)).unwrap();
    assert_eq!(s["requests"], 150, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert!(s["by_op"]["book"]["ok"].as_u64().unwrap() > 0, "{s}");
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_user_sees_the_banner_first_private_files_heartbeats_and_a_guarded_scale_to_zero() {
    let mut c = Cluster::up_in_new_dir(&["--replicas", "1"]).await.unwrap();

    // Secrets on disk: a 0700 directory of 0600 files.
    assert_eq!(mode(c.path()), 0o700, "data directory");
    assert_eq!(mode(&c.path().join("logs")), 0o700, "logs directory");
    let mut files = Vec::new();
    for dir in [c.path().to_owned(), c.path().join("logs")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                files.push(e.path());
            }
        }
    }
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in [
        "cluster.json",
        "up.lock",
        "up.log",
        "room-1.log",
        "room.db",
        "room.db-wal",
        "room.db-shm",
        "booking.db",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "{needed} not in {names:?}"
        );
    }
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    // The banner is the first thing printed; start-up detail is in logs/up.log.
    let out = c.up_output();
    assert!(
        out.trim_start().starts_with("hotel cluster is up"),
        "something came before the banner:\n{out}"
    );
    let up_log = std::fs::read_to_string(c.log_path("up")).unwrap();
    assert!(
        up_log.contains("ready") && up_log.contains("room-1"),
        "{up_log}"
    );

    // Heartbeat age, and no EWMA for an instance that has answered nothing yet.
    let text = c.control(&["status"]);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("room-1 "))
        .unwrap()
        .split_whitespace()
        .collect();
    let age = row[col("HEARTBEAT")];
    assert!(
        age.ends_with('s') && age.trim_end_matches('s').parse::<f64>().is_ok(),
        "heartbeat {age:?}:\n{text}"
    );
    assert_eq!(
        row[col("EWMA")],
        "-",
        "an idle instance has no EWMA:\n{text}"
    );

    // Scaling a service to 0 names what it would stop and needs --force.
    let out = c.hotel(&["scale", "room=0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "scale room=0 went through: {err}");
    assert!(err.contains("room-1") && err.contains("--force"), "{err}");
    assert_eq!(c.instance("room-1").unwrap()["state"], "running");
    let out = c.control(&["scale", "room=0", "--force"]);
    assert!(out.contains("stopped room-1"), "{out}");
    assert_eq!(c.instance("room-1").unwrap()["state"], "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_registry_restart_status_shows_live_instances_re_registering_not_absent() {
    let mut c = Cluster::up(&["--replicas", "1"]).await.unwrap();
    c.control(&["kill", "registry"]);
    c.control(&["start", "registry"]);
    let mut seen = std::collections::BTreeSet::new();
    let mut last = String::new();
    until(
        Duration::from_secs(30),
        "every service re-registered",
        || {
            let s = c.status().unwrap();
            let states: Vec<String> = s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["service"] != "registry" && i["service"] != "gateway")
                .map(|i| i["registry"].as_str().unwrap().to_owned())
                .collect();
            seen.extend(states.iter().cloned());
            last = s.to_string();
            states.iter().all(|r| r == "registered")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: last status {last}; seen {seen:?}"));
    assert!(
        !seen.contains("absent"),
        "a live instance was shown absent after the registry restart: {seen:?}"
    );
}

#[test]
fn up_on_a_busy_port_names_the_port_its_holder_and_the_flag_that_moves_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = hotel_tests::TempDir::new("hotel-busy");
    let out = Command::new(hotel_tests::hotel_bin())
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--gateway-port", &port])
        // Every other listener ephemeral, as in the other tests.
        .args(&hotel_tests::UP_EPHEMERAL_PORTS[2..])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        format!("port {port}"),
        format!("pid {}", std::process::id()),
        "--gateway-port".to_owned(),
        "HOTEL_CLUSTER__PORTS__GATEWAY".to_owned(),
    ] {
        assert!(err.contains(&needle), "{needle:?} missing: {err}");
    }
    drop(taken);
}
