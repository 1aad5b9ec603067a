//! Connecting a [`RedisQueue`]: the queue name and settings checked, the scripts loaded, the
//! wake channel subscribed; and what the server's own settings mean for durability.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio_util::sync::CancellationToken;

use super::link::{Acked, Follow, Lane, Link, ReplicaWatch, Replication, ReplicationMode, Source};
use super::target::{SentinelTarget, Target};
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

/// [`probe`] of each node in turn until one answers: a cluster is up for this purpose when
/// any node named answers (the cluster client learns the rest from it).
async fn probe_any(nodes: &[redis::Client]) -> Result<(), QueueError> {
    let mut failed = Vec::new();
    for node in nodes {
        match probe(node).await {
            Ok(()) => return Ok(()),
            // The reason alone: the error this returns says "unavailable" once.
            Err(QueueError::Unavailable(why)) => failed.push((node, why)),
            Err(e) => failed.push((node, e.to_string())),
        }
    }
    let failed: Vec<String> = failed
        .iter()
        .map(|(node, why)| format!("{}: {why}", node.get_connection_info().addr()))
        .collect();
    Err(QueueError::Unavailable(format!(
        "no cluster node answered ({})",
        failed.join("; ")
    )))
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

/// [`RedisQueue::durability`] of a cluster: each setting read from every master at once
/// (redis-rs answers a command routed to several nodes with a map of node -> answer), then
/// each node's settings judged on their own.
async fn every_masters_durability(mut con: redis::cluster_async::ClusterConnection) -> Durability {
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
    use std::collections::{BTreeMap, HashMap};
    let every_master = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
    let mut nodes: BTreeMap<String, Result<HashMap<String, String>, String>> = BTreeMap::new();
    for setting in ["appendonly", "maxmemory-policy"] {
        let mut get = redis::cmd("CONFIG");
        get.arg("GET").arg(setting);
        let answers = match con.route_command(get, every_master.clone()).await {
            Ok(redis::Value::Map(answers)) => answers,
            Ok(_) => return Durability::Unknown("CONFIG GET: an unexpected answer".into()),
            Err(e) => return Durability::Unknown(format!("CONFIG GET refused: {e}")),
        };
        for (node, answer) in answers {
            let node: String = redis::from_redis_value(node).unwrap_or_else(|_| "?".into());
            let read: Result<HashMap<String, String>, String> = match answer {
                redis::Value::ServerError(e) => Err(format!("CONFIG GET refused: {e}")),
                other => redis::from_redis_value(other).map_err(|e| format!("CONFIG GET: {e}")),
            };
            let entry = nodes.entry(node).or_insert_with(|| Ok(HashMap::new()));
            match (entry, read) {
                (Ok(settings), Ok(more)) => settings.extend(more),
                (entry @ Ok(_), Err(why)) => *entry = Err(why),
                (Err(_), _) => {}
            }
        }
    }
    let (mut problems, mut unknown) = (Vec::new(), Vec::new());
    for (node, settings) in &nodes {
        match settings.as_ref().map(durability_of).map_err(String::clone) {
            Ok(Durability::Safe) => {}
            Ok(Durability::Unsafe(found)) => {
                problems.extend(found.into_iter().map(|p| format!("node {node}: {p}")));
            }
            Ok(Durability::Unknown(why)) | Err(why) => {
                unknown.push(format!("node {node}: {why}"));
            }
        }
    }
    if !problems.is_empty() {
        Durability::Unsafe(problems)
    } else if nodes.is_empty() {
        Durability::Unknown("no master answered CONFIG GET".into())
    } else if !unknown.is_empty() {
        Durability::Unknown(unknown.join("; "))
    } else {
        Durability::Safe
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

/// How the Redis queue connects, beyond its URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Replicas that must confirm a push, a dispatch, a fence or a completion (`WAIT`)
    /// before it is acknowledged (`--min-replicas`, `LSQ_MIN_REPLICAS`). `None`: 1 with
    /// Sentinel, 0 (no `WAIT`) on one server. 0 turns it off.
    pub min_replicas: Option<u32>,
    /// How long a `WAIT` waits for them (`--replica-timeout`).
    pub replica_timeout: Duration,
    /// With fewer replicas connected than `min_replicas`: go on degraded (the default), or
    /// wait for them (`--replication strict`).
    pub replication: ReplicationMode,
    /// With Sentinel: follow the sentinels' `+switch-master` announcements (the default), or
    /// find the new primary only when a command fails (`--sentinel-events false`, for
    /// comparing).
    pub sentinel_events: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            min_replicas: None,
            replica_timeout: Duration::from_secs(1),
            replication: ReplicationMode::Degrade,
            sentinel_events: true,
        }
    }
}

