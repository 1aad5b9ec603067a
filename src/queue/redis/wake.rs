//! Wakeups for workers waiting for work. Every script that makes work available publishes on
//! the queue's `{name}:wake` channel (`{name~s}:wake` for shard s); one subscriber task per
//! connected queue (all its shards) turns each message into a [`Notify`] that wakes every
//! worker waiting on that shard at once.
//!
//! A message can arrive between a worker's dispatch that found nothing and its call to wait;
//! a plain `Notify` would lose it and the worker would sleep out its whole wait. So the last
//! message's time is kept next to the start of the latest dispatch that found no job: a wait
//! that begins after a message newer than that dispatch returns at once. That costs at most
//! one extra dispatch per message, never a missed job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::Source;

/// Shared between the subscriber task and the queue's callers.
#[derive(Debug)]
pub(super) struct Wake {
    /// Wakes every task blocked in [`Wake::wait`].
    notify: Notify,
    /// Origin of the nanosecond stamps below.
    base: Instant,
    /// When the last wake message arrived, ns since `base` (0: never).
    last_wake: AtomicU64,
    /// When the latest dispatch that found no job started, ns since `base` (0: never).
    last_idle_dispatch: AtomicU64,
}

impl Wake {
    pub(super) fn new() -> Self {
        Wake {
            notify: Notify::new(),
            base: Instant::now(),
            last_wake: AtomicU64::new(0),
            last_idle_dispatch: AtomicU64::new(0),
        }
    }

    /// A stamp for now; never 0.
    pub(super) fn stamp(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// Work may be available: wake every waiter.
    pub(super) fn signal(&self) {
        self.last_wake.fetch_max(self.stamp(), Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// A dispatch that started at `started` found no job.
    pub(super) fn found_nothing(&self, started: u64) {
        self.last_idle_dispatch.fetch_max(started, Ordering::SeqCst);
    }

    /// Returns on the next wake message, at once if one came after the latest dispatch that
    /// found nothing, or after `max`.
    pub(super) async fn wait(&self, max: Duration) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        // Registered before the check below, so a signal between the two is not lost.
        notified.as_mut().enable();
        if self.last_wake.load(Ordering::SeqCst) > self.last_idle_dispatch.load(Ordering::SeqCst) {
            return;
        }
        // Timing out is the normal end of a wait with no news.
        let _ = tokio::time::timeout(max, notified).await;
    }
}

/// Reconnect backoff of a subscriber: full jitter over 100 ms doubling up to 5 s, for as
/// long as the queue lives (while it is down, waiters just wait out their `max`).
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// The wait between two subscriptions of a listener (the wake-ups here, the sentinels'
/// announcements in switch.rs): full jitter over a delay from [`RECONNECT_MIN`] doubling up
/// to [`RECONNECT_MAX`], back to the start after a subscription that lasted longer than
/// [`RECONNECT_MAX`].
pub(super) struct Resubscribe {
    delay: Duration,
}

impl Resubscribe {
    pub(super) fn new() -> Self {
        Resubscribe {
            delay: RECONNECT_MIN,
        }
    }

    /// Waits before the next subscription, after one that began at `started`; `false` when
    /// `cancel` came first.
    pub(super) async fn wait(&mut self, started: Instant, cancel: &CancellationToken) -> bool {
        if started.elapsed() > RECONNECT_MAX {
            self.delay = RECONNECT_MIN;
        }
        let jitter = rand::rng().random_range(0..=self.delay.as_millis() as u64);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(jitter)) => {}
        }
        self.delay = (self.delay * 2).min(RECONNECT_MAX);
        true
    }
}

/// The channels one subscription serves: each shard's `wake` channel and its [`Wake`] (one
/// entry for a queue of one shard).
pub(super) type Channels = Arc<[(String, Arc<Wake>)]>;

/// The subscriber task: forwards messages on each channel to its `Wake` until `cancel`, and
/// resubscribes with backoff whenever the connection drops. `first` is a subscription made
/// while connecting, so that no push after `connect` returns can go unseen. The shards of a
/// queue share this one subscription (one connection per process, not one per shard).
pub(super) async fn listen(
    source: Source,
    channels: Channels,
    first: redis::aio::PubSub,
    cancel: CancellationToken,
) {
    let channel = channels
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let signal_all = || channels.iter().for_each(|(_, wake)| wake.signal());
    let mut pubsub = Some(first);
    let mut backoff = Resubscribe::new();
    loop {
        let session = async {
            let mut ps = match pubsub.take() {
                Some(ps) => ps,
                None => {
                    // After a failover the primary is elsewhere: ask where, every time.
                    let mut ps = source.client().await.get_async_pubsub().await?;
                    for (name, _) in channels.iter() {
                        ps.subscribe(name).await?;
                    }
                    // Messages may have been missed while disconnected.
                    signal_all();
                    ps
                }
            };
            let mut messages = ps.on_message();
            while let Some(message) = messages.next().await {
                let name = message.get_channel_name();
                match channels.iter().find(|(c, _)| c == name) {
                    Some((_, wake)) => wake.signal(),
                    // Not a channel asked for: wake everyone rather than miss one.
                    None => signal_all(),
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        let started = Instant::now();
        tokio::select! {
            // Cancellation first: when the queue is dropped as its process ends, the
            // connection may close at the same moment, and that is no news.
            biased;
            _ = cancel.cancelled() => return,
            result = session => {
                if cancel.is_cancelled() {
                    return;
                }
                match result {
                    Ok(()) => tracing::warn!(%channel, "wake subscription closed; resubscribing"),
                    Err(e) => tracing::warn!(%channel, error = %e, "wake subscription failed; retrying"),
                }
            }
        }
        if !backoff.wait(started, &cancel).await {
            return;
        }
    }
}
