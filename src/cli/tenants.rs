//! `lsq-webhooks tenants`.

use std::process::ExitCode;

use super::Global;

/// Subcommands of `tenants`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Runs `tenants`.
pub async fn run(_global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    match command {}
}