/// An error from the first question to the sentinels, said in terms of the URL.
fn sentinel_error(e: &redis::RedisError, target: &SentinelTarget) -> QueueError {
    let list = target.sentinel_list();
    let master = &target.master;
    QueueError::Unavailable(match e.kind() {
        redis::ErrorKind::MasterNameNotFoundBySentinel => format!(
            "no sentinel of {list} names a primary for master {master:?} (is the master name \
             right? is its primary up?)"
        ),
        _ if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() => {
            format!("no sentinel of {list} answered about master {master:?}: {e}")
        }
        _ => format!("asking the sentinels of {list} for master {master:?}: {e}"),
    })
}

/// Shards a cluster URL gets when neither `--shards` nor the queue says (issue 17).
pub const DEFAULT_CLUSTER_SHARDS: u32 = 16;
/// The most shards a queue may have: each is a few keys per tenant and one `ready` set, and
/// a worker visits them in turn.
pub const MAX_SHARDS: u32 = 1024;

/// Redis Cluster's hash slots.
const SLOTS: u32 = 16_384;

/// The hash slot of a queue's keys, from its prefix `{tag}:` (the tag is what Redis Cluster
/// hashes).
pub(super) fn slot_of_prefix(prefix: &str) -> u16 {
    let tag = prefix
        .strip_prefix('{')
        .and_then(|p| p.split_once('}'))
        .map_or(prefix, |(tag, _)| tag);
    u16::try_from(slot_of(tag)).unwrap_or(0)
}

/// The hash slot of a hash tag: CRC16 (XMODEM, as Redis Cluster computes it) modulo
/// [`SLOTS`].
fn slot_of(tag: &str) -> u32 {
    let mut crc: u16 = 0;
    for byte in tag.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    u32::from(crc) % SLOTS
}

/// The prefix of shard `s` of `count` of queue `name`: `{name}:` for shard 0 (a queue of
/// one shard keeps the keys it always had); for shard s the first of `{name~s}`,
/// `{name~s.1}`, `{name~s.2}`, ... whose hash slot is in the s-th of `count` equal ranges of
/// slots. So the shards' slots are spread evenly whatever the name, and a cluster whose
/// nodes hold equal ranges of slots gets its share of shards on every node (16 shards on 3
/// nodes: at least 4 on each), where hashing `{name~s}` alone could leave a node with one or
/// two. The same name, shard and count always give the same prefix. `~` is not allowed in a
/// queue name, so no other queue's tag can look like a shard's.
pub fn shard_prefix(name: &str, s: u32, count: u32) -> String {
    if s == 0 {
        return format!("{{{name}}}:");
    }
    let count = count.max(1);
    // A range holds SLOTS / count slots (at least 16): about `count` tries on average.
    for k in 0..1_000_000u32 {
        let tag = if k == 0 {
            format!("{name}~{s}")
        } else {
            format!("{name}~{s}.{k}")
        };
        if slot_of(&tag) * count / SLOTS == s {
            return format!("{{{tag}}}:");
        }
    }
    // Not reached for any count up to MAX_SHARDS; still a valid, stable tag.
    format!("{{{name}~{s}}}:")
}

/// A connection made and checked, before the queue's shards are built on it.
struct Parts {
    /// The main connection.
    con: Link,
    /// The acknowledged-writes lane.
    acked: Link,
    /// Where the wake subscription connects.
    source: Source,
    /// What acknowledged writes wait for.
    replication: Option<Replication>,
    /// What the primary reports of its replicas, shared by every shard.
    watch: Arc<ReplicaWatch>,
    /// Follow `+switch-master` (Sentinel only).
    sentinel_events: bool,
    /// The URL named a cluster.
    cluster: bool,
}

