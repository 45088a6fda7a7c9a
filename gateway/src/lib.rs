//! (being written)

use hotel_common::process::{BoxError, ProcessArgs};

/// Command-line options of `hotel gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub process: ProcessArgs,
}

/// Runs the gateway until a shutdown signal.
pub async fn run(_args: GatewayArgs) -> Result<(), BoxError> {
    Err("not built yet".into())
}
