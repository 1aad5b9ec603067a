//! The status report: one read of the queue turned into what ops look at, as the stable
//! JSON of `status --json` and `GET /v1/status`, and as the table `status` prints.
//!
//! The JSON is a contract (documented in the README and in `openapi.yaml`): fields are only
//! ever added, and `version` changes if one is ever removed or changes meaning.

use serde::{Deserialize, Serialize};

use crate::queue::{Queue, QueueError, QueueStatus, ShareReason, TenantStatus};

/// Version of the status JSON layout.
pub const STATUS_VERSION: u32 = 1;

/// Seconds of throughput history in a report.
pub const THROUGHPUT_SECONDS: u32 = 60;

/// What the queue holds now, in total and per tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Layout version, [`STATUS_VERSION`].
    pub version: u32,
    /// Queue name (`--queue`).
    pub queue: String,
    /// The queue's clock when read, ms since the Unix epoch.
    pub now_ms: u64,
    /// Jobs waiting in tenant lists.
    pub queued: u64,
    /// Jobs waiting for a retry time.
    pub scheduled: u64,
    /// Jobs leased to workers.
    pub running: u64,
    /// Jobs finished with a webhook Id.
    pub done: u64,
    /// Dead-lettered jobs.
    pub dead: u64,
    /// Age of the oldest running job's lease, ms; `null` when nothing runs.
    pub oldest_running_ms: Option<u64>,
    /// Jobs ever done by what they did: created, updated, unchanged, deleted, not_found
    /// (issue 18; added in version 1 without a bump: readers that do not know it ignore it).
    #[serde(default)]
    pub outcomes: std::collections::BTreeMap<String, u64>,
    /// Jobs finished done recently.
    pub throughput: Throughput,
    /// Tenants with waiting jobs, calls in the current window or a pause: throttled ones
    /// first (paused, then at their limit), then by waiting jobs, most first.
    pub tenants: Vec<TenantReport>,
    /// The whole queue's pause (`lsq-webhooks pause`): why, who, since when; `null` when
    /// the queue runs.
    #[serde(default)]
    pub paused: Option<crate::queue::QueuePause>,
    /// The replicas behind acknowledged writes (Sentinel, `--min-replicas`): asked,
    /// connected, and since when fewer are connected than asked; `null` where writes wait
    /// for no replica. Added in version 1 without a bump.
    #[serde(default)]
    pub replication: Option<crate::queue::ReplicaState>,
}

/// Jobs finished done over the last [`Throughput::window_seconds`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throughput {
    /// Length of the history, seconds.
    pub window_seconds: u32,
    /// Jobs done in the window; `null` if the backend does not count them.
    pub done: Option<u64>,
    /// Jobs done in each second of the window, oldest first, the current (partial)
    /// second last; empty if the backend does not count them.
    pub per_second: Vec<u64>,
}

/// Whether a tenant's next waiting job may be dispatched now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// It may call.
    #[default]
    Ready,
    /// It has spent its share in the current window; the next call waits for the window.
    AtLimit,
    /// LeadSquared said "rate limited": no call until `paused_until_ms`.
    Paused,
    /// Its daily quota is spent: parked, jobs queued, until `quota_until_ms`.
    QuotaReached,
    /// Held (keys refused, host unreachable, paused by an operator): jobs queued, no call
    /// until the hold ends or is released; `hold` says why.
    Held,
}

impl TenantState {
    /// The name used in JSON and the table.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Ready => "ready",
            TenantState::AtLimit => "at_limit",
            TenantState::Paused => "paused",
            TenantState::QuotaReached => "quota_reached",
            TenantState::Held => "held",
        }
    }
}

