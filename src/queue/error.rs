//! What can go wrong in the queue's store, sorted by what the caller should do about it.
//!
//! The Redis backend's errors are classified here, once ([`From<redis::RedisError>`]), so
//! that every `?` in the backend yields a [`QueueError`] whose variant is the decision:
//! [`QueueError::Unavailable`] is retried with backoff, [`QueueError::OutOfMemory`] waits
//! for an operator (or stops a producer), [`QueueError::Store`] is reported and stops. No
//! variant holds a `redis` type: callers are not tied to a redis-rs version.
//!
//! Each variant holds the cause as text, not as an error `source`: redis-rs prints its
//! cause in its own message and again as its source, so a chain printed by anyhow (`{:#}`)
//! named it three times (`Connection refused (os error 111): Connection refused ...`).

use crate::job::JobId;

/// The store's memory limit and what it does when it reaches it (Redis's `maxmemory` and
/// `maxmemory-policy`), read to explain [`QueueError::OutOfMemory`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMemory {
    /// `maxmemory` in bytes; 0 means no limit.
    pub maxmemory: u64,
    /// `maxmemory-policy`, e.g. `noeviction`.
    pub policy: String,
}

impl std::fmt::Display for StoreMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "maxmemory {}, maxmemory-policy {}",
            human_bytes(self.maxmemory),
            self.policy
        )
    }
}

/// `20971520` as `20 MiB (20971520 bytes)`; whole units only, else bytes alone.
fn human_bytes(n: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    match n {
        0 => "0 (no limit)".to_string(),
        n if n % GIB == 0 => format!("{} GiB ({n} bytes)", n / GIB),
        n if n % MIB == 0 => format!("{} MiB ({n} bytes)", n / MIB),
        n => format!("{n} bytes"),
    }
}

/// What went wrong in the queue's store. Job-level trouble (a body that does not decode) is
/// not a `QueueError`: it is recorded against the job. `Clone`, so that one answer of the
/// store can be told to every job of a batch (see `worker::completions`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum QueueError {
    /// The store cannot be reached or cannot serve for now: the connection was refused or
    /// reset, a command timed out, a failover or restart is in progress (`LOADING`,
    /// `MASTERDOWN`, `READONLY`, `TRYAGAIN`, `CLUSTERDOWN`), or a long script holds it
    /// (`BUSY`). Retry with backoff.
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
    /// The store is full and refuses writes (Redis's `OOM` with `maxmemory-policy
    /// noeviction`). It is reachable, and waiting alone does not help: memory must be freed
    /// or the limit raised. Reads still work.
    #[error("{}", oom_message(.memory.as_ref()))]
    OutOfMemory {
        /// Its limit and policy, when they could be read.
        memory: Option<StoreMemory>,
    },
    /// The store refused or failed a command in a way a retry does not fix: a Lua error, a
    /// key of the wrong type (`WRONGTYPE`), a script it does not know after reloading
    /// (`NOSCRIPT`), a reply of the wrong shape, a denied command. Report it and stop.
    #[error("queue store error: {0}")]
    Store(String),
    /// A job names a tenant that is not in the registry.
    #[error("unknown tenant {0:?}; import it with `tenants import`")]
    UnknownTenant(String),
    /// Something in the store is not what this version wrote.
    #[error("corrupt queue data at {key}: {reason}")]
    Corrupt {
        /// The key (never a secret).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A write reached the primary, but `WAIT` counted fewer replicas holding it than the
    /// queue requires (`--min-replicas`) within its timeout: it is NOT acknowledged. A
    /// failover now could lose it. Retry with backoff: every such write is safe to repeat
    /// (a push again finds its jobs as duplicates, a completion again finds itself done).
    #[error(
        "not acknowledged: the {what} reached the primary but only {acked} of {wanted} \
         replica(s) confirmed it within {timeout_ms} ms (a failover could lose it; retrying is safe)"
    )]
    NotReplicated {
        /// What was written (`push`, `dispatch`, `fence`, `completion`).
        what: &'static str,
        /// Replicas that confirmed it.
        acked: u32,
        /// Replicas required.
        wanted: u32,
        /// How long it waited.
        timeout_ms: u64,
    },
    /// The job's lease was lost (expired and taken back); its result was not recorded.
    #[error("lease on job {0} was lost")]
    LeaseLost(JobId),
    /// The queue cannot run with this configuration (e.g. a queue name with braces).
    #[error("queue configuration: {0}")]
    Config(String),
}

fn oom_message(memory: Option<&StoreMemory>) -> String {
    match memory {
        Some(m) => format!("Redis is out of memory ({m}); it refuses writes"),
        None => "Redis is out of memory (maxmemory reached); it refuses writes".to_string(),
    }
}

impl QueueError {
    /// Whether waiting and trying again can succeed without anyone's help.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            QueueError::Unavailable(_) | QueueError::NotReplicated { .. }
        )
    }

    /// Whether the store is full.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, QueueError::OutOfMemory { .. })
    }
}

