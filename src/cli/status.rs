//! `lsq-webhooks status`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `status`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`status` is not built yet")
}
