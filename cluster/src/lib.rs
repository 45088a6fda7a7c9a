//! (being written)

use hotel_common::process::BoxError;

/// Commands that launch or control a local cluster.
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// Start a whole local cluster in the foreground.
    Up,
}

/// Runs a cluster command; the exit code is the command's verdict.
pub async fn run(_cmd: ClusterCommand) -> Result<std::process::ExitCode, BoxError> {
    Err("not built yet".into())
}
