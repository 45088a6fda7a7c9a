//! What CI checks of the benchmark suite without running it: every bench script still
//! parses, and `config/bench-gateway.toml` is a config the gateway accepts, with the
//! settings and placeholder ports the scripts rely on.

use std::{path::PathBuf, process::Command, time::Duration};

use hotel_gateway::{Config, Settings};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bench_config_path() -> PathBuf {
    repo_root().join("config/bench-gateway.toml")
}

fn load_bench_config() -> Config {
    let settings: Settings = hotel_common::config::load_with_env(
        &Settings::default(),
        Some(&bench_config_path()),
        "gateway",
        &[],
    )
    .unwrap_or_else(|e| panic!("config/bench-gateway.toml does not load: {e}"));
    Config::try_from(settings)
        .unwrap_or_else(|e| panic!("config/bench-gateway.toml is not valid: {e}"))
}

#[test]
fn every_bench_script_parses_with_bash_n() {
    let dir = repo_root().join("bench");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("bench/ is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    scripts.sort();
    let names: Vec<String> = scripts
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in ["check.sh", "failover.sh", "lib.sh", "run.sh"] {
        assert!(
            names.iter().any(|n| n == expected),
            "bench/{expected} is missing: {names:?}"
        );
    }
    for script in &scripts {
        let out = Command::new("bash")
            .arg("-n")
            .arg(script)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "{} does not parse: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_bench_gateway_config_is_valid_with_three_static_room_instances_and_one_worker() {
    let config = load_bench_config();
    assert_eq!(
        config.worker_threads, 1,
        "the peers run one worker; so must the gateway"
    );
    assert!(
        config.registry.is_none(),
        "the bench uses static upstreams, no registry"
    );
    let room = config.services.get("room").expect("a room service");
    let origins: Vec<String> = room.instances.iter().map(|(_, o)| o.to_string()).collect();
    assert_eq!(
        origins,
        [
            "http://127.0.0.1:18081",
            "http://127.0.0.1:18082",
            "http://127.0.0.1:18083"
        ]
    );
    let route = config
        .routes
        .iter()
        .find(|r| r.prefix == "/api/rooms")
        .expect("the route the load generators request");
    assert_eq!(route.service, "room");
    // The same resilience settings the peers get: 1 s per try, 2 retries.
    assert_eq!(route.policy.per_try_timeout, Duration::from_secs(1));
    assert_eq!(route.policy.retries, 2);
    assert_eq!(config.connect_timeout, Duration::from_secs(1));
}

#[test]
fn the_bench_gateway_config_names_every_port_the_scripts_substitute() {
    // lib.sh's gateway_conf rewrites exactly these strings; if one went missing, a run
    // would silently point the gateway at the wrong port.
    let text = std::fs::read_to_string(bench_config_path()).expect("config readable");
    for needle in [
        "listen = \"127.0.0.1:18080\"",
        "admin_listen = \"127.0.0.1:18090\"",
        "\"http://127.0.0.1:18081\"",
        "\"http://127.0.0.1:18082\"",
        "\"http://127.0.0.1:18083\"",
        "\nworker_threads = 1\n",
    ] {
        assert!(
            text.contains(needle),
            "config/bench-gateway.toml lacks {needle:?}"
        );
    }
    let lib = std::fs::read_to_string(repo_root().join("bench/lib.sh")).expect("lib.sh readable");
    for port in ["18080", "18081", "18082", "18083", "18090"] {
        assert!(
            lib.contains(port),
            "bench/lib.sh no longer substitutes port {port}"
        );
    }
}
