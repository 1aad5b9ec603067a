//! Redis backend of the queue: the state every worker process on every machine shares, and
//! the Lua scripts that change it atomically.
//!
//! Layout, all under the prefix `{name}:` (a Redis Cluster hash tag: one slot per queue):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `tenants` | hash | tenant name -> tenant record (JSON; holds the keys: never logged) |
//! | `limits` | hash | tenant -> calls allowed per window (imported, or lower if learned) |
//! | `learned` | hash | tenant -> the limit LeadSquared named in a rate-limit answer |
//! | `q:<tenant>` | list | ids of the tenant's waiting jobs, next first |
//! | `ready` | zset | tenants with waiting jobs, scored by when their next call is allowed |
//! | `calls:<tenant>` | zset | the tenant's last `limit` calls (lease tokens), scored by time |
//! | `paused` / `pause_reason` | hash | tenant -> pause end (µs) / why |
//! | `sched` | zset | job ids waiting for a retry, scored by due time |
//! | `running` | zset | leased job ids, scored by lease expiry |
//! | `bodies` | hash | job id -> `tenant \n length of key \n key` then the Create body (JSON; may hold secrets), until the job is done; tenant and key are copied into `job:<id>` at its first dispatch |
//! | `job:<id>` | hash | from the first dispatch on: tenant, key, state, attempts, lease, webhook_id, error, reconciled, outcome_unknown, call_until_ms, dispatched_ms, finished_ms |
//! | `keys` | hash | `tenant\nidempotency key` -> job id |
//! | `done` / `dead` | zset | finished job ids, scored by finishing time |
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

mod scripts;
mod wake;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Value};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{
    Dispatched, Fence, LeasedJob, Pushed, Queue, QueueConfig, QueueError, QueueStatus, Requeue,
    TenantStatus, reason,
};
use crate::job::{JobId, JobResult, JobState, NewJob};
use crate::tenant::Tenant;
use wake::Wake;

/// Jobs per push script call: large enough that the round trip is amortised, small enough
/// that one call holds Redis for only a few milliseconds.
const PUSH_BATCH: usize = 1000;
/// Push script calls in flight at once on the (pipelining) connection.
const PUSH_IN_FLIGHT: usize = 4;
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
/// A command that gets no answer in this long fails (and the connection is re-established).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue in Redis. One per process is enough: its connection multiplexes every caller,
/// reconnects on its own (exponential backoff from 100 ms, 6 tries per command), and its
/// subscriber task (ended when the queue is dropped) wakes waiting workers.
pub struct RedisQueue {
    /// Settings.
    config: QueueConfig,
    /// `{name}:`.
    prefix: String,
    /// The shared, reconnecting connection; cloned per call.
    con: ConnectionManager,
    /// Wakeups from the `wake` channel.
    wake: Arc<Wake>,
    /// Ends the subscriber task when the queue is dropped.
    _listener: DropGuard,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the Redis server's own settings mean for the promise that no job is lost (see the
/// README's "Redis settings").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes` and `maxmemory-policy noeviction`.
    Safe,
    /// Settings under which jobs can be lost, each said in a sentence.
    Unsafe(Vec<String>),
    /// The settings could not be read (managed Redis services often refuse `CONFIG`).
    Unknown(String),
}

/// Reads `CONFIG GET` answers (`[name, value]` pairs, or a map) into what they mean.
fn durability_of(settings: &std::collections::HashMap<String, String>) -> Durability {
    let get = |name: &str| settings.get(name).map(|v| v.trim().to_ascii_lowercase());
    let (Some(aof), Some(policy)) = (get("appendonly"), get("maxmemory-policy")) else {
        return Durability::Unknown(
            "CONFIG GET did not name appendonly and maxmemory-policy".into(),
        );
    };
    let mut problems = Vec::new();
    if aof != "yes" {
        problems.push(format!(
            "appendonly is {aof:?}: a Redis restart loses every job written since the last \
             snapshot (set appendonly yes)"
        ));
    }
    if policy != "noeviction" {
        problems.push(format!(
            "maxmemory-policy is {policy:?}: when Redis is full it may evict job records and \
             queue keys (set maxmemory-policy noeviction)"
        ));
    }
    if problems.is_empty() {
        Durability::Safe
    } else {
        Durability::Unsafe(problems)
    }
}

