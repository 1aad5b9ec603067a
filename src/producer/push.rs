//! Enqueueing checked jobs: the [`Producer`] handle, its chunked bulk push, and what it
//! does when the store cannot take them.
//!
//! A push that meets an unavailable store (a restart, a failover) is retried with
//! [`crate::retry`]'s backoff for up to [`PUSH_RETRY_FOR`], then given up
//! ([`ProducerError::GaveUp`]). That is safe because a push is idempotent: a retry of a
//! push whose answer was lost finds its jobs already enqueued (counted as duplicates), never
//! enqueues them twice. A full store is not waited for: nothing a producer does frees
//! memory, so it stops at once ([`ProducerError::OutOfMemory`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::JobRequest;
use super::check::validate_within;
use crate::job::{JobId, NewJob};
use crate::leadsquared::{BodyLimits, CreateWebhook, FieldError};
use crate::queue::{Pushed, Queue, QueueError, StoreMemory};
use crate::retry::{ReconnectPolicy, unavailable_only, with_retry};

/// Jobs per [`Queue::push`] call from a [`Producer`]: one progress step, and a bound on how
/// much one call holds in flight.
pub const PUSH_CHUNK: usize = 10_000;

/// How long a [`Producer`] retries a push while the store is unavailable (a restart, a
/// failover) before it gives up: 60 s, waiting between tries as the worker does
/// ([`ReconnectPolicy`]: full jitter, 50 ms doubling to 5 s).
pub const PUSH_RETRY_FOR: Duration = Duration::from_secs(60);

/// How a batch of pushes went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Newly enqueued.
    pub enqueued: u64,
    /// Already enqueued earlier under the same key.
    pub duplicate: u64,
}

/// Why a [`Producer`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// A job is invalid; nothing was enqueued. Each entry: the job's index in the request
    /// and its problems.
    #[error("{} invalid job(s); nothing enqueued: {}", .0.len(), describe(.0))]
    Invalid(Vec<(usize, Vec<FieldError>)>),
    /// A job names a tenant that is not registered; nothing was enqueued.
    #[error("unknown tenant {0:?}; import it with `lsq-webhooks tenants import`")]
    UnknownTenant(String),
    /// The store stayed unavailable: no new try starts later than [`PUSH_RETRY_FOR`] after
    /// the first (the last may take a few seconds more); `last` is its last answer. Try
    /// again later: pushing the same jobs again is safe.
    #[error("gave up after retrying for {} s: {last}", .after.as_secs())]
    GaveUp {
        /// How long it tried, from the first try to the last failure.
        after: Duration,
        /// The last failure.
        last: QueueError,
    },
    /// The store is full and refuses writes (not retried: waiting does not free memory).
    /// Free memory or raise its limit, then push again: the jobs already in are duplicates.
    #[error("{}", out_of_memory(.memory))]
    OutOfMemory {
        /// The store's limit and policy, when they could be read.
        memory: Option<StoreMemory>,
    },
    /// [`Producer::push_validated`] stopped part-way: the jobs of the chunks before the
    /// failure were pushed (`done`), and up to `unsure` more, of the chunk it was pushing,
    /// may be in too. Pushing all the jobs again is safe: those already in are duplicates.
    #[error("{error} ({} enqueued and {} duplicate before that)", .done.enqueued, .done.duplicate)]
    Interrupted {
        /// Pushed before the failing chunk.
        done: PushSummary,
        /// Jobs of the failing chunk, some of which may have been enqueued.
        unsure: usize,
        /// What stopped it.
        error: Box<ProducerError>,
    },
    /// The queue failed in a way a retry does not fix (see [`QueueError`]).
    #[error(transparent)]
    Queue(QueueError),
}

/// The store's own message for a full store.
fn out_of_memory(memory: &Option<StoreMemory>) -> String {
    QueueError::OutOfMemory {
        memory: memory.clone(),
    }
    .to_string()
}

