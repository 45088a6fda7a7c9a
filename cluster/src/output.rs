//! What the cluster commands print for people: aligned tables and the `hotel up` banner.
//! Everything goes to stdout in one locked write, so lines from other tasks never
//! interleave inside a table.

use crate::{clusterfile::ClusterFile, supervisor::InstanceView};
use std::{io::Write, path::Path};

/// The load example the `hotel up` banner prints and the README shows (a test keeps
/// them the same): copy-pasteable against a cluster in the default data directory.
pub const LOAD_EXAMPLE: &str = "hotel load --duration 25s --rate 50";

/// What answers at the Jaeger UI address, as far as `hotel up` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JaegerKind {
    /// The real web UI (a release binary or the official image).
    Ui,
    /// A Jaeger built from the Go module: query API, and a placeholder page for the UI.
    GoBuild,
    /// Nothing answered (yet).
    NotAnswering,
}

impl JaegerKind {
    /// Reads the UI root page: the build without UI assets serves a known placeholder.
    pub fn from_page(status_ok: bool, body: &str) -> JaegerKind {
        if !status_ok {
            JaegerKind::NotAnswering
        } else if body.contains("This is not the Jaeger UI")
            || body.contains("placeholder for the Jaeger UI")
        {
            JaegerKind::GoBuild
        } else {
            JaegerKind::Ui
        }
    }

    /// Asks the UI root of `url` (one short request).
    pub async fn probe(url: &str) -> JaegerKind {
        let Ok(http) = hotel_common::tls::internal::reqwest_client()
            .timeout(std::time::Duration::from_secs(1))
            .no_proxy()
            .build()
        else {
            return JaegerKind::NotAnswering;
        };
        match http
            .get(format!("{}/", url.trim_end_matches('/')))
            .send()
            .await
        {
            Ok(res) => {
                let ok = res.status().is_success();
                JaegerKind::from_page(ok, &res.text().await.unwrap_or_default())
            }
            Err(_) => JaegerKind::NotAnswering,
        }
    }

    /// The banner's `traces` line for a Jaeger at `url`.
    pub fn banner_line(self, url: &str) -> String {
        match self {
            JaegerKind::Ui => format!("traces    {url}   (Jaeger UI)\n"),
            JaegerKind::GoBuild => format!(
                "traces    {url}   (Jaeger built from source: query API only, no web UI;\n          \
                 `curl {url}/api/v3/traces/<trace_id>`, or get the UI: scripts/jaeger.sh install with internet, or the jaegertracing/jaeger image)\n"
            ),
            JaegerKind::NotAnswering => format!(
                "traces    {url}   (Jaeger UI, expected beside the OTLP endpoint: nothing answers there yet)\n"
            ),
        }
    }
}

