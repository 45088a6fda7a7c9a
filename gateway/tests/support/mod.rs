//! Helpers shared by the in-process gateway test files.

#![allow(clippy::unwrap_used, dead_code)] // Tests; each file uses its part.

use std::time::Duration;

/// Serves `app` on a loopback ephemeral port for the rest of the test; its `http://ADDR`.
pub async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

/// An HTTP client for talking to a test gateway; the timeout turns a hang into a failure.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The response body as JSON (the test fails if it is not).
pub async fn json(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

/// Sends `request` on a fresh loopback connection to `addr`, then shuts down the write side
/// (as `nc -q`, or any client calling `shutdown(SHUT_WR)` once its request is out), and
/// reads until the server closes (or 10 s). What the server answered, as text.
pub async fn half_closed(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A gateway running in-process for one test, on loopback ephemeral ports; it stops when
/// this is dropped.
pub struct Gw {
    /// The public listener.
    pub addr: std::net::SocketAddr,
    /// The admin listener.
    pub admin: std::net::SocketAddr,
    /// Its live API keys as built at startup (a configuration reload replaces them).
    pub keys: std::sync::Arc<hotel_gateway::auth::ApiKeys>,
    /// Its running configuration (what `/admin/reload` and SIGHUP replace).
    pub live: std::sync::Arc<hotel_gateway::reload::Live>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Gw {
    /// Runs `app` in the background until the returned value is dropped.
    pub fn start(app: hotel_gateway::Application) -> Gw {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, admin) = (app.local_addr(), app.admin_addr());
        let keys = app.api_keys();
        let live = app.live().clone();
        tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Gw {
            addr,
            admin,
            keys,
            live,
            _stop: tx,
        }
    }

    /// Validates `s`, builds the gateway and runs it.
    pub async fn launch(s: hotel_gateway::Settings) -> Gw {
        let cfg = hotel_gateway::Config::try_from(s).unwrap();
        Gw::start(hotel_gateway::Application::build(cfg).await.unwrap())
    }

    /// Writes `s` as TOML to `file`, runs the gateway it describes, and has reloads read
    /// that file again (as `hotel gateway --config FILE` does).
    pub async fn launch_from_file(s: &hotel_gateway::Settings, file: &std::path::Path) -> Gw {
        write_settings(s, file);
        let loaded: hotel_gateway::Settings =
            hotel_common::config::load(&hotel_gateway::Settings::default(), Some(file), "gateway")
                .unwrap();
        let gw = Gw::launch(loaded.clone()).await;
        let file = file.to_owned();
        gw.live.set_loader(
            &loaded,
            Box::new(move || {
                hotel_common::config::load(
                    &hotel_gateway::Settings::default(),
                    Some(&file),
                    "gateway",
                )
                .map_err(Into::into)
            }),
        );
        gw
    }

    /// `POST /admin/reload`: the status and the JSON answer.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let r = client()
            .post(self.admin_url("/admin/reload"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), json(r).await)
    }

    /// `http://ADDR{path}` on the public listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://ADDR{path}` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /admin/status`.
    pub async fn status(&self) -> serde_json::Value {
        json(
            client()
                .get(self.admin_url("/admin/status"))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// The instances of `service` as `/admin/status` shows them.
    pub async fn instance_views(&self, service: &str) -> Vec<serde_json::Value> {
        let status = self.status().await;
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == service)
            .unwrap()["instances"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// `GET /metrics` (Prometheus text).
    pub async fn metrics(&self) -> String {
        metrics_at(self.admin).await
    }
}

/// `/metrics` of the admin listener at `admin` (without a token).
pub async fn metrics_at(admin: std::net::SocketAddr) -> String {
    let r = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    r.text().await.unwrap()
}

/// Writes `s` to `file` as TOML, the way an operator edits `gateway.toml` (through a
/// rename, so a reload never reads half a file).
pub fn write_settings(s: &hotel_gateway::Settings, file: &std::path::Path) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, toml::to_string(s).unwrap()).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The default settings with both listeners on loopback ephemeral ports.
pub fn loopback() -> hotel_gateway::Settings {
    hotel_gateway::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    }
}

/// Gives `service` the static instances `urls` and the policy overrides `policy`.
pub fn instances(
    s: &mut hotel_gateway::Settings,
    service: &str,
    urls: Vec<String>,
    policy: hotel_upstream::PolicySettings,
) {
    s.services.insert(
        service.into(),
        hotel_gateway::settings::ServiceSettings {
            instances: urls,
            policy,
        },
    );
}

/// The configured entry of API key `key` for `client`.
pub fn key(client: &str, key: &str, revoked: bool) -> hotel_gateway::auth::KeySettings {
    hotel_gateway::auth::KeySettings {
        client: client.into(),
        sha256: hotel_gateway::auth::hash_key(key),
        revoked,
    }
}
