//! `lsq-webhooks worker [--concurrency N] [--exit-when-idle]`: drains the queue until SIGTERM
//! or SIGINT (graceful, in two stages) or, with `--exit-when-idle`, until nothing is queued,
//! scheduled or running.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{BadInput, Global};
use crate::leadsquared::{Client, ClientConfig};
use crate::queue::redis::{Durability, RedisQueue};
use crate::queue::{Queue, QueueConfig, ShareMode};
use crate::worker::{Pool, RetryPolicy, WorkerConfig};

/// Arguments of `worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Jobs run at once in this process.
    #[arg(long, env = "LSQ_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Exit once nothing is queued, scheduled or running.
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Attempts before a job that keeps failing transiently is dead.
    #[arg(long, env = "LSQ_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: u32,
    /// Retry backoff: the first retry waits up to this many milliseconds (full jitter).
    #[arg(long, env = "LSQ_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Retry backoff: growth per attempt.
    #[arg(long, env = "LSQ_RETRY_FACTOR", default_value_t = 2.0)]
    pub retry_factor: f32,
    /// Retry backoff: no wait longer than this many seconds.
    #[arg(long, env = "LSQ_RETRY_CAP_SECS", default_value_t = 300)]
    pub retry_cap_secs: u64,
    /// After SIGTERM/SIGINT, how long running calls may finish before their jobs are handed
    /// back to the queue, in seconds.
    #[arg(long, env = "LSQ_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,
    /// A job's lease: how long it stays with a worker that stops heartbeating, in ms.
    #[arg(long, env = "LSQ_LEASE_MS", default_value_t = 5000)]
    pub lease_ms: u64,
    /// Extra spacing added to each tenant's 5-second window, in ms (zero is safe: calls
    /// are re-stamped when their answer arrives).
    #[arg(long, env = "LSQ_MARGIN_MS", default_value_t = 0)]
    pub margin_ms: u64,
    /// The rate-limit window in ms. LeadSquared's is 5 s; other values are for simulators
    /// and benchmarks only.
    #[arg(long, hide = true, default_value_t = 5000)]
    pub window_ms: u64,
    /// The most successes one store call records (1: each on its own); for benchmarks.
    #[arg(long, hide = true, default_value_t = 64)]
    pub complete_batch: usize,
    /// Timeout of one call to LeadSquared, in seconds.
    #[arg(long, env = "LSQ_CALL_TIMEOUT_SECS", default_value_t = 30)]
    pub call_timeout_secs: u64,
    /// Serve Prometheus `/metrics` and `/healthz` on this address (e.g. 0.0.0.0:9090) while
    /// the worker runs.
    #[arg(long, env = "LSQ_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How long LeadSquared may go on processing a Create nobody waits for any more (timed
    /// out, reset, abandoned, or its worker died): the reconcile that looks for its webhook
    /// waits this long after the call ended, or after its send plus the call timeout, in ms.
    #[arg(long, env = "LSQ_RECONCILE_SETTLE_MS", default_value_t = 10_000)]
    pub reconcile_settle_ms: u64,
    /// How much of each tenant's limit the queue uses: `adaptive` cuts a tenant's share
    /// when a rate limit shows another client on the account and climbs back while calls
    /// succeed; `fixed` always uses `limit - reserve`. Every worker on a queue should run
    /// the same mode.
    #[arg(long, env = "LSQ_SHARE", value_enum, default_value_t = ShareMode::Adaptive)]
    pub share: ShareMode,
    /// Give a tenant whose host has not answered yet (new keys, a new or unknown host) one
    /// call in flight until its host answers, instead of its whole window's calls, so that
    /// a host that never answers holds one worker slot, not dozens, until its calls time
    /// out. `false` turns it off.
    #[arg(long, env = "LSQ_SLOW_START", default_value_t = true, action = clap::ArgAction::Set,
          value_name = "BOOL")]
    pub slow_start: bool,
    /// Retention: delete done records this many seconds after they finished (checked every
    /// minute; their keys stay taken). Export results within it. Off when not given.
    #[arg(long, env = "LSQ_DONE_TTL_SECS", value_name = "SECS")]
    pub done_ttl_secs: Option<u64>,
    /// Where tenants without an `api_base` (and tenants answered 401) have their host
    /// found with `UserByAccessKey.Get`: a host name (`api-in21.leadsquared.com`) or a URL;
    /// plain http only to loopback.
    #[arg(long, env = "LSQ_DISCOVERY_URL", default_value = crate::leadsquared::client::DEFAULT_DISCOVERY_URL,
          value_parser = crate::tenant::api_base_from_host, value_name = "URL")]
    pub discovery_url: url::Url,
    /// How LeadSquared's Delete is called, `METHOD /path` (it is undocumented; the Id goes
    /// in a `webhookId` query parameter): integrators report `GET /v2/Webhook.svc/Delete`.
    #[arg(long, env = "LSQ_DELETE_CALL", value_name = "METHOD /PATH",
          default_value = crate::leadsquared::client::DEFAULT_DELETE_CALL)]
    pub delete_call: crate::leadsquared::DeleteCall,
}

