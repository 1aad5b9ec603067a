//! A hook for whoever wants to see each job as the pool runs it (the demo's live display and
//! its per-tenant call log), without wrapping the queue: the pool calls it where it already
//! counts its [`Stats`](super::Stats).

use crate::queue::LeasedJob;

use super::AttemptOutcome;

/// Told about each job as the pool runs it. Called on the pool's own tasks, between queue
/// calls: keep it quick and never block on I/O (a mutex held for a counter update is fine).
pub trait JobObserver: Send + Sync {
    /// The queue handed out these jobs, one call of its tenant's window each (including jobs
    /// then handed straight back because the pool is stopping).
    fn dispatched(&self, jobs: &[LeasedJob]);

    /// The attempt `job` was dispatched for ended in this worker with `outcome`: recorded
    /// in the queue, except for [`AttemptOutcome::LeaseLost`] and [`AttemptOutcome::Abandoned`].
    fn finished(&self, job: &LeasedJob, outcome: &AttemptOutcome);
}