/// Server error codes that mean "not now": a restart, a failover, a busy script.
const UNAVAILABLE_CODES: [&str; 6] = [
    "LOADING",
    "MASTERDOWN",
    "READONLY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "BUSY",
];

/// What a Redis Cluster node answers (with code `ERR`) when a script touches a key the node
/// would redirect: while a slot migrates (`redis-cli --cluster reshard`), a key already moved
/// to the importing node. Redis 7 gives a script this one message where a command would get
/// `ASK` or `TRYAGAIN`, so it is read as they are: not now. Every script of the queue keeps to
/// one shard's slot (its keys share a hash tag), so the node does not answer it otherwise.
const SCRIPT_KEY_ELSEWHERE: &str = "Script attempted to access a non local key in a cluster node";

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        use redis::ErrorKind;
        let text = e.to_string();
        // A MULTI/EXEC or pipeline names each failed command; a script error names the
        // command inside it ("OOM command not allowed ... script: ..."). All are looked at.
        let codes: Vec<String> = e
            .clone()
            .into_server_errors()
            .map(|errors| errors.iter().map(|(_, s)| s.code().to_string()).collect())
            .unwrap_or_default();
        let has = |code: &str| {
            e.code() == Some(code)
                || codes.iter().any(|c| c == code)
                || text.contains(&format!("{code} "))
        };
        if has("OOM") || text.contains("command not allowed when used memory") {
            return QueueError::OutOfMemory { memory: None };
        }
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                ErrorKind::ClusterConnectionNotFound
                    | ErrorKind::MasterNameNotFoundBySentinel
                    | ErrorKind::NoValidReplicasFoundBySentinel
            )
            || UNAVAILABLE_CODES.iter().any(|c| has(c))
            || text.contains(SCRIPT_KEY_ELSEWHERE)
        {
            return QueueError::Unavailable(text);
        }
        QueueError::Store(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, detail: &str) -> redis::RedisError {
        redis::make_extension_error(code.to_string(), Some(detail.to_string()))
    }

    #[test]
    fn connection_trouble_and_failovers_are_unavailable() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(QueueError::from(refused).is_unavailable());
        let reset =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(QueueError::from(reset).is_unavailable());
        let timeout = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(QueueError::from(timeout).is_unavailable());
        for code in UNAVAILABLE_CODES {
            assert!(
                QueueError::from(server(code, "not now")).is_unavailable(),
                "{code}"
            );
        }
    }

    #[test]
    fn a_script_refused_while_its_slot_migrates_is_unavailable() {
        // As a cluster node answered mid-reshard (tests/cluster.rs,
        // `a_reshard_mid_drain_loses_no_job`).
        let e = server(
            "ERR",
            "Script attempted to access a non local key in a cluster node script: f2a0bc59, \
             on @user_script:275.",
        );
        assert!(QueueError::from(e).is_unavailable());
    }

    #[test]
    fn a_write_not_replicated_is_retried_and_says_so() {
        let e = QueueError::NotReplicated {
            what: "push",
            acked: 0,
            wanted: 1,
            timeout_ms: 1000,
        };
        assert!(e.is_unavailable());
        assert_eq!(
            e.to_string(),
            "not acknowledged: the push reached the primary but only 0 of 1 replica(s) \
             confirmed it within 1000 ms (a failover could lose it; retrying is safe)"
        );
    }

    #[test]
    fn a_full_store_is_not_an_unreachable_one() {
        let oom = server("OOM", "command not allowed when used memory > 'maxmemory'.");
        let e = QueueError::from(oom);
        assert!(e.is_out_of_memory(), "{e:?}");
        assert!(!e.is_unavailable());
        let e = QueueError::OutOfMemory {
            memory: Some(StoreMemory {
                maxmemory: 20 * 1024 * 1024,
                policy: "noeviction".into(),
            }),
        };
        assert_eq!(
            e.to_string(),
            "Redis is out of memory (maxmemory 20 MiB (20971520 bytes), maxmemory-policy \
             noeviction); it refuses writes"
        );
    }

    #[test]
    fn script_and_type_errors_stop() {
        for (code, detail) in [
            (
                "WRONGTYPE",
                "Operation against a key holding the wrong kind of value",
            ),
            ("NOSCRIPT", "No matching script."),
            ("ERR", "user_script:12: attempt to compare nil with number"),
        ] {
            let e = QueueError::from(server(code, detail));
            assert!(matches!(e, QueueError::Store(_)), "{code}: {e:?}");
        }
        let shape = redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "Response was of incompatible type",
        ));
        assert!(matches!(QueueError::from(shape), QueueError::Store(_)));
    }

    #[test]
    fn the_cause_is_named_once() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let e = anyhow::Error::new(QueueError::from(refused)).context("connecting");
        let text = format!("{e:#}");
        assert_eq!(text.matches("connection refused").count(), 1, "{text}");
    }
}
