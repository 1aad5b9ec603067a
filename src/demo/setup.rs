//! What a demo run starts before its jobs and removes after: the simulator on a free
//! loopback port, the tenants calling it, and the queue.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Backend, DemoConfig, DemoError};
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::redis::RedisQueue;
use crate::queue::{Queue, QueueConfig};
use crate::secret::Secret;
use crate::sim::{AccountSource, SimConfig, SimServer, SimState};
use crate::tenant::Tenant;

/// Starts the simulator on a free loopback port, serving until `stop`, with one account per
/// demo tenant; the tenants, which call it.
pub(super) async fn start_simulator(
    config: &DemoConfig,
    stop: CancellationToken,
) -> Result<(SimServer, Vec<Tenant>), DemoError> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let tenants = tenants_at(config, addr)?;
    let state = SimState::new(SimConfig {
        accounts: AccountSource::Tenants(tenants.clone()),
        window: config.window,
        faults: config.faults.clone(),
        ..SimConfig::default()
    })
    .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let sim = crate::sim::serve(listener, state, stop)
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    Ok((sim, tenants))
}

/// The run's queue: embedded, or a fresh queue in Redis; with the Redis key prefix to
/// delete afterwards.
pub(super) async fn open_queue(
    config: &DemoConfig,
    backend: &Backend,
) -> Result<(Arc<dyn Queue>, Option<Arc<RedisQueue>>), DemoError> {
    let queue_config = QueueConfig {
        name: match backend {
            Backend::Embedded => "demo".into(),
            Backend::Redis { queue, .. } => queue.clone(),
        },
        window: config.window,
        max_attempts: config.max_attempts,
        ..QueueConfig::default()
    };
    // The Redis queue is also returned as itself, so the demo can delete its keys at the end.
    Ok(match backend {
        Backend::Embedded => (Arc::new(EmbeddedQueue::new(queue_config)), None),
        Backend::Redis { url, .. } => {
            let q = Arc::new(RedisQueue::connect(url, queue_config).await?);
            (q.clone(), Some(q))
        }
    })
}

/// The tenants, with keys of their own, calling the simulator at `addr`.
fn tenants_at(config: &DemoConfig, addr: SocketAddr) -> Result<Vec<Tenant>, DemoError> {
    let api_base = url::Url::parse(&format!("http://{addr}"))
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    // Keys made up per run: nothing outside this process knows them.
    let run = uuid::Uuid::new_v4().simple().to_string();
    Ok(config
        .tenants
        .iter()
        .map(|t| Tenant {
            name: t.name.clone(),
            api_base: Some(api_base.clone()),
            access_key: Secret::new(format!("demo-access-{}", t.name)),
            secret_key: Secret::new(format!("demo-secret-{}-{run}", t.name)),
            limit: t.limit,
            reserve: 0,
            daily_limit: None,
        })
        .collect())
}
