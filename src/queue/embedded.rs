//! The embedded backend: the [`Queue`] contract in one process, for the demo and for runs
//! without Redis.
//!
//! The semantics are the Redis backend's, kept in memory behind one `Mutex`:
//! - each tenant has its own list of waiting jobs;
//! - tenants with waiting jobs sit in one ordered set keyed by the time their next call is
//!   allowed (ties in the order they became ready, so tenants take turns);
//! - the limiter is an exact sliding log per tenant: the times of its recent calls. A call
//!   is allowed at `t` when fewer than `limit` logged calls lie in `(t - window - margin, t]`,
//!   so no window ever holds more than `limit` calls. [`Queue::answered`] moves a call's
//!   entry to the moment its answer arrived, which only ever makes the log more cautious.
//!
//! Time is `tokio::time::Instant`, so tests run on tokio's paused clock; instants are turned
//! into milliseconds since the Unix epoch only for what callers see.
//!
//! A std `Mutex` and not tokio's: no lock is held across an `.await`, and every critical
//! section is short bookkeeping.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Dispatched, Fence, LeasedJob, Pushed, Queue, QueueConfig, QueueError, QueueStatus, Requeue,
    TenantStatus, reason,
};
use crate::job::{JobId, JobResult, JobState, NewJob};
use crate::tenant::Tenant;

/// The in-process queue. Cheap to share behind an `Arc`; every method is atomic with
/// respect to every other caller.
pub struct EmbeddedQueue {
    config: QueueConfig,
    state: Mutex<State>,
    /// Wakes [`Queue::wait_for_work`] callers when work appears.
    work: Notify,
    /// Wall-clock anchor: `epoch_ms` milliseconds since the Unix epoch at `epoch`.
    epoch: Instant,
    epoch_ms: u64,
}

/// Key of a tenant in the ready set: when it may call next, then the order in which it got
/// that turn (so equal times are served first come, first served), then its name.
type ReadyKey = (Instant, u64, String);

#[derive(Default)]
struct State {
    tenants: HashMap<String, TenantState>,
    jobs: HashMap<JobId, JobRecord>,
    /// (tenant, idempotency key) → job: keys are scoped per tenant, as in Redis.
    keys: HashMap<(String, String), JobId>,
    /// Tenants with waiting jobs, by when they may call next.
    ready: BTreeSet<ReadyKey>,
    /// Jobs waiting for a retry, by due time.
    scheduled: BTreeSet<(Instant, JobId)>,
    /// Running jobs, by lease expiry.
    leases: BTreeSet<(Instant, JobId)>,
    /// Finished jobs (done and dead) by finishing sequence number.
    finished: BTreeMap<u64, JobId>,
    /// Source of sequence numbers (ready-set tie breaks, finishing order, lease tokens).
    seq: u64,
    /// Jobs done per wall-clock second (`ms / 1000`, count), the last
    /// [`DONE_HISTORY_SECS`] seconds only, for [`Queue::done_per_second`].
    done_per_sec: VecDeque<(u64, u64)>,
}

/// Seconds of done-per-second history kept: bounds the memory whatever the throughput.
const DONE_HISTORY_SECS: u64 = 600;

struct TenantState {
    tenant: Tenant,
    /// A smaller limit LeadSquared named in a rate-limit answer.
    learned_limit: Option<u32>,
    waiting: VecDeque<JobId>,
    /// Recent calls: when each was made (or answered), and the lease of its dispatch. Sorted
    /// by time, because entries are only ever appended at "now".
    log: VecDeque<(Instant, String)>,
    paused_until: Option<Instant>,
    pause_reason: Option<String>,
    /// Its key in the ready set while it has waiting jobs.
    ready_key: Option<ReadyKey>,
}

