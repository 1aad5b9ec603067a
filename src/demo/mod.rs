//! `lsq-webhooks demo`: the whole product in one process, against its own simulator.
//!
//! A run starts the LeadSquared simulator on a free loopback port with a handful of tenants
//! of different limits and a few seeded faults (500s, "created, then 500", connection
//! resets, latency), enqueues enough jobs to keep every tenant at its limit for a while,
//! runs the worker pool until the queue is idle (or until told to stop), and reports:
//! jobs done and dead, the webhook Ids recorded against the ones the simulator created,
//! rate-limit answers (the goal is zero), retries, and each tenant's achieved calls per
//! window while it had work.
//!
//! The queue is Redis when one is named (a fresh queue, deleted afterwards unless kept) and
//! the embedded backend otherwise, so the demo runs on a machine with nothing but Rust.
//!
//! - `config.rs`: what a run does ([`DemoConfig`]) and on which queue ([`Backend`]).
//! - `setup.rs`: the simulator and the queue a run starts, and the queue's deletion after.
//! - `jobs.rs`: the jobs a run enqueues.
//! - `drive.rs`: a run's steps, from registering the tenants to the pool's end.
//! - `tally.rs`: the report, from what the queue recorded and the simulator saw.
//! - [`watch`]: the calls and outcomes per tenant, as the worker pool reports them.
//! - [`display`]: live bars on a terminal, plain lines elsewhere.
//! - [`report`]: the summary and how the achieved rate is measured.

mod config;
pub mod display;
mod drive;
mod jobs;
pub mod report;
mod setup;
mod tally;
pub mod watch;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{Backend, DemoConfig, DemoTenant, TenantSetup};
pub use display::View;
pub use report::{DemoReport, TenantResult, achieved_per_window};

use crate::queue::{Queue, QueueError};
use crate::worker::WorkerError;
use drive::DemoRun;

/// Why a demo could not run. A job failing is not one of these: it is in the report.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The configuration cannot work.
    #[error("demo configuration: {0}")]
    Config(String),
    /// The simulator could not start.
    #[error("cannot start the simulator: {0}")]
    Simulator(String),
    /// The queue failed (Redis unreachable, say). Not marked as the error's source: its
    /// text is in this one's already, and a report of the chain would say it twice.
    #[error("queue: {0}")]
    Queue(QueueError),
    /// The worker pool failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::leadsquared::ClientBuildError),
}

impl From<QueueError> for DemoError {
    fn from(e: QueueError) -> Self {
        DemoError::Queue(e)
    }
}

/// Runs the demo until every job is done or dead, or until `shutdown` is cancelled (then
/// the pool stops in its two stages and the report says `interrupted`). Progress goes to
/// standard error as `view` says; the report is returned, not printed.
pub async fn run(
    config: &DemoConfig,
    backend: &Backend,
    view: View,
    shutdown: CancellationToken,
) -> Result<DemoReport, DemoError> {
    config.check()?;
    let started = Instant::now();
    let sim_stop = CancellationToken::new();
    // Stops the simulator on every way out of this function.
    let _sim_guard = sim_stop.clone().drop_guard();
    let (sim, tenants) = setup::start_simulator(config, sim_stop.clone()).await?;
    let (queue, redis_queue) = setup::open_queue(config, backend).await?;
    let demo = DemoRun {
        config,
        backend,
        tenants: &tenants,
        queue,
        sim: &sim.home,
        started,
    };
    let result = demo.drive(view, shutdown).await;
    if let (Backend::Redis { keep, .. }, Some(q)) = (backend, redis_queue)
        && !keep
        && let Err(e) = q.delete_all().await
    {
        tracing::warn!("could not delete the demo's queue {}: {e}", q.config().name);
    }
    sim_stop.cancel();
    sim.home.join().await;
    if let Some(other) = sim.other {
        other.join().await;
    }
    result
}
