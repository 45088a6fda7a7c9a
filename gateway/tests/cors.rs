//! In-process tests of CORS at the edge (`[cors]`): off by default, preflights answered
//! by the gateway without an API key when on, and CORS headers on the answers that
//! follow, the edge's refusals included.

#![allow(clippy::unwrap_used)]

mod support;

use hotel_gateway::{Config, Settings};
use support::{Gw, client, key, loopback};

const KEY: &str = "web-key-0123456789abcdef";
const APP: &str = "https://app.example.com";

async fn gateway(origins: &[&str]) -> Gw {
    let mut s = loopback();
    s.auth.keys = vec![key("web", KEY, false)];
    s.cors.allowed_origins = origins.iter().map(|o| (*o).to_owned()).collect();
    Gw::launch(s).await
}

fn preflight(gw: &Gw, origin: &str) -> reqwest::RequestBuilder {
    client()
        .request(reqwest::Method::OPTIONS, gw.url("/api/rooms"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, x-api-key")
}

#[tokio::test]
async fn preflights_from_an_allowed_origin_are_answered_without_an_api_key() {
    let gw = gateway(&[APP]).await;
    let res = preflight(&gw, APP).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], APP);
    let methods = h["access-control-allow-methods"].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    let headers = h["access-control-allow-headers"].to_str().unwrap();
    assert!(headers.contains("x-api-key"), "{headers}");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(
        h.contains_key("x-request-id"),
        "the context layer still runs"
    );
    // Another origin gets no allowance (the browser then blocks the call).
    let other = preflight(&gw, "https://evil.example").send().await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn answers_and_edge_refusals_carry_cors_headers_a_page_can_read() {
    let gw = gateway(&[APP]).await;
    let c = client();
    let refused = c
        .get(gw.url("/api/rooms"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the real request still needs a key");
    assert_eq!(refused.headers()["access-control-allow-origin"], APP);
    let exposed = refused.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"));
    let docs = c
        .get(gw.url("/api/openapi.json"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert_eq!(docs.headers()["access-control-allow-origin"], APP);
}

#[tokio::test]
async fn without_allowed_origins_there_is_no_cors_and_options_is_routed() {
    let gw = gateway(&[]).await;
    let res = preflight(&gw, APP).send().await.unwrap();
    assert_eq!(res.status(), 401, "OPTIONS goes through the protections");
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    let any = gateway(&["*"]).await;
    let res = preflight(&any, "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[test]
fn origins_that_are_not_origins_are_refused_naming_the_key() {
    for (bad, why) in [
        (vec!["https://app.example.com/"], "allowed_origins[0]"),
        (vec!["app.example.com"], "allowed_origins[0]"),
        (vec![APP, "https://x.example/path"], "allowed_origins[1]"),
        (vec!["*", APP], "must be the only entry"),
    ] {
        let mut s = Settings::default();
        s.cors.allowed_origins = bad.iter().map(|o| (*o).to_owned()).collect();
        let e = Config::try_from(s).unwrap_err().to_string();
        assert!(e.contains("cors.") && e.contains(why), "{e}");
    }
}
