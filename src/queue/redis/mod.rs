//! Redis backend of the queue: the state every worker process on every machine shares, and
//! the Lua scripts that change it atomically.
//!
//! Where things are:
//! - `dispatch.lua`: the limiter (each tenant's call log, the ready set) and the leases it
//!   hands out and takes back; `prelude.lua`: what every script shares (re-stamping a call,
//!   ending a lease, burying); one `.lua` file per other operation, each with a header
//!   naming its KEYS and ARGV, loaded by `scripts.rs`;
//! - `connect.rs`: connecting, the name and settings checks, the server's durability;
//! - `target.rs`: the `--redis` URL read (one server, or sentinels and a master name);
//! - `link.rs`: the connections, which follow the primary through a Sentinel failover, and
//!   the lane whose writes are acknowledged only after `WAIT` (pushes, dispatches, fences,
//!   completions: `docs/decisions.md`, "Redis Sentinel");
//! - `push.rs`: bulk enqueue and the encoding of what a push writes;
//! - `records.rs`: job records read back, and the batches over dead or done jobs;
//! - `reply.rs`: reading the scripts' replies and stored records, never panicking;
//! - `wake.rs`: wake-ups over pub/sub;
//! - this file: the [`Queue`] methods, each one script call (or a pipeline).
//!
//! Reason texts (pauses, dead jobs) come from [`super::reason`] as ARGV: no script composes
//! one.
//!
//! Layout, all under the prefix `{name}:` (a Redis Cluster hash tag: one slot per queue):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tenants` | hash | tenant name -> tenant record (JSON; holds the keys: never logged) |
//! | `limits` | hash | tenant -> calls allowed per window (imported, or lower if learned) |
//! | `learned` | hash | tenant -> the limit LeadSquared named in a rate-limit answer |
//! | `configured` / `reserve` / `daily_limit` | hash | tenant -> limit as imported / calls per window left to other clients / calls per day (imported, or lower if learned) |
//! | `daily_learned` | hash | tenant -> the daily quota LeadSquared named in a rate-limit answer |
//! | `day:<tenant>` | hash | the daily quota's count: days since the epoch (of `QueueConfig::day`) -> calls dispatched in that day (today's, and yesterday's until today's first call); a queue an older version wrote may hold `day` and `calls` fields, still read |
//! | `share:<tenant>` | hash | the adaptive share: `share` as set at the last cut, `since` (µs) when the climb from it began, `cut` (µs) the last cut (see `queue::share`) |
//! | `paced` | hash | tenant → µs its pacing counts from: its last call while paced, or its last cut |
//! | `q:<tenant>` | list | ids of the tenant's waiting jobs, next first |
//! | `ready` | zset | tenants with waiting jobs, scored by when their next call is allowed |
//! | `calls:<tenant>` | zset | the tenant's last `limit` calls (lease tokens), scored by time; the dispatch allows its cap (`limit − reserve`, or the share under it) per window |
//! | `paused` / `pause_reason` | hash | tenant -> pause end (µs) / why: a rate-limit answer's pause, or a hold's end (`FOREVER_US` for a hold until released) |
//! | `holds` | hash | tenant -> its hold (JSON: kind, reason, since_ms, until_ms, failures, by; see `Queue::hold`) |
//! | `hosts` | hash | tenant -> its API base, once known (for status: the records hold the keys) |
//! | `streak` | hash | tenant -> unreachable-host failures in a row (`Queue::host_failed`; every completion clears it) |
//! | `probe` | hash | tenant -> `new` while its host has not answered since it was imported, or its keys or host changed: one call in flight with `QueueConfig::slow_start`; any answer deletes it |
//! | `sched` | zset | job ids waiting for a retry, scored by due time |
//! | `running` | zset | leased job ids, scored by lease expiry |
//! | `fly:<tenant>` | zset | the tenant's leased job ids, scored by lease expiry: its calls in flight, which dispatch caps |
//! | `capped` | hash | tenant -> 1 while dispatch found it at its cap of calls in flight; the first lease to end puts it back in `ready` |
//! | `bodies` | hash | job id -> `tenant \n length of key \n key` then the Create body (JSON; may hold secrets), until the job is done; tenant and key are copied into `job:<id>` at its first dispatch |
//! | `job:<id>` | hash | from the first dispatch on: tenant, key, state, attempts, lease, webhook_id, error, reconciled, outcome_unknown, call_until_ms, dispatched_ms, finished_ms |
//! | `keys` | hash | `tenant\nidempotency key` -> job id |
//! | `done` / `dead` | zset | finished job ids, scored by finishing time |
//! | `oldest` | zset | tenants with waiting jobs, scored by the push time (ms, from its UUIDv7 id) of the job next in their list: the queue's latency (`note_head` in prelude.lua keeps it; pulse.lua reads and repairs it) |
//! | `hist:<id>` | list | the job's last 20 calls (JSON `Attempt`s: time, call, outcome, HTTP status, ExceptionType, duration, error; never a secret), oldest first; deleted with the record |
//! | `stats` | hash | `done_total`: jobs ever done on the queue (purges do not lower it) |
//! | `tc:names` | zset | every registered tenant at 0: the tenants view by name |
//! | `tc:unfinished` / `tc:done` / `tc:dead` | zset | tenant -> MINUS its jobs not finished / ever done / dead, kept as jobs move (`count_tenant` in prelude.lua), so the tenants view pages any order without reading jobs (tenants.lua) |
//! | `paused_queue` | string | while the whole queue is paused: JSON reason, by, since_ms (`Queue::pause_queue`); dispatch hands nothing out |
//! | `corrupt:<id>` | any | a job record that was not a hash, set aside by dispatch |
//! | `wake` | channel | published when work may have become available |
//!
//! Sorted-set scores are microseconds on Redis's clock; `*_ms` fields are milliseconds. A
//! job's enqueue time is in its id (UUIDv7).
//! A push writes two hash fields per job, one `bodies` entry and one `keys` entry, with a
//! few multi-field calls per batch of 1,000 rather than a hash per job, and sends the bodies
//! as plain HSET arguments that never pass through Lua: that is what makes bulk enqueue fast
//! (`docs/decisions.md`, "Bulk enqueue"). A job that was never dispatched is therefore
//! `queued` with no `job:<id>` hash. (Queues written by an older version may still hold
//! `meta` entries, id -> `tenant\nkey`, for jobs never dispatched; they are still read.)
//! A job's body is dropped when it completes (it may hold custom header secrets and is not
//! needed again); its record stays for `results`. Records of finished jobs are not trimmed
//! on their own: `dead purge` removes dead ones, `results --purge-done` done ones once it
//! has written them out (purge_done.lua; their `keys` entries stay, so they stay
//! duplicates).