struct JobRecord {
    tenant: String,
    key: String,
    /// The Create body; dropped once the job is done (results are kept, payloads are not).
    body: String,
    attempts: u32,
    outcome_unknown: bool,
    state: JobState,
    webhook_id: Option<String>,
    error: Option<String>,
    reconciled: bool,
    /// While running: the lease token and when it expires.
    lease: Option<(String, Instant)>,
    /// While running: until when a Create the holder sent may still land (see
    /// [`Queue::sending`]).
    call_until: Option<Instant>,
    dispatched_at: Option<Instant>,
    /// While scheduled: when the retry is due.
    due: Option<Instant>,
    /// While finished: position in the finishing order.
    finished_seq: Option<u64>,
}

impl TenantState {
    fn limit(&self) -> u32 {
        let configured = self.tenant.limit.max(1);
        self.learned_limit
            .map_or(configured, |l| l.clamp(1, configured))
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Drops log entries that can no longer count against any window starting at or after
    /// `now`.
    fn prune(&mut self, tenant: &str, now: Instant, span: Duration) {
        if let Some(t) = self.tenants.get_mut(tenant) {
            while let Some((at, _)) = t.log.front() {
                if *at + span <= now {
                    t.log.pop_front();
                } else {
                    break;
                }
            }
        }
    }

    /// The earliest instant at which the tenant may make another call, ignoring turn order.
    fn allowed_at(t: &TenantState, now: Instant, span: Duration) -> Instant {
        let limit = t.limit() as usize;
        let by_log = if t.log.len() >= limit {
            // The oldest call that would still be in the window with one more call: once
            // it leaves the window, a call fits.
            t.log[t.log.len() - limit].0 + span
        } else {
            now
        };
        match t.paused_until {
            Some(p) if p > by_log => p,
            _ => by_log,
        }
    }

    /// Puts the tenant in the ready set (or takes it out) according to its waiting list,
    /// log and pause. `turn` is the earliest time it may be served in fairness to others:
    /// the moment of its last dispatch or of its becoming ready.
    fn rescore(&mut self, tenant: &str, now: Instant, span: Duration, turn: Option<Instant>) {
        let seq = self.next_seq();
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        let old = t.ready_key.take();
        if let Some(k) = &old {
            self.ready.remove(k);
        }
        if t.waiting.is_empty() {
            return;
        }
        let allowed = Self::allowed_at(t, now, span);
        let key = match (old, turn) {
            // A new turn: behind every tenant already waiting for the same moment.
            (_, Some(turn)) => (allowed.max(turn), seq, tenant.to_string()),
            // Same turn, maybe a later time (a pause, a re-stamp): keep its place in line
            // when the time did not change.
            (Some((at, old_seq, name)), None) => {
                let at2 = allowed.max(at);
                (at2, if at2 == at { old_seq } else { seq }, name)
            }
            (None, None) => (allowed.max(now), seq, tenant.to_string()),
        };
        t.ready_key = Some(key.clone());
        self.ready.insert(key);
    }

    /// Moves due retries back to the front of their tenants' lists, and takes back jobs
    /// whose leases expired. Returns whether anything moved.
    fn housekeeping(&mut self, now: Instant, span: Duration, max_attempts: u32) -> bool {
        let mut moved = false;
        while let Some((due, id)) = self.scheduled.first().cloned() {
            if due > now {
                break;
            }
            self.scheduled.pop_first();
            moved = true;
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.state = JobState::Queued;
            job.due = None;
            let tenant = job.tenant.clone();
            if let Some(t) = self.tenants.get_mut(&tenant) {
                t.waiting.push_front(id);
            }
            self.rescore(&tenant, now, span, None);
        }
        while let Some((expiry, id)) = self.leases.first().cloned() {
            if expiry > now {
                break;
            }
            self.leases.pop_first();
            moved = true;
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.lease = None;
            job.dispatched_at = None;
            // The worker may have sent the call before it vanished.
            job.outcome_unknown = true;
            let in_flight_until = job.call_until.take().filter(|u| *u > now);
            let tenant = job.tenant.clone();
            if job.attempts >= max_attempts {
                let reason = reason::lease_expired_no_attempts_left(max_attempts);
                self.finish(&id, JobState::Dead, Some(reason));
                continue;
            }
            if let Some(until) = in_flight_until {
                // Its Create may still land: a reconcile before then could miss it.
                job.state = JobState::Scheduled;
                job.error = Some(reason::LEASE_EXPIRED_MID_CALL.into());
                job.due = Some(until);
                self.scheduled.insert((until, id));
                continue;
            }
            job.state = JobState::Queued;
            job.error = Some(reason::LEASE_EXPIRED.into());
            if let Some(t) = self.tenants.get_mut(&tenant) {
                t.waiting.push_front(id);
            }
            self.rescore(&tenant, now, span, None);
        }
        moved
    }

    /// Re-stamps the job's call at `now`, when its answer arrived (see [`Queue::answered`]).
    /// The call was made whether or not the lease is still held: every finishing method
    /// does this first, either way.
    fn restamp(&mut self, job: &LeasedJob, now: Instant, span: Duration) {
        let Some(t) = self.tenants.get_mut(&job.tenant) else {
            return;
        };
        if let Some(pos) = t.log.iter().position(|(_, l)| *l == job.lease) {
            t.log.remove(pos);
        }
        t.log.push_back((now, job.lease.clone()));
        self.rescore(&job.tenant, now, span, None);
    }

    /// How every finishing call starts: re-stamps the job's call at `now` (whether or not
    /// the lease is still held), then checks that `job` still holds its lease; on success
    /// releases it and returns until when a Create it sent may still land.
    fn end_lease(
        &mut self,
        job: &LeasedJob,
        now: Instant,
        span: Duration,
    ) -> Result<Option<Instant>, QueueError> {
        self.restamp(job, now, span);
        let rec = self
            .jobs
            .get_mut(&job.id)
            .ok_or_else(|| QueueError::LeaseLost(job.id.clone()))?;
        match &rec.lease {
            Some((token, expiry)) if *token == job.lease && rec.state == JobState::Running => {
                self.leases.remove(&(*expiry, job.id.clone()));
                rec.lease = None;
                rec.dispatched_at = None;
                Ok(rec.call_until.take())
            }
            _ => Err(QueueError::LeaseLost(job.id.clone())),
        }
    }

    /// Records a job as finished (done or dead) at the end of the finishing order.
    fn finish(&mut self, id: &JobId, state: JobState, error: Option<String>) {
        let seq = self.next_seq();
        if let Some(rec) = self.jobs.get_mut(id) {
            rec.state = state;
            rec.error = error;
            if state == JobState::Done {
                rec.body = String::new();
            }
            if let Some(old) = rec.finished_seq.replace(seq) {
                self.finished.remove(&old);
            }
            self.finished.insert(seq, id.clone());
        }
    }

    /// Puts a job back at the front (or back) of its tenant's list.
    fn enqueue(&mut self, id: &JobId, front: bool, now: Instant, span: Duration) {
        let Some(rec) = self.jobs.get_mut(id) else {
            return;
        };
        rec.state = JobState::Queued;
        let tenant = rec.tenant.clone();
        let was_empty = match self.tenants.get_mut(&tenant) {
            Some(t) => {
                let was_empty = t.waiting.is_empty();
                if front {
                    t.waiting.push_front(id.clone());
                } else {
                    t.waiting.push_back(id.clone());
                }
                was_empty
            }
            None => return,
        };
        self.rescore(&tenant, now, span, was_empty.then_some(now));
    }

    fn result(&self, id: &JobId) -> Option<JobResult> {
        let rec = self.jobs.get(id)?;
        Some(JobResult {
            job: id.clone(),
            tenant: rec.tenant.clone(),
            key: rec.key.clone(),
            status: rec.state,
            webhook_id: rec.webhook_id.clone(),
            attempts: rec.attempts,
            error: rec.error.clone(),
            reconciled: rec.reconciled,
        })
    }
}

impl EmbeddedQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        EmbeddedQueue {
            config,
            state: Mutex::new(State::default()),
            work: Notify::new(),
            epoch: Instant::now(),
            epoch_ms,
        }
    }

    /// The state; a panic in another holder (a bug) does not make the queue unusable, since
    /// every critical section leaves the state consistent before anything can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Extends a lease; with `in_flight`, also records until when the Create about to be
    /// sent may still land (the fence of [`Queue::sending`]).
    fn beat(&self, job: &LeasedJob, in_flight: Option<Duration>) -> Result<bool, QueueError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(rec) = st.jobs.get_mut(&job.id) else {
            return Ok(false);
        };
        match &mut rec.lease {
            Some((token, expiry)) if *token == job.lease && rec.state == JobState::Running => {
                let old = *expiry;
                *expiry = now + self.config.lease;
                let new = *expiry;
                if let Some(d) = in_flight {
                    let until = now + d;
                    rec.call_until = Some(rec.call_until.map_or(until, |u| u.max(until)));
                }
                st.leases.remove(&(old, job.id.clone()));
                st.leases.insert((new, job.id.clone()));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Leases the next job of `tenant`, whose turn it is at `now` (the moment of this job's
    /// dispatch: see [`Queue::dispatch_many`]): spends one of its calls, re-scores it behind
    /// every tenant already waiting, and, with `fence`, records until when the job's Create
    /// may land (see [`Fence`]). `asked` is when the dispatch request came in, the reading
    /// the fence's slack counts from.
    fn lease_next(
        &self,
        st: &mut State,
        tenant: String,
        (now, asked): (Instant, Instant),
        span: Duration,
        fence: Option<Fence>,
    ) -> Result<LeasedJob, QueueError> {
        st.prune(&tenant, now, span);
        let token = format!("{}-{}", self.epoch_ms, st.next_seq());
        let Some(t) = st.tenants.get_mut(&tenant) else {
            return Err(QueueError::Corrupt {
                key: tenant,
                reason: "tenant in the ready set is not registered".into(),
            });
        };
        let Some(id) = t.waiting.pop_front() else {
            return Err(QueueError::Corrupt {
                key: tenant,
                reason: "tenant in the ready set has no waiting job".into(),
            });
        };
        t.log.push_back((now, token.clone()));
        if t.paused_until.is_some_and(|p| p <= now) {
            t.paused_until = None;
            t.pause_reason = None;
        }
        st.rescore(&tenant, now, span, Some(now));
        let expiry = now + self.config.lease;
        let Some(rec) = st.jobs.get_mut(&id) else {
            return Err(QueueError::Corrupt {
                key: id.0,
                reason: "job in a tenant list has no record".into(),
            });
        };
        rec.attempts += 1;
        rec.state = JobState::Running;
        rec.lease = Some((token.clone(), expiry));
        rec.dispatched_at = Some(now);
        // The clock is read under the lock here, so "before the request" and "the
        // dispatch time" are the same instant.
        let fence = fence.filter(|_| !rec.outcome_unknown);
        if let Some(f) = fence {
            rec.call_until = Some(now + f.slack + f.in_flight);
        }
        let leased = LeasedJob {
            id: id.clone(),
            tenant,
            key: rec.key.clone(),
            body: rec.body.clone(),
            attempt: rec.attempts,
            outcome_unknown: rec.outcome_unknown,
            lease: token,
            dispatched_at_ms: self.ms(now),
            fenced_until: fence.map(|f| asked + f.slack),
        };
        st.leases.insert((expiry, id));
        Ok(leased)
    }

    /// Window plus margin: how long a call counts against its tenant.
    fn span(&self) -> Duration {
        self.config.window + self.config.margin
    }

    fn ms(&self, at: Instant) -> u64 {
        self.epoch_ms + at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Wakes every current waiter and leaves a permit for the next one, so a waiter that
    /// checked just before the work arrived still returns promptly (a spurious return is
    /// allowed, a missed one costs a whole `max`).
    fn wake(&self) {
        self.work.notify_waiters();
        self.work.notify_one();
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    fn config(&self) -> &QueueConfig {
        &self.config
    }

    async fn put_tenants(&self, tenants: &[Tenant]) -> Result<(), QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        for t in tenants {
            match st.tenants.get_mut(&t.name) {
                // The learned limit is kept: it is what LeadSquared said the account allows,
                // whatever is imported later (`TenantState::limit` takes the lower).
                Some(existing) => existing.tenant = t.clone(),
                None => {
                    st.tenants.insert(
                        t.name.clone(),
                        TenantState {
                            tenant: t.clone(),
                            learned_limit: None,
                            waiting: VecDeque::new(),
                            log: VecDeque::new(),
                            paused_until: None,
                            pause_reason: None,
                            ready_key: None,
                        },
                    );
                }
            }
            st.rescore(&t.name, now, span, None);
        }
        drop(guard);
        self.wake();
        Ok(())
    }

    async fn tenant(&self, name: &str) -> Result<Option<Tenant>, QueueError> {
        let st = self.lock();
        Ok(st.tenants.get(name).map(|t| {
            let mut tenant = t.tenant.clone();
            tenant.limit = t.limit();
            tenant
        }))
    }

    async fn tenant_names(&self) -> Result<Vec<String>, QueueError> {
        let st = self.lock();
        let mut names: Vec<String> = st.tenants.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(unknown) = jobs.iter().find(|j| !st.tenants.contains_key(&j.tenant)) {
            return Err(QueueError::UnknownTenant(unknown.tenant.clone()));
        }
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let scoped = (j.tenant.clone(), j.key.clone());
            if let Some(existing) = st.keys.get(&scoped) {
                out.push(Pushed::Duplicate {
                    job: existing.clone(),
                });
                continue;
            }
            let id = JobId::new();
            st.keys.insert(scoped, id.clone());
            st.jobs.insert(
                id.clone(),
                JobRecord {
                    tenant: j.tenant.clone(),
                    key: j.key.clone(),
                    body: j.body.clone(),
                    attempts: 0,
                    outcome_unknown: false,
                    state: JobState::Queued,
                    webhook_id: None,
                    error: None,
                    reconciled: false,
                    lease: None,
                    call_until: None,
                    dispatched_at: None,
                    due: None,
                    finished_seq: None,
                },
            );
            st.enqueue(&id, false, now, span);
            out.push(Pushed::Enqueued { job: id });
        }
        drop(guard);
        self.wake();
        Ok(out)
    }

    async fn dispatch_many(
        &self,
        max: usize,
        fence: Option<Fence>,
    ) -> Result<Dispatched, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let moved = st.housekeeping(now, span, self.config.max_attempts);
        if moved {
            // Jobs taken back or come due: other waiting workers should look again.
            self.wake();
        }
        let mut jobs = Vec::new();
        while jobs.len() < max.max(1) {
            // The n-th job of a batch is dispatched as by a call of its own n µs after `now`
            // (as the Redis backend does): its call is logged, and its tenant re-scored, at
            // that moment, so a batch is exactly that many single dispatches in a row.
            let at_n = now + Duration::from_micros(jobs.len() as u64);
            let Some((at, _, tenant)) = st.ready.first().cloned() else {
                break;
            };
            if at > at_n {
                break;
            }
            jobs.push(self.lease_next(st, tenant, (at_n, now), span, fence)?);
        }
        if !jobs.is_empty() {
            return Ok(Dispatched::Jobs(jobs));
        }
        let next = match (st.ready.first(), st.scheduled.first()) {
            (Some((at, _, _)), Some((due, _))) => Some(*at.min(due)),
            (Some((at, _, _)), None) => Some(*at),
            (None, Some((due, _))) => Some(*due),
            (None, None) => None,
        };
        Ok(match next {
            Some(next) => Dispatched::Wait(next.saturating_duration_since(now)),
            None => Dispatched::Empty,
        })
    }

    async fn wait_for_work(&self, max: Duration) {
        // Either way is fine: the caller dispatches again and learns what there is.
        let _ = tokio::time::timeout(max, self.work.notified()).await;
    }

    async fn heartbeat(&self, job: &LeasedJob) -> Result<bool, QueueError> {
        self.beat(job, None)
    }

    async fn sending(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError> {
        self.beat(job, Some(in_flight))
    }

    async fn answered(&self, job: &LeasedJob) -> Result<(), QueueError> {
        let now = Instant::now();
        let span = self.span();
        self.lock().restamp(job, now, span);
        Ok(())
    }

    async fn complete(
        &self,
        job: &LeasedJob,
        webhook_id: &str,
        reconciled: bool,
    ) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.end_lease(job, now, self.span())?;
        if let Some(rec) = st.jobs.get_mut(&job.id) {
            rec.webhook_id = Some(webhook_id.to_string());
            rec.reconciled = reconciled;
            rec.outcome_unknown = false;
        }
        st.finish(&job.id, JobState::Done, None);
        let sec = self.ms(now) / 1000;
        match st.done_per_sec.back_mut() {
            Some((at, n)) if *at == sec => *n += 1,
            _ => st.done_per_sec.push_back((sec, 1)),
        }
        while st
            .done_per_sec
            .front()
            .is_some_and(|(at, _)| at + DONE_HISTORY_SECS <= sec)
        {
            st.done_per_sec.pop_front();
        }
        Ok(())
    }

    async fn retry_later(
        &self,
        job: &LeasedJob,
        delay: Duration,
        error: &str,
        outcome_unknown: bool,
    ) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.end_lease(job, now, self.span())?;
        let Some(rec) = st.jobs.get_mut(&job.id) else {
            return Err(QueueError::LeaseLost(job.id.clone()));
        };
        // An unknown outcome stays unknown: a transient failure cannot prove the webhook
        // was not created (only a reconcile's `requeue` clears it), as in the Redis backend.
        rec.outcome_unknown = rec.outcome_unknown || outcome_unknown;
        if rec.attempts >= self.config.max_attempts {
            let reason = reason::gave_up(rec.attempts, error);
            st.finish(&job.id, JobState::Dead, Some(reason));
            return Ok(());
        }
        let due = now + delay;
        rec.state = JobState::Scheduled;
        rec.error = Some(error.to_string());
        rec.due = Some(due);
        st.scheduled.insert((due, job.id.clone()));
        drop(guard);
        // A waiting worker may be sleeping past this retry's time.
        self.wake();
        Ok(())
    }

    async fn rate_limited(
        &self,
        job: &LeasedJob,
        pause: Duration,
        limit: Option<u32>,
    ) -> Result<(), QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.end_lease(job, now, span)?;
        if let Some(rec) = st.jobs.get_mut(&job.id) {
            rec.attempts = rec.attempts.saturating_sub(1);
        }
        if let Some(t) = st.tenants.get_mut(&job.tenant) {
            let until = now + pause;
            // A shorter pause neither cuts a longer one short nor replaces its reason.
            if t.paused_until.is_none_or(|p| until > p) {
                t.paused_until = Some(until);
                t.pause_reason = Some(reason::rate_limited(limit));
            }
            if let Some(l) = limit.filter(|l| *l >= 1 && *l < t.limit()) {
                t.learned_limit = Some(l);
            }
        }
        st.enqueue(&job.id, true, now, span);
        drop(guard);
        self.wake();
        Ok(())
    }

    async fn requeue(&self, job: &LeasedJob, how: Requeue) -> Result<(), QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let in_flight_until = st.end_lease(job, now, span)?.filter(|u| *u > now);
        if let Some(rec) = st.jobs.get_mut(&job.id) {
            if !how.spend_attempt {
                rec.attempts = rec.attempts.saturating_sub(1);
            }
            rec.outcome_unknown = how.outcome_unknown;
            if let Some(until) = in_flight_until.filter(|_| how.outcome_unknown) {
                // Handed back mid-call: its Create may still land; reconcile after that.
                rec.state = JobState::Scheduled;
                rec.error = Some(reason::HANDED_BACK_MID_CALL.into());
                rec.due = Some(until);
                st.scheduled.insert((until, job.id.clone()));
                drop(guard);
                self.wake();
                return Ok(());
            }
        }
        st.enqueue(&job.id, true, now, span);
        drop(guard);
        self.wake();
        Ok(())
    }

    async fn bury(&self, job: &LeasedJob, reason: &str) -> Result<(), QueueError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.end_lease(job, now, self.span())?;
        st.finish(&job.id, JobState::Dead, Some(reason.to_string()));
        Ok(())
    }

    async fn done_per_second(&self, seconds: u32) -> Result<Vec<u64>, QueueError> {
        let now_sec = self.ms(Instant::now()) / 1000;
        let len = u64::from(seconds).min(DONE_HISTORY_SECS);
        let first = (now_sec + 1).saturating_sub(len);
        let mut out = vec![0; len as usize];
        for &(at, n) in &self.lock().done_per_sec {
            if (first..=now_sec).contains(&at) {
                out[(at - first) as usize] = n;
            }
        }
        Ok(out)
    }

    async fn status(&self) -> Result<QueueStatus, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let window = self.config.window;
        let mut guard = self.lock();
        let st = &mut *guard;
        let names: Vec<String> = st.tenants.keys().cloned().collect();
        for name in &names {
            st.prune(name, now, span);
        }
        let mut tenants: Vec<TenantStatus> = st
            .tenants
            .values()
            .filter_map(|t| {
                let paused = t.paused_until.filter(|p| *p > now);
                let calls = t.log.iter().filter(|(at, _)| *at + window > now).count() as u32;
                (!t.waiting.is_empty() || calls > 0 || paused.is_some()).then(|| TenantStatus {
                    tenant: t.tenant.name.clone(),
                    waiting: t.waiting.len() as u64,
                    limit: t.limit(),
                    calls_in_window: calls,
                    paused_until_ms: paused.map(|p| self.ms(p)),
                    pause_reason: paused.and(t.pause_reason.clone()),
                })
            })
            .collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let mut done = 0;
        let mut dead = 0;
        for rec in st.jobs.values() {
            match rec.state {
                JobState::Done => done += 1,
                JobState::Dead => dead += 1,
                _ => {}
            }
        }
        let oldest = st
            .jobs
            .values()
            .filter_map(|r| r.dispatched_at)
            .min()
            .map(|at| now.saturating_duration_since(at).as_millis() as u64);
        Ok(QueueStatus {
            queue: self.config.name.clone(),
            now_ms: self.ms(now),
            queued: st.tenants.values().map(|t| t.waiting.len() as u64).sum(),
            scheduled: st.scheduled.len() as u64,
            running: st.leases.len() as u64,
            done,
            dead,
            oldest_running_ms: oldest,
            tenants,
        })
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobResult>, QueueError> {
        Ok(self.lock().result(id))
    }

    async fn results(&self, tenant: Option<&str>) -> Result<Vec<JobResult>, QueueError> {
        let st = self.lock();
        Ok(st
            .finished
            .values()
            .filter_map(|id| st.result(id))
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .collect())
    }

    async fn dead(&self) -> Result<Vec<JobResult>, QueueError> {
        let st = self.lock();
        Ok(st
            .finished
            .values()
            .filter_map(|id| st.result(id))
            .filter(|r| r.status == JobState::Dead)
            .collect())
    }

    async fn retry_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let chosen = dead_ids(st, ids);
        for id in &chosen {
            if let Some(rec) = st.jobs.get_mut(id) {
                rec.attempts = 0;
                rec.error = None;
                if let Some(seq) = rec.finished_seq.take() {
                    st.finished.remove(&seq);
                }
            }
            st.enqueue(id, false, now, span);
        }
        drop(guard);
        self.wake();
        Ok(chosen.len() as u64)
    }

    async fn purge_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let chosen = dead_ids(st, ids);
        for id in &chosen {
            if let Some(rec) = st.jobs.remove(id) {
                st.keys.remove(&(rec.tenant.clone(), rec.key.clone()));
                if let Some(seq) = rec.finished_seq {
                    st.finished.remove(&seq);
                }
            }
        }
        Ok(chosen.len() as u64)
    }

    async fn purge_done(&self, ids: &[JobId]) -> Result<u64, QueueError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut count = 0;
        for id in ids {
            if st.jobs.get(id).is_some_and(|r| r.state == JobState::Done) {
                // Its key stays in `keys`: the job pushed again is a duplicate of this id.
                if let Some(seq) = st.jobs.remove(id).and_then(|r| r.finished_seq) {
                    st.finished.remove(&seq);
                }
                count += 1;
            }
        }
        Ok(count)
    }

    async fn is_idle(&self) -> Result<bool, QueueError> {
        let st = self.lock();
        Ok(st.ready.is_empty() && st.scheduled.is_empty() && st.leases.is_empty())
    }
}

