//! A queue split into shards (issue 17; `docs/decisions.md`, "Sharding the queue"): N
//! queues of one kind behind one [`Queue`], so that on a Redis Cluster each shard's hash tag
//! can sit on another node and no one Redis core is the ceiling of the whole queue.
//!
//! Each tenant belongs to one shard, by a stable hash of its name ([`shard_of`]), and every
//! call about a tenant, or about a job through its [`LeasedJob`], goes to that shard alone,
//! so every multi-key script stays within one shard's slot. Calls that name a job by its id
//! alone ask the shard that is known to hold it (ids this process pushed or dispatched),
//! else every shard at once; the views (`status`, `pulse`, `results`, the pages) read every
//! shard and merge.
//!
//! [`Queue::dispatch_many`] visits the shards in turn, starting at the shard after the last
//! one that handed out jobs, and skips a shard whose last answer was "nothing now" until its
//! own wake-up (a watcher task per shard waits on the shard's [`Queue::wait_for_work`]): a
//! shard that answered "wait" until the moment it named or [`ShardedQueue::recheck`], one
//! that answered "empty" (nothing queued, scheduled or running) for longer (`idle_recheck`).
//! A tenant on a quiet shard waits at most one turn of the shards, whatever a busy shard
//! holds.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::{join_all, try_join_all};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Completion, Dispatched, Fence, HostFailed, JobPage, LeasedJob, NewHold, PageOf, Pushed, Queue,
    QueueConfig, QueueError, QueuePause, QueuePulse, QueueStatus, Requeue, TenantHold, TenantPage,
    TenantQuery, TenantSort, UnreachablePolicy,
};
use crate::job::{Attempt, JobId, JobResult, NewJob};
use crate::tenant::Tenant;

