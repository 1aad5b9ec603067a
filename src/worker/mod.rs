//! The worker pool: drains a [`Queue`] by calling LeadSquared's Create for each job, within
//! the queue's per-tenant limits, and records every outcome.
//!
//! Built on the apalis-core 1.0 worker runtime with this project's own backend (see
//! `docs/decisions.md` for why not apalis-redis):
//! - [`backend`]: the queue as an apalis `Backend`. The runtime polls it for a job only once
//!   the concurrency limit has given a permit, so one process never holds more jobs than it
//!   can run; between jobs it sleeps on [`Queue::wait_for_work`], bounded by the queue's
//!   own "next call allowed in" answer.
//! - [`job`]: one job: tenant, decode, reconcile or Create, heartbeats, the answer acted on.
//! - `completions`: successes recorded in batches per process ([`Queue::complete_many`]).
//! - [`backoff`]: retry backoff for jobs (exponential, full jitter), and which store errors
//!   the worker waits out ([`crate::retry`]).
//! - [`stats`]: counters of a run.
//! - [`observer`]: [`JobObserver`], told of each dispatch and each job's outcome.
//!
//! Shutdown has two stages. When the `CancellationToken` given to [`Pool::run`] is
//! cancelled, no new job is dispatched (a job leased at that moment is handed straight
//! back); calls already running go on for up to [`WorkerConfig::shutdown_grace`], and jobs
//! still unfinished then are handed back to the queue (attempt given back, outcome marked
//! unknown so the next worker reconciles first; one whose Create was in flight is offered
//! again only once that call can no longer land, see `docs/decisions.md`).

pub mod backend;
pub mod backoff;
mod completions;
pub mod job;
pub mod observer;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use apalis_core::task::Task;
use apalis_core::worker::builder::WorkerBuilder;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

pub use backoff::{ReconnectPolicy, RetryPolicy};
pub use job::{AttemptOutcome, KEYS_REFUSED};
pub use observer::JobObserver;
pub use stats::{PoolTotals, Stats};

use crate::leadsquared::Client;
use crate::ops::Metrics;
use crate::queue::{Fence, LeasedJob, Queue, QueueError};
use backend::{Fetcher, QueueBackend};
use completions::Completions;
use job::{JobContext, TenantCache};

/// The dispatch's fence lets a Create go out without the `sending` round trip for at most
/// this fraction of the window after its dispatch (see [`WorkerConfig::fence_slack`]).
const STAMP_SLACK_PER_WINDOW: u32 = 20;

/// How a pool runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Jobs run at once (`--concurrency`). The work is waiting on HTTP answers, so the
    /// default is generous: 64.
    pub concurrency: usize,
    /// Stop once nothing is queued, scheduled or running (`--exit-when-idle`).
    pub exit_when_idle: bool,
    /// Backoff between attempts of a job that failed transiently.
    pub retry: RetryPolicy,
    /// Backoff while the queue's store is unreachable.
    pub reconnect: ReconnectPolicy,
    /// Stage two of shutdown: how long running calls may go on after the stop signal
    /// before their jobs are handed back. Default 20 s (inside Kubernetes' default 30 s
    /// termination grace period).
    pub shutdown_grace: Duration,
    /// Longest sleep when the queue is empty. Default 1 s.
    pub idle_poll: Duration,
    /// How long a tenant read from the registry is reused. Default 5 s.
    pub tenant_cache_ttl: Duration,
    /// Page size of the single Retrieve call a reconcile makes. Default 100.
    pub retrieve_page_size: u32,
    /// How long LeadSquared may go on processing a Create after the client stopped waiting
    /// for it (a timeout, a reset, a 5xx from a gateway, a call abandoned or a worker that
    /// died mid-call): no reconcile looks for its webhook before this long after the call
    /// ended, or, when nobody saw it end, after its send plus the client's total timeout.
    /// A reconcile earlier than that could find nothing and create a second webhook.
    /// Default 10 s (see `docs/decisions.md`).
    pub reconcile_settle: Duration,
    /// How long after its dispatch request a job's Create may go out under the fence the
    /// dispatch put up (`queue::Fence`), saving the separate `Queue::sending` round trip; a
    /// Create that starts later takes that round trip. Default 1 s, and never more than a
    /// quarter of the lease (the lease must still hold when the Create goes out) nor a
    /// twentieth of the window: the dispatch stamped the call in its tenant's window, and a
    /// Create sent later than that goes out after its fence has re-stamped it
    /// ([`Queue::sending`](crate::queue::Queue::sending)), so no call counts in the window from
    /// more than 5% of a window before it was sent. It adds to how long a job whose worker
    /// died waits before it is reconciled.
    pub fence_slack: Duration,
    /// The most successes recorded with one store call (`worker::completions`): a batch
    /// goes out as soon as the one before it is written, with whatever came in meanwhile.
    /// 1 records each on its own. Default 64.
    pub complete_batch: usize,
    /// Name of this worker in logs.
    pub name: String,
    /// Where tenants' hosts are discovered with `UserByAccessKey.Get` (`--discovery-url`,
    /// `LSQ_DISCOVERY_URL`). Default `https://api.leadsquared.com`.
    pub discovery_url: url::Url,
    /// How unreachable-host failures hold a tenant. Default: after 3 in a row, 5 s
    /// doubling to 5 min, jittered.
    pub unreachable: crate::queue::UnreachablePolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 64,
            exit_when_idle: false,
            retry: RetryPolicy::default(),
            reconnect: ReconnectPolicy::default(),
            shutdown_grace: Duration::from_secs(20),
            idle_poll: Duration::from_secs(1),
            tenant_cache_ttl: Duration::from_secs(5),
            retrieve_page_size: 100,
            reconcile_settle: Duration::from_secs(10),
            fence_slack: Duration::from_secs(1),
            complete_batch: 64,
            name: format!("lsq-worker-{}", std::process::id()),
            discovery_url: default_discovery_url(),
            unreachable: crate::queue::UnreachablePolicy::default(),
        }
    }
}