/// The dead jobs among `ids` (all dead jobs when `None`).
fn dead_ids(st: &State, ids: Option<&[JobId]>) -> Vec<JobId> {
    match ids {
        Some(ids) => ids
            .iter()
            .filter(|id| st.jobs.get(id).is_some_and(|r| r.state == JobState::Dead))
            .cloned()
            .collect(),
        None => st
            .finished
            .values()
            .filter(|id| st.jobs.get(id).is_some_and(|r| r.state == JobState::Dead))
            .cloned()
            .collect(),
    }
}

/// The contract's cases live in tests/queue_conformance.rs, run on both backends; here only
/// what this backend alone has.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::queue::Dispatch;
    use crate::secret::Secret;

    fn tenant(name: &str, limit: u32) -> Tenant {
        Tenant {
            name: name.into(),
            api_base: url::Url::parse("http://127.0.0.1:1").unwrap(),
            access_key: Secret::new("ak"),
            secret_key: Secret::new("sk"),
            limit,
        }
    }

    fn job(tenant: &str, n: usize) -> NewJob {
        NewJob {
            tenant: tenant.into(),
            body: serde_json::json!({ "Description": format!("hook {n}") }).to_string(),
            key: format!("{tenant}-{n}"),
        }
    }

    async fn queue(tenants: &[(&str, u32)]) -> EmbeddedQueue {
        let q = EmbeddedQueue::new(QueueConfig {
            name: "test".into(),
            lease: Duration::from_secs(6),
            max_attempts: 3,
            ..QueueConfig::default()
        });
        let ts: Vec<Tenant> = tenants.iter().map(|(n, l)| tenant(n, *l)).collect();
        q.put_tenants(&ts).await.unwrap();
        q
    }

    async fn push_n(q: &EmbeddedQueue, tenant: &str, n: usize) {
        let jobs: Vec<NewJob> = (0..n).map(|i| job(tenant, i)).collect();
        q.push(&jobs).await.unwrap();
    }

    /// Dispatches until `want` jobs were handed out, sleeping (on the paused clock) whenever
    /// the queue says wait. Returns each job with the instant of its dispatch.
    async fn drain(q: &EmbeddedQueue, want: usize) -> Vec<(Instant, LeasedJob)> {
        let mut out = Vec::new();
        while out.len() < want {
            match q.dispatch().await.unwrap() {
                Dispatch::Job(j) => {
                    out.push((Instant::now(), j.clone()));
                    q.answered(&j).await.unwrap();
                    q.complete(&j, "id", false).await.unwrap();
                }
                Dispatch::Wait(d) => tokio::time::sleep(d).await,
                Dispatch::Empty => panic!("queue empty after {} of {want}", out.len()),
            }
        }
        out
    }

    /// Embedded only: its per-second buckets (bounded to the last [`DONE_HISTORY_SECS`]),
    /// second by second on the paused clock. Redis counts from its `done` set, in real
    /// seconds; the suite checks the totals on both.
    #[tokio::test(start_paused = true)]
    async fn done_per_second_counts_each_second_and_forgets_old_ones() {
        let q = queue(&[("a", 100)]).await;
        push_n(&q, "a", 6).await;
        // Start on a second boundary of the wall clock the queue reports.
        let into_second = q.ms(Instant::now()) % 1000;
        tokio::time::sleep(Duration::from_millis(1000 - into_second)).await;
        drain(&q, 2).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        drain(&q, 3).await;
        let series = q.done_per_second(5).await.unwrap();
        assert_eq!(series, vec![0, 0, 2, 0, 3]);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(q.done_per_second(60).await.unwrap().iter().sum::<u64>(), 0);
        drain(&q, 1).await;
        assert_eq!(q.done_per_second(60).await.unwrap().iter().sum::<u64>(), 1);
    }
}