mod connect;
mod link;
mod memory;
mod push;
mod records;
mod reply;
mod scripts;
mod switch;
mod target;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Value};
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

use super::{
    Completion, Dispatched, Fence, HostFailed, JobPage, LeasedJob, NewHold, PageOf, Pushed, Queue,
    QueueConfig, QueueError, QueuePause, QueuePulse, QueueStatus, Requeue, TenantHold, TenantPage,
    TenantQuery, TenantSort, UnreachablePolicy, hold, reason, share, tenants,
};
use crate::job::{Attempt, HISTORY_LEN, JobId, JobResult, JobState, NewJob};
use crate::tenant::Tenant;
pub use connect::{
    DEFAULT_CLUSTER_SHARDS, Durability, MAX_SHARDS, RedisOptions, shard_prefix, valid_queue_name,
};
use link::{Acked, Link};
pub use link::{Replication, ReplicationMode};
use reply::{
    JOB_REPLY_FIELDS, array, corrupt, int, leased_job, parse_tenant, status_of, text, uint,
};
pub use target::{BadUrl, SENTINEL_PORT, Target};
use wake::Wake;

/// Ids per `retry_dead` / `purge_dead` / `put_tenants` script call.
const ADMIN_BATCH: usize = 1000;
/// Retries promoted, and expired leases taken back, per dispatch: bounds one call's work.
const MAX_MOVES_PER_DISPATCH: u32 = 100;
/// Tenants one dispatch examines without handing out a job (each one it cannot serve is
/// re-scored into the future).
const MAX_TENANTS_PER_DISPATCH: u32 = 64;
/// Jobs one dispatch hands out at most: bounds how long one call holds Redis (about 50 µs
/// of script time per job).
const MAX_JOBS_PER_DISPATCH: usize = 128;
/// Running jobs `status` looks at for the oldest dispatch.
const STATUS_RUNNING_SCAN: u32 = 10_000;
/// Longest series `done_per_second` returns.
const MAX_DONE_SECONDS: u32 = 3600;

