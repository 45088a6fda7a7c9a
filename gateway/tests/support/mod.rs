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
