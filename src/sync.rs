//! `sync`: a job file as the desired state of the tenants it names, turned into a plan per
//! tenant (create, update naming the changed fields, delete with `prune`, unchanged), and
//! the jobs that carry the plan out (issue 18).
//!
//! The plan comes from the queue's records (what each key's done job left: its webhook Id,
//! its body's digest and field digests; see `queue::revision`) and one paged Retrieve per
//! tenant, each page spent in the tenant's window first (`Queue::take_call`), so a sync
//! never pushes a tenant past its limit. Pushing the jobs decides again, atomically (a job
//! finished meanwhile only turns an update into a duplicate).
//!
//! Safety rules:
//! - a webhook is deleted only with `prune`, and only if this product has a record of it:
//!   a done job whose key names it (found through its derived key, or a key of the file);
//!   one made by hand in LeadSquared is never deleted;
//! - a desired webhook without a record that LeadSquared already has (same description and
//!   event: made by hand, or by an older version under another key) is left alone and
//!   counted `existing`, never created a second time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use crate::job::{JobResult, JobState, NewJob, Operation, changed_fields, derived_key};
use crate::leadsquared::{CallError, Client, WebhookSummary};
use crate::queue::revision::{KeyRecord, PushAs, push_as};
use crate::queue::{LeasedJob, Queue, QueueError};
use crate::tenant::Tenant;

/// Retrieve's page size for a sync: large, so that most tenants need one page.
pub const RETRIEVE_PAGE: u32 = 200;

/// The most pages read per tenant (a bound on calls spent: 100 × 200 webhooks).
const MAX_PAGES: u32 = 100;

/// Tenants planned at once.
const TENANTS_AT_ONCE: usize = 16;

/// The longest a tenant's Retrieve waits for room in its window before the plan gives up
/// on the tenant.
const CALL_WAIT: Duration = Duration::from_secs(30);

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// A tenant of the file is not registered.
    #[error("unknown tenant {0:?}; import it with `lsq-webhooks tenants import`")]
    UnknownTenant(String),
    /// A tenant's webhooks could not be listed (its reason never quotes a key).
    #[error("tenant {tenant}: Retrieve failed: {reason}")]
    Retrieve {
        /// The tenant.
        tenant: String,
        /// Why.
        reason: String,
    },
}

/// One webhook to update, and what changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Its key.
    pub key: String,
    /// The fields that change (`URL`, `header x-api-key value`, ...; never a value). Empty
    /// when the record has no field digests (done before they were kept).
    pub fields: Vec<String>,
}

/// One tenant's plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TenantPlan {
    /// The tenant.
    pub tenant: String,
    /// Keys to create.
    pub create: Vec<String>,
    /// Webhooks to update.
    pub update: Vec<Change>,
    /// Keys to delete: the file's delete lines, and with `prune` this product's webhooks
    /// the file does not name.
    pub delete: Vec<String>,
    /// Webhooks this product made that the file does not name, kept (no `prune`).
    pub not_in_file: usize,
    /// Keys whose webhook already has the desired body.
    pub unchanged: usize,
    /// Desired webhooks LeadSquared has without a record of this product: left alone.
    pub existing: usize,
    /// Keys whose last job has not finished: left to it (push again once it is done).
    pub pending: usize,
    /// Retrieve calls spent.
    pub retrieve_calls: u32,
}

/// The plan of a sync.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Plan {
    /// Per tenant, in name order.
    pub tenants: Vec<TenantPlan>,
    /// The jobs that carry it out (bodies hold header values: never shown).
    #[serde(skip)]
    pub jobs: Vec<NewJob>,
}

impl Plan {
    /// Totals over the tenants: create, update, delete, unchanged.
    pub fn totals(&self) -> (usize, usize, usize, usize) {
        self.tenants.iter().fold((0, 0, 0, 0), |t, p| {
            (
                t.0 + p.create.len(),
                t.1 + p.update.len(),
                t.2 + p.delete.len(),
                t.3 + p.unchanged,
            )
        })
    }

    /// Retrieve calls spent on the plan.
    pub fn retrieve_calls(&self) -> u64 {
        self.tenants
            .iter()
            .map(|p| u64::from(p.retrieve_calls))
            .sum()
    }

    /// The plan as lines: one per tenant, then the totals.
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.tenants.iter().map(TenantPlan::line).collect();
        let (c, u, d, n) = self.totals();
        out.push(format!(
            "total: create {c}, update {u}, delete {d}, unchanged {n}; Retrieve calls {}",
            self.retrieve_calls()
        ));
        out
    }
}

