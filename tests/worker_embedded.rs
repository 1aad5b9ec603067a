//! The worker pool over the embedded queue, against endpoints that fail in the ways a
//! network does: a closed port (connection refused) and a server that accepts and never
//! answers. Calls that succeed are tested against the simulator in `worker_sim.rs`.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use lsq_webhooks::job::{JobState, NewJob};
use lsq_webhooks::leadsquared::{Client, ClientConfig};
use lsq_webhooks::queue::embedded::EmbeddedQueue;
use lsq_webhooks::queue::{Dispatch, Pushed, Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;
use lsq_webhooks::worker::{Pool, RetryPolicy, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn tenant(name: &str, api_base: &str) -> Tenant {
    Tenant {
        name: name.into(),
        api_base: Some(url::Url::parse(api_base).expect("url")),
        access_key: Secret::new(format!("ak-{name}")),
        secret_key: Secret::new(format!("sk-{name}")),
        limit: 25,
        reserve: 0,
        daily_limit: None,
    }
}

fn body(n: usize) -> serde_json::Value {
    serde_json::json!({
        "Description": format!("hook {n}"),
        "URL": format!("https://example.com/hook/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": "header-secret-value"}]
    })
}

fn job(tenant: &str, n: usize, webhook: serde_json::Value) -> NewJob {
    NewJob {
        delete: false,
        legacy_key: None,
        tenant: tenant.into(),
        body: webhook.to_string(),
        key: format!("{tenant}-{n}"),
    }
}

/// A loopback address where nothing listens.
/// A server that accepts connections and never answers; it lives as long as the test
/// process (its thread only holds sockets).
fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().map_while(Result::ok) {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

/// A host that takes every request and, after `after`, hangs up without an answer (the
/// unread request makes it a reset): a transient failure that may have reached it, and
/// spends the job's attempt. A silent host would be a timeout, which holds its tenant rather
/// than spend attempts (issue 14).
fn hangs_up_after(after: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                std::thread::sleep(after);
                drop(conn);
            });
        }
    });
    format!("http://{addr}")
}

