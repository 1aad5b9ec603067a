//! What the demo sees of the worker pool, told by the pool itself ([`JobObserver`]): each
//! call a tenant is given (a dispatch) and how each job ends (done, retry, dead). The live
//! display and each tenant's achieved rate come from here, the same way for either backend,
//! without a second source of truth: the queue still decides everything, and the pool
//! tells the watch what the queue answered.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::job::JobId;
use crate::queue::{LeasedJob, QueueConfig};
use crate::worker::{AttemptOutcome, JobObserver};

/// What has been seen of the pool's jobs, per tenant.
pub struct Watch {
    /// Call times are measured from here.
    started: Instant,
    /// The queue's rate-limit window: `calls_in_window` counts over it.
    window: Duration,
    /// The queue's attempts per job: a retry asked on the last one buries the job.
    max_attempts: u32,
    tenants: Mutex<HashMap<String, TenantLog>>,
}

/// What has been seen of one tenant.
#[derive(Default)]
struct TenantLog {
    /// When each of its calls was handed out, since [`Watch::started`], in order.
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
    /// Each running job's dispatch time, to take back the call of a job handed back
    /// without one (`AttemptOutcome::Unsent`).
    running: HashMap<JobId, Duration>,
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

impl Watch {
    /// A watch of a pool over a queue with this configuration; call times count from now.
    pub fn new(config: &QueueConfig) -> Self {
        Watch {
            started: Instant::now(),
            window: config.window,
            max_attempts: config.max_attempts,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TenantLog>> {
        // Counters for a display: a panic elsewhere while holding the lock leaves them
        // usable, so keep going rather than poison the pool's tasks that report here.
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note(&self, tenant: &str, f: impl FnOnce(&mut TenantLog)) {
        f(self.lock().entry(tenant.to_string()).or_default());
    }

    /// The progress of `tenant` now.
    pub fn progress(&self, tenant: &str) -> TenantProgress {
        let since = self.started.elapsed();
        let window = self.window;
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

impl JobObserver for Watch {
    fn dispatched(&self, jobs: &[LeasedJob]) {
        let at = self.started.elapsed();
        for job in jobs {
            let first_attempt = job.attempt == 1 && !job.outcome_unknown;
            self.note(&job.tenant, |log| {
                log.calls.push(at);
                if first_attempt {
                    log.last_first_attempt = Some(log.calls.len() - 1);
                }
                log.scheduled.remove(&job.id);
                log.running.insert(job.id.clone(), at);
            });
        }
    }

    fn finished(&self, job: &LeasedJob, outcome: &AttemptOutcome) {
        // Out of attempts, the queue buries a job it was asked to retry (`Queue::retry_later`).
        let buried_by_retry = job.attempt >= self.max_attempts;
        self.note(&job.tenant, |log| {
            let dispatched_at = log.running.remove(&job.id);
            log.finished(job, outcome, buried_by_retry, dispatched_at);
        });
    }
}

impl TenantLog {
    /// Counts how a job's attempt ended.
    fn finished(
        &mut self,
        job: &LeasedJob,
        outcome: &AttemptOutcome,
        buried_by_retry: bool,
        dispatched_at: Option<Duration>,
    ) {
        let log = self;
        match outcome {
            AttemptOutcome::Done { .. } => log.done += 1,
            AttemptOutcome::Retried if buried_by_retry => log.dead += 1,
            AttemptOutcome::Retried => {
                log.retries += 1;
                log.scheduled.insert(job.id.clone());
            }
            AttemptOutcome::RateLimited => log.rate_limited += 1,
            AttemptOutcome::Buried(_) => log.dead += 1,
            // Back in the queue (to be dispatched, and noted, again) or not recorded at all.
            AttemptOutcome::NotFound
            | AttemptOutcome::HandedBack
            | AttemptOutcome::Rediscovered
            | AttemptOutcome::Parked
            | AttemptOutcome::HostUnreachable
            | AttemptOutcome::LeaseLost
            | AttemptOutcome::Abandoned => {}
            // No call was made: its dispatch is not a call of the tenant's.
            AttemptOutcome::Unsent => {
                if let Some(i) =
                    dispatched_at.and_then(|at| log.calls.iter().rposition(|c| *c == at))
                {
                    log.calls.remove(i);
                    log.last_first_attempt = match log.last_first_attempt {
                        Some(l) if l >= i => l.checked_sub(1),
                        other => other,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(id: &str, tenant: &str, attempt: u32) -> LeasedJob {
        LeasedJob {
            id: JobId(id.into()),
            tenant: tenant.into(),
            key: id.into(),
            body: "{}".into(),
            attempt,
            outcome_unknown: false,
            lease: "l".into(),
            dispatched_at_ms: 0,
            fenced_until: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_are_counted_per_tenant_and_a_last_retry_is_a_death() {
        let config = QueueConfig {
            max_attempts: 2,
            window: Duration::from_secs(5),
            ..QueueConfig::default()
        };
        let watch = Watch::new(&config);
        let (a1, a2, b1) = (
            leased("a1", "a", 1),
            leased("a2", "a", 1),
            leased("b1", "b", 1),
        );
        watch.dispatched(&[a1.clone(), a2.clone(), b1.clone()]);
        watch.finished(&a1, &AttemptOutcome::Retried);
        watch.finished(&a2, &AttemptOutcome::RateLimited);
        watch.finished(&b1, &AttemptOutcome::Buried("refused".into()));
        let a = watch.progress("a");
        assert_eq!(
            (a.calls, a.retrying, a.retries, a.rate_limited),
            (2, 1, 1, 1)
        );
        assert_eq!(watch.progress("b").dead, 1);

        tokio::time::advance(Duration::from_secs(6)).await;
        // The retry's second and last attempt fails again: the queue buries it.
        let a1_again = leased("a1", "a", 2);
        watch.dispatched(std::slice::from_ref(&a1_again));
        watch.finished(&a1_again, &AttemptOutcome::Retried);
        let a2_again = leased("a2", "a", 1);
        watch.dispatched(std::slice::from_ref(&a2_again));
        watch.finished(
            &a2_again,
            &AttemptOutcome::Done {
                webhook_id: "w".into(),
                reconciled: false,
                outcome: crate::job::Outcome::Created,
            },
        );
        let a = watch.progress("a");
        assert_eq!((a.calls, a.calls_in_window), (4, 2));
        assert_eq!((a.done, a.dead, a.retrying, a.retries), (1, 1, 0, 1));
        // Calls up to the last first attempt count as busy (a1's retry was not one).
        let logs = watch.call_logs();
        assert_eq!(logs["a"].busy_until, Some(3));
        assert_eq!(
            logs["a"].calls,
            [0, 0, 6, 6].map(Duration::from_secs).to_vec()
        );
    }
}