/// Whether a queue name is usable: 1 to 64 characters of `[A-Za-z0-9._:-]` (no braces: the
/// name is the Redis Cluster hash tag).
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisQueue {
    /// Connects, loads the scripts and subscribes to the wake channel. Must be called within
    /// a tokio runtime (it spawns the subscriber task).
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        if !valid_queue_name(&config.name) {
            return Err(QueueError::Config(format!(
                "queue name {:?} must be 1-64 characters of letters, digits, '.', '_', '-' or ':'",
                config.name
            )));
        }
        if config.window.is_zero() || config.lease.is_zero() || config.max_attempts == 0 {
            return Err(QueueError::Config(
                "window and lease must be positive and max_attempts at least 1".into(),
            ));
        }
        let client = redis::Client::open(url)?;
        let cm_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        let mut con = ConnectionManager::new_with_config(client.clone(), cm_config).await?;
        for script in scripts::all() {
            script.load_async(&mut con).await?;
        }
        let prefix = format!("{{{}}}:", config.name);
        let channel = format!("{prefix}wake");
        let mut first = client.get_async_pubsub().await?;
        first.subscribe(&channel).await?;
        let wake = Arc::new(Wake::new());
        let cancel = CancellationToken::new();
        tokio::spawn(wake::listen(
            client,
            channel,
            first,
            wake.clone(),
            cancel.clone(),
        ));
        Ok(RedisQueue {
            config,
            prefix,
            con,
            wake,
            _listener: cancel.drop_guard(),
        })
    }

    /// Reads the server's persistence and eviction settings (one `CONFIG GET` each, so
    /// Redis 6 answers too). Never fails: a server that refuses `CONFIG` gives
    /// [`Durability::Unknown`].
    pub async fn durability(&self) -> Durability {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("appendonly");
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        let answers: Result<Vec<std::collections::HashMap<String, String>>, _> =
            pipe.query_async(&mut self.con.clone()).await;
        match answers {
            Ok(maps) => durability_of(&maps.into_iter().flatten().collect()),
            Err(e) => Durability::Unknown(format!("CONFIG GET refused: {e}")),
        }
    }

    /// The key prefix, `{name}:`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key of this queue and returns how many went: jobs, results, tenants,
    /// everything under its prefix `{name}:`. Keys of other queues on the same Redis are
    /// never touched: the prefix ends at the closing brace of the name's hash tag, so
    /// `{a}:*` cannot match a key of queue `a:b` or `ab`, and all of a queue's keys share one
    /// Redis Cluster slot (one node to scan). For a run that should leave nothing behind
    /// (the demo); not atomic (`SCAN` then `UNLINK`, 1,000 keys at a time), so no worker or
    /// producer should be using the queue meanwhile.
    pub async fn delete_all(&self) -> Result<u64, QueueError> {
        // A valid name (`valid_queue_name`) has no glob characters: the pattern is literal
        // up to its `*`.
        let pattern = format!("{}*", self.prefix);
        let mut con = self.con.clone();
        let mut cursor = 0u64;
        let mut deleted = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(ADMIN_BATCH)
                .query_async(&mut con)
                .await?;
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

    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    fn window_us(&self) -> u64 {
        micros(self.config.window + self.config.margin)
    }

    /// Extends the lease; with a non-zero `in_flight`, also the fence before a Create (see
    /// [`Queue::sending`]).
    async fn beat(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError> {
        let reply: i64 = scripts::HEARTBEAT
            .key(self.key("running"))
            .arg(&self.prefix)
            .arg(&job.id.0)
            .arg(&job.lease)
            .arg(micros(self.config.lease))
            .arg(micros(in_flight))
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(reply == 1)
    }

    /// A finishing script's invocation with the arguments they all start with: prefix, job
    /// id, lease token (the call's id in the call log), tenant, window + margin, and the
    /// reason a record with no tenant is buried with.
    fn finishing<'a>(
        &self,
        script: &'a redis::Script,
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

    /// One push: the jobs' `bodies` entries and the push script in one MULTI/EXEC (see
    /// push.lua); `jobs` grouped by tenant.
    async fn push_batch(&self, jobs: &[&NewJob]) -> Result<Vec<Pushed>, QueueError> {
        let ids: Vec<String> = jobs.iter().map(|_| JobId::new().0).collect();
        let mut runs: Vec<(&str, usize)> = Vec::new();
        for job in jobs {
            match runs.last_mut() {
                Some((tenant, count)) if *tenant == job.tenant => *count += 1,
                _ => runs.push((&job.tenant, 1)),
            }
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let entries = pipe.cmd("HSET").arg(self.key("bodies"));
        for (job, id) in jobs.iter().zip(&ids) {
            entries.arg(id).arg(Entry(job));
        }
        entries.ignore();
        // EVAL, not EVALSHA: inside MULTI a script Redis has forgotten (after a restart)
        // would fail alone while the HSET before it went through.
        let script = pipe
            .cmd("EVAL")
            .arg(scripts::PUSH_CODE)
            .arg(1)
            .arg(self.key("limits"))
            .arg(&self.prefix)
            .arg(jobs.len())
            .arg(runs.len());
        for (tenant, count) in &runs {
            script.arg(*tenant).arg(*count);
        }
        for job in jobs {
            script.arg(Field(job));
        }
        script.arg(&ids);
        let (reply,): (Value,) = pipe.query_async(&mut self.con.clone()).await?;
        let items = array(reply, "push")?;
        match items.first().and_then(text).as_deref() {
            Some("unknown") if items.len() == 2 => {
                let tenant = items.get(1).and_then(text).unwrap_or_default();
                return Err(QueueError::UnknownTenant(tenant));
            }
            Some("layout") if items.len() == 1 => {
                return Err(corrupt("push", "the script refused the batch layout"));
            }
            _ => {}
        }
        // Pairs (1-based position in the batch, id of the job already enqueued under its
        // key) for the duplicates; every other job was enqueued under the id we sent.
        let mut out: Vec<Pushed> = ids
            .into_iter()
            .map(|id| Pushed::Enqueued { job: JobId(id) })
            .collect();
        if items.len() % 2 != 0 {
            return Err(corrupt("push", "reply does not match the batch"));
        }
        for pair in items.chunks(2) {
            let slot = pair
                .first()
                .and_then(int)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| out.get_mut(i))
                .ok_or_else(|| corrupt("push", "reply names no job of the batch"))?;
            let existing = pair
                .get(1)
                .and_then(text)
                .ok_or_else(|| corrupt("keys", "idempotency index entry is not an id"))?;
            *slot = Pushed::Duplicate {
                job: JobId(existing),
            };
        }
        Ok(out)
    }

    /// Job records of `ids` as results, each with the state of the set it was found in.
    async fn results_of(
        &self,
        ids: &[(String, JobState)],
        tenant: Option<&str>,
    ) -> Result<Vec<JobResult>, QueueError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut con = self.con.clone();
        for chunk in ids.chunks(ADMIN_BATCH) {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for (id, _) in chunk {
                pipe.cmd("HMGET")
                    .arg(self.key(&format!("job:{id}")))
                    .arg(&JOB_FIELDS);
            }
            let rows: Vec<redis::RedisResult<Vec<Option<String>>>> =
                pipe.query_async(&mut con).await?;
            for ((id, state), row) in chunk.iter().zip(rows) {
                let result = match row {
                    Ok(fields) => job_result(JobId(id.clone()), &fields, Some(*state)),
                    Err(_) => None,
                }
                .unwrap_or_else(|| JobResult {
                    job: JobId(id.clone()),
                    tenant: String::new(),
                    key: String::new(),
                    status: *state,
                    webhook_id: None,
                    attempts: 0,
                    error: Some("job record missing or unreadable".into()),
                    reconciled: false,
                });
                if tenant.is_none_or(|t| t == result.tenant) {
                    out.push(result);
                }
            }
        }
        Ok(out)
    }

    async fn dead_ids(&self) -> Result<Vec<String>, QueueError> {
        let ids: Vec<String> = self.con.clone().zrange(self.key("dead"), 0, -1).await?;
        Ok(ids)
    }

    async fn per_dead_batch(
        &self,
        script: &redis::Script,
        ids: Option<&[JobId]>,
    ) -> Result<u64, QueueError> {
        let ids: Vec<String> = match ids {
            Some(ids) => ids.iter().map(|i| i.0.clone()).collect(),
            None => self.dead_ids().await?,
        };
        self.per_batch(script, "dead", &ids).await
    }

    /// Runs `script` (KEYS[1] the `set` zset, ARGV the prefix then ids) over `ids` in
    /// batches of [`ADMIN_BATCH`], adding up its replies.
    async fn per_batch(
        &self,
        script: &redis::Script,
        set: &str,
        ids: &[String],
    ) -> Result<u64, QueueError> {
        let mut total = 0u64;
        for chunk in ids.chunks(ADMIN_BATCH) {
            let mut invocation = script.key(self.key(set));
            invocation.arg(&self.prefix);
            for id in chunk {
                invocation.arg(id);
            }
            let n: u64 = invocation.invoke_async(&mut self.con.clone()).await?;
            total += n;
        }
        Ok(total)
    }
}

