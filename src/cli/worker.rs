//! `lsq-webhooks worker`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `worker`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `worker`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`worker` is not built yet")
}
