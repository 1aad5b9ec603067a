//! One job, from its dispatch to its record in the queue: resolve the tenant, decode the
//! body, reconcile if an earlier attempt may have created the webhook, call Create (or, for
//! a revision of a webhook, Update or Delete: `job::Operation`) while heartbeating the
//! lease, and act on the classified answer.
//!
//! Update and Delete are idempotent, so an attempt whose answer was lost just calls again.
//! An Update whose Id LeadSquared no longer knows looks for the webhook by its description
//! and event (Retrieve) and updates that one, or creates it if there is none; each of those
//! further calls is spent in the tenant's window first (`Queue::take_call`). "Not found" on
//! a Delete is done.
//!
//! A job's trouble (a body that does not decode, an unknown tenant, LeadSquared's refusal)
//! is recorded against the job and the worker goes on. Only the store being unavailable or
//! full is retried here, with backoff, until it answers or the hard-stop deadline passes; a job
//! whose result cannot be written then is not lost: its lease runs out and another dispatch
//! takes it back as "outcome unknown", to be reconciled.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::backoff::{ReconnectPolicy, RetryPolicy, store_retry, with_retry};
use super::completions::Completions;
use super::observer::JobObserver;
use super::stats::Stats;
use crate::job::{Operation, Outcome};
use crate::leadsquared::{Applied, CallError, Client, CreateWebhook, WebhookId};
use crate::ops::metrics::{CallOutcome, JobOutcome as Counted, Metrics};
use crate::queue::{HoldKind, LeasedJob, NewHold, Queue, QueueError, Requeue, UnreachablePolicy};
use crate::tenant::Tenant;

/// The reason a tenant whose keys LeadSquared refuses is held with.
pub const KEYS_REFUSED: &str = "keys refused by LeadSquared (401)";

/// Everything a job needs, shared by all jobs of a pool.
pub(crate) struct JobContext {
    pub queue: Arc<dyn Queue>,
    /// Where successes are recorded, in batches per process.
    pub completions: Completions,
    pub client: Client,
    pub retry: RetryPolicy,
    pub reconnect: ReconnectPolicy,
    /// Stage two of shutdown: calls still running are abandoned and their jobs handed back.
    pub hard_stop: CancellationToken,
    /// Page size of the one Retrieve call a reconcile makes.
    pub retrieve_page_size: u32,
    /// See [`super::WorkerConfig::reconcile_settle`].
    pub reconcile_settle: Duration,
    pub tenants: TenantCache,
    pub stats: Arc<Stats>,
    /// Prometheus counters: each job's outcome, each call's latency.
    pub metrics: Metrics,
    /// Told of each job's outcome.
    pub observer: Option<Arc<dyn JobObserver>>,
    /// Told when a job finishes, so the fetch loop looks again (see `backend`).
    pub finished: Arc<Notify>,
    /// Where hosts are discovered (`--discovery-url`).
    pub discovery: url::Url,
    /// How unreachable-host failures turn into tenant holds (the jitter is drawn per call).
    pub unreachable: UnreachablePolicy,
    /// One discovery at a time per tenant in this process: jobs that met the same 401 (or
    /// the same unknown host) wait for it instead of each asking LeadSquared.
    pub discovering: Discovering,
    /// Tenants whose host failure this process counted since it last heard their host answer.
    pub failing: FailingHosts,
}

/// The tenants this process counted a host failure for (`Queue::host_failed`), so that the
/// next answer from such a host starts its streak over (`Queue::host_answered`) at the cost
/// of one store call per failure episode, not one per call; and the tenants whose host this
/// process has heard answer, so that a first answer that is not a success (which
/// `Queue::complete_many` records itself) still tells the queue once that the host answers:
/// until then a slow-started tenant has one call in flight (`QueueConfig::slow_start`).
#[derive(Default)]
pub(crate) struct FailingHosts(Mutex<Hosts>);

#[derive(Default)]
struct Hosts {
    failing: HashSet<String>,
    heard: HashSet<String>,
}

impl FailingHosts {
    fn failed(&self, tenant: &str) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.failing.contains(tenant) {
            set.failing.insert(tenant.to_string());
        }
    }

    /// Whether the queue should be told that the tenant's host answered: it was marked
    /// failing (and is not any more), or, for an answer that is not a success, this process
    /// had not heard it answer before.
    fn answered(&self, tenant: &str, success: bool) -> bool {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let was_failing = set.failing.remove(tenant);
        let first = !success && !set.heard.contains(tenant);
        if first {
            set.heard.insert(tenant.to_string());
        }
        was_failing || first
    }
}

/// Per-tenant locks for discovery (see [`JobContext::discovering`]).
#[derive(Default)]
pub(crate) struct Discovering {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Discovering {
    fn lock_for(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(tenant.to_string()).or_default().clone()
    }
}

/// Why a job asks `UserByAccessKey.Get`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Discovery {
    /// The tenant's host is not known: the dispatch's call is used for the discovery.
    NoHost,
    /// Create or Retrieve answered 401: one more call, spent in the window first.
    Refused,
}

/// Tenants read from the registry, kept briefly: every job needs its tenant, and the
/// registry changes rarely (an import). A learned lower limit is the queue's business, not
/// the cache's, so staleness costs nothing but a few seconds before new keys are used.
pub(crate) struct TenantCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<Tenant>)>>,
}

impl TenantCache {
    pub fn new(ttl: Duration) -> Self {
        TenantCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, name: &str) -> Option<Arc<Tenant>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(name)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, t)| t.clone())
    }

    pub(crate) fn put(&self, tenant: Tenant) -> Arc<Tenant> {
        let tenant = Arc::new(tenant);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(tenant.name.clone(), (Instant::now(), tenant.clone()));
        tenant
    }
}

