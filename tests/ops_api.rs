//! The HTTP API of `serve`, driven through a real server on a free port: auth, bad and huge
//! bodies, jobs, status, dead letters, metrics in Prometheus text format, and the OpenAPI
//! description against what the server answers.

#![allow(clippy::unwrap_used)]

mod common;
mod ops_support;

use std::sync::Arc;

use lsq_webhooks::job::JobState;
use lsq_webhooks::ops::{ApiLimits, JobOutcome, StatusReport};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use ops_support::{Server, TOKEN, fill, parse_exposition};
use reqwest::StatusCode;
use serde_json::Value;

/// A fresh queue of its own in the test Redis.
async fn queue() -> Arc<dyn Queue> {
    let config = QueueConfig {
        name: common::unique_queue("ops"),
        ..QueueConfig::default()
    };
    Arc::new(
        RedisQueue::connect(&common::redis_url(), config)
            .await
            .unwrap(),
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn writes_need_the_bearer_token() {
    let server = Server::start(queue().await, ApiLimits::default()).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 0, 2, 0).await;
    let url = server.url("/v1/dead/retry");
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some(TOKEN),
        Some("Basic abc"),
    ] {
        let mut req = client().post(&url).body("{}");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(
            r.headers().get("www-authenticate").unwrap(),
            "Bearer realm=\"lsq-webhooks\""
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "missing or wrong bearer token");
    }
    assert_eq!(server.queue.status().await.unwrap().dead, 2);

    let r = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["retried"], 2);
    let s = server.queue.status().await.unwrap();
    assert_eq!((s.dead, s.queued), (0, 2));
    server.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_400_and_huge_ones_413() {
    let limits = ApiLimits {
        max_body_bytes: 64 * 1024,
        ..ApiLimits::default()
    };
    let server = Server::start(queue().await, limits).await;
    let url = server.url("/v1/dead/retry");
    for bad in ["{\"jobs\": 5}", "not json", "{\"other\": []}"] {
        let r = client()
            .post(&url)
            .bearer_auth(TOKEN)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().starts_with("body must be"),
            "{body}"
        );
    }
    let huge = format!("{{\"jobs\": [\"{}\"]}}", "x".repeat(200 * 1024));
    let r = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "request body is larger than 65536 bytes");
    // Without the token the body is not even read.
    let r = client().post(&url).body(huge).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn status_jobs_and_dead_letters_read_the_queue() {
    let server = Server::start(queue().await, ApiLimits::default()).await;
    let reasons = fill(
        server.queue.as_ref(),
        &[("acme", 25), ("beta", 10)],
        3,
        1,
        4,
    )
    .await;

    let r = client().get(server.url("/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: StatusReport = r.json().await.unwrap();
    let want = StatusReport::read(server.queue.as_ref()).await.unwrap();
    assert_eq!(
        (got.queued, got.scheduled, got.running, got.done, got.dead),
        (8, 0, 0, 6, 2)
    );
    assert_eq!(
        (got.queued, got.done, got.dead, got.tenants.len()),
        (want.queued, want.done, want.dead, want.tenants.len())
    );
    assert_eq!(got.version, 1);
    assert_eq!(got.throughput.window_seconds, 60);
    assert_eq!(got.throughput.done, Some(6));

    let results = server.queue.results(None).await.unwrap();
    let done = results.iter().find(|r| r.status == JobState::Done).unwrap();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{}", done.job)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["status"], "done");
    assert_eq!(job["webhook_id"], done.webhook_id.clone().unwrap());
    let r = client()
        .get(server.url("/v1/jobs/no-such-job"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let r = client()
        .get(server.url("/v1/dead?limit=1"))
        .send()
        .await
        .unwrap();
    let dead: Value = r.json().await.unwrap();
    assert_eq!(dead["total"], 2);
    assert_eq!(dead["jobs"].as_array().unwrap().len(), 1);
    assert!(reasons.contains(&dead["jobs"][0]["error"].as_str().unwrap().to_string()));

    // Retry just one dead job by id.
    let id = dead["jobs"][0]["job"].as_str().unwrap().to_string();
    let r = client()
        .post(server.url("/v1/dead/retry"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "jobs": [id] }))
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["retried"], 1);
    assert_eq!(server.queue.status().await.unwrap().dead, 1);

    for (path, want) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], want);
    }
    let r = client().get(server.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_show_the_queue() {
    let server = Server::start(queue().await, ApiLimits::default()).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 5, 2, 3).await;
    server.metrics.job_finished(JobOutcome::Done);
    server.metrics.job_finished(JobOutcome::RateLimited);
    server
        .metrics
        .call_observed(std::time::Duration::from_millis(120), false);
    server
        .metrics
        .call_observed(std::time::Duration::from_millis(80), true);

    let r = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (state, n) in [
        ("queued", 3.0),
        ("scheduled", 0.0),
        ("running", 0.0),
        ("done", 5.0),
        ("dead", 2.0),
    ] {
        assert_eq!(
            m.value("lsq_queue_jobs", &[("state", state)]),
            Some(n),
            "{state}"
        );
    }
    assert_eq!(m.value("lsq_jobs_total", &[("outcome", "done")]), Some(1.0));
    assert_eq!(
        m.value("lsq_jobs_total", &[("outcome", "rate_limited")]),
        Some(1.0)
    );
    assert_eq!(m.value("lsq_jobs_total", &[("outcome", "dead")]), Some(0.0));
    assert_eq!(
        m.value("lsq_leadsquared_rate_limited_total", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.value("lsq_leadsquared_call_duration_seconds_count", &[]),
        Some(2.0)
    );
    assert_eq!(m.value("lsq_queue_done_last_minute", &[]), Some(5.0));
    assert_eq!(m.value("lsq_queue_status_up", &[]), Some(1.0));
    assert_eq!(
        m.types["lsq_leadsquared_call_duration_seconds"],
        "histogram"
    );
    assert_eq!(m.types["lsq_queue_jobs"], "gauge");
    assert_eq!(m.types["lsq_jobs_total"], "counter");
    server.stop().await;
}

#[test]
fn the_exposition_parser_refuses_what_prometheus_would() {
    let good = "# HELP a A.\n# TYPE a counter\na_total{x=\"1\"} 3\n";
    assert!(parse_exposition(good).is_ok());
    for bad in [
        "a_total 3\n",
        "# TYPE a counter\na_total -1\n",
        "# TYPE a counter\na_total{x=\"1} 3\n",
        "# TYPE a counter\na_total{1x=\"1\"} 3\n",
        "# TYPE a counter\na_total 3\na_total 4\n",
        "# TYPE a gauge\na 3 x\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 1\nh_sum 0\n",
        "# TYPE a gauge\na 3",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

#[tokio::test]
async fn a_store_that_is_down_gives_503_without_details_and_healthz_stays_up() {
    let mut redis = common::PrivateRedis::start(&[]).unwrap();
    let config = QueueConfig {
        name: common::unique_queue("down"),
        ..QueueConfig::default()
    };
    let queue = RedisQueue::connect(&redis.url(), config).await.unwrap();
    // A short request timeout: a store that is down either fails fast (refused) or makes
    // the request time out, and both must answer 503 the same way.
    let limits = ApiLimits {
        timeout: std::time::Duration::from_secs(2),
        ..ApiLimits::default()
    };
    let server = Server::start(Arc::new(queue), limits).await;
    let r = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    redis.kill();

    for path in ["/readyz", "/v1/status", "/v1/dead"] {
        let r = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(r.headers().get("retry-after").unwrap(), "1");
        let body = r.text().await.unwrap();
        assert!(
            [
                r#"{"error":"queue store unavailable"}"#,
                r#"{"error":"request timed out"}"#
            ]
            .contains(&body.as_str()),
            "{path}: {body}"
        );
    }
    let r = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Metrics still answer, with the process's own counters and the store marked down.
    let r = client().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let m = parse_exposition(&text).unwrap();
    assert_eq!(m.value("lsq_queue_status_up", &[]), Some(0.0));
    server.stop().await;
}