impl Parts {
    /// Checks the settings, connects and loads the scripts.
    async fn connect(
        url: &str,
        config: &QueueConfig,
        options: RedisOptions,
    ) -> Result<Parts, QueueError> {
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
        let target = Target::parse(url).map_err(|e| QueueError::Config(e.to_string()))?;
        let sentinel = matches!(target, Target::Sentinel(_));
        let cluster = matches!(target, Target::Cluster(_));
        let replicas = options.min_replicas.unwrap_or(u32::from(sentinel));
        let replication = (replicas > 0).then_some(Replication {
            replicas,
            timeout: options.replica_timeout.max(Duration::from_millis(1)),
            mode: options.replication,
        });
        let cm_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT));
        let (con, acked, source) = match target {
            Target::Server(client) => {
                probe(&client).await?;
                let mut con =
                    ConnectionManager::new_with_config(client.clone(), cm_config.clone()).await?;
                for script in scripts::all() {
                    script.load_async(&mut con).await?;
                }
                // A WAIT blocks its connection until it returns: the acknowledged writes get
                // their own, so that heartbeats never queue behind one.
                let acked = match replication {
                    Some(_) => {
                        ConnectionManager::new_with_config(client.clone(), cm_config).await?
                    }
                    None => con.clone(),
                };
                (
                    Link::Server(con),
                    Link::Server(acked),
                    Source::Server(Box::new(client)),
                )
            }
            Target::Cluster(target) => {
                if replication.is_some() {
                    return Err(QueueError::Config(
                        "--min-replicas is not supported with redis+cluster:// yet: a \
                         cluster's WAIT would need to follow each shard's primary"
                            .into(),
                    ));
                }
                let nodes: Vec<redis::Client> = target
                    .nodes
                    .iter()
                    .map(|n| redis::Client::open(n.clone()))
                    .collect::<Result<_, _>>()?;
                probe_any(&nodes).await?;
                let mut builder = redis::cluster::ClusterClientBuilder::new(target.nodes.clone())
                    .connection_timeout(RESPONSE_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT);
                if target.tls {
                    builder = builder.tls(redis::TlsMode::Secure);
                }
                let mut con = builder.build()?.get_async_connection().await?;
                for script in scripts::all() {
                    script.load_async(&mut con).await?;
                }
                let link = Link::Cluster(con);
                (
                    link.clone(),
                    link,
                    Source::Cluster(nodes.into(), Default::default()),
                )
            }
            Target::Sentinel(target) => {
                let follow = Follow::connect(target.clone(), cm_config)
                    .await
                    .map_err(|e| sentinel_error(&e, &target))?;
                (
                    Link::Sentinel(follow.clone(), Lane::Main),
                    Link::Sentinel(follow.clone(), Lane::Acked),
                    Source::Sentinel(follow),
                )
            }
        };
        Ok(Parts {
            con,
            acked,
            source,
            replication,
            watch: Arc::default(),
            sentinel_events: options.sentinel_events,
            cluster,
        })
    }

    /// The queue's shard count (see [`RedisQueue::connect_shards`]), written once.
    async fn fix_shards(&self, name: &str, asked: Option<u32>) -> Result<u32, QueueError> {
        let count_key = format!("{}shards", shard_prefix(name, 0, 1));
        let mut con = self.con.clone();
        let stored: Option<String> = redis::cmd("GET")
            .arg(&count_key)
            .query_async(&mut con)
            .await?;
        let count = match stored {
            Some(stored) => stored,
            None => {
                let legacy: bool = redis::cmd("EXISTS")
                    .arg(format!("{}tenants", shard_prefix(name, 0, 1)))
                    .query_async(&mut con)
                    .await?;
                let count = match (asked, legacy) {
                    (Some(n), true) if n != 1 => {
                        return Err(QueueError::Config(format!(
                            "--shards {n} does not match queue {name:?}: it was written before \
                             shards were counted and has 1 shard (nothing was written)"
                        )));
                    }
                    (Some(n), _) => n,
                    (None, true) => 1,
                    (None, false) if self.cluster => DEFAULT_CLUSTER_SHARDS,
                    (None, false) => 1,
                };
                // Another process may be fixing it at the same moment: the first write wins,
                // and every process reads back the same count.
                let _: Option<String> = redis::cmd("SET")
                    .arg(&count_key)
                    .arg(count)
                    .arg("NX")
                    .query_async(&mut con)
                    .await?;
                let stored: Option<String> = redis::cmd("GET")
                    .arg(&count_key)
                    .query_async(&mut con)
                    .await?;
                stored.unwrap_or_else(|| count.to_string())
            }
        };
        let count: u32 = count
            .parse()
            .ok()
            .filter(|n| (1..=MAX_SHARDS).contains(n))
            .ok_or_else(|| QueueError::Corrupt {
                key: count_key.clone(),
                reason: format!("{count:?} is not a shard count"),
            })?;
        match asked {
            Some(n) if n != count => Err(QueueError::Config(format!(
                "--shards {n} does not match queue {name:?}, which has {count} shards (the count \
                 is fixed when the queue is first written; nothing was written)"
            ))),
            _ => Ok(count),
        }
    }

    /// The `count` shards of the queue, sharing this connection and one wake subscription.
    async fn shards(self, config: QueueConfig, count: u32) -> Result<Vec<RedisQueue>, QueueError> {
        let prefixes: Vec<String> = (0..count)
            .map(|s| shard_prefix(&config.name, s, count))
            .collect();
        let channels: wake::Channels = prefixes
            .iter()
            .map(|p| (format!("{p}wake"), Arc::new(Wake::new())))
            .collect();
        let mut first = self.source.client().await.get_async_pubsub().await?;
        for (channel, _) in channels.iter() {
            first.subscribe(channel).await?;
        }
        let cancel = CancellationToken::new();
        if let Source::Sentinel(follow) = &self.source
            && self.sentinel_events
        {
            super::switch::listen(follow, &cancel);
        }
        tokio::spawn(wake::listen(
            self.source,
            channels.clone(),
            first,
            cancel.clone(),
        ));
        let guard = Arc::new(cancel.drop_guard());
        Ok(prefixes
            .into_iter()
            .zip(channels.iter())
            .map(|(prefix, (_, wake))| RedisQueue {
                config: config.clone(),
                prefix,
                con: self.con.clone(),
                acked: Acked::new(self.acked.clone(), self.replication, self.watch.clone()),
                wake: wake.clone(),
                _listener: guard.clone(),
            })
            .collect())
    }
}

