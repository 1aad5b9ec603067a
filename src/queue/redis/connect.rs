//! Connecting a [`RedisQueue`]: the queue name and settings checked, the scripts loaded, the
//! wake channel subscribed; and what the server's own settings mean for durability.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::wake::{self, Wake};
use super::{RedisQueue, scripts};
use crate::queue::{QueueConfig, QueueError};

/// A command that gets no answer in this long fails (and the connection is re-established).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the first connection (and its `PING`) may take in [`RedisQueue::connect`]
/// before it reports the store unavailable. Issue 15: a command run with Redis down must
/// fail within 3 s, and `ConnectionManager::new_with_config` alone retries its first
/// connection 6 times with backoff (about 8-10 s measured) before it gives up. The probe
/// is one try: the caller decides whether to wait and try again (the worker and `serve`
/// do, with a warning each time; the one-shot commands fail).
const FIRST_CONNECT_TIMEOUT: Duration = Duration::from_millis(2500);

/// One connection and one `PING`, within [`FIRST_CONNECT_TIMEOUT`], so that a store that
/// is down fails [`RedisQueue::connect`] at once instead of after the connection
/// manager's own retries. The connection is dropped; the manager opens its own.
async fn probe(client: &redis::Client) -> Result<(), QueueError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(FIRST_CONNECT_TIMEOUT))
        .set_response_timeout(Some(FIRST_CONNECT_TIMEOUT));
    let tried = tokio::time::timeout(FIRST_CONNECT_TIMEOUT, async {
        let mut con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut con).await
    })
    .await;
    match tried {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(QueueError::Unavailable(format!(
            "no answer within {} ms",
            FIRST_CONNECT_TIMEOUT.as_millis()
        ))),
    }
}

/// What the Redis server's own settings mean for the promise that no job is lost (see the
/// README's "Redis settings").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes` and `maxmemory-policy noeviction`.
    Safe,
    /// Settings under which jobs can be lost, each said in a sentence.
    Unsafe(Vec<String>),
    /// The settings could not be read (managed Redis services often refuse `CONFIG`).
    Unknown(String),
}

/// Reads `CONFIG GET` answers (`[name, value]` pairs, or a map) into what they mean.
fn durability_of(settings: &std::collections::HashMap<String, String>) -> Durability {
    let get = |name: &str| settings.get(name).map(|v| v.trim().to_ascii_lowercase());
    let (Some(aof), Some(policy)) = (get("appendonly"), get("maxmemory-policy")) else {
        return Durability::Unknown(
            "CONFIG GET did not name appendonly and maxmemory-policy".into(),
        );
    };
    let mut problems = Vec::new();
    if aof != "yes" {
        problems.push(format!(
            "appendonly is {aof:?}: a Redis restart loses every job written since the last \
             snapshot (set appendonly yes)"
        ));
    }
    if policy != "noeviction" {
        problems.push(format!(
            "maxmemory-policy is {policy:?}: when Redis is full it may evict job records and \
             queue keys (set maxmemory-policy noeviction)"
        ));
    }
    if problems.is_empty() {
        Durability::Safe
    } else {
        Durability::Unsafe(problems)
    }
}

/// Whether a queue name is usable: 1 to 64 characters of `[A-Za-z0-9._:-]` (no braces: the
/// name is the Redis Cluster hash tag).
pub fn valid_queue_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

impl RedisQueue {
    /// Connects, loads the scripts and subscribes to the wake channel. Must be called within
    /// a tokio runtime (it spawns the subscriber task).
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        if !valid_queue_name(&config.name) {
            return Err(QueueError::Config(format!(
                "queue name {:?} must be 1-64 characters of letters, digits, '.', '_', '-' or ':'",
                config.name
            )));
        }
        if config.window.is_zero() || config.lease.is_zero() || config.max_attempts == 0 {
            return Err(QueueError::Config(
                "window and lease must be positive and max_attempts at least 1".into(),
            ));
        }
        let client = redis::Client::open(url)?;
        probe(&client).await?;
        let cm_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        let mut con = ConnectionManager::new_with_config(client.clone(), cm_config).await?;
        for script in scripts::all() {
            script.load_async(&mut con).await?;
        }
        let prefix = format!("{{{}}}:", config.name);
        let channel = format!("{prefix}wake");
        let mut first = client.get_async_pubsub().await?;
        first.subscribe(&channel).await?;
        let wake = Arc::new(Wake::new());
        let cancel = CancellationToken::new();
        tokio::spawn(wake::listen(
            client,
            channel,
            first,
            wake.clone(),
            cancel.clone(),
        ));
        Ok(RedisQueue {
            config,
            prefix,
            con,
            wake,
            _listener: cancel.drop_guard(),
        })
    }

    /// Reads the server's persistence and eviction settings (one `CONFIG GET` each, so
    /// Redis 6 answers too). Never fails: a server that refuses `CONFIG` gives
    /// [`Durability::Unknown`].
    pub async fn durability(&self) -> Durability {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("appendonly");
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        let answers: Result<Vec<std::collections::HashMap<String, String>>, _> =
            pipe.query_async(&mut self.con.clone()).await;
        match answers {
            Ok(maps) => durability_of(&maps.into_iter().flatten().collect()),
            Err(e) => Durability::Unknown(format!("CONFIG GET refused: {e}")),
        }
    }
}
