//! `lsq-webhooks sync FILE [--prune] [--dry-run]`: the file (a job file, `-` for stdin) is
//! the desired state of the tenants it names. Every line is checked first, as `enqueue`
//! checks them: any problem is reported as `line N: field: reason` and nothing is planned
//! (exit 2). Then the plan is printed, one line per tenant and the totals (see
//! [`crate::sync`]); with `--dry-run` nothing changes, otherwise its jobs are enqueued.

use std::collections::HashSet;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::output::stdout;
use super::{BadInput, Global};
use crate::leadsquared::{Client, ClientConfig};
use crate::producer::Producer;
use crate::queue::Queue;

/// Arguments of `sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON Lines job file: the desired state of the tenants it names; `-` reads stdin.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Also delete this product's webhooks of those tenants that the file does not name
    /// (never one it has no record of).
    #[arg(long)]
    pub prune: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Timeout of one Retrieve call, in seconds.
    #[arg(long, env = "LSQ_CALL_TIMEOUT_SECS", default_value_t = 30)]
    pub call_timeout_secs: u64,
    /// How large a job's Create body and its parts may be.
    #[command(flatten)]
    pub webhook_limits: super::WebhookLimitArgs,
}

/// Reads and checks the whole file (off the async runtime).
async fn read(
    file: &str,
    registered: HashSet<String>,
    limits: crate::leadsquared::BodyLimits,
) -> anyhow::Result<crate::producer::JobFile> {
    let file = file.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<crate::producer::JobFile> {
        let reader: Box<dyn std::io::BufRead + Send> = if file == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            let f = std::fs::File::open(&file).map_err(|e| BadInput(format!("{file}: {e}")))?;
            Box::new(std::io::BufReader::new(f))
        };
        crate::producer::read_jobs(reader, &registered, &limits)
            .map_err(|e| BadInput(format!("{file}: {e}")).into())
    })
    .await
    .context("reading the job file")?
}

/// Runs `sync`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue = Arc::new(super::connect_queue(global).await?);
    let registered: HashSet<String> = queue.tenant_names().await?.into_iter().collect();
    let checked = read(&args.file, registered, args.webhook_limits.limits()).await?;
    for e in &checked.errors {
        super::stderr::line(super::stderr::Level::Warn, &e.to_string());
    }
    if checked.invalid_lines > 0 {
        return Err(BadInput(format!(
            "{}: {} invalid line(s); nothing planned",
            args.file, checked.invalid_lines
        ))
        .into());
    }
    let client = Client::new(ClientConfig {
        timeout: std::time::Duration::from_secs(args.call_timeout_secs.max(1)),
        ..ClientConfig::default()
    })?;
    let plan = crate::sync::plan(queue.as_ref(), &client, checked.jobs, args.prune).await?;
    let mut out = stdout();
    for line in plan.lines() {
        writeln!(out, "{line}")?;
    }
    if args.dry_run {
        writeln!(out, "dry run: nothing enqueued")?;
        return Ok(ExitCode::SUCCESS);
    }
    let producer =
        Producer::new(queue.clone() as Arc<dyn Queue>).with_limits(args.webhook_limits.limits());
    let (summary, _) = producer.push_validated(plan.jobs, &mut |_| {}).await?;
    writeln!(
        out,
        "enqueued {}, duplicate {}",
        summary.enqueued, summary.duplicate
    )?;
    Ok(ExitCode::SUCCESS)
}
