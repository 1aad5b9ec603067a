//! `lsq-webhooks demo`.

use std::process::ExitCode;

use super::Global;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `demo`.
pub async fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`demo` is not built yet")
}
