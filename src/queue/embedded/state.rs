//! The embedded queue's state: tenants with their waiting lists, job records, the
//! idempotency index, the schedule and the finishing order, and the bookkeeping every
//! method shares (finishing a job, putting one back in its list). The limiter's part of the
//! state is in [`super::window`], the leases' in [`super::lease`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::job::{JobId, JobResult, JobState};
use crate::queue::TenantHold;
use crate::tenant::Tenant;

/// Key of a tenant in the ready set: when it may call next, then the order in which it got
/// that turn (so equal times are served first come, first served), then its name.
pub(super) type ReadyKey = (Instant, u64, String);

/// Everything the queue holds, behind the queue's one `Mutex`.
#[derive(Default)]
pub(super) struct State {
    /// Registered tenants by name.
    pub(super) tenants: HashMap<String, TenantState>,
    /// Every job not purged, by id.
    pub(super) jobs: HashMap<JobId, JobRecord>,
    /// (tenant, idempotency key) → job: keys are scoped per tenant, as in Redis.
    pub(super) keys: HashMap<(String, String), JobId>,
    /// Tenants with waiting jobs, by when they may call next.
    pub(super) ready: BTreeSet<ReadyKey>,
    /// Jobs waiting for a retry, by due time.
    pub(super) scheduled: BTreeSet<(Instant, JobId)>,
    /// Running jobs, by lease expiry.
    pub(super) leases: BTreeSet<(Instant, JobId)>,
    /// Finished jobs (done and dead) by finishing sequence number.
    pub(super) finished: BTreeMap<u64, JobId>,
    /// Source of sequence numbers (ready-set tie breaks, finishing order, lease tokens).
    pub(super) seq: u64,
    /// Whether shares adapt ([`crate::queue::ShareMode::Adaptive`]).
    pub(super) adaptive: bool,
    /// [`crate::queue::QueueConfig::slow_start`].
    pub(super) slow_start: bool,
    /// Tenants a dispatch found at their cap of calls in flight, put back in the ready set
    /// at their first lease's expiry (see [`State::landed`]).
    pub(super) capped: std::collections::HashSet<String>,
    /// Set when a lease's end put a tenant at its cap of calls in flight back in the ready
    /// set: the caller wakes waiting workers (see [`State::landed`]).
    pub(super) uncapped: bool,
    /// Days for daily quotas: their length, and the instant and wall-clock ms it is
    /// measured from (days start at the Unix epoch).
    pub(super) days: Days,
    /// Jobs done per wall-clock second (`ms / 1000`, count), the last
    /// [`DONE_HISTORY_SECS`] seconds only, for `Queue::done_per_second`.
    pub(super) done_per_sec: VecDeque<(u64, u64)>,
    /// Jobs ever done (purges do not lower it), for `Queue::pulse`.
    pub(super) done_total: u64,
    /// The whole queue's pause (`Queue::pause_queue`): no dispatch while it is set.
    pub(super) paused: Option<crate::queue::QueuePause>,
    /// Jobs ever done, by what they did (`QueueStatus::outcomes`).
    pub(super) outcomes: std::collections::BTreeMap<crate::job::Outcome, u64>,
}

/// How the embedded queue tells days apart for daily quotas.
#[derive(Clone, Copy)]
pub(super) struct Days {
    /// Length of a day (`QueueConfig::day`), at least 1 ms.
    pub(super) length_ms: u64,
    /// An instant, and the ms since the Unix epoch it stands for.
    pub(super) anchor: (Instant, u64),
}

impl Default for Days {
    fn default() -> Self {
        Days {
            length_ms: 86_400_000,
            anchor: (Instant::now(), 0),
        }
    }
}

impl Days {
    /// The day `at` falls in (days since the epoch).
    pub(super) fn of(&self, at: Instant) -> u64 {
        self.ms_of(at) / self.length_ms
    }

    /// `at` as ms since the Unix epoch.
    pub(super) fn ms_of(&self, at: Instant) -> u64 {
        self.anchor.1 + at.saturating_duration_since(self.anchor.0).as_millis() as u64
    }

    /// When day `day` ends.
    pub(super) fn end_of(&self, day: u64) -> Instant {
        let end_ms = (day + 1).saturating_mul(self.length_ms);
        self.anchor.0 + Duration::from_millis(end_ms.saturating_sub(self.anchor.1))
    }
}

/// Seconds of done-per-second history kept: bounds the memory whatever the throughput.
pub(super) const DONE_HISTORY_SECS: u64 = 600;

