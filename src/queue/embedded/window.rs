//! The limiter of the embedded queue: an exact sliding log of each tenant's recent calls,
//! and the ready set that orders tenants by when their next call is allowed.
//!
//! A call is allowed at `t` when fewer than `limit` logged calls lie in
//! `(t - window - margin, t]`, so no window ever holds more than `limit` calls.
//! [`Queue::answered`](crate::queue::Queue::answered) moves a call's entry to the moment its answer arrived, which only
//! ever makes the log more cautious.

use std::time::Duration;

use tokio::time::Instant;

use super::state::{Days, Probe, State, TenantState};
use crate::queue::{LeasedJob, share};

impl TenantState {
    /// Calls allowed per window: the imported limit, or the lower one LeadSquared named.
    pub(super) fn limit(&self) -> u32 {
        let configured = self.tenant.limit.max(1);
        self.learned_limit
            .map_or(configured, |l| l.clamp(1, configured))
    }

    /// Calls allowed per day: the imported daily limit, or the lower quota LeadSquared
    /// named.
    pub(super) fn daily_limit(&self) -> Option<u32> {
        match (self.tenant.daily_limit, self.learned_daily) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        }
    }

    /// Whether the daily limit in force is the one LeadSquared named.
    pub(super) fn daily_limit_learned(&self) -> bool {
        self.learned_daily.is_some() && self.daily_limit() == self.learned_daily
    }

    /// When it has made its `daily_limit` calls today: the end of the day.
    pub(super) fn quota_until(&self, now: Instant, days: &Days) -> Option<Instant> {
        let limit = u64::from(self.daily_limit()?);
        let day = days.of(now);
        (self.today.0 == day && self.today.1 >= limit).then(|| days.end_of(day))
    }

    /// Counts a call dispatched at `now` against today's quota.
    pub(super) fn count_today(&mut self, now: Instant, days: &Days) {
        let day = days.of(now);
        if self.today.0 == day {
            self.today.1 += 1;
        } else {
            self.today = (day, 1);
        }
    }

    /// Its share now, calls per window: `limit − reserve` (at least 1), or with adaptive
    /// shares the share under that, climbing since its last cut (see
    /// [`crate::queue::share`]).
    pub(super) fn share(&self, now: Instant, span: Duration, adaptive: bool) -> f64 {
        let cap = share::cap(self.limit(), self.tenant.reserve);
        match self.share.filter(|_| adaptive) {
            Some((set, since)) => {
                share::share_at(set, now.saturating_duration_since(since), span, cap)
            }
            None => f64::from(cap),
        }
    }

    /// The most calls the tenant may make in a window now, and the least gap between two
    /// while its share is under its limit ([`share::pace`]).
    pub(super) fn pacing(
        &self,
        now: Instant,
        span: Duration,
        adaptive: bool,
    ) -> (u32, Option<Duration>) {
        let cap = share::cap(self.limit(), self.tenant.reserve);
        match share::pace(self.share(now, span, adaptive), cap, self.limit(), span) {
            Some((most, gap)) => (most, Some(gap)),
            None => (cap, None),
        }
    }

    /// The most calls the tenant may make in a window now (see [`TenantState::pacing`]).
    pub(super) fn cap(&self, now: Instant, span: Duration, adaptive: bool) -> u32 {
        self.pacing(now, span, adaptive).0
    }
}

impl TenantState {
    /// How many calls it may have in flight: its cap, or 1 with `slow_start` while its host
    /// has not answered yet (as `flight_cap` in the Redis backend's dispatch.lua).
    pub(super) fn flight_cap(
        &self,
        now: Instant,
        span: Duration,
        adaptive: bool,
        slow_start: bool,
    ) -> u32 {
        match self.probe {
            Some(Probe::New) if slow_start => 1,
            _ => self.cap(now, span, adaptive),
        }
    }
}