/// Fields per job in dispatch.lua's reply.
const JOB_REPLY_FIELDS: usize = 9;

/// One job of dispatch.lua's reply: id, tenant, key, body, attempt, outcome_unknown, token,
/// dispatch time (ms), fenced.
fn leased_job(f: &[Value], fenced_until: Option<Instant>) -> Result<LeasedJob, QueueError> {
    let field = |i: usize| f.get(i).and_then(text);
    let id = field(0).ok_or_else(|| corrupt("dispatch", "job without an id"))?;
    Ok(LeasedJob {
        tenant: field(1).unwrap_or_default(),
        key: field(2).unwrap_or_default(),
        // A body that is not UTF-8 reaches the worker as text it cannot decode, and the job
        // is buried there, not here.
        body: f
            .get(3)
            .map(|v| match v {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                other => text(other).unwrap_or_default(),
            })
            .unwrap_or_default(),
        attempt: u32::try_from(uint(f.get(4))).unwrap_or(u32::MAX),
        outcome_unknown: uint(f.get(5)) == 1,
        lease: field(6).unwrap_or_default(),
        dispatched_at_ms: uint(f.get(7)),
        fenced_until: fenced_until.filter(|_| uint(f.get(8)) == 1),
        id: JobId(id),
    })
}

/// A job's entry in `bodies` as a push writes it: `tenant \n length-of-key \n key body`
/// (`split_record` in prelude.lua, [`split_entry`] here), written straight into the command.
struct Entry<'a>(&'a NewJob);

