//! Mutual TLS between the components (`hotel up --internal-tls`), with real processes and
//! real TLS clients (`curl` with and without a client certificate): the whole request
//! path works over mTLS (gateway -> booking -> room and customer, the services ->
//! registry, customer <- booking's event feed, the supervisor's fault calls, `hotel
//! status`, the dashboard's scrape of booking's `/metrics`), and a service refuses a
//! caller without a certificate, with a certificate from another CA, or with one of a
//! role that may not call it.

#![allow(clippy::unwrap_used)]

mod cluster_support;

use cluster_support::{Cluster, until};
use hotel_common::tls::local_ca::{Ca, write};
use hotel_tests::{TempDir, day};
use serde_json::{Value, json};
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

/// `curl -s ARGS URL`: (exit code, `HTTP_CODE BODY`).
fn curl(args: &[&str], url: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", " %{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The address of the first running instance named `name` in cluster.json.
fn address_of(c: &mut Cluster, name: &str) -> String {
    let file = c.file().unwrap();
    file["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .and_then(|i| i["address"].as_str())
        .unwrap_or_else(|| panic!("{name} has no address: {file}"))
        .to_owned()
}

/// The first snapshot of the dashboard's event stream, logged in through `login` (the
/// `dashboard_url` of cluster.json); `None` when a step fails.
async fn dashboard_snapshot(login: &str) -> Option<Value> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let res = http.get(login).send().await.ok()?;
    let cookie = res
        .headers()
        .get("set-cookie")?
        .to_str()
        .ok()?
        .split(';')
        .next()?
        .to_owned();
    let events = login.split("/dashboard/login").next()?.to_owned() + "/dashboard/events";
    let mut res = http
        .get(events)
        .header("cookie", cookie)
        .send()
        .await
        .ok()?;
    let mut text = String::new();
    while !text.contains("\n\n") {
        text += &String::from_utf8_lossy(&res.chunk().await.ok()??);
    }
    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str::<Value>(data).ok()?["snapshot"]
        .get("booking")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hotel_up_internal_tls_serves_through_mtls_and_services_refuse_wrong_callers() {
    let mut c = Cluster::up(&["--replicas", "1", "--internal-tls"])
        .await
        .unwrap();
    let file = c.file().unwrap();
    let registry = file["registry_url"].as_str().unwrap().to_owned();
    assert!(registry.starts_with("https://"), "{file}");
    let tls_dir = Path::new(&c.data_dir()).join("tls");
    let ca = tls_dir.join("ca.pem");
    let internal = tls_dir.join("internal");
    let role = |r: &str| {
        (
            internal.join(format!("{r}.pem")).display().to_string(),
            internal.join(format!("{r}-key.pem")).display().to_string(),
        )
    };
    assert_eq!(
        file["internal_tls"]["cert"].as_str(),
        Some(role("control").0.as_str()),
        "{file}"
    );
    assert!(c.up_output().contains("mtls"), "{}", c.up_output());

    // The whole path over mTLS: a booking through the gateway (booking reads room and
    // customer), and customer's count from booking's event feed.
    let (gw, key) = (c.gateway().unwrap(), c.api_key().unwrap());
    let http = reqwest::Client::new();
    let post = |path: &'static str, body: Value| {
        let req = http
            .post(format!("{gw}/api/{path}"))
            .bearer_auth(&key)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body);
        async move {
            let res = req.send().await.unwrap();
            let status = res.status();
            let body: Value = res.json().await.unwrap();
            assert!(status.is_success(), "POST {path}: {status} {body}");
            body["id"].as_str().unwrap().to_owned()
        }
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let customer = post(
        "customers",
        json!({"name": "Mutual Guest", "email": format!("mtls-{suffix}@example.test")}),
    )
    .await;
    let room = post(
        "rooms",
        json!({"number": format!("M{}", &suffix[..8]), "kind": "double", "capacity": 2, "nightly_rate_cents": 9000}),
    )
    .await;
    post(
        "bookings",
        json!({"customer_id": customer, "room_id": room, "check_in": day(10), "check_out": day(12), "guests": 2}),
    )
    .await;
    let counted = until(
        Duration::from_secs(30),
        "customer's booking count from booking's event feed",
        || {
            let url = format!("{gw}/api/customers/{customer}");
            let body = std::process::Command::new("curl")
                .args(["-s", "--max-time", "5", "-H"])
                .arg(format!("authorization: Bearer {key}"))
                .arg(&url)
                .output()
                .ok()
                .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
            body.is_some_and(|b| b["bookings"]["active"] == 1)
        },
    )
    .await;
    assert!(counted.is_ok(), "{counted:?}");

    // The dashboard's sampler scrapes booking's /metrics over mTLS: booking-1's view of
    // the customer and room instances it called for that booking.
    let login = file["dashboard_url"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view = dashboard_snapshot(&login).await;
        let names = view.as_ref().and_then(|v| {
            let b = v
                .as_array()?
                .iter()
                .find(|b| b["instance"] == "booking-1")?;
            let rows = b["upstreams"].as_array()?;
            let mut names: Vec<String> = rows
                .iter()
                .filter(|u| u["breaker"] == "closed")
                .filter_map(|u| u["instance"].as_str().map(str::to_owned))
                .collect();
            names.sort();
            Some(names)
        });
        if names.as_deref() == Some(&["customer-1".to_owned(), "room-1".to_owned()]) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "booking's view on the dashboard over mTLS: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(view.unwrap()[0]["reachable"], true);

    // The operators' tools speak mTLS too: status reads the registry, faults reach room.
    let status = c.status().unwrap();
    let room_row = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "room-1")
        .cloned()
        .unwrap();
    assert_eq!(status["registry_reachable"], true, "{status}");
    assert_eq!(room_row["registry"], "registered", "{status}");
    c.control(&["fault", "room-1", "--latency", "1ms", "--for", "30s"]);
    c.control(&["fault", "room-1", "--clear"]);

    // Straight to the room service: every caller but an allowed role is refused.
    let room_addr = address_of(&mut c, "room-1");
    let url = format!("https://{room_addr}/rooms/{room}");
    let ca_s = ca.display().to_string();
    let (code, out) = curl(&[], &format!("http://{room_addr}/rooms/{room}"));
    assert!(
        code != 0 || !out.ends_with(" 200"),
        "cleartext answered: {out}"
    );
    let (code, out) = curl(&["--cacert", &ca_s], &url);
    assert!(code != 0, "no client certificate, yet: {out}");
    let (gw_cert, gw_key) = role("gateway");
    let (code, out) = curl(
        &["--cacert", &ca_s, "--cert", &gw_cert, "--key", &gw_key],
        &url,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with(" 200"), "the gateway's certificate: {out}");
    let (cust_cert, cust_key) = role("customer");
    let (code, out) = curl(
        &["--cacert", &ca_s, "--cert", &cust_cert, "--key", &cust_key],
        &url,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with(" 403"), "customer may not call room: {out}");
    assert!(out.contains("forbidden-role"), "{out}");
    assert!(
        out.contains("customer"),
        "the problem names the role: {out}"
    );

    // A certificate naming the gateway, from another CA: refused at the handshake.
    let other = TempDir::new("mtls-other-ca");
    let rogue = Ca::new("rogue CA").unwrap();
    let (cert, key_pem) = rogue
        .issue_role("gateway", &["localhost", "127.0.0.1"])
        .unwrap();
    let (rc, rk) = (
        other.path().join("gateway.pem"),
        other.path().join("gateway-key.pem"),
    );
    write(&rc, &cert, false).unwrap();
    write(&rk, &key_pem, true).unwrap();
    let (code, out) = curl(
        &[
            "--cacert",
            &ca_s,
            "--cert",
            rc.to_str().unwrap(),
            "--key",
            rk.to_str().unwrap(),
        ],
        &url,
    );
    assert!(code != 0, "another CA's certificate, yet: {out}");

    // The registry takes any certificate of the CA (it has its own token) but none without.
    let (code, out) = curl(&["--cacert", &ca_s], &format!("{registry}/healthz"));
    assert!(code != 0, "registry without a client certificate: {out}");
    let (code, out) = curl(
        &["--cacert", &ca_s, "--cert", &cust_cert, "--key", &cust_key],
        &format!("{registry}/healthz"),
    );
    assert_eq!((code, out.ends_with(" 200")), (0, true), "{out}");
    assert!(c.shutdown(Duration::from_secs(30)));
}