/// The shard of `tenant` among `shards`: FNV-1a (64 bits) of its name, modulo the count. Not
/// Rust's `DefaultHasher`, whose output may change between releases: a tenant must stay on
/// its shard for the life of the queue.
pub fn shard_of(tenant: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// Ids whose shard this process knows (pushed or dispatched here), so that a call naming a
/// job by id asks one shard. Bounded: cleared whole when full (a forgotten id only costs a
/// question to every shard).
const KNOWN_IDS: usize = 65_536;

/// The cursor of a merged page: one cursor per shard, joined by this (no shard's cursor
/// holds it: they are numbers, and `score:id` with UUID ids). A shard whose pages are done
/// is [`DONE`].
const CURSOR_SEP: char = '~';
/// A shard with no page left, in a merged cursor.
const DONE: &str = "-";

/// Why a shard is skipped by the dispatch, and until when.
#[derive(Clone, Copy, Debug)]
struct Skip {
    /// Not visited before this moment (its wake-up may end it earlier).
    until: Instant,
    /// When its next job may come, as it last answered (`None`: it said empty).
    wait_until: Option<Instant>,
}

/// One shard's skip and the watcher's signal that a skip was set.
#[derive(Debug, Default)]
struct ShardSkip {
    /// The skip in force, if any.
    skip: Mutex<Option<Skip>>,
    /// Tells the watcher a skip was set.
    armed: Notify,
}

impl ShardSkip {
    /// The skip in force at `now` (one whose time is up is none).
    fn get(&self, now: Instant) -> Option<Skip> {
        let skip = *self.skip.lock().unwrap_or_else(|p| p.into_inner());
        skip.filter(|s| s.until > now)
    }

    fn set(&self, skip: Skip) {
        *self.skip.lock().unwrap_or_else(|p| p.into_inner()) = Some(skip);
        self.armed.notify_one();
    }

    fn clear(&self) {
        *self.skip.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Wakes the callers of [`ShardedQueue::wait_for_work`] when a shard's skip ends.
#[derive(Debug, Default)]
struct Woke {
    notify: Notify,
    /// Skips ended so far: a wait that starts after one ended looks again at once.
    ended: AtomicU64,
}

impl Woke {
    fn signal(&self) {
        self.ended.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// A queue of `N` shards of queue kind `Q` (see the module header).
pub struct ShardedQueue<Q: Queue> {
    /// The settings the shards share (their own name is this one).
    config: QueueConfig,
    /// The shards, shard 0 first.
    shards: Vec<Arc<Q>>,
    /// Per shard: whether the dispatch skips it now.
    skips: Arc<[ShardSkip]>,
    /// Wakes waiting workers when a skip ends.
    woke: Arc<Woke>,
    /// The shard the next dispatch starts at: the one after the last that handed out jobs.
    turn: AtomicUsize,
    /// The longest a shard that answered "wait" is skipped without news: the time it named
    /// may be a lease's expiry, which a heartbeat moves, and the worker's own idle poll is
    /// no longer.
    recheck: Duration,
    /// The longest a shard that answered "empty" (nothing queued, scheduled or running) is
    /// skipped without a wake-up: the shards' share of the worker's idle poll, so that an
    /// idle process polls about as often as with one queue (see [`idle_recheck`]).
    idle_recheck: Duration,
    /// Tenants known to exist, so that a push refuses an unknown tenant before writing to
    /// any shard (tenants are never removed).
    tenants: Mutex<HashSet<String>>,
    /// Shards of ids this process has seen (see [`KNOWN_IDS`]).
    ids: Mutex<HashMap<JobId, usize>>,
    /// Ends the watcher tasks when the queue is dropped.
    _watchers: Option<DropGuard>,
}

impl<Q: Queue> std::fmt::Debug for ShardedQueue<Q> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardedQueue")
            .field("config", &self.config)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

/// Waits on one shard's wake-ups while it is skipped, and ends the skip when one comes (or
/// the skip's time is up), until `cancel`.
async fn watch<Q: Queue>(
    shard: Arc<Q>,
    skips: Arc<[ShardSkip]>,
    index: usize,
    woke: Arc<Woke>,
    cancel: CancellationToken,
) {
    let me = &skips[index];
    loop {
        let skip = loop {
            let armed = me.armed.notified();
            if let Some(skip) = me.get(Instant::now()) {
                break skip;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = armed => {}
            }
        };
        let left = skip.until.saturating_duration_since(Instant::now());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shard.wait_for_work(left) => {}
        }
        me.clear();
        woke.signal();
    }
}

impl<Q: Queue> ShardedQueue<Q> {
    /// A queue over `shards` (at least one; shard 0 first), each with the same config. Must
    /// be called within a tokio runtime when there are several (it spawns one watcher task
    /// per shard, ended when the queue is dropped).
    pub fn new(shards: Vec<Q>) -> Result<Self, QueueError> {
        let Some(first) = shards.first() else {
            return Err(QueueError::Config(
                "a queue needs at least one shard".into(),
            ));
        };
        let config = first.config().clone();
        let recheck = (config.lease / 4).clamp(Duration::from_millis(1), Duration::from_secs(1));
        let idle_recheck = idle_recheck(recheck, shards.len());
        let shards: Vec<Arc<Q>> = shards.into_iter().map(Arc::new).collect();
        let skips: Arc<[ShardSkip]> = shards.iter().map(|_| ShardSkip::default()).collect();
        let woke = Arc::new(Woke::default());
        let watchers = (shards.len() > 1).then(|| {
            let cancel = CancellationToken::new();
            for (index, shard) in shards.iter().enumerate() {
                tokio::spawn(watch(
                    shard.clone(),
                    skips.clone(),
                    index,
                    woke.clone(),
                    cancel.clone(),
                ));
            }
            cancel.drop_guard()
        });
        Ok(ShardedQueue {
            config,
            shards,
            skips,
            woke,
            turn: AtomicUsize::new(0),
            recheck,
            idle_recheck,
            tenants: Mutex::new(HashSet::new()),
            ids: Mutex::new(HashMap::new()),
            _watchers: watchers,
        })
    }

    /// The shards, shard 0 first (for backend-specific calls: a Redis shard's memory, its
    /// durability settings).
    pub fn shards(&self) -> &[Arc<Q>] {
        &self.shards
    }

    /// The longest a shard that had nothing to hand out is skipped without a wake-up: a
    /// quarter of the lease, at most 1 s (the worker's own idle poll).
    pub fn recheck(&self) -> Duration {
        self.recheck
    }

    /// The shard of a tenant.
    pub fn shard_index(&self, tenant: &str) -> usize {
        shard_of(tenant, self.shards.len())
    }

    fn of(&self, tenant: &str) -> &Q {
        &self.shards[self.shard_index(tenant)]
    }

    /// Work may have become available on shard `s` through this process: visit it on the
    /// next dispatch, and wake the workers waiting.
    fn touched(&self, s: usize) {
        if self.shards.len() > 1 {
            self.skips[s].clear();
            self.woke.signal();
        }
    }

    fn remember(&self, s: usize, ids: impl IntoIterator<Item = JobId>) {
        if self.shards.len() == 1 {
            return;
        }
        let mut known = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if known.len() >= KNOWN_IDS {
                known.clear();
            }
            known.insert(id, s);
        }
    }

    fn known_shard(&self, id: &JobId) -> Option<usize> {
        if self.shards.len() == 1 {
            return Some(0);
        }
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    /// The shards to ask about job `id`: the one known, else all.
    fn shards_for(&self, id: &JobId) -> Vec<usize> {
        match self.known_shard(id) {
            Some(s) => vec![s],
            None => (0..self.shards.len()).collect(),
        }
    }

    /// Indices of `items` grouped by the shard of each one's tenant, in input order.
    fn group<T>(&self, items: &[T], tenant: impl Fn(&T) -> &str) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.shards.len()];
        for (i, item) in items.iter().enumerate() {
            groups[self.shard_index(tenant(item))].push(i);
        }
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, g)| !g.is_empty())
            .collect()
    }

    /// Fails with [`QueueError::UnknownTenant`] if a job names a tenant no shard has, before
    /// anything is written.
    async fn check_tenants(&self, jobs: &[NewJob]) -> Result<(), QueueError> {
        let missing: Vec<&str> = {
            let known = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
            let mut missing: Vec<&str> = jobs
                .iter()
                .map(|j| j.tenant.as_str())
                .filter(|t| !known.contains(*t))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            missing
        };
        if missing.is_empty() {
            return Ok(());
        }
        let found = try_join_all(missing.iter().map(|t| self.of(t).tenant(t))).await?;
        let mut known = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        for (name, tenant) in missing.iter().zip(found) {
            match tenant {
                Some(_) => {
                    known.insert((*name).to_string());
                }
                None => return Err(QueueError::UnknownTenant((*name).to_string())),
            }
        }
        Ok(())
    }

    /// One shard's cursor from a merged one (`None`: its first page; `Some(None)`: done).
    fn split_cursor(
        &self,
        cursor: Option<&str>,
    ) -> Result<Vec<Option<Option<String>>>, QueueError> {
        let n = self.shards.len();
        let Some(c) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(vec![None; n]);
        };
        let parts: Vec<&str> = c.split(CURSOR_SEP).collect();
        if parts.len() != n {
            return Err(QueueError::Config(format!(
                "cursor {c:?} is not one this queue gave"
            )));
        }
        Ok(parts
            .into_iter()
            .map(|p| match p {
                DONE => Some(None),
                "" => None,
                p => Some(Some(p.to_string())),
            })
            .collect())
    }

    /// A merged cursor; `None` when every shard is done.
    fn join_cursor(parts: &[Option<Option<String>>]) -> Option<String> {
        if parts.iter().all(|p| matches!(p, Some(None))) {
            return None;
        }
        Some(
            parts
                .iter()
                .map(|p| match p {
                    Some(None) => DONE,
                    None => "",
                    Some(Some(c)) => c.as_str(),
                })
                .collect::<Vec<_>>()
                .join(&CURSOR_SEP.to_string()),
        )
    }
}

