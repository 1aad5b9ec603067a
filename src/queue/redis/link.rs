//! The queue's connections to its Redis primary, whichever server that is now.
//!
//! A [`Link`] is what every command goes through. For one server it is a redis-rs
//! `ConnectionManager` (it reconnects to the same address, which is right for one server).
//! For Sentinel it is a [`Follow`]: a `ConnectionManager` per lane to the primary the
//! sentinels named, replaced when they name another. redis-rs's `ConnectionManager` cannot
//! do that itself: it is built from a `Client` with one fixed address and re-dials that
//! address forever (redis 1.8 `aio/connection_manager.rs`, `reconnect`), so after a failover
//! it would knock on the dead or demoted server; redis-rs's `sentinel` module finds the
//! primary well (it asks the sentinels, skips a master they flag down, and checks `ROLE` on
//! the server before naming it), and is kept for that (`docs/decisions.md`, "Redis
//! Sentinel").
//!
//! When a command fails in a way a failover explains (the connection refused, dropped or
//! timed out; `READONLY` from a primary demoted to replica; `MASTERDOWN`), the failing call
//! asks the sentinels again before it returns its error, at most once per
//! [`RESOLVE_EVERY`] for all callers together. The error still goes back: the command may or
//! may not have run, and only the caller knows whether it is safe to repeat (every writer in
//! this crate retries through [`crate::retry`], whose writes are idempotent or fenced).
//!
//! [`Acked`] is the lane whose writes are acknowledged only once `WAIT` says they reached
//! enough replicas: each command or pipeline it sends is followed, in the same pipeline on
//! the same connection, by `WAIT N timeout`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::Sentinel;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::time::Instant;

use super::scripts;
use super::target::SentinelTarget;

/// How long asking the sentinels (and checking the server they name) may take.
pub(super) const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// At most one round of asking the sentinels per this long, whatever the number of callers
/// that fail meanwhile: a failover takes seconds, and the callers back off anyway.
pub(super) const RESOLVE_EVERY: Duration = Duration::from_millis(200);

/// The connections a queue uses: the main one, and the one whose writes wait for replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Lane {
    /// Every command but the acknowledged writes.
    Main = 0,
    /// Pushes, dispatches, fences and completions when they wait for replicas (a `WAIT`
    /// blocks its connection until it returns, so it gets its own).
    Acked = 1,
}

/// A connection to the primary (see the module header). Cheap to clone.
#[derive(Clone)]
pub(super) enum Link {
    /// One server.
    Server(ConnectionManager),
    /// The primary the sentinels name, on this lane.
    Sentinel(Arc<Follow>, Lane),
    /// A Redis Cluster: redis-rs's cluster connection routes each command (a script by its
    /// first key: every key of a queue shares its hash tag) and follows `MOVED`.
    Cluster(redis::cluster_async::ClusterConnection),
}

/// The primary of a Sentinel deployment, and the connections to it.
pub(super) struct Follow {
    /// Whom to ask, for which master.
    target: SentinelTarget,
    /// Settings of every connection manager made.
    config: ConnectionManagerConfig,
    /// redis-rs's sentinel client (it caches a connection per sentinel). Held while asking.
    sentinel: tokio::sync::Mutex<Sentinel>,
    /// The primary in use. A std mutex: held only to read or swap, never across an await.
    current: Mutex<Primary>,
}

/// The primary in use and its connections.
#[derive(Clone)]
struct Primary {
    /// `host:port`, for comparing and for logs (no credentials).
    addr: String,
    /// For new connections (the wake subscription).
    client: redis::Client,
    /// One connection manager per [`Lane`].
    lanes: [ConnectionManager; 2],
    /// Bumped at every switch: a caller that failed on generation `g` does not ask again
    /// when another caller has already switched.
    generation: u64,
    /// When the sentinels were last asked.
    asked: Instant,
}

/// Whether a failed command may mean the primary is elsewhere now.
pub(super) fn may_be_failover(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.code().is_some_and(failover_code)
        || e.to_string().contains("READONLY ")
}

