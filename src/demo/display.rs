//! The demo's live progress on standard error: one bar per tenant (done of its jobs, calls
//! in the current window against its limit, retrying, dead) redrawn in place on a terminal,
//! or a plain line every few seconds when standard error is a file or a pipe.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::watch::{TenantProgress, Watch};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Bars redrawn in place (a terminal).
    Bars,
    /// A plain line this often (a log file, CI).
    Lines {
        /// Time between lines.
        every: Duration,
    },
    /// Nothing (tests).
    Quiet,
}

impl View {
    /// Bars when standard error is a terminal, else a line every 5 seconds.
    pub fn for_stderr() -> View {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            View::Bars
        } else {
            View::Lines {
                every: Duration::from_secs(5),
            }
        }
    }
}

/// One tenant as the display knows it before the run.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub name: String,
    pub limit: u32,
    pub jobs: u64,
}

/// Draws progress until `stop` is cancelled, then draws once more and returns. The caller
/// owns the task and awaits it.
pub(crate) fn spawn(
    view: View,
    intro: String,
    rows: Vec<Row>,
    watch: Arc<Watch>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        match view {
            View::Bars => bars(intro, rows, watch, stop).await,
            View::Lines { every } => lines(intro, rows, watch, stop, every).await,
            View::Quiet => stop.cancelled().await,
        }
    })
}

fn tenant_message(p: &TenantProgress, limit: u32) -> String {
    format!(
        "{:>2}/{:<2} calls in window  retrying {}  dead {}",
        p.calls_in_window, limit, p.retrying, p.dead
    )
}

async fn bars(intro: String, rows: Vec<Row>, watch: Arc<Watch>, stop: CancellationToken) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
    // The templates are constants: if one were wrong, fall back to indicatif's default
    // style rather than fail the demo over its looks.
    let total_style =
        ProgressStyle::with_template("{prefix:<10} {pos:>5}/{len:<5} [{wide_bar}] {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    let tenant_style = ProgressStyle::with_template(
        "{prefix:<10} {pos:>5}/{len:<5} [{wide_bar:.cyan/blue}] {msg}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    let _ = multi.println(intro);
    let total_jobs: u64 = rows.iter().map(|r| r.jobs).sum();
    let total = multi.add(
        ProgressBar::new(total_jobs)
            .with_style(total_style)
            .with_prefix("all"),
    );
    let bars: Vec<(Row, ProgressBar)> = rows
        .into_iter()
        .map(|row| {
            let bar = multi.add(
                ProgressBar::new(row.jobs)
                    .with_style(tenant_style.clone())
                    .with_prefix(row.name.clone()),
            );
            (row, bar)
        })
        .collect();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(125));
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.cancelled() => true,
        };
        let (mut done, mut retrying, mut dead, mut limited) = (0, 0, 0, 0);
        for (row, bar) in &bars {
            let p = watch.progress(&row.name);
            bar.set_position(p.done + p.dead);
            bar.set_message(tenant_message(&p, row.limit));
            done += p.done;
            retrying += p.retrying;
            dead += p.dead;
            limited += p.rate_limited;
        }
        total.set_position(done + dead);
        total.set_message(format!(
            "{:>5.1} s  retrying {retrying}  dead {dead}  rate limited {limited}",
            started.elapsed().as_secs_f64()
        ));
        if stopping {
            break;
        }
    }
    for (_, bar) in &bars {
        bar.abandon();
    }
    total.abandon();
}

async fn lines(
    intro: String,
    rows: Vec<Row>,
    watch: Arc<Watch>,
    stop: CancellationToken,
    every: Duration,
) {
    eprintln!("{intro}");
    let total_jobs: u64 = rows.iter().map(|r| r.jobs).sum();
    let started = Instant::now();
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let (mut done, mut retrying, mut dead, mut limited) = (0, 0, 0, 0);
        let mut windows = Vec::with_capacity(rows.len());
        for row in &rows {
            let p = watch.progress(&row.name);
            done += p.done;
            retrying += p.retrying;
            dead += p.dead;
            limited += p.rate_limited;
            windows.push(format!("{} {}/{}", row.name, p.calls_in_window, row.limit));
        }
        eprintln!(
            "{:>5.1} s: done {done}/{total_jobs}, retrying {retrying}, dead {dead}, \
             rate limited {limited}; calls in window: {}",
            started.elapsed().as_secs_f64(),
            windows.join(", ")
        );
    }
}
