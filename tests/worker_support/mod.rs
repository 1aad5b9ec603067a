//! Helpers for the worker tests and benchmark: a simulator on a free port, tenants it knows,
//! queues of both backends, jobs, and the checks that every job ended where it should.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use lsq_webhooks::job::{JobState, NewJob};
use lsq_webhooks::leadsquared::{Client, ClientConfig};
use lsq_webhooks::queue::embedded::EmbeddedQueue;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::sharded::ShardedQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::sim::{self, AccountSource, SimConfig, SimServer, SimState, SimStats};
use lsq_webhooks::tenant::Tenant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::common;

/// Which queue backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `queue::redis` on the test Redis.
    Redis,
    /// `queue::embedded`.
    Embedded,
}

/// A simulator that stops when dropped.
pub struct Sim {
    /// The server.
    pub server: SimServer,
    _stop: DropGuard,
}

impl Sim {
    /// Counters and created webhooks.
    pub fn stats(&self) -> SimStats {
        self.server.stats()
    }
}

/// Starts a simulator on a free loopback port.
pub async fn start_sim(config: SimConfig) -> Sim {
    let state = SimState::new(config).expect("valid simulator config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let server = sim::serve(listener, state, stop.clone()).expect("serve");
    Sim {
        server,
        _stop: stop.drop_guard(),
    }
}

/// A simulator on a free loopback port whose accounts are the tenants `{run}-t0`,
/// `{run}-t1`, ... (`limit` calls per window each, keys `ak-{run}-{i}` / `sk-{run}-{i}`),
/// with `faults`; and those tenants, served by it (the listener is bound first, so that the
/// tenants carry its address).
pub async fn sim_with_tenants(
    run: &str,
    n: usize,
    limit: u32,
    faults: sim::Faults,
) -> (Sim, Vec<Tenant>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the simulator");
    let base = url::Url::parse(&format!(
        "http://{}",
        listener.local_addr().expect("simulator address")
    ))
    .expect("simulator URL");
    let tenants: Vec<Tenant> = (0..n)
        .map(|i| Tenant {
            name: format!("{run}-t{i}"),
            api_base: Some(base.clone()),
            access_key: Secret::new(format!("ak-{run}-{i}")),
            secret_key: Secret::new(format!("sk-{run}-{i}")),
            limit,
            reserve: 0,
            daily_limit: None,
        })
        .collect();
    let state = SimState::new(SimConfig {
        accounts: AccountSource::Tenants(tenants.clone()),
        faults,
        ..SimConfig::default()
    })
    .expect("simulator config");
    let stop = CancellationToken::new();
    let server = sim::serve(listener, state, stop.clone()).expect("serve the simulator");
    (
        Sim {
            server,
            _stop: stop.drop_guard(),
        },
        tenants,
    )
}

/// Tenants `t00`, `t01`, ... with `limits[i % limits.len()]` calls per window, all served at
/// `api_base`.
pub fn tenants(api_base: &url::Url, n: usize, limits: &[u32]) -> Vec<Tenant> {
    (0..n)
        .map(|i| Tenant {
            name: format!("t{i:02}"),
            api_base: Some(api_base.clone()),
            access_key: Secret::new(format!("ak-{i:02}")),
            secret_key: Secret::new(format!("sk-{i:02}")),
            limit: limits[i % limits.len()],
            reserve: 0,
            daily_limit: None,
        })
        .collect()
}

/// A simulator whose accounts are `n` tenants of [`tenants`] with `limit` calls per `window`
/// and these faults, and those tenants, pointed at it.
pub async fn sim_serving(
    n: usize,
    limit: u32,
    window: Duration,
    faults: sim::Faults,
) -> (Sim, Vec<Tenant>) {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let mut config = sim_config(&tenants(&placeholder, n, &[limit]), window);
    config.faults = faults;
    let sim = start_sim(config).await;
    let ts = tenants(&sim.server.base_url(), n, &[limit]);
    (sim, ts)
}

/// The queue `name` on the Redis (or cluster) at `url`, in the shards it has (or the
/// default count), with this window.
pub async fn sharded_queue(url: &str, name: &str, window: Duration) -> ShardedQueue<RedisQueue> {
    let config = QueueConfig {
        name: name.to_string(),
        window,
        ..QueueConfig::default()
    };
    ShardedQueue::connect(url, config, Default::default(), None)
        .await
        .expect("connect to the queue's shards")
}

/// A simulator config whose accounts are exactly these tenants, with this window.
pub fn sim_config(tenants: &[Tenant], window: Duration) -> SimConfig {
    SimConfig {
        accounts: AccountSource::Tenants(tenants.to_vec()),
        window,
        ..SimConfig::default()
    }
}

/// A valid Create body, unique per tenant and `n`.
pub fn body(tenant: &str, n: usize) -> serde_json::Value {
    serde_json::json!({
        "Description": format!("{tenant} hook {n}"),
        "URL": format!("https://hooks.example/{tenant}/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": "receiver-secret"}]
    })
}

