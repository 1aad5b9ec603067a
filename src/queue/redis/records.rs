//! Job records read back: one job by id (from its record, or from its push when it was
//! never dispatched), finished jobs as results, and the scripts over batches of dead or done
//! ids (`retry_dead`, `purge_dead`, `purge_done`).

use redis::AsyncCommands;

use super::push::split_entry;
use super::reply::{JOB_FIELDS, dispatched_result, job_fields, job_result};
use super::{ADMIN_BATCH, RedisQueue};
use crate::job::{JobId, JobResult, JobState};
use crate::queue::QueueError;

impl RedisQueue {
    /// [`crate::queue::Queue::job`].
    pub(super) async fn job_record(&self, id: &JobId) -> Result<Option<JobResult>, QueueError> {
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
            outcome: None,
            digest: None,
            fields: None,
            finished_ms: None,
        }))
    }

    /// Job records of `ids` as results, each with the state of the set it was found in.
    pub(super) async fn results_of(
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
                    outcome: None,
                    digest: None,
                    fields: None,
                    finished_ms: None,
                });
                if tenant.is_none_or(|t| t == result.tenant) {
                    out.push(result);
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn dead_ids(&self) -> Result<Vec<String>, QueueError> {
        let ids: Vec<String> = self.con.clone().zrange(self.key("dead"), 0, -1).await?;
        Ok(ids)
    }

    pub(super) async fn per_dead_batch(
        &self,
        script: &super::scripts::QueueScript,
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
    pub(super) async fn per_batch(
        &self,
        script: &super::scripts::QueueScript,
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
