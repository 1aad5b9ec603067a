//! Helpers for the Redis queue tests: a queue of the test's own, tenants and jobs.

#![allow(dead_code)]

use std::time::Duration;

use lsq_webhooks::job::{NewJob, legacy_key};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, LeasedJob, Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;

use crate::common;

/// A config with a short window, for fast tests.
pub fn config(name: &str, window_ms: u64) -> QueueConfig {
    QueueConfig {
        name: name.to_string(),
        window: Duration::from_millis(window_ms),
        margin: Duration::ZERO,
        lease: Duration::from_secs(30),
        max_attempts: 8,
        day: std::time::Duration::from_secs(86_400),
        share: Default::default(),
        slow_start: false,
    }
}

/// Connects a queue to the test Redis.
pub async fn connect(config: QueueConfig) -> RedisQueue {
    RedisQueue::connect(&common::redis_url(), config)
        .await
        .expect("connect to test redis")
}

/// A tenant pointing at a loopback address (never called by these tests).
pub fn tenant(name: &str, limit: u32) -> Tenant {
    Tenant {
        name: name.to_string(),
        api_base: Some(url::Url::parse("http://127.0.0.1:9").expect("url")),
        access_key: Secret::new(format!("ak-{name}")),
        secret_key: Secret::new(format!("sk-secret-{name}")),
        limit,
        reserve: 0,
        daily_limit: None,
    }
}

/// A job for `tenant`, distinct per `n`, keyed by its derived key.
pub fn job(tenant: &str, n: usize) -> NewJob {
    let body = serde_json::json!({
        "Description": format!("hook {n}"),
        "URL": format!("https://example.com/hooks/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
    })
    .to_string();
    NewJob {
        delete: false,
        legacy_key: None,
        tenant: tenant.to_string(),
        key: legacy_key(tenant, &body),
        body,
    }
}

/// Dispatches until a job comes, following the waits the queue names; panics after 30 s
/// (a guard against a hang, not a timing assertion).
pub async fn next_job<Q: Queue + ?Sized>(q: &Q) -> LeasedJob {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job dispatched within 30 s"
        );
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => return j,
            Dispatch::Wait(d) => q.wait_for_work(d.max(Duration::from_millis(1))).await,
            Dispatch::Empty => q.wait_for_work(Duration::from_millis(50)).await,
        }
    }
}

/// A raw connection for looking at (or damaging) the queue's keys.
pub async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// Redis's clock, ms.
pub async fn redis_now_ms(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(con).await.expect("TIME");
    s * 1000 + us / 1000
}
