//! `lsq-webhooks results`: one row per finished job (done or dead), in finishing order, as
//! JSON Lines or CSV with the columns `job,tenant,key,status,webhook_id,attempts,error`.
//! With `--purge-done`, the records of the done jobs written are then deleted from the
//! queue (their idempotency keys stay taken), so the next `results` shows only what finished
//! since: an export that also keeps Redis from holding every record forever.

use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;

use super::Global;
use crate::job::{JobId, JobResult, JobState};
use crate::queue::Queue;

/// Arguments of `results`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// Only this tenant's jobs.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Once every row is written, delete the records of the done jobs written. Their
    /// webhook Ids are then only in this output; their keys stay taken, so the same job
    /// enqueued again is still a duplicate. Dead jobs stay (see `dead purge`).
    #[arg(long)]
    pub purge_done: bool,
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// The columns of a results row, in order; `outcome` (issue 18) is what a done job did:
/// created, updated, unchanged, deleted or not_found (empty for a dead one).
pub const COLUMNS: [&str; 8] = [
    "job",
    "tenant",
    "key",
    "status",
    "webhook_id",
    "attempts",
    "error",
    "outcome",
];

/// One row: exactly [`COLUMNS`].
#[derive(Debug, Serialize)]
struct Row<'a> {
    job: &'a str,
    tenant: &'a str,
    key: &'a str,
    status: &'a str,
    webhook_id: Option<&'a str>,
    attempts: u32,
    error: Option<&'a str>,
    outcome: Option<&'static str>,
}

impl<'a> From<&'a JobResult> for Row<'a> {
    fn from(r: &'a JobResult) -> Self {
        Row {
            job: &r.job.0,
            tenant: &r.tenant,
            key: &r.key,
            status: r.status.as_str(),
            webhook_id: r.webhook_id.as_deref(),
            attempts: r.attempts,
            error: r.error.as_deref(),
            // A job done before outcomes were recorded created its webhook.
            outcome: (r.status == crate::job::JobState::Done)
                .then(|| r.outcome.unwrap_or(crate::job::Outcome::Created).as_str()),
        }
    }
}

/// Writes `rows` in `format` (a header line first for CSV).
pub fn write_rows(rows: &[JobResult], format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
    match format {
        Format::Jsonl => {
            for r in rows {
                serde_json::to_writer(&mut *out, &Row::from(r))?;
                out.write_all(b"\n")?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(COLUMNS)?;
            for r in rows {
                let row = Row::from(r);
                w.write_record([
                    row.job,
                    row.tenant,
                    row.key,
                    row.status,
                    row.webhook_id.unwrap_or(""),
                    &row.attempts.to_string(),
                    row.error.unwrap_or(""),
                    row.outcome.unwrap_or(""),
                ])?;
            }
            w.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Reads the finished jobs from `queue` and writes them to `out`; with `--purge-done`, then
/// deletes the done ones written and returns how many went (else 0).
pub async fn print(queue: &dyn Queue, args: &Args, out: &mut dyn Write) -> anyhow::Result<u64> {
    let rows = queue.results(args.tenant.as_deref()).await?;
    // Written and flushed first: a record is deleted only once its row is out.
    write_rows(&rows, args.format, out)?;
    if !args.purge_done {
        return Ok(0);
    }
    let done: Vec<JobId> = rows
        .iter()
        .filter(|r| r.status == JobState::Done)
        .map(|r| r.job.clone())
        .collect();
    Ok(queue.purge_done(&done).await?)
}

/// Runs `results`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    let purged = print(&queue, &args, &mut super::output::stdout()).await?;
    if args.purge_done {
        // Standard error: standard output holds only the rows.
        super::stderr::line(
            super::stderr::Level::Info,
            &format!("purged {purged} done record(s)"),
        );
    }
    Ok(ExitCode::SUCCESS)
}