impl State {
    /// `tenant`'s call `call` (its lease token) was answered, or its lease ended: one call
    /// fewer in flight. A tenant that was at its cap goes back in the ready set, and
    /// [`State::uncapped`] tells the caller to wake waiting workers.
    pub(super) fn landed(&mut self, tenant: &str, call: &str, now: Instant, span: Duration) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        t.flying.remove(call);
        self.uncap(tenant, now, span);
    }

    /// When the tenant was at its cap of calls in flight (in [`State::capped`]): puts it
    /// back in the ready set as of now (it was keyed at its first lease's expiry), and tells
    /// the caller to wake waiting workers ([`State::uncapped`]). As `uncap` in prelude.lua.
    pub(super) fn uncap(&mut self, tenant: &str, now: Instant, span: Duration) {
        if !self.capped.remove(tenant) {
            return;
        }
        if let Some(key) = self
            .tenants
            .get_mut(tenant)
            .and_then(|t| t.ready_key.take())
        {
            self.ready.remove(&key);
        }
        self.rescore(tenant, now, span, None);
        self.uncapped = true;
    }

    /// When `tenant`, whose turn it is at `now`, is at its cap of calls in flight: the
    /// moment its first lease expires (it is then keyed there in the ready set, and marked
    /// capped). `None` when it may make another call.
    pub(super) fn flight_full(
        &mut self,
        tenant: &str,
        now: Instant,
        span: Duration,
    ) -> Option<Instant> {
        let (adaptive, slow_start) = (self.adaptive, self.slow_start);
        let t = self.tenants.get_mut(tenant)?;
        t.flying.retain(|_, expiry| *expiry > now);
        if t.flying.len() < t.flight_cap(now, span, adaptive, slow_start) as usize {
            return None;
        }
        let first = t.flying.values().min().copied().unwrap_or(now).max(now);
        if let Some(key) = t.ready_key.take() {
            self.ready.remove(&key);
        }
        let seq = self.next_seq();
        let key = (first, seq, tenant.to_string());
        if let Some(t) = self.tenants.get_mut(tenant) {
            t.ready_key = Some(key.clone());
        }
        self.ready.insert(key);
        self.capped.insert(tenant.to_string());
        Some(first)
    }

    /// Drops log entries that can no longer count against any window starting at or after
    /// `now`.
    pub(super) fn prune(&mut self, tenant: &str, now: Instant, span: Duration) {
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
    pub(super) fn allowed_at(
        t: &TenantState,
        now: Instant,
        span: Duration,
        adaptive: bool,
        days: &Days,
    ) -> Instant {
        let (most, gap) = t.pacing(now, span, adaptive);
        let limit = most as usize;
        let by_log = if t.log.len() >= limit {
            // The oldest call that would still be in the window with one more call: once
            // it leaves the window, a call fits.
            t.log[t.log.len() - limit].0 + span
        } else {
            now
        };
        // A paced tenant's next call waits its gap after the last one went out.
        let by_log = match (gap, t.last_dispatch) {
            (Some(gap), Some(last)) => by_log.max(last + gap),
            _ => by_log,
        };
        let by_pause = match t.paused_until {
            Some(p) if p > by_log => p,
            _ => by_log,
        };
        let by_pause = t.hold_end().map_or(by_pause, |h| h.max(by_pause));
        // Parked until the day resets once today's quota is spent: its jobs stay queued.
        t.quota_until(now, days)
            .map_or(by_pause, |q| q.max(by_pause))
    }

    /// Puts the tenant in the ready set (or takes it out) according to its waiting list,
    /// log and pause. `turn` is the earliest time it may be served in fairness to others:
    /// the moment of its last dispatch or of its becoming ready.
    pub(super) fn rescore(
        &mut self,
        tenant: &str,
        now: Instant,
        span: Duration,
        turn: Option<Instant>,
    ) {
        let seq = self.next_seq();
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        let old = t.ready_key.take();
        if let Some(k) = &old {
            self.ready.remove(k);
        }
        // A tenant held until released is out of the ready set: dispatch never sees it.
        if t.waiting.is_empty() || t.held_indefinitely() {
            return;
        }
        let allowed = Self::allowed_at(t, now, span, self.adaptive, &self.days);
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

    /// After a rate-limit answer (the job's call re-stamped at `now` already): counts our
    /// calls in the tenant's window, the refused one included, and cuts the share as
    /// [`share::after_refusal`] says.
    pub(super) fn adapt_share(&mut self, tenant: &str, now: Instant, span: Duration) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        let refusal = share::Refusal {
            share: t.share(now, span, true),
            cap: share::cap(t.limit(), t.tenant.reserve),
            limit: t.limit(),
            ours: t.log.iter().filter(|(at, _)| *at + span > now).count() as u32,
            since_cut: t.share_cut_at.map(|at| now.saturating_duration_since(at)),
            window: span,
        };
        if let Some(share) = share::after_refusal(refusal) {
            t.share_cut_at = Some(now);
            t.share = Some((share, now));
            // The pacing starts again from the cut: the next call a gap after it.
            t.last_dispatch = Some(now);
            self.rescore(tenant, now, span, None);
        }
    }

    /// Re-stamps the job's call at `now`, when its answer arrived (see [`Queue::answered`](crate::queue::Queue::answered)).
    /// The call was made whether or not the lease is still held: every finishing method
    /// does this first, either way.
    pub(super) fn restamp(&mut self, job: &LeasedJob, now: Instant, span: Duration) {
        self.restamp_at(job, now, now, span);
    }

    /// Re-stamps the job's call at `at` (no later than `now`), when its answer arrived as
    /// far as the worker's clock tells ([`Queue::complete_many`](crate::queue::Queue::complete_many)):
    /// never earlier than its stamp so far, and in time order in the log.
    pub(super) fn restamp_at(
        &mut self,
        job: &LeasedJob,
        at: Instant,
        now: Instant,
        span: Duration,
    ) {
        let Some(t) = self.tenants.get_mut(&job.tenant) else {
            return;
        };
        let mut at = at;
        if let Some(pos) = t.log.iter().position(|(_, l)| *l == job.lease)
            && let Some((old, _)) = t.log.remove(pos)
        {
            at = at.max(old);
        }
        let pos = t
            .log
            .iter()
            .rposition(|(e, _)| *e <= at)
            .map_or(0, |p| p + 1);
        t.log.insert(pos, (at, job.lease.clone()));
        self.rescore(&job.tenant, now, span, None);
    }
}
