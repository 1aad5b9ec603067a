//! The embedded backend: the [`Queue`] contract in one process, for the demo and for runs
//! without Redis.
//!
//! The semantics are the Redis backend's (tests/queue_conformance.rs holds both to them),
//! kept in memory behind one `Mutex`:
//! - `state.rs`: each tenant's list of waiting jobs, job records, the idempotency index, the
//!   schedule and the finishing order;
//! - `window.rs`: the limiter, an exact sliding log of each tenant's recent calls, and the
//!   ready set of tenants ordered by when their next call is allowed (ties in the order they
//!   became ready, so tenants take turns);
//! - `lease.rs`: handing jobs out, heartbeats and fences, and taking back expired leases;
//! - `pulse.rs`: what a scrape reads of shares, spent quotas and holds (`Queue::pulse`);
//! - this file: the [`Queue`] methods, each one critical section over the state.
//!
//! Time is `tokio::time::Instant`, so tests run on tokio's paused clock; instants are turned
//! into milliseconds since the Unix epoch only for what callers see.
//!
//! A std `Mutex` and not tokio's: no lock is held across an `.await`, and every critical
//! section is short bookkeeping.

mod lease;
mod pulse;
mod state;
mod window;

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Completion, Dispatched, Fence, HoldKind, HostFailed, JobPage, LeasedJob, NewHold, PageOf,
    Pushed, Queue, QueueConfig, QueueError, QueuePause, QueuePulse, QueueStatus, Requeue,
    ShareMode, ShareReason, TenantHold, TenantPage, TenantQuery, TenantRow, TenantSort,
    TenantState, TenantStatus, UnreachablePolicy, hold, reason, share, tenants,
};
use crate::job::{Attempt, HISTORY_LEN, JobId, JobResult, JobState, NewJob};
use crate::tenant::Tenant;
use state::{JobRecord, State};

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