/// `per_tenant` jobs for each tenant, interleaved across tenants.
pub fn jobs(tenants: &[Tenant], per_tenant: usize) -> Vec<NewJob> {
    (0..per_tenant)
        .flat_map(|n| {
            tenants.iter().map(move |t| NewJob {
                delete: false,
                legacy_key: None,
                tenant: t.name.clone(),
                body: body(&t.name, n).to_string(),
                key: format!("{}-{n}", t.name),
            })
        })
        .collect()
}

/// A queue of the test's own on `backend`.
pub async fn queue(backend: Backend, test: &str, config: QueueConfig) -> Arc<dyn Queue> {
    let config = QueueConfig {
        name: common::unique_queue(test),
        ..config
    };
    match backend {
        Backend::Redis => Arc::new(
            RedisQueue::connect(&common::redis_url(), config)
                .await
                .expect("connect to test redis"),
        ),
        Backend::Embedded => Arc::new(EmbeddedQueue::new(config)),
    }
}

/// A Redis queue named `name` (the name a binary under test is given too), with these
/// tenants put.
pub async fn redis_queue_named(name: &str, tenants: &[Tenant]) -> RedisQueue {
    let queue = RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.to_string(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("queue");
    queue.put_tenants(tenants).await.expect("tenants");
    queue
}

/// A client with a call timeout.
pub fn client(timeout: Duration) -> Client {
    Client::new(ClientConfig {
        timeout,
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
    .expect("client")
}

/// Every job is done, each tenant's recorded Ids are exactly the webhooks the simulator
/// created for it (none missing, none extra), and no webhook was created twice.
pub async fn assert_all_done_and_matching(queue: &dyn Queue, sim: &SimStats, expected_jobs: usize) {
    let results = queue.results(None).await.expect("results");
    let not_done: Vec<_> = results
        .iter()
        .filter(|r| r.status != JobState::Done)
        .collect();
    assert!(not_done.is_empty(), "not done: {not_done:?}");
    assert_eq!(results.len(), expected_jobs, "finished jobs");
    assert!(queue.is_idle().await.expect("idle"));
    let mut recorded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &results {
        let id = r.webhook_id.clone().expect("done jobs have an Id");
        assert!(
            recorded.entry(r.tenant.clone()).or_default().insert(id),
            "one Id recorded twice"
        );
    }
    let created: BTreeMap<String, BTreeSet<String>> = sim
        .accounts
        .iter()
        .filter(|(_, a)| !a.webhooks.is_empty())
        .map(|(name, a)| {
            (
                name.clone(),
                a.webhooks.iter().map(|w| w.id.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        recorded, created,
        "recorded Ids vs webhooks the simulator created"
    );
    for (name, a) in &sim.accounts {
        assert_eq!(a.duplicates, 0, "{name} got a webhook twice");
        assert!(a.max_admitted_in_window <= a.limit, "{name}: {a:?}");
    }
}

/// Rate-limit answers the simulator gave, over all accounts.
pub fn rate_limit_answers(sim: &SimStats) -> u64 {
    sim.accounts.values().map(|a| a.rate_limited).sum()
}
