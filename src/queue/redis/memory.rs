//! Reading Redis's memory limit, to say what a full Redis is set to
//! ([`QueueError::OutOfMemory`]).

use std::collections::HashMap;

use super::RedisQueue;
use crate::queue::{QueueError, StoreMemory};

impl RedisQueue {
    /// `maxmemory` and `maxmemory-policy` (`CONFIG GET`, which works while Redis is full);
    /// `None` when Redis refuses `CONFIG` (managed services often do) or answers oddly.
    pub async fn memory(&self) -> Option<StoreMemory> {
        let mut pipe = redis::pipe();
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory");
        pipe.cmd("CONFIG").arg("GET").arg("maxmemory-policy");
        let maps: Vec<HashMap<String, String>> =
            pipe.query_async(&mut self.con.clone()).await.ok()?;
        let all: HashMap<String, String> = maps.into_iter().flatten().collect();
        Some(StoreMemory {
            maxmemory: all.get("maxmemory")?.parse().ok()?,
            policy: all.get("maxmemory-policy")?.clone(),
        })
    }

    /// `e` with the memory settings filled in when it is [`QueueError::OutOfMemory`]
    /// without them; any other error as it is.
    pub async fn explain(&self, e: QueueError) -> QueueError {
        match e {
            QueueError::OutOfMemory { memory: None } => QueueError::OutOfMemory {
                memory: self.memory().await,
            },
            other => other,
        }
    }
}
