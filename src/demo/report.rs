//! The demo's summary: what was done, what the simulator saw, and how close each tenant came
//! to its limit while it had work.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// A tenant's share of the result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TenantResult {
    /// Tenant name.
    pub name: String,
    /// Its limit: calls per window.
    pub limit: u32,
    /// Jobs enqueued for it.
    pub jobs: u64,
    /// Jobs done.
    pub done: u64,
    /// Jobs dead.
    pub dead: u64,
    /// Calls the simulator received from it (Create and Retrieve).
    pub calls: u64,
    /// Rate-limit answers the simulator sent it.
    pub rate_limited: u64,
    /// The most calls the simulator saw from it in any one window.
    pub max_calls_in_window: u32,
    /// Retries scheduled for its jobs.
    pub retries: u64,
    /// How long it had jobs waiting: from its first call to the last first attempt of a job.
    pub busy: Duration,
    /// Calls per window it achieved while it had jobs waiting (see [`achieved_per_window`]);
    /// `None` when it made too few calls to measure.
    pub achieved: Option<f64>,
    /// Why it is parked (held until released: its keys were refused), if it is.
    pub parked: Option<String>,
}

impl TenantResult {
    /// `achieved` as a share of `limit`.
    pub fn achieved_share(&self) -> Option<f64> {
        self.achieved.map(|a| a / f64::from(self.limit.max(1)))
    }
}

/// What a demo run did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DemoReport {
    /// Which queue ran it, in words.
    pub backend: String,
    /// From start to finish, setup included.
    pub elapsed: Duration,
    /// Stopped by Ctrl-C (or its token) before every job had finished.
    pub interrupted: bool,
    /// The rate-limit window.
    pub window: Duration,
    /// Jobs enqueued.
    pub jobs: u64,
    /// Jobs done.
    pub done: u64,
    /// Jobs dead.
    pub dead: u64,
    /// Jobs of parked tenants (keys refused): queued, neither done nor dead.
    pub parked: u64,
    /// Jobs neither done, dead nor parked (only after an interruption).
    pub unfinished: u64,
    /// Webhook Ids recorded with done jobs.
    pub ids_recorded: u64,
    /// Webhooks the simulator created.
    pub ids_created: u64,
    /// For every tenant, the Ids recorded are exactly the Ids the simulator created.
    pub ids_match: bool,
    /// Webhooks the simulator created twice (same description, URL and event).
    pub duplicates: u64,
    /// Rate-limit answers the simulator sent (the goal is zero).
    pub rate_limited: u64,
    /// Calls the simulator received.
    pub calls: u64,
    /// Retries scheduled after transient failures.
    pub retries: u64,
    /// Jobs finished by finding the webhook an earlier attempt had created.
    pub reconciled: u64,
    /// Faults the simulator injected: 500s, created-then-500s, connection resets.
    pub faults: (u64, u64, u64),
    /// Per tenant, in the demo's order.
    pub tenants: Vec<TenantResult>,
}

/// The share of its limit each tenant should reach while it has work.
pub const TARGET_SHARE: f64 = 0.95;

impl DemoReport {
    /// Every job done, every Id matching what the simulator created, no duplicate, no
    /// rate-limit answer, and not interrupted.
    pub fn passed(&self) -> bool {
        !self.interrupted
            && self.done + self.parked == self.jobs
            && self.dead == 0
            && self.ids_match
            && self.duplicates == 0
            && self.rate_limited == 0
    }

    /// Every tenant measured reached [`TARGET_SHARE`] of its limit while it had work.
    pub fn at_limit(&self) -> bool {
        self.tenants
            .iter()
            .filter(|t| t.parked.is_none())
            .filter_map(TenantResult::achieved_share)
            .all(|s| s >= TARGET_SHARE)
    }
}

