//! Putting jobs into Redis: a push grouped by tenant and split into script calls of
//! [`PUSH_BATCH`] jobs, each one MULTI/EXEC of the jobs' `bodies` entries (plain HSET
//! arguments that never pass through Lua) and push.lua, pipelined on one connection; and the
//! encoding of a job's `bodies` entry and `keys` field (`docs/decisions.md`, "Bulk
//! enqueue").

use std::collections::{BTreeSet, HashMap};

use futures::{StreamExt, TryStreamExt};
use redis::Value;

use super::reply::{array, corrupt, int, text};
use super::{RedisQueue, scripts};
use crate::job::{JobId, NewJob};
use crate::queue::{Pushed, QueueError};

/// Jobs per push script call: large enough that the round trip is amortised, small enough
/// that one call holds Redis for only a few milliseconds.
const PUSH_BATCH: usize = 1000;
/// Push script calls in flight at once on the (pipelining) connection.
const PUSH_IN_FLIGHT: usize = 4;

impl RedisQueue {
    /// [`crate::queue::Queue::push`]: every tenant checked first, then the batches.
    pub(super) async fn push_jobs(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, QueueError> {
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
        // MULTI/EXEC written out rather than `pipe.atomic()`, so that the acknowledged lane
        // can follow EXEC with WAIT in the same pipeline (inside MULTI, WAIT would not wait).
        let mut pipe = redis::pipe();
        pipe.cmd("MULTI").ignore();
        let entries = pipe.cmd("HSET").arg(self.key("bodies"));
        for (job, id) in jobs.iter().zip(&ids) {
            entries.arg(id).arg(Entry(job));
        }
        entries.ignore();
        // EVAL, not EVALSHA: inside MULTI a script Redis has forgotten (after a restart)
        // would fail alone while the HSET before it went through.
        let limits = self.key("limits");
        let guard = scripts::guard_key(&limits);
        let script = pipe
            .cmd("EVAL")
            .arg(scripts::PUSH_CODE.as_str())
            .arg(2)
            .arg(limits)
            .arg(guard)
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
        for job in jobs {
            script.arg(Revision(job));
        }
        script.ignore();
        pipe.cmd("EXEC");
        let mut con = self.acked();
        let (exec,): (Value,) = pipe.query_async(&mut con).await?;
        // EXEC's answer: the HSET's count, then the script's reply (an error in either is
        // raised here).
        let reply = match exec.extract_error()? {
            Value::Array(mut answers) if answers.len() == 2 => answers.swap_remove(1),
            Value::Nil => return Err(corrupt("push", "the transaction was aborted")),
            _ => return Err(corrupt("push", "unexpected transaction reply")),
        };
        self.confirm(&con, "push")?;
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

/// A job's revision argument of push.lua: its digest, and the key version 1 derived when
/// its key was derived (see push.lua's header).
struct Revision<'a>(&'a NewJob);

impl redis::ToRedisArgs for Revision<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        let _ = w.write_all(self.0.digest().as_bytes());
        if let Some(legacy) = &self.0.legacy_key {
            let _ = write!(w, " {legacy}");
        }
    }
}

/// Tenant, key and body of a `bodies` entry (see [`Entry`]); `None` when it is damaged or
/// a bare body (written by an older version, which kept tenant and key in `meta`).
pub(super) fn split_entry(entry: &str) -> Option<(&str, &str, &str)> {
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