/// How one attempt at a job ended in this worker: what it did with the job it leased (for
/// tests, logs and a [`super::JobObserver`]; counts go to [`Stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// Done with this webhook Id.
    Done {
        /// The Id recorded.
        webhook_id: String,
        /// Found by Retrieve rather than created.
        reconciled: bool,
        /// What the job did.
        outcome: Outcome,
    },
    /// Retrieve found nothing: back at the front of its list, to be created.
    NotFound,
    /// Scheduled for a retry (or buried by the queue, out of attempts).
    Retried,
    /// LeadSquared said "rate limited": back at the front, tenant paused.
    RateLimited,
    /// Dead-lettered with this reason.
    Buried(String),
    /// The tenant's host was discovered (or changed): back at the front, no attempt spent.
    Rediscovered,
    /// The tenant is held (keys refused, paused): back at the front, no attempt spent.
    Parked,
    /// The tenant's host did not answer: back at the front, no attempt spent (the tenant
    /// may be held after a few in a row).
    HostUnreachable,
    /// Back at the front without any call made, its call taken out of the window again
    /// (`Queue::unsent`): another job of its tenant discovered the host, or found it held,
    /// meanwhile.
    Unsent,
    /// Handed back to the queue at shutdown.
    HandedBack,
    /// The lease was lost; another worker owns the job now.
    LeaseLost,
    /// The store did not answer before the hard stop; the lease will run out.
    Abandoned,
}

impl AttemptOutcome {
    /// The outcome as `lsq_jobs_total` counts it.
    fn counted(&self) -> Counted {
        match self {
            AttemptOutcome::Done {
                reconciled: false, ..
            } => Counted::Done,
            AttemptOutcome::Done {
                reconciled: true, ..
            } => Counted::Reconciled,
            AttemptOutcome::Retried => Counted::Retried,
            AttemptOutcome::RateLimited => Counted::RateLimited,
            AttemptOutcome::NotFound
            | AttemptOutcome::HandedBack
            | AttemptOutcome::Rediscovered
            | AttemptOutcome::Parked
            | AttemptOutcome::HostUnreachable
            | AttemptOutcome::Unsent => Counted::Requeued,
            AttemptOutcome::Buried(_) => Counted::Dead,
            AttemptOutcome::LeaseLost | AttemptOutcome::Abandoned => Counted::Lost,
        }
    }
}

/// The answer of the one call a dispatch makes (or, for an Update whose Id is gone, of the
/// last of its calls).
enum Answer {
    Created(String),
    Found(Option<String>),
    /// An Update or Delete did this to the webhook with this Id (a Delete that found
    /// nothing: [`Outcome::NotFound`]).
    Changed(String, Outcome),
    Failed(CallError),
}

impl JobContext {
    /// Runs one job to its recorded outcome, inside a span naming the job, tenant and
    /// attempt (never a key or a header value).
    pub async fn run(self: Arc<Self>, job: LeasedJob) -> AttemptOutcome {
        let span = tracing::info_span!(
            "job",
            job = %job.id,
            tenant = %job.tenant,
            attempt = job.attempt,
            reconcile = job.outcome_unknown,
        );
        let outcome = self.clone().run_inner(&job).instrument(span.clone()).await;
        span.in_scope(|| tracing::debug!(?outcome, "job finished"));
        self.metrics.job_finished(outcome.counted());
        if let AttemptOutcome::Done { outcome: done, .. } = &outcome {
            self.metrics.webhook_changed(*done);
        }
        if let Some(observer) = &self.observer {
            observer.finished(&job, &outcome);
        }
        self.stats.released();
        self.finished.notify_one();
        outcome
    }

    async fn run_inner(self: Arc<Self>, job: &LeasedJob) -> AttemptOutcome {
        let tenant = match self.tenant(&job.tenant).await {
            Some(Ok(Some(t))) => t,
            Some(Ok(None)) => {
                let reason = format!("tenant {:?} is not in the registry", job.tenant);
                return self.bury(job, reason).await;
            }
            Some(Err(e)) => {
                let reason = format!("cannot read tenant {:?}: {e}", job.tenant);
                return self.bury(job, reason).await;
            }
            None => return self.hand_back(job, false).await,
        };
        if tenant.api_base.is_none() {
            return self.discover(job, &tenant, Discovery::NoHost).await;
        }
        let (operation, stored) = Operation::split(&job.body);
        let body = match (&operation, decode(stored)) {
            // A delete needs no body (it has none).
            (Operation::Delete(_), _) => None,
            (_, Ok(b)) => Some(b),
            (_, Err(reason)) => return self.bury(job, reason).await,
        };
        let body = match (operation, body) {
            (Operation::Create, Some(body)) => body,
            (operation, body) => return self.revise(job, &tenant, operation, body).await,
        };
        let reconcile = job.outcome_unknown;
        // The fence: only a worker that still holds the lease sends Create, and the queue
        // learns until when the call may land, in case this worker dies during it. The
        // dispatch put it up already for a Create sent within its slack (`queue::Fence`);
        // the clock is read here, just before the call starts (and with it the client's
        // timeout). Strictly before: a zero slack always takes the round trip.
        let fenced = job.fenced_until.is_some_and(|until| Instant::now() < until);
        if !reconcile && !fenced {
            self.stats.fences();
            let in_flight = self.client.config().timeout + self.reconcile_settle;
            match self
                .store("sending", || self.queue.sending(job, in_flight))
                .await
            {
                Some(Ok(true)) => {}
                Some(Ok(false)) => {
                    tracing::warn!("lease lost before Create was sent; not sending it");
                    self.stats.lease_lost();
                    return AttemptOutcome::LeaseLost;
                }
                Some(Err(e)) => {
                    tracing::error!("could not fence the call: {e}; the lease will run out");
                    return AttemptOutcome::Abandoned;
                }
                None => return self.hand_back(job, false).await,
            }
        }
        let call = async {
            if reconcile {
                let page = self
                    .client
                    .retrieve(&tenant, &body.description, 1, self.retrieve_page_size)
                    .await;
                match page {
                    Ok(p) => Answer::Found(
                        p.webhooks
                            .into_iter()
                            .find(|w| w.matches(&body))
                            .map(|w| w.webhook_id.0),
                    ),
                    Err(e) => Answer::Failed(e),
                }
            } else {
                match self.client.create(&tenant, &body).await {
                    Ok(id) => Answer::Created(id.0),
                    Err(e) => Answer::Failed(e),
                }
            }
        };
        let call_name = if reconcile { "retrieve" } else { "create" };
        self.call_and_record(job, &tenant, call_name, call).await
    }

