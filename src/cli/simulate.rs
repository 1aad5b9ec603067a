//! `lsq-webhooks simulate`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `simulate`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`simulate` is not built yet")
}
