//! Leases of the embedded queue: handing a job out (spending its tenant's call), extending
//! and fencing a lease, ending one when a job is finished, and taking back jobs whose
//! leases expired (with due retries, once per dispatch).

use std::time::Duration;

use tokio::time::Instant;

use super::EmbeddedQueue;
use super::state::State;
use crate::job::JobState;
use crate::queue::{Fence, LeasedJob, QueueError, reason};

impl State {
    /// Moves due retries back to the front of their tenants' lists, and takes back jobs
    /// whose leases expired. Returns whether anything moved.
    pub(super) fn housekeeping(&mut self, now: Instant, span: Duration, max_attempts: u32) -> bool {
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
            let call = job.lease.take().map(|(token, _)| token);
            job.dispatched_at = None;
            let tenant = job.tenant.clone();
            if let Some(call) = call {
                self.landed(&tenant, &call, now, span);
            }
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
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

    /// How every finishing call starts: re-stamps the job's call at `now` (whether or not
    /// the lease is still held), then checks that `job` still holds its lease; on success
    /// releases it and returns until when a Create it sent may still land.
    pub(super) fn end_lease(
        &mut self,
        job: &LeasedJob,
        now: Instant,
        span: Duration,
    ) -> Result<Option<Instant>, QueueError> {
        self.restamp(job, now, span);
        self.take_lease(job, now, span)
    }

    /// Checks that `job` still holds its lease; on success releases it and returns until
    /// when a Create it sent may still land.
    pub(super) fn take_lease(
        &mut self,
        job: &LeasedJob,
        now: Instant,
        span: Duration,
    ) -> Result<Option<Instant>, QueueError> {
        let rec = self
            .jobs
            .get_mut(&job.id)
            .ok_or_else(|| QueueError::LeaseLost(job.id.clone()))?;
        match &rec.lease {
            Some((token, expiry)) if *token == job.lease && rec.state == JobState::Running => {
                self.leases.remove(&(*expiry, job.id.clone()));
                rec.lease = None;
                rec.dispatched_at = None;
                let until = rec.call_until.take();
                let tenant = rec.tenant.clone();
                self.landed(&tenant, &job.lease, now, span);
                Ok(until)
            }
            _ => Err(QueueError::LeaseLost(job.id.clone())),
        }
    }
}

impl EmbeddedQueue {
    /// Extends a lease; with `in_flight`, also records until when the Create about to be
    /// sent may still land (the fence of [`Queue::sending`](crate::queue::Queue::sending)).
    pub(super) fn beat(
        &self,
        job: &LeasedJob,
        in_flight: Option<Duration>,
    ) -> Result<bool, QueueError> {
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
                if let Some(expiry) = st
                    .tenants
                    .get_mut(&job.tenant)
                    .and_then(|t| t.flying.get_mut(&job.lease))
                {
                    *expiry = new;
                }
                // The fence re-stamps the call at now: a Create that goes out late counts in
                // its tenant's window from when it goes out.
                if in_flight.is_some() {
                    st.restamp(job, now, self.span());
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Leases the next job of `tenant`, whose turn it is at `now` (the moment of this job's
    /// dispatch: see [`Queue::dispatch_many`](crate::queue::Queue::dispatch_many)): spends one of its calls, re-scores it behind
    /// every tenant already waiting, and, with `fence`, records until when the job's Create
    /// may land (see [`Fence`]). `asked` is when the dispatch request came in, the reading
    /// the fence's slack counts from.
    pub(super) fn lease_next(
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
        t.last_dispatch = Some(now);
        t.flying.insert(token.clone(), now + self.config.lease);
        t.count_today(now, &st.days);
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
}
