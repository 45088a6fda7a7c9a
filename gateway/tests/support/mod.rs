//! Helpers shared by the in-process gateway test files.

#![allow(clippy::unwrap_used, dead_code)] // Tests; each file uses its part.

use std::time::Duration;

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
