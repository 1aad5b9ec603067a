//! Reading what Redis answers: the dispatch, status and push scripts' replies, job records
//! as results, tenant records; every reply that is not what this version writes becomes
//! [`QueueError::Corrupt`] naming where, never a panic.

use redis::Value;
use tokio::time::Instant;

use crate::job::{JobId, JobResult, JobState};
use crate::queue::{
    HeldCounts, LeasedJob, QueueError, QueuePulse, QueueStatus, ShareReason, TenantPage, TenantRow,
    TenantShare, TenantState, TenantStatus, share,
};
use crate::tenant::Tenant;

/// Fields per job in dispatch.lua's reply.
pub(super) const JOB_REPLY_FIELDS: usize = 8;

/// The `n`-th job (from 0) of dispatch.lua's reply: id, tenant, key, its `bodies` entry and
/// where the body starts in it (bytes, from 1), attempt, outcome_unknown, dispatch time (ms).
/// Its lease token is `<token>.<n + 1>`, as the script made it; it is fenced (until
/// `fenced_until`) when its outcome is known.
pub(super) fn leased_job(
    f: &[Value],
    n: usize,
    token: &str,
    fenced_until: Option<Instant>,
) -> Result<LeasedJob, QueueError> {
    let field = |i: usize| f.get(i).and_then(text);
    let id = field(0).ok_or_else(|| corrupt("dispatch", "job without an id"))?;
    let entry: &[u8] = match f.get(3) {
        Some(Value::BulkString(b)) => b,
        _ => &[],
    };
    // A position outside the entry (never written by this version) gives an empty body,
    // which the worker cannot decode: the job is buried with that reason, the batch goes on.
    let body = usize::try_from(uint(f.get(4)))
        .ok()
        .and_then(|at| entry.get(at.checked_sub(1)?..))
        .unwrap_or_default();
    let outcome_unknown = uint(f.get(6)) == 1;
    Ok(LeasedJob {
        tenant: field(1).unwrap_or_default(),
        key: field(2).unwrap_or_default(),
        // A body that is not UTF-8 reaches the worker as text it cannot decode, and the job
        // is buried there, not here.
        body: String::from_utf8_lossy(body).into_owned(),
        attempt: u32::try_from(uint(f.get(5))).unwrap_or(u32::MAX),
        outcome_unknown,
        lease: format!("{token}.{}", n + 1),
        dispatched_at_ms: uint(f.get(7)),
        fenced_until: fenced_until.filter(|_| !outcome_unknown),
        id: JobId(id),
    })
}

/// A job's `job:<id>` hash, read with [`JOB_FIELDS`].
pub(super) async fn job_fields(
    con: &mut super::link::Link,
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
pub(super) fn dispatched_result(
    id: &JobId,
    key: &str,
    fields: &[Option<String>],
) -> Option<Result<JobResult, QueueError>> {
    fields.iter().any(Option::is_some).then(|| {
        job_result(id.clone(), fields, None).ok_or_else(|| corrupt(key, "no readable state"))
    })
}

/// Fields read for a [`JobResult`], in this order.
pub(super) const JOB_FIELDS: [&str; 11] = [
    "tenant",
    "key",
    "state",
    "webhook_id",
    "attempts",
    "error",
    "reconciled",
    "outcome",
    "fields",
    "digest",
    "finished_ms",
];

/// A job record as a result; `None` when the record does not exist. `state` overrides the
/// stored state (results know it from the set the id is in).
pub(super) fn job_result(
    job: JobId,
    fields: &[Option<String>],
    state: Option<JobState>,
) -> Option<JobResult> {
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
        outcome: get(7).as_deref().and_then(crate::job::Outcome::parse),
        fields: get(8).filter(|s| !s.is_empty()),
        digest: get(9).filter(|s| !s.is_empty()),
        finished_ms: get(10).and_then(|f| f.parse().ok()),
    })
}

pub(super) fn parse_state(s: &str) -> Option<JobState> {
    Some(match s {
        "queued" => JobState::Queued,
        "scheduled" => JobState::Scheduled,
        "running" => JobState::Running,
        "done" => JobState::Done,
        "dead" => JobState::Dead,
        _ => return None,
    })
}