    /// Makes the call under the job's heartbeat and records its answer. A lease lost
    /// mid-call drops it; a hard stop hands the job back.
    async fn call_and_record(
        &self,
        job: &LeasedJob,
        tenant: &Tenant,
        call_name: &str,
        call: impl Future<Output = Answer>,
    ) -> AttemptOutcome {
        self.stats.calls();
        let sent_at = std::time::SystemTime::now();
        let started = Instant::now();
        let answer = tokio::select! {
            a = self.heartbeating(job, call) => match a {
                Some(a) => a,
                None => {
                    // Another worker owns the job now and nothing this one learns can be
                    // recorded: drop the call (if it has not gone out yet, it never will).
                    // The fence told the queue how long a sent Create may still land, and the
                    // next holder waits that long before it reconciles.
                    let _ = self.store("answered", || self.queue.answered(job)).await;
                    self.stats.lease_lost();
                    return AttemptOutcome::LeaseLost;
                }
            },
            _ = self.hard_stop.cancelled() => {
                // The call may have reached LeadSquared: the hand-back re-stamps it in the
                // window (as every finishing call does) and the next dispatch reconciles.
                return self.hand_back(job, true).await;
            }
        };
        self.recorded(job, tenant, call_name, answer, sent_at, started)
            .await
    }

    /// Records an answer and adds the call to the job's history.
    async fn recorded(
        &self,
        job: &LeasedJob,
        tenant: &Tenant,
        call_name: &str,
        answer: Answer,
        sent_at: std::time::SystemTime,
        started: Instant,
    ) -> AttemptOutcome {
        let outcome = call_outcome(match &answer {
            Answer::Failed(e) => Some(e),
            Answer::Created(_) | Answer::Found(_) | Answer::Changed(..) => None,
        });
        let answered = Instant::now();
        let took = answered - started;
        self.metrics.call_observed(took, outcome);
        let attempt = attempt_of(call_name, &answer, sent_at, took);
        // A success carries its history entry into its batch (`completions`).
        let batched = matches!(
            answer,
            Answer::Created(_) | Answer::Found(Some(_)) | Answer::Changed(..)
        );
        // A 401 is no news that the host serves these keys: the tenant stays slow-started
        // (one call in flight) until discovery settles what the 401 meant.
        let refused = matches!(answer, Answer::Failed(CallError::Refused { .. }));
        if host_answered(&answer)
            && !refused
            && self.failing.answered(&job.tenant, batched)
            && let Some(Err(e)) = self
                .store("host_answered", || self.queue.host_answered(&job.tenant))
                .await
        {
            tracing::warn!("could not record that the host answered: {e}");
        }
        // Recording the answer also re-stamps the call at this moment (`Queue::answered`);
        // the history is written after it, so it never delays that stamp. The history is for
        // people: a store that cannot take it now is logged, not retried.
        let recorded = match answer {
            Answer::Failed(CallError::Refused { .. }) => {
                // A question about the tenant: wrong region, or keys refused? The call stays
                // in flight until the question is settled (its lease ends with the job's
                // hand-back, which re-stamps it), so a slow-started tenant gets no other
                // call, in any process, while this one asks.
                self.discover(job, tenant, Discovery::Refused).await
            }
            Answer::Failed(CallError::Unreachable { reason }) => {
                self.unreachable(job, &reason).await
            }
            answer => self.record(job, answer, &attempt, answered).await,
        };
        if !batched && let Err(e) = self.queue.note_attempt(&job.id, &attempt).await {
            tracing::warn!("could not add the call to the job's history: {e}");
        }
        recorded
    }

    /// A revision of a webhook: Update (`body` is the new one) or Delete, heartbeating the
    /// lease; an attempt whose answer was lost calls again (both are idempotent).
    async fn revise(
        &self,
        job: &LeasedJob,
        tenant: &Tenant,
        operation: Operation,
        body: Option<CreateWebhook>,
    ) -> AttemptOutcome {
        let (call_name, call) = match (&operation, &body) {
            (Operation::Update(id), Some(body)) => ("update", self.update(job, tenant, id, body)),
            (Operation::Delete(id), _) => ("delete", self.delete(tenant, id)),
            // Create and a bodiless update are not revisions (`run_inner` decodes first).
            _ => {
                return self
                    .bury(job, "job body does not decode: no webhook body".into())
                    .await;
            }
        };
        self.call_and_record(job, tenant, call_name, call).await
    }