/// The error codes of a server that is no longer the primary, or whose primary is gone.
fn failover_code(code: &str) -> bool {
    matches!(code, "READONLY" | "MASTERDOWN")
}

/// Whether a server's answers hold a failover error. A command or pipeline that reached the
/// server comes back `Ok` from the connection with the server's error as a value (redis-rs
/// turns it into an `Err` later, in `query_async`), and a transaction's inside EXEC's
/// array, so [`may_be_failover`] alone never sees `READONLY`: a worker whose connections
/// came back up on the old primary, restarted as a replica, got `READONLY` on every write
/// and never asked the sentinels again (a CI run of the failover test, stop 24).
fn holds_failover_error(values: &[Value]) -> bool {
    let failover = |v: &Value| matches!(v, Value::ServerError(e) if failover_code(e.code()));
    values.iter().any(|v| match v {
        Value::Array(items) => items.iter().any(failover),
        v => failover(v),
    })
}

impl Follow {
    /// Asks the sentinels for the primary and connects to it, loading the scripts. Fails
    /// (within [`RESOLVE_TIMEOUT`] and the connection timeout) when no sentinel answers or
    /// none knows the master.
    pub(super) async fn connect(
        target: SentinelTarget,
        config: ConnectionManagerConfig,
    ) -> Result<Arc<Follow>, RedisError> {
        // One quick reconnect per request, not redis-rs's default six over about 6 s: a
        // request to a primary that is gone should fail soon, so that its caller asks the
        // sentinels and backs off with its own (jittered) schedule (in the failover test a
        // completion retried against the dead primary waited 4.7 s in those reconnects).
        let config = config
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let mut sentinel = Sentinel::build(target.sentinels.clone())?;
        let client = resolve(&mut sentinel, &target).await?;
        let primary = open(client, &config, 0).await?;
        tracing::info!(
            primary = %primary.addr,
            master = %target.master,
            "found the Redis primary through the sentinels"
        );
        Ok(Arc::new(Follow {
            target,
            config,
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: Mutex::new(primary),
        }))
    }

    fn primary(&self) -> Primary {
        // A poisoned lock only means a panic elsewhere while swapping a clone in: the value
        // is whole either way.
        match self.current.lock() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The connection of `lane` and its generation.
    fn lane(&self, lane: Lane) -> (ConnectionManager, u64) {
        let p = self.primary();
        (p.lanes[lane as usize].clone(), p.generation)
    }

    /// A client for the current primary, after asking the sentinels again if the last time
    /// is older than [`RESOLVE_EVERY`] (for the wake subscription, which reconnects only
    /// after a failure).
    pub(super) async fn client(&self) -> redis::Client {
        let p = self.primary();
        if p.asked.elapsed() >= RESOLVE_EVERY {
            self.refresh(p.generation).await;
        }
        self.primary().client
    }

    /// Asks the sentinels where the primary is, after a failure on generation `seen`, and
    /// switches to it when it moved. Never fails: when the sentinels cannot say (the
    /// failover is still under way), the next failure asks again.
    pub(super) async fn refresh(&self, seen: u64) {
        self.refresh_if(seen, false).await;
    }

    /// A sentinel announced `+switch-master` for this master: asks at once (whatever the
    /// last question's age), so the queue follows the new primary before any command fails.
    pub(super) async fn switched(&self) {
        let seen = self.primary().generation;
        self.refresh_if(seen, true).await;
    }

    /// The sentinels to listen to, and the master name their announcements name.
    pub(super) fn announcers(&self) -> (Vec<redis::ConnectionInfo>, String) {
        (self.target.sentinels.clone(), self.target.master.clone())
    }

    async fn refresh_if(&self, seen: u64, announced: bool) {
        let mut sentinel = self.sentinel.lock().await;
        let p = self.primary();
        if p.generation != seen || (!announced && p.asked.elapsed() < RESOLVE_EVERY) {
            return;
        }
        self.touch();
        let client = match resolve(&mut sentinel, &self.target).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(master = %self.target.master, "no primary from the sentinels yet: {e}");
                return;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        if addr == p.addr {
            return;
        }
        match open(client, &self.config, p.generation + 1).await {
            Ok(next) => {
                tracing::warn!(
                    primary = %next.addr,
                    was = %p.addr,
                    master = %self.target.master,
                    "the Redis primary moved (failover); following it"
                );
                if let Ok(mut current) = self.current.lock() {
                    *current = next;
                }
            }
            Err(e) => {
                tracing::warn!(primary = %addr, "cannot connect to the new primary yet: {e}")
            }
        }
    }

    fn touch(&self) {
        if let Ok(mut current) = self.current.lock() {
            current.asked = Instant::now();
        }
    }
}

/// The primary's client, from the sentinels, within [`RESOLVE_TIMEOUT`].
async fn resolve(
    sentinel: &mut Sentinel,
    target: &SentinelTarget,
) -> Result<redis::Client, RedisError> {
    let asked = sentinel.async_master_for(&target.master, Some(&target.node));
    match tokio::time::timeout(RESOLVE_TIMEOUT, asked).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the sentinels ({}) gave no primary within {} s",
                target.sentinel_list(),
                RESOLVE_TIMEOUT.as_secs()
            ),
        ))),
    }
}