impl EmbeddedQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let state = State {
            adaptive: config.share == ShareMode::Adaptive,
            slow_start: config.slow_start,
            days: state::Days {
                length_ms: (config.day.as_millis() as u64).max(1),
                anchor: (Instant::now(), epoch_ms),
            },
            ..State::default()
        };
        EmbeddedQueue {
            config,
            state: Mutex::new(state),
            work: Notify::new(),
            epoch: Instant::now(),
            epoch_ms,
        }
    }

    /// Releases the state and, when a lease's end (or an answer) put a tenant at its cap of
    /// calls in flight back in the ready set ([`State::uncapped`]), wakes waiting workers.
    fn unlock_waking(&self, mut guard: MutexGuard<'_, State>) {
        let uncapped = std::mem::take(&mut guard.uncapped);
        drop(guard);
        if uncapped {
            self.wake();
        }
    }

    /// The state; a panic in another holder (a bug) does not make the queue unusable, since
    /// every critical section leaves the state consistent before anything can panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a success once the job's call is re-stamped: the Id, atomically with the
    /// completion; a completion repeated (its first answer lost) finds the job done with
    /// this Id.
    fn record_success(
        &self,
        st: &mut State,
        c: &Completion<'_>,
        now: Instant,
    ) -> Result<(), QueueError> {
        let job = c.job;
        if let Err(lost) = st.take_lease(job, now, self.span()) {
            let done = st.jobs.get(&job.id).is_some_and(|rec| {
                rec.state == JobState::Done && rec.webhook_id.as_deref() == Some(c.webhook_id)
            });
            return if done { Ok(()) } else { Err(lost) };
        }
        if let Some(rec) = st.jobs.get_mut(&job.id) {
            rec.webhook_id = Some(c.webhook_id.to_string());
            rec.reconciled = c.reconciled;
            rec.outcome_unknown = false;
            rec.outcome = Some(c.outcome);
            rec.digest = Some(crate::queue::revision::done_digest(&job.body));
            rec.fields = Some(crate::queue::revision::done_fields(&job.body));
        }
        *st.outcomes.entry(c.outcome).or_default() += 1;
        st.finish(&job.id, JobState::Done, None);
        st.record_done(self.ms(now) / 1000);
        if let Some(t) = st.tenants.get_mut(&job.tenant) {
            t.streak = 0;
            t.probe = None;
        }
        Ok(())
    }

    /// Window plus margin: how long a call counts against its tenant.
    fn span(&self) -> Duration {
        self.config.window + self.config.margin
    }

    fn ms(&self, at: Instant) -> u64 {
        self.epoch_ms + at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// Puts a hold on a registered tenant (the lock held): a timed hold does not replace
    /// one without an end.
    fn hold_locked(
        &self,
        st: &mut State,
        tenant: &str,
        new: &NewHold,
        (failures, holds): (u32, u32),
        now: Instant,
        span: Duration,
    ) {
        let Some(t) = st.tenants.get_mut(tenant) else {
            return;
        };
        if new.length.is_some() && t.held_indefinitely() {
            return;
        }
        let until = new.length.map(|d| now + d);
        let record = TenantHold {
            kind: new.kind,
            reason: new.reason.clone(),
            since_ms: self.ms(now),
            until_ms: until.map(|u| self.ms(u)),
            failures,
            holds,
            by: new.by.clone(),
        };
        t.hold = Some((record, until));
        st.rescore(tenant, now, span, None);
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
                Some(existing) => {
                    let old = &existing.tenant;
                    let same_keys =
                        old.access_key == t.access_key && old.secret_key == t.secret_key;
                    let mut t = t.clone();
                    // A record without an API base keeps the one discovered for these keys.
                    if same_keys && t.api_base.is_none() {
                        t.api_base = old.api_base.clone();
                    }
                    // New keys end a keys_refused hold.
                    if !same_keys
                        && existing
                            .hold
                            .as_ref()
                            .is_some_and(|(h, _)| h.kind == HoldKind::KeysRefused)
                    {
                        existing.hold = None;
                        existing.paused_until = None;
                        existing.pause_reason = None;
                        existing.streak = 0;
                    }
                    // New keys or a new host have not answered yet (`flight_cap`).
                    if !same_keys || t.api_base != existing.tenant.api_base {
                        existing.probe = Some(state::Probe::New);
                    }
                    existing.tenant = t;
                }
                None => {
                    st.tenants
                        .insert(t.name.clone(), state::TenantState::new(t.clone()));
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
            let legacy = j.legacy_key.as_ref().map(|k| (j.tenant.clone(), k.clone()));
            let existing = st.keys.get(&scoped).cloned();
            // Keyed by version 1 (the same tenant and body): that job is this one, and its
            // key version 2 names it too (as push.lua does).
            if existing.is_none()
                && let Some(old) = legacy.and_then(|k| st.keys.get(&k).cloned())
            {
                st.keys.insert(scoped, old.clone());
                if let Some(rec) = st.jobs.get_mut(&old)
                    && rec.state == JobState::Done
                    && rec.digest.is_none()
                {
                    rec.digest = Some(j.digest());
                }
                out.push(Pushed::Duplicate { job: old });
                continue;
            }
            let record = existing.as_ref().and_then(|id| st.jobs.get(id)).map(|r| {
                crate::queue::revision::KeyRecord {
                    state: r.state,
                    outcome: r.outcome,
                    digest: r.digest.as_deref(),
                    webhook_id: r.webhook_id.as_deref(),
                }
            });
            let verdict = match (&existing, record) {
                // A purged record keeps its key taken, as in Redis.
                (Some(_), None) => crate::queue::revision::PushAs::Duplicate,
                (_, record) => crate::queue::revision::push_as(record, j),
            };
            let operation = match (verdict, existing) {
                (crate::queue::revision::PushAs::New(op), _) => op,
                (crate::queue::revision::PushAs::Duplicate, Some(existing)) => {
                    out.push(Pushed::Duplicate { job: existing });
                    continue;
                }
                // Not returned for a new key.
                (crate::queue::revision::PushAs::Duplicate, None) => crate::job::Operation::Create,
            };
            let id = JobId::new();
            st.keys.insert(scoped, id.clone());
            st.jobs.insert(
                id.clone(),
                JobRecord {
                    tenant: j.tenant.clone(),
                    key: j.key.clone(),
                    body: operation.wrap(&j.body),
                    attempts: 0,
                    outcome_unknown: false,
                    state: JobState::Queued,
                    webhook_id: None,
                    error: None,
                    reconciled: false,
                    outcome: None,
                    digest: None,
                    fields: None,
                    lease: None,
                    call_until: None,
                    dispatched_at: None,
                    due: None,
                    finished_seq: None,
                    finished_at: None,
                    pushed_at: now,
                    history: VecDeque::new(),
                },
            );
            st.enqueue(&id, false, now, span);
            if let Some(t) = st.tenants.get_mut(&j.tenant) {
                t.counts.unfinished += 1;
            }
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
        if st.paused.is_some() {
            // Nothing is handed out; `resume_queue` wakes the waiting workers.
            return Ok(Dispatched::Empty);
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
            // At its cap of calls in flight: keyed at its first lease's expiry, or sooner
            // when one of its calls lands.
            if st.flight_full(&tenant, at_n, span).is_some() {
                continue;
            }
            jobs.push(self.lease_next(st, tenant, (at_n, now), span, fence)?);
        }
        if !jobs.is_empty() {
            return Ok(Dispatched::Jobs(jobs));
        }
        // The next tenant's turn, the next retry due, or the first lease's expiry (its job
        // comes back with no wake-up), whichever is first.
        let next = [
            st.ready.first().map(|(at, _, _)| *at),
            st.scheduled.first().map(|(due, _)| *due),
            st.leases.first().map(|(until, _)| *until),
        ]
        .into_iter()
        .flatten()
        .min();
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
        let mut guard = self.lock();
        guard.restamp(job, now, span);
        guard.landed(&job.tenant, &job.lease, now, span);
        self.unlock_waking(guard);
        Ok(())
    }

    async fn complete_many(&self, done: &[Completion<'_>]) -> Result<Vec<bool>, QueueError> {
        let now = Instant::now();
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut recorded = Vec::with_capacity(done.len());
        for c in done {
            let answered = now.checked_sub(c.answered_ago).unwrap_or(now);
            st.restamp_at(c.job, answered, now, self.span());
            recorded.push(match self.record_success(st, c, now) {
                Ok(()) => true,
                Err(QueueError::LeaseLost(_)) => false,
                Err(e) => return Err(e),
            });
            if let Some(attempt) = c.attempt {
                keep_attempt(st, &c.job.id, attempt);
            }
        }
        self.unlock_waking(guard);
        Ok(recorded)
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
        let mut learned = false;
        if let Some(t) = st.tenants.get_mut(&job.tenant) {
            let until = now + pause;
            // A shorter pause neither cuts a longer one short nor replaces its reason.
            if t.paused_until.is_none_or(|p| until > p) {
                t.paused_until = Some(until);
                t.pause_reason = Some(reason::rate_limited(limit));
            }
            if let Some(l) = limit.filter(|l| *l >= 1 && *l < t.limit()) {
                t.learned_limit = Some(l);
                learned = true;
            }
        }
        // A pause longer than the window is a quota (a daily one), not the account's 5-s
        // window crowded by another client: it parks the tenant and leaves the share alone.
        // So does an answer naming a lower limit than the tenant's: that explains it.
        if st.adaptive && pause <= span && !learned {
            st.adapt_share(&job.tenant, now, span);
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
        self.unlock_waking(guard);
        Ok(())
    }

    async fn learn_daily_limit(&self, tenant: &str, calls: u32) -> Result<(), QueueError> {
        if calls == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(t) = st.tenants.get_mut(tenant) else {
            return Ok(());
        };
        t.learned_daily = Some(t.learned_daily.map_or(calls, |l| l.min(calls)));
        st.rescore(tenant, now, span, None);
        Ok(())
    }

    async fn done_per_second(&self, seconds: u32) -> Result<Vec<u64>, QueueError> {
        let now_sec = self.ms(Instant::now()) / 1000;
        Ok(self.lock().done_series(now_sec, seconds))
    }

    async fn set_tenant_host(
        &self,
        tenant: &str,
        api_base: Option<&url::Url>,
        access_key: &str,
    ) -> Result<bool, QueueError> {
        let mut st = self.lock();
        let Some(t) = st.tenants.get_mut(tenant) else {
            return Ok(false);
        };
        if t.tenant.access_key.expose() != access_key {
            return Ok(false);
        }
        if t.tenant.api_base.as_ref() != api_base {
            // A new host has not answered yet (`flight_cap`); nor has a host to discover.
            t.probe = Some(state::Probe::New);
        }
        t.tenant.api_base = api_base.cloned();
        drop(st);
        self.wake();
        Ok(true)
    }

    async fn unsent(&self, job: &LeasedJob) -> Result<(), QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(t) = st.tenants.get_mut(&job.tenant) else {
            return Ok(());
        };
        let Some(pos) = t.log.iter().position(|(_, l)| *l == job.lease) else {
            return Ok(());
        };
        t.log.remove(pos);
        // A new turn: the score may move earlier (a kept turn only ever moves later).
        st.rescore(&job.tenant, now, span, Some(now));
        drop(guard);
        self.wake();
        Ok(())
    }

    async fn take_call(&self, tenant: &str, call: &str) -> Result<Option<Duration>, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let now_ms = self.ms(now);
        let mut guard = self.lock();
        let st = &mut *guard;
        st.prune(tenant, now, span);
        let (adaptive, days) = (st.adaptive, st.days);
        let Some(t) = st.tenants.get_mut(tenant) else {
            return Ok(Some(span));
        };
        if t.held_indefinitely() {
            return Ok(Some(Duration::from_millis(
                hold::FOREVER_MS.saturating_sub(now_ms),
            )));
        }
        let at = State::allowed_at(t, now, span, adaptive, &days);
        if at > now {
            return Ok(Some(at - now));
        }
        t.log.push_back((now, call.to_string()));
        t.last_dispatch = Some(now);
        t.count_today(now, &days);
        st.rescore(tenant, now, span, None);
        Ok(None)
    }

    async fn hold(&self, tenant: &str, new: NewHold) -> Result<bool, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        if !st.tenants.contains_key(tenant) {
            return Ok(false);
        }
        self.hold_locked(st, tenant, &new, (0, 0), now, span);
        Ok(true)
    }

    async fn release(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(t) = st.tenants.get_mut(tenant) else {
            return Ok(None);
        };
        let Some((released, _)) = t.hold.take() else {
            return Ok(None);
        };
        t.paused_until = None;
        t.pause_reason = None;
        t.streak = 0;
        st.rescore(tenant, now, span, Some(now));
        drop(guard);
        self.wake();
        Ok(Some(released))
    }

    async fn tenant_hold(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError> {
        let now = Instant::now();
        let st = self.lock();
        Ok(st.tenants.get(tenant).and_then(|t| match &t.hold {
            Some((h, until)) if until.is_none_or(|u| u > now) => Some(h.clone()),
            _ => None,
        }))
    }

    async fn host_answered(&self, tenant: &str) -> Result<(), QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(t) = st.tenants.get_mut(tenant) else {
            return Ok(());
        };
        t.streak = 0;
        t.probe = None;
        // Out of a slow start: a tenant at its old cap may call again.
        st.uncap(tenant, now, span);
        self.unlock_waking(guard);
        Ok(())
    }

    async fn host_failed(
        &self,
        tenant: &str,
        policy: UnreachablePolicy,
        reason: &str,
    ) -> Result<HostFailed, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(t) = st.tenants.get_mut(tenant) else {
            return Ok(HostFailed {
                failures: 0,
                held_for: None,
            });
        };
        t.streak = t.streak.saturating_add(1);
        let failures = t.streak;
        let after = policy.after.max(1);
        let unreachable = t
            .hold
            .as_ref()
            .filter(|(h, _)| h.kind == HoldKind::HostUnreachable);
        let in_force = unreachable.is_some_and(|(_, until)| until.is_some_and(|u| u > now));
        if failures < after || t.held_indefinitely() || in_force {
            return Ok(HostFailed {
                failures,
                held_for: None,
            });
        }
        // The same run when the streak has not started over since the last hold.
        let holds = match unreachable {
            Some((h, _)) if h.failures < failures => h.holds.saturating_add(1),
            _ => 1,
        };
        let length = hold::backoff(policy, holds);
        let new = NewHold {
            kind: HoldKind::HostUnreachable,
            reason: reason.to_string(),
            length: Some(length),
            by: None,
        };
        self.hold_locked(st, tenant, &new, (failures, holds), now, span);
        Ok(HostFailed {
            failures,
            held_for: Some(length),
        })
    }

    async fn status(&self) -> Result<QueueStatus, QueueError> {
        let now = Instant::now();
        let span = self.span();
        let window = self.config.window;
        let mut guard = self.lock();
        let st = &mut *guard;
        let adaptive = st.adaptive;
        let days = st.days;
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
                let share = t.cap(now, span, adaptive);
                let exact = t.share(now, span, adaptive);
                let day = days.of(now);
                let calls_today = if t.today.0 == day { t.today.1 } else { 0 };
                let quota_until = t.quota_until(now, &days);
                (!t.waiting.is_empty() || calls > 0 || paused.is_some() || quota_until.is_some())
                    .then(|| TenantStatus {
                        tenant: t.tenant.name.clone(),
                        waiting: t.waiting.len() as u64,
                        limit: t.limit(),
                        configured_limit: t.tenant.limit,
                        reserve: t.tenant.reserve,
                        share,
                        share_calls: share::shown(exact),
                        other_use: share::other_use_shown(t.limit(), t.tenant.reserve, exact),
                        share_reason: ShareReason::of(
                            t.tenant.limit,
                            t.limit(),
                            t.tenant.reserve,
                            exact,
                        ),
                        daily_limit: t.daily_limit(),
                        daily_limit_learned: t.daily_limit_learned(),
                        calls_today,
                        quota_until_ms: quota_until.map(|at| self.ms(at)),
                        calls_in_window: calls,
                        paused_until_ms: paused.map(|p| self.ms(p)),
                        pause_reason: paused.and(t.pause_reason.clone()),
                        hold: None,
                        host: None,
                    })
            })
            .collect();
        let holds: Vec<(String, TenantHold)> = st
            .tenants
            .values()
            .filter_map(|t| {
                t.hold
                    .as_ref()
                    .map(|(h, _)| (t.tenant.name.clone(), h.clone()))
            })
            .collect();
        let now_ms = self.ms(now);
        let mut status_tenants = QueueStatus {
            now_ms,
            tenants: std::mem::take(&mut tenants),
            ..QueueStatus::default()
        };
        hold::merge(&mut status_tenants, holds);
        tenants = status_tenants.tenants;
        for row in &mut tenants {
            row.host = st
                .tenants
                .get(&row.tenant)
                .and_then(|t| t.tenant.api_base.as_ref())
                .map(ToString::to_string);
        }
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
            paused: st.paused.clone(),
            outcomes: crate::job::Outcome::ALL
                .iter()
                .map(|o| {
                    let n = st.outcomes.get(o).copied().unwrap_or(0);
                    (o.as_str().to_string(), n)
                })
                .collect(),
        })
    }

    async fn note_attempt(&self, id: &JobId, attempt: &Attempt) -> Result<(), QueueError> {
        keep_attempt(&mut self.lock(), id, attempt);
        Ok(())
    }

    async fn jobs_page(
        &self,
        of: PageOf,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let limit = limit.max(1);
        let st = self.lock();
        let bad = |c: &str| QueueError::Config(format!("cursor {c:?} is not one this queue gave"));
        match of {
            PageOf::Done | PageOf::Dead => {
                let want = if of == PageOf::Done {
                    JobState::Done
                } else {
                    JobState::Dead
                };
                let below = match cursor {
                    Some(c) => c.parse::<u64>().map_err(|_| bad(c))?,
                    None => u64::MAX,
                };
                let mut jobs = Vec::new();
                let mut next = None;
                for (seq, id) in st.finished.range(..below).rev() {
                    if st.jobs.get(id).is_some_and(|r| r.state == want) {
                        if jobs.len() == limit {
                            next = Some((seq + 1).to_string());
                            break;
                        }
                        jobs.extend(st.result(id));
                    }
                }
                Ok(JobPage { jobs, next })
            }
            PageOf::Waiting => {
                let mut ids: Vec<&JobId> = st
                    .jobs
                    .iter()
                    .filter(|(id, r)| {
                        !matches!(r.state, JobState::Done | JobState::Dead)
                            && cursor.is_none_or(|c| id.0.as_str() > c)
                    })
                    .map(|(id, _)| id)
                    .collect();
                ids.sort_unstable();
                let next = (ids.len() > limit).then(|| ids[limit - 1].0.clone());
                let jobs = ids
                    .iter()
                    .take(limit)
                    .filter_map(|id| st.result(id))
                    .collect();
                Ok(JobPage { jobs, next })
            }
        }
    }

    async fn find_job(&self, tenant: &str, key: &str) -> Result<Option<JobId>, QueueError> {
        Ok(self
            .lock()
            .keys
            .get(&(tenant.to_string(), key.to_string()))
            .cloned())
    }

    async fn attempts(&self, id: &JobId) -> Result<Vec<Attempt>, QueueError> {
        Ok(self
            .lock()
            .jobs
            .get(id)
            .map(|r| r.history.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn pulse(&self, top: usize) -> Result<QueuePulse, QueueError> {
        let now = Instant::now();
        let now_ms = self.ms(now);
        let st = self.lock();
        // In process, a walk over the tenants with waiting jobs costs microseconds; Redis
        // keeps an index instead (see the Redis backend's `oldest`).
        let mut heads: Vec<(String, u64)> = st
            .tenants
            .values()
            .filter_map(|t| {
                let at = st.jobs.get(t.waiting.front()?)?.pushed_at;
                let age = now.saturating_duration_since(at).as_millis() as u64;
                Some((t.tenant.name.clone(), age))
            })
            .collect();
        heads.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut throttled: Vec<String> = st
            .tenants
            .values()
            .filter(|t| !t.waiting.is_empty())
            .filter(|t| t.ready_key.as_ref().is_some_and(|(at, _, _)| *at > now))
            .map(|t| t.tenant.name.clone())
            .collect();
        throttled.sort_unstable();
        let (mut done, mut dead) = (0, 0);
        for rec in st.jobs.values() {
            match rec.state {
                JobState::Done => done += 1,
                JobState::Dead => dead += 1,
                _ => {}
            }
        }
        let mut pulse = QueuePulse {
            now_ms,
            queued: st.tenants.values().map(|t| t.waiting.len() as u64).sum(),
            scheduled: st.scheduled.len() as u64,
            running: st.leases.len() as u64,
            done,
            dead,
            done_total: st.done_total,
            oldest_running_ms: st
                .jobs
                .values()
                .filter_map(|r| r.dispatched_at)
                .min()
                .map(|at| now.saturating_duration_since(at).as_millis() as u64),
            latency_ms: heads.first().map(|(_, age)| *age),
            tenant_latency_ms: heads.into_iter().take(top).collect(),
            throttled: throttled.len() as u64,
            throttled_tenants: throttled.into_iter().take(top).collect(),
            paused: st.paused.is_some(),
            ..QueuePulse::default()
        };
        st.pulse_shares(&mut pulse, now, self.span(), top, |at| self.ms(at));
        Ok(pulse)
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
        let chosen = st.dead_ids(ids);
        for id in &chosen {
            if let Some(rec) = st.jobs.get_mut(id) {
                rec.attempts = 0;
                rec.error = None;
                if let Some(seq) = rec.finished_seq.take() {
                    st.finished.remove(&seq);
                }
                if let Some(t) = st.tenants.get_mut(&rec.tenant) {
                    t.counts.dead = t.counts.dead.saturating_sub(1);
                    t.counts.unfinished += 1;
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
        let chosen = st.dead_ids(ids);
        for id in &chosen {
            if let Some(rec) = st.jobs.remove(id) {
                if let Some(t) = st.tenants.get_mut(&rec.tenant) {
                    t.counts.dead = t.counts.dead.saturating_sub(1);
                }
                st.keys.remove(&(rec.tenant.clone(), rec.key.clone()));
                if let Some(seq) = rec.finished_seq {
                    st.finished.remove(&seq);
                }
            }
        }
        Ok(chosen.len() as u64)
    }

    async fn purge_done_before(&self, age: Duration, max: usize) -> Result<u64, QueueError> {
        let now = Instant::now();
        let old: Vec<JobId> = {
            let st = self.lock();
            st.finished
                .values()
                .filter(|id| {
                    st.jobs.get(*id).is_some_and(|r| {
                        r.state == JobState::Done && r.finished_at.is_some_and(|at| at + age < now)
                    })
                })
                .take(max)
                .cloned()
                .collect()
        };
        self.purge_done(&old).await
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

    async fn tenants_page(&self, query: &TenantQuery) -> Result<TenantPage, QueueError> {
        let offset = query.offset()?;
        let now = Instant::now();
        let span = self.span();
        let window = self.config.window;
        let st = self.lock();
        // In process, ordering every tenant costs about a millisecond at 10,000; the rows
        // come from the counters, not from the jobs.
        let mut order: Vec<&state::TenantState> = st.tenants.values().collect();
        let count = |t: &state::TenantState| match query.sort {
            TenantSort::Name => 0,
            TenantSort::Waiting => t.counts.unfinished,
            TenantSort::Done => t.counts.done,
            TenantSort::Dead => t.counts.dead,
        };
        order.sort_by(|a, b| {
            count(b)
                .cmp(&count(a))
                .then_with(|| a.tenant.name.cmp(&b.tenant.name))
        });
        let mut page = TenantPage {
            total: order.len() as u64,
            ..TenantPage::default()
        };
        let end = offset.saturating_add(tenants::PAGE_BUDGET).min(order.len());
        for (at, t) in order.iter().enumerate().take(end).skip(offset) {
            if page.tenants.len() == query.rows() {
                page.next = Some(at.to_string());
                return Ok(page);
            }
            let hold = t
                .hold
                .as_ref()
                .filter(|(_, until)| until.is_none_or(|u| u > now))
                .map(|(h, _)| h.clone());
            let next_call = t
                .ready_key
                .as_ref()
                .map(|(at, _, _)| *at)
                .filter(|at| *at > now && !t.waiting.is_empty());
            let queued = t.waiting.len() as u64;
            let standing = TenantState::of(
                hold.is_some(),
                queued,
                next_call.is_some(),
                t.counts.unfinished,
                t.counts.dead,
            );
            if query.filter.is_some_and(|f| f != standing) {
                continue;
            }
            page.tenants.push(TenantRow {
                tenant: t.tenant.name.clone(),
                state: standing,
                waiting: queued,
                in_flight: t.counts.unfinished.saturating_sub(queued),
                done: t.counts.done,
                dead: t.counts.dead,
                calls_in_window: t.log.iter().filter(|(at, _)| *at + window > now).count() as u32,
                share: t.cap(now, span, st.adaptive),
                limit: t.limit(),
                next_call_ms: next_call.filter(|_| hold.is_none()).map(|at| self.ms(at)),
                hold,
            });
        }
        page.next = (end < order.len()).then(|| end.to_string());
        Ok(page)
    }

    async fn pause_queue(&self, reason: &str, by: Option<&str>) -> Result<QueuePause, QueueError> {
        let pause = QueuePause {
            reason: reason.to_string(),
            by: by.map(str::to_string),
            since_ms: self.ms(Instant::now()),
        };
        self.lock().paused = Some(pause.clone());
        Ok(pause)
    }

    async fn resume_queue(&self) -> Result<Option<QueuePause>, QueueError> {
        let was = self.lock().paused.take();
        self.wake();
        Ok(was)
    }

    async fn queue_pause(&self) -> Result<Option<QueuePause>, QueueError> {
        Ok(self.lock().paused.clone())
    }

    async fn is_idle(&self) -> Result<bool, QueueError> {
        let st = self.lock();
        Ok(st.leases.is_empty()
            && (st.paused.is_some() || (st.ready.is_empty() && st.scheduled.is_empty())))
    }
}

/// Adds a call to a job's history, keeping the last [`HISTORY_LEN`]; nothing for a job
/// that is no longer known.
fn keep_attempt(st: &mut State, id: &JobId, attempt: &Attempt) {
    if let Some(rec) = st.jobs.get_mut(id) {
        rec.history.push_back(attempt.clone());
        while rec.history.len() > HISTORY_LEN {
            rec.history.pop_front();
        }
    }
}