    /// A Delete of the webhook `id` ("not found" is done; a job with no Id has nothing to
    /// delete and makes no call). Boxed, as `update` is, so that `revise`
    /// runs either under one heartbeat.
    fn delete<'a>(
        &'a self,
        tenant: &'a Tenant,
        id: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
        Box::pin(async move {
            if id.is_empty() {
                return Answer::Changed(String::new(), Outcome::NotFound);
            }
            match self.client.delete(tenant, &WebhookId(id.to_string())).await {
                Ok(Applied::Done) => Answer::Changed(id.to_string(), Outcome::Deleted),
                Ok(Applied::NotFound) => Answer::Changed(id.to_string(), Outcome::NotFound),
                Err(e) => Answer::Failed(e),
            }
        })
    }

    /// An Update of the webhook `id` to `body`; if LeadSquared has no such webhook (or the
    /// record held none), the one Retrieve finds with the body's description and event is
    /// updated, or, if there is none, the webhook is created. Each call after the first is
    /// spent in the tenant's window first.
    fn update<'a>(
        &'a self,
        job: &'a LeasedJob,
        tenant: &'a Tenant,
        id: &'a str,
        body: &'a CreateWebhook,
    ) -> std::pin::Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
        Box::pin(async move {
            let mut calls = 0;
            let mut target = (!id.is_empty()).then(|| id.to_string());
            if target.is_none() {
                calls += 1;
                target = match self.find(job, tenant, body, calls).await {
                    Ok(found) => found,
                    Err(e) => return Answer::Failed(e),
                };
            }
            let Some(mut target) = target else {
                return self.create_instead(job, tenant, body, calls + 1).await;
            };
            loop {
                match self
                    .client
                    .update(tenant, &WebhookId(target.clone()), body)
                    .await
                {
                    Ok(Applied::Done) => return Answer::Changed(target, Outcome::Updated),
                    Ok(Applied::NotFound) if calls == 0 => {
                        tracing::info!(
                            "the recorded webhook is gone; looking for it by its description"
                        );
                        calls += 1;
                        match self.find(job, tenant, body, calls).await {
                            Ok(Some(found)) => {
                                calls += 1;
                                if let Err(e) = self.extra_call(job, calls).await {
                                    return Answer::Failed(e);
                                }
                                target = found;
                            }
                            Ok(None) => {
                                return self.create_instead(job, tenant, body, calls + 1).await;
                            }
                            Err(e) => return Answer::Failed(e),
                        }
                    }
                    Ok(Applied::NotFound) => {
                        return Answer::Failed(CallError::Transient {
                            reason: "the webhook Retrieve found was gone by its Update".into(),
                            maybe_reached: false,
                        });
                    }
                    Err(e) => return Answer::Failed(e),
                }
            }
        })
    }

    /// The Id of the webhook with the body's description and event (its URL may be the
    /// one being changed), found with Retrieve; the call is spent in the window first.
    async fn find(
        &self,
        job: &LeasedJob,
        tenant: &Tenant,
        body: &CreateWebhook,
        n: u32,
    ) -> Result<Option<String>, CallError> {
        self.extra_call(job, n).await?;
        let page = self
            .client
            .retrieve(tenant, &body.description, 1, self.retrieve_page_size)
            .await?;
        Ok(page
            .webhooks
            .into_iter()
            .find(|w| w.description == body.description && w.event == Some(body.event.code()))
            .map(|w| w.webhook_id.0))
    }

    /// An update of a webhook that no longer exists: created instead (the desired state is
    /// that it exists with this body).
    async fn create_instead(
        &self,
        job: &LeasedJob,
        tenant: &Tenant,
        body: &CreateWebhook,
        n: u32,
    ) -> Answer {
        if let Err(e) = self.extra_call(job, n).await {
            return Answer::Failed(e);
        }
        // The fence, as before any Create: if this worker dies during the call, the next
        // holder's Retrieve waits until the Create can no longer land (see `run_inner`).
        let in_flight = self.client.config().timeout + self.reconcile_settle;
        let fenced = match self.queue.sending(job, in_flight).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the lease was lost before the Create was sent".to_string()),
            Err(e) => Err(format!("could not fence the Create: {e}")),
        };
        if let Err(reason) = fenced {
            return Answer::Failed(CallError::Transient {
                reason,
                maybe_reached: false,
            });
        }
        match self.client.create(tenant, body).await {
            Ok(id) => Answer::Changed(id.0, Outcome::Created),
            Err(e) => Answer::Failed(e),
        }
    }

    /// Spends one more call of the job's tenant in its window (the `n`-th beyond the
    /// dispatch's), waiting for room up to a lease; longer, and the attempt fails
    /// transiently (nothing was sent).
    async fn extra_call(&self, job: &LeasedJob, n: u32) -> Result<(), CallError> {
        let call = format!("{}.extra{n}", job.lease);
        loop {
            match self.queue.take_call(&job.tenant, &call).await {
                Ok(None) => {
                    self.stats.calls();
                    return Ok(());
                }
                Ok(Some(d)) if d <= self.queue.config().lease => tokio::time::sleep(d).await,
                Ok(Some(_)) => {
                    return Err(CallError::Transient {
                        reason: "no room in the tenant's window for the update's next call".into(),
                        maybe_reached: false,
                    });
                }
                Err(e) => {
                    return Err(CallError::Transient {
                        reason: format!("could not spend a call for the update: {e}"),
                        maybe_reached: false,
                    });
                }
            }
        }
    }

    /// Hands the job back without spending its attempt (the call stays in the window).
    async fn give_back(&self, job: &LeasedJob, outcome: AttemptOutcome) -> AttemptOutcome {
        let how = Requeue {
            spend_attempt: false,
            outcome_unknown: job.outcome_unknown,
        };
        let r = self.store("requeue", || self.queue.requeue(job, how)).await;
        self.settle(r, || outcome)
    }

    /// Hands the job back; when this dispatch sent nothing (it had no host and another job
    /// settled the question meanwhile), its call leaves the window too.
    async fn give_back_unsent(
        &self,
        job: &LeasedJob,
        why: Discovery,
        outcome: AttemptOutcome,
    ) -> AttemptOutcome {
        if why != Discovery::NoHost {
            return self.give_back(job, outcome).await;
        }
        let outcome = self.give_back(job, AttemptOutcome::Unsent).await;
        if outcome == AttemptOutcome::Unsent
            && let Some(Err(e)) = self.store("unsent", || self.queue.unsent(job)).await
        {
            tracing::warn!("could not give back an unsent call: {e}");
        }
        outcome
    }

    /// The tenant's host did not answer: counts it against the tenant (held after a few in
    /// a row) and hands the job back with its attempt.
    async fn unreachable(&self, job: &LeasedJob, reason: &str) -> AttemptOutcome {
        self.host_failed(job, &format!("host unreachable: {reason}"))
            .await;
        self.give_back(job, AttemptOutcome::HostUnreachable).await
    }

    /// The call went out and no answer came within its timeout. The job's outcome is unknown
    /// either way: its next attempt reconciles, once a Create it sent can no longer land.
    /// The timeout counts against the tenant's host as a failure to answer. The first of a
    /// run spends the job's attempt, as any transient failure does (one slow answer from a
    /// host that otherwise answers is about the call, and a job that always times out must
    /// not retry forever); the ones after it, while the host keeps failing, do not (that is
    /// about the host, and the hold after a few in a row stops the calls).
    async fn timed_out(&self, job: &LeasedJob, reason: String) -> AttemptOutcome {
        let failures = self
            .host_failed(job, &format!("host timed out: {reason}"))
            .await;
        if failures.is_some_and(|n| n >= 2) {
            let how = Requeue {
                spend_attempt: false,
                outcome_unknown: true,
            };
            let r = self.store("requeue", || self.queue.requeue(job, how)).await;
            return self.settle(r, || AttemptOutcome::HostUnreachable);
        }
        self.retry_transient(job, format!("timed out: {reason}"), true)
            .await
    }

    /// Counts a failure of the tenant's host to answer (`Queue::host_failed`: the tenant is
    /// held after a few in a row) and logs it; the failures in a row, when the store took it.
    async fn host_failed(&self, job: &LeasedJob, why: &str) -> Option<u32> {
        self.failing.failed(&job.tenant);
        let policy = UnreachablePolicy {
            jitter: rand::random_range(0.5..=1.0),
            ..self.unreachable
        };
        match self
            .store("host_failed", || {
                self.queue.host_failed(&job.tenant, policy, why)
            })
            .await
        {
            Some(Ok(f)) => {
                match f.held_for {
                    Some(d) => tracing::warn!(
                        failures = f.failures,
                        hold_ms = d.as_millis() as u64,
                        "tenant held: {why}"
                    ),
                    None => tracing::info!(failures = f.failures, "{why}"),
                }
                Some(f.failures)
            }
            Some(Err(e)) => {
                tracing::warn!("could not count the host's failure: {e}");
                None
            }
            None => None,
        }
    }

    /// Asks `UserByAccessKey.Get` where the tenant lives (once per tenant at a time in this
    /// process), and acts on the answer: a host is recorded and the job handed back; keys
    /// refused hold the tenant (its jobs stay queued) and the job is handed back.
    async fn discover(&self, job: &LeasedJob, used: &Tenant, why: Discovery) -> AttemptOutcome {
        let lock = self.discovering.lock_for(&job.tenant);
        // The wait keeps the lease alive: another job of the tenant may be waiting for room
        // in the window, or for a discovery host that does not answer.
        let Some(_guard) = self.heartbeating(job, lock.lock()).await else {
            self.stats.lease_lost();
            return AttemptOutcome::LeaseLost;
        };
        // Another job may have settled it meanwhile: a hold, a new host, new keys.
        match self
            .store("tenant_hold", || self.queue.tenant_hold(&job.tenant))
            .await
        {
            // Held without an end, or for keys refused (with an end: rediscovery could not
            // complete); either way this job has nothing to ask.
            Some(Ok(Some(h))) if h.until_ms.is_none() || h.kind == HoldKind::KeysRefused => {
                return self
                    .give_back_unsent(job, why, AttemptOutcome::Parked)
                    .await;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!("could not read the tenant's hold: {e}"),
            None => return self.hand_back(job, false).await,
        }
        let fresh = match self
            .store("tenant", || self.queue.tenant(&job.tenant))
            .await
        {
            Some(Ok(Some(t))) => t,
            Some(Ok(None)) => {
                let reason = format!("tenant {:?} is not in the registry", job.tenant);
                return self.bury(job, reason).await;
            }
            Some(Err(e)) => {
                let reason = format!("cannot read tenant {:?}: {e}", job.tenant);
                return self.bury(job, reason).await;
            }
            None => return self.hand_back(job, false).await,
        };
        let changed = fresh.api_base != used.api_base
            || fresh.access_key != used.access_key
            || fresh.secret_key != used.secret_key;
        if changed && fresh.api_base.is_some() {
            self.tenants.put(fresh);
            return self
                .give_back_unsent(job, why, AttemptOutcome::Rediscovered)
                .await;
        }
        let fresh = self.tenants.put(fresh);
        if why == Discovery::Refused {
            // One more call than the dispatch spent: it waits for room in the window.
            let call = format!("{}.discover", job.lease);
            loop {
                let wait = self
                    .store("take_call", || self.queue.take_call(&job.tenant, &call))
                    .await;
                match wait {
                    Some(Ok(None)) => break,
                    Some(Ok(Some(d))) if d <= self.queue.config().lease => {
                        let slept = self.heartbeating(job, tokio::time::sleep(d)).await;
                        if slept.is_none() {
                            self.stats.lease_lost();
                            return AttemptOutcome::LeaseLost;
                        }
                    }
                    // Held, or a long pause: the job waits in its list instead.
                    Some(Ok(Some(_))) => return self.give_back(job, AttemptOutcome::Parked).await,
                    Some(Err(e)) => {
                        tracing::warn!("could not spend a call for discovery: {e}");
                        return self.give_back(job, AttemptOutcome::HandedBack).await;
                    }
                    None => return self.hand_back(job, false).await,
                }
            }
        }
        self.stats.calls();
        let started = Instant::now();
        let found = self
            .heartbeating(job, self.client.discover(&fresh, &self.discovery))
            .await;
        let Some(found) = found else {
            self.stats.lease_lost();
            return AttemptOutcome::LeaseLost;
        };
        self.metrics
            .call_observed(started.elapsed(), call_outcome(found.as_ref().err()));
        match found {
            Ok(base) if why == Discovery::Refused && Some(&base) == used.api_base.as_ref() => {
                // The keys are good on this very host: the 401 was about the call.
                self.bury(
                    job,
                    format!(
                        "{}: LeadSquared refused the call although UserByAccessKey.Get \
                         accepts the keys and names this host",
                        "HTTP 401"
                    ),
                )
                .await
            }
            Ok(base) => {
                tracing::info!(host = %base, "discovered the tenant's API host");
                let access = fresh.access_key.expose();
                let _ = self
                    .store("set_tenant_host", || {
                        self.queue.set_tenant_host(&job.tenant, Some(&base), access)
                    })
                    .await;
                let mut updated = (*fresh).clone();
                updated.api_base = Some(base);
                self.tenants.put(updated);
                self.give_back(job, AttemptOutcome::Rediscovered).await
            }
            Err(CallError::Refused { .. }) => {
                tracing::warn!("tenant held: {KEYS_REFUSED}");
                let hold = NewHold {
                    kind: HoldKind::KeysRefused,
                    reason: KEYS_REFUSED.into(),
                    length: None,
                    by: None,
                };
                let _ = self
                    .store("hold", || self.queue.hold(&job.tenant, hold.clone()))
                    .await;
                self.give_back(job, AttemptOutcome::Parked).await
            }
            Err(e @ CallError::RateLimited { .. }) => self.failed(job, e).await,
            // A 401 that discovery could not explain: wrong keys or a wrong host, unknown
            // until discovery answers. No call goes out meanwhile.
            Err(e) if why == Discovery::Refused => self.undiscovered(job, &fresh, e).await,
            Err(CallError::Unreachable { reason }) => {
                let reason = format!(
                    "the discovery host {} could not be reached: {reason}",
                    self.discovery_host()
                );
                self.unreachable(job, &reason).await
            }
            Err(e) => {
                let e = match e {
                    CallError::Permanent { reason } => CallError::Transient {
                        reason: format!("host discovery failed: {reason}"),
                        maybe_reached: false,
                    },
                    other => other,
                };
                self.failed(job, e).await
            }
        }
    }

    /// The discovery host, for messages: scheme, host and port (a discovery URL holds no
    /// secret, but a path or query is noise here).
    fn discovery_host(&self) -> String {
        self.discovery.origin().ascii_serialization()
    }

    /// Create or Retrieve answered 401 and the rediscovery could not complete (the
    /// discovery host unreachable, timing out or failing): the tenant's host is forgotten,
    /// so its next dispatch asks discovery instead of calling Create, and the tenant is held
    /// `keys_refused` for [`UNDISCOVERED_HOLD`], the reason naming both causes. So no Create
    /// or Retrieve goes out for it, from any process, until new keys are imported, or the
    /// hold ends and discovery answers. The job goes back with its attempt.
    async fn undiscovered(
        &self,
        job: &LeasedJob,
        used: &Tenant,
        error: CallError,
    ) -> AttemptOutcome {
        let reason = format!(
            "{KEYS_REFUSED}, and the discovery host {} could not be reached to tell wrong keys \
             from a wrong host ({error}); discovery is asked again when the hold ends",
            self.discovery_host()
        );
        tracing::warn!("tenant held: {reason}");
        let access = used.access_key.expose();
        if let Some(Err(e)) = self
            .store("set_tenant_host", || {
                self.queue.set_tenant_host(&job.tenant, None, access)
            })
            .await
        {
            tracing::warn!("could not forget the tenant's host: {e}");
        }
        let mut forgotten = used.clone();
        forgotten.api_base = None;
        self.tenants.put(forgotten);
        let hold = NewHold {
            kind: HoldKind::KeysRefused,
            reason,
            length: Some(UNDISCOVERED_HOLD),
            by: None,
        };
        if let Some(Err(e)) = self
            .store("hold", || self.queue.hold(&job.tenant, hold.clone()))
            .await
        {
            tracing::warn!("could not hold the tenant: {e}");
        }
        self.give_back(job, AttemptOutcome::Parked).await
    }
}

