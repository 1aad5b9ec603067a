//! `lsq-webhooks demo`: the whole thing against the simulator, with live progress and a
//! summary (the logic is in [`crate::demo`]).
//!
//! Uses Redis only when `--redis` or `REDIS_URL` names one, under a fresh queue name, and
//! the embedded queue otherwise. Exit 0 when every check of the summary passes, 1 when one
//! fails or the run was interrupted (Ctrl-C stops it cleanly: no new calls, running calls
//! finish, then the summary of what was done).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Global;
use super::worker::cancel_on_signal;
use crate::demo::{Backend, DemoConfig, View};

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long each tenant has work at its limit, in seconds: a tenant with limit L gets
    /// L × SECONDS / 5 jobs (40 s is about 1,200 jobs).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Seed of the simulator's faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Inject no faults (no 500s, resets or latency).
    #[arg(long)]
    pub no_faults: bool,
    /// With Redis: keep the demo's queue afterwards (see it with `status --queue NAME`)
    /// instead of deleting it.
    #[arg(long)]
    pub keep_queue: bool,
}

/// Runs `demo`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let mut config = DemoConfig::standard(Duration::from_secs(args.seconds), args.seed);
    if args.no_faults {
        config.faults = crate::sim::Faults::default();
    }
    let backend = match global.redis_given() {
        Some(url) => Backend::redis(url, args.keep_queue, global.shards),
        None => Backend::Embedded,
    };
    let mut out = super::output::stdout();
    writeln!(out, "{}", backend.describe())?;
    let shutdown = CancellationToken::new();
    let signals = cancel_on_signal(shutdown.clone())?;
    let report = crate::demo::run(&config, &backend, View::for_stderr(), shutdown.clone()).await;
    let interrupted = shutdown.is_cancelled();
    shutdown.cancel();
    // The signal watcher ends as soon as the token is cancelled.
    let _ = signals.await;
    let report = report?;
    write!(out, "\n{report}")?;
    if !interrupted && !report.at_limit() {
        writeln!(
            out,
            "note: a tenant stayed under 95% of its limit; on a busy machine the pool can fall \
             behind the window"
        )?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