impl ShardedQueue<super::redis::RedisQueue> {
    /// The Redis queue at `url` in its shards ([`super::redis::RedisQueue::connect_shards`]:
    /// `shards` must match the queue's count once it has one).
    pub async fn connect(
        url: &str,
        config: QueueConfig,
        options: super::redis::RedisOptions,
        shards: Option<u32>,
    ) -> Result<Self, QueueError> {
        Self::new(super::redis::RedisQueue::connect_shards(url, config, options, shards).await?)
    }

    /// Deletes every key of every shard ([`super::redis::RedisQueue::delete_all`], each on
    /// the node holding the shard's slot) and returns how many went. Not atomic: for a run
    /// that should leave nothing behind, with no worker or producer using the queue.
    pub async fn delete_all(&self) -> Result<u64, QueueError> {
        let mut deleted = 0;
        for shard in &self.shards {
            deleted += shard.delete_all().await?;
        }
        Ok(deleted)
    }

    /// The Redis server's memory limit and policy (shard 0's node), for messages.
    pub async fn memory(&self) -> Option<super::StoreMemory> {
        self.shards[0].memory().await
    }
}

/// The shards' finished jobs, each shard's in its finishing order, as one list in finishing
/// order: by `finished_ms`, a shard's own order kept within a millisecond (a stable sort of
/// the shards' lists one after another; a record with no time, from an older version, first).
fn in_finishing_order(shards: Vec<Vec<JobResult>>) -> Vec<JobResult> {
    let mut all: Vec<JobResult> = shards.into_iter().flatten().collect();
    all.sort_by_key(|r| r.finished_ms.unwrap_or(0));
    all
}

/// The longest [`ShardedQueue`] skips a shard that answered "empty" without a wake-up:
/// `recheck` times the shard count, at most [`IDLE_RECHECK_MAX`]. Nothing can come to such
/// a shard but through a write, and every write that makes work publishes a wake-up (the
/// conformance suite's wake-up cases); a subscription that drops wakes every shard when it
/// is back. So the recheck only bounds a wake-up lost some other way, and N idle shards cost
/// a process one dispatch per `recheck`, as one queue does, not N.
fn idle_recheck(recheck: Duration, shards: usize) -> Duration {
    recheck
        .checked_mul(u32::try_from(shards).unwrap_or(u32::MAX))
        .map_or(IDLE_RECHECK_MAX, |d| d.min(IDLE_RECHECK_MAX))
}

/// See [`idle_recheck`].
const IDLE_RECHECK_MAX: Duration = Duration::from_secs(30);

