//! What a demo run starts before its jobs and removes after: the simulator on a free
//! loopback port, the tenants calling it, and the queue.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Backend, DemoConfig, DemoError, DemoTenant, TenantSetup};
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::redis::{RedisOptions, RedisQueue};
use crate::queue::sharded::ShardedQueue;
use crate::queue::{Queue, QueueConfig};
use crate::secret::Secret;
use crate::sim::{AccountSource, SimConfig, SimServer, SimState};
use crate::tenant::Tenant;

/// The demo's Redis queue: its shards behind one queue.
pub(super) type RedisShards = ShardedQueue<RedisQueue>;

/// The simulator a demo runs against: its first region, and a second one when a tenant
/// lives there.
pub(super) struct DemoSim {
    /// The first region (`default`): where the tenants' hosts point and where hosts are
    /// discovered.
    pub home: SimServer,
    /// The second region (`eu`), if served.
    pub other: Option<SimServer>,
}

/// The region demo tenants of [`TenantSetup::OtherRegion`] live in.
const OTHER_REGION: &str = "eu";

/// Starts the simulator on free loopback ports, serving until `stop`, with one account per
/// demo tenant; the tenants as the queue registers them (a tenant with bad keys gets a
/// secret key the simulator refuses).
pub(super) async fn start_simulator(
    config: &DemoConfig,
    stop: CancellationToken,
) -> Result<(DemoSim, Vec<Tenant>), DemoError> {
    let bind = || tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
    let sim_error = |e: std::io::Error| DemoError::Simulator(e.to_string());
    let listener = bind().await.map_err(sim_error)?;
    let addr = listener.local_addr().map_err(sim_error)?;
    let (accounts, registered) = tenants_at(config, addr)?;
    let other_region: Vec<&DemoTenant> = config
        .tenants
        .iter()
        .filter(|t| t.setup == TenantSetup::OtherRegion)
        .collect();
    let state = SimState::new(SimConfig {
        accounts: AccountSource::Tenants(accounts),
        window: config.window,
        faults: config.faults.clone(),
        account_regions: other_region
            .iter()
            .map(|t| (t.name.clone(), OTHER_REGION.to_string()))
            .collect(),
        ..SimConfig::default()
    })
    .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let other = if other_region.is_empty() {
        None
    } else {
        let listener = bind().await.map_err(sim_error)?;
        Some(
            crate::sim::serve_region(listener, state.clone(), OTHER_REGION, stop.clone())
                .map_err(sim_error)?,
        )
    };
    let home = crate::sim::serve(listener, state, stop).map_err(sim_error)?;
    Ok((DemoSim { home, other }, registered))
}

/// The run's queue: embedded, or a fresh queue in Redis, in its shards as a worker opens it
/// (spread over the nodes of a cluster); with the Redis queue itself, to delete afterwards.
pub(super) async fn open_queue(
    config: &DemoConfig,
    backend: &Backend,
) -> Result<(Arc<dyn Queue>, Option<Arc<RedisShards>>), DemoError> {
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
        Backend::Redis { url, shards, .. } => {
            let q = Arc::new(
                RedisShards::connect(url, queue_config, RedisOptions::default(), *shards).await?,
            );
            (q.clone(), Some(q))
        }
    })
}

/// The tenants, with keys of their own, calling the simulator at `addr`: the accounts the
/// simulator knows, and the tenants as the queue registers them (no host for
/// [`TenantSetup::NoHost`], a wrong secret key for [`TenantSetup::BadKeys`]; a tenant of
/// another region gets this region's host, as a tenants file copied from another
/// account's might).
fn tenants_at(
    config: &DemoConfig,
    addr: SocketAddr,
) -> Result<(Vec<Tenant>, Vec<Tenant>), DemoError> {
    let api_base = url::Url::parse(&format!("http://{addr}"))
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    // Keys made up per run: nothing outside this process knows them.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let accounts: Vec<Tenant> = config
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
        .collect();
    let registered = config
        .tenants
        .iter()
        .zip(&accounts)
        .map(|(d, t)| match d.setup {
            TenantSetup::Known | TenantSetup::OtherRegion => t.clone(),
            TenantSetup::NoHost => Tenant {
                api_base: None,
                ..t.clone()
            },
            TenantSetup::BadKeys => Tenant {
                secret_key: Secret::new(format!("demo-wrong-secret-{}-{run}", d.name)),
                ..t.clone()
            },
        })
        .collect();
    Ok((accounts, registered))
}
