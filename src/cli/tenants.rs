//! `lsq-webhooks tenants`: load or update the tenant registry in Redis from a CSV file
//! (`tenant,api_base,access_key,secret_key[,limit][,reserve][,daily_limit]`, columns found by
//! the header). All or nothing: one bad row and no tenant is imported (exit 2, every bad row
//! reported as `line N: column: reason`). An empty `api_base` is discovered with
//! `UserByAccessKey.Get` (`import --discover` now, else by the worker); `pause` and `resume`
//! hold and release tenants (see `Queue::hold`).

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use futures::StreamExt;

use super::{BadInput, Global};
use crate::leadsquared::{CallError, Client, ClientConfig};
use crate::queue::{HoldKind, NewHold, Queue};
use crate::tenant::{self, Tenant, TenantsFileError};

/// Subcommands of `tenants`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Add or update the tenants of a CSV file
    /// (`tenant,api_base,access_key,secret_key[,limit][,reserve][,daily_limit]`, any order).
    Import(ImportArgs),
    /// List registered tenants: name, limit and API host ("discovering" until known),
    /// and a hold with its reason (never the keys).
    List,
    /// Hold tenants: no call is made for them, their jobs stay queued, until `resume`.
    Pause(PauseArgs),
    /// End tenants' holds (paused, keys refused, host unreachable): their jobs run again.
    Resume(ResumeArgs),
}

/// Arguments of `tenants pause`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Tenants to pause.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Why (shown by status, the page and `tenants list`).
    #[arg(long, value_name = "TEXT", default_value = "paused by an operator")]
    pub reason: String,
    /// Who pauses them (shown with the reason); default `$USER@host`.
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,
}

/// Arguments of `tenants resume`.
#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// Tenants to resume.
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
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
    /// Find the host of every tenant without one now, with `UserByAccessKey.Get` (one call
    /// each, spent in the tenant's window); without it the worker discovers them.
    #[arg(long)]
    pub discover: bool,
    /// Where hosts are discovered: a host name (`api-in21.leadsquared.com`) or a URL;
    /// plain http only to loopback.
    #[arg(long, env = "LSQ_DISCOVERY_URL", default_value = crate::leadsquared::client::DEFAULT_DISCOVERY_URL,
          value_parser = crate::tenant::api_base_from_host, value_name = "URL")]
    pub discovery_url: url::Url,
}

/// Runs `tenants`.
pub async fn run(global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Import(args) => import(global, args).await,
        Command::List => list(global).await,
        Command::Pause(args) => pause(global, args).await,
        Command::Resume(args) => resume(global, args).await,
    }
}

/// Every name registered, or bad input naming those that are not.
async fn known(queue: &dyn Queue, names: &[String]) -> anyhow::Result<()> {
    let registered: HashSet<String> = queue.tenant_names().await?.into_iter().collect();
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !registered.contains(*n))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(BadInput(format!(
            "unknown tenant(s): {}; nothing changed",
            unknown.join(", ")
        ))
        .into())
    }
}

