//! `lsq-webhooks dead list|retry|purge`: the dead-letter list, putting dead jobs back with
//! fresh attempts, and deleting them.

use std::io::Write;
use std::process::ExitCode;

use super::results::{Format, write_rows};
use super::{BadInput, Global};
use crate::job::JobId;
use crate::queue::Queue;

/// Subcommands of `dead`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List dead jobs with the reason each died.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Put dead jobs back in their tenants' lists with fresh attempts.
    Retry(Select),
    /// Delete dead jobs (their idempotency keys become free again).
    Purge(Select),
}

/// Which dead jobs: the ids given, or all of them with `--all`.
#[derive(Debug, clap::Args)]
pub struct Select {
    /// Job ids.
    pub jobs: Vec<String>,
    /// Every dead job.
    #[arg(long, conflicts_with = "jobs")]
    pub all: bool,
}

impl Select {
    fn ids(&self) -> anyhow::Result<Option<Vec<JobId>>> {
        match (self.all, self.jobs.is_empty()) {
            (true, _) => Ok(None),
            (false, false) => Ok(Some(self.jobs.iter().cloned().map(JobId).collect())),
            (false, true) => Err(BadInput("name the jobs, or pass --all".into()).into()),
        }
    }
}

/// Runs a `dead` subcommand against `queue`, writing to `out`.
pub async fn execute(
    queue: &dyn Queue,
    command: &Command,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        Command::List { format } => {
            let rows = queue.dead().await?;
            write_rows(&rows, *format, out)?;
        }
        Command::Retry(select) => {
            let ids = select.ids()?;
            let n = queue.retry_dead(ids.as_deref()).await?;
            writeln!(out, "retried {n}")?;
        }
        Command::Purge(select) => {
            let ids = select.ids()?;
            let n = queue.purge_dead(ids.as_deref()).await?;
            writeln!(out, "purged {n}")?;
        }
    }
    Ok(())
}

/// Runs `dead`.
pub async fn run(global: &Global, command: Command) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    execute(&queue, &command, &mut super::output::stdout()).await?;
    Ok(ExitCode::SUCCESS)
}
