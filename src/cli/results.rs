//! `lsq-webhooks results`: one row per finished job (done or dead), in finishing order, as
//! JSON Lines or CSV with the columns `job,tenant,key,status,webhook_id,attempts,error`.

use std::io::Write;
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;

use super::Global;
use crate::job::JobResult;
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
}

/// How rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// The columns of a results row, in order.
pub const COLUMNS: [&str; 7] = [
    "job",
    "tenant",
    "key",
    "status",
    "webhook_id",
    "attempts",
    "error",
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
                ])?;
            }
            w.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Reads the finished jobs from `queue` and writes them to `out`.
pub async fn print(queue: &dyn Queue, args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let rows = queue.results(args.tenant.as_deref()).await?;
    write_rows(&rows, args.format, out)
}

/// Runs `results`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    print(&queue, &args, &mut std::io::stdout().lock()).await?;
    Ok(ExitCode::SUCCESS)
}
