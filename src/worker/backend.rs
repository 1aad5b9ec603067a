//! The queue as an apalis backend: the worker runtime asks for the next job only when a
//! concurrency permit is free, and this backend answers with [`Queue::dispatch_many`].
//!
//! apalis-core 1.0 drives a backend from `CallAll::poll_next` (`src/worker/call_all.rs`) in
//! the order `backend.poll_ready`, `service.poll_ready` (where the concurrency limit takes
//! its permit), and only then `backend.poll_next`. So a dispatch happens only with a
//! permit in hand. One dispatch asks for as many jobs as the process has free permits
//! (`concurrency - held`, where held counts running and buffered jobs alike), so a process
//! never holds more jobs than it can run; the extra jobs wait in a buffer and go to the
//! runtime one per poll, each as soon as a permit is taken for it (at once, since they
//! were asked for free permits). One round trip then serves many jobs: one per job would
//! cap a process at about 1 / (round trip + script time).
//!
//! The fetch future is kept across polls and never dropped half-way: a dispatch that has
//! leased jobs in the store always delivers them, or hands them back when the worker is
//! stopping, and so are the buffered ones. Stopping is an end of stream followed by
//! `WorkerContext::stop`, because apalis-core's worker only finishes its shutdown phase
//! once the context says it is shutting down (`src/worker/stream.rs`,
//! `WorkerPhase::ShuttingDown`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::task_id::RandomId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tower::layer::util::Identity;

use super::backoff::{ReconnectPolicy, store_retry, with_retry};
use super::observer::JobObserver;
use super::stats::Stats;
use crate::queue::{Dispatched, Fence, LeasedJob, Queue, QueueError, Requeue};

/// Most jobs asked of one dispatch: one script call holds Redis for about 50 µs per job,
/// so 64 keep it to a few milliseconds while cutting round trips 64-fold.
const MAX_BATCH: usize = 64;

/// What the fetch loop needs; shared with the future that runs it.
pub(crate) struct Fetcher {
    /// The queue jobs come from.
    pub queue: Arc<dyn Queue>,
    /// Stage one of shutdown: no new dispatch once cancelled.
    pub stop: CancellationToken,
    /// End the stream once nothing is queued, scheduled or running anywhere.
    pub exit_when_idle: bool,
    /// Longest sleep when the queue is empty: how soon expired leases of dead workers are
    /// noticed and `--exit-when-idle` sees others' jobs finish.
    pub idle_poll: Duration,
    /// Backoff while the store is unreachable.
    pub reconnect: ReconnectPolicy,
    /// Signalled by this process when one of its jobs finishes (a retry may now be
    /// scheduled, or the queue may have become idle).
    pub local: Arc<Notify>,
    /// Counters; `held` is what limits a dispatch's size.
    pub stats: Arc<Stats>,
    /// Jobs this process runs at once (the runtime's concurrency limit).
    pub concurrency: usize,
    /// The fence dispatches put up for Creates (see [`Fence`]).
    pub fence: Option<Fence>,
    /// Told of every dispatch.
    pub observer: Option<Arc<dyn JobObserver>>,
    /// The error that stopped dispatching, if one did: the pool returns it.
    pub failed: Arc<std::sync::Mutex<Option<QueueError>>>,
}

/// The next jobs for the runtime (at least one), or the end of work.
enum Fetched {
    Jobs(Vec<LeasedJob>),
    End,
}

impl Fetcher {
    /// Dispatches until a job comes, sleeping on the queue's wakeups in between.
    async fn next(self: Arc<Self>) -> Fetched {
        loop {
            if self.stop.is_cancelled() {
                return Fetched::End;
            }
            // At least one: the runtime polls with a permit in hand, even in the moment
            // between a job's end (held is counted down) and its permit's return.
            let free = self
                .concurrency
                .saturating_sub(usize::try_from(self.stats.held()).unwrap_or(usize::MAX))
                .clamp(1, MAX_BATCH);
            let dispatched = with_retry(
                "dispatch",
                &self.reconnect,
                &self.stop,
                store_retry(&self.stats),
                || self.queue.dispatch_many(free, self.fence),
            )
            .await;
            let wait = match dispatched {
                None => return Fetched::End,
                Some(Ok(Dispatched::Jobs(jobs))) => {
                    for _ in &jobs {
                        self.stats.taken();
                    }
                    if let Some(observer) = &self.observer {
                        observer.dispatched(&jobs);
                    }
                    if self.stop.is_cancelled() {
                        self.hand_back_all(jobs).await;
                        return Fetched::End;
                    }
                    return Fetched::Jobs(jobs);
                }
                Some(Ok(Dispatched::Wait(d))) => d.min(self.idle_poll),
                Some(Ok(Dispatched::Empty)) => {
                    if self.exit_when_idle {
                        let idle = with_retry(
                            "is_idle",
                            &self.reconnect,
                            &self.stop,
                            store_retry(&self.stats),
                            || self.queue.is_idle(),
                        )
                        .await;
                        match idle {
                            None | Some(Ok(true)) => return Fetched::End,
                            Some(Ok(false)) => {}
                            Some(Err(e)) => tracing::warn!("idle check failed: {e}"),
                        }
                    }
                    self.idle_poll
                }
                Some(Err(e)) => {
                    // Not a store that is down or full (those were waited for): a script
                    // error, a key of the wrong type, data this version did not write.
                    // Trying again gives the same answer, so the pool stops and says why,
                    // once; running jobs still finish.
                    tracing::error!("dispatch failed: {e}; the worker stops");
                    *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return Fetched::End;
                }
            };
            let local = self.local.notified();
            tokio::select! {
                _ = self.stop.cancelled() => return Fetched::End,
                _ = self.queue.wait_for_work(wait) => {}
                _ = local => {}
            }
        }
    }

