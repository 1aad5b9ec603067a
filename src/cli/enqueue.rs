//! `lsq-webhooks enqueue`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `enqueue`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `enqueue`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`enqueue` is not built yet")
}