/// How long a tenant is held after a 401 whose rediscovery could not complete, before its
/// next dispatch asks discovery again: long enough that a discovery host that is down is
/// not asked every few seconds per tenant, short enough that one that comes back is
/// noticed within a minute. Later failures of that discovery follow the unreachable-host
/// holds (5 s doubling to 5 min).
pub const UNDISCOVERED_HOLD: Duration = Duration::from_secs(30);

/// Whether the tenant's host gave an HTTP answer (whatever it said): anything but a
/// connection that failed, a timeout, or a reset before any answer.
fn host_answered(answer: &Answer) -> bool {
    match answer {
        Answer::Created(_) | Answer::Found(_) | Answer::Changed(..) => true,
        Answer::Failed(CallError::Unreachable { .. } | CallError::TimedOut { .. }) => false,
        Answer::Failed(e @ CallError::Transient { .. }) => e.http_status().is_some(),
        Answer::Failed(_) => true,
    }
}

/// How a call ended, for the call histogram: answered, or failed with `error`.
fn call_outcome(error: Option<&CallError>) -> CallOutcome {
    match error {
        None => CallOutcome::Ok,
        Some(CallError::RateLimited { .. }) => CallOutcome::RateLimited,
        Some(
            CallError::Transient { .. }
            | CallError::Unreachable { .. }
            | CallError::TimedOut { .. },
        ) => CallOutcome::Transient,
        Some(CallError::Permanent { .. } | CallError::Refused { .. }) => CallOutcome::Permanent,
    }
}

