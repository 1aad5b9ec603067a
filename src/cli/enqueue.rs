//! `lsq-webhooks enqueue FILE|-`: validate every line of a JSON Lines job file first, then
//! enqueue the jobs in batches. Any invalid line is reported (`line N: field: reason`) and,
//! unless `--skip-invalid`, nothing is enqueued and the exit code is 2. `--check` checks and
//! reports only.

use std::collections::HashSet;
use std::io::{BufReader, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::output::stdout;
use super::{BadInput, Global};
use crate::producer::{self, JobFile, Producer, ProducerError};
use crate::queue::redis::RedisQueue;
use crate::queue::{Queue, QueueError};

/// Arguments of `enqueue`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON Lines job file, one `{"tenant","webhook","key"?}` a line; `-` reads stdin.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Enqueue the valid lines even when some are invalid (they are still reported).
    #[arg(long)]
    pub skip_invalid: bool,
    /// Only check the file (tenants against the registry) and report; enqueue nothing.
    /// Prints `valid N, invalid N`; exit 2 when a line is invalid.
    #[arg(long, conflicts_with = "skip_invalid")]
    pub check: bool,
}

/// Reads and checks the whole input (off the async runtime: it is CPU and file work).
async fn read(file: &str, registered: HashSet<String>) -> anyhow::Result<JobFile> {
    let file = file.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<JobFile> {
        if file == "-" {
            let mut data = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut data)
                .context("reading standard input")?;
            Ok(producer::read_jobs(&data[..], &registered)?)
        } else {
            let f = std::fs::File::open(&file).map_err(|e| BadInput(format!("{file}: {e}")))?;
            producer::read_jobs(BufReader::with_capacity(1 << 20, f), &registered)
                .map_err(|e| BadInput(format!("{file}: {e}")).into())
        }
    })
    .await
    .context("reading the job file")?
}

/// What a push that stopped part-way tells the operator, in one message: why (for a full
/// Redis, its limit and policy), how many jobs went in first, and that running the same
/// file again is safe.
async fn push_failed(
    queue: &RedisQueue,
    e: ProducerError,
    total: usize,
    invalid: u64,
) -> anyhow::Error {
    let ProducerError::Interrupted {
        done,
        unsure,
        error,
    } = e
    else {
        return e.into();
    };
    // What was written before the push stopped; the push's failure below is what the
    // command reports, so a reader gone from stdout does not replace it.
    let _ = writeln!(
        stdout(),
        "enqueued {}, duplicate {}, invalid {invalid}",
        done.enqueued,
        done.duplicate
    );
    let (cause, when, hint) = match *error {
        ProducerError::OutOfMemory { memory } => {
            let memory = match memory {
                Some(m) => Some(m),
                None => queue.memory().await,
            };
            let full = QueueError::OutOfMemory { memory };
            (
                format!("{full}"),
                "it filled",
                " Free memory in Redis or raise its maxmemory first.",
            )
        }
        other => (format!("{other}"), "that", ""),
    };
    let already = match done.duplicate {
        0 => String::new(),
        n => format!(", {n} of them already there as duplicates"),
    };
    anyhow::anyhow!(
        "{cause}. {} of {total} jobs were enqueued before {when}{already} (up to {unsure} more, \
         of the batch being written, may be in too). Running the same file again is safe: \
         the jobs already enqueued are duplicates and are not enqueued twice.{hint}",
        done.enqueued + done.duplicate
    )
}

/// Runs `enqueue`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue = Arc::new(super::connect_queue(global).await?);
    let registered: HashSet<String> = queue.tenant_names().await?.into_iter().collect();
    let file = read(&args.file, registered).await?;
    for e in &file.errors {
        super::stderr::line(super::stderr::Level::Warn, &e.to_string());
    }
    let invalid = file.invalid_lines;
    if args.check {
        writeln!(stdout(), "valid {}, invalid {invalid}", file.jobs.len())?;
        if invalid > 0 {
            return Err(BadInput(format!("{invalid} invalid line(s) in {}", args.file)).into());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if invalid > 0 && !args.skip_invalid {
        writeln!(stdout(), "enqueued 0, duplicate 0, invalid {invalid}")?;
        return Err(BadInput(format!(
            "{invalid} invalid line(s) in {}; nothing enqueued (--skip-invalid enqueues the valid ones)",
            args.file
        ))
        .into());
    }

    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(file.jobs.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} jobs {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let total = file.jobs.len();
    let producer = Producer::new(queue.clone());
    let mut progress = |n: usize| {
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    let pushed = producer.push_validated(file.jobs, &mut progress).await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (summary, _ids) = match pushed {
        Ok(pushed) => pushed,
        Err(e) => return Err(push_failed(&queue, e, total, invalid).await),
    };
    writeln!(
        stdout(),
        "enqueued {}, duplicate {}, invalid {invalid}",
        summary.enqueued,
        summary.duplicate
    )?;
    Ok(ExitCode::SUCCESS)
}
