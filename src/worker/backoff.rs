//! Backoff: how long a failing job waits before its next attempt, and how the worker keeps
//! retrying the queue's store while it is unreachable.
//!
//! Both schedules come from `backon`'s exponential backoff (without its jitter) and then get
//! full jitter here: the wait is uniform in `[0, d]` where `d` is the capped exponential
//! delay. backon's own jitter adds `[0, d)` on top of `d` (backon 1.6
//! `src/backoff/exponential.rs`, `next`), which is not full jitter and can reach twice the
//! cap; see `docs/decisions.md`.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::stats::Stats;
use crate::queue::QueueError;

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

/// Backoff while the queue's store (Redis) cannot be reached. Defaults: base 50 ms,
/// factor 2, cap 5 s, full jitter; retried until it answers or the worker is told to stop,
/// so a Redis restart costs at most a few seconds of idle time and no job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReconnectPolicy {
    /// First wait's maximum.
    pub base: Duration,
    /// No wait is longer than this.
    pub cap: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
        }
    }
}

/// A uniformly random duration in `[0, d]`.
pub fn full_jitter(d: Duration) -> Duration {
    let ms = d.as_millis().min(u64::MAX as u128) as u64;
    if ms == 0 {
        return d;
    }
    Duration::from_millis(rand::rng().random_range(0..=ms))
}

/// Runs a queue operation until it succeeds, fails with something other than an
/// unreachable store, or `stop` is cancelled (then `None`). Store errors are logged, counted
/// in `stats` and retried with [`ReconnectPolicy`] waits.
pub async fn with_reconnect<T, F, Fut>(
    what: &'static str,
    policy: &ReconnectPolicy,
    stats: &Stats,
    stop: &CancellationToken,
    mut op: F,
) -> Option<Result<T, QueueError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(policy.base)
        .with_factor(2.0)
        .with_max_delay(policy.cap)
        .without_max_times()
        .build();
    let mut failures = 0u32;
    loop {
        match op().await {
            Err(QueueError::Redis(e)) => {
                failures += 1;
                stats.store_errors();
                let wait = full_jitter(delays.next().unwrap_or(policy.cap));
                tracing::warn!(
                    operation = what,
                    failures,
                    retry_in_ms = wait.as_millis() as u64,
                    "queue store unreachable: {e}"
                );
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            other => {
                if failures > 0 {
                    tracing::info!(operation = what, failures, "queue store answers again");
                }
                return Some(other);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    async fn with_reconnect_retries_store_errors_and_stops_when_told() {
        let stop = CancellationToken::new();
        let stats = Stats::default();
        let mut calls = 0;
        let got = with_reconnect("test", &ReconnectPolicy::default(), &stats, &stop, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(QueueError::Redis(::redis::RedisError::from((
                        ::redis::ErrorKind::Io,
                        "connection refused",
                    ))))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert!(matches!(got, Some(Ok(4))));
        assert_eq!(stats.summary().store_errors, 3);
        // Other errors are not retried.
        let got: Option<Result<(), _>> = with_reconnect(
            "test",
            &ReconnectPolicy::default(),
            &stats,
            &stop,
            || async { Err(QueueError::UnknownTenant("x".into())) },
        )
        .await;
        assert!(matches!(got, Some(Err(QueueError::UnknownTenant(_)))));
        stop.cancel();
        let got: Option<Result<(), _>> = with_reconnect(
            "test",
            &ReconnectPolicy::default(),
            &stats,
            &stop,
            || async {
                Err(QueueError::Redis(::redis::RedisError::from((
                    ::redis::ErrorKind::Io,
                    "down",
                ))))
            },
        )
        .await;
        assert!(got.is_none());
    }
}
