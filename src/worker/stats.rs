//! Counters of one pool run, shared by the fetch loop and the jobs, read into a
//! [`PoolTotals`] at the end (and by the demo's progress display while it runs).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What one run of the pool did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolTotals {
    /// Jobs taken from the queue.
    pub dispatched: u64,
    /// Jobs finished with a webhook Id from Create.
    pub created: u64,
    /// Jobs finished with the Id of a webhook found by Retrieve (an earlier attempt had
    /// created it).
    pub reconciled: u64,
    /// Jobs whose Retrieve found nothing and that went back to be created.
    pub not_found: u64,
    /// Transient failures scheduled for a retry (one on the last attempt is counted in
    /// `buried`: the queue buries it).
    pub retried: u64,
    /// Rate-limit answers from LeadSquared (the goal is zero).
    pub rate_limited: u64,
    /// Jobs dead-lettered by this worker (permanent errors, bodies that do not decode,
    /// unknown tenants, a transient failure on the last attempt).
    pub buried: u64,
    /// Jobs handed back to the queue at shutdown.
    pub handed_back: u64,
    /// Results refused because the job's lease had been lost (another worker took it back).
    pub lease_lost: u64,
    /// Calls made to LeadSquared (Create and Retrieve).
    pub calls: u64,
    /// Queue store operations that failed because the store was unavailable or full (each
    /// was retried with backoff).
    pub store_errors: u64,
    /// Creates that took their own fence round trip (`Queue::sending`) because they started
    /// past the slack of the fence their dispatch put up (see `queue::Fence`).
    pub fences: u64,
    /// The most jobs this process held at once (never more than its concurrency).
    pub max_held: u64,
}

/// Live counters behind a [`PoolTotals`].
#[derive(Debug, Default)]
pub struct Stats {
    dispatched: AtomicU64,
    fences: AtomicU64,
    created: AtomicU64,
    reconciled: AtomicU64,
    not_found: AtomicU64,
    retried: AtomicU64,
    rate_limited: AtomicU64,
    buried: AtomicU64,
    handed_back: AtomicU64,
    lease_lost: AtomicU64,
    calls: AtomicU64,
    store_errors: AtomicU64,
    held: AtomicU64,
    max_held: AtomicU64,
}

macro_rules! counters {
    ($($name:ident),*) => {
        impl Stats {
            $(
                #[doc = concat!("Counts one `", stringify!($name), "`.")]
                pub fn $name(&self) {
                    self.$name.fetch_add(1, Ordering::Relaxed);
                }
            )*

            /// The counts so far.
            pub fn summary(&self) -> PoolTotals {
                PoolTotals {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                    max_held: self.max_held.load(Ordering::Relaxed),
                }
            }
        }
    };
}

counters!(
    dispatched,
    created,
    reconciled,
    not_found,
    retried,
    rate_limited,
    buried,
    handed_back,
    lease_lost,
    calls,
    store_errors,
    fences
);

impl Stats {
    /// A job was taken from the queue and is now held by this process.
    pub fn taken(&self) {
        self.dispatched();
        let now = self.held.fetch_add(1, Ordering::AcqRel) + 1;
        self.max_held.fetch_max(now, Ordering::AcqRel);
    }

    /// A held job was finished, handed back or abandoned.
    pub fn released(&self) {
        self.held.fetch_sub(1, Ordering::AcqRel);
    }

    /// Jobs held right now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }
}