/// [`crate::leadsquared::client::DEFAULT_DISCOVERY_URL`] as a URL.
pub fn default_discovery_url() -> url::Url {
    #[allow(clippy::unwrap_used)] // A constant that parses: tests/lsq_client.rs checks it.
    url::Url::parse(crate::leadsquared::client::DEFAULT_DISCOVERY_URL).unwrap()
}

/// Why a pool stopped other than by being told to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The apalis runtime failed (it does not, with this backend, short of a bug).
    #[error("worker runtime: {0}")]
    Runtime(#[from] apalis_core::error::WorkerError),
    /// The configuration cannot work.
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// Dispatching failed in a way no retry fixes (a script error, a key of the wrong
    /// type); the pool stopped taking jobs and let running ones finish.
    #[error("worker stopped: {0}")]
    Store(QueueError),
}

/// A pool of workers over one queue, in this process.
pub struct Pool {
    queue: Arc<dyn Queue>,
    client: Client,
    config: WorkerConfig,
    stats: Arc<Stats>,
    /// Prometheus metrics (`worker --metrics-listen`): job outcomes and call latency.
    metrics: Metrics,
    /// Told of each dispatch and each job's outcome (see [`Pool::with_observer`]).
    observer: Option<Arc<dyn JobObserver>>,
}

impl Pool {
    /// A pool that takes jobs from `queue` and calls LeadSquared with `client`.
    pub fn new(queue: Arc<dyn Queue>, client: Client, config: WorkerConfig) -> Self {
        Pool {
            queue,
            client,
            config,
            stats: Arc::new(Stats::default()),
            metrics: Metrics::new(),
            observer: None,
        }
    }

    /// Tells `observer` of each dispatch and each job's outcome as they happen.
    pub fn with_observer(mut self, observer: Arc<dyn JobObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Counts into `metrics` (shared with whatever serves them) instead of a registry of
    /// the pool's own.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this pool counts into.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Live counters (for a progress display).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled (then shuts down in two stages) or, with
    /// [`WorkerConfig::exit_when_idle`], until the queue is idle. Returns what it did.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<PoolTotals, WorkerError> {
        if self.config.concurrency == 0 {
            return Err(WorkerError::Config("concurrency must be at least 1".into()));
        }
        let hard_stop = CancellationToken::new();
        // Stage two: the deadline for running calls. Owned here; ends with `run`.
        let _deadline = {
            let (shutdown, hard_stop, grace) = (
                shutdown.clone(),
                hard_stop.clone(),
                self.config.shutdown_grace,
            );
            AbortOnDropHandle::new(tokio::spawn(async move {
                shutdown.cancelled().await;
                tracing::info!(
                    grace_ms = grace.as_millis() as u64,
                    "stopping: no new jobs; running calls may finish"
                );
                tokio::time::sleep(grace).await;
                hard_stop.cancel();
            }))
        };
        let finished = Arc::new(Notify::new());
        let failed = Arc::new(std::sync::Mutex::new(None));
        let fetcher = Fetcher {
            failed: failed.clone(),
            queue: self.queue.clone(),
            stop: shutdown.clone(),
            exit_when_idle: self.config.exit_when_idle,
            idle_poll: self.config.idle_poll,
            reconnect: self.config.reconnect,
            local: finished.clone(),
            stats: self.stats.clone(),
            concurrency: self.config.concurrency,
            observer: self.observer.clone(),
            fence: Some(Fence {
                slack: self
                    .config
                    .fence_slack
                    .min(self.queue.config().lease / 4)
                    .min(self.queue.config().window / STAMP_SLACK_PER_WINDOW),
                in_flight: self.client.config().timeout + self.config.reconcile_settle,
            }),
        };
        let jobs = Arc::new(JobContext {
            queue: self.queue.clone(),
            completions: Completions::start(self.queue.clone(), self.config.complete_batch),
            client: self.client.clone(),
            retry: self.config.retry,
            reconnect: self.config.reconnect,
            hard_stop: hard_stop.clone(),
            retrieve_page_size: self.config.retrieve_page_size,
            reconcile_settle: self.config.reconcile_settle,
            tenants: TenantCache::new(self.config.tenant_cache_ttl),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            observer: self.observer.clone(),
            finished,
            discovery: self.config.discovery_url.clone(),
            unreachable: self.config.unreachable,
            discovering: Default::default(),
            failing: Default::default(),
        });
        // Each job runs as its own task (so jobs use every core), owned by this tracker;
        // the runtime's permit is held until the task ends.
        let tracker = TaskTracker::new();
        let service = {
            let tracker = tracker.clone();
            tower::service_fn(move |task: Task<LeasedJob>| {
                // The join handle is the service's future: a job task that panicked (a bug)
                // is a service error, which apalis logs before going on; the job's lease
                // runs out and it is taken back.
                tracker.spawn(jobs.clone().run(task.args))
            })
        };
        tracing::info!(
            concurrency = self.config.concurrency,
            queue = %self.queue.config().name,
            "worker pool starting"
        );
        let worker = WorkerBuilder::new(self.config.name.as_str())
            .backend(QueueBackend::new(fetcher))
            .layer(tower::limit::ConcurrencyLimitLayer::new(
                self.config.concurrency,
            ))
            .build(service);
        let result = worker.run().await;
        tracker.close();
        tracker.wait().await;
        result?;
        if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(WorkerError::Store(e));
        }
        let summary = self.stats.summary();
        tracing::info!(?summary, "worker pool stopped");
        Ok(summary)
    }
}
