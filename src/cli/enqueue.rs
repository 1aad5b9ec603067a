//! `lsq-webhooks enqueue FILE|-`: validate every line of a JSON Lines job file first, then
//! enqueue the jobs in batches. Any invalid line is reported (`line N: field: reason`) and,
//! unless `--skip-invalid`, nothing is enqueued and the exit code is 2. `--check` checks and
//! reports only.
//!
//! Memory stays bounded whatever the file's size: the file is read and checked in parts
//! ([`PART_BYTES`]), each problem reported as it is found. A file whose checked jobs fit in
//! [`KEEP_BYTES`] keeps them for the push; a larger one is read and checked a second time,
//! each part pushed as it is checked. Standard input is spooled to a temporary file first, so
//! it can be read twice.

use std::collections::HashSet;
use std::io::{BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::RedisShards;
use super::output::stdout;
use super::{BadInput, Global};
use crate::job::NewJob;
use crate::producer::{self, Producer, ProducerError, PushSummary, ScanTotals};
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
    /// Bytes of the file read and checked at a time (tests make it small).
    #[arg(long, hide = true, default_value_t = PART_BYTES)]
    pub part_bytes: usize,
    /// Checked jobs kept from the first read for the push, in bytes; a file with more is
    /// read a second time as it is pushed (tests make it 0).
    #[arg(long, hide = true, default_value_t = KEEP_BYTES)]
    pub keep_bytes: usize,
    /// How large a job's Create body and its parts may be.
    #[command(flatten)]
    pub webhook_limits: super::WebhookLimitArgs,
}

/// A job file is read and checked in parts of this size, so that a file of any size is
/// checked in bounded memory.
const PART_BYTES: usize = 8 << 20;

/// A file whose checked jobs take up to this much keeps them from the first read for the
/// push; a larger one is read and checked a second time as it is pushed, a part at a time.
const KEEP_BYTES: usize = 64 << 20;

/// Where the jobs come from: a file, or standard input spooled to an unnamed temporary file
/// (removed when it is closed) so that it too can be read twice.
enum Input {
    Path(String),
    Spooled(std::fs::File),
}

impl Input {
    fn open(file: &str) -> anyhow::Result<Input> {
        if file != "-" {
            return Ok(Input::Path(file.to_string()));
        }
        let mut spool =
            tempfile::tempfile().context("creating a temporary file for standard input")?;
        std::io::copy(&mut std::io::stdin().lock(), &mut spool)
            .context("reading standard input into a temporary file")?;
        Ok(Input::Spooled(spool))
    }

    /// A reader from the start.
    fn reader(&self) -> anyhow::Result<Box<dyn Read + Send>> {
        Ok(match self {
            Input::Path(path) => {
                let f = std::fs::File::open(path).map_err(|e| BadInput(format!("{path}: {e}")))?;
                Box::new(BufReader::with_capacity(1 << 20, f))
            }
            Input::Spooled(f) => {
                let mut f = f.try_clone().context("re-reading standard input")?;
                f.seek(SeekFrom::Start(0))
                    .context("re-reading standard input")?;
                Box::new(BufReader::with_capacity(1 << 20, f))
            }
        })
    }
}

/// How the file is read: [`PART_BYTES`] and [`KEEP_BYTES`], unless a test says otherwise,
/// and the size limits of each job's body.
#[derive(Clone, Copy)]
struct Sizes {
    part: usize,
    keep: usize,
    limits: crate::leadsquared::BodyLimits,
}

/// The first read: every line checked and every problem reported on stderr as it is found;
/// the checked jobs kept while they fit in [`Sizes::keep`].
struct FirstRead {
    totals: ScanTotals,
    kept: Option<Vec<NewJob>>,
}

/// Reads and checks the whole input (off the async runtime: it is CPU and file work).
async fn first_read(
    input: Arc<Input>,
    name: &str,
    registered: Arc<HashSet<String>>,
    sizes: Sizes,
) -> anyhow::Result<FirstRead> {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<FirstRead> {
        let mut kept = Some(Vec::new());
        let mut kept_bytes = 0usize;
        let totals = producer::scan_jobs(
            input.reader()?,
            &registered,
            &sizes.limits,
            sizes.part,
            |part| {
                for e in &part.errors {
                    super::stderr::line(super::stderr::Level::Warn, &e.to_string());
                }
                if let Some(jobs) = &mut kept {
                    kept_bytes += part
                        .jobs
                        .iter()
                        .map(|j| j.body.len() + j.key.len() + j.tenant.len())
                        .sum::<usize>();
                    if kept_bytes > sizes.keep {
                        kept = None;
                    } else {
                        jobs.extend(part.jobs);
                    }
                }
                ControlFlow::Continue(())
            },
        )
        .map_err(|e| BadInput(format!("{name}: {e}")))?;
        Ok(FirstRead { totals, kept })
    })
    .await
    .context("reading the job file")?
}