impl Args {
    /// The queue settings these flags ask for (name from the global `--queue`).
    pub fn queue_config(&self, global: &Global) -> anyhow::Result<QueueConfig> {
        if self.max_attempts == 0 {
            return Err(BadInput("--max-attempts must be at least 1".into()).into());
        }
        if self.window_ms == 0 {
            return Err(BadInput("--window-ms must be positive".into()).into());
        }
        if self.lease_ms < 100 {
            return Err(BadInput("--lease-ms must be at least 100".into()).into());
        }
        Ok(QueueConfig {
            name: global.queue.clone(),
            window: Duration::from_millis(self.window_ms),
            lease: Duration::from_millis(self.lease_ms),
            margin: Duration::from_millis(self.margin_ms),
            max_attempts: self.max_attempts,
            day: std::time::Duration::from_secs(86_400),
            share: self.share,
            slow_start: self.slow_start,
        })
    }

    /// The pool settings these flags ask for.
    pub fn worker_config(&self) -> anyhow::Result<WorkerConfig> {
        if self.concurrency == 0 {
            return Err(BadInput("--concurrency must be at least 1".into()).into());
        }
        if !(self.retry_factor >= 1.0 && self.retry_factor.is_finite()) {
            return Err(BadInput("--retry-factor must be at least 1".into()).into());
        }
        Ok(WorkerConfig {
            concurrency: self.concurrency,
            exit_when_idle: self.exit_when_idle,
            retry: RetryPolicy {
                base: Duration::from_millis(self.retry_base_ms),
                factor: self.retry_factor,
                cap: Duration::from_secs(self.retry_cap_secs),
            },
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            reconcile_settle: Duration::from_millis(self.reconcile_settle_ms),
            complete_batch: self.complete_batch.max(1),
            discovery_url: self.discovery_url.clone(),
            ..WorkerConfig::default()
        })
    }
}

/// Says at start when Redis runs with settings under which jobs can be lost.
async fn warn_about_redis_settings(queue: &RedisQueue) {
    match queue.durability().await {
        Durability::Safe => tracing::debug!("Redis: appendonly yes, maxmemory-policy noeviction"),
        Durability::Unsafe(problems) => {
            for problem in problems {
                tracing::warn!("Redis setting can lose jobs: {problem}");
            }
        }
        // Managed services often refuse CONFIG; their settings are made in their console.
        Durability::Unknown(why) => tracing::info!(
            "cannot read Redis's settings ({why}); jobs survive a Redis restart only with \
             appendonly yes and maxmemory-policy noeviction"
        ),
    }
}

/// The exit code when a second SIGTERM/SIGINT stops the process at once: 128 + SIGINT, what
/// a shell reports for a program Ctrl-C ended.
pub const STOPPED_AT_ONCE: i32 = 130;