impl RedisQueue {
    /// Connects with the default [`RedisOptions`] (see [`RedisQueue::connect_with`]).
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        Self::connect_with(url, config, RedisOptions::default()).await
    }

    /// Connects (for a `redis+sentinel://` URL: asks the sentinels for the primary), loads
    /// the scripts and subscribes to the wake channel. Must be called within a tokio
    /// runtime (it spawns the subscriber task). A URL that does not read is
    /// [`QueueError::Config`]; nothing is written before the connection is made. This is
    /// one queue under one hash tag, `{name}`: shard 0 of a sharded queue
    /// ([`RedisQueue::connect_shards`]), and the whole of a queue of one shard.
    pub async fn connect_with(
        url: &str,
        config: QueueConfig,
        options: RedisOptions,
    ) -> Result<Self, QueueError> {
        let parts = Parts::connect(url, &config, options).await?;
        let mut shards = parts.shards(config, 1).await?;
        Ok(shards.remove(0))
    }

    /// Connects the shards of a queue (issue 17; `docs/decisions.md`, "Sharding the
    /// queue"): one connection and one wake subscription for all, each shard a
    /// [`RedisQueue`] under its own hash tag ([`shard_prefix`]: `{name}` for shard 0, so a
    /// queue of one shard keeps its keys; `{name~s}` or `{name~s.k}` for shard s). The count is the queue's own once written
    /// (`{name}:shards`, set once with `SET NX`): `asked` (`--shards`) must agree with it,
    /// else [`QueueError::Config`] and nothing is written. A queue that has no count yet
    /// takes `asked`, else 1 when it already holds tenants (a queue written before sharding:
    /// its keys are shard 0's), else [`DEFAULT_CLUSTER_SHARDS`] on a cluster URL and 1
    /// otherwise.
    pub async fn connect_shards(
        url: &str,
        config: QueueConfig,
        options: RedisOptions,
        asked: Option<u32>,
    ) -> Result<Vec<Self>, QueueError> {
        if let Some(n) = asked
            && !(1..=MAX_SHARDS).contains(&n)
        {
            return Err(QueueError::Config(format!(
                "--shards {n}: a queue has 1 to {MAX_SHARDS} shards"
            )));
        }
        let parts = Parts::connect(url, &config, options).await?;
        let count = parts.fix_shards(&config.name, asked).await?;
        parts.shards(config, count).await
    }

    /// What acknowledged writes wait for (`None`: nothing).
    pub fn replication(&self) -> Option<Replication> {
        self.acked.replication()
    }

    /// Reads the server's persistence and eviction settings (one `CONFIG GET` each, so
    /// Redis 6 answers too). Never fails: a server that refuses `CONFIG` gives
    /// [`Durability::Unknown`].
    /// On a cluster, every master is asked (a job is lost when the node holding it loses
    /// it), and each problem names its node.
    pub async fn durability(&self) -> Durability {
        if let Link::Cluster(con) = &self.con {
            return every_masters_durability(con.clone()).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // CLUSTER KEYSLOT answers, from redis-cli against a cluster node.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("lsq"), 7606);
        assert_eq!(slot_of("q~1.5"), 9842);
        assert_eq!(slot_of(""), 0);
    }

    #[test]
    fn each_shard_has_its_own_range_of_slots() {
        for count in [2, 3, 16, 1024] {
            for s in 1..count {
                let prefix = shard_prefix("q", s, count);
                let tag = &prefix[1..prefix.len() - 2];
                assert_eq!(slot_of(tag) * count / SLOTS, s, "{prefix}");
                assert!(valid_queue_name(&tag.replace('~', "-")), "{prefix}");
            }
        }
        assert_eq!(shard_prefix("q", 0, 16), "{q}:");
    }
}