/// Connections on every lane to `client`'s server, with the scripts loaded (a replica just
/// promoted may never have seen them: `SCRIPT LOAD` is not replicated).
async fn open(
    client: redis::Client,
    config: &ConnectionManagerConfig,
    generation: u64,
) -> Result<Primary, RedisError> {
    let addr = client.get_connection_info().addr().to_string();
    let mut main = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
    let acked = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
    for script in scripts::all() {
        script.load_async(&mut main).await?;
    }
    Ok(Primary {
        addr,
        client,
        lanes: [main, acked],
        generation,
        asked: Instant::now(),
    })
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Server(con) => con.req_packed_command(cmd),
            Link::Cluster(con) => con.req_packed_command(cmd),
            Link::Sentinel(follow, lane) => {
                let (follow, lane) = (follow.clone(), *lane);
                Box::pin(async move {
                    let (mut con, generation) = follow.lane(lane);
                    let r = con.req_packed_command(cmd).await;
                    let failover = match &r {
                        Ok(value) => holds_failover_error(std::slice::from_ref(value)),
                        Err(e) => may_be_failover(e),
                    };
                    if failover {
                        follow.refresh(generation).await;
                    }
                    r
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Server(con) => con.req_packed_commands(cmd, offset, count),
            Link::Cluster(con) => con.req_packed_commands(cmd, offset, count),
            Link::Sentinel(follow, lane) => {
                let (follow, lane) = (follow.clone(), *lane);
                Box::pin(async move {
                    let (mut con, generation) = follow.lane(lane);
                    let r = con.req_packed_commands(cmd, offset, count).await;
                    let failover = match &r {
                        Ok(values) => holds_failover_error(values),
                        Err(e) => may_be_failover(e),
                    };
                    if failover {
                        follow.refresh(generation).await;
                    }
                    r
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Server(con) => con.get_db(),
            Link::Cluster(con) => con.get_db(),
            Link::Sentinel(follow, lane) => follow.lane(*lane).0.get_db(),
        }
    }
}

/// How many replicas must confirm an acknowledged write, and how long to wait for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    /// `WAIT`'s N: replicas that must have the write.
    pub replicas: u32,
    /// `WAIT`'s timeout.
    pub timeout: Duration,
    /// What to do when the primary has fewer replicas connected than `replicas`.
    pub mode: ReplicationMode,
}

pub use crate::queue::ReplicationMode;

/// How often the replicas the primary reports connected are read again while nothing
/// fails: once a second, one `INFO replication` per process (a shortfall reads it at once).
pub(super) const REPLICAS_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often a degraded queue says so again in the log.
pub(super) const DEGRADED_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the primary last reported of its replicas, shared by every handle on the
/// acknowledged lane of one connection (all shards of a queue).
#[derive(Debug, Default)]
pub(super) struct ReplicaWatch {
    /// A std mutex: held only to read or update, never across an await.
    state: Mutex<WatchState>,
}

#[derive(Debug, Default)]
struct WatchState {
    /// Replicas connected, as last read; `None` before the first read.
    connected: Option<u32>,
    /// When it was read.
    checked: Option<Instant>,
    /// Since when writes were acknowledged by fewer replicas than asked (this process's
    /// view; the queue's own record is `{name}:degraded`, see `RedisQueue::replicas`).
    degraded_since: Option<std::time::SystemTime>,
    /// When this process last said so in the log.
    logged: Option<Instant>,
}

impl ReplicaWatch {
    /// The connected count when read within [`REPLICAS_CHECK_EVERY`].
    fn fresh(&self) -> Option<u32> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match (st.connected, st.checked) {
            (Some(n), Some(at)) if at.elapsed() < REPLICAS_CHECK_EVERY => Some(n),
            _ => None,
        }
    }

    /// Forgets the count (a `WAIT` came back short: read it again before the next write).
    fn stale(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.checked = None;
    }

    /// Records a read of the connected count against `wanted`, and says in the log when the
    /// queue becomes degraded (then about once a minute) and when it is whole again.
    pub(super) fn note(&self, connected: u32, wanted: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.connected = Some(connected);
        st.checked = Some(Instant::now());
        if connected < wanted {
            let since = *st
                .degraded_since
                .get_or_insert_with(std::time::SystemTime::now);
            if st
                .logged
                .is_none_or(|at| at.elapsed() >= DEGRADED_LOG_EVERY)
            {
                st.logged = Some(Instant::now());
                tracing::warn!(
                    replicas_connected = connected,
                    min_replicas = wanted,
                    "Redis replication degraded: {connected} of {wanted} replica(s) connected; {}",
                    at_risk(since)
                );
            }
        } else if st.degraded_since.take().is_some() {
            st.logged = None;
            tracing::info!(
                replicas_connected = connected,
                min_replicas = wanted,
                "Redis replication whole again: writes wait for {wanted} replica(s)"
            );
        }
    }
}

use crate::queue::at_risk;

/// `connected_slaves` of an `INFO replication` answer.
pub(super) fn connected_replicas(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
}

/// The acknowledged-writes lane: every command or pipeline sent through it is followed by
/// `WAIT` in the same pipeline, on the same connection (a `WAIT` counts the writes of its
/// own connection only, so a separate one could confirm nothing). Make a fresh clone per
/// call ([`super::RedisQueue::acked`]) and read [`Acked::shortfall`] after it.
#[derive(Clone)]
pub(super) struct Acked {
    /// The connection.
    link: Link,
    /// What to wait for; `None`: nothing (plain Redis without `--min-replicas`).
    wait: Option<Replication>,
    /// Replicas the last `WAIT` counted, when fewer than wanted.
    short: Option<i64>,
    /// Replicas the last `WAIT` waited for: the asked count, or fewer connected (degraded).
    waited: u32,
    /// What the primary reports of its replicas (shared).
    watch: Arc<ReplicaWatch>,
}

impl Acked {
    pub(super) fn new(link: Link, wait: Option<Replication>, watch: Arc<ReplicaWatch>) -> Self {
        Acked {
            link,
            wait,
            short: None,
            waited: wait.map_or(0, |w| w.replicas),
            watch,
        }
    }

    /// Replicas the last call waited for.
    pub(super) fn waited(&self) -> u32 {
        self.waited
    }

    /// Replicas the primary reports connected now (`INFO replication` on this lane's
    /// connection), recorded in the watch.
    pub(super) async fn read_connected(&mut self, wanted: u32) -> Result<u32, RedisError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let info: String =
            redis::FromRedisValue::from_redis_value(self.link.req_packed_command(&cmd).await?)?;
        let n = connected_replicas(&info).unwrap_or(0);
        self.watch.note(n, wanted);
        Ok(n)
    }

    /// How many replicas this write waits for: in [`ReplicationMode::Degrade`], never more
    /// than the primary reports connected (read at most once per
    /// [`REPLICAS_CHECK_EVERY`]); in strict mode, all asked.
    async fn replicas_now(&mut self, wait: &Replication) -> u32 {
        if wait.mode == ReplicationMode::Strict {
            return wait.replicas;
        }
        let connected = match self.watch.fresh() {
            Some(n) => n,
            // A primary that cannot say is waited for in full: the write fails or times out
            // like any other on it.
            None => self
                .read_connected(wait.replicas)
                .await
                .unwrap_or(wait.replicas),
        };
        wait.replicas.min(connected)
    }

    /// What it waits for.
    pub(super) fn replication(&self) -> Option<Replication> {
        self.wait
    }

    /// After a call: the replicas that confirmed it when fewer than wanted.
    pub(super) fn shortfall(&self) -> Option<i64> {
        self.short
    }

    fn wait_cmd(wait: &Replication) -> Cmd {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wait.replicas).arg(
            u64::try_from(wait.timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        cmd
    }

    fn record(&mut self, wanted: u32, answer: Option<&Value>) {
        let got = match answer {
            Some(Value::Int(n)) => *n,
            _ => -1,
        };
        self.short = (got < i64::from(wanted)).then_some(got.max(0));
        if self.short.is_some() {
            // A replica left, or lags: read the count again before the next write.
            self.watch.stale();
        }
    }
}

impl ConnectionLike for Acked {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Some(wait) = self.wait else {
            return self.link.req_packed_command(cmd);
        };
        Box::pin(async move {
            let n = self.replicas_now(&wait).await;
            self.waited = n;
            self.short = None;
            if n == 0 {
                // Degraded to no replica: the primary's own acknowledgement is all there is.
                return self.link.req_packed_command(cmd).await;
            }
            let wait = Replication {
                replicas: n,
                ..wait
            };
            let mut pipe = redis::pipe();
            pipe.add_command(cmd.clone())
                .add_command(Self::wait_cmd(&wait));
            let mut values = self.link.req_packed_commands(&pipe, 0, 2).await?;
            let answer = values.pop();
            self.record(n, answer.as_ref());
            let value = values
                .pop()
                .ok_or_else(|| RedisError::from((redis::ErrorKind::Parse, "no reply")))?;
            value.extract_error()
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Some(wait) = self.wait else {
            return self.link.req_packed_commands(cmd, offset, count);
        };
        Box::pin(async move {
            if cmd.is_transaction() {
                // WAIT inside MULTI does not block: it would confirm nothing. Callers build
                // their MULTI/EXEC by hand on this lane (see `push_batch`).
                return Err(RedisError::from((
                    redis::ErrorKind::Client,
                    "an atomic pipeline cannot be acknowledged with WAIT",
                )));
            }
            let n = self.replicas_now(&wait).await;
            self.waited = n;
            self.short = None;
            if n == 0 {
                return self.link.req_packed_commands(cmd, offset, count).await;
            }
            let wait = Replication {
                replicas: n,
                ..wait
            };
            let mut pipe = cmd.clone();
            pipe.add_command(Self::wait_cmd(&wait));
            let mut values = self
                .link
                .req_packed_commands(&pipe, offset, count + 1)
                .await?;
            let answer = if values.len() > count {
                values.pop()
            } else {
                None
            };
            self.record(n, answer.as_ref());
            Ok(values)
        })
    }

    fn get_db(&self) -> i64 {
        self.link.get_db()
    }
}

/// Where new connections go (the wake subscription reconnects through this).
#[derive(Clone)]
pub(super) enum Source {
    /// One server (boxed: a client is large, and the enum is moved into a task).
    Server(Box<redis::Client>),
    /// The primary the sentinels name now.
    Sentinel(Arc<Follow>),
    /// A cluster's nodes, and which one the next subscription tries. A `PUBLISH` on any
    /// node reaches the subscribers of every node (the cluster bus carries it), so the wake
    /// subscription may sit on any node, and moves to the next one when its node fails.
    Cluster(Arc<[redis::Client]>, Arc<std::sync::atomic::AtomicUsize>),
}

impl Source {
    /// A client for the primary as of now (for a cluster: the next node in turn).
    pub(super) async fn client(&self) -> redis::Client {
        match self {
            Source::Server(c) => c.as_ref().clone(),
            Source::Sentinel(f) => f.client().await,
            Source::Cluster(nodes, next) => {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                nodes[i % nodes.len()].clone()
            }
        }
    }
}