/// Cancels `token` on the first SIGTERM or SIGINT (the graceful stop), and exits the
/// process at once, with [`STOPPED_AT_ONCE`], on a second one. Nothing is lost then: a job
/// in flight keeps its lease, which expires, and the job is handed to another worker (a
/// webhook whose Create was sent is found by the reconcile, never created twice). The
/// returned task ends with the first signal or when `token` is cancelled.
pub fn cancel_on_signal(token: CancellationToken) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down (a second signal stops at once)"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down (a second Ctrl-C stops at once)"),
            _ = token.cancelled() => return,
        }
        token.cancel();
        // Detached: it lives as long as the runtime, whoever waits for this task.
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!(
                "second signal: stopping at once; jobs in flight go back to the queue when \
                 their leases expire"
            );
            std::process::exit(STOPPED_AT_ONCE);
        });
    }))
}

/// Runs `worker`.
pub async fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let queue_config = args.queue_config(global)?;
    let worker_config = args.worker_config()?;
    let done_ttl = super::done_ttl(args.done_ttl_secs)?;
    let defaults = ClientConfig::default();
    let client = Client::new(ClientConfig {
        timeout: Duration::from_secs(args.call_timeout_secs.max(1)),
        // Every call of this process may go to one host (a region serves many tenants):
        // keep a connection for each, or connections are closed and opened again all the
        // time under full load.
        pool_max_idle_per_host: defaults
            .pool_max_idle_per_host
            .max(worker_config.concurrency),
        delete_call: args.delete_call.clone(),
        ..defaults
    })?;
    let shutdown = CancellationToken::new();
    let signals = cancel_on_signal(shutdown.clone())?;
    let Some(queue) = super::connect_waiting(global, queue_config, &shutdown).await? else {
        tracing::info!("stopped before Redis answered");
        return Ok(ExitCode::SUCCESS);
    };
    // Every shard shares the one connection: one server's settings, or on a cluster every
    // master's.
    warn_about_redis_settings(&queue.shards()[0]).await;
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let retention =
        done_ttl.map(|ttl| super::spawn_retention(queue.clone(), ttl, shutdown.clone()));
    let pool = Pool::new(queue.clone(), client, worker_config);
    // Jobs die in the queue too, not only by this worker's hand (a lease that expired on its
    // last attempt, another worker's bury): the summary counts every one that died during
    // the run, from the queue's own count.
    let tally = queue.clone();
    let dead_before = dead_count(tally.as_ref()).await;
    // The metrics server outlives the pool's shutdown (its grace period is worth watching)
    // and is stopped, and waited for, once the pool has finished.
    let metrics_stop = CancellationToken::new();
    let metrics_server = match args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /healthz");
            let router = crate::ops::metrics_app(queue, pool.metrics());
            Some(tokio::spawn(crate::ops::serve(
                listener,
                router,
                metrics_stop.clone(),
            )))
        }
        None => None,
    };
    let summary = pool.run(shutdown.clone()).await;
    shutdown.cancel();
    if let Some(task) = retention {
        let _ = task.await;
    }
    metrics_stop.cancel();
    // The signal watcher ends as soon as the token is cancelled.
    let _ = signals.await;
    if let Some(server) = metrics_server {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("metrics server failed: {e}"),
            Err(e) => tracing::warn!("metrics server task failed: {e}"),
        }
    }
    let summary = summary?;
    let dead_during = match (dead_before, dead_count(tally.as_ref()).await) {
        (Some(before), Some(after)) => after.saturating_sub(before).max(summary.buried),
        _ => summary.buried,
    };
    let counts = [
        ("dispatched", summary.dispatched),
        ("created", summary.created),
        ("reconciled", summary.reconciled),
        ("retried", summary.retried),
        ("rate limited", summary.rate_limited),
        ("dead", dead_during),
        ("dead by this worker", summary.buried),
        ("handed back", summary.handed_back),
    ];
    let text = counts
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = counts
        .iter()
        .map(|(name, n)| (name.replace(' ', "_"), serde_json::Value::from(*n)))
        .collect();
    super::stderr::line_with(super::stderr::Level::Info, &text, "worker stopped", fields);
    Ok(ExitCode::SUCCESS)
}

/// Jobs in the dead letters now (`None` when the store does not say: the summary then
/// counts this worker's own).
async fn dead_count(queue: &dyn Queue) -> Option<u64> {
    match queue.pulse(0).await {
        Ok(pulse) => Some(pulse.dead),
        Err(e) => {
            tracing::debug!("could not count the dead letters: {e}");
            None
        }
    }
}