fn describe(invalid: &[(usize, Vec<FieldError>)]) -> String {
    invalid
        .iter()
        .flat_map(|(i, errors)| errors.iter().map(move |e| format!("job {i}: {e}")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<QueueError> for ProducerError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::UnknownTenant(t) => ProducerError::UnknownTenant(t),
            QueueError::OutOfMemory { memory } => ProducerError::OutOfMemory { memory },
            other => ProducerError::Queue(other),
        }
    }
}

/// A Rust service's handle for enqueueing jobs. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    /// Where jobs go.
    queue: Arc<dyn Queue>,
    /// How large each part of a job's body may be ([`Producer::with_limits`]).
    limits: BodyLimits,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.queue.config().name)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Producer {
    /// A producer for `queue`.
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Producer {
            queue,
            limits: BodyLimits::default(),
        }
    }

    /// The same producer, checking every job's body against `limits` instead of the
    /// defaults ([`BodyLimits::default`]).
    pub fn with_limits(mut self, limits: BodyLimits) -> Self {
        self.limits = limits;
        self
    }

    /// A producer for the Redis queue `queue_name` (the workers' `--queue`, `lsq` by
    /// default) at `redis_url`, in one line, in the queue's shards (its count as written, else
    /// the default: see `--shards`). Must be called within a tokio runtime.
    pub async fn connect(redis_url: &str, queue_name: &str) -> Result<Self, ProducerError> {
        let queue = crate::queue::sharded::ShardedQueue::connect(
            redis_url,
            crate::queue::QueueConfig {
                name: queue_name.to_string(),
                ..crate::queue::QueueConfig::default()
            },
            crate::queue::redis::RedisOptions::default(),
            None,
        )
        .await?;
        Ok(Producer::new(Arc::new(queue)))
    }

    /// Validates and enqueues one typed webhook for `tenant`, with an idempotency key (or
    /// one derived from the tenant, event and description). The body is checked by the same rules as
    /// the JSON entry point ([`Producer::enqueue`]): a `CreateWebhook` built by hand is
    /// validated too.
    pub async fn create_webhook(
        &self,
        tenant: &str,
        webhook: &CreateWebhook,
        key: Option<&str>,
    ) -> Result<Pushed, ProducerError> {
        self.enqueue(&JobRequest {
            delete: false,
            tenant: tenant.to_string(),
            webhook: webhook.to_value(),
            key: key.map(str::to_string),
        })
        .await
    }

    /// Enqueues the delete of the webhook `key` names in `tenant` (issue 18): done once
    /// LeadSquared has no such webhook any more; a duplicate when it is deleted already.
    pub async fn delete_webhook(&self, tenant: &str, key: &str) -> Result<Pushed, ProducerError> {
        self.enqueue(&JobRequest {
            tenant: tenant.to_string(),
            webhook: serde_json::Value::Null,
            key: Some(key.to_string()),
            delete: true,
        })
        .await
    }

    /// [`Producer::create_webhook`] for many at once (tenant, webhook, key), all or
    /// nothing, one result per job in order.
    pub async fn create_webhooks(
        &self,
        jobs: &[(&str, &CreateWebhook, Option<&str>)],
    ) -> Result<Vec<Pushed>, ProducerError> {
        let requests: Vec<JobRequest> = jobs
            .iter()
            .map(|(tenant, webhook, key)| JobRequest {
                delete: false,
                tenant: (*tenant).to_string(),
                webhook: webhook.to_value(),
                key: key.map(str::to_string),
            })
            .collect();
        self.enqueue_many(&requests).await
    }

    /// Validates and enqueues one job: its id, and whether it was new or a duplicate.
    pub async fn enqueue(&self, request: &JobRequest) -> Result<Pushed, ProducerError> {
        let mut pushed = self.enqueue_many(std::slice::from_ref(request)).await?;
        pushed.pop().ok_or_else(|| {
            ProducerError::Queue(QueueError::Corrupt {
                key: "push".into(),
                reason: "no answer for the job".into(),
            })
        })
    }

    /// Validates every job, then enqueues them all (in order): one result per job. If any
    /// job is invalid or names an unknown tenant, nothing is enqueued.
    pub async fn enqueue_many(
        &self,
        requests: &[JobRequest],
    ) -> Result<Vec<Pushed>, ProducerError> {
        let mut jobs = Vec::with_capacity(requests.len());
        let mut invalid = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            match validate_within(request, &self.limits) {
                Ok(job) => jobs.push(job),
                Err(errors) => invalid.push((i, errors)),
            }
        }
        if !invalid.is_empty() {
            return Err(ProducerError::Invalid(invalid));
        }
        // The queue refuses unknown tenants before writing anything.
        self.push(&jobs).await
    }

    /// One push, retried while the store is unavailable, for up to [`PUSH_RETRY_FOR`] (see
    /// the module header).
    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, ProducerError> {
        // Never cancelled: the callback ends the retries after `PUSH_RETRY_FOR`. The failures
        // are logged; a producer keeps no counters of its own.
        let never = CancellationToken::new();
        let mut gave_up = None;
        let pushed = with_retry(
            "push",
            &ReconnectPolicy::default(),
            &never,
            |e, f| {
                if f.elapsed + f.wait > PUSH_RETRY_FOR && e.is_unavailable() {
                    gave_up = Some(f.elapsed);
                    return false;
                }
                unavailable_only(e, f)
            },
            || self.queue.push(jobs),
        )
        .await;
        match (pushed, gave_up) {
            (Some(Ok(pushed)), _) => Ok(pushed),
            (Some(Err(last)), Some(after)) => Err(ProducerError::GaveUp { after, last }),
            (Some(Err(e)), None) => Err(e.into()),
            // Not reached: the token is never cancelled.
            (None, _) => Err(ProducerError::GaveUp {
                after: PUSH_RETRY_FOR,
                last: QueueError::Unavailable("retries stopped".into()),
            }),
        }
    }

    /// Enqueues jobs already validated (by [`super::read_jobs`] or [`validate`]), in chunks
    /// of [`PUSH_CHUNK`], calling `progress` with the number of jobs done after each. The
    /// jobs are pushed grouped by tenant (each tenant's in their order; Redis then touches
    /// few tenant lists per batch); the ids come back in input order. A failure after the
    /// store failure is [`ProducerError::Interrupted`], saying how far it got.
    pub async fn push_validated(
        &self,
        jobs: Vec<NewJob>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<(PushSummary, Vec<JobId>), ProducerError> {
        let mut indexed: Vec<(usize, NewJob)> = jobs.into_iter().enumerate().collect();
        // Stable: the first of two jobs with the same key stays first.
        indexed.sort_by(|a, b| a.1.tenant.cmp(&b.1.tenant));
        let (order, grouped): (Vec<usize>, Vec<NewJob>) = indexed.into_iter().unzip();
        let mut summary = PushSummary::default();
        let mut ids = vec![JobId(String::new()); grouped.len()];
        for (chunk, positions) in grouped.chunks(PUSH_CHUNK).zip(order.chunks(PUSH_CHUNK)) {
            let pushed = match self.push(chunk).await {
                Ok(pushed) => pushed,
                // Tenants are checked before anything is written: nothing was.
                Err(e @ ProducerError::UnknownTenant(_)) if summary == PushSummary::default() => {
                    return Err(e);
                }
                Err(e) => {
                    return Err(ProducerError::Interrupted {
                        done: summary,
                        unsure: chunk.len(),
                        error: Box::new(e),
                    });
                }
            };
            for (pushed, &i) in pushed.into_iter().zip(positions) {
                ids[i] = match pushed {
                    Pushed::Enqueued { job } => {
                        summary.enqueued += 1;
                        job
                    }
                    Pushed::Duplicate { job } => {
                        summary.duplicate += 1;
                        job
                    }
                };
            }
            progress(chunk.len());
        }
        Ok((summary, ids))
    }
}