/// One tenant: its record, its waiting jobs and its limiter state.
pub(super) struct TenantState {
    /// The tenant as imported (its limit is the imported one).
    pub(super) tenant: Tenant,
    /// A smaller limit LeadSquared named in a rate-limit answer.
    pub(super) learned_limit: Option<u32>,
    /// A daily quota LeadSquared named in a rate-limit answer.
    pub(super) learned_daily: Option<u32>,
    /// Its waiting jobs, next first.
    pub(super) waiting: VecDeque<JobId>,
    /// Recent calls: when each was made (or answered), and the lease of its dispatch. Sorted
    /// by time, because entries are only ever appended at "now".
    pub(super) log: VecDeque<(Instant, String)>,
    /// Until when LeadSquared's "rate limited" pauses it.
    pub(super) paused_until: Option<Instant>,
    /// Why it is paused (`queue::reason::rate_limited`).
    pub(super) pause_reason: Option<String>,
    /// Its key in the ready set while it has waiting jobs.
    pub(super) ready_key: Option<ReadyKey>,
    /// The adaptive share as of its last cut, and when that was; `None` until the first
    /// (the share is then the cap). See [`crate::queue::share`].
    pub(super) share: Option<(f64, Instant)>,
    /// When its last call went out: a paced tenant's next waits its gap after it.
    pub(super) last_dispatch: Option<Instant>,
    /// When the share was last cut: at most one cut per window.
    pub(super) share_cut_at: Option<Instant>,
    /// Calls dispatched in a day: the day, and how many.
    pub(super) today: (u64, u64),
    /// Its hold, and when it ends (`None`: until released). See `Queue::hold`.
    pub(super) hold: Option<(TenantHold, Option<Instant>)>,
    /// Unreachable-host failures in a row (`Queue::host_failed`; a completion ends it).
    pub(super) streak: u32,
    /// Whether it is limited to one call in flight until its host answers (see
    /// [`TenantState::flight_cap`]); any answer ends it.
    pub(super) probe: Option<Probe>,
    /// Its calls dispatched and not yet answered: lease token → lease expiry. Calls in
    /// flight, which dispatch caps (see [`TenantState::flight_cap`]).
    pub(super) flying: HashMap<String, Instant>,
    /// Its counters for the tenants view, kept as its jobs move.
    pub(super) counts: TenantCounts,
}

/// Why a tenant may have only one call in flight, as the Redis backend's `probe` hash says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Probe {
    /// Its host has not answered since it was registered, or its keys or host changed
    /// (only with [`crate::queue::QueueConfig::slow_start`]).
    New,
}

/// A tenant's jobs by where they are, kept as they move (see `crate::queue::tenants`).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TenantCounts {
    /// Pushed (or retried from the dead letters) and not finished.
    pub(super) unfinished: u64,
    /// Ever done.
    pub(super) done: u64,
    /// Dead now.
    pub(super) dead: u64,
}

impl TenantState {
    /// A tenant just registered.
    pub(super) fn new(tenant: Tenant) -> Self {
        TenantState {
            tenant,
            learned_limit: None,
            learned_daily: None,
            waiting: VecDeque::new(),
            log: VecDeque::new(),
            paused_until: None,
            pause_reason: None,
            ready_key: None,
            share: None,
            last_dispatch: None,
            share_cut_at: None,
            today: (0, 0),
            hold: None,
            streak: 0,
            probe: Some(Probe::New),
            flying: Default::default(),
            counts: TenantCounts::default(),
        }
    }

    /// Whether it is held until released.
    pub(super) fn held_indefinitely(&self) -> bool {
        matches!(self.hold, Some((_, None)))
    }

    /// The end of its timed hold, if one is set.
    pub(super) fn hold_end(&self) -> Option<Instant> {
        self.hold.as_ref().and_then(|(_, until)| *until)
    }
}

