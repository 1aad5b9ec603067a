//! `lsq-webhooks results`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `results`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `results`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`results` is not built yet")
}
