//! Redis's own CPU, read with `INFO cpu` before and after a step, for the benchmarks that
//! give the cost of a read in Redis CPU per call (scrape.rs, tenants.rs), and the queue
//! both start from: many tenants with two jobs each.

use lsq_webhooks::job::NewJob;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;

use std::time::Instant;

/// Redis's own CPU seconds so far (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`).
pub async fn redis_cpu(con: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(con)
        .await
        .expect("INFO cpu");
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            ["used_cpu_user", "used_cpu_sys"]
                .contains(&k)
                .then(|| v.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Runs `step` `times` times; returns (Redis CPU ms, wall ms) per run.
pub async fn measure<F, Fut>(
    con: &mut redis::aio::MultiplexedConnection,
    times: u32,
    mut step: F,
) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let cpu = redis_cpu(con).await;
    let started = Instant::now();
    for _ in 0..times {
        step().await;
    }
    let wall = started.elapsed().as_secs_f64() * 1000.0 / f64::from(times);
    let cpu = (redis_cpu(con).await - cpu) * 1000.0 / f64::from(times);
    (cpu, wall)
}

/// `(tenants, times)`: 10,000 tenants and 30 reads with `--bench` (and not `--quick`), else
/// 500 and 5, a smoke test.
pub fn sizes() -> (usize, u32) {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick");
    if full { (10_000, 30) } else { (500, 5) }
}

/// Tenant `tNNNNN`, one call per window.
pub fn tenant(n: usize) -> Tenant {
    Tenant {
        name: format!("t{n:05}"),
        api_base: Some(url::Url::parse("https://api.example.invalid").expect("url")),
        access_key: Secret::new(format!("ak-{n}")),
        secret_key: Secret::new(format!("sk-{n}")),
        limit: 1,
        reserve: 0,
        daily_limit: None,
    }
}

/// A queue of its own (named after `bench`) on the test Redis, with `tenants` tenants and
/// two waiting jobs each; the tenants too.
pub async fn queue_with_two_jobs_each(bench: &str, tenants: usize) -> (RedisQueue, Vec<Tenant>) {
    let queue = RedisQueue::connect(
        &super::common::redis_url(),
        QueueConfig {
            name: super::common::unique_queue(bench),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("queue");
    let ts: Vec<Tenant> = (0..tenants).map(tenant).collect();
    queue.put_tenants(&ts).await.expect("tenants");
    let jobs: Vec<NewJob> = ts
        .iter()
        .flat_map(|t| {
            (0..2).map(move |i| NewJob {
                tenant: t.name.clone(),
                key: format!("{}-{i}", t.name),
                body: r#"{"Description":"d","URL":"https://example.com/h"}"#.into(),
                delete: false,
                legacy_key: None,
            })
        })
        .collect();
    queue.push(&jobs).await.expect("push");
    (queue, ts)
}