async fn pause(global: &Global, args: PauseArgs) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    known(&queue, &args.names).await?;
    let by = super::pause::operator(args.by);
    let mut out = super::output::stdout();
    for name in &args.names {
        let hold = NewHold {
            kind: HoldKind::Paused,
            reason: args.reason.clone(),
            length: None,
            by: by.clone(),
        };
        queue.hold(name, hold).await?;
        writeln!(out, "paused {name}: {}", args.reason)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn resume(global: &Global, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    known(&queue, &args.names).await?;
    let mut out = super::output::stdout();
    for name in &args.names {
        match queue.release(name).await? {
            Some(h) => writeln!(
                out,
                "resumed {name} (was {}: {})",
                h.kind.as_str(),
                h.reason
            )?,
            None => writeln!(out, "{name} was not held")?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `tenants import --discover` found.
#[derive(Debug, Default)]
struct Discovered {
    found: usize,
    refused: usize,
    failed: Vec<String>,
}

/// Finds the host of each tenant without one, a few at a time, each call spent in the
/// tenant's window first.
async fn discover_hosts(
    queue: &dyn Queue,
    client: &Client,
    discovery: &url::Url,
    tenants: Vec<Tenant>,
) -> Discovered {
    let results: Vec<(String, Result<Option<url::Url>, String>)> =
        futures::stream::iter(tenants.into_iter().map(|t| async move {
            let name = t.name.clone();
            (name, discover_one(queue, client, discovery, &t).await)
        }))
        .buffer_unordered(16)
        .collect()
        .await;
    let mut d = Discovered::default();
    for (name, r) in results {
        match r {
            Ok(Some(_)) => d.found += 1,
            Ok(None) => d.refused += 1,
            Err(why) => d.failed.push(format!("{name}: {why}")),
        }
    }
    d.failed.sort();
    d
}

/// One tenant's discovery: `Ok(Some(host))` recorded, `Ok(None)` keys refused (the tenant
/// is held), `Err` why it is left to the worker (never quoting a key).
async fn discover_one(
    queue: &dyn Queue,
    client: &Client,
    discovery: &url::Url,
    tenant: &Tenant,
) -> Result<Option<url::Url>, String> {
    let call = format!("import.{}", uuid::Uuid::new_v4());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match queue.take_call(&tenant.name, &call).await {
            Ok(None) => break,
            Ok(Some(wait)) if tokio::time::Instant::now() + wait <= deadline => {
                tokio::time::sleep(wait).await;
            }
            Ok(Some(_)) => return Err("the tenant may not call now (held, or a pause)".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let found = client.discover(tenant, discovery).await;
    // The call is re-stamped at its answer, as every call is.
    let _ = queue
        .answered(&crate::sync::call_stamp(&tenant.name, &call))
        .await;
    match found {
        Ok(base) => {
            let access = tenant.access_key.expose();
            match queue
                .set_tenant_host(&tenant.name, Some(&base), access)
                .await
            {
                Ok(true) => Ok(Some(base)),
                Ok(false) => Err("its keys changed meanwhile".into()),
                Err(e) => Err(e.to_string()),
            }
        }
        Err(CallError::Refused { .. }) => {
            let hold = NewHold {
                kind: HoldKind::KeysRefused,
                reason: crate::worker::KEYS_REFUSED.into(),
                length: None,
                by: None,
            };
            queue
                .hold(&tenant.name, hold)
                .await
                .map_err(|e| e.to_string())?;
            Ok(None)
        }
        Err(e) => Err(e.to_string()),
    }
}

async fn import(global: &Global, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let tenants = match tenant::read_file_with(&args.file, args.reserve) {
        Ok(t) => t,
        Err(TenantsFileError::Invalid { path, errors }) => {
            for e in &errors {
                super::stderr::line(super::stderr::Level::Warn, &e.to_string());
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
    let mut out = super::output::stdout();
    writeln!(
        out,
        "imported {} tenant(s): {new} new, {} updated",
        tenants.len(),
        tenants.len() - new
    )?;
    // Hosts known already (given, or discovered before for the same keys) are kept.
    let mut hostless = Vec::new();
    for t in &tenants {
        if let Some(stored) = queue.tenant(&t.name).await?
            && stored.api_base.is_none()
        {
            hostless.push(stored);
        }
    }
    if hostless.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.discover {
        writeln!(
            out,
            "{} tenant(s) without a host: the worker discovers them (or import with --discover)",
            hostless.len()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = Client::new(ClientConfig::default())?;
    let d = discover_hosts(&queue, &client, &args.discovery_url, hostless).await;
    writeln!(
        out,
        "discovered {} host(s); {} tenant(s) held: keys refused by LeadSquared (401); {} left to the worker",
        d.found,
        d.refused,
        d.failed.len()
    )?;
    for f in &d.failed {
        eprintln!("discovery: {f}");
    }
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
            Err(e) => super::stderr::line(super::stderr::Level::Warn, &format!("{name}: {e}")),
        }
    }
    Ok(ExitCode::SUCCESS)
}