    /// Gives back jobs leased (and counted as held) but never started, at shutdown.
    async fn hand_back_all(&self, jobs: Vec<LeasedJob>) {
        futures::future::join_all(jobs.iter().map(|job| self.hand_back(job))).await;
    }

    /// Gives back a job leased just as the worker began to stop: the call was never made.
    async fn hand_back(&self, job: &LeasedJob) {
        let how = Requeue {
            spend_attempt: false,
            outcome_unknown: job.outcome_unknown,
        };
        // A fresh token: the stop token is already cancelled, and the hand-back matters.
        let never = CancellationToken::new();
        let handed = tokio::time::timeout(
            self.idle_poll.max(Duration::from_secs(5)),
            with_retry(
                "requeue",
                &self.reconnect,
                &never,
                store_retry(&self.stats),
                || self.queue.requeue(job, how),
            ),
        )
        .await;
        self.stats.released();
        match handed {
            Ok(Some(Ok(()))) => self.stats.handed_back(),
            // Its lease will run out and another worker will take it back.
            other => {
                tracing::warn!(job = %job.id, "could not hand back a job at shutdown: {other:?}")
            }
        }
    }
}

/// The apalis backend over a [`Queue`].
pub(crate) struct QueueBackend {
    fetcher: Arc<Fetcher>,
    /// The fetch in progress; kept across polls so that a dispatch is never abandoned.
    pending: Option<BoxFuture<'static, Fetched>>,
    /// Jobs dispatched but not yet given to the runtime. Never more than the free permits
    /// at the time of their dispatch (see the module header), so bounded by the
    /// concurrency.
    buffered: VecDeque<LeasedJob>,
}

impl QueueBackend {
    pub(crate) fn new(fetcher: Fetcher) -> Self {
        QueueBackend {
            fetcher: Arc::new(fetcher),
            pending: None,
            buffered: VecDeque::new(),
        }
    }

    /// Stopping: the buffered jobs go back to the queue, after whatever fetch is in flight
    /// (which hands back its own, since the stop token is cancelled by then).
    fn hand_back_buffered(&mut self) {
        if self.buffered.is_empty() {
            return;
        }
        let jobs: Vec<LeasedJob> = self.buffered.drain(..).collect();
        let before = self.pending.take();
        let fetcher = self.fetcher.clone();
        self.pending = Some(
            async move {
                if let Some(Fetched::Jobs(more)) = match before {
                    Some(fetch) => Some(fetch.await),
                    None => None,
                } {
                    fetcher.hand_back_all(more).await;
                }
                fetcher.hand_back_all(jobs).await;
                Fetched::End
            }
            .boxed(),
        );
    }
}

impl Backend for QueueBackend {
    type Task = Task<LeasedJob>;
    type Error = std::convert::Infallible;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        if self.fetcher.stop.is_cancelled() {
            self.hand_back_buffered();
        } else if let Some(job) = self.buffered.pop_front() {
            return Poll::Ready(Some(Ok(Task::new(job))));
        }
        let fetch = self
            .pending
            .get_or_insert_with(|| self.fetcher.clone().next().boxed());
        match fetch.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Fetched::Jobs(jobs)) => {
                self.pending = None;
                self.buffered.extend(jobs);
                match self.buffered.pop_front() {
                    Some(job) => Poll::Ready(Some(Ok(Task::new(job)))),
                    // Not produced by `Fetcher::next`; ask again.
                    None => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Poll::Ready(Fetched::End) => {
                self.pending = None;
                // Without this the runtime waits forever after the end of the stream.
                if let Err(e) = worker.stop() {
                    tracing::debug!("worker stop: {e}");
                }
                Poll::Ready(None)
            }
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        // A fetch still in flight finishes (handing back what it leased, since the stop
        // token is cancelled by then) before the backend reports closed; so do the
        // buffered jobs.
        self.hand_back_buffered();
        loop {
            let Some(fetch) = self.pending.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(fetch.poll_unpin(cx)) {
                Fetched::Jobs(jobs) => {
                    let fetcher = self.fetcher.clone();
                    self.pending = Some(
                        async move {
                            fetcher.hand_back_all(jobs).await;
                            Fetched::End
                        }
                        .boxed(),
                    );
                }
                Fetched::End => self.pending = None,
            }
        }
    }
}

impl BackendConfig for QueueBackend {
    type Args = LeasedJob;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}