/// The queue in Redis. One per process is enough: its connection multiplexes every caller,
/// reconnects on its own (exponential backoff from 100 ms, 6 tries per command), follows the
/// primary through a failover when the URL names sentinels ([`link`]), and its subscriber
/// task (ended when the queue is dropped) wakes waiting workers.
pub struct RedisQueue {
    /// Settings.
    config: QueueConfig,
    /// `{name}:`.
    prefix: String,
    /// The shared, reconnecting connection; cloned per call.
    con: Link,
    /// The connection of the writes acknowledged only once replicated (pushes, dispatches,
    /// fences, completions: see [`RedisQueue::acked`]); the main one when nothing is waited
    /// for.
    acked: Acked,
    /// Wakeups from the `wake` channel.
    wake: Arc<Wake>,
    /// Ends the subscriber task when the queue (the last of its shards) is dropped.
    _listener: Arc<DropGuard>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A call's entry in its job's history, as the scripts store it.
fn history_entry(attempt: &Attempt) -> Result<String, QueueError> {
    serde_json::to_string(attempt)
        .map_err(|e| QueueError::Store(format!("cannot encode an attempt: {e}")))
}

/// A duration in whole microseconds, as the scripts take them.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisQueue {
    /// The key prefix, `{name}:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key of this queue and returns how many went: jobs, results, tenants,
    /// everything under its prefix `{name}:`. Keys of other queues on the same Redis are
    /// never touched: the prefix ends at the closing brace of the name's hash tag, so
    /// `{a}:*` cannot match a key of queue `a:b` or `ab`, and all of a queue's keys share one
    /// Redis Cluster slot (one node to scan: on a cluster the `SCAN` goes to that slot's
    /// master). A sharded queue is one prefix per shard:
    /// [`ShardedQueue::delete_all`](crate::queue::sharded::ShardedQueue::delete_all). For a
    /// run that should leave nothing behind (the demo); not atomic (`SCAN` then `UNLINK`, 1,000 keys at a time), so no worker or
    /// producer should be using the queue meanwhile.
    pub async fn delete_all(&self) -> Result<u64, QueueError> {
        // A valid name (`valid_queue_name`) has no glob characters: the pattern is literal
        // up to its `*`.
        let pattern = format!("{}*", self.prefix);
        let mut con = self.con.clone();
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        // On a cluster: the slot every key of the queue is in.
        let slot = connect::slot_of_prefix(&self.prefix);
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(ADMIN_BATCH);
            let (next, keys): (u64, Vec<String>) = match &mut con {
                // A SCAN goes to one node, a random one unless routed: to the master of the
                // queue's slot, which holds every key of it.
                Link::Cluster(cluster) => {
                    let route = redis::cluster_routing::RoutingInfo::SingleNode(
                        redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                            redis::cluster_routing::Route::new(
                                slot,
                                redis::cluster_routing::SlotAddr::Master,
                            ),
                        ),
                    );
                    redis::from_redis_value(cluster.route_command(scan, route).await?)
                        .map_err(|e| corrupt("SCAN", &e.to_string()))?
                }
                other => scan.query_async(other).await?,
            };
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut con)
                    .await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// A fresh handle on the acknowledged-writes lane, for one call: after it,
    /// [`RedisQueue::confirm`] says whether enough replicas have the write.
    fn acked(&self) -> Acked {
        self.acked.clone()
    }

    /// [`QueueError::NotReplicated`] when the last call on `con` was confirmed by fewer
    /// replicas than required.
    fn confirm(&self, con: &Acked, what: &'static str) -> Result<(), QueueError> {
        match (con.shortfall(), con.replication()) {
            (Some(acked), Some(wait)) => Err(QueueError::NotReplicated {
                what,
                acked: u32::try_from(acked).unwrap_or(0),
                wanted: con.waited(),
                timeout_ms: u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX),
            }),
            _ => Ok(()),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn window_us(&self) -> u64 {
        micros(self.config.window + self.config.margin)
    }

    /// Extends the lease; with a non-zero `in_flight`, also the fence before a Create (see
    /// [`Queue::sending`]).
    /// The fence is an acknowledged write: a Create goes out only once the replicas hold
    /// the moment it may land until, so that a primary promoted after a failover does not
    /// hand the job to another worker before then.
    async fn beat(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError> {
        let mut invocation = scripts::HEARTBEAT.key(self.key("running"));
        invocation
            .arg(&self.prefix)
            .arg(&job.id.0)
            .arg(&job.lease)
            .arg(micros(self.config.lease))
            .arg(micros(in_flight))
            .arg(self.window_us())
            .arg(&job.tenant);
        if in_flight.is_zero() {
            let reply: i64 = invocation.invoke_async(&mut self.con.clone()).await?;
            return Ok(reply == 1);
        }
        let mut con = self.acked();
        let reply: i64 = invocation.invoke_async(&mut con).await?;
        if reply == 1 {
            self.confirm(&con, "fence")?;
        }
        Ok(reply == 1)
    }

    /// Gives back jobs whose dispatch the replicas did not confirm, before anyone worked on
    /// them: no attempt spent, and the outcome as unknown as it was (a job taken back from
    /// an expired lease must still be reconciled, never created again: the failover test
    /// caught exactly that). Best effort: a job whose hand-back fails stays leased until its
    /// lease runs out, and is then taken back as usual.
    async fn hand_back_unconfirmed(&self, jobs: &[LeasedJob]) {
        for job in jobs {
            let how = Requeue {
                spend_attempt: false,
                outcome_unknown: job.outcome_unknown,
            };
            if let Err(e) = self.requeue(job, how).await {
                tracing::warn!(job = %job.id, "could not hand back an unconfirmed dispatch: {e}");
            }
        }
    }

    /// Runs a script that acts on a job's call in its tenant's log (`answered.lua`,
    /// `unsent.lua`): KEYS[1] the ready set; ARGV prefix, tenant, the call's id (the lease
    /// token), window + margin.
    async fn on_call(
        &self,
        script: &scripts::QueueScript,
        job: &LeasedJob,
    ) -> Result<(), QueueError> {
        let _: i64 = script
            .key(self.key("ready"))
            .arg(&self.prefix)
            .arg(&job.tenant)
            .arg(&job.lease)
            .arg(self.window_us())
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    /// A finishing script's invocation with the arguments they all start with: prefix, job
    /// id, lease token (the call's id in the call log), tenant, window + margin, and the
    /// reason a record with no tenant is buried with.
    fn finishing<'a>(
        &self,
        script: &'a scripts::QueueScript,
        job: &LeasedJob,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(self.key("running"));
        invocation
            .arg(&self.prefix)
            .arg(&job.id.0)
            .arg(&job.lease)
            .arg(&job.tenant)
            .arg(self.window_us())
            .arg(reason::corrupt::NO_TENANT);
        invocation
    }

    /// Runs a finishing script whose reply is 0 when the lease was lost.
    async fn finish(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        job: &LeasedJob,
    ) -> Result<i64, QueueError> {
        let reply: i64 = invocation.invoke_async(&mut self.con.clone()).await?;
        if reply == 0 {
            return Err(QueueError::LeaseLost(job.id.clone()));
        }
        Ok(reply)
    }
}

#[async_trait]
impl Queue for RedisQueue {
    fn config(&self) -> &QueueConfig {
        &self.config
    }

    async fn put_tenants(&self, tenants: &[Tenant]) -> Result<(), QueueError> {
        for chunk in tenants.chunks(ADMIN_BATCH) {
            let mut invocation = scripts::PUT_TENANTS.key(self.key("tenants"));
            invocation.arg(&self.prefix);
            for t in chunk {
                let record = serde_json::to_string(t).map_err(|e| QueueError::Corrupt {
                    key: format!("tenants[{}]", t.name),
                    reason: format!("tenant does not serialise: {e}"),
                })?;
                invocation
                    .arg(&t.name)
                    .arg(record)
                    .arg(t.limit.max(1))
                    .arg(t.reserve)
                    .arg(t.daily_limit.unwrap_or(0));
            }
            invocation.arg(self.window_us());
            let _added: i64 = invocation.invoke_async(&mut self.con.clone()).await?;
        }
        Ok(())
    }

    async fn tenant(&self, name: &str) -> Result<Option<Tenant>, QueueError> {
        let mut con = self.con.clone();
        let (record, limit): (Option<String>, Option<u32>) = redis::pipe()
            .hget(self.key("tenants"), name)
            .hget(self.key("limits"), name)
            .query_async(&mut con)
            .await?;
        let Some(record) = record else {
            return Ok(None);
        };
        let mut tenant = parse_tenant(name, &record)?;
        // The effective limit: lower when LeadSquared named a lower one.
        if let Some(limit) = limit.filter(|l| *l >= 1) {
            tenant.limit = tenant.limit.min(limit);
        }
        Ok(Some(tenant))
    }

    async fn tenant_names(&self) -> Result<Vec<String>, QueueError> {
        let mut names: Vec<String> = self.con.clone().hkeys(self.key("tenants")).await?;
        names.sort();
        Ok(names)
    }

    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, QueueError> {
        self.push_jobs(jobs).await
    }

    async fn dispatch_many(
        &self,
        max: usize,
        fence: Option<Fence>,
    ) -> Result<Dispatched, QueueError> {
        // Read before the request goes out: the script's clock reading is no earlier (see
        // `Fence`).
        let sent = Instant::now();
        let token = uuid::Uuid::new_v4().simple().to_string();
        let started = self.wake.stamp();
        let fence_us = fence.map_or(0, |f| micros(f.slack + f.in_flight).max(1));
        // Acknowledged: a lease (and its fence) the replicas do not hold could be lost in a
        // failover, and the new primary would hand the job to a second worker while the
        // first one's Create is under way.
        let mut con = self.acked();
        let reply: Value = scripts::DISPATCH
            .key(self.key("ready"))
            .arg(&self.prefix)
            .arg(self.window_us())
            .arg(micros(self.config.lease))
            .arg(self.config.max_attempts)
            .arg(&token)
            .arg(MAX_MOVES_PER_DISPATCH)
            .arg(MAX_TENANTS_PER_DISPATCH)
            .arg(max.clamp(1, MAX_JOBS_PER_DISPATCH))
            .arg(fence_us)
            .arg(reason::lease_expired_no_attempts_left(
                self.config.max_attempts,
            ))
            .arg(reason::LEASE_EXPIRED_MID_CALL)
            .arg(reason::LEASE_EXPIRED)
            .arg(reason::corrupt::RETRY_RECORD_MISSING)
            .arg(reason::corrupt::LEASE_RECORD_MISSING)
            .arg(reason::corrupt::DAMAGED_ENTRY)
            .arg(reason::corrupt::NOT_A_HASH)
            .arg(reason::corrupt::RECORD_MISSING)
            .arg(reason::corrupt::NO_BODY_OR_STATE)
            .arg(self.config.share.as_str())
            .arg(micros(self.config.day))
            .arg(if self.config.slow_start {
                "slow_start"
            } else {
                ""
            })
            .invoke_async(&mut con)
            .await?;
        let fenced_until = fence.map(|f| sent + f.slack);
        let mut items = array(reply, "dispatch")?.into_iter();
        let kind = items.next().as_ref().and_then(text).unwrap_or_default();
        let result = match kind.as_str() {
            "jobs" => {
                let fields: Vec<Value> = items.collect();
                if fields.is_empty() || !fields.len().is_multiple_of(JOB_REPLY_FIELDS) {
                    return Err(corrupt("dispatch", "unexpected script reply"));
                }
                let jobs = fields
                    .chunks(JOB_REPLY_FIELDS)
                    .enumerate()
                    .map(|(n, f)| leased_job(f, n, &token, fenced_until))
                    .collect::<Result<Vec<_>, _>>()?;
                Dispatched::Jobs(jobs)
            }
            "wait" => Dispatched::Wait(Duration::from_micros(uint(items.next().as_ref()))),
            "empty" => Dispatched::Empty,
            _ => return Err(corrupt("dispatch", "unexpected script reply")),
        };
        if !matches!(result, Dispatched::Jobs(_)) {
            self.wake.found_nothing(started);
        }
        if let Dispatched::Jobs(jobs) = &result
            && let Err(e) = self.confirm(&con, "dispatch")
        {
            self.hand_back_unconfirmed(jobs).await;
            return Err(e);
        }
        Ok(result)
    }

    async fn wait_for_work(&self, max: Duration) {
        self.wake.wait(max).await;
    }

    async fn heartbeat(&self, job: &LeasedJob) -> Result<bool, QueueError> {
        self.beat(job, Duration::ZERO).await
    }

    async fn sending(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError> {
        // At least 1 µs: zero means "a plain heartbeat" to the script.
        self.beat(job, in_flight.max(Duration::from_micros(1)))
            .await
    }

    async fn answered(&self, job: &LeasedJob) -> Result<(), QueueError> {
        self.on_call(&scripts::ANSWERED, job).await
    }

    async fn complete_many(&self, done: &[Completion<'_>]) -> Result<Vec<bool>, QueueError> {
        if done.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = scripts::COMPLETE.key(self.key("running"));
        invocation
            .arg(&self.prefix)
            .arg(self.window_us())
            .arg(HISTORY_LEN);
        for c in done {
            invocation
                .arg(&c.job.id.0)
                .arg(&c.job.lease)
                .arg(&c.job.tenant)
                .arg(c.webhook_id)
                .arg(u8::from(c.reconciled))
                .arg(micros(c.answered_ago))
                .arg(
                    c.attempt
                        .map(history_entry)
                        .transpose()?
                        .unwrap_or_default(),
                )
                .arg(c.outcome.as_str())
                .arg(crate::queue::revision::done_digest(&c.job.body))
                .arg(crate::queue::revision::done_fields(&c.job.body))
                .arg(c.job.dispatched_at_ms);
        }
        // Acknowledged: the worker moves on only once the replicas hold the Ids. A retry
        // after a shortfall finds the jobs done with these Ids and confirms again.
        let mut con = self.acked();
        let reply: Vec<i64> = invocation.invoke_async(&mut con).await?;
        if reply.len() != done.len() {
            return Err(corrupt("complete", "unexpected script reply"));
        }
        let recorded: Vec<bool> = reply.iter().map(|r| *r == 1).collect();
        if recorded.contains(&true) {
            self.confirm(&con, "completion")?;
        }
        Ok(recorded)
    }

    async fn retry_later(
        &self,
        job: &LeasedJob,
        delay: Duration,
        error: &str,
        outcome_unknown: bool,
    ) -> Result<(), QueueError> {
        let mut invocation = self.finishing(&scripts::RETRY_LATER, job);
        // While the lease is held the record's attempts are the job's.
        invocation
            .arg(micros(delay))
            .arg(error)
            .arg(u8::from(outcome_unknown))
            .arg(self.config.max_attempts)
            .arg(reason::gave_up(job.attempt, error));
        self.finish(&invocation, job).await.map(drop)
    }

    async fn rate_limited(
        &self,
        job: &LeasedJob,
        pause: Duration,
        limit: Option<u32>,
    ) -> Result<(), QueueError> {
        let mut invocation = self.finishing(&scripts::RATE_LIMITED, job);
        invocation
            .arg(micros(pause))
            .arg(limit.unwrap_or(0))
            .arg(reason::rate_limited(limit))
            .arg(self.config.share.as_str());
        let reply: Vec<Value> = invocation.invoke_async(&mut self.con.clone()).await?;
        match reply.first().and_then(int) {
            Some(0) => return Err(QueueError::LeaseLost(job.id.clone())),
            Some(_) if reply.len() >= 8 => {}
            Some(_) => return Ok(()),
            None => return Err(corrupt("rate_limited", "unexpected script reply")),
        }
        let ours = u32::try_from(uint(reply.get(1))).unwrap_or(u32::MAX);
        let now = uint(reply.get(5));
        let small = |i: usize| u32::try_from(uint(reply.get(i))).unwrap_or(u32::MAX);
        let (limit, reserve) = (small(6).max(1), small(7));
        let stored = |v: Option<&Value>| v.and_then(text).filter(|s| !s.is_empty());
        let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<f64>().ok());
        // How long before the refusal a stored moment (µs) was.
        let ago = |at: f64| Duration::from_micros((now as f64 - at).max(0.0) as u64);
        let cap = share::cap(limit, reserve);
        let window = self.config.window + self.config.margin;
        let (mut set, mut since, mut cut) = (
            stored(reply.get(2)),
            stored(reply.get(3)),
            stored(reply.get(4)),
        );
        // Another worker's cut between the read and the write: decide again on what it
        // wrote (a cut is spaced by half a window, so the second try finds it too soon).
        for _ in 0..3 {
            let current = match (number(&set), number(&since)) {
                (Some(set), Some(since)) => share::share_at(set, ago(since), window, cap),
                _ => f64::from(cap),
            };
            let refusal = share::Refusal {
                share: current,
                cap,
                limit,
                ours,
                since_cut: number(&cut).map(ago),
                window,
            };
            let Some(new) = share::after_refusal(refusal) else {
                return Ok(());
            };
            // `since` goes back as it was read: the script compares it as text.
            let reply: Value = scripts::ADAPT_SHARE
                .key(self.key("ready"))
                .arg(&self.prefix)
                .arg(&job.tenant)
                .arg(since.as_deref().unwrap_or(""))
                .arg(new)
                .arg(now)
                .arg(self.window_us())
                .invoke_async(&mut self.con.clone())
                .await?;
            match reply {
                Value::Array(v) => {
                    (set, since, cut) = (stored(v.first()), stored(v.get(1)), stored(v.get(2)));
                }
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    async fn requeue(&self, job: &LeasedJob, how: Requeue) -> Result<(), QueueError> {
        let mut invocation = self.finishing(&scripts::REQUEUE, job);
        invocation
            .arg(u8::from(how.spend_attempt))
            .arg(u8::from(how.outcome_unknown))
            .arg(reason::HANDED_BACK_MID_CALL);
        self.finish(&invocation, job).await.map(drop)
    }

    async fn bury(&self, job: &LeasedJob, reason: &str) -> Result<(), QueueError> {
        let mut invocation = self.finishing(&scripts::BURY, job);
        invocation.arg(reason);
        self.finish(&invocation, job).await.map(drop)
    }

    async fn status(&self) -> Result<QueueStatus, QueueError> {
        let reply: Value = scripts::STATUS
            .key(self.key("limits"))
            .arg(&self.prefix)
            .arg(micros(self.config.window))
            .arg(STATUS_RUNNING_SCAN)
            .arg(self.config.share.as_str())
            .arg(self.window_us())
            .arg(micros(self.config.day))
            .invoke_async(&mut self.con.clone())
            .await?;
        let mut status = status_of(array(reply, "status")?, &self.config.name)?;
        let outcome_fields: Vec<String> = crate::job::Outcome::ALL
            .iter()
            .map(|o| format!("outcome:{}", o.as_str()))
            .collect();
        let (holds, hosts, paused, outcomes): (
            Vec<(String, String)>,
            std::collections::HashMap<String, String>,
            Option<String>,
            Vec<Option<u64>>,
        ) = redis::pipe()
            .hgetall(self.key("holds"))
            .hgetall(self.key("hosts"))
            .get(self.key("paused_queue"))
            .cmd("HMGET")
            .arg(self.key("stats"))
            .arg(&outcome_fields)
            .query_async(&mut self.con.clone())
            .await?;
        status.paused = paused.and_then(|raw| serde_json::from_str(&raw).ok());
        // Counted by complete.lua.
        status.outcomes = crate::job::Outcome::ALL
            .iter()
            .zip(outcomes)
            .map(|(o, n)| (o.as_str().to_string(), n.unwrap_or(0)))
            .collect();
        let holds = holds
            .into_iter()
            .filter_map(|(name, raw)| serde_json::from_str(&raw).ok().map(|h| (name, h)));
        hold::merge(&mut status, holds);
        for row in &mut status.tenants {
            row.host = hosts.get(&row.tenant).cloned();
        }
        Ok(status)
    }

    async fn set_tenant_host(
        &self,
        tenant: &str,
        api_base: Option<&url::Url>,
        access_key: &str,
    ) -> Result<bool, QueueError> {
        let reply: i64 = scripts::SET_HOST
            .key(self.key("tenants"))
            .arg(&self.prefix)
            .arg(tenant)
            .arg(api_base.map_or("", url::Url::as_str))
            .arg(access_key)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(reply == 1)
    }

    async fn unsent(&self, job: &LeasedJob) -> Result<(), QueueError> {
        self.on_call(&scripts::UNSENT, job).await
    }

    async fn take_call(&self, tenant: &str, call: &str) -> Result<Option<Duration>, QueueError> {
        let reply: i64 = scripts::TAKE_CALL
            .key(self.key("ready"))
            .arg(&self.prefix)
            .arg(tenant)
            .arg(call)
            .arg(self.window_us())
            .arg(self.config.share.as_str())
            .arg(micros(self.config.day))
            .arg(if self.config.slow_start {
                "slow_start"
            } else {
                ""
            })
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(u64::try_from(reply).ok().map(Duration::from_micros))
    }

    async fn hold(&self, tenant: &str, hold: NewHold) -> Result<bool, QueueError> {
        let reply: i64 = scripts::HOLD
            .key(self.key("tenants"))
            .arg(&self.prefix)
            .arg(tenant)
            .arg(hold.kind.as_str())
            .arg(&hold.reason)
            .arg(hold.length.map_or(0, |d| micros(d).max(1)))
            .arg(hold.by.as_deref().unwrap_or(""))
            .arg(0)
            .arg(self.window_us())
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(reply != 0)
    }

    async fn release(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError> {
        let reply: Option<String> = scripts::RELEASE
            .key(self.key("holds"))
            .arg(&self.prefix)
            .arg(tenant)
            .arg(self.window_us())
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(reply.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    async fn tenant_hold(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError> {
        let mut con = self.con.clone();
        let (raw, time): (Option<String>, (u64, u64)) = redis::pipe()
            .hget(self.key("holds"), tenant)
            .cmd("TIME")
            .query_async(&mut con)
            .await?;
        let now_ms = time.0 * 1000 + time.1 / 1000;
        Ok(raw
            .and_then(|raw| serde_json::from_str::<TenantHold>(&raw).ok())
            .filter(|h| h.until_ms.is_none_or(|u| u > now_ms)))
    }

    async fn host_failed(
        &self,
        tenant: &str,
        policy: UnreachablePolicy,
        reason: &str,
    ) -> Result<HostFailed, QueueError> {
        let (failures, held_us): (u32, u64) = scripts::HOST_FAILED
            .key(self.key("streak"))
            .arg(&self.prefix)
            .arg(tenant)
            .arg(policy.after.max(1))
            .arg(micros(policy.base).max(1))
            .arg(micros(policy.max).max(1))
            .arg(policy.jitter.clamp(0.5, 1.0))
            .arg(reason)
            .arg(self.window_us())
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(HostFailed {
            failures,
            held_for: (held_us > 0).then(|| Duration::from_micros(held_us)),
        })
    }

    async fn host_answered(&self, tenant: &str) -> Result<(), QueueError> {
        let _: i64 = scripts::HOST_ANSWERED
            .key(self.key("streak"))
            .arg(&self.prefix)
            .arg(tenant)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    async fn note_attempt(&self, id: &JobId, attempt: &Attempt) -> Result<(), QueueError> {
        let _kept: i64 = scripts::NOTE_ATTEMPT
            .key(self.key(&format!("hist:{}", id.0)))
            .arg(&self.prefix)
            .arg(&id.0)
            .arg(history_entry(attempt)?)
            .arg(HISTORY_LEN)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    async fn jobs_page(
        &self,
        of: PageOf,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        let limit = limit.clamp(1, 1000);
        let bad = |c: &str| QueueError::Config(format!("cursor {c:?} is not one this queue gave"));
        let mut con = self.con.clone();
        match of {
            PageOf::Done | PageOf::Dead => {
                let (set, state) = if of == PageOf::Done {
                    ("done", JobState::Done)
                } else {
                    ("dead", JobState::Dead)
                };
                // Cursor: the score and id of the last job shown. Scores are µs of the
                // finish; equal scores come in reverse id order, as ZREVRANGEBYSCORE
                // orders them.
                let after: Option<(i64, String)> = match cursor {
                    Some(c) => {
                        let (score, id) = c.split_once(':').ok_or_else(|| bad(c))?;
                        Some((score.parse().map_err(|_| bad(c))?, id.to_string()))
                    }
                    None => None,
                };
                let max = after
                    .as_ref()
                    .map_or("+inf".to_string(), |(s, _)| s.to_string());
                let mut picked: Vec<(String, i64)> = Vec::new();
                let mut offset = 0;
                // Ties with the cursor's score are skipped up to its id; a batch that holds
                // only such ties is followed by the next.
                'read: loop {
                    let batch: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
                        .arg(self.key(set))
                        .arg(&max)
                        .arg("-inf")
                        .arg("WITHSCORES")
                        .arg("LIMIT")
                        .arg(offset)
                        .arg(limit + 1)
                        .query_async(&mut con)
                        .await?;
                    let full = batch.len() == limit + 1;
                    offset += batch.len();
                    for (id, score) in batch {
                        let score = score as i64;
                        if let Some((s, last)) = &after
                            && score == *s
                            && id.as_str() >= last.as_str()
                        {
                            continue;
                        }
                        picked.push((id, score));
                        if picked.len() == limit + 1 {
                            break 'read;
                        }
                    }
                    if !full {
                        break;
                    }
                }
                let more = picked.len() > limit;
                picked.truncate(limit);
                let next = more
                    .then(|| picked.last().map(|(id, s)| format!("{s}:{id}")))
                    .flatten();
                let ids: Vec<(String, JobState)> =
                    picked.into_iter().map(|(id, _)| (id, state)).collect();
                Ok(JobPage {
                    jobs: self.results_of(&ids, None).await?,
                    next,
                })
            }
            PageOf::Waiting => {
                // HSCAN over the bodies (kept for every job not done; dead ones are left
                // out below): a real cursor, never the whole hash.
                let mut scan = match cursor {
                    Some(c) => c.parse::<u64>().map_err(|_| bad(c))?,
                    None => 0,
                };
                let mut jobs = Vec::new();
                loop {
                    let (next, entries): (u64, Vec<String>) = redis::cmd("HSCAN")
                        .arg(self.key("bodies"))
                        .arg(scan)
                        .arg("COUNT")
                        .arg(limit)
                        .query_async(&mut con)
                        .await?;
                    // Field, value pairs: only the ids (the values hold bodies) are kept.
                    for id in entries.into_iter().step_by(2) {
                        if let Some(r) = self.job_record(&JobId(id)).await?
                            && !matches!(r.status, JobState::Done | JobState::Dead)
                        {
                            jobs.push(r);
                        }
                    }
                    scan = next;
                    if scan == 0 || jobs.len() >= limit {
                        break;
                    }
                }
                Ok(JobPage {
                    jobs,
                    next: (scan != 0).then(|| scan.to_string()),
                })
            }
        }
    }

    async fn purge_done_before(&self, age: Duration, max: usize) -> Result<u64, QueueError> {
        let mut con = self.con.clone();
        // Redis's clock, as the done set's scores are.
        let (secs, us): (u64, u64) = redis::cmd("TIME").query_async(&mut con).await?;
        let cutoff = (secs * 1_000_000 + us).saturating_sub(micros(age));
        let ids: Vec<String> = con
            .zrangebyscore_limit(
                self.key("done"),
                "-inf",
                format!("({cutoff}"),
                0,
                max as isize,
            )
            .await?;
        let ids: Vec<JobId> = ids.into_iter().map(JobId).collect();
        self.purge_done(&ids).await
    }

    async fn find_job(&self, tenant: &str, key: &str) -> Result<Option<JobId>, QueueError> {
        let id: Option<String> = self
            .con
            .clone()
            .hget(self.key("keys"), format!("{tenant}\n{key}"))
            .await?;
        Ok(id.map(JobId))
    }

    async fn attempts(&self, id: &JobId) -> Result<Vec<Attempt>, QueueError> {
        let key = self.key(&format!("hist:{}", id.0));
        let entries: Vec<String> = self.con.clone().lrange(&key, 0, -1).await?;
        entries
            .iter()
            .map(|e| {
                serde_json::from_str(e).map_err(|err| QueueError::Corrupt {
                    key: key.clone(),
                    reason: format!("an attempt that does not decode: {err}"),
                })
            })
            .collect()
    }

    async fn pulse(&self, top: usize) -> Result<QueuePulse, QueueError> {
        let reply: Value = scripts::PULSE
            .key(self.key("oldest"))
            .arg(&self.prefix)
            .arg(top.min(10_000))
            .arg(STATUS_RUNNING_SCAN)
            .arg(self.config.share.as_str())
            .arg(self.window_us())
            .arg(micros(self.config.day))
            .invoke_async(&mut self.con.clone())
            .await?;
        let mut pulse = reply::pulse_of(array(reply, "pulse")?)?;
        pulse.paused = self.con.clone().exists(self.key("paused_queue")).await?;
        Ok(pulse)
    }

    async fn tenants_page(&self, query: &TenantQuery) -> Result<TenantPage, QueueError> {
        let order = match query.sort {
            TenantSort::Name => "names",
            TenantSort::Waiting => "unfinished",
            TenantSort::Done => "done",
            TenantSort::Dead => "dead",
        };
        let reply: Value = scripts::TENANTS
            .key(self.key("tenants"))
            .arg(&self.prefix)
            .arg(order)
            .arg(query.filter.map_or("", |f| f.as_str()))
            .arg(query.offset()?)
            .arg(query.rows())
            .arg(tenants::PAGE_BUDGET)
            .arg(micros(self.config.window))
            .arg(self.window_us())
            .arg(self.config.share.as_str())
            .invoke_async(&mut self.con.clone())
            .await?;
        reply::tenant_page_of(array(reply, "tenants")?)
    }

    async fn pause_queue(&self, reason: &str, by: Option<&str>) -> Result<QueuePause, QueueError> {
        let raw: String = scripts::PAUSE_QUEUE
            .key(self.key("paused_queue"))
            .arg(&self.prefix)
            .arg("pause")
            .arg(reason)
            .arg(by.unwrap_or(""))
            .invoke_async(&mut self.con.clone())
            .await?;
        serde_json::from_str(&raw).map_err(|_| corrupt("paused_queue", "not a pause record"))
    }

    async fn resume_queue(&self) -> Result<Option<QueuePause>, QueueError> {
        let raw: Option<String> = scripts::PAUSE_QUEUE
            .key(self.key("paused_queue"))
            .arg(&self.prefix)
            .arg("resume")
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(raw.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    async fn queue_pause(&self) -> Result<Option<QueuePause>, QueueError> {
        let raw: Option<String> = self.con.clone().get(self.key("paused_queue")).await?;
        Ok(raw.and_then(|raw| serde_json::from_str(&raw).ok()))
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobResult>, QueueError> {
        self.job_record(id).await
    }

    async fn results(&self, tenant: Option<&str>) -> Result<Vec<JobResult>, QueueError> {
        let mut con = self.con.clone();
        let (done, dead): (Vec<(String, f64)>, Vec<(String, f64)>) = redis::pipe()
            .zrange_withscores(self.key("done"), 0, -1)
            .zrange_withscores(self.key("dead"), 0, -1)
            .query_async(&mut con)
            .await?;
        let mut all: Vec<(f64, String, JobState)> = done
            .into_iter()
            .map(|(id, at)| (at, id, JobState::Done))
            .chain(dead.into_iter().map(|(id, at)| (at, id, JobState::Dead)))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let ids: Vec<(String, JobState)> = all.into_iter().map(|(_, id, s)| (id, s)).collect();
        self.results_of(&ids, tenant).await
    }

    async fn dead(&self) -> Result<Vec<JobResult>, QueueError> {
        let ids: Vec<(String, JobState)> = self
            .dead_ids()
            .await?
            .into_iter()
            .map(|id| (id, JobState::Dead))
            .collect();
        self.results_of(&ids, None).await
    }

    async fn retry_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        self.per_dead_batch(&scripts::RETRY_DEAD, ids).await
    }

    async fn purge_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError> {
        self.per_dead_batch(&scripts::PURGE_DEAD, ids).await
    }

    async fn purge_done(&self, ids: &[JobId]) -> Result<u64, QueueError> {
        let ids: Vec<String> = ids.iter().map(|i| i.0.clone()).collect();
        self.per_batch(&scripts::PURGE_DONE, "done", &ids).await
    }

    async fn learn_daily_limit(&self, tenant: &str, calls: u32) -> Result<(), QueueError> {
        let _: i64 = scripts::LEARN_DAILY_LIMIT
            .key(self.key("daily_learned"))
            .arg(&self.prefix)
            .arg(tenant)
            .arg(calls)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    async fn done_per_second(&self, seconds: u32) -> Result<Vec<u64>, QueueError> {
        // Bounded: one ZCOUNT per second inside one script call.
        let seconds = seconds.min(MAX_DONE_SECONDS);
        if seconds == 0 {
            return Ok(Vec::new());
        }
        let counts: Vec<u64> = scripts::DONE_PER_SECOND
            .key(self.key("done"))
            .arg(&self.prefix)
            .arg(seconds)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(counts)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    async fn replicas(&self) -> Result<Option<crate::queue::ReplicaState>, QueueError> {
        let Some(wait) = self.acked.replication() else {
            return Ok(None);
        };
        let connected = self.acked().read_connected(wait.replicas).await?;
        // Since when, for every process: the first to see it degraded writes the time on
        // the primary (the one node left), the first to see it whole deletes it.
        let key = self.key("degraded");
        let mut con = self.con.clone();
        let since = if connected < wait.replicas {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let (_, since): (redis::Value, Option<u64>) = redis::pipe()
                .cmd("SET")
                .arg(&key)
                .arg(now)
                .arg("NX")
                .cmd("GET")
                .arg(&key)
                .query_async(&mut con)
                .await?;
            Some(since.unwrap_or(now))
        } else {
            let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut con).await?;
            None
        };
        Ok(Some(crate::queue::ReplicaState {
            mode: wait.mode,
            min_replicas: wait.replicas,
            connected,
            degraded_since_ms: since,
        }))
    }

    async fn is_idle(&self) -> Result<bool, QueueError> {
        // `ready` holds exactly the tenants with waiting jobs: no need to walk the tenants.
        // Those held until released (scored `FOREVER_US`) wait for an operator, not a worker.
        let forever = format!("({}", hold::FOREVER_MS * 1000);
        let (ready, scheduled, running, paused): (u64, u64, u64, bool) = redis::pipe()
            .zcount(self.key("ready"), "-inf", forever)
            .zcard(self.key("sched"))
            .zcard(self.key("running"))
            .exists(self.key("paused_queue"))
            .query_async(&mut self.con.clone())
            .await?;
        Ok(running == 0 && (paused || (ready == 0 && scheduled == 0)))
    }
}
