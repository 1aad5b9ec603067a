//! `lsq-webhooks demo` in a small, fast configuration (a 1-second window, a few tenants,
//! more faults than the real demo): on the embedded queue and on Redis, every job is done,
//! the simulator sends no rate-limit answer, and the Ids recorded are the ones it created.
//! Also: a stop mid-run leaves nothing running, and the binary picks its queue from
//! `--redis` / `REDIS_URL`.

mod common;

use std::time::Duration;

use lsq_webhooks::demo::{self, Backend, DemoConfig, DemoReport, DemoTenant, TenantSetup, View};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::sharded::ShardedQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::sim::Faults;
use lsq_webhooks::worker::RetryPolicy;
use tokio_util::sync::CancellationToken;

/// Four tenants for three windows of one second, with 5% of calls failing each way: one
/// registered without a host, one in the simulator's other region, one whose keys are
/// refused.
fn small(busy: Duration) -> DemoConfig {
    DemoConfig {
        tenants: [
            ("alpha", 10, TenantSetup::Known),
            ("beta", 5, TenantSetup::NoHost),
            ("gamma", 2, TenantSetup::OtherRegion),
            ("delta", 2, TenantSetup::BadKeys),
        ]
        .into_iter()
        .map(|(name, limit, setup)| DemoTenant {
            name: name.into(),
            limit,
            setup,
        })
        .collect(),
        busy,
        // The latency stays far below the window: the queue re-stamps a call when its
        // answer arrives, which covers jitter only while answers come back within a window.
        window: Duration::from_secs(1),
        faults: Faults {
            seed: 7,
            error_rate: 0.05,
            created_then_error_rate: 0.05,
            reset_rate: 0.03,
            latency: Duration::from_millis(1),
            latency_jitter: Duration::from_millis(4),
        },
        concurrency: 16,
        retry: RetryPolicy {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
        },
        max_attempts: 8,
        shutdown_grace: Duration::from_secs(2),
        // The simulator has finished a Create before it answers; a short settle keeps the
        // test quick.
        reconcile_settle: Duration::from_millis(100),
    }
}

async fn run(config: &DemoConfig, backend: &Backend, shutdown: CancellationToken) -> DemoReport {
    tokio::time::timeout(
        Duration::from_secs(120),
        demo::run(config, backend, View::Quiet, shutdown),
    )
    .await
    .expect("the demo finishes")
    .expect("the demo runs")
}

fn assert_all_done(report: &DemoReport, config: &DemoConfig) {
    eprintln!("{report}");
    assert!(report.passed(), "{report}");
    assert_eq!(report.jobs, config.total_jobs());
    assert_eq!(report.jobs, 30 + 15 + 6 + 6);
    assert_eq!(
        (report.done, report.dead, report.parked, report.unfinished),
        (51, 0, 6, 0)
    );
    assert!(
        report
            .to_string()
            .contains("delta parked: keys refused by LeadSquared (401)"),
        "{report}"
    );
    assert_eq!(report.rate_limited, 0, "{report}");
    assert!(report.ids_match, "{report}");
    assert_eq!(report.ids_recorded, 51);
    assert_eq!(report.ids_created, 51, "one webhook per job, none twice");
    assert_eq!(report.duplicates, 0);
    // The per-tenant counts come from what the pool told the demo's watch; they add up to
    // the pool's own counter.
    assert_eq!(
        report.tenants.iter().map(|t| t.retries).sum::<u64>(),
        report.retries,
        "{report}"
    );
    // Every "created, then 500" is found by Retrieve, once, rather than created again.
    assert_eq!(report.reconciled, report.faults.1, "{report}");
    for t in &report.tenants {
        assert!(t.max_calls_in_window <= t.limit, "{t:?}");
        if t.name == "delta" {
            // Parked, not dead: every job still queued.
            assert_eq!((t.done, t.dead), (0, 0), "{t:?}");
            assert!(t.parked.is_some(), "{t:?}");
            continue;
        }
        assert_eq!(t.done, t.jobs, "{t:?}");
        assert!(t.calls >= t.jobs, "{t:?}");
        assert_eq!(t.parked, None, "{t:?}");
    }
}

#[tokio::test]
async fn the_demo_on_the_embedded_queue_does_every_job_within_the_limits() {
    let config = small(Duration::from_secs(3));
    let report = run(&config, &Backend::Embedded, CancellationToken::new()).await;
    assert_all_done(&report, &config);
    assert_eq!(report.backend, "embedded queue");
}

/// Keys under a queue's prefix.
async fn keys_of(queue: &str) -> Vec<String> {
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("KEYS")
        .arg(format!("{{{queue}}}:*"))
        .query_async(&mut con)
        .await
        .expect("KEYS")
}

#[tokio::test]
async fn the_demo_on_redis_does_every_job_within_the_limits_and_deletes_its_queue() {
    let queue = run_deleting(&common::redis_url(), &small(Duration::from_secs(3))).await;
    assert_eq!(keys_of(&queue).await, Vec::<String>::new());
}

