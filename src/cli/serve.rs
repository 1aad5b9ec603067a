//! `lsq-webhooks serve [--listen ADDR]`: the HTTP API for producers and ops, Prometheus
//! metrics and the status page (see `ops::api`), until SIGTERM or SIGINT.
//!
//! Refuses to start without `LSQ_API_TOKEN` (exit 2): writes must never be open.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{BadInput, Global};
use crate::ops::{ApiLimits, ApiToken, AppState, Metrics, app, serve};

/// Arguments of `serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Environment:\n  LSQ_API_TOKEN  the bearer token writes need (required, at least 16 characters; \
its value is never printed)"
)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "LSQ_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[arg(long, env = "LSQ_MAX_BODY_BYTES", default_value_t = ApiLimits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Most jobs in one `POST /v1/jobs`.
    #[arg(
        long,
        env = "LSQ_MAX_JOBS_PER_REQUEST",
        default_value_t = ApiLimits::default().max_jobs_per_request
    )]
    pub max_jobs_per_request: usize,
    /// Requests handled at once; more are refused with 503 at once.
    #[arg(long, env = "LSQ_API_CONCURRENCY", default_value_t = ApiLimits::default().concurrency)]
    pub concurrency: usize,
    /// Longest a request may take, in seconds (then 503).
    #[arg(long, env = "LSQ_API_TIMEOUT_SECS", default_value_t = ApiLimits::default().timeout.as_secs())]
    pub timeout_secs: u64,
    /// `POST /v1/jobs` requests a second from one client (its IP address) before it gets
    /// 429 with `Retry-After`; a burst of as many passes at once. 0: no limit.
    #[arg(
        long,
        env = "LSQ_JOB_POSTS_PER_CLIENT_PER_SEC",
        default_value_t = ApiLimits::default().job_posts_per_client_per_sec
    )]
    pub job_posts_per_client_per_sec: u32,
    /// Retention: delete done records this many seconds after they finished (checked every
    /// minute; their keys stay taken). Export results within it. Off when not given.
    #[arg(long, env = "LSQ_DONE_TTL_SECS", value_name = "SECS")]
    pub done_ttl_secs: Option<u64>,
    /// How large a job's Create body and its parts may be.
    #[command(flatten)]
    pub webhook_limits: super::WebhookLimitArgs,
}

/// Runs `serve`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let token = ApiToken::from_env().map_err(|e| BadInput(e.to_string()))?;
    let done_ttl = super::done_ttl(args.done_ttl_secs)?;
    if args.concurrency == 0 || args.timeout_secs == 0 || args.max_jobs_per_request == 0 {
        return Err(BadInput(
            "--concurrency, --timeout-secs and --max-jobs-per-request must be at least 1".into(),
        )
        .into());
    }
    let stop = CancellationToken::new();
    let signals = super::worker::cancel_on_signal(stop.clone())?;
    let Some(queue) = super::connect_waiting(global, super::queue_config(global), &stop).await?
    else {
        tracing::info!("stopped before Redis answered");
        return Ok(ExitCode::SUCCESS);
    };
    let queue: std::sync::Arc<dyn crate::queue::Queue> = std::sync::Arc::new(queue);
    let retention = done_ttl.map(|ttl| super::spawn_retention(queue.clone(), ttl, stop.clone()));
    let state = AppState {
        queue,
        metrics: Metrics::new(),
        token,
        limits: ApiLimits {
            max_body_bytes: args.max_body_bytes,
            max_jobs_per_request: args.max_jobs_per_request,
            concurrency: args.concurrency,
            timeout: Duration::from_secs(args.timeout_secs),
            job_posts_per_client_per_sec: args.job_posts_per_client_per_sec,
            webhook: args.webhook_limits.limits(),
            ..ApiLimits::default()
        },
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, queue = %global.queue, "serving the API, metrics and the status page");
    let served = serve(listener, app(state), stop.clone()).await;
    stop.cancel();
    if let Some(task) = retention {
        let _ = task.await;
    }
    // The signal watcher ends as soon as the token is cancelled.
    let _ = signals.await;
    served.context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