fn client(timeout: Duration) -> Client {
    Client::new(ClientConfig {
        timeout,
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    })
    .expect("client")
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(5),
        factor: 2.0,
        cap: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn undecodable_bodies_are_buried_and_failing_calls_die_after_their_attempts() {
    let queue = Arc::new(EmbeddedQueue::new(QueueConfig {
        max_attempts: 3,
        ..QueueConfig::default()
    }));
    queue
        .put_tenants(&[tenant("down", &common::always_503())])
        .await
        .expect("tenants");
    let mut jobs = vec![
        job("down", 0, serde_json::json!({"URL": 5})),
        job("down", 1, serde_json::json!("not an object")),
    ];
    jobs.extend((2..6).map(|n| job("down", n, body(n))));
    queue.push(&jobs).await.expect("push");
    let pool = Pool::new(
        queue.clone(),
        client(Duration::from_secs(5)),
        WorkerConfig {
            concurrency: 4,
            exit_when_idle: true,
            retry: fast_retries(),
            // A 503 may have been processed: the next attempt reconciles after the settle.
            reconcile_settle: Duration::from_millis(10),
            ..WorkerConfig::default()
        },
    );
    let summary = tokio::time::timeout(Duration::from_secs(60), pool.run(CancellationToken::new()))
        .await
        .expect("the pool exits when idle")
        .expect("pool runs");
    let results = queue.results(None).await.expect("results");
    assert_eq!(results.len(), 6);
    assert!(results.iter().all(|r| r.status == JobState::Dead));
    let by_key = |k: &str| results.iter().find(|r| r.key == k).expect("row");
    let bad = by_key("down-0").error.clone().unwrap_or_default();
    assert!(
        bad.contains("does not decode") && bad.contains("URL"),
        "{bad}"
    );
    assert!(
        by_key("down-1")
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("does not decode")
    );
    for n in 2..6 {
        let r = by_key(&format!("down-{n}"));
        assert_eq!(r.attempts, 3, "{r:?}");
        let e = r.error.as_deref().unwrap_or_default();
        assert!(e.contains("gave up after 3 attempts"), "{e}");
        assert!(!e.contains("header-secret-value") && !e.contains("sk-down"));
    }
    // Dead: the two bodies, and the four jobs out of attempts (their last transient failure
    // is a death, not a retry).
    assert_eq!(summary.buried, 6);
    assert_eq!(summary.retried, 8);
    assert_eq!(summary.rate_limited, 0);
    assert!(queue.is_idle().await.expect("idle"));
}

#[tokio::test]
async fn never_holds_more_jobs_than_its_concurrency() {
    let queue = Arc::new(EmbeddedQueue::new(QueueConfig {
        max_attempts: 1,
        ..QueueConfig::default()
    }));
    queue
        .put_tenants(&[
            tenant("a", &hangs_up_after(Duration::from_millis(150))),
            tenant("b", &hangs_up_after(Duration::from_millis(150))),
        ])
        .await
        .expect("tenants");
    let jobs: Vec<NewJob> = (0..24)
        .map(|n| job(if n % 2 == 0 { "a" } else { "b" }, n, body(n)))
        .collect();
    queue.push(&jobs).await.expect("push");
    let pool = Pool::new(
        queue.clone(),
        client(Duration::from_secs(5)),
        WorkerConfig {
            concurrency: 3,
            exit_when_idle: true,
            retry: fast_retries(),
            ..WorkerConfig::default()
        },
    );
    let summary = tokio::time::timeout(Duration::from_secs(60), pool.run(CancellationToken::new()))
        .await
        .expect("the pool exits when idle")
        .expect("pool runs");
    assert_eq!(summary.dispatched, 24);
    assert!(
        (1..=3).contains(&summary.max_held),
        "held {} jobs with 3 permits",
        summary.max_held
    );
    let dead = queue.dead().await.expect("dead");
    assert_eq!(dead.len(), 24);
    assert!(
        dead.iter()
            .all(|r| r.error.as_deref().unwrap_or_default().contains("gave up"))
    );
}

#[tokio::test]
async fn shutdown_hands_running_jobs_back_after_the_grace_period() {
    let queue = Arc::new(EmbeddedQueue::new(QueueConfig::default()));
    queue
        .put_tenants(&[tenant("slow", &black_hole())])
        .await
        .expect("tenants");
    let jobs: Vec<NewJob> = (0..10).map(|n| job("slow", n, body(n))).collect();
    let pushed = queue.push(&jobs).await.expect("push");
    let pool = Arc::new(Pool::new(
        queue.clone(),
        client(Duration::from_secs(120)),
        WorkerConfig {
            concurrency: 4,
            shutdown_grace: Duration::from_millis(300),
            ..WorkerConfig::default()
        },
    ));
    let stop = CancellationToken::new();
    let run = {
        let (pool, stop) = (pool.clone(), stop.clone());
        tokio::spawn(async move { pool.run(stop).await })
    };
    // Wait until the pool holds all it may: 4 calls hanging.
    let stats = pool.stats();
    tokio::time::timeout(Duration::from_secs(30), async {
        while stats.held() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("4 jobs running");
    stop.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops after the grace period")
        .expect("join")
        .expect("pool runs");
    assert_eq!(summary.handed_back, 4);
    assert_eq!(summary.dispatched, 4);
    // The 4 abandoned Creates may still land until their send + the client timeout + the
    // settle time: those jobs wait in the schedule until then (issue 5), with their attempt
    // given back, and will be reconciled before any Create. The other 6 are queued.
    let status = queue.status().await.expect("status");
    assert_eq!(
        (
            status.queued,
            status.scheduled,
            status.running,
            status.done,
            status.dead
        ),
        (6, 4, 0, 0, 0)
    );
    for _ in 0..6 {
        match queue.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => {
                assert_eq!(j.attempt, 1);
                assert!(!j.outcome_unknown);
            }
            other => panic!("expected a job, got {other:?}"),
        }
    }
    assert!(matches!(
        queue.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    let mut waiting = 0;
    for p in &pushed {
        let Pushed::Enqueued { job } = p else {
            panic!("pushed a duplicate: {p:?}")
        };
        let r = queue.job(job).await.expect("job").expect("job exists");
        if r.status == JobState::Scheduled {
            waiting += 1;
            assert_eq!(r.attempts, 0, "the attempt is given back");
            assert!(r.error.as_deref().unwrap_or_default().contains("mid-call"));
        }
    }
    assert_eq!(waiting, 4);
}