/// One tenant's line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantReport {
    /// Tenant name.
    pub tenant: String,
    /// Jobs waiting in its list.
    pub waiting: u64,
    /// Calls allowed per window (may have been lowered by LeadSquared's answer).
    pub limit: u32,
    /// Calls spent in the current window.
    pub calls_in_window: u32,
    /// The limit the tenants file gave.
    pub configured_limit: u32,
    /// Calls per window left to the tenant's other integrations.
    pub reserve: u32,
    /// Our current share: the most calls per window the queue makes now (at most
    /// `limit − reserve`).
    pub share: u32,
    /// Our current share as the controller holds it, calls per window: under the limit the
    /// tenant's calls are spread over the window at this rate.
    #[serde(default)]
    pub share_calls: f64,
    /// While the share is cut: the other clients' load, calls per window, that the share
    /// leaves whole (estimated from our rate-limit answers); `null` otherwise.
    #[serde(default)]
    pub other_use: Option<f64>,
    /// Why the share is what it is: `configured`, `learned_limit`, `reserve` or `shared`
    /// (cut because another client is using the account).
    pub share_reason: ShareReason,
    /// Calls allowed per day, when the tenants file gave one or LeadSquared named one;
    /// `null` otherwise.
    pub daily_limit: Option<u32>,
    /// `daily_limit` is the quota LeadSquared named in a rate-limit answer.
    #[serde(default)]
    pub daily_limit_learned: bool,
    /// Calls dispatched for it today (UTC day).
    pub calls_today: u64,
    /// When it has made `daily_limit` calls today: when the day resets and it resumes, ms
    /// since the epoch; `null` otherwise.
    pub quota_until_ms: Option<u64>,
    /// Ready, at its share, paused, or parked for its daily quota.
    pub state: TenantState,
    /// When the pause ends, ms since the epoch; `null` unless paused.
    pub paused_until_ms: Option<u64>,
    /// Why it is paused (LeadSquared's message); `null` unless paused.
    pub pause_reason: Option<String>,
    /// Its hold (kind, reason, since, until, who), while one is in force; `null` otherwise.
    #[serde(default)]
    pub hold: Option<crate::queue::TenantHold>,
    /// Its API base, or `discovering` until it is known.
    #[serde(default)]
    pub host: String,
}

impl TenantReport {
    fn from_status(t: TenantStatus, now_ms: u64) -> Self {
        let paused = t.paused_until_ms.filter(|&until| until > now_ms);
        let quota = t.quota_until_ms.filter(|&until| until > now_ms);
        let hold = t
            .hold
            .filter(|h| h.until_ms.is_none_or(|until| until > now_ms));
        let state = if hold.is_some() {
            TenantState::Held
        } else if quota.is_some() {
            TenantState::QuotaReached
        } else if paused.is_some() {
            TenantState::Paused
        } else if t.calls_in_window >= t.share.max(1).min(t.limit) {
            TenantState::AtLimit
        } else {
            TenantState::Ready
        };
        TenantReport {
            tenant: t.tenant,
            waiting: t.waiting,
            limit: t.limit,
            calls_in_window: t.calls_in_window,
            configured_limit: t.configured_limit,
            reserve: t.reserve,
            share: t.share,
            share_calls: t.share_calls,
            other_use: t.other_use,
            share_reason: t.share_reason,
            daily_limit: t.daily_limit,
            daily_limit_learned: t.daily_limit_learned,
            calls_today: t.calls_today,
            quota_until_ms: quota,
            state,
            paused_until_ms: paused,
            pause_reason: paused.and(t.pause_reason),
            hold,
            host: t.host.unwrap_or_else(|| "discovering".into()),
        }
    }

    /// Throttled: jobs wait and may not be dispatched now.
    pub fn throttled(&self) -> bool {
        self.waiting > 0 && self.state != TenantState::Ready
    }
}

impl StatusReport {
    /// Reads the queue's status and throughput.
    pub async fn read(queue: &dyn Queue) -> Result<StatusReport, QueueError> {
        let status = queue.status().await?;
        let per_second = queue.done_per_second(THROUGHPUT_SECONDS).await?;
        let replication = queue.replicas().await?;
        let mut report = Self::from_parts(status, per_second);
        report.replication = replication;
        Ok(report)
    }

    /// Builds a report from a queue status and its done-per-second series.
    pub fn from_parts(status: QueueStatus, per_second: Vec<u64>) -> StatusReport {
        let now_ms = status.now_ms;
        let mut tenants: Vec<TenantReport> = status
            .tenants
            .into_iter()
            .map(|t| TenantReport::from_status(t, now_ms))
            .collect();
        let rank = |t: &TenantReport| match t.state {
            TenantState::Held | TenantState::QuotaReached | TenantState::Paused => 0,
            TenantState::AtLimit => 1,
            TenantState::Ready => 2,
        };
        tenants.sort_by(|a, b| {
            rank(a)
                .cmp(&rank(b))
                .then(b.waiting.cmp(&a.waiting))
                .then(a.tenant.cmp(&b.tenant))
        });
        let done = (!per_second.is_empty()).then(|| per_second.iter().sum());
        StatusReport {
            version: STATUS_VERSION,
            queue: status.queue,
            now_ms,
            queued: status.queued,
            scheduled: status.scheduled,
            running: status.running,
            done: status.done,
            dead: status.dead,
            oldest_running_ms: status.oldest_running_ms.filter(|_| status.running > 0),
            outcomes: status.outcomes,
            throughput: Throughput {
                window_seconds: THROUGHPUT_SECONDS,
                done,
                per_second,
            },
            tenants,
            paused: status.paused,
            replication: None,
        }
    }

