//! Retrying an operation on the queue's store while the store cannot serve, for the worker,
//! the producer and (through the producer) the ops surface.
//!
//! [`with_retry`] runs the operation; on a failure it asks the caller's callback whether
//! that error is worth another try (and lets it say so in the log), and waits before the
//! next one with [`ReconnectPolicy`]'s bounded, jittered backoff. What is retried is the
//! caller's decision, taken from the error's type: [`QueueError::Unavailable`] always is;
//! the worker also waits out [`QueueError::OutOfMemory`] on a job it holds, a producer does
//! not; anything else ([`QueueError::Store`], a lost lease, ...) is returned at once, to be
//! reported once. A script error is never retried.
//!
//! The schedule comes from `backon`'s exponential backoff (without its jitter) with full
//! jitter added here: each wait is uniform in `[0, d]` where `d` is the capped exponential
//! delay. backon's own jitter adds `[0, d)` on top of `d` (backon 1.6
//! `src/backoff/exponential.rs`, `next`), which is not full jitter and can reach twice the
//! cap; see `docs/decisions.md`.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::queue::QueueError;

/// Backoff while the queue's store (Redis) cannot serve. Defaults: the first wait at most
/// 50 ms, doubling to a cap of 5 s, full jitter (each wait uniform in `[0, d]`). How long
/// to go on is the caller's: the worker until it is told to stop (a Redis restart then
/// costs at most a few seconds of idle time and no job), a producer for
/// its `PUSH_RETRY_FOR` (60 s).
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

/// A failed try, as the callback of [`with_retry`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The operation's name, for the log (`push`, `complete`, ...).
    pub operation: &'static str,
    /// Failed tries so far, this one included.
    pub failures: u32,
    /// Time since the first try started.
    pub elapsed: Duration,
    /// How long the next try waits, if the callback wants one.
    pub wait: Duration,
}

/// Runs `op` until it succeeds, fails with an error `retry` refuses (returned as is), or
/// `stop` is cancelled during a wait (then `None`; a try in progress is never cut short).
/// `retry` is called once per failure, with the error and [`Failure`]: it logs what it
/// wants and answers whether to try again after `wait`.
pub async fn with_retry<T, F, Fut, R>(
    operation: &'static str,
    policy: &ReconnectPolicy,
    stop: &CancellationToken,
    mut retry: R,
    mut op: F,
) -> Option<Result<T, QueueError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, QueueError>>,
    R: FnMut(&QueueError, &Failure) -> bool,
{
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(policy.base)
        .with_factor(2.0)
        .with_max_delay(policy.cap)
        .without_max_times()
        .build();
    let started = Instant::now();
    let mut failures = 0u32;
    loop {
        match op().await {
            Err(e) => {
                failures += 1;
                let failure = Failure {
                    operation,
                    failures,
                    elapsed: started.elapsed(),
                    wait: full_jitter(delays.next().unwrap_or(policy.cap).min(policy.cap)),
                };
                if !retry(&e, &failure) {
                    return Some(Err(e));
                }
                tokio::select! {
                    _ = stop.cancelled() => return None,
                    _ = tokio::time::sleep(failure.wait) => {}
                }
            }
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(operation, failures, "queue store answers again");
                }
                return Some(Ok(v));
            }
        }
    }
}

/// The usual callback: retries [`QueueError::Unavailable`] with a warning, nothing else.
pub fn unavailable_only(e: &QueueError, f: &Failure) -> bool {
    if e.is_unavailable() {
        tracing::warn!(
            operation = f.operation,
            failures = f.failures,
            retry_in_ms = f.wait.as_millis() as u64,
            "{e}"
        );
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> QueueError {
        QueueError::Unavailable("connection refused".into())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_the_callback_accepts_and_stops_when_told() {
        let stop = CancellationToken::new();
        let mut calls = 0;
        let mut seen = Vec::new();
        let got = with_retry(
            "test",
            &ReconnectPolicy::default(),
            &stop,
            |e, f| {
                seen.push(f.failures);
                assert!(f.wait <= ReconnectPolicy::default().cap);
                unavailable_only(e, f)
            },
            || {
                calls += 1;
                let n = calls;
                async move { if n < 4 { Err(unavailable()) } else { Ok(n) } }
            },
        )
        .await;
        assert!(matches!(got, Some(Ok(4))));
        assert_eq!(seen, [1, 2, 3]);

        // Refused errors come back after one try.
        let mut calls = 0;
        let got: Option<Result<(), _>> = with_retry(
            "test",
            &ReconnectPolicy::default(),
            &stop,
            unavailable_only,
            || {
                calls += 1;
                async { Err(QueueError::Store("WRONGTYPE".into())) }
            },
        )
        .await;
        assert!(matches!(got, Some(Err(QueueError::Store(_)))));
        assert_eq!(calls, 1);

        stop.cancel();
        let got: Option<Result<(), _>> = with_retry(
            "test",
            &ReconnectPolicy::default(),
            &stop,
            unavailable_only,
            || async { Err(unavailable()) },
        )
        .await;
        assert!(got.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_are_jittered_below_a_doubling_ceiling() {
        let policy = ReconnectPolicy::default();
        let stop = CancellationToken::new();
        let mut waits = Vec::new();
        let _: Option<Result<(), _>> = with_retry(
            "test",
            &policy,
            &stop,
            |_, f| {
                waits.push(f.wait);
                f.failures < 12
            },
            || async { Err(unavailable()) },
        )
        .await;
        assert_eq!(waits.len(), 12);
        for (i, w) in waits.iter().enumerate() {
            let ceiling = (policy.base * 2u32.pow(i as u32)).min(policy.cap);
            assert!(*w <= ceiling, "wait {i}: {w:?} > {ceiling:?}");
        }
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }
}
