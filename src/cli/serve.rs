//! `lsq-webhooks serve`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `serve`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`serve` is not built yet")
}