/// The larger of two optional values.
fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Where a row of the tenants view stands in `sort`'s order (most first, ties by name).
fn tenant_order(sort: TenantSort, row: &super::TenantRow) -> (std::cmp::Reverse<u64>, String) {
    let count = match sort {
        TenantSort::Name => 0,
        TenantSort::Waiting => row.waiting + row.in_flight,
        TenantSort::Done => row.done,
        TenantSort::Dead => row.dead,
    };
    (std::cmp::Reverse(count), row.tenant.clone())
}

#[async_trait]
impl<Q: Queue> Queue for ShardedQueue<Q> {
    fn config(&self) -> &QueueConfig {
        &self.config
    }

    async fn put_tenants(&self, tenants: &[Tenant]) -> Result<(), QueueError> {
        for (s, idx) in self.group(tenants, |t| t.name.as_str()) {
            let part: Vec<Tenant> = idx.iter().map(|&i| tenants[i].clone()).collect();
            self.shards[s].put_tenants(&part).await?;
            self.touched(s);
        }
        let mut known = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(tenants.iter().map(|t| t.name.clone()));
        Ok(())
    }

    async fn tenant(&self, name: &str) -> Result<Option<Tenant>, QueueError> {
        self.of(name).tenant(name).await
    }

    async fn tenant_names(&self) -> Result<Vec<String>, QueueError> {
        let all = try_join_all(self.shards.iter().map(|q| q.tenant_names())).await?;
        let mut names: Vec<String> = all.into_iter().flatten().collect();
        names.sort();
        Ok(names)
    }

    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].push(jobs).await;
        }
        self.check_tenants(jobs).await?;
        let groups = self.group(jobs, |j| j.tenant.as_str());
        let pushed = try_join_all(groups.iter().map(|(s, idx)| {
            let part: Vec<NewJob> = idx.iter().map(|&i| jobs[i].clone()).collect();
            async move { self.shards[*s].push(&part).await }
        }))
        .await;
        // Whatever went in may be dispatched, even when another shard's part failed.
        for (s, _) in &groups {
            self.touched(*s);
        }
        let pushed = pushed?;
        let mut out: Vec<Option<Pushed>> = vec![None; jobs.len()];
        for ((s, idx), answers) in groups.iter().zip(pushed) {
            if answers.len() != idx.len() {
                return Err(QueueError::Store(format!(
                    "shard {s} answered {} of {} jobs pushed",
                    answers.len(),
                    idx.len()
                )));
            }
            self.remember(
                *s,
                answers.iter().map(|p| match p {
                    Pushed::Enqueued { job } | Pushed::Duplicate { job } => job.clone(),
                }),
            );
            for (&i, answer) in idx.iter().zip(answers) {
                out[i] = Some(answer);
            }
        }
        out.into_iter()
            .map(|p| p.ok_or_else(|| QueueError::Store("a job pushed got no answer".into())))
            .collect()
    }

    async fn dispatch_many(
        &self,
        max: usize,
        fence: Option<Fence>,
    ) -> Result<Dispatched, QueueError> {
        let n = self.shards.len();
        if n == 1 {
            return self.shards[0].dispatch_many(max, fence).await;
        }
        let max = max.max(1);
        // The turn goes to the shard after the last one that handed out jobs, so that an
        // empty shard's turn does not fall to the same neighbour every time.
        let start = self.turn.load(Ordering::Relaxed) % n;
        let mut last_served = None;
        let mut jobs: Vec<LeasedJob> = Vec::new();
        let mut wait: Option<Duration> = None;
        let mut sooner = |w: Duration| wait = Some(wait.map_or(w, |v: Duration| v.min(w)));
        for k in 0..n {
            let s = (start + k) % n;
            let now = Instant::now();
            if let Some(skip) = self.skips[s].get(now) {
                if let Some(at) = skip.wait_until {
                    sooner(at.saturating_duration_since(now));
                }
                continue;
            }
            let answer = match self.shards[s].dispatch_many(max - jobs.len(), fence).await {
                Ok(answer) => answer,
                // Jobs already leased from other shards go out; the error comes back on the
                // next call, which asks this shard again.
                Err(_) if !jobs.is_empty() => break,
                Err(e) => return Err(e),
            };
            match answer {
                Dispatched::Jobs(got) => {
                    last_served = Some(s);
                    self.remember(s, got.iter().map(|j| j.id.clone()));
                    jobs.extend(got);
                    if jobs.len() >= max {
                        break;
                    }
                }
                Dispatched::Wait(d) => {
                    let now = Instant::now();
                    self.skips[s].set(Skip {
                        until: now + d.min(self.recheck),
                        wait_until: Some(now + d),
                    });
                    sooner(d);
                }
                Dispatched::Empty => self.skips[s].set(Skip {
                    until: Instant::now() + self.idle_recheck,
                    wait_until: None,
                }),
            }
        }
        let next = last_served.map_or(start + 1, |s| s + 1) % n;
        self.turn.store(next, Ordering::Relaxed);
        Ok(if !jobs.is_empty() {
            Dispatched::Jobs(jobs)
        } else if let Some(d) = wait {
            Dispatched::Wait(d)
        } else {
            Dispatched::Empty
        })
    }

    async fn wait_for_work(&self, max: Duration) {
        if self.shards.len() == 1 {
            return self.shards[0].wait_for_work(max).await;
        }
        let notified = self.woke.notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a skip ending between the two is not missed.
        notified.as_mut().enable();
        let now = Instant::now();
        if self.skips.iter().any(|s| s.get(now).is_none()) {
            // A shard the dispatch would visit: it may have work now.
            return;
        }
        // Timing out is the normal end of a wait with no news.
        let _ = tokio::time::timeout(max, notified).await;
    }

    async fn heartbeat(&self, job: &LeasedJob) -> Result<bool, QueueError> {
        self.of(&job.tenant).heartbeat(job).await
    }

    async fn sending(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError> {
        self.of(&job.tenant).sending(job, in_flight).await
    }

    async fn answered(&self, job: &LeasedJob) -> Result<(), QueueError> {
        // A call that lands may end its tenant's cap of calls in flight (here and in every
        // finishing method): its shard is visited again.
        let s = self.shard_index(&job.tenant);
        self.shards[s].answered(job).await?;
        self.touched(s);
        Ok(())
    }

    async fn complete_many(&self, done: &[Completion<'_>]) -> Result<Vec<bool>, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].complete_many(done).await;
        }
        let groups = self.group(done, |c| c.job.tenant.as_str());
        let answers = try_join_all(groups.iter().map(|(s, idx)| {
            let part: Vec<Completion<'_>> = idx.iter().map(|&i| done[i]).collect();
            async move { self.shards[*s].complete_many(&part).await }
        }))
        .await?;
        let mut out = vec![false; done.len()];
        for (s, _) in &groups {
            self.touched(*s);
        }
        for ((s, idx), recorded) in groups.iter().zip(answers) {
            if recorded.len() != idx.len() {
                return Err(QueueError::Store(format!(
                    "shard {s} answered {} of {} completions",
                    recorded.len(),
                    idx.len()
                )));
            }
            for (&i, r) in idx.iter().zip(recorded) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    async fn retry_later(
        &self,
        job: &LeasedJob,
        delay: Duration,
        error: &str,
        outcome_unknown: bool,
    ) -> Result<(), QueueError> {
        let s = self.shard_index(&job.tenant);
        self.shards[s]
            .retry_later(job, delay, error, outcome_unknown)
            .await?;
        self.touched(s);
        Ok(())
    }

    async fn rate_limited(
        &self,
        job: &LeasedJob,
        pause: Duration,
        limit: Option<u32>,
    ) -> Result<(), QueueError> {
        let s = self.shard_index(&job.tenant);
        self.shards[s].rate_limited(job, pause, limit).await?;
        self.touched(s);
        Ok(())
    }

    async fn learn_daily_limit(&self, tenant: &str, calls: u32) -> Result<(), QueueError> {
        self.of(tenant).learn_daily_limit(tenant, calls).await
    }

    async fn requeue(&self, job: &LeasedJob, how: Requeue) -> Result<(), QueueError> {
        let s = self.shard_index(&job.tenant);
        self.shards[s].requeue(job, how).await?;
        self.touched(s);
        Ok(())
    }

    async fn bury(&self, job: &LeasedJob, reason: &str) -> Result<(), QueueError> {
        let s = self.shard_index(&job.tenant);
        self.shards[s].bury(job, reason).await?;
        self.touched(s);
        Ok(())
    }

    async fn set_tenant_host(
        &self,
        tenant: &str,
        api_base: Option<&url::Url>,
        access_key: &str,
    ) -> Result<bool, QueueError> {
        let s = self.shard_index(tenant);
        let set = self.shards[s]
            .set_tenant_host(tenant, api_base, access_key)
            .await?;
        self.touched(s);
        Ok(set)
    }

    async fn unsent(&self, job: &LeasedJob) -> Result<(), QueueError> {
        let s = self.shard_index(&job.tenant);
        self.shards[s].unsent(job).await?;
        self.touched(s);
        Ok(())
    }

    async fn take_call(&self, tenant: &str, call: &str) -> Result<Option<Duration>, QueueError> {
        self.of(tenant).take_call(tenant, call).await
    }

    async fn hold(&self, tenant: &str, hold: NewHold) -> Result<bool, QueueError> {
        self.of(tenant).hold(tenant, hold).await
    }

    async fn release(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError> {
        let s = self.shard_index(tenant);
        let released = self.shards[s].release(tenant).await?;
        self.touched(s);
        Ok(released)
    }

    async fn tenant_hold(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError> {
        self.of(tenant).tenant_hold(tenant).await
    }

    async fn host_failed(
        &self,
        tenant: &str,
        policy: UnreachablePolicy,
        reason: &str,
    ) -> Result<HostFailed, QueueError> {
        self.of(tenant).host_failed(tenant, policy, reason).await
    }

    async fn host_answered(&self, tenant: &str) -> Result<(), QueueError> {
        let s = self.shard_index(tenant);
        self.shards[s].host_answered(tenant).await?;
        self.touched(s);
        Ok(())
    }

    async fn status(&self) -> Result<QueueStatus, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].status().await;
        }
        let all = try_join_all(self.shards.iter().map(|q| q.status())).await?;
        let mut merged = QueueStatus {
            queue: self.config.name.clone(),
            ..Default::default()
        };
        for (s, st) in all.into_iter().enumerate() {
            merged.now_ms = merged.now_ms.max(st.now_ms);
            merged.queued += st.queued;
            merged.scheduled += st.scheduled;
            merged.running += st.running;
            merged.done += st.done;
            merged.dead += st.dead;
            merged.oldest_running_ms = max_opt(merged.oldest_running_ms, st.oldest_running_ms);
            merged.tenants.extend(st.tenants);
            if s == 0 {
                merged.paused = st.paused;
            }
            for (outcome, n) in st.outcomes {
                *merged.outcomes.entry(outcome).or_default() += n;
            }
        }
        merged.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        Ok(merged)
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobResult>, QueueError> {
        let found = try_join_all(
            self.shards_for(id)
                .into_iter()
                .map(|s| async move { Ok::<_, QueueError>((s, self.shards[s].job(id).await?)) }),
        )
        .await?;
        Ok(found.into_iter().find_map(|(s, job)| {
            let job = job?;
            self.remember(s, [id.clone()]);
            Some(job)
        }))
    }

    async fn results(&self, tenant: Option<&str>) -> Result<Vec<JobResult>, QueueError> {
        if let Some(t) = tenant {
            return self.of(t).results(Some(t)).await;
        }
        let all = try_join_all(self.shards.iter().map(|q| q.results(None))).await?;
        Ok(in_finishing_order(all))
    }

    async fn dead(&self) -> Result<Vec<JobResult>, QueueError> {
        let all = try_join_all(self.shards.iter().map(|q| q.dead())).await?;
        Ok(in_finishing_order(all))
    }

    async fn retry_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        let counts = try_join_all(self.shards.iter().map(|q| q.retry_dead(ids))).await?;
        for (s, n) in counts.iter().enumerate() {
            if *n > 0 {
                self.touched(s);
            }
        }
        Ok(counts.into_iter().sum())
    }

    async fn purge_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        let counts = try_join_all(self.shards.iter().map(|q| q.purge_dead(ids))).await?;
        Ok(counts.into_iter().sum())
    }

    async fn purge_done(&self, ids: &[JobId]) -> Result<u64, QueueError> {
        let counts = try_join_all(self.shards.iter().map(|q| q.purge_done(ids))).await?;
        Ok(counts.into_iter().sum())
    }

    async fn purge_done_before(&self, age: Duration, max: usize) -> Result<u64, QueueError> {
        let mut deleted = 0u64;
        for q in &self.shards {
            let left = max.saturating_sub(usize::try_from(deleted).unwrap_or(usize::MAX));
            if left == 0 {
                break;
            }
            deleted += q.purge_done_before(age, left).await?;
        }
        Ok(deleted)
    }

    async fn done_per_second(&self, seconds: u32) -> Result<Vec<u64>, QueueError> {
        let all = try_join_all(self.shards.iter().map(|q| q.done_per_second(seconds))).await?;
        let len = all.iter().map(Vec::len).max().unwrap_or(0);
        let mut sum = vec![0u64; len];
        // Aligned on the current second, the last of each series.
        for series in all {
            let offset = len - series.len();
            for (i, n) in series.into_iter().enumerate() {
                sum[offset + i] += n;
            }
        }
        Ok(sum)
    }

    async fn note_attempt(&self, id: &JobId, attempt: &Attempt) -> Result<(), QueueError> {
        // A shard without the job's record keeps nothing: asking every shard is safe.
        try_join_all(
            self.shards_for(id)
                .into_iter()
                .map(|s| self.shards[s].note_attempt(id, attempt)),
        )
        .await?;
        Ok(())
    }

    async fn jobs_page(
        &self,
        of: PageOf,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].jobs_page(of, cursor, limit).await;
        }
        let mut cursors = self.split_cursor(cursor)?;
        let limit = limit.clamp(1, 1000);
        if of == PageOf::Waiting {
            // In no particular order: the shards one after the other.
            let mut jobs = Vec::new();
            for (s, c) in cursors.iter_mut().enumerate() {
                if jobs.len() >= limit {
                    break;
                }
                let Some(from) = c.as_ref().map_or(Some(None), |c| c.as_ref().map(Some)) else {
                    continue;
                };
                let page = self.shards[s]
                    .jobs_page(of, from.map(String::as_str), limit - jobs.len())
                    .await?;
                jobs.extend(page.jobs);
                *c = Some(page.next);
            }
            return Ok(JobPage {
                jobs,
                next: Self::join_cursor(&cursors),
            });
        }
        // Done and dead: each shard's next page, newest first within the shard, merged by
        // when each job finished, newest first (ties: the lower shard first). A row that does
        // not say (a record an older version wrote) keeps its place in its shard's order: it
        // counts as finished when the row before it did. Each shard's cursor then moves past
        // what was shown.
        let pages = try_join_all(cursors.iter().enumerate().map(|(s, c)| async move {
            match c {
                Some(None) => Ok(None),
                c => self.shards[s]
                    .jobs_page(of, c.as_ref().and_then(|c| c.as_deref()), limit)
                    .await
                    .map(Some),
            }
        }))
        .await?;
        let mut heads: Vec<usize> = vec![0; pages.len()];
        let mut last_at: Vec<u64> = vec![u64::MAX; pages.len()];
        let mut jobs = Vec::new();
        while jobs.len() < limit {
            let newest = pages
                .iter()
                .enumerate()
                .filter_map(|(s, page)| {
                    let row = page.as_ref()?.jobs.get(heads[s])?;
                    let at = row.finished_ms.map_or(last_at[s], |f| f.min(last_at[s]));
                    Some((at, std::cmp::Reverse(s), row))
                })
                .max_by_key(|&(at, s, _)| (at, s));
            let Some((at, std::cmp::Reverse(s), row)) = newest else {
                break;
            };
            jobs.push(row.clone());
            heads[s] += 1;
            last_at[s] = at;
        }
        for (s, page) in pages.iter().enumerate() {
            let Some(page) = page else { continue };
            let shown = heads[s];
            if shown == page.jobs.len() {
                cursors[s] = Some(page.next.clone());
            } else if shown > 0 {
                let from = cursors[s].as_ref().and_then(|c| c.as_deref());
                cursors[s] = Some(self.shards[s].jobs_page(of, from, shown).await?.next);
            }
        }
        Ok(JobPage {
            jobs,
            next: Self::join_cursor(&cursors),
        })
    }

    async fn find_job(&self, tenant: &str, key: &str) -> Result<Option<JobId>, QueueError> {
        self.of(tenant).find_job(tenant, key).await
    }

    async fn attempts(&self, id: &JobId) -> Result<Vec<Attempt>, QueueError> {
        let all = try_join_all(
            self.shards_for(id)
                .into_iter()
                .map(|s| self.shards[s].attempts(id)),
        )
        .await?;
        Ok(all.into_iter().find(|a| !a.is_empty()).unwrap_or_default())
    }

    async fn pulse(&self, top: usize) -> Result<QueuePulse, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].pulse(top).await;
        }
        let all = try_join_all(self.shards.iter().map(|q| q.pulse(top))).await?;
        let mut merged = QueuePulse::default();
        for p in all {
            merged.now_ms = merged.now_ms.max(p.now_ms);
            merged.queued += p.queued;
            merged.scheduled += p.scheduled;
            merged.running += p.running;
            merged.done += p.done;
            merged.dead += p.dead;
            merged.done_total += p.done_total;
            merged.oldest_running_ms = max_opt(merged.oldest_running_ms, p.oldest_running_ms);
            merged.latency_ms = max_opt(merged.latency_ms, p.latency_ms);
            merged.tenant_latency_ms.extend(p.tenant_latency_ms);
            merged.throttled += p.throttled;
            merged.throttled_tenants.extend(p.throttled_tenants);
            merged.paused |= p.paused;
            merged.share_cut += p.share_cut;
            merged.quota_reached += p.quota_reached;
            merged.held.keys_refused += p.held.keys_refused;
            merged.held.host_unreachable += p.held.host_unreachable;
            merged.held.paused += p.held.paused;
            merged.shares.extend(p.shares);
        }
        merged
            .tenant_latency_ms
            .sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        // The shares in the order each shard lists them (`QueuePulse::shares`): cut ones,
        // the longest to climb back first; then spent quotas by name; then by latency.
        let by_latency: HashMap<&str, usize> = merged
            .tenant_latency_ms
            .iter()
            .enumerate()
            .map(|(i, (t, _))| (t.as_str(), i))
            .collect();
        let mut shares = std::mem::take(&mut merged.shares);
        shares.sort_by_cached_key(|s| match (s.cut_until_ms, s.quota_until_ms) {
            (Some(cut), _) => (0, u64::MAX - cut, s.tenant.clone()),
            (None, Some(_)) => (1, 0, s.tenant.clone()),
            (None, None) => (
                2,
                by_latency
                    .get(s.tenant.as_str())
                    .map_or(u64::MAX, |i| *i as u64),
                s.tenant.clone(),
            ),
        });
        shares.truncate(top);
        merged.shares = shares;
        merged.tenant_latency_ms.truncate(top);
        merged.throttled_tenants.sort();
        merged.throttled_tenants.truncate(top);
        Ok(merged)
    }

    async fn tenants_page(&self, query: &TenantQuery) -> Result<TenantPage, QueueError> {
        if self.shards.len() == 1 {
            return self.shards[0].tenants_page(query).await;
        }
        let mut cursors = self.split_cursor(query.cursor.as_deref())?;
        let rows = query.rows();
        let ask = |c: &Option<Option<String>>, limit: usize| TenantQuery {
            sort: query.sort,
            filter: query.filter,
            cursor: c.as_ref().and_then(|c| c.clone()),
            limit,
        };
        let pages = try_join_all(cursors.iter().enumerate().map(|(s, c)| {
            let q = ask(c, rows);
            let done = matches!(c, Some(None));
            async move {
                if done {
                    // Still asked, for its total; its rows are not shown again.
                    let mut page = self.shards[s].tenants_page(&q).await?;
                    page.tenants.clear();
                    page.next = None;
                    Ok::<_, QueueError>(page)
                } else {
                    self.shards[s].tenants_page(&q).await
                }
            }
        }))
        .await?;
        let total = pages.iter().map(|p| p.total).sum();
        let mut heads = vec![0usize; pages.len()];
        let mut tenants = Vec::new();
        while tenants.len() < rows {
            let pick = pages
                .iter()
                .enumerate()
                .filter_map(|(s, p)| Some((s, tenant_order(query.sort, p.tenants.get(heads[s])?))))
                .min_by(|a, b| a.1.cmp(&b.1));
            let Some((s, _)) = pick else { break };
            tenants.push(pages[s].tenants[heads[s]].clone());
            heads[s] += 1;
        }
        for (s, page) in pages.iter().enumerate() {
            if matches!(cursors[s], Some(None)) {
                continue;
            }
            let shown = heads[s];
            if shown == page.tenants.len() {
                cursors[s] = Some(page.next.clone());
            } else if shown > 0 {
                let again = self.shards[s]
                    .tenants_page(&ask(&cursors[s], shown))
                    .await?;
                cursors[s] = Some(again.next);
            }
        }
        Ok(TenantPage {
            total,
            tenants,
            next: Self::join_cursor(&cursors),
        })
    }

    async fn pause_queue(&self, reason: &str, by: Option<&str>) -> Result<QueuePause, QueueError> {
        let all = try_join_all(self.shards.iter().map(|q| q.pause_queue(reason, by))).await?;
        all.into_iter()
            .next()
            .ok_or_else(|| QueueError::Store("a queue with no shard".into()))
    }

    async fn resume_queue(&self) -> Result<Option<QueuePause>, QueueError> {
        let all = try_join_all(self.shards.iter().map(|q| q.resume_queue())).await?;
        for s in 0..self.shards.len() {
            self.touched(s);
        }
        Ok(all.into_iter().flatten().next())
    }

    async fn queue_pause(&self) -> Result<Option<QueuePause>, QueueError> {
        self.shards[0].queue_pause().await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        for r in join_all(self.shards.iter().map(|q| q.ping())).await {
            r?;
        }
        Ok(())
    }

    async fn replicas(&self) -> Result<Option<crate::queue::ReplicaState>, QueueError> {
        // One connection serves every shard: the first asks for all.
        match self.shards.first() {
            Some(q) => q.replicas().await,
            None => Ok(None),
        }
    }

    async fn is_idle(&self) -> Result<bool, QueueError> {
        let all = try_join_all(self.shards.iter().map(|q| q.is_idle())).await?;
        Ok(all.into_iter().all(|idle| idle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_stays_on_its_shard() {
        // FNV-1a of "acme" is fixed: the shard a tenant lands on must never change.
        assert_eq!(shard_of("", 16), (0xcbf2_9ce4_8422_2325u64 % 16) as usize);
        assert_eq!(shard_of("acme", 1), 0);
        let spread: HashSet<usize> = (0..200).map(|i| shard_of(&format!("t{i}"), 16)).collect();
        assert_eq!(spread.len(), 16, "200 tenants reach every one of 16 shards");
    }

    #[test]
    fn a_merged_cursor_reads_back() {
        let parts = vec![None, Some(None), Some(Some("12:abc".to_string()))];
        let joined = ShardedQueue::<crate::queue::embedded::EmbeddedQueue>::join_cursor(&parts)
            .expect("not all done");
        assert_eq!(joined, "~-~12:abc");
    }
}