/// The history entry (`Queue::note_attempt`) of one call.
fn attempt_of(
    call: &str,
    answer: &Answer,
    sent_at: std::time::SystemTime,
    took: Duration,
) -> crate::job::Attempt {
    let (outcome, error) = match answer {
        Answer::Created(_) => ("created", None),
        Answer::Found(Some(_)) => ("found", None),
        Answer::Found(None) => ("not_found", None),
        Answer::Changed(_, outcome) => (outcome.as_str(), None),
        Answer::Failed(e @ CallError::RateLimited { .. }) => ("rate_limited", Some(e)),
        Answer::Failed(e @ CallError::Transient { .. }) => ("transient", Some(e)),
        Answer::Failed(e @ CallError::Permanent { .. }) => ("permanent", Some(e)),
        Answer::Failed(e @ CallError::Refused { .. }) => ("refused", Some(e)),
        Answer::Failed(e @ CallError::Unreachable { .. }) => ("unreachable", Some(e)),
        Answer::Failed(e @ CallError::TimedOut { .. }) => ("timed_out", Some(e)),
    };
    crate::job::Attempt {
        at_ms: sent_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        call: call.into(),
        outcome: outcome.into(),
        http_status: error.and_then(CallError::http_status),
        exception_type: error
            .and_then(CallError::exception_type)
            .map(str::to_string),
        duration_ms: took.as_millis() as u64,
        error: error.map(|e| e.to_string()),
    }
}

