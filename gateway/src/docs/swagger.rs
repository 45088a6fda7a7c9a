//! The Swagger UI page at `/api/docs` and its files, compiled into the binary (unpacked
//! from `utoipa-swagger-ui-vendored` by `build.rs`), so the page needs no network. The
//! page and its initializer are ours: they point Swagger UI at `/api/openapi.json` and
//! turn off the online spec validator (the one thing Swagger UI would fetch from the
//! internet). The initializer is a file, not an inline script, so the page works under a
//! `script-src 'self'` content security policy.

/// A file below `/api/docs/`.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its bytes.
    pub bytes: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

macro_rules! vendored {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// The HTML of `/api/docs`; every URL it references is absolute and served by [`asset`].
pub const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>hotel API</title>
  <link rel="stylesheet" href="/api/docs/swagger-ui.css">
  <link rel="stylesheet" href="/api/docs/index.css">
  <link rel="icon" type="image/png" href="/api/docs/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/api/docs/swagger-ui-bundle.js"></script>
  <script src="/api/docs/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/swagger-initializer.js"></script>
</body>
</html>
"#;

/// Starts Swagger UI on the gateway's merged document.
const INITIALIZER: &str = r##"window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout"
  });
};
"##;

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The file `name` (relative to `/api/docs/`), if it is one of the page's.
pub fn asset(name: &str) -> Option<Asset> {
    let (bytes, content_type): (&'static [u8], _) = match name {
        "swagger-ui.css" => (vendored!("swagger-ui.css"), CSS),
        "index.css" => (vendored!("index.css"), CSS),
        "swagger-ui-bundle.js" => (vendored!("swagger-ui-bundle.js"), JS),
        "swagger-ui-standalone-preset.js" => (vendored!("swagger-ui-standalone-preset.js"), JS),
        "favicon-32x32.png" => (vendored!("favicon-32x32.png"), "image/png"),
        "swagger-initializer.js" => (INITIALIZER.as_bytes(), JS),
        _ => return None,
    };
    Some(Asset {
        bytes,
        content_type,
    })
}
