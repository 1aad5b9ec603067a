//! A [`Queue`] that passes every call through to another and notes what the worker pool
//! tells it: each call a tenant is given (a dispatch) and how each job ends (done, retry,
//! dead). The live display and each tenant's achieved rate come from here, the same way for
//! either backend, without a second source of truth: the queue still decides everything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::job::{JobId, JobResult, JobState, NewJob};
use crate::queue::{
    Dispatched, Fence, LeasedJob, Pushed, Queue, QueueConfig, QueueError, QueueStatus, Requeue,
};
use crate::tenant::Tenant;

/// The queue being watched and what has been seen of it.
pub struct WatchedQueue {
    inner: Arc<dyn Queue>,
    /// Call times are measured from here.
    started: Instant,
    tenants: Mutex<HashMap<String, TenantLog>>,
}

/// What has been seen of one tenant.
#[derive(Default)]
struct TenantLog {
    /// When each of its calls was handed out, since [`WatchedQueue::started`], in order.
    calls: Vec<Duration>,
    /// Index in `calls` of the last dispatch of a job's first attempt. Every job is enqueued
    /// before the pool starts and a tenant's list is served in order, so until that call the
    /// tenant had jobs waiting: its calls up to there were limited by its limit alone.
    last_first_attempt: Option<usize>,
    done: u64,
    dead: u64,
    retries: u64,
    rate_limited: u64,
    /// Jobs waiting for a retry now.
    scheduled: HashSet<JobId>,
}

/// One tenant as the live display shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantProgress {
    /// Jobs done.
    pub done: u64,
    /// Jobs dead.
    pub dead: u64,
    /// Jobs waiting for a retry now.
    pub retrying: u64,
    /// Retries scheduled so far.
    pub retries: u64,
    /// Rate-limit answers so far.
    pub rate_limited: u64,
    /// Calls handed out so far.
    pub calls: u64,
    /// Calls handed out in the last window.
    pub calls_in_window: u64,
}

/// A tenant's call times, for [`super::report::achieved_per_window`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallLog {
    /// When each call was handed out, since the watch began, in order.
    pub calls: Vec<Duration>,
    /// Index of the last call made while the tenant still had jobs waiting.
    pub busy_until: Option<usize>,
}

