//! A demo run's report: what the queue recorded, against what the simulator saw, with each
//! tenant's calls as the watch saw them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::drive::DemoRun;
use super::report::{DemoReport, TenantResult, achieved_per_window};
use super::watch::{CallLog, Watch};
use super::{Backend, DemoError, DemoTenant};
use crate::job::{JobResult, JobState};
use crate::sim::AccountStats;
use crate::worker::PoolTotals;

/// One tenant's finished jobs, as the queue recorded them.
#[derive(Default)]
struct Finished<'r> {
    done: u64,
    dead: u64,
    /// The webhook Ids recorded with its done jobs.
    ids: Vec<&'r str>,
}

/// The simulator's counts, summed over the tenants.
#[derive(Default)]
struct SimTotals {
    ids_created: u64,
    duplicates: u64,
    rate_limited: u64,
    calls: u64,
    /// 500s, created-then-500s, connection resets.
    faults: (u64, u64, u64),
}

impl SimTotals {
    fn add(&mut self, account: &AccountStats) {
        self.ids_created += account.webhooks.len() as u64;
        self.duplicates += account.duplicates;
        self.rate_limited += account.rate_limited;
        self.calls += account.calls;
        self.faults.0 += account.faults.errors;
        self.faults.1 += account.faults.created_then_error;
        self.faults.2 += account.faults.resets;
    }
}

impl DemoRun<'_> {
    /// The report of a run whose pool returned `summary`.
    pub(super) async fn report(
        &self,
        watch: &Watch,
        summary: PoolTotals,
        interrupted: bool,
    ) -> Result<DemoReport, DemoError> {
        let results = self.queue.results(None).await?;
        // Tenants held until released (keys refused): their jobs are parked, not lost.
        let parked_why: BTreeMap<String, String> = self
            .queue
            .status()
            .await?
            .tenants
            .into_iter()
            .filter_map(|t| {
                let hold = t.hold.filter(|h| h.until_ms.is_none())?;
                Some((t.tenant, hold.reason))
            })
            .collect();
        let stats = self.sim.stats();
        let logs = watch.call_logs();
        let mut finished = finished_per_tenant(&results);
        let mut ids_match = true;
        let mut sim = SimTotals::default();
        let mut tenants = Vec::with_capacity(self.config.tenants.len());
        for t in &self.config.tenants {
            let account = stats.accounts.get(&t.name).cloned().unwrap_or_default();
            let jobs = finished.remove(t.name.as_str()).unwrap_or_default();
            ids_match &= same_ids(&account, &jobs.ids);
            sim.add(&account);
            let log = logs.get(&t.name).cloned().unwrap_or_default();
            let retries = watch.progress(&t.name).retries;
            let mut row = self.tenant_report(t, &account, &jobs, &log, retries);
            row.parked = parked_why.get(&t.name).cloned();
            tenants.push(row);
        }
        let parked: u64 = tenants
            .iter()
            .filter(|t| t.parked.is_some())
            .map(|t| t.jobs.saturating_sub(t.done + t.dead))
            .sum();
        let count = |state: JobState| results.iter().filter(|r| r.status == state).count() as u64;
        let (done, dead) = (count(JobState::Done), count(JobState::Dead));
        let jobs = self.config.total_jobs();
        Ok(DemoReport {
            backend: match self.backend {
                Backend::Embedded => "embedded queue".into(),
                Backend::Redis { queue, .. } => format!("Redis queue {queue}"),
            },
            elapsed: self.started.elapsed(),
            interrupted,
            window: self.config.window,
            jobs,
            done,
            dead,
            parked,
            unfinished: jobs.saturating_sub(done + dead + parked),
            ids_recorded: results
                .iter()
                .filter(|r| r.status == JobState::Done && r.webhook_id.is_some())
                .count() as u64,
            ids_created: sim.ids_created,
            ids_match,
            duplicates: sim.duplicates,
            rate_limited: sim.rate_limited,
            calls: sim.calls,
            retries: summary.retried,
            reconciled: summary.reconciled,
            faults: sim.faults,
            tenants,
        })
    }

    /// One tenant's line of the report.
    fn tenant_report(
        &self,
        t: &DemoTenant,
        account: &AccountStats,
        jobs: &Finished<'_>,
        log: &CallLog,
        retries: u64,
    ) -> TenantResult {
        let busy = match (
            log.calls.first(),
            log.busy_until.and_then(|i| log.calls.get(i)),
        ) {
            (Some(first), Some(last)) => last.saturating_sub(*first),
            _ => Duration::ZERO,
        };
        let achieved = log
            .busy_until
            .and_then(|until| achieved_per_window(&log.calls, until, t.limit, self.config.window));
        TenantResult {
            name: t.name.clone(),
            limit: t.limit,
            jobs: self.config.jobs_for(t.limit),
            done: jobs.done,
            dead: jobs.dead,
            calls: account.calls,
            rate_limited: account.rate_limited,
            max_calls_in_window: account.max_calls_in_window,
            retries,
            busy,
            achieved,
            parked: None,
        }
    }
}

/// Each tenant's finished jobs.
fn finished_per_tenant(results: &[JobResult]) -> BTreeMap<&str, Finished<'_>> {
    let mut finished: BTreeMap<&str, Finished<'_>> = BTreeMap::new();
    for r in results {
        let f = finished.entry(r.tenant.as_str()).or_default();
        match r.status {
            JobState::Done => {
                f.done += 1;
                if let Some(id) = &r.webhook_id {
                    f.ids.push(id);
                }
            }
            JobState::Dead => f.dead += 1,
            _ => {}
        }
    }
    finished
}

/// Whether the Ids recorded for a tenant are exactly the ones the simulator created.
fn same_ids(account: &AccountStats, recorded: &[&str]) -> bool {
    let mut created: Vec<&str> = account.webhooks.iter().map(|w| w.id.as_str()).collect();
    let mut recorded = recorded.to_vec();
    created.sort_unstable();
    recorded.sort_unstable();
    created == recorded
}