pub(super) fn corrupt(key: &str, reason: &str) -> QueueError {
    QueueError::Corrupt {
        key: key.into(),
        reason: reason.into(),
    }
}

pub(super) fn array(v: Value, what: &str) -> Result<Vec<Value>, QueueError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(corrupt(what, "script reply is not an array")),
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn uint(v: Option<&Value>) -> u64 {
    v.and_then(int)
        .and_then(|i| u64::try_from(i).ok())
        .unwrap_or(0)
}

pub(super) fn parse_tenant(name: &str, json: &str) -> Result<Tenant, QueueError> {
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

/// Fixed entries at the head of pulse.lua's reply, and entries per listed share.
const PULSE_HEAD: usize = 17;
const PULSE_SHARE: usize = 9;

/// A moment in ms a script answers, -1 (or anything not a count) for none.
fn moment(v: Option<&Value>) -> Option<u64> {
    v.and_then(int).and_then(|n| u64::try_from(n).ok())
}

/// pulse.lua's reply (see its header) as a [`QueuePulse`].
pub(super) fn pulse_of(items: Vec<Value>) -> Result<QueuePulse, QueueError> {
    let count = |i: usize| usize::try_from(uint(items.get(i))).unwrap_or(usize::MAX);
    let (pairs, throttled_named, shares) = (count(14), count(15), count(16));
    let body = pairs
        .checked_mul(2)
        .zip(shares.checked_mul(PULSE_SHARE))
        .and_then(|(p, s)| p.checked_add(s)?.checked_add(throttled_named));
    if items.len() < PULSE_HEAD || body != Some(items.len() - PULSE_HEAD) {
        return Err(corrupt("pulse", "unexpected script reply"));
    }
    let now_ms = uint(items.first()) / 1000;
    let (ages, rest) = items[PULSE_HEAD..].split_at(2 * pairs);
    let (throttled, listed) = rest.split_at(throttled_named);
    let ages: Vec<(String, u64)> = ages
        .chunks(2)
        .map(|p| {
            (
                p.first().and_then(text).unwrap_or_default(),
                now_ms.saturating_sub(uint(p.get(1))),
            )
        })
        .collect();
    let mut throttled_tenants: Vec<String> = throttled.iter().filter_map(text).collect();
    throttled_tenants.sort_unstable();
    let shares = listed
        .chunks(PULSE_SHARE)
        .map(|row| {
            let small = |i: usize| u32::try_from(uint(row.get(i))).unwrap_or(u32::MAX);
            let (limit, configured, reserve, share) = (small(1), small(2), small(3), small(4));
            let exact = exact_share(row.get(8), share);
            TenantShare {
                tenant: row.first().and_then(text).unwrap_or_default(),
                limit,
                configured_limit: configured,
                reserve,
                share,
                share_calls: share::shown(exact),
                other_use: share::other_use_shown(limit, reserve, exact),
                share_reason: ShareReason::of(configured, limit, reserve, exact),
                calls_today: uint(row.get(5)),
                cut_until_ms: moment(row.get(6)),
                quota_until_ms: moment(row.get(7)),
            }
        })
        .collect();
    Ok(QueuePulse {
        now_ms,
        queued: uint(items.get(1)),
        scheduled: uint(items.get(2)),
        running: uint(items.get(3)),
        done: uint(items.get(4)),
        dead: uint(items.get(5)),
        done_total: uint(items.get(6)),
        oldest_running_ms: items
            .get(7)
            .and_then(int)
            .and_then(|d| u64::try_from(d).ok())
            .map(|d| now_ms.saturating_sub(d)),
        latency_ms: ages.first().map(|(_, age)| *age),
        tenant_latency_ms: ages,
        throttled: uint(items.get(8)),
        throttled_tenants,
        paused: false,
        share_cut: uint(items.get(9)),
        quota_reached: uint(items.get(10)),
        held: HeldCounts {
            keys_refused: uint(items.get(11)),
            host_unreachable: uint(items.get(12)),
            paused: uint(items.get(13)),
        },
        shares,
    })
}

/// The share as a script wrote it (text), or `most` (the calls it allows in a window) when
/// that is unreadable.
fn exact_share(v: Option<&Value>, most: u32) -> f64 {
    v.and_then(text)
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite())
        .unwrap_or(f64::from(most))
}

