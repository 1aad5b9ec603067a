//! `lsq-webhooks job ID` (or `job --tenant T --key K`): one job, its record and its last
//! calls (time, call, outcome, HTTP status, LeadSquared's ExceptionType, duration, error),
//! as text or, with `--json`, the JSON of `GET /v1/jobs/{id}`.

use std::io::Write;
use std::process::ExitCode;

use super::{BadInput, Global};
use crate::job::{JobId, JobView};
use crate::queue::Queue;

/// Arguments of `job`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The job's id (as `enqueue`, `results` and the API name it).
    #[arg(required_unless_present = "key", conflicts_with_all = ["tenant", "key"])]
    pub id: Option<String>,
    /// With `--key`: the tenant the job was pushed for.
    #[arg(long, requires = "key")]
    pub tenant: Option<String>,
    /// Look the job up by its idempotency key (with `--tenant`).
    #[arg(long, requires = "tenant")]
    pub key: Option<String>,
    /// Print JSON (the same as `GET /v1/jobs/{id}`).
    #[arg(long)]
    pub json: bool,
}

/// Finds the job the arguments name: `None` when there is none.
pub async fn find(queue: &dyn Queue, args: &Args) -> anyhow::Result<Option<JobView>> {
    let id = match (&args.id, &args.tenant, &args.key) {
        (Some(id), _, _) => JobId(id.clone()),
        (None, Some(tenant), Some(key)) => match queue.find_job(tenant, key).await? {
            Some(id) => id,
            None => return Ok(None),
        },
        _ => return Err(BadInput("name a job id, or --tenant and --key".into()).into()),
    };
    Ok(queue.job_view(&id).await?)
}

/// Writes a job as text.
pub fn write_text(view: &JobView, out: &mut dyn Write) -> std::io::Result<()> {
    let j = &view.job;
    let state = serde_json::to_value(j.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    writeln!(out, "job         {}", j.job)?;
    writeln!(out, "tenant      {}", j.tenant)?;
    writeln!(out, "key         {}", j.key)?;
    writeln!(out, "state       {state}")?;
    writeln!(out, "attempts    {}", j.attempts)?;
    if let Some(id) = &j.webhook_id {
        let how = if j.reconciled {
            " (found with Retrieve)"
        } else {
            ""
        };
        writeln!(out, "webhook     {id}{how}")?;
    }
    if let Some(outcome) = j.outcome {
        writeln!(out, "did         {}", outcome.as_str())?;
    }
    if let Some(e) = &j.error {
        writeln!(out, "error       {e}")?;
    }
    if view.history.is_empty() {
        writeln!(out, "calls       none yet")?;
        return Ok(());
    }
    writeln!(
        out,
        "\ncalls, oldest first (the last {}):",
        crate::job::HISTORY_LEN
    )?;
    writeln!(
        out,
        "{:<24}  {:<8}  {:<12}  {:>4}  {:<28}  {:>7}  error",
        "sent (UTC)", "call", "outcome", "http", "exception", "ms"
    )?;
    for a in &view.history {
        let at = super::stderr::rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(a.at_ms),
        );
        writeln!(
            out,
            "{:<24}  {:<8}  {:<12}  {:>4}  {:<28}  {:>7}  {}",
            // Milliseconds are enough: 2026-12-01T11:40:00.123Z.
            format!("{}Z", &at[..23]),
            a.call,
            a.outcome,
            a.http_status.map_or("-".to_string(), |s| s.to_string()),
            a.exception_type.as_deref().unwrap_or("-"),
            a.duration_ms,
            a.error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// Runs `job`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::connect_queue(global).await?;
    let Some(view) = find(&queue, &args).await? else {
        let what = match (&args.id, &args.tenant, &args.key) {
            (Some(id), _, _) => format!("no job {id}"),
            (_, Some(t), Some(k)) => format!("no job with key {k:?} for tenant {t:?}"),
            _ => "no such job".to_string(),
        };
        return Err(BadInput(what).into());
    };
    let mut out = super::output::stdout();
    if args.json {
        serde_json::to_writer(&mut out, &view)?;
        writeln!(out)?;
    } else {
        write_text(&view, &mut out)?;
    }
    Ok(ExitCode::SUCCESS)
}
