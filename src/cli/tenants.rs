//! `lsq-webhooks tenants`: load or update the tenant registry in Redis from a CSV file
//! (`tenant,api_base,access_key,secret_key[,limit][,reserve][,daily_limit]`, columns found by
//! the header). All or nothing: one bad row and no tenant is imported (exit 2, every bad row
//! reported as `line N: column: reason`).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{BadInput, Global};
use crate::queue::Queue;
use crate::tenant::{self, TenantsFileError};

/// Subcommands of `tenants`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add or update the tenants of a CSV file
    /// (`tenant,api_base,access_key,secret_key[,limit][,reserve][,daily_limit]`, any order).
    Import(ImportArgs),
    /// List registered tenants: name, limit and API host (never the keys).
    List,
}

/// Arguments of `tenants import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The tenants CSV file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Calls per 5 s left unused for each tenant's other integrations, for rows that leave
    /// the `reserve` column empty (or files without it); must be below each such row's limit.
    #[arg(long, env = "LSQ_RESERVE", default_value_t = 0, value_name = "CALLS")]
    pub reserve: u32,
}

/// Runs `tenants`.
pub async fn run(global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Import(args) => import(global, args).await,
        Command::List => list(global).await,
    }
}

async fn import(global: &Global, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let tenants = match tenant::read_file_with(&args.file, args.reserve) {
        Ok(t) => t,
        Err(TenantsFileError::Invalid { path, errors }) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return Err(BadInput(format!(
                "{path}: {} invalid row(s); nothing imported",
                errors.len()
            ))
            .into());
        }
        Err(e @ TenantsFileError::Io { .. }) => return Err(BadInput(e.to_string()).into()),
    };
    let queue = super::connect_queue(global).await?;
    let existing: HashSet<String> = queue.tenant_names().await?.into_iter().collect();
    let new = tenants
        .iter()
        .filter(|t| !existing.contains(&t.name))
        .count();
    queue.put_tenants(&tenants).await?;
    writeln!(
        super::output::stdout(),
        "imported {} tenant(s): {new} new, {} updated",
        tenants.len(),
        tenants.len() - new
    )?;
    Ok(ExitCode::SUCCESS)
}

async fn list(global: &Global) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    let mut out = super::output::stdout();
    for name in queue.tenant_names().await? {
        match queue.tenant(&name).await {
            Ok(Some(t)) => {
                let host = t
                    .api_base
                    .as_ref()
                    .map_or_else(|| "discovering".to_string(), ToString::to_string);
                let held = match queue.tenant_hold(&name).await {
                    Ok(Some(h)) => format!("\theld ({}): {}", h.kind.as_str(), h.reason),
                    _ => String::new(),
                };
                writeln!(out, "{}\t{}\t{host}{held}", t.name, t.limit)?
            }
            Ok(None) => {}
            // One damaged record is reported and the listing goes on.
            Err(e) => eprintln!("{name}: {e}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
