//! (being written)

use hotel_common::process::{BoxError, ProcessArgs};

/// Runs this role until a shutdown signal.
pub async fn run(_args: ProcessArgs) -> Result<(), BoxError> {
    Err("not built yet".into())
}
