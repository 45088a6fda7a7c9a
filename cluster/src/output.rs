//! What the cluster commands print for people: aligned tables and the `hotel up` banner.
//! Everything goes to stdout in one locked write, so lines from other tasks never
//! interleave inside a table.

use crate::{clusterfile::ClusterFile, supervisor::InstanceView};
use std::{io::Write, path::Path};

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
pub fn print_banner(file: &ClusterFile, instances: &[InstanceView], data_dir: &Path) {
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
    text.push_str(&format!("logs      {}\n", data_dir.join("logs").display()));
    text.push_str(&format!(
        "state     {}\n",
        ClusterFile::path(data_dir).display()
    ));
    if let Some(j) = &file.jaeger_url {
        text.push_str(&format!("traces    {j}   (Jaeger UI)\n"));
    }
    text.push_str(&format!(
        "\ntry:\n  curl -s -H \"Authorization: Bearer {key}\" {gateway}/api/rooms\n  curl -s -H \"Authorization: Bearer {key}\" -H 'content-type: application/json' \\\n       -d '{{\"number\":\"101\",\"kind\":\"double\",\"capacity\":2,\"nightly_rate_cents\":12000}}' {gateway}/api/rooms\n",
        key = file.api_key
    ));
    // The control commands default to ./.hotel; name the directory only when it differs.
    let default_dir = std::fs::canonicalize(".hotel").ok();
    let dir_flag = if default_dir.as_deref() == Some(data_dir) {
        String::new()
    } else {
        format!(" --data-dir {}", data_dir.display())
    };
    text.push_str(&format!(
        "\nfrom another terminal:\n  hotel status{dir_flag}\n  hotel load{dir_flag} --duration 30s\n  hotel kill room-1{dir_flag}    (also: stop, pause, resume, start room, scale room=3)\n\nCtrl-C stops everything.\n"
    ));
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
