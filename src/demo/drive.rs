//! A demo run's steps once its simulator and queue are up: register the tenants, enqueue
//! the jobs, run the pool with the live display until it stops; then `tally.rs` reports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::jobs::{PUSH_BATCH, all_jobs};
use super::watch::Watch;
use super::{Backend, DemoConfig, DemoError, DemoReport, View, display};
use crate::leadsquared::{Client, ClientConfig};
use crate::queue::{Pushed, Queue};
use crate::sim::SimServer;
use crate::tenant::Tenant;
use crate::worker::{Pool, PoolTotals, WorkerConfig};

/// One demo run: its settings and what was set up for it, which every step reads.
pub(super) struct DemoRun<'a> {
    /// What the run does.
    pub config: &'a DemoConfig,
    /// Which queue it runs on.
    pub backend: &'a Backend,
    /// The tenants, with keys of their own, calling `sim`.
    pub tenants: &'a [Tenant],
    /// The run's queue.
    pub queue: Arc<dyn Queue>,
    /// The simulator the tenants call.
    pub sim: &'a SimServer,
    /// When the run began: the report's elapsed time includes the setup.
    pub started: Instant,
}

impl DemoRun<'_> {
    /// Registers the tenants, enqueues the jobs, runs the pool until the queue is idle or
    /// `shutdown` is cancelled, and reports.
    pub async fn drive(
        &self,
        view: View,
        shutdown: CancellationToken,
    ) -> Result<DemoReport, DemoError> {
        self.queue.put_tenants(self.tenants).await?;
        let enqueued = self.enqueue(&shutdown).await?;
        let watch = Arc::new(Watch::new(self.queue.config()));
        let summary = self.run_pool(&watch, enqueued, view, &shutdown).await?;
        self.report(&watch, summary, shutdown.is_cancelled()).await
    }

    /// Pushes every job in batches, until `shutdown`; how many were enqueued.
    async fn enqueue(&self, shutdown: &CancellationToken) -> Result<u64, DemoError> {
        let all = all_jobs(self.config)?;
        let mut enqueued = 0u64;
        for batch in all.chunks(PUSH_BATCH) {
            if shutdown.is_cancelled() {
                break;
            }
            let pushed = self.queue.push(batch).await?;
            enqueued += pushed
                .iter()
                .filter(|p| matches!(p, Pushed::Enqueued { .. }))
                .count() as u64;
        }
        Ok(enqueued)
    }

    /// Runs the pool, which tells `watch` what it does, with the live display of `watch`,
    /// until the queue is idle or `shutdown` is cancelled.
    async fn run_pool(
        &self,
        watch: &Arc<Watch>,
        enqueued: u64,
        view: View,
        shutdown: &CancellationToken,
    ) -> Result<PoolTotals, DemoError> {
        let config = self.config;
        let client = Client::new(ClientConfig {
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        })?;
        let pool = Pool::new(
            self.queue.clone(),
            client,
            WorkerConfig {
                concurrency: config.concurrency,
                exit_when_idle: true,
                retry: config.retry,
                shutdown_grace: config.shutdown_grace,
                reconcile_settle: config.reconcile_settle,
                name: "demo".into(),
                // Hosts are discovered at the simulator, which answers for every region.
                discovery_url: self.sim.base_url(),
                ..WorkerConfig::default()
            },
        )
        .with_observer(watch.clone());
        let rows: Vec<display::Row> = config
            .tenants
            .iter()
            .map(|t| display::Row {
                name: t.name.clone(),
                limit: t.limit,
                jobs: config.jobs_for(t.limit),
            })
            .collect();
        let stop_display = CancellationToken::new();
        let shown = AbortOnDropHandle::new(display::spawn(
            view,
            intro(config, self.sim.local_addr(), enqueued),
            rows,
            watch.clone(),
            stop_display.clone(),
        ));
        let summary = pool.run(shutdown.clone()).await;
        stop_display.cancel();
        if let Err(e) = shown.await {
            tracing::warn!("the progress display failed: {e}");
        }
        Ok(summary?)
    }
}

/// The first line of the progress display.
fn intro(config: &DemoConfig, addr: SocketAddr, jobs: u64) -> String {
    let f = &config.faults;
    let limits: Vec<String> = config.tenants.iter().map(|t| t.limit.to_string()).collect();
    let latency = f.latency.as_millis();
    format!(
        "simulator at http://{addr}: {} tenants with limits {} per {:.0} s; {jobs} jobs; \
         faults (seed {}): {}% of calls 500, {}% of creates 500 after creating, {}% resets, \
         {}-{} ms latency",
        config.tenants.len(),
        limits.join(", "),
        config.window.as_secs_f64(),
        f.seed,
        f.error_rate * 100.0,
        f.created_then_error_rate * 100.0,
        f.reset_rate * 100.0,
        latency,
        latency + f.latency_jitter.as_millis()
    )
}