impl WatchedQueue {
    /// Watches `inner`; call times count from now.
    pub fn new(inner: Arc<dyn Queue>) -> Self {
        WatchedQueue {
            inner,
            started: Instant::now(),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TenantLog>> {
        // Counters for a display: a panic elsewhere while holding the lock leaves them
        // usable, so keep going rather than poison the worker's queue calls.
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, tenant: &str, f: impl FnOnce(&mut TenantLog)) {
        f(self.lock().entry(tenant.to_string()).or_default());
    }

    /// The progress of `tenant` now.
    pub fn progress(&self, tenant: &str) -> TenantProgress {
        let since = self.started.elapsed();
        let window = self.inner.config().window;
        let tenants = self.lock();
        let Some(log) = tenants.get(tenant) else {
            return TenantProgress::default();
        };
        let from = since.saturating_sub(window);
        // Calls in (now - window, now].
        let in_window = log.calls.len() - log.calls.partition_point(|t| *t <= from);
        TenantProgress {
            done: log.done,
            dead: log.dead,
            retrying: log.scheduled.len() as u64,
            retries: log.retries,
            rate_limited: log.rate_limited,
            calls: log.calls.len() as u64,
            calls_in_window: in_window as u64,
        }
    }

    /// Every tenant's call times.
    pub fn call_logs(&self) -> HashMap<String, CallLog> {
        self.lock()
            .iter()
            .map(|(name, log)| {
                let calls = CallLog {
                    calls: log.calls.clone(),
                    busy_until: log.last_first_attempt,
                };
                (name.clone(), calls)
            })
            .collect()
    }
}

#[async_trait]
impl Queue for WatchedQueue {
    fn config(&self) -> &QueueConfig {
        self.inner.config()
    }

    async fn put_tenants(&self, tenants: &[Tenant]) -> Result<(), QueueError> {
        self.inner.put_tenants(tenants).await
    }

    async fn tenant(&self, name: &str) -> Result<Option<Tenant>, QueueError> {
        self.inner.tenant(name).await
    }

    async fn tenant_names(&self) -> Result<Vec<String>, QueueError> {
        self.inner.tenant_names().await
    }

    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, QueueError> {
        self.inner.push(jobs).await
    }

    async fn dispatch_many(
        &self,
        max: usize,
        fence: Option<Fence>,
    ) -> Result<Dispatched, QueueError> {
        let dispatched = self.inner.dispatch_many(max, fence).await?;
        if let Dispatched::Jobs(jobs) = &dispatched {
            let at = self.started.elapsed();
            for job in jobs {
                let first_attempt = job.attempt == 1 && !job.outcome_unknown;
                self.note(&job.tenant, |log| {
                    log.calls.push(at);
                    if first_attempt {
                        log.last_first_attempt = Some(log.calls.len() - 1);
                    }
                    log.scheduled.remove(&job.id);
                });
            }
        }
        Ok(dispatched)
    }

    async fn wait_for_work(&self, max: Duration) {
        self.inner.wait_for_work(max).await
    }

    async fn heartbeat(&self, job: &LeasedJob) -> Result<bool, QueueError> {
        self.inner.heartbeat(job).await
    }

    async fn sending(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError> {
        self.inner.sending(job, in_flight).await
    }

    async fn answered(&self, job: &LeasedJob) -> Result<(), QueueError> {
        self.inner.answered(job).await
    }

    async fn complete(
        &self,
        job: &LeasedJob,
        webhook_id: &str,
        reconciled: bool,
    ) -> Result<(), QueueError> {
        self.inner.complete(job, webhook_id, reconciled).await?;
        self.note(&job.tenant, |log| log.done += 1);
        Ok(())
    }

    async fn retry_later(
        &self,
        job: &LeasedJob,
        delay: Duration,
        error: &str,
        outcome_unknown: bool,
    ) -> Result<(), QueueError> {
        self.inner
            .retry_later(job, delay, error, outcome_unknown)
            .await?;
        // Out of attempts, the queue buries the job instead; only then is it worth asking.
        let buried = job.attempt >= self.config().max_attempts
            && matches!(
                self.inner.job(&job.id).await,
                Ok(Some(JobResult {
                    status: JobState::Dead,
                    ..
                }))
            );
        self.note(&job.tenant, |log| {
            if buried {
                log.dead += 1;
            } else {
                log.retries += 1;
                log.scheduled.insert(job.id.clone());
            }
        });
        Ok(())
    }

    async fn rate_limited(
        &self,
        job: &LeasedJob,
        pause: Duration,
        limit: Option<u32>,
    ) -> Result<(), QueueError> {
        self.inner.rate_limited(job, pause, limit).await?;
        self.note(&job.tenant, |log| log.rate_limited += 1);
        Ok(())
    }

    async fn requeue(&self, job: &LeasedJob, how: Requeue) -> Result<(), QueueError> {
        self.inner.requeue(job, how).await
    }

    async fn bury(&self, job: &LeasedJob, reason: &str) -> Result<(), QueueError> {
        self.inner.bury(job, reason).await?;
        self.note(&job.tenant, |log| log.dead += 1);
        Ok(())
    }

    async fn status(&self) -> Result<QueueStatus, QueueError> {
        self.inner.status().await
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobResult>, QueueError> {
        self.inner.job(id).await
    }

    async fn results(&self, tenant: Option<&str>) -> Result<Vec<JobResult>, QueueError> {
        self.inner.results(tenant).await
    }

    async fn dead(&self) -> Result<Vec<JobResult>, QueueError> {
        self.inner.dead().await
    }

    async fn retry_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        self.inner.retry_dead(ids).await
    }

    async fn purge_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        self.inner.purge_dead(ids).await
    }

    async fn purge_done(&self, ids: &[JobId]) -> Result<u64, QueueError> {
        self.inner.purge_done(ids).await
    }

    async fn done_per_second(&self, seconds: u32) -> Result<Vec<u64>, QueueError> {
        self.inner.done_per_second(seconds).await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        self.inner.ping().await
    }

    async fn is_idle(&self) -> Result<bool, QueueError> {
        self.inner.is_idle().await
    }
}