/// A demo run on the Redis at `url` that deletes its queue afterwards, every job done; the
/// queue's name.
async fn run_deleting(url: &str, config: &DemoConfig) -> String {
    let backend = Backend::redis(url, false, None);
    let Backend::Redis { queue, .. } = &backend else {
        unreachable!("a Redis backend")
    };
    let report = run(config, &backend, CancellationToken::new()).await;
    assert_all_done(&report, config);
    assert!(
        report.backend.contains(queue.as_str()),
        "{}",
        report.backend
    );
    queue.clone()
}

/// Issue 17: on a Redis Cluster the demo's queue is sharded as a worker's is (16 shards by
/// default), so its keys sit on every node (its tenants' shards, 11, 7, 10 and 1, cover
/// each node's third of the slots); and it deletes them from every node afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_on_a_cluster_spreads_its_queue_over_every_node_and_deletes_it_from_each() {
    let url = common::cluster::cluster_url();
    let config = small(Duration::from_secs(3));
    let kept = Backend::redis(url.clone(), true, None);
    let Backend::Redis { queue, .. } = &kept else {
        unreachable!("a Redis backend")
    };
    assert_all_done(
        &run(&config, &kept, CancellationToken::new()).await,
        &config,
    );
    let per_node = common::cluster::queue_keys_per_node(&url, queue);
    assert!(per_node.iter().all(|&n| n > 0), "{per_node:?}");
    let watcher = ShardedQueue::connect(
        &url,
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
        Default::default(),
        None,
    )
    .await
    .expect("connect");
    assert_eq!(watcher.shards().len(), 16);
    watcher.delete_all().await.expect("clean up");

    let deleted = run_deleting(&url, &config).await;
    assert_eq!(
        common::cluster::queue_keys_per_node(&url, &deleted),
        vec![0; per_node.len()]
    );
}

#[tokio::test]
async fn a_stop_mid_run_ends_the_demo_with_nothing_running_and_no_job_lost() {
    // Long enough that it is still running when stopped.
    let config = small(Duration::from_secs(60));
    let backend = Backend::redis(common::redis_url(), true, None);
    let Backend::Redis { queue, .. } = backend.clone() else {
        unreachable!("a Redis backend")
    };
    let shutdown = CancellationToken::new();
    let demo = tokio::spawn({
        let (config, backend, shutdown) = (config.clone(), backend.clone(), shutdown.clone());
        async move { run(&config, &backend, shutdown).await }
    });
    // Watch the demo's queue from outside, and stop it once some jobs are done.
    let watcher = RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect");
    tokio::time::timeout(Duration::from_secs(60), async {
        while watcher.status().await.map(|s| s.done).unwrap_or(0) < 10 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("jobs get done");
    shutdown.cancel();
    let report = demo.await.expect("demo task");

    assert!(report.interrupted);
    assert!(!report.passed());
    assert_eq!(report.rate_limited, 0);
    assert!(report.done >= 10 && report.unfinished > 0, "{report}");
    assert_eq!(
        report.done + report.dead + report.parked + report.unfinished,
        report.jobs
    );
    // Kept: every unfinished job is back in the queue, none still held.
    let status = watcher.status().await.expect("status");
    assert_eq!(status.running, 0, "{status:?}");
    assert_eq!(status.done, report.done);
    assert_eq!(
        status.queued + status.scheduled,
        report.unfinished + report.parked
    );
    drop(watcher);
    // Clean up the kept queue.
    let keys = keys_of(&queue).await;
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: u64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut con)
        .await
        .expect("DEL");
}

/// The binary: embedded when no Redis is named, Redis when `--redis` names one.
#[test]
fn the_binary_uses_redis_only_when_one_is_named() {
    let bin = env!("CARGO_BIN_EXE_lsq-webhooks");
    let embedded = std::process::Command::new(bin)
        .args(["demo", "--seconds", "1", "--no-faults"])
        .env_remove("REDIS_URL")
        .output()
        .expect("run demo");
    let out = String::from_utf8_lossy(&embedded.stdout);
    assert!(embedded.status.success(), "{out}");
    assert!(out.starts_with("queue: embedded"), "{out}");
    assert!(
        out.contains("rate-limit answers from the simulator: 0"),
        "{out}"
    );
    assert!(!out.contains("FAILED"), "{out}");

    let redis = std::process::Command::new(bin)
        .args(["demo", "--seconds", "1", "--no-faults"])
        .args(["--redis", &common::redis_url()])
        .env_remove("REDIS_URL")
        .output()
        .expect("run demo");
    let out = String::from_utf8_lossy(&redis.stdout);
    assert!(redis.status.success(), "{out}");
    assert!(out.starts_with("queue: Redis at redis://"), "{out}");
    assert!(out.contains("(deleted afterwards)"), "{out}");
}