    /// The human table, at most `max_tenants` tenant rows (the rest summarised in a line).
    pub fn table(&self, max_tenants: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let running = match self.oldest_running_ms {
            Some(ms) => format!("{} (oldest lease {})", self.running, seconds(ms)),
            None => self.running.to_string(),
        };
        let throughput = match self.throughput.done {
            Some(n) => format!("{n} done in the last {} s", self.throughput.window_seconds),
            None => "unknown (this backend does not count it)".into(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "queue {}    {}",
            self.queue,
            utc_time(self.now_ms, false)
        );
        let _ = writeln!(
            out,
            "queued {}   scheduled {}   running {}   done {}   dead {}",
            self.queued, self.scheduled, running, self.done, self.dead
        );
        if self.outcomes.values().any(|n| *n > 0) {
            let by: Vec<String> = crate::job::Outcome::ALL
                .iter()
                .map(|o| {
                    let n = self.outcomes.get(o.as_str()).copied().unwrap_or(0);
                    format!("{} {n}", o.as_str())
                })
                .collect();
            let _ = writeln!(out, "done by outcome: {}", by.join(", "));
        }
        let _ = writeln!(out, "throughput {throughput}");
        if let Some(p) = &self.paused {
            let _ = writeln!(out, "{}", paused_line(p));
        }
        if let Some(r) = &self.replication {
            let _ = writeln!(out, "replication {}", r.describe());
        }
        let throttled = self.tenants.iter().filter(|t| t.throttled()).count();
        let _ = writeln!(
            out,
            "tenants {} active, {} throttled",
            self.tenants.len(),
            throttled
        );
        if self.tenants.is_empty() {
            return out;
        }
        let name_width = self
            .tenants
            .iter()
            .take(max_tenants)
            .map(|t| t.tenant.len())
            .max()
            .unwrap_or(0)
            .max("TENANT".len());
        let _ = writeln!(
            out,
            "\n{:<name_width$}  {:>8}  {:>11}  {:>5}  {:<27}  STATE",
            "TENANT", "WAITING", "CALLS/LIMIT", "SHARE", "WHY"
        );
        for t in self.tenants.iter().take(max_tenants) {
            let state = match (t.state, t.paused_until_ms) {
                (TenantState::Paused, Some(until)) => format!(
                    "paused until {} ({} more){}",
                    utc_time(until, true),
                    seconds(until.saturating_sub(self.now_ms)),
                    t.pause_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                (TenantState::Held, _) => match &t.hold {
                    Some(h) => format!(
                        "held ({}){}{}: {}",
                        h.kind.as_str(),
                        h.until_ms
                            .map(|u| format!(
                                " until {} ({} more)",
                                utc_time(u, true),
                                seconds(u.saturating_sub(self.now_ms))
                            ))
                            .unwrap_or_default(),
                        h.by.as_deref()
                            .map(|b| format!(" by {b}"))
                            .unwrap_or_default(),
                        h.reason
                    ),
                    None => "held".into(),
                },
                (TenantState::AtLimit, _) => "at its share".into(),
                (TenantState::QuotaReached, _) => format!(
                    "daily quota reached ({} of {}{}), resumes at {}",
                    t.calls_today,
                    t.daily_limit.unwrap_or_default(),
                    if t.daily_limit_learned {
                        ", learned from LeadSquared"
                    } else {
                        ""
                    },
                    t.quota_until_ms
                        .map(|at| utc_time(at, false))
                        .unwrap_or_default()
                ),
                _ if t.host == "discovering" => "ready (discovering its host)".into(),
                _ => "ready".into(),
            };
            let _ = writeln!(
                out,
                "{:<name_width$}  {:>8}  {:>11}  {:>5}  {:<27}  {}",
                t.tenant,
                t.waiting,
                format!("{}/{}", t.calls_in_window, t.limit),
                share_text(t.share, t.share_calls),
                share_reason_text(t),
                state
            );
        }
        if self.tenants.len() > max_tenants {
            let _ = writeln!(
                out,
                "... and {} more tenants (`status --json` lists all)",
                self.tenants.len() - max_tenants
            );
        }
        out
    }
}

/// `PAUSED since 2026-11-27 07:40:12Z by ana@ops1: deploy`: the queue's pause, as the table
/// and `lsq-webhooks pause` print it.
pub fn paused_line(p: &crate::queue::QueuePause) -> String {
    format!(
        "PAUSED since {}{}: {} (no job is dispatched; `lsq-webhooks resume`)",
        utc_time(p.since_ms, false),
        p.by.as_deref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default(),
        p.reason
    )
}

/// `1.234s` for a duration in ms.
/// A share as the tenants table shows it: the calls it allows in a window, and the rate it
/// is paced at when that is a fraction.
fn share_text(most: u32, calls: f64) -> String {
    if calls > 0.0 && (calls - f64::from(most)).abs() >= 0.05 {
        format!("{calls:.1}")
    } else {
        most.to_string()
    }
}

/// Why the share is what it is, with the other clients' estimated load while it is cut.
fn share_reason_text(t: &TenantReport) -> String {
    match t.other_use {
        Some(other) if t.share_reason == ShareReason::Shared => {
            format!("shared (others ~{other:.0}/window)")
        }
        _ => t.share_reason.as_str().to_string(),
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// `2026-11-27 07:40:12Z` (or `07:40:12.345Z` when `time_only`) for ms since the epoch.
pub fn utc_time(ms: u64, time_only: bool) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    if time_only {
        return format!("{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000);
    }
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> QueueStatus {
        QueueStatus {
            queue: "lsq".into(),
            now_ms: 1_700_000_000_000,
            queued: 12,
            scheduled: 1,
            running: 2,
            done: 40,
            dead: 3,
            oldest_running_ms: Some(1_250),
            outcomes: Default::default(),
            tenants: vec![
                TenantStatus {
                    tenant: "calm".into(),
                    waiting: 9,
                    calls_today: 17,
                    limit: 25,
                    calls_in_window: 3,
                    configured_limit: 25,
                    reserve: 5,
                    share: 8,
                    share_calls: 7.4,
                    other_use: Some(10.4),
                    share_reason: ShareReason::Shared,
                    daily_limit: Some(10_000),
                    daily_limit_learned: false,
                    quota_until_ms: None,
                    paused_until_ms: None,
                    pause_reason: None,
                    hold: None,
                    host: Some("https://api-in21.leadsquared.com/".into()),
                },
                TenantStatus {
                    tenant: "busy".into(),
                    waiting: 2,
                    limit: 5,
                    calls_in_window: 5,
                    configured_limit: 25,
                    share: 5,
                    share_reason: ShareReason::LearnedLimit,
                    paused_until_ms: Some(1_699_999_999_000),
                    pause_reason: Some("old pause".into()),
                    ..TenantStatus::default()
                },
                TenantStatus {
                    tenant: "held".into(),
                    waiting: 1,
                    limit: 20,
                    calls_in_window: 20,
                    configured_limit: 20,
                    share: 20,
                    paused_until_ms: Some(1_700_000_004_000),
                    pause_reason: Some("API calls exceeded the limit of 20 in 5 second(s)".into()),
                    ..TenantStatus::default()
                },
            ],
            paused: None,
        }
    }

    #[test]
    fn classifies_and_orders_tenants() {
        let r = StatusReport::from_parts(status(), vec![1, 0, 2]);
        let names: Vec<&str> = r.tenants.iter().map(|t| t.tenant.as_str()).collect();
        assert_eq!(names, ["held", "busy", "calm"]);
        assert_eq!(r.tenants[0].state, TenantState::Paused);
        // A pause in the past is over: no pause fields, and the limit decides.
        assert_eq!(r.tenants[1].state, TenantState::AtLimit);
        assert_eq!(r.tenants[1].paused_until_ms, None);
        assert_eq!(r.tenants[1].pause_reason, None);
        assert_eq!(r.tenants[2].state, TenantState::Ready);
        assert_eq!(r.throughput.done, Some(3));
        assert_eq!(r.version, STATUS_VERSION);
    }

    #[test]
    fn json_field_names_are_the_documented_ones() {
        let r = StatusReport::from_parts(status(), vec![]);
        let v = serde_json::to_value(&r).unwrap_or_default();
        for field in [
            "version",
            "queue",
            "now_ms",
            "queued",
            "scheduled",
            "running",
            "done",
            "dead",
            "oldest_running_ms",
            "throughput",
            "tenants",
        ] {
            assert!(v.get(field).is_some(), "missing {field}: {v}");
        }
        assert_eq!(v["throughput"]["done"], serde_json::Value::Null);
        let t = &v["tenants"][0];
        assert_eq!(t["state"], "paused");
        assert_eq!(t["paused_until_ms"], 1_700_000_004_000u64);
        assert_eq!(
            t["pause_reason"],
            "API calls exceeded the limit of 20 in 5 second(s)"
        );
        let calm = &v["tenants"][2];
        assert_eq!(
            (
                &calm["limit"],
                &calm["configured_limit"],
                &calm["reserve"],
                &calm["share"],
                &calm["share_reason"],
                &calm["daily_limit"]
            ),
            (
                &serde_json::json!(25),
                &serde_json::json!(25),
                &serde_json::json!(5),
                &serde_json::json!(8),
                &serde_json::json!("shared"),
                &serde_json::json!(10_000)
            )
        );
        assert_eq!(v["tenants"][0]["daily_limit"], serde_json::Value::Null);
        assert_eq!(calm["calls_today"], 17);
        assert_eq!(calm["quota_until_ms"], serde_json::Value::Null);
    }

    #[test]
    fn table_shows_totals_and_tenants() {
        let r = StatusReport::from_parts(status(), vec![4, 5]);
        let t = r.table(2);
        assert!(t.contains("queue lsq    2023-11-14 22:13:20Z"), "{t}");
        assert!(
            t.contains(
                "queued 12   scheduled 1   running 2 (oldest lease 1.250s)   done 40   dead 3"
            ),
            "{t}"
        );
        assert!(t.contains("throughput 9 done in the last 60 s"), "{t}");
        assert!(
            t.contains("held           1        20/20     20  configured                   paused until 22:13:24.000Z (4.000s more): API calls exceeded"),
            "{t}"
        );
        assert!(
            t.contains(
                "busy           2          5/5      5  learned limit                at its share"
            ),
            "{t}"
        );
        let mut parked = status();
        parked.tenants[0].quota_until_ms = Some(1_700_006_400_000);
        parked.tenants[0].calls_today = 10_000;
        let parked = StatusReport::from_parts(parked, vec![]);
        assert_eq!(parked.tenants[0].state, TenantState::QuotaReached);
        let text = parked.table(3);
        assert!(
            text.contains("daily quota reached (10000 of 10000), resumes at 2023-11-15 00:00:00Z"),
            "{text}"
        );
        let all = r.table(3);
        assert!(
            all.contains(
                "calm           9         3/25    7.4  shared (others ~10/window)   ready"
            ),
            "{all}"
        );
        assert!(t.contains("... and 1 more tenants"), "{t}");
    }

    #[test]
    fn dates_are_right() {
        assert_eq!(utc_time(0, false), "1970-01-01 00:00:00Z");
        assert_eq!(utc_time(951_782_400_000, false), "2000-02-29 00:00:00Z");
        assert_eq!(utc_time(4_102_444_799_999, true), "23:59:59.999Z");
    }

    /// Issue 18: the counts by outcome show in the JSON and, once any job is done, in the
    /// table.
    #[test]
    fn done_jobs_are_counted_by_outcome() {
        let mut st = status();
        st.outcomes = [("created", 30), ("updated", 7), ("deleted", 3)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let r = StatusReport::from_parts(st, vec![]);
        let text = r.table(10);
        assert!(
            text.contains(
                "done by outcome: created 30, updated 7, unchanged 0, deleted 3, not_found 0\n"
            ),
            "{text}"
        );
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["outcomes"]["updated"], 7);
        let quiet = StatusReport::from_parts(status(), vec![]).table(10);
        assert!(!quiet.contains("by outcome"), "{quiet}");
    }
}