/// Prints one line.
pub fn line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Formats rows as columns separated by two spaces, each as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = fmt_row(header.to_vec());
    for row in rows {
        out.push_str(&fmt_row(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Prints what a control command did, one instance per line.
pub fn print_changes(verb: &str, views: &[InstanceView]) {
    let mut text = String::new();
    for v in views {
        text.push_str(&format!(
            "{verb} {} (pid {}, {}{})\n",
            v.name,
            v.pid,
            v.state.as_str(),
            v.address
                .as_deref()
                .map(|a| format!(", {a}"))
                .unwrap_or_default()
        ));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The `hotel up` banner: the instance table, URLs, secrets and a first request.
pub fn print_banner(
    file: &ClusterFile,
    instances: &[InstanceView],
    data_dir: &Path,
    jaeger: Option<JaegerKind>,
) {
    let text = banner(file, instances, data_dir, jaeger);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The text of the `hotel up` banner.
fn banner(
    file: &ClusterFile,
    instances: &[InstanceView],
    data_dir: &Path,
    jaeger: Option<JaegerKind>,
) -> String {
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                v.pid.to_string(),
                v.address.clone().unwrap_or_else(|| "-".into()),
                v.state.as_str().to_owned(),
            ]
        })
        .collect();
    let gateway = file.gateway_url.clone().unwrap_or_default();
    let mut text = format!("\nhotel cluster is up ({} instances)\n\n", instances.len());
    text.push_str(&table(&["NAME", "PID", "ADDRESS", "STATE"], &rows));
    text.push('\n');
    text.push_str(&format!("gateway   {gateway}\n"));
    text.push_str(&format!(
        "admin     {}   (Authorization: Bearer {})\n",
        file.admin_url.as_deref().unwrap_or("-"),
        file.admin_token
    ));
    text.push_str(&format!(
        "registry  {}\n",
        file.registry_url.as_deref().unwrap_or("-")
    ));
    text.push_str(&format!("api key   {}\n", file.api_key));
    if let Some(url) = &file.dashboard_url {
        text.push_str(&format!("dashboard {url}\n"));
    }
    text.push_str(&format!("logs      {}\n", data_dir.join("logs").display()));
    text.push_str(&format!(
        "state     {}\n",
        ClusterFile::path(data_dir).display()
    ));
    if let Some(j) = &file.jaeger_url {
        text.push_str(&jaeger.unwrap_or(JaegerKind::NotAnswering).banner_line(j));
    }
    let cacert = match &file.ca_cert {
        Some(ca) => {
            text.push_str(&format!(
                "tls       {ca}   (the local CA that signed the gateway's certificate)\n"
            ));
            format!(" --cacert {ca}")
        }
        None => String::new(),
    };
    if let Some(id) = &file.internal_tls {
        text.push_str(&format!(
            "mtls      between every component; the services answer only certificates of \
             their CA naming an allowed role ({}; operators: {})\n",
            id.ca.display(),
            id.cert.display()
        ));
    }
    text.push_str(&format!(
        "\ntry:\n  curl -s{cacert} -H \"Authorization: Bearer {key}\" {gateway}/api/rooms\n  curl -s{cacert} -H \"Authorization: Bearer {key}\" -H 'content-type: application/json' \\\n       -d '{{\"number\":\"101\",\"kind\":\"double\",\"capacity\":2,\"nightly_rate_cents\":12000}}' {gateway}/api/rooms\n",
        key = file.api_key
    ));
    if let Some(ca) = &file.ca_cert {
        text.push_str(&format!(
            "\ntrust the local CA (once; remove it the same way when done):\n  Debian/Ubuntu: sudo cp {ca} /usr/local/share/ca-certificates/hotel-local-ca.crt && sudo update-ca-certificates\n  Fedora/RHEL:   sudo cp {ca} /etc/pki/ca-trust/source/anchors/hotel-local-ca.pem && sudo update-ca-trust\n  macOS:         sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}\n  one program:   curl --cacert {ca}, SSL_CERT_FILE={ca}, NODE_EXTRA_CA_CERTS={ca}\n"
        ));
    }
    // The control commands default to ./.hotel; name the directory only when it differs.
    let default_dir = std::fs::canonicalize(".hotel").ok();
    let dir_flag = if default_dir.as_deref() == Some(data_dir) {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    };
    text.push_str(&format!(
        "\nfrom another terminal:\n  hotel status{dir_flag}\n  {LOAD_EXAMPLE}{dir_flag}\n  hotel kill room-1{dir_flag}    (also: stop, pause, resume, start room, scale room=3)\n\nCtrl-C stops everything.\n"
    ));
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_shows_the_load_example_the_banner_prints() {
        let dir = std::env::temp_dir();
        let text = banner(&ClusterFile::default(), &[], &dir, None);
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("hotel load"))
            .unwrap();
        // The banner names the data directory when it is not the default one.
        let example = line.trim().split(" --data-dir").next().unwrap();
        assert_eq!(example, LOAD_EXAMPLE);
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&format!("  {LOAD_EXAMPLE}\n")),
            "the README's banner lacks {LOAD_EXAMPLE:?}"
        );
        assert!(
            readme.contains(&format!("$ {LOAD_EXAMPLE}\n")),
            "the README's load example is not {LOAD_EXAMPLE:?}"
        );
        for l in readme
            .lines()
            .filter(|l| l.trim_start().starts_with("$ hotel load"))
        {
            assert_eq!(l.trim_start(), format!("$ {LOAD_EXAMPLE}"), "README: {l}");
        }
    }

    #[test]
    fn the_banner_prints_the_dashboard_url_with_its_token() {
        let file = ClusterFile {
            dashboard_url: Some("http://127.0.0.1:5/dashboard/login?token=dsh_x".into()),
            ..ClusterFile::default()
        };
        let text = banner(&file, &[], &std::env::temp_dir(), None);
        assert!(
            text.contains("dashboard http://127.0.0.1:5/dashboard/login?token=dsh_x\n"),
            "{text}"
        );
        let text = banner(&ClusterFile::default(), &[], &std::env::temp_dir(), None);
        assert!(!text.contains("dashboard"), "{text}");
    }

    #[test]
    fn the_jaeger_line_says_whether_the_web_ui_is_there() {
        let placeholder = "<h1>This is not the Jaeger UI you are looking for!</h1>";
        assert_eq!(
            JaegerKind::from_page(true, placeholder),
            JaegerKind::GoBuild
        );
        assert_eq!(
            JaegerKind::from_page(true, "<title>Jaeger UI</title>"),
            JaegerKind::Ui
        );
        assert_eq!(JaegerKind::from_page(false, ""), JaegerKind::NotAnswering);
        let line = JaegerKind::GoBuild.banner_line("http://127.0.0.1:16686");
        assert!(
            line.contains("no web UI") && line.contains("jaegertracing/jaeger"),
            "{line}"
        );
        assert!(
            JaegerKind::Ui
                .banner_line("http://x")
                .contains("(Jaeger UI)")
        );
    }

    #[test]
    fn table_columns_are_as_wide_as_their_widest_cell() {
        let t = table(
            &["NAME", "PID"],
            &[
                vec!["customer-1".into(), "7".into()],
                vec!["room-2".into(), "12345".into()],
            ],
        );
        assert_eq!(t, "NAME        PID\ncustomer-1  7\nroom-2      12345\n");
    }
}
