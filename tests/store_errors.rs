//! Errors that say what failed (issue 12): a script error is reported once and not retried,
//! a Redis that was killed is waited for, a full Redis is not an unreachable one (neither
//! for `enqueue` nor for a worker holding a result), and a refused connection names its
//! cause once. Each against a real redis-server; the ones that stop, fill or restart
//! Redis have a private one.

mod common;
mod worker_support;

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lsq_webhooks::job::{JobId, JobState};
use lsq_webhooks::producer::{JobRequest, PUSH_RETRY_FOR, Producer, ProducerError};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Pushed, Queue, QueueConfig, QueueError};
use lsq_webhooks::retry::{ReconnectPolicy, unavailable_only, with_retry};
use lsq_webhooks::sim::Faults;
use lsq_webhooks::worker::backoff::store_retry;
use lsq_webhooks::worker::{Pool, Stats, WorkerConfig, WorkerError};
use tokio_util::sync::CancellationToken;
use worker_support::*;

fn config(test: &str) -> QueueConfig {
    QueueConfig {
        name: common::unique_queue(test),
        ..QueueConfig::default()
    }
}

async fn redis_cmd(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut con).await.expect(args[0])
}

/// Polls `cond` every 20 ms until it holds; panics after `limit` (a guard against a hang,
/// not a timing claim).
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_script_error_is_reported_once_and_not_retried() {
    let url = common::redis_url();
    let queue = Arc::new(
        RedisQueue::connect(&url, config("script-error"))
            .await
            .expect("connect"),
    );
    let ts = tenants(&"http://127.0.0.1:9".parse().expect("url"), 1, &[10]);
    queue.put_tenants(&ts).await.expect("tenants");
    queue.push(&jobs(&ts, 1)).await.expect("push");
    // A key of the queue made the wrong type: the dispatch script meets WRONGTYPE inside.
    let running = format!("{}running", queue.prefix());
    redis_cmd(&url, &["SET", &running, "not a sorted set"]).await;

    let stats = Stats::default();
    let calls = AtomicU32::new(0);
    let got = with_retry(
        "dispatch",
        &ReconnectPolicy::default(),
        &CancellationToken::new(),
        store_retry(&stats),
        || {
            calls.fetch_add(1, Ordering::SeqCst);
            queue.dispatch_many(1, None)
        },
    )
    .await;
    match got {
        Some(Err(QueueError::Store(message))) => {
            assert!(message.contains("WRONGTYPE"), "{message}")
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a script error was retried"
    );
    assert_eq!(stats.summary().store_errors, 0);

    // A worker pool on that queue stops and says why, instead of dispatching forever.
    let pool = Pool::new(
        queue.clone(),
        client(Duration::from_secs(2)),
        WorkerConfig::default(),
    );
    let stopped = tokio::time::timeout(Duration::from_secs(60), pool.run(CancellationToken::new()))
        .await
        .expect("the pool stops on its own");
    match stopped {
        Err(WorkerError::Store(QueueError::Store(message))) => {
            assert!(message.contains("WRONGTYPE"), "{message}")
        }
        other => panic!("expected the pool to stop with the store error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_killed_redis_is_waited_for_and_the_operation_then_succeeds() {
    // The registry must survive the restart: append-only, synced on every write.
    let mut redis =
        common::PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"])
            .expect("private redis");
    let queue = Arc::new(
        RedisQueue::connect(&redis.url(), config("killed"))
            .await
            .expect("connect"),
    );
    let ts = tenants(&"http://127.0.0.1:9".parse().expect("url"), 1, &[10]);
    queue.put_tenants(&ts).await.expect("tenants");
    let job = jobs(&ts, 1);
    redis.kill();

    let failures = Arc::new(AtomicU32::new(0));
    let pushing = {
        let (queue, failures, job) = (queue.clone(), failures.clone(), job.clone());
        tokio::spawn(async move {
            with_retry(
                "push",
                &ReconnectPolicy::default(),
                &CancellationToken::new(),
                |e, f| {
                    failures.fetch_add(1, Ordering::SeqCst);
                    unavailable_only(e, f)
                },
                || queue.push(&job),
            )
            .await
        })
    };
    // The producer rides it out too (its retries are bounded by PUSH_RETRY_FOR, 60 s).
    let producing = {
        let producer = Producer::new(queue.clone());
        let body = body("t00", 7);
        tokio::spawn(async move {
            producer
                .enqueue(&JobRequest {
                    delete: false,
                    tenant: "t00".into(),
                    webhook: body,
                    key: Some("during-the-restart".into()),
                })
                .await
        })
    };
    wait_until(
        "failed tries while Redis is down",
        Duration::from_secs(30),
        || {
            let n = failures.load(Ordering::SeqCst);
            async move { n >= 3 }
        },
    )
    .await;
    redis.restart().expect("restart redis");

    let pushed = pushing.await.expect("task");
    match pushed {
        Some(Ok(p)) => assert!(matches!(p[..], [Pushed::Enqueued { .. }]), "{p:?}"),
        other => panic!("expected the push to succeed after the restart, got {other:?}"),
    }
    let produced = producing
        .await
        .expect("task")
        .expect("enqueue after the restart");
    assert!(matches!(produced, Pushed::Enqueued { .. }), "{produced:?}");
    assert_eq!(queue.status().await.expect("status").queued, 2);
}

fn run(url: &str, queue: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(args)
        .env("REDIS_URL", url)
        .env("LSQ_QUEUE", queue)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn enqueue_into_a_full_redis_says_so_and_how_far_it_got() {
    let redis =
        common::PrivateRedis::start(&["--maxmemory", "10mb", "--maxmemory-policy", "noeviction"])
            .expect("private redis");
    let queue = common::unique_queue("full");
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants.csv");
    std::fs::write(
        &tenants,
        "tenant,api_base,access_key,secret_key,limit\nt00,http://127.0.0.1:9,ak,sk-SECRET,10\n",
    )
    .expect("write");
    let out = run(
        &redis.url(),
        &queue,
        &["tenants", "import", tenants.to_str().expect("path")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // About 0.7 kB a job in Redis: the first 10,000-job chunk fits in 10 MB, not all 30,000.
    let total = 30_000;
    let lines: Vec<String> = (0..total)
        .map(|n| serde_json::json!({"tenant": "t00", "webhook": body("t00", n)}).to_string())
        .collect();
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(&file, lines.join("\n")).expect("write");
    let file = file.to_str().expect("path");

    let out = run(&redis.url(), &queue, &["enqueue", file]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Redis is out of memory"), "{stderr}");
    assert!(
        stderr.contains("maxmemory 10 MiB (10485760 bytes), maxmemory-policy noeviction"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "10000 of {total} jobs were enqueued before it filled"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("Running the same file again is safe"),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("unreachable"), "{stderr}");
    assert!(!stderr.contains("unavailable"), "{stderr}");
    assert!(!stderr.contains("sk-SECRET") && !stderr.contains("receiver-secret"));
    // One message: the error line, no retries logged before it.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // Once memory is freed, the same file again: every job in exactly once.
    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "0"]).await;
    let out = run(&redis.url(), &queue, &["enqueue", file]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    let counts: Vec<u64> = summary
        .trim()
        .split(", ")
        .filter_map(|part| part.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(matches!(counts[..], [_, d, 0] if d >= 10_000), "{summary}");
    assert_eq!(counts[0] + counts[1], total as u64, "{summary}");
    let q = RedisQueue::connect(
        &redis.url(),
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect");
    assert_eq!(q.status().await.expect("status").queued, total as u64);
}

#[tokio::test]
async fn a_worker_keeps_its_result_through_a_full_redis() {
    let redis =
        common::PrivateRedis::start(&["--maxmemory-policy", "noeviction"]).expect("private redis");
    // The Create takes a while at the simulator: Redis fills up while it is in flight.
    let probe = tenants(&"http://127.0.0.1:9".parse().expect("url"), 1, &[10]);
    let mut sim_cfg = sim_config(&probe, Duration::from_secs(5));
    sim_cfg.faults = Faults {
        latency: Duration::from_secs(2),
        ..Faults::default()
    };
    let sim = start_sim(sim_cfg).await;
    let ts = tenants(&sim.server.base_url(), 1, &[10]);
    let queue: Arc<RedisQueue> = Arc::new(
        RedisQueue::connect(
            &redis.url(),
            QueueConfig {
                // Longer than the test: the lease must outlast the full Redis.
                lease: Duration::from_secs(120),
                ..config("full-worker")
            },
        )
        .await
        .expect("connect"),
    );
    queue.put_tenants(&ts).await.expect("tenants");
    let pushed = queue.push(&jobs(&ts, 1)).await.expect("push");
    let Pushed::Enqueued { job } = &pushed[0] else {
        panic!("{pushed:?}")
    };
    let job: JobId = job.clone();
    let pool = Arc::new(Pool::new(
        queue.clone(),
        client(Duration::from_secs(10)),
        WorkerConfig {
            // One job at a time: no dispatch runs while it is held, so every store error
            // counted below is the held job's.
            concurrency: 1,
            ..WorkerConfig::default()
        },
    ));
    let stop = CancellationToken::new();
    let running = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move { pool.run(stop).await })
    };
    wait_until(
        "the job to be dispatched",
        Duration::from_secs(30),
        || async {
            queue
                .status()
                .await
                .map(|s| s.running == 1)
                .unwrap_or(false)
        },
    )
    .await;
    // Redis is full: every write is refused from now on.
    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "1"]).await;
    wait_until(
        "the webhook to be created",
        Duration::from_secs(30),
        || async {
            sim.stats()
                .accounts
                .values()
                .map(|a| a.webhooks.len())
                .sum::<usize>()
                == 1
        },
    )
    .await;
    let stats = pool.stats();
    wait_until(
        "the result to be refused a few times",
        Duration::from_secs(30),
        || {
            let n = stats.summary().store_errors;
            async move { n >= 3 }
        },
    )
    .await;
    // Still leased to this worker, its result not lost: not recorded yet, not given up.
    let s = queue.status().await.expect("status");
    assert_eq!((s.running, s.done), (1, 0), "{s:?}");

    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "0"]).await;
    wait_until(
        "the result to be recorded",
        Duration::from_secs(30),
        || async { matches!(queue.job(&job).await, Ok(Some(r)) if r.status == JobState::Done) },
    )
    .await;
    stop.cancel();
    let summary = running.await.expect("task").expect("pool");
    let result = queue.job(&job).await.expect("job").expect("recorded");
    let created: Vec<String> = sim
        .stats()
        .accounts
        .values()
        .flat_map(|a| a.webhooks.iter().map(|w| w.id.clone()))
        .collect();
    assert_eq!(
        result.webhook_id.as_deref(),
        created.first().map(String::as_str)
    );
    assert_eq!(created.len(), 1, "the webhook was created once");
    // Recorded by the worker that created it, not found again by a later reconcile.
    assert!(!result.reconciled);
    assert_eq!(summary.created, 1);
    assert_eq!(summary.lease_lost, 0);
}

#[test]
fn a_refused_connection_names_its_cause_once() {
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let out = run(&url, "refused", &["status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lower = stderr.to_lowercase();
    assert_eq!(lower.matches("connection refused").count(), 1, "{stderr}");
    assert!(stderr.contains("queue store unavailable"), "{stderr}");
}

#[tokio::test]
async fn a_full_redis_is_out_of_memory_with_its_settings_not_unavailable() {
    let redis =
        common::PrivateRedis::start(&["--maxmemory-policy", "noeviction"]).expect("private redis");
    let queue = RedisQueue::connect(&redis.url(), config("full-push"))
        .await
        .expect("connect");
    let ts = tenants(&"http://127.0.0.1:9".parse().expect("url"), 1, &[10]);
    queue.put_tenants(&ts).await.expect("tenants");
    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "1"]).await;
    match queue.push(&jobs(&ts, 2)).await {
        Err(e @ QueueError::OutOfMemory { .. }) => {
            assert!(!e.is_unavailable());
            let explained = queue.explain(e).await.to_string();
            assert_eq!(
                explained,
                "Redis is out of memory (maxmemory 1 bytes, maxmemory-policy noeviction); \
                 it refuses writes"
            );
        }
        other => panic!("expected out of memory, got {other:?}"),
    }
    // Reads still work while it is full.
    assert_eq!(queue.status().await.expect("status").queued, 0);
    redis_cmd(&redis.url(), &["CONFIG", "SET", "maxmemory", "0"]).await;
    queue
        .push(&jobs(&ts, 2))
        .await
        .expect("push once memory is freed");
}

#[tokio::test]
async fn a_producer_gives_up_after_its_retry_time_and_says_so() {
    let mut redis = common::PrivateRedis::start(&[]).expect("private redis");
    let queue = Arc::new(
        RedisQueue::connect(&redis.url(), config("gave-up"))
            .await
            .expect("connect"),
    );
    let ts = tenants(&"http://127.0.0.1:9".parse().expect("url"), 1, &[10]);
    queue.put_tenants(&ts).await.expect("tenants");
    redis.kill();
    // Fake time from here: the 60 s of retries pass at once.
    tokio::time::pause();
    let producer = Producer::new(queue);
    let got = producer
        .enqueue(&JobRequest {
            delete: false,
            tenant: "t00".into(),
            webhook: body("t00", 1),
            key: None,
        })
        .await;
    match got {
        Err(e @ ProducerError::GaveUp { .. }) => {
            let ProducerError::GaveUp { after, ref last } = e else {
                unreachable!()
            };
            // No try starts after PUSH_RETRY_FOR; the last one may take a few seconds.
            assert!(
                after + Duration::from_secs(5) >= PUSH_RETRY_FOR,
                "{after:?}"
            );
            assert!(after < PUSH_RETRY_FOR * 2, "{after:?}");
            assert!(last.is_unavailable(), "{last:?}");
            let text = e.to_string();
            let prefix = format!("gave up after retrying for {} s: ", after.as_secs());
            assert!(text.starts_with(&prefix), "{text}");
            assert!(text.contains("queue store unavailable"), "{text}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
}