impl redis::ToRedisArgs for Entry<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let job = self.0;
        let mut w = out.writer_for_next_arg();
        // Writes into the command's own buffer cannot fail.
        let _ = write!(w, "{}\n{}\n", job.tenant, job.key.len());
        let _ = w.write_all(job.key.as_bytes());
        let _ = w.write_all(job.body.as_bytes());
    }
}

/// A job's field in the `keys` index: `tenant\nidempotency key`.
struct Field<'a>(&'a NewJob);

impl redis::ToRedisArgs for Field<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        let _ = write!(w, "{}\n{}", self.0.tenant, self.0.key);
    }
}

/// A job's `job:<id>` hash, read with [`JOB_FIELDS`].
async fn job_fields(
    con: &mut ConnectionManager,
    key: &str,
) -> Result<Vec<Option<String>>, QueueError> {
    Ok(redis::cmd("HMGET")
        .arg(key)
        .arg(&JOB_FIELDS)
        .query_async(con)
        .await?)
}

/// The result recorded in a job's `job:<id>` hash (`fields`, read with [`JOB_FIELDS`]);
/// `None` when the job has none (it was never dispatched).
fn dispatched_result(
    id: &JobId,
    key: &str,
    fields: &[Option<String>],
) -> Option<Result<JobResult, QueueError>> {
    fields.iter().any(Option::is_some).then(|| {
        job_result(id.clone(), fields, None).ok_or_else(|| corrupt(key, "no readable state"))
    })
}

/// Tenant, key and body of a `bodies` entry (see [`Entry`]); `None` when it is damaged or
/// a bare body (written by an older version, which kept tenant and key in `meta`).
fn split_entry(entry: &str) -> Option<(&str, &str, &str)> {
    if entry.starts_with('{') {
        return None;
    }
    let (tenant, rest) = entry.split_once('\n')?;
    let (len, rest) = rest.split_once('\n')?;
    let len: usize = len.parse().ok()?;
    let key = rest.get(..len)?;
    let body = rest.get(len..)?;
    Some((tenant, key, body))
}

/// Fields read for a [`JobResult`], in this order.
const JOB_FIELDS: [&str; 7] = [
    "tenant",
    "key",
    "state",
    "webhook_id",
    "attempts",
    "error",
    "reconciled",
];