impl JobContext {
    /// Acts on the answer; a success goes into its process's next batch of completions
    /// with its call's history entry, `attempt`, and the moment its answer arrived.
    async fn record(
        &self,
        job: &LeasedJob,
        answer: Answer,
        attempt: &crate::job::Attempt,
        answered: Instant,
    ) -> AttemptOutcome {
        let complete = |id: &str, reconciled: bool, outcome: Outcome| {
            let id = id.to_string();
            move || {
                let id = id.clone();
                async move {
                    self.completions
                        .complete(job, &id, reconciled, outcome, attempt, answered)
                        .await
                }
            }
        };
        match answer {
            Answer::Created(id) => {
                let r = self
                    .store("complete", complete(&id, false, Outcome::Created))
                    .await;
                self.settle(r, || {
                    self.stats.created();
                    AttemptOutcome::Done {
                        webhook_id: id.clone(),
                        reconciled: false,
                        outcome: Outcome::Created,
                    }
                })
            }
            Answer::Changed(id, outcome) => {
                let r = self.store("complete", complete(&id, false, outcome)).await;
                self.settle(r, || AttemptOutcome::Done {
                    webhook_id: id.clone(),
                    reconciled: false,
                    outcome,
                })
            }
            Answer::Found(Some(id)) => {
                let r = self
                    .store("complete", complete(&id, true, Outcome::Created))
                    .await;
                self.settle(r, || {
                    self.stats.reconciled();
                    AttemptOutcome::Done {
                        webhook_id: id.clone(),
                        reconciled: true,
                        outcome: Outcome::Created,
                    }
                })
            }
            Answer::Found(None) => {
                let how = Requeue {
                    spend_attempt: false,
                    outcome_unknown: false,
                };
                let r = self.store("requeue", || self.queue.requeue(job, how)).await;
                self.settle(r, || {
                    self.stats.not_found();
                    AttemptOutcome::NotFound
                })
            }
            Answer::Failed(e) => self.failed(job, e).await,
        }
    }

    /// Acts on a failed call.
    async fn failed(&self, job: &LeasedJob, error: CallError) -> AttemptOutcome {
        match error {
            CallError::RateLimited {
                retry_after,
                limit,
                quota,
                ..
            } => {
                let pause = retry_after.unwrap_or(self.queue.config().window);
                tracing::warn!(
                    pause_ms = pause.as_millis() as u64,
                    limit,
                    quota_calls = quota.map(|q| q.calls),
                    quota_window_s = quota.map(|q| q.window.as_secs()),
                    "LeadSquared answered rate limited"
                );
                // A quota over the queue's day is a daily limit: learned, so that the
                // dispatch parks the tenant once its calls reach it. A quota over another
                // window only pauses the tenant, for that window.
                if let Some(q) = quota.filter(|q| q.window == self.queue.config().day) {
                    let tenant = job.tenant.as_str();
                    if let Some(Err(e)) = self
                        .store("learn_daily_limit", || {
                            self.queue.learn_daily_limit(tenant, q.calls)
                        })
                        .await
                    {
                        tracing::warn!(error = %e, "could not record the daily quota");
                    }
                }
                let r = self
                    .store("rate_limited", || {
                        self.queue.rate_limited(job, pause, limit)
                    })
                    .await;
                self.settle(r, || {
                    self.stats.rate_limited();
                    AttemptOutcome::RateLimited
                })
            }
            CallError::Transient {
                reason,
                maybe_reached,
            } => self.retry_transient(job, reason, maybe_reached).await,
            CallError::TimedOut { reason } => self.timed_out(job, reason).await,
            CallError::Permanent { reason } | CallError::Refused { reason } => {
                self.bury(job, reason).await
            }
            CallError::Unreachable { reason } => self.unreachable(job, &reason).await,
        }
    }

