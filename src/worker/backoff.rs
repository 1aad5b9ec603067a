//! Backoff: how long a failing job waits before its next attempt, and which store errors
//! the worker waits out (with [`crate::retry`], whose reconnect schedule it re-exports).
//!
//! The job schedule comes from `backon`'s exponential backoff (without its jitter) with
//! full jitter added: the wait is uniform in `[0, d]` where `d` is the capped exponential
//! delay (see [`crate::retry`] for why not backon's jitter).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::stats::Stats;
use crate::queue::QueueError;
pub use crate::retry::{Failure, ReconnectPolicy, full_jitter, unavailable_only, with_retry};

/// Backoff of a job whose call failed transiently (500, 502/503/504, timeout, reset).
/// Defaults: base 1 s, factor 2, cap 5 min; the number of attempts is the queue's
/// `max_attempts` (8 by default), after which the queue buries the job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// The first retry's maximum wait.
    pub base: Duration,
    /// Growth per attempt.
    pub factor: f32,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The capped exponential delay after failed attempt `attempt` (1-based), before jitter:
    /// `min(cap, base * factor^(attempt-1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let steps = attempt.max(1) as usize;
        let d = ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_factor(self.factor.max(1.0))
            .with_max_delay(self.cap)
            .without_max_times()
            .build()
            .nth(steps - 1)
            .unwrap_or(self.cap)
            .min(self.cap);
        // backon multiplies in f32: round to whole milliseconds.
        Duration::from_millis((d.as_secs_f64() * 1000.0).round() as u64)
    }

    /// The wait before the retry that follows failed attempt `attempt`: full jitter,
    /// uniform in `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        full_jitter(self.ceiling(attempt))
    }
}

/// How the worker treats a failed store operation (the callback of [`with_retry`]): an
/// unavailable store is waited for, and so is a full one, loudly: the job stays leased and
/// its result is kept until memory is freed (while Redis is full no write can extend the
/// lease either; if it stays full past the lease, the job is taken back as "outcome
/// unknown" and its next holder reconciles, finding the webhook this one made). Both are
/// counted in `stats`. Anything else is not retried.
pub fn store_retry(stats: &Stats) -> impl FnMut(&QueueError, &Failure) -> bool + '_ {
    move |e, f| match e {
        QueueError::Unavailable(_) | QueueError::NotReplicated { .. } => {
            stats.store_errors();
            unavailable_only(e, f)
        }
        QueueError::OutOfMemory { .. } => {
            stats.store_errors();
            tracing::error!(
                operation = f.operation,
                failures = f.failures,
                retry_in_ms = f.wait.as_millis() as u64,
                "{e}: free memory in Redis or raise maxmemory; retrying, and a job this \
                 worker holds stays leased with its result kept"
            );
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[test]
    fn ceilings_grow_by_the_factor_up_to_the_cap() {
        let p = RetryPolicy::default();
        let got: Vec<u64> = (1..=11).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        let q = RetryPolicy {
            base: Duration::from_millis(100),
            factor: 3.0,
            cap: Duration::from_secs(1),
        };
        assert_eq!(q.ceiling(1), Duration::from_millis(100));
        assert_eq!(q.ceiling(2), Duration::from_millis(300));
        assert_eq!(q.ceiling(4), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling() {
        let p = RetryPolicy::default();
        for attempt in 1..=12 {
            for _ in 0..50 {
                assert!(p.delay(attempt) <= p.ceiling(attempt));
            }
        }
        // Over many draws the waits spread out below the ceiling rather than sitting on it.
        let below_half = (0..400)
            .filter(|_| p.delay(10) < Duration::from_secs(150))
            .count();
        assert!(below_half > 0 && below_half < 400);
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_worker_waits_out_unavailable_and_full_stores_only() {
        let stop = CancellationToken::new();
        let stats = Stats::default();
        let mut calls = 0;
        let got = with_retry(
            "test",
            &ReconnectPolicy::default(),
            &stop,
            store_retry(&stats),
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 => Err(QueueError::Unavailable("connection refused".into())),
                        2 | 3 => Err(QueueError::OutOfMemory { memory: None }),
                        _ => Ok(n),
                    }
                }
            },
        )
        .await;
        assert!(matches!(got, Some(Ok(4))));
        assert_eq!(stats.summary().store_errors, 3);
        let mut calls = 0;
        let got: Option<Result<(), _>> = with_retry(
            "test",
            &ReconnectPolicy::default(),
            &stop,
            store_retry(&stats),
            || {
                calls += 1;
                async { Err(QueueError::Store("ERR user_script:1: boom".into())) }
            },
        )
        .await;
        assert!(matches!(got, Some(Err(QueueError::Store(_)))));
        assert_eq!(calls, 1);
        assert_eq!(stats.summary().store_errors, 3);
    }
}