impl TenantPlan {
    /// `tenant T: create N, update N (fields), delete N, unchanged N[, ...]`.
    pub fn line(&self) -> String {
        let fields: BTreeSet<&str> = self
            .update
            .iter()
            .flat_map(|c| c.fields.iter().map(String::as_str))
            .collect();
        let fields = if fields.is_empty() {
            String::new()
        } else {
            format!(" ({})", fields.into_iter().collect::<Vec<_>>().join(", "))
        };
        let mut line = format!(
            "tenant {}: create {}, update {}{fields}, delete {}, unchanged {}",
            self.tenant,
            self.create.len(),
            self.update.len(),
            self.delete.len(),
            self.unchanged
        );
        for (n, what) in [
            (
                self.not_in_file,
                "not in the file (kept; --prune deletes them)",
            ),
            (
                self.existing,
                "already in LeadSquared without a record (left alone)",
            ),
            (self.pending, "still running (left to their jobs)"),
        ] {
            if n > 0 {
                line.push_str(&format!(", {n} {what}"));
            }
        }
        line
    }
}

/// Plans the sync of `desired` (checked jobs, as `enqueue` checks them; the first line of a
/// key wins, as in a push). With `prune`, this product's webhooks the file does not name
/// are deleted.
pub async fn plan(
    queue: &dyn Queue,
    client: &Client,
    desired: Vec<NewJob>,
    prune: bool,
) -> Result<Plan, SyncError> {
    let mut by_tenant: BTreeMap<String, Vec<NewJob>> = BTreeMap::new();
    for job in desired {
        let jobs = by_tenant.entry(job.tenant.clone()).or_default();
        if !jobs.iter().any(|j| j.key == job.key) {
            jobs.push(job);
        }
    }
    let mut tenants = Vec::with_capacity(by_tenant.len());
    for name in by_tenant.keys() {
        match queue.tenant(name).await? {
            Some(t) => tenants.push(t),
            None => return Err(SyncError::UnknownTenant(name.clone())),
        }
    }
    let planned: Vec<Result<(TenantPlan, Vec<NewJob>), SyncError>> =
        futures::stream::iter(tenants.into_iter().map(|t| {
            let jobs = by_tenant.remove(&t.name).unwrap_or_default();
            async move { plan_tenant(queue, client, &t, jobs, prune).await }
        }))
        .buffered(TENANTS_AT_ONCE)
        .collect()
        .await;
    let mut plan = Plan::default();
    for p in planned {
        let (tenant_plan, jobs) = p?;
        plan.tenants.push(tenant_plan);
        plan.jobs.extend(jobs);
    }
    Ok(plan)
}

/// The record a key's job left, if it has one.
async fn record_of(
    queue: &dyn Queue,
    tenant: &str,
    key: &str,
) -> Result<Option<JobResult>, QueueError> {
    match queue.find_job(tenant, key).await? {
        Some(id) => queue.job(&id).await,
        None => Ok(None),
    }
}

