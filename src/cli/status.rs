//! `lsq-webhooks status [--json] [--watch]`: what is queued, scheduled, running, done and
//! dead, throughput over the last minute, and per tenant: waiting jobs, calls in the window
//! against the limit, and pauses with when and why.
//!
//! `--tenants` shows every tenant instead, a page at a time (see `Queue::tenants_page`):
//! waiting, in flight, done and dead jobs, calls against the share, and state (held,
//! throttled, waiting, stuck, done) with why; `--sort`, `--filter`, `--limit` and `--cursor`
//! (the `next` of the page before) choose the page. `--top N` caps the summary's tenant rows
//! (it was `--tenants N` before the tenants view took that name).
//!
//! `--json` prints the stable JSON documented in the README (the same as `GET /v1/status`,
//! or with `--tenants` as `GET /v1/tenants`).
//! `--watch` reads again every second until Ctrl-C (or SIGTERM): on a terminal the table is
//! redrawn in place; otherwise each reading is printed after the last (a JSON object per
//! line with `--json`), so the output can be piped and logged.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{BadInput, Global};
use crate::ops::StatusReport;
use crate::ops::status::utc_time;
use crate::queue::{Queue, QueueError, TenantPage, TenantQuery, TenantSort, TenantState};

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (the layout documented in the README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read again every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Most tenants listed in the summary's table (`--json` lists all).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Every tenant, a page at a time: waiting, in flight, done, dead, calls against the
    /// share, and state with why.
    #[arg(long, conflicts_with = "watch")]
    pub tenants: bool,
    /// With `--tenants`: the order (name, or most first: waiting, done, dead).
    #[arg(long, value_name = "BY", default_value = "name", value_parser = parse_sort, requires = "tenants")]
    pub sort: TenantSort,
    /// With `--tenants`: only tenants in this state (held, throttled, waiting, stuck, done).
    #[arg(long, value_name = "STATE", value_parser = parse_state, requires = "tenants")]
    pub filter: Option<TenantState>,
    /// With `--tenants`: rows per page (1 to 500).
    #[arg(long, value_name = "N", default_value_t = 50, requires = "tenants")]
    pub limit: usize,
    /// With `--tenants`: where the page starts, the `next` a page printed.
    #[arg(long, value_name = "CURSOR", requires = "tenants")]
    pub cursor: Option<String>,
}

fn parse_sort(s: &str) -> Result<TenantSort, String> {
    TenantSort::parse(s).map_err(|e| e.to_string())
}

fn parse_state(s: &str) -> Result<TenantState, String> {
    TenantState::parse(s).map_err(|e| e.to_string())
}

/// How often `--watch` reads.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Runs `status`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue: std::sync::Arc<dyn crate::queue::Queue> =
        std::sync::Arc::new(super::connect_queue(global).await?);
    if args.tenants {
        return tenants(queue.as_ref(), &args).await;
    }
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
        Ok(report.table(args.top))
    }
}

/// `status --tenants`: one page of the tenants view.
async fn tenants(queue: &dyn Queue, args: &Args) -> anyhow::Result<ExitCode> {
    let query = TenantQuery {
        sort: args.sort,
        filter: args.filter,
        cursor: args.cursor.clone(),
        limit: args.limit,
    };
    let page = match queue.tenants_page(&query).await {
        Ok(page) => page,
        Err(QueueError::Config(reason)) => {
            return Err(BadInput(format!("--cursor: {reason}")).into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read the tenants")),
    };
    let mut out = super::output::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&page)?)?;
    } else {
        write!(out, "{}", tenants_table(&page, &query))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The table of a tenants page, with how to get the next.
fn tenants_table(page: &TenantPage, query: &TenantQuery) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "tenants {} registered; {} shown, by {}{}",
        page.total,
        page.tenants.len(),
        query.sort.as_str(),
        query
            .filter
            .map(|f| format!(", only {}", f.as_str()))
            .unwrap_or_default()
    );
    if !page.tenants.is_empty() {
        let width = page
            .tenants
            .iter()
            .map(|t| t.tenant.len())
            .max()
            .unwrap_or(0)
            .max("TENANT".len());
        let _ = writeln!(
            out,
            "\n{:<width$}  {:<9}  {:>8}  {:>9}  {:>8}  {:>6}  {:>11}  WHY",
            "TENANT", "STATE", "WAITING", "IN FLIGHT", "DONE", "DEAD", "CALLS/SHARE"
        );
        for t in &page.tenants {
            let why = match (&t.hold, t.next_call_ms) {
                (Some(h), _) => format!(
                    "{}{} since {}{}: {}",
                    h.kind.as_str(),
                    h.by.as_deref()
                        .map(|b| format!(" by {b}"))
                        .unwrap_or_default(),
                    utc_time(h.since_ms, false),
                    h.until_ms
                        .map(|u| format!(" until {}", utc_time(u, true)))
                        .unwrap_or_default(),
                    h.reason
                ),
                (None, Some(at)) => format!("next call at {}", utc_time(at, true)),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "{:<width$}  {:<9}  {:>8}  {:>9}  {:>8}  {:>6}  {:>11}  {}",
                t.tenant,
                t.state.as_str(),
                t.waiting,
                t.in_flight,
                t.done,
                t.dead,
                format!("{}/{}", t.calls_in_window, t.share),
                why
            );
        }
    }
    if let Some(next) = &page.next {
        let _ = writeln!(out, "\nnext page: --cursor {next}");
    }
    out
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