/// One job, from its push until it is purged.
pub(super) struct JobRecord {
    /// Its tenant's name.
    pub(super) tenant: String,
    /// Its idempotency key.
    pub(super) key: String,
    /// The Create body; dropped once the job is done (results are kept, payloads are not).
    pub(super) body: String,
    /// Attempts spent (a dispatch counts one; a rate limit or a hand-back gives it back).
    pub(super) attempts: u32,
    /// The next dispatch must reconcile before creating (see `LeasedJob::outcome_unknown`).
    pub(super) outcome_unknown: bool,
    /// Where it is: queued, scheduled, running, done or dead.
    pub(super) state: JobState,
    /// Once done: the webhook's Id.
    pub(super) webhook_id: Option<String>,
    /// The last error, or why it is dead (`queue::reason`).
    pub(super) error: Option<String>,
    /// Once done: found with Retrieve rather than created.
    pub(super) reconciled: bool,
    /// Once done: what it did.
    pub(super) outcome: Option<crate::job::Outcome>,
    /// Once done: the digest of the body the webhook has (see `queue::revision`).
    pub(super) digest: Option<String>,
    /// Once done: `job::field_digests` of that body.
    pub(super) fields: Option<String>,
    /// While running: the lease token and when it expires.
    pub(super) lease: Option<(String, Instant)>,
    /// While running: until when a Create the holder sent may still land (see
    /// [`Queue::sending`](crate::queue::Queue::sending)).
    pub(super) call_until: Option<Instant>,
    /// While running: the moment of its dispatch.
    pub(super) dispatched_at: Option<Instant>,
    /// While scheduled: when the retry is due.
    pub(super) due: Option<Instant>,
    /// While finished: position in the finishing order.
    pub(super) finished_seq: Option<u64>,
    /// When it was pushed (the queue's latency is measured from it; Redis reads the time
    /// in the id, which is the wall clock's, and this backend may run on a paused clock).
    pub(super) pushed_at: Instant,
    /// While finished: when.
    pub(super) finished_at: Option<Instant>,
    /// The last calls made for it (`Queue::note_attempt`), oldest first.
    pub(super) history: VecDeque<crate::job::Attempt>,
}

impl State {
    /// The next sequence number.
    pub(super) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Records a job as finished (done or dead) at the end of the finishing order.
    pub(super) fn finish(&mut self, id: &JobId, state: JobState, error: Option<String>) {
        let seq = self.next_seq();
        if let Some(rec) = self.jobs.get_mut(id) {
            let was_finished = matches!(rec.state, JobState::Done | JobState::Dead);
            if !was_finished
                && let Some(c) = self.tenants.get_mut(&rec.tenant).map(|t| &mut t.counts)
            {
                c.unfinished = c.unfinished.saturating_sub(1);
                match state {
                    JobState::Done => c.done += 1,
                    _ => c.dead += 1,
                }
            }
            rec.state = state;
            rec.error = error;
            rec.finished_at = Some(Instant::now());
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
    pub(super) fn enqueue(&mut self, id: &JobId, front: bool, now: Instant, span: Duration) {
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

    pub(super) fn result(&self, id: &JobId) -> Option<JobResult> {
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
            outcome: rec.outcome,
            digest: rec.digest.clone(),
            fields: rec.fields.clone(),
            finished_ms: rec.finished_at.map(|at| self.days.ms_of(at)),
        })
    }

    /// Counts a job done in wall-clock second `sec`, forgetting seconds older than
    /// [`DONE_HISTORY_SECS`].
    pub(super) fn record_done(&mut self, sec: u64) {
        self.done_total += 1;
        match self.done_per_sec.back_mut() {
            Some((at, n)) if *at == sec => *n += 1,
            _ => self.done_per_sec.push_back((sec, 1)),
        }
        while self
            .done_per_sec
            .front()
            .is_some_and(|(at, _)| at + DONE_HISTORY_SECS <= sec)
        {
            self.done_per_sec.pop_front();
        }
    }

    /// Jobs done in each of the last `seconds` seconds up to `now_sec`, oldest first.
    pub(super) fn done_series(&self, now_sec: u64, seconds: u32) -> Vec<u64> {
        let len = u64::from(seconds).min(DONE_HISTORY_SECS);
        let first = (now_sec + 1).saturating_sub(len);
        let mut out = vec![0; len as usize];
        for &(at, n) in &self.done_per_sec {
            if (first..=now_sec).contains(&at) {
                out[(at - first) as usize] = n;
            }
        }
        out
    }

    /// The dead jobs among `ids` (all dead jobs when `None`).
    pub(super) fn dead_ids(&self, ids: Option<&[JobId]>) -> Vec<JobId> {
        let st = self;
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
}

/// The contract's cases live in tests/queue_conformance.rs, run on both backends; here only
/// what this backend alone has.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::EmbeddedQueue;
    use super::*;
    use crate::job::NewJob;
    use crate::queue::Dispatch;
    use crate::queue::{LeasedJob, Queue, QueueConfig};
    use crate::secret::Secret;

    fn tenant(name: &str, limit: u32) -> Tenant {
        Tenant {
            name: name.into(),
            api_base: Some(url::Url::parse("http://127.0.0.1:1").unwrap()),
            access_key: Secret::new("ak"),
            secret_key: Secret::new("sk"),
            limit,
            reserve: 0,
            daily_limit: None,
        }
    }

    fn job(tenant: &str, n: usize) -> NewJob {
        NewJob {
            delete: false,
            legacy_key: None,
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