async fn plan_tenant(
    queue: &dyn Queue,
    client: &Client,
    tenant: &Tenant,
    jobs: Vec<NewJob>,
    prune: bool,
) -> Result<(TenantPlan, Vec<NewJob>), SyncError> {
    let mut plan = TenantPlan {
        tenant: tenant.name.clone(),
        ..TenantPlan::default()
    };
    let (webhooks, calls) = retrieve_all(queue, client, tenant).await?;
    plan.retrieve_calls = calls;
    // Webhook Ids the file's keys hold, and (description, event) the file wants.
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut wanted: BTreeSet<(String, u32)> = BTreeSet::new();
    let mut out = Vec::new();
    for job in jobs {
        let mut record = record_of(queue, &tenant.name, &job.key).await?;
        if record.is_none()
            && let Some(legacy) = &job.legacy_key
        {
            record = record_of(queue, &tenant.name, legacy).await?;
        }
        if let Some(id) = record.as_ref().and_then(|r| r.webhook_id.clone()) {
            claimed.insert(id);
        }
        let identity = identity(&job);
        if let Some(identity) = &identity {
            wanted.insert(identity.clone());
        }
        let verdict = push_as(record.as_ref().map(key_record), &job);
        match verdict {
            PushAs::Duplicate if record.as_ref().is_some_and(|r| r.status != JobState::Done) => {
                plan.pending += 1;
            }
            PushAs::Duplicate => plan.unchanged += 1,
            PushAs::New(Operation::Create) => {
                let exists = identity.as_ref().is_some_and(|(d, e)| {
                    webhooks
                        .iter()
                        .any(|w| w.description == *d && w.event == Some(*e))
                });
                if exists {
                    plan.existing += 1;
                    continue;
                }
                plan.create.push(job.key.clone());
                out.push(job);
            }
            PushAs::New(Operation::Update(_)) => {
                let old = record.as_ref().and_then(|r| r.fields.as_deref());
                let fields = match old {
                    Some(old) => changed_fields(old, &crate::job::field_digests(&job.body)),
                    None => Vec::new(),
                };
                plan.update.push(Change {
                    key: job.key.clone(),
                    fields,
                });
                out.push(job);
            }
            PushAs::New(Operation::Delete(_)) => {
                plan.delete.push(job.key.clone());
                out.push(job);
            }
        }
    }
    // This product's webhooks the file does not name: found through their derived keys.
    for w in &webhooks {
        let Some(event) = w.event else { continue };
        if claimed.contains(&w.webhook_id.0) || wanted.contains(&(w.description.clone(), event)) {
            continue;
        }
        let key = derived_key(&tenant.name, event, &w.description);
        let Some(record) = record_of(queue, &tenant.name, &key).await? else {
            continue;
        };
        let ours = record.status == JobState::Done
            && record.webhook_id.as_deref() == Some(w.webhook_id.0.as_str());
        if !ours {
            continue;
        }
        if prune {
            plan.delete.push(key.clone());
            out.push(NewJob {
                tenant: tenant.name.clone(),
                body: String::new(),
                key,
                delete: true,
                legacy_key: None,
            });
        } else {
            plan.not_in_file += 1;
        }
    }
    Ok((plan, out))
}

/// What push.lua compares with (`queue::revision`), from a record.
fn key_record(r: &JobResult) -> KeyRecord<'_> {
    KeyRecord {
        state: r.status,
        outcome: r.outcome,
        digest: r.digest.as_deref(),
        webhook_id: r.webhook_id.as_deref(),
    }
}

/// A create job's description and event.
fn identity(job: &NewJob) -> Option<(String, u32)> {
    if job.delete {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&job.body).ok()?;
    let description = v.get("Description")?.as_str()?.to_string();
    let event = v.get("WebhookEvent")?.as_str()?.parse().ok()?;
    Some((description, event))
}

/// Every webhook of the tenant, page by page, each page's call spent in the tenant's window
/// first and re-stamped at its answer. Returns them and the calls made.
async fn retrieve_all(
    queue: &dyn Queue,
    client: &Client,
    tenant: &Tenant,
) -> Result<(Vec<WebhookSummary>, u32), SyncError> {
    let failed = |reason: String| SyncError::Retrieve {
        tenant: tenant.name.clone(),
        reason,
    };
    let mut all = Vec::new();
    for page in 1..=MAX_PAGES {
        let call = format!("sync.{}", uuid::Uuid::new_v4());
        let deadline = tokio::time::Instant::now() + CALL_WAIT;
        loop {
            match queue.take_call(&tenant.name, &call).await? {
                None => break,
                Some(wait) if tokio::time::Instant::now() + wait <= deadline => {
                    tokio::time::sleep(wait).await;
                }
                Some(_) => {
                    return Err(failed(
                        "the tenant may not call now (held, or a pause)".into(),
                    ));
                }
            }
        }
        let answer = client.retrieve(tenant, "", page, RETRIEVE_PAGE).await;
        let _ = queue.answered(&call_stamp(&tenant.name, &call)).await;
        let answer = answer.map_err(|e: CallError| failed(e.to_string()))?;
        let short = answer.webhooks.len() < RETRIEVE_PAGE as usize;
        all.extend(answer.webhooks);
        if short || all.len() as u64 >= answer.record_count {
            return Ok((all, page));
        }
    }
    Ok((all, MAX_PAGES))
}

/// A stand-in lease for re-stamping a call no dispatch made (`Queue::answered` needs only
/// the tenant and the call's id).
pub fn call_stamp(tenant: &str, call: &str) -> LeasedJob {
    LeasedJob {
        id: crate::job::JobId(call.to_string()),
        tenant: tenant.to_string(),
        key: String::new(),
        body: String::new(),
        attempt: 0,
        outcome_unknown: false,
        lease: call.to_string(),
        dispatched_at_ms: 0,
        fenced_until: None,
    }
}