/// A job record as a result; `None` when the record does not exist. `state` overrides the
/// stored state (results know it from the set the id is in).
fn job_result(job: JobId, fields: &[Option<String>], state: Option<JobState>) -> Option<JobResult> {
    if fields.iter().all(Option::is_none) {
        return None;
    }
    let get = |i: usize| fields.get(i).cloned().flatten();
    let status = state.or_else(|| parse_state(get(2).as_deref()?))?;
    Some(JobResult {
        job,
        tenant: get(0).unwrap_or_default(),
        key: get(1).unwrap_or_default(),
        status,
        webhook_id: get(3).filter(|s| !s.is_empty()),
        attempts: get(4).and_then(|a| a.parse().ok()).unwrap_or(0),
        error: get(5).filter(|s| !s.is_empty()),
        reconciled: get(6).as_deref() == Some("1"),
    })
}

fn parse_state(s: &str) -> Option<JobState> {
    Some(match s {
        "queued" => JobState::Queued,
        "scheduled" => JobState::Scheduled,
        "running" => JobState::Running,
        "done" => JobState::Done,
        "dead" => JobState::Dead,
        _ => return None,
    })
}

fn corrupt(key: &str, reason: &str) -> QueueError {
    QueueError::Corrupt {
        key: key.into(),
        reason: reason.into(),
    }
}

fn array(v: Value, what: &str) -> Result<Vec<Value>, QueueError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(corrupt(what, "script reply is not an array")),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn uint(v: Option<&Value>) -> u64 {
    v.and_then(int)
        .and_then(|i| u64::try_from(i).ok())
        .unwrap_or(0)
}