    /// A transient failure: retry after the backoff, the attempt spent.
    async fn retry_transient(
        &self,
        job: &LeasedJob,
        reason: String,
        maybe_reached: bool,
    ) -> AttemptOutcome {
        // A failed reconcile keeps the job's outcome unknown.
        let unknown = maybe_reached || job.outcome_unknown;
        let mut delay = self.retry.delay(job.attempt);
        if maybe_reached && !job.outcome_unknown {
            // A Create that may still be processed: the next attempt reconciles, and
            // must not look before the call can no longer land.
            delay = delay.max(self.reconcile_settle);
        }
        tracing::info!(
            retry_in_ms = delay.as_millis() as u64,
            maybe_reached,
            "transient failure: {reason}"
        );
        let r = self
            .store("retry_later", || {
                self.queue.retry_later(job, delay, &reason, unknown)
            })
            .await;
        // Out of attempts, the queue buries the job with this reason instead (and the run
        // summary counts it dead).
        let last = job.attempt >= self.queue.config().max_attempts;
        self.settle(r, || {
            if last {
                tracing::warn!(
                    "dead: {}",
                    crate::queue::reason::gave_up(job.attempt, &reason)
                );
                self.stats.buried();
                AttemptOutcome::Buried(crate::queue::reason::gave_up(job.attempt, &reason))
            } else {
                self.stats.retried();
                AttemptOutcome::Retried
            }
        })
    }

    /// Runs the call while extending the job's lease every third of its length; `None` (the
    /// call dropped) as soon as a heartbeat finds the lease lost.
    async fn heartbeating<T>(&self, job: &LeasedJob, call: impl Future<Output = T>) -> Option<T> {
        let every = (self.queue.config().lease / 3).max(Duration::from_millis(10));
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(call);
        loop {
            tokio::select! {
                out = &mut call => return Some(out),
                _ = ticks.tick() => match self.queue.heartbeat(job).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("lease lost during the call; abandoning it");
                        return None;
                    }
                    // The next beat may get through; if none does, the lease runs out and
                    // the job is taken back as "outcome unknown", which is safe.
                    Err(e) => tracing::warn!("heartbeat failed: {e}"),
                },
            }
        }
    }

    async fn tenant(&self, name: &str) -> Option<Result<Option<Arc<Tenant>>, QueueError>> {
        if let Some(t) = self.tenants.get(name) {
            return Some(Ok(Some(t)));
        }
        let got = self.store("tenant", || self.queue.tenant(name)).await?;
        Some(got.map(|t| t.map(|t| self.tenants.put(t))))
    }

    async fn bury(&self, job: &LeasedJob, reason: String) -> AttemptOutcome {
        tracing::warn!("dead: {reason}");
        let r = self.store("bury", || self.queue.bury(job, &reason)).await;
        self.settle(r, || {
            self.stats.buried();
            AttemptOutcome::Buried(reason.clone())
        })
    }

    async fn hand_back(&self, job: &LeasedJob, maybe_reached: bool) -> AttemptOutcome {
        let how = Requeue {
            spend_attempt: false,
            outcome_unknown: maybe_reached || job.outcome_unknown,
        };
        // The hard stop has passed: one quick try, no reconnect loop.
        match tokio::time::timeout(Duration::from_secs(2), self.queue.requeue(job, how)).await {
            Ok(Ok(())) => {
                self.stats.handed_back();
                AttemptOutcome::HandedBack
            }
            Ok(Err(QueueError::LeaseLost(_))) => {
                self.stats.lease_lost();
                AttemptOutcome::LeaseLost
            }
            other => {
                tracing::warn!("could not hand the job back ({other:?}); its lease will run out");
                AttemptOutcome::Abandoned
            }
        }
    }

    /// A store operation, retried while the store is unavailable or full (see
    /// [`store_retry`]), until the hard stop.
    async fn store<T, F, Fut>(&self, what: &'static str, op: F) -> Option<Result<T, QueueError>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, QueueError>>,
    {
        with_retry(
            what,
            &self.reconnect,
            &self.hard_stop,
            store_retry(&self.stats),
            op,
        )
        .await
    }

    /// Turns the store's answer to a recording into the job's outcome.
    fn settle(
        &self,
        r: Option<Result<(), QueueError>>,
        ok: impl FnOnce() -> AttemptOutcome,
    ) -> AttemptOutcome {
        match r {
            Some(Ok(())) => ok(),
            Some(Err(QueueError::LeaseLost(_))) => {
                tracing::warn!("lease lost: another worker took the job back; result not recorded");
                self.stats.lease_lost();
                AttemptOutcome::LeaseLost
            }
            Some(Err(e)) => {
                tracing::error!("could not record the result: {e}; the lease will run out");
                AttemptOutcome::Abandoned
            }
            None => AttemptOutcome::Abandoned,
        }
    }
}

/// Decodes a stored body; the error names what is wrong (never a header value).
fn decode(body: &str) -> Result<CreateWebhook, String> {
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("job body is not JSON: {e}"))?;
    CreateWebhook::from_value(&value).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("job body does not decode: {}", list.join("; "))
    })
}
