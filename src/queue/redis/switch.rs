//! Following a failover as the sentinels announce it: a subscription to `+switch-master` on
//! every sentinel of the URL, so the queue asks for the new primary the moment one is
//! promoted, instead of when a command first fails against the old one
//! (`docs/decisions.md`, "A failover that leaves no replica").
//!
//! One task per sentinel, each owned by the queue's cancellation token (the one that ends
//! the wake subscription): it reconnects with the wake subscription's backoff while its
//! sentinel is down, and asks for the primary again after every reconnection (an
//! announcement may have been missed meanwhile).

use std::sync::Weak;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::link::Follow;
use super::wake::Resubscribe;

/// The sentinels' channel for a completed failover: `<master> <old ip> <old port> <new ip>
/// <new port>`.
const SWITCH_MASTER: &str = "+switch-master";

/// Starts one listener per sentinel; they end with `cancel`, or when the queue's
/// connections are gone.
pub(super) fn listen(follow: &std::sync::Arc<Follow>, cancel: &CancellationToken) {
    let (sentinels, master) = follow.announcers();
    for sentinel in sentinels {
        tokio::spawn(listen_one(
            std::sync::Arc::downgrade(follow),
            sentinel,
            master.clone(),
            cancel.clone(),
        ));
    }
}

/// Whether an announcement names `master`.
fn names(payload: &str, master: &str) -> bool {
    payload.split_whitespace().next() == Some(master)
}

async fn listen_one(
    follow: Weak<Follow>,
    sentinel: redis::ConnectionInfo,
    master: String,
    cancel: CancellationToken,
) {
    let mut backoff = Resubscribe::new();
    let mut first = true;
    loop {
        let session = async {
            let client = redis::Client::open(sentinel.clone())?;
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(SWITCH_MASTER).await?;
            if !std::mem::take(&mut first)
                && let Some(f) = follow.upgrade()
            {
                // Back after a disconnection: a switch may have gone unheard.
                f.switched().await;
            }
            let mut messages = ps.on_message();
            while let Some(message) = messages.next().await {
                let payload: String = message.get_payload().unwrap_or_default();
                if !names(&payload, &master) {
                    continue;
                }
                let Some(f) = follow.upgrade() else {
                    return Ok(());
                };
                tracing::info!(master = %master, "the sentinels announced a new primary");
                f.switched().await;
            }
            Ok::<(), redis::RedisError>(())
        };
        let started = Instant::now();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            result = session => {
                if cancel.is_cancelled() || follow.strong_count() == 0 {
                    return;
                }
                if let Err(e) = result {
                    tracing::debug!(error = %e, "sentinel subscription failed; retrying");
                }
            }
        }
        if !backoff.wait(started, &cancel).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_announcement_names_its_master() {
        assert!(super::names(
            "lsq-main 127.0.0.1 6379 127.0.0.1 6380",
            "lsq-main"
        ));
        assert!(!super::names(
            "other 127.0.0.1 6379 127.0.0.1 6380",
            "lsq-main"
        ));
        assert!(!super::names("", "lsq-main"));
    }
}
