//! `hotel reload`: asks the cluster's gateway to read its configuration file again
//! (`POST /admin/reload` on its admin listener) and prints what it answered: the new
//! version and what changed, or why the file was refused (the running configuration
//! stays, and the command exits 1).

use crate::clusterfile::ClusterFile;
use hotel_common::process::BoxError;
use std::{path::Path, process::ExitCode, time::Duration};

/// Runs `hotel reload` against the cluster in `data_dir`.
pub async fn run(data_dir: &Path, json: bool) -> Result<ExitCode, BoxError> {
    let file = ClusterFile::read(data_dir)?;
    let admin = file
        .admin_url
        .as_deref()
        .ok_or("the cluster has no gateway admin URL yet (is the gateway running?)")?;
    let http = hotel_common::tls::internal::reqwest_client()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()?;
    let res = http
        .post(format!("{admin}/admin/reload"))
        .bearer_auth(&file.admin_token)
        .send()
        .await
        .map_err(|e| format!("the gateway admin API at {admin} did not answer: {e}"))?;
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    if json {
        crate::output::line(&body.to_string());
    }
    if status.is_success() {
        if !json {
            crate::output::line(&accepted(&body));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let why = body["detail"].as_str().unwrap_or("no reason given");
    eprintln!("hotel reload: refused ({status}): {why}; the running configuration stays");
    Ok(ExitCode::FAILURE)
}

/// `reloaded: version 3 (changed: routes, auth)` and the keys that need a restart.
fn accepted(body: &serde_json::Value) -> String {
    let list = |k: &str| -> Vec<String> {
        body[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let changed = list("changed");
    let mut out = format!(
        "reloaded: configuration version {} ({})",
        body["version"],
        if changed.is_empty() {
            "no change".to_owned()
        } else {
            format!("changed: {}", changed.join(", "))
        }
    );
    let restart = list("restart_required");
    if !restart.is_empty() {
        out.push_str(&format!(
            "\nnot applied, need a restart (running values kept): {}",
            restart.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_version_the_changes_and_what_needs_a_restart() {
        let body = serde_json::json!({"version": 3, "changed": ["routes", "auth"],
            "restart_required": ["listen"]});
        let text = accepted(&body);
        assert!(text.starts_with("reloaded: configuration version 3 (changed: routes, auth)"));
        assert!(text.contains("need a restart (running values kept): listen"));
    }
}