fn parse_tenant(name: &str, json: &str) -> Result<Tenant, QueueError> {
    // serde's message can quote a value, and a value here may be a key: say only where.
    serde_json::from_str(json).map_err(|e| QueueError::Corrupt {
        key: format!("tenants[{name}]"),
        reason: format!(
            "not a tenant record ({:?} error at column {})",
            e.classify(),
            e.column()
        ),
    })
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
                invocation.arg(&t.name).arg(record).arg(t.limit.max(1));
            }
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
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // All tenants checked before the first batch is written (each batch checks its own
        // again, atomically).
        let tenants: Vec<&str> = jobs
            .iter()
            .map(|j| j.tenant.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let known: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("limits"))
            .arg(&tenants)
            .query_async(&mut self.con.clone())
            .await?;
        if let Some((t, _)) = tenants.iter().zip(&known).find(|(_, k)| k.is_none()) {
            return Err(QueueError::UnknownTenant(t.to_string()));
        }
        // Batches are pipelined on one connection, so Redis runs them in order.
        // Grouped by tenant (a stable sort: each tenant's jobs keep their order, so the first
        // of two with the same key is the one enqueued), so that a batch touches few tenant
        // lists. Results go back to input order.
        // A key named twice in this push: only its first job is sent; the others are its
        // duplicates (so the script never has to look for repeats within a batch).
        let mut first_of: HashMap<(&str, &str), usize> = HashMap::with_capacity(jobs.len());
        let mut repeat_of: Vec<Option<usize>> = vec![None; jobs.len()];
        for (i, job) in jobs.iter().enumerate() {
            let first = *first_of.entry((&job.tenant, &job.key)).or_insert(i);
            if first != i {
                repeat_of[i] = Some(first);
            }
        }
        let mut order: Vec<usize> = (0..jobs.len())
            .filter(|&i| repeat_of[i].is_none())
            .collect();
        order.sort_by(|&a, &b| jobs[a].tenant.cmp(&jobs[b].tenant));
        let grouped: Vec<&NewJob> = order.iter().map(|&i| &jobs[i]).collect();
        // Futures collected first: a closure inside the stream trips async_trait's `Send`
        // check (higher-ranked lifetimes).
        let calls: Vec<_> = grouped
            .chunks(PUSH_BATCH)
            .map(|chunk| self.push_batch(chunk))
            .collect();
        let batches: Vec<Vec<Pushed>> = futures::stream::iter(calls)
            .buffered(PUSH_IN_FLIGHT)
            .try_collect()
            .await?;
        let mut out: Vec<Option<Pushed>> = vec![None; jobs.len()];
        for (&i, pushed) in order.iter().zip(batches.into_iter().flatten()) {
            out[i] = Some(pushed);
        }
        for (i, first) in repeat_of.into_iter().enumerate() {
            if let Some(first) = first {
                out[i] = out[first].as_ref().map(|p| Pushed::Duplicate {
                    job: match p {
                        Pushed::Enqueued { job } | Pushed::Duplicate { job } => job.clone(),
                    },
                });
            }
        }
        out.into_iter()
            .map(|p| p.ok_or_else(|| corrupt("push", "a job got no answer")))
            .collect()
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
            .invoke_async(&mut self.con.clone())
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
                    .map(|f| leased_job(f, fenced_until))
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
        let _: i64 = scripts::ANSWERED
            .key(self.key("ready"))
            .arg(&self.prefix)
            .arg(&job.tenant)
            .arg(&job.lease)
            .arg(self.window_us())
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(())
    }

    async fn complete(
        &self,
        job: &LeasedJob,
        webhook_id: &str,
        reconciled: bool,
    ) -> Result<(), QueueError> {
        let mut invocation = self.finishing(&scripts::COMPLETE, job);
        invocation.arg(webhook_id).arg(u8::from(reconciled));
        self.finish(&invocation, job).await.map(drop)
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
            .arg(reason::rate_limited(limit));
        self.finish(&invocation, job).await.map(drop)
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
            .invoke_async(&mut self.con.clone())
            .await?;
        let items = array(reply, "status")?;
        if items.len() < 7 || (items.len() - 7) % 6 != 0 {
            return Err(corrupt("status", "unexpected script reply"));
        }
        let now_ms = uint(items.first()) / 1000;
        let oldest = items.get(6).and_then(int).filter(|d| *d >= 0);
        let mut tenants: Vec<TenantStatus> = items[7..]
            .chunks(6)
            .map(|row| TenantStatus {
                tenant: row.first().and_then(text).unwrap_or_default(),
                waiting: uint(row.get(1)),
                limit: u32::try_from(uint(row.get(2))).unwrap_or(u32::MAX),
                calls_in_window: u32::try_from(uint(row.get(3))).unwrap_or(u32::MAX),
                paused_until_ms: row
                    .get(4)
                    .and_then(int)
                    .filter(|p| *p >= 0)
                    .and_then(|p| u64::try_from(p).ok()),
                pause_reason: row.get(5).and_then(text).filter(|r| !r.is_empty()),
            })
            .collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        Ok(QueueStatus {
            queue: self.config.name.clone(),
            now_ms,
            queued: uint(items.get(1)),
            scheduled: uint(items.get(2)),
            running: uint(items.get(3)),
            done: uint(items.get(4)),
            dead: uint(items.get(5)),
            oldest_running_ms: oldest
                .and_then(|d| u64::try_from(d).ok())
                .map(|d| now_ms.saturating_sub(d)),
            tenants,
        })
    }

    async fn job(&self, id: &JobId) -> Result<Option<JobResult>, QueueError> {
        let key = self.key(&format!("job:{id}"));
        let mut con = self.con.clone();
        let fields = job_fields(&mut con, &key).await?;
        if let Some(result) = dispatched_result(id, &key, &fields) {
            return result.map(Some);
        }
        // Never dispatched: queued, with what the push recorded (in its `bodies` entry, or
        // in `meta` when an older version pushed it). Only then is the entry read: it holds
        // the body, custom header values included.
        let (entry, meta): (Option<String>, Option<String>) = redis::pipe()
            .hget(self.key("bodies"), &id.0)
            .hget(self.key("meta"), &id.0)
            .query_async(&mut con)
            .await?;
        let pushed = match (entry.as_deref().and_then(split_entry), meta.as_deref()) {
            (Some((tenant, key, _)), _) => Some((tenant, key)),
            (None, Some(m)) => Some(m.split_once('\n').unwrap_or((m, ""))),
            (None, None) => None,
        };
        let Some((tenant, job_key)) = pushed else {
            // Dispatched between the two reads, or no such job.
            let fields = job_fields(&mut con, &key).await?;
            return dispatched_result(id, &key, &fields).transpose();
        };
        Ok(Some(JobResult {
            job: id.clone(),
            tenant: tenant.to_string(),
            key: job_key.to_string(),
            status: JobState::Queued,
            webhook_id: None,
            attempts: 0,
            error: None,
            reconciled: false,
        }))
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

    async fn is_idle(&self) -> Result<bool, QueueError> {
        // `ready` holds exactly the tenants with waiting jobs: no need to walk the tenants.
        let (ready, scheduled, running): (u64, u64, u64) = redis::pipe()
            .zcard(self.key("ready"))
            .zcard(self.key("sched"))
            .zcard(self.key("running"))
            .query_async(&mut self.con.clone())
            .await?;
        Ok(ready == 0 && scheduled == 0 && running == 0)
    }
}
