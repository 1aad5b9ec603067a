//! `lsq-webhooks status [--json] [--watch]`: what is queued, scheduled, running, done and
//! dead, throughput over the last minute, and per tenant: waiting jobs, calls in the window
//! against the limit, and pauses with when and why.
//!
//! `--json` prints the stable JSON documented in the README (the same as `GET /v1/status`).
//! `--watch` reads again every second until Ctrl-C (or SIGTERM): on a terminal the table is
//! redrawn in place; otherwise each reading is printed after the last (a JSON object per
//! line with `--json`), so the output can be piped and logged.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Global;
use crate::ops::StatusReport;
use crate::queue::Queue;

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (the layout documented in the README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read again every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Most tenants listed in the table (`--json` lists all).
    #[arg(long, default_value_t = 20)]
    pub tenants: usize,
}

/// How often `--watch` reads.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Runs `status`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue: std::sync::Arc<dyn crate::queue::Queue> =
        std::sync::Arc::new(super::connect_queue(global).await?);
    if !args.watch {
        let report = StatusReport::read(queue.as_ref())
            .await
            .context("cannot read the queue's status")?;
        write!(super::output::stdout(), "{}", render(&report, &args)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let stop = CancellationToken::new();
    let signals = super::worker::cancel_on_signal(stop.clone())?;
    watch(queue.as_ref(), &args, &stop).await?;
    stop.cancel();
    // The watcher ends as soon as the token is cancelled.
    let _ = signals.await;
    Ok(ExitCode::SUCCESS)
}

fn render(report: &StatusReport, args: &Args) -> anyhow::Result<String> {
    if args.json {
        Ok(serde_json::to_string(report)? + "\n")
    } else {
        Ok(report.table(args.tenants))
    }
}

/// Reads and prints every [`WATCH_EVERY`] until `stop`. A failed read is shown and the
/// watch goes on: a Redis restart should not end an operator's view.
async fn watch(queue: &dyn Queue, args: &Args, stop: &CancellationToken) -> anyhow::Result<()> {
    let in_place = !args.json && std::io::stdout().is_terminal();
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = super::output::stdout();
    if in_place {
        // Clear once; each frame then overwrites the last from the top (no flicker).
        write!(out, "\x1b[2J")?;
    }
    let mut first = true;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let frame = match StatusReport::read(queue).await {
            Ok(report) => render(&report, args)?,
            Err(e) if args.json => {
                tracing::warn!("cannot read the queue's status: {e}");
                continue;
            }
            Err(e) => format!("cannot read the queue's status: {e}\n"),
        };
        if in_place {
            write!(out, "\x1b[H")?;
            for line in frame.lines() {
                // Clear what a longer line of the last frame left to the right.
                writeln!(out, "{line}\x1b[K")?;
            }
            write!(
                out,
                "\n(every {}s; Ctrl-C to stop)\x1b[K\n\x1b[J",
                WATCH_EVERY.as_secs()
            )?;
        } else {
            if !first && !args.json {
                writeln!(out)?;
            }
            write!(out, "{frame}")?;
        }
        out.flush()?;
        first = false;
    }
}
