//! `lsq-webhooks pause [--reason TEXT] [--by WHO]` and `lsq-webhooks resume`: stop and
//! restart every dispatch of the queue (see `Queue::pause_queue`). Jobs in flight finish;
//! the others stay queued, spending no attempt. `status` and the page show who paused it,
//! when and why. Also who an operator is, for this and `tenants pause`.

use std::io::Write;
use std::process::ExitCode;

use super::Global;
use crate::ops::status::{paused_line, utc_time};
use crate::queue::Queue;

/// Arguments of `pause`.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    /// Why (shown by status and the page).
    #[arg(long, value_name = "TEXT", default_value = "paused by an operator")]
    pub reason: String,
    /// Who pauses it (shown with the reason); default `$USER@host`.
    #[arg(long, value_name = "WHO")]
    pub by: Option<String>,
}

/// Who an operator is: `--by`, else `$USER@host` (`$USER` alone when the host name cannot
/// be read), or nobody.
pub fn operator(by: Option<String>) -> Option<String> {
    let by = by.or_else(|| {
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.trim().is_empty())?;
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty());
        Some(match host {
            Some(host) => format!("{user}@{host}"),
            None => user,
        })
    });
    by.filter(|b| !b.trim().is_empty())
}

/// Runs `pause`.
pub async fn pause(global: &Global, args: PauseArgs) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    let by = operator(args.by);
    let pause = queue.pause_queue(&args.reason, by.as_deref()).await?;
    writeln!(
        super::output::stdout(),
        "queue {}: {}",
        global.queue,
        paused_line(&pause)
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `resume`.
pub async fn resume(global: &Global) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    let mut out = super::output::stdout();
    match queue.resume_queue().await? {
        Some(p) => writeln!(
            out,
            "resumed queue {} (paused since {}{}: {})",
            global.queue,
            utc_time(p.since_ms, false),
            p.by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            p.reason
        )?,
        None => writeln!(out, "queue {} was not paused", global.queue)?,
    }
    Ok(ExitCode::SUCCESS)
}