/// status.lua's reply (see its header) as a [`QueueStatus`] of queue `queue`.
/// Entries per tenant in status.lua's reply.
const STATUS_ROW: usize = 14;

pub(super) fn status_of(items: Vec<Value>, queue: &str) -> Result<QueueStatus, QueueError> {
    if items.len() < 7 || !(items.len() - 7).is_multiple_of(STATUS_ROW) {
        return Err(corrupt("status", "unexpected script reply"));
    }
    let now_ms = uint(items.first()) / 1000;
    let oldest = items.get(6).and_then(int).filter(|d| *d >= 0);
    let mut tenants: Vec<TenantStatus> = items[7..]
        .chunks(STATUS_ROW)
        .map(|row| {
            let small = |i: usize| u32::try_from(uint(row.get(i))).unwrap_or(u32::MAX);
            let (limit, configured, reserve, share) = (small(2), small(6), small(7), small(8));
            let exact = exact_share(row.get(13), share);
            TenantStatus {
                tenant: row.first().and_then(text).unwrap_or_default(),
                waiting: uint(row.get(1)),
                limit,
                configured_limit: configured,
                reserve,
                share,
                share_calls: share::shown(exact),
                other_use: share::other_use_shown(limit, reserve, exact),
                share_reason: ShareReason::of(configured, limit, reserve, exact),
                daily_limit: Some(small(9)).filter(|d| *d > 0),
                daily_limit_learned: small(12) > 0 && small(12) == small(9),
                calls_today: uint(row.get(10)),
                quota_until_ms: row
                    .get(11)
                    .and_then(int)
                    .filter(|p| *p >= 0)
                    .and_then(|p| u64::try_from(p).ok()),
                calls_in_window: u32::try_from(uint(row.get(3))).unwrap_or(u32::MAX),
                paused_until_ms: row
                    .get(4)
                    .and_then(int)
                    .filter(|p| *p >= 0)
                    .and_then(|p| u64::try_from(p).ok()),
                pause_reason: row.get(5).and_then(text).filter(|r| !r.is_empty()),
                hold: None,
                host: None,
            }
        })
        .collect();
    tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    Ok(QueueStatus {
        queue: queue.to_string(),
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
        paused: None,
        // Read beside the script (`RedisQueue::status`).
        outcomes: Default::default(),
    })
}

/// Entries per row in tenants.lua's reply.
const TENANT_ROW: usize = 11;

/// tenants.lua's reply (see its header) as a [`TenantPage`].
pub(super) fn tenant_page_of(items: Vec<Value>) -> Result<TenantPage, QueueError> {
    if items.len() < 2 || !(items.len() - 2).is_multiple_of(TENANT_ROW) {
        return Err(corrupt("tenants", "unexpected script reply"));
    }
    let tenants = items[2..]
        .chunks(TENANT_ROW)
        .map(|row| {
            let small = |i: usize| u32::try_from(uint(row.get(i))).unwrap_or(u32::MAX);
            let state = row.get(1).and_then(text).unwrap_or_default();
            Ok(TenantRow {
                tenant: row.first().and_then(text).unwrap_or_default(),
                state: TenantState::parse(&state)
                    .map_err(|_| corrupt("tenants", "unknown tenant state"))?,
                waiting: uint(row.get(2)),
                in_flight: uint(row.get(3)),
                done: uint(row.get(4)),
                dead: uint(row.get(5)),
                calls_in_window: small(6),
                share: small(7),
                limit: small(8),
                next_call_ms: row
                    .get(9)
                    .and_then(int)
                    .and_then(|ms| u64::try_from(ms).ok()),
                hold: row
                    .get(10)
                    .and_then(text)
                    .and_then(|raw| serde_json::from_str(&raw).ok()),
            })
        })
        .collect::<Result<Vec<_>, QueueError>>()?;
    Ok(TenantPage {
        total: uint(items.first()),
        tenants,
        next: items
            .get(1)
            .and_then(int)
            .filter(|n| *n >= 0)
            .map(|n| n.to_string()),
    })
}