/// The calls per window a tenant achieved while it had jobs waiting.
///
/// At a limit of `limit` calls in any window, call `n + limit` can come no sooner than one
/// window after call `n`. So over the calls made while jobs were waiting (indexes up to
/// `busy_until`), the mean gap between each call and the one `limit` places earlier is the
/// time the tenant took per `limit` calls, and `limit × window / mean gap` is its rate per
/// window: exactly `limit` on a perfect schedule, less for every moment a call could have
/// been made and was not. Unlike `calls / duration`, it is not flattered by the first
/// window's burst nor penalised by the last window's stragglers. `None` with fewer than
/// `limit + 1` such calls.
pub fn achieved_per_window(
    calls: &[Duration],
    busy_until: usize,
    limit: u32,
    window: Duration,
) -> Option<f64> {
    let limit = limit as usize;
    if limit == 0 || busy_until >= calls.len() || busy_until < limit {
        return None;
    }
    let gaps: f64 = (limit..=busy_until)
        .map(|n| calls[n].saturating_sub(calls[n - limit]).as_secs_f64())
        .sum();
    let mean_gap = gaps / (busy_until - limit + 1) as f64;
    (mean_gap > 0.0).then(|| limit as f64 * window.as_secs_f64() / mean_gap)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = if self.interrupted {
            "interrupted after"
        } else {
            "finished in"
        };
        writeln!(f, "demo {head} {} ({})", secs(self.elapsed), self.backend)?;
        writeln!(
            f,
            "  {:<6}  jobs: {} done, {} dead, {} parked, {} unfinished, of {}",
            mark(self.done + self.parked == self.jobs && self.dead == 0),
            self.done,
            self.dead,
            self.parked,
            self.unfinished,
            self.jobs
        )?;
        for t in self.tenants.iter().filter(|t| t.parked.is_some()) {
            writeln!(
                f,
                "          {} parked: {}; its {} jobs stay queued, none dead (import new keys or `tenants resume {}`)",
                t.name,
                t.parked.as_deref().unwrap_or_default(),
                t.jobs - t.done - t.dead,
                t.name
            )?;
        }
        writeln!(
            f,
            "  {:<6}  webhook Ids: {} recorded, {} as the {} the simulator created; {} duplicates",
            mark(self.ids_match && self.duplicates == 0),
            self.ids_recorded,
            if self.ids_match {
                "the same"
            } else {
                "NOT the same"
            },
            self.ids_created,
            self.duplicates
        )?;
        writeln!(
            f,
            "  {:<6}  rate-limit answers from the simulator: {}",
            mark(self.rate_limited == 0),
            self.rate_limited
        )?;
        let (errors, created_then_error, resets) = self.faults;
        writeln!(
            f,
            "          retries: {}, after {} injected faults ({errors} 500s, \
             {created_then_error} created-then-500s, {resets} connection resets)",
            self.retries,
            errors + created_then_error + resets,
        )?;
        writeln!(
            f,
            "          jobs done with a webhook found by Retrieve (not created twice): {}",
            self.reconciled
        )?;
        writeln!(f, "          calls to the simulator: {}", self.calls)?;
        if self.interrupted {
            writeln!(
                f,
                "          (stopped early: a webhook created by a call whose job was then \
                 handed back is in the simulator but not yet recorded)"
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {:<10} {:>5} {:>6} {:>6} {:>5} {:>6} {:>7} {:>7}  calls per {} while busy",
            "tenant",
            "limit",
            "jobs",
            "done",
            "dead",
            "calls",
            "retries",
            "busy",
            secs(self.window)
        )?;
        for t in &self.tenants {
            let achieved = match (t.achieved, t.achieved_share()) {
                _ if t.parked.is_some() => "parked (keys refused), not measured".to_string(),
                (Some(a), Some(share)) => format!(
                    "{a:>5.1} of {:<3} {:>4.0}%  {}",
                    t.limit,
                    share * 100.0,
                    mark(share >= TARGET_SHARE)
                ),
                _ => "too few calls to measure".to_string(),
            };
            writeln!(
                f,
                "  {:<10} {:>5} {:>6} {:>6} {:>5} {:>6} {:>7} {:>7}  {achieved}",
                t.name,
                t.limit,
                t.jobs,
                t.done,
                t.dead,
                t.calls,
                t.retries,
                secs(t.busy),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(secs: &[f64]) -> Vec<Duration> {
        secs.iter().map(|s| Duration::from_secs_f64(*s)).collect()
    }

    #[test]
    fn a_perfect_schedule_achieves_the_limit() {
        // Two calls at the start of each 5-second window.
        let calls = times(&[0.0, 0.0, 5.0, 5.0, 10.0, 10.0, 15.0, 15.0]);
        let a = achieved_per_window(&calls, 7, 2, Duration::from_secs(5));
        assert_eq!(a, Some(2.0));
        // A partial last window changes nothing.
        let a = achieved_per_window(&calls, 6, 2, Duration::from_secs(5));
        assert_eq!(a, Some(2.0));
    }

    #[test]
    fn each_cycle_longer_than_the_window_lowers_the_rate() {
        // Every call's slot comes back 5.5 s later instead of 5.
        let calls = times(&[0.0, 0.1, 5.5, 5.6, 11.0, 11.1]);
        let a = achieved_per_window(&calls, 5, 2, Duration::from_secs(5)).unwrap_or_default();
        assert!((a - 2.0 * 5.0 / 5.5).abs() < 1e-9, "{a}");
    }

    #[test]
    fn calls_after_the_busy_period_do_not_count() {
        // Busy until index 3; a lone retry 20 s later does not drag the rate down.
        let calls = times(&[0.0, 0.0, 5.0, 5.0, 25.0]);
        assert_eq!(
            achieved_per_window(&calls, 3, 2, Duration::from_secs(5)),
            Some(2.0)
        );
    }

    #[test]
    fn too_few_calls_are_not_measured() {
        let calls = times(&[0.0, 0.0]);
        assert_eq!(
            achieved_per_window(&calls, 1, 2, Duration::from_secs(5)),
            None
        );
        assert_eq!(
            achieved_per_window(&calls, 5, 1, Duration::from_secs(5)),
            None
        );
        assert_eq!(achieved_per_window(&[], 0, 0, Duration::from_secs(5)), None);
    }
}