/// Pushes what the first read found: the kept jobs, or, for a large file, each part of a
/// second read as it is checked (two parts at most wait in memory). The second read must
/// find what the first did; a file changed in between stops the push with an error.
async fn push_all(
    producer: &Producer,
    input: Arc<Input>,
    name: &str,
    registered: Arc<HashSet<String>>,
    first: FirstRead,
    sizes: Sizes,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<PushSummary, PushFailure> {
    if let Some(jobs) = first.kept {
        return producer
            .push_validated(jobs, progress)
            .await
            .map(|(summary, _)| summary)
            .map_err(PushFailure::Producer);
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<NewJob>>(1);
    let reader_name = name.to_string();
    let second = tokio::task::spawn_blocking(move || -> anyhow::Result<ScanTotals> {
        producer::scan_jobs(
            input.reader()?,
            &registered,
            &sizes.limits,
            sizes.part,
            |part| {
                match tx.blocking_send(part.jobs) {
                    Ok(()) => ControlFlow::Continue(()),
                    // The push stopped: so does the read.
                    Err(_) => ControlFlow::Break(()),
                }
            },
        )
        .map_err(|e| BadInput(format!("{reader_name}: {e}")).into())
    });
    let mut summary = PushSummary::default();
    while let Some(jobs) = rx.recv().await {
        let n = jobs.len();
        match producer.push_validated(jobs, progress).await {
            Ok((s, _)) => {
                summary.enqueued += s.enqueued;
                summary.duplicate += s.duplicate;
            }
            Err(e) => return Err(PushFailure::Producer(failed_after(summary, n, e))),
        }
    }
    let again = second
        .await
        .context("re-reading the job file")
        .and_then(|r| r)
        .map_err(PushFailure::Other)?;
    if (again.valid, again.invalid_lines) != (first.totals.valid, first.totals.invalid_lines) {
        return Err(PushFailure::Other(anyhow::anyhow!(
            "{name} changed while it was enqueued: the first read found {} valid and {} invalid \
             line(s), the second {} and {}. {} job(s) were enqueued, each a valid line of the \
             file as it was read; check the file and run enqueue again (jobs already enqueued \
             are duplicates and are not enqueued twice)",
            first.totals.valid,
            first.totals.invalid_lines,
            again.valid,
            again.invalid_lines,
            summary.enqueued + summary.duplicate
        )));
    }
    Ok(summary)
}

/// Why [`push_all`] stopped.
enum PushFailure {
    /// The producer failed: [`push_failed`] words it.
    Producer(ProducerError),
    /// Reading the file failed, or it changed between the two reads.
    Other(anyhow::Error),
}

/// A producer's failure pushing one part of `part` jobs, after earlier parts went in
/// (`before`): counted from the start of the file.
fn failed_after(before: PushSummary, part: usize, e: ProducerError) -> ProducerError {
    match e {
        ProducerError::Interrupted {
            done,
            unsure,
            error,
        } => ProducerError::Interrupted {
            done: PushSummary {
                enqueued: before.enqueued + done.enqueued,
                duplicate: before.duplicate + done.duplicate,
            },
            unsure,
            error,
        },
        e if before == PushSummary::default() => e,
        e => ProducerError::Interrupted {
            done: before,
            unsure: part,
            error: Box::new(e),
        },
    }
}

/// What a push that stopped part-way tells the operator, in one message: why (for a full
/// Redis, its limit and policy), how many jobs went in first, and that running the same
/// file again is safe.
async fn push_failed(
    queue: &RedisShards,
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
    let registered: Arc<HashSet<String>> =
        Arc::new(queue.tenant_names().await?.into_iter().collect());
    // Spooling standard input is blocking file work: off the async runtime, as the reads are.
    let file = args.file.clone();
    let input = Arc::new(
        tokio::task::spawn_blocking(move || Input::open(&file))
            .await
            .context("reading the job file")??,
    );
    let sizes = Sizes {
        part: args.part_bytes,
        keep: args.keep_bytes,
        limits: args.webhook_limits.limits(),
    };
    let first = first_read(input.clone(), &args.file, registered.clone(), sizes).await?;
    let invalid = first.totals.invalid_lines;
    let valid = first.totals.valid;
    if args.check {
        writeln!(stdout(), "valid {valid}, invalid {invalid}")?;
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
        let bar = indicatif::ProgressBar::new(valid);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} jobs {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let producer = Producer::new(queue.clone()).with_limits(sizes.limits);
    let mut progress = |n: usize| {
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    let pushed = push_all(
        &producer,
        input,
        &args.file,
        registered,
        first,
        sizes,
        &mut progress,
    )
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let summary = match pushed {
        Ok(summary) => summary,
        Err(PushFailure::Producer(e)) => {
            return Err(push_failed(&queue, e, valid as usize, invalid).await);
        }
        Err(PushFailure::Other(e)) => return Err(e),
    };
    writeln!(
        stdout(),
        "enqueued {}, duplicate {}, invalid {invalid}",
        summary.enqueued,
        summary.duplicate
    )?;
    Ok(ExitCode::SUCCESS)
}
