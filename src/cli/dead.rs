//! `lsq-webhooks dead`.

use std::process::ExitCode;

use super::Global;

/// Subcommands of `dead`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Runs `dead`.
pub async fn run(_global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    match command {}
}
