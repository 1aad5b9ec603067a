//! The HTTP API of `serve`, driven through a real server on a free port: auth, bad and huge
//! bodies, jobs, status, dead letters, metrics in Prometheus text format, and the OpenAPI
//! description against what the server answers.

#![allow(clippy::unwrap_used)]

mod common;
mod ops_support;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use lsq_webhooks::job::JobState;
use lsq_webhooks::ops::api::OPENAPI;
use lsq_webhooks::ops::metrics::{CallOutcome, MAX_TENANT_LABELS};
use lsq_webhooks::ops::{ApiLimits, JobOutcome, StatusReport};
use lsq_webhooks::producer;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, HoldKind, NewHold, Queue, QueueConfig};
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
    let call = lsq_webhooks::job::Attempt {
        at_ms: 1_796_125_200_000,
        call: "create".into(),
        outcome: "created".into(),
        http_status: None,
        exception_type: None,
        duration_ms: 87,
        error: None,
    };
    server.queue.note_attempt(&done.job, &call).await.unwrap();
    let r = client()
        .get(server.url(&format!("/v1/jobs/{}", done.job)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["status"], "done");
    assert_eq!(job["webhook_id"], done.webhook_id.clone().unwrap());
    assert_eq!(
        job["history"],
        serde_json::json!([{"at_ms": 1_796_125_200_000u64, "call": "create", "outcome": "created", "duration_ms": 87}])
    );
    // The same job by its tenant and idempotency key.
    let r = client()
        .get(server.url("/v1/jobs/by-key"))
        .query(&[("tenant", done.tenant.as_str()), ("key", done.key.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let same: Value = r.json().await.unwrap();
    assert_eq!(same, job);
    for query in [
        vec![("tenant", "acme"), ("key", "nope")],
        vec![("tenant", "acme")],
    ] {
        let r = client()
            .get(server.url("/v1/jobs/by-key"))
            .query(&query)
            .send()
            .await
            .unwrap();
        let want = if query.len() == 2 {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status(), want, "{query:?}");
    }
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
        .call_observed(std::time::Duration::from_millis(120), CallOutcome::Ok);
    server.metrics.call_observed(
        std::time::Duration::from_millis(80),
        CallOutcome::RateLimited,
    );
    // The 3 waiting jobs were pushed before this sleep: the queue's latency is at least it.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

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
    for (outcome, n) in [
        ("ok", 1.0),
        ("rate_limited", 1.0),
        ("transient", 0.0),
        ("permanent", 0.0),
    ] {
        assert_eq!(
            m.value(
                "lsq_leadsquared_call_duration_seconds_count",
                &[("outcome", outcome)]
            ),
            Some(n),
            "{outcome}"
        );
    }
    // Jobs ever done on the queue (the process's own count above is 1).
    assert_eq!(m.value("lsq_jobs_done_total", &[]), Some(5.0));
    assert_eq!(m.types["lsq_jobs_done_total"], "counter");
    let latency = m.value("lsq_queue_latency_seconds", &[]).unwrap();
    assert!(latency >= 0.3, "{latency}\n{text}");
    let acme = m
        .value("lsq_tenant_latency_seconds", &[("tenant", "acme")])
        .unwrap();
    assert_eq!(acme, latency, "one tenant: its latency is the queue's");
    // No two metric names differ by one letter (lsq_tenant_throttled / lsq_tenants_throttled).
    let names: Vec<&String> = m.types.keys().collect();
    for a in &names {
        for b in &names {
            assert!(
                a == b || !one_letter_apart(a, b),
                "{a} and {b} differ by one letter"
            );
        }
    }
    assert_eq!(m.value("lsq_queue_status_up", &[]), Some(1.0));
    assert_eq!(
        m.types["lsq_leadsquared_call_duration_seconds"],
        "histogram"
    );
    assert_eq!(m.types["lsq_queue_jobs"], "gauge");
    assert_eq!(m.types["lsq_jobs_total"], "counter");
    server.stop().await;
}

/// Issue 15: the share families come from the queue's bounded pulse on every scrape (no
/// read of every tenant, no 30 s cache): the counts cover every tenant, at most 50 tenants
/// get labels, the cut ones first, and a hold shows at the next scrape.
#[tokio::test]
async fn share_families_are_bounded_and_read_at_every_scrape() {
    let server = Server::start(queue().await, ApiLimits::default()).await;
    let q = server.queue.as_ref();
    // acme: two calls, the second answered "rate limited" (ours cannot explain it): the
    // share is cut from 10 to 5.
    fill(q, &[("acme", 10)], 1, 0, 1).await;
    let Dispatch::Job(j) = q.dispatch().await.unwrap() else {
        panic!("acme's job")
    };
    q.rate_limited(&j, std::time::Duration::ZERO, None)
        .await
        .unwrap();
    // 60 more tenants, one waiting job each.
    let many: Vec<(String, u32)> = (0..60).map(|n| (format!("t{n:02}"), 25)).collect();
    let many: Vec<(&str, u32)> = many.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    fill(q, &many, 0, 0, 1).await;
    let hold = NewHold {
        kind: HoldKind::Paused,
        reason: "asked".into(),
        length: None,
        by: None,
    };
    assert!(q.hold("t07", hold).await.unwrap());

    let scrape = || async {
        let text = client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let m = scrape().await;
    assert_eq!(m.value("lsq_tenants_share_cut", &[]), Some(1.0));
    // One call of ours in a window of 10 refused: another client holds the rest of it, so
    // the share is cut to its floor (see queue::share::after_refusal), climbing slowly since.
    let share = m
        .value(
            "lsq_tenant_share",
            &[("tenant", "acme"), ("reason", "shared")],
        )
        .unwrap();
    assert!((1.0..1.5).contains(&share), "{share}");
    assert!(
        m.value("lsq_tenant_other_use_estimate", &[("tenant", "acme")])
            .is_some_and(|o| o > 0.0)
    );
    assert_eq!(
        m.value("lsq_tenant_limit", &[("tenant", "acme")]),
        Some(10.0)
    );
    assert_eq!(
        m.value("lsq_tenant_calls_today", &[("tenant", "acme")]),
        Some(2.0)
    );
    assert_eq!(m.value("lsq_tenants_quota_reached", &[]), Some(0.0));
    assert_eq!(
        m.value("lsq_tenants_held", &[("kind", "paused")]),
        Some(1.0)
    );
    for family in [
        "lsq_tenant_limit",
        "lsq_tenant_share",
        "lsq_tenant_calls_today",
    ] {
        let tenants: BTreeSet<&str> = m
            .samples
            .iter()
            .filter(|s| s.name == family)
            .map(|s| s.labels["tenant"].as_str())
            .collect();
        assert_eq!(tenants.len(), MAX_TENANT_LABELS, "{family}");
        assert!(tenants.contains("acme"), "{family}");
    }
    // The release shows at once.
    q.release("t07").await.unwrap();
    let m = scrape().await;
    assert_eq!(
        m.value("lsq_tenants_held", &[("kind", "paused")]),
        Some(0.0)
    );
    server.stop().await;
}

/// Whether `b` is `a` with one letter added, dropped or changed.
fn one_letter_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let (short, long) = if a.len() <= b.len() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    match long.len() - short.len() {
        0 => a.iter().zip(&b).filter(|(x, y)| x != y).count() == 1,
        1 => (0..long.len()).any(|skip| {
            long.iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, c)| c)
                .eq(short.iter())
        }),
        _ => false,
    }
}

#[test]
fn the_exposition_parser_refuses_what_prometheus_would() {
    assert!(one_letter_apart(
        "lsq_tenant_throttled",
        "lsq_tenants_throttled"
    ));
    assert!(!one_letter_apart(
        "lsq_tenant_share",
        "lsq_tenants_share_cut"
    ));
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

/// A POST of `body` as `content_type` to `/v1/jobs` with the token.
async fn post_jobs(server: &Server, content_type: &str, body: String) -> (StatusCode, Value) {
    let r = client()
        .post(server.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

fn job_json(tenant: &str, n: usize) -> Value {
    serde_json::json!({ "tenant": tenant, "webhook": ops_support::webhook(n) })
}

#[tokio::test]
async fn post_jobs_validates_like_enqueue_and_is_idempotent() {
    let limits = ApiLimits {
        max_jobs_per_request: 5,
        ..ApiLimits::default()
    };
    let server = Server::start(queue().await, limits).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 0, 0, 0).await;

    // One object.
    let (status, body) =
        post_jobs(&server, "application/json", job_json("acme", 1).to_string()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["enqueued"].as_u64(), body["duplicate"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(body["jobs"][0]["result"], "enqueued");
    let id = body["jobs"][0]["job"].as_str().unwrap().to_string();
    // The same job again (keys in another order): a duplicate of the first.
    let reordered = r#"{"webhook": WEBHOOK, "tenant": "acme"}"#
        .replace("WEBHOOK", &ops_support::webhook(1).to_string());
    let (status, body) = post_jobs(&server, "application/json; charset=utf-8", reordered).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        (body["enqueued"].as_u64(), body["duplicate"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(body["jobs"][0]["job"], id.as_str());
    let job: Value = client()
        .get(server.url(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "queued");

    // An array with a bad URL (its custom header carries a secret) and an unknown tenant:
    // 400 with one error per problem, nothing enqueued, and the secret not echoed.
    let mut bad = job_json("acme", 2);
    bad["webhook"]["URL"] = "not a url".into();
    bad["webhook"]["CustomHeaders"] =
        serde_json::json!([{"Key": "x-api-key", "Value": "SECRET-HDR-VALUE"}]);
    let array = serde_json::json!([job_json("acme", 3), bad, job_json("nobody", 4)]);
    let (status, body) = post_jobs(&server, "application/json", array.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid jobs");
    let errors = body["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["index"] == 1 && e["field"] == "webhook.URL"),
        "{body}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e["index"] == 2 && e["field"] == "tenant"),
        "{body}"
    );
    assert!(errors.iter().all(|e| e["index"] != 0), "{body}");
    assert!(!body.to_string().contains("SECRET-HDR-VALUE"));
    assert_eq!(server.queue.status().await.unwrap().queued, 1);

    // JSON Lines: line numbers, blank lines skipped.
    let lines = format!("{}\n\n{{not json\n", job_json("acme", 5));
    let (status, body) = post_jobs(&server, "application/x-ndjson", lines).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["line"], 3);
    assert_eq!(body["errors"][0]["field"], "json");
    assert!(body["errors"][0].get("index").is_none());
    let lines = format!("{}\n\n{}\n", job_json("acme", 5), job_json("acme", 6));
    let (status, body) = post_jobs(&server, "application/x-ndjson", lines).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["enqueued"], 2);
    assert_eq!(server.queue.status().await.unwrap().queued, 3);

    // Not a job at all, too many jobs, no jobs, and the wrong media type.
    for (content_type, body, want) in [
        ("application/json", "5".to_string(), StatusCode::BAD_REQUEST),
        (
            "application/json",
            "[1".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            "[]".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            serde_json::json!((0..6).map(|i| job_json("acme", 10 + i)).collect::<Vec<_>>())
                .to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text/plain",
            job_json("acme", 7).to_string(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let (status, answer) = post_jobs(&server, content_type, body.clone()).await;
        assert_eq!(status, want, "{content_type} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(server.queue.status().await.unwrap().queued, 3);
    // Without the token: refused.
    let r = client()
        .post(server.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(job_json("acme", 8).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn huge_job_bodies_get_413() {
    let limits = ApiLimits {
        max_body_bytes: 256 * 1024,
        ..ApiLimits::default()
    };
    let server = Server::start(queue().await, limits).await;
    let mut big = job_json("acme", 1);
    big["webhook"]["Description"] = "d".repeat(1024 * 1024).into();
    let (status, body) = post_jobs(&server, "application/json", big.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "request body is larger than 262144 bytes");
    server.stop().await;
}
/// Resolves a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut at = doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            resolve(doc, at)
        }
        None => v,
    }
}

/// The routes `app` registers, read from its source, so a route added without a line in
/// the OpenAPI document fails this test.
fn routes_in_code() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/ops/api/routes.rs");
    let mut out = BTreeSet::new();
    let app_fn = src
        .split("pub fn app(")
        .nth(1)
        .and_then(|s| s.split("\n}\n").next())
        .unwrap();
    for part in app_fn.split(".route(\"").skip(1) {
        let path = part.split('"').next().unwrap().to_string();
        let method = part.split(", ").nth(1).unwrap().split('(').next().unwrap();
        out.insert((path, method.to_uppercase()));
    }
    out
}

#[tokio::test]
async fn the_openapi_document_and_the_server_agree() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let server = Server::start(queue().await, ApiLimits::default()).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 1, 1, 1).await;
    let job = server.queue.results(None).await.unwrap()[0].job.clone();

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((path.clone(), method.to_uppercase()));
            let url = server.url(&path.replace("{id}", &job.0).replace("{name}", "acme"));
            let mut req = client().request(method.to_uppercase().parse().unwrap(), &url);
            if op.get("security").is_some() {
                req = req.bearer_auth(TOKEN);
            }
            if method == "post" {
                req = req
                    .header("content-type", "application/json")
                    .body(if path == "/v1/jobs" {
                        serde_json::json!({"tenant": "acme", "webhook": ops_support::webhook(99)})
                            .to_string()
                    } else {
                        "{}".to_string()
                    });
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16().to_string();
            let responses = &op["responses"];
            let answer = responses
                .get(&status)
                .unwrap_or_else(|| panic!("{method} {path}: {status} is not documented"));
            let answer = resolve(&doc, answer);
            let content_type = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let media = answer["content"]
                .as_object()
                .unwrap()
                .keys()
                .find(|m| content_type.starts_with(m.as_str()))
                .unwrap_or_else(|| {
                    panic!("{method} {path}: content-type {content_type} not documented")
                })
                .clone();
            let body = r.text().await.unwrap();
            if media == "application/json" {
                let v: Value = serde_json::from_str(&body).unwrap();
                let schema = resolve(&doc, &answer["content"][&media]["schema"]);
                for field in schema["required"].as_array().into_iter().flatten() {
                    let field = field.as_str().unwrap();
                    assert!(
                        v.get(field).is_some(),
                        "{method} {path}: no {field} in {body}"
                    );
                }
            }
            // Every operation that needs the token refuses a request without it.
            if op.get("security").is_some() {
                let r = client()
                    .request(method.to_uppercase().parse().unwrap(), &url)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
                assert!(
                    responses.get("401").is_some(),
                    "{method} {path}: 401 undocumented"
                );
            }
        }
    }
    // Both ways: every route of `app` is documented, and every documented operation is a
    // route (the loop above has already seen each answer as documented).
    assert_eq!(routes_in_code(), documented);
    assert_eq!(documented.len(), 19);
    // The document is served too.
    let r = client()
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, doc);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_and_slow_requests_time_out() {
    // A Redis of our own, paused with CLIENT PAUSE WRITE: the queue's scripts hang while we
    // look (Redis cannot tell they only read), plain commands such as UNPAUSE do not.
    let redis = common::PrivateRedis::start(&[]).unwrap();
    let config = QueueConfig {
        name: common::unique_queue("shed"),
        ..QueueConfig::default()
    };
    let queue = RedisQueue::connect(&redis.url(), config).await.unwrap();
    let limits = ApiLimits {
        concurrency: 1,
        timeout: std::time::Duration::from_secs(1),
        ..ApiLimits::default()
    };
    let server = Server::start(Arc::new(queue), limits).await;
    let mut admin = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(30000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();

    // One request holds the only slot, stuck on Redis until its timeout, so others are
    // refused at once while it is in flight. A probe that holds the slot just as the status
    // request arrives gets that one shed instead ("server busy", at once): then again.
    let mut shed = None;
    let mut stuck = None;
    for _ in 0..20 {
        let status = tokio::spawn({
            let url = server.url("/v1/status");
            async move { client().get(url).send().await.unwrap() }
        });
        while !status.is_finished() {
            let r = client().get(server.url("/healthz")).send().await.unwrap();
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                shed = Some(r);
                break;
            }
        }
        let status = status.await.unwrap();
        if shed.is_some() {
            stuck = Some(status);
            break;
        }
        let body: Value = status.json().await.unwrap();
        assert_eq!(body["error"], "server busy, try again", "{body}");
    }
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query_async(&mut admin)
        .await
        .unwrap();
    let shed = shed.expect("no request was shed while the slot was taken");
    let stuck = stuck.expect("the status request held the slot");
    assert_eq!(shed.headers().get("retry-after").unwrap(), "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"], "server busy, try again");
    assert_eq!(stuck.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = stuck.json().await.unwrap();
    assert_eq!(body["error"], "request timed out");
    let r = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
}

/// A client of its own: requests leave from `ip` (any 127.x address is this host).
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn post_job_from(client: &reqwest::Client, server: &Server, n: usize) -> reqwest::Response {
    client
        .post(server.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(job_json("acme", n).to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_flooding_post_jobs_gets_429_while_another_is_accepted() {
    let limits = ApiLimits {
        job_posts_per_client_per_sec: 2,
        ..ApiLimits::default()
    };
    let server = Server::start(queue().await, limits).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 0, 0, 0).await;
    let (flooder, other) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));

    // A client's first request always finds its burst whole. A flood spends it and meets
    // 429, however slowly this machine sends (the burst refills at 2 a second, so 200
    // requests in a row all accepted would take a machine at over 0.5 s per request).
    let r = post_job_from(&flooder, &server, 0).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut refused = None;
    for n in 1..200 {
        let r = post_job_from(&flooder, &server, n).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let refused = refused.expect("200 posts in a row from one client were all accepted");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["error"],
        format!("too many requests from this client; retry after {retry_after} s")
    );

    // Another client has a burst of its own.
    let r = post_job_from(&other, &server, 1000).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The flooder's reads are not limited, and a write without the token is refused for
    // that before any rate is counted.
    let r = flooder.get(server.url("/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = flooder
        .post(server.url("/v1/jobs"))
        .header("content-type", "application/json")
        .body(job_json("acme", 0).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn a_job_post_limit_of_zero_is_no_limit() {
    let limits = ApiLimits {
        job_posts_per_client_per_sec: 0,
        ..ApiLimits::default()
    };
    let server = Server::start(queue().await, limits).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 0, 0, 0).await;
    let client = client();
    for n in 0..30 {
        let r = post_job_from(&client, &server, n).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "post {n}");
    }
    server.stop().await;
}

/// `POST /v1/jobs` checks a job as `enqueue` checks a line of a job file
/// (`producer::check_jobs`): a line `enqueue` accepts is accepted, and a line it refuses is
/// refused with the same problems, in the same order, in the same words.
#[tokio::test]
async fn post_jobs_accepts_and_refuses_the_lines_enqueue_does() {
    let server = Server::start(queue().await, ApiLimits::default()).await;
    fill(server.queue.as_ref(), &[("acme", 25)], 0, 0, 0).await;
    let registered: HashSet<String> = server
        .queue
        .tenant_names()
        .await
        .unwrap()
        .into_iter()
        .collect();

    let with = |tenant: &str, n: usize, change: &dyn Fn(&mut Value)| {
        let mut job = job_json(tenant, n);
        change(&mut job);
        job.to_string()
    };
    let lines = [
        with("acme", 1, &|_| {}),
        with("acme", 2, &|j| j["key"] = "order-2".into()),
        // An unknown tenant and a bad URL: two problems, the tenant's first.
        with("nobody", 3, &|j| j["webhook"]["URL"] = "not a url".into()),
        with("bad name", 4, &|_| {}),
        with("acme", 5, &|j| j["key"] = "".into()),
        with("acme", 6, &|j| j["extra"] = 1.into()),
        with("acme", 7, &|j| j["webhook"]["WebhookEvent"] = "10".into()),
        with("acme", 8, &|j| {
            j["webhook"]["CustomHeaders"] = serde_json::json!([{"Key": "a b", "Value": "v"}])
        }),
        with("acme", 9, &|j| {
            j.as_object_mut().map(|o| o.remove("webhook"));
        }),
        "{\"tenant\": \"acme\"".to_string(),
        // What LeadSquared can only refuse: an activity or opportunity event without its
        // properties, and parts over their size limits (issue 27).
        with("acme", 10, &|j| j["webhook"]["WebhookEvent"] = "2".into()),
        with("acme", 11, &|j| j["webhook"]["WebhookEvent"] = "31".into()),
        with("acme", 12, &|j| {
            j["webhook"]["URL"] = format!("https://h.example/{}", "a".repeat(3000)).into()
        }),
        with(
            "acme",
            13,
            &|j| {
                j["webhook"]["CustomHeaders"] =
                    serde_json::json!([{"Key": "x-k", "Value": "v".repeat(5000)}])
            },
        ),
    ];
    let (mut accepted, mut refused) = (0, 0);
    for line in lines {
        let file = producer::check_jobs(
            line.as_bytes(),
            &registered,
            &lsq_webhooks::leadsquared::BodyLimits::default(),
        );
        let (status, body) = post_jobs(&server, "application/x-ndjson", line.clone()).await;
        if file.errors.is_empty() {
            assert_eq!(status, StatusCode::ACCEPTED, "{line}: {body}");
            assert_eq!(body["enqueued"], 1, "{line}: {body}");
            accepted += 1;
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{line}: {body}");
            let want: Vec<(u64, String, String)> = file
                .errors
                .iter()
                .map(|e| (e.line, e.field.clone(), e.reason.clone()))
                .collect();
            let got: Vec<(u64, String, String)> = body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["line"].as_u64().unwrap(),
                        e["field"].as_str().unwrap().to_string(),
                        e["reason"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            assert_eq!(got, want, "{line}");
            refused += 1;
        }
    }
    assert_eq!((accepted, refused), (2, 12));
    assert_eq!(server.queue.status().await.unwrap().queued, 2);
    server.stop().await;
}

/// Issue 15: `GET /v1/tenants` pages the tenants view (bad sorts, filters and cursors are
/// 400), and the pause routes need the token, hold and release a tenant or the whole queue,
/// and show in status and metrics. No key in any answer.
#[tokio::test]
async fn tenants_view_and_pause_routes_over_http() {
    let server = Server::start(queue().await, ApiLimits::default()).await;
    fill(
        server.queue.as_ref(),
        &[("acme", 25), ("beta", 25)],
        1,
        1,
        1,
    )
    .await;
    let get = |path: &str| {
        let url = server.url(path);
        async move {
            let r = client().get(url).send().await.unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    let post = |path: &str, token: Option<&str>, body: &str| {
        let mut req = client().post(server.url(path)).body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        }
    };
    let no_secret = |body: &str| {
        for secret in ["ak-acme", "sk-acme", "ak-beta", "sk-beta"] {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    };
    let paused_metric = || async {
        let (_, text) = get("/metrics").await;
        let m = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        m.value("lsq_queue_paused", &[])
    };

    let (status, body) = get("/v1/tenants?sort=dead&limit=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    no_secret(&body);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 2);
    assert_eq!(page["tenants"][0]["tenant"], "acme");
    assert_eq!(page["tenants"][0]["state"], "waiting");
    assert_eq!(
        (&page["tenants"][0]["done"], &page["tenants"][0]["dead"]),
        (&Value::from(1), &Value::from(1))
    );
    let (_, body) = get(&format!(
        "/v1/tenants?sort=dead&cursor={}",
        page["next"].as_str().unwrap()
    ))
    .await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["tenants"][0]["tenant"], "beta");
    assert_eq!(page["next"], Value::Null);
    for bad in ["sort=size", "filter=sleepy", "cursor=abc"] {
        let (status, body) = get(&format!("/v1/tenants?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // A tenant: the token is needed, an unknown one is 404, a bad body 400.
    let reason = r#"{"reason":"the customer asked","by":"ana"}"#;
    let (status, _) = post("/v1/tenants/acme/pause", None, reason).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        "/v1/tenants/acme/resume",
        Some("wrong-token-0123456789"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = post("/v1/tenants/nobody/pause", Some(TOKEN), reason).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for bad in [r#"{"why":"x"}"#, r#"{"reason":"two\nlines"}"#, "not json"] {
        let (status, _) = post("/v1/tenants/acme/pause", Some(TOKEN), bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(server.queue.tenant_hold("acme").await.unwrap(), None);
    let (status, body) = post("/v1/tenants/acme/pause", Some(TOKEN), reason).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    no_secret(&body);
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["hold"]["kind"], "paused");
    assert_eq!(answer["hold"]["by"], "ana");
    let (_, body) = get("/v1/tenants?filter=held").await;
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(page["tenants"][0]["hold"]["reason"], "the customer asked");
    let (status, body) = post("/v1/tenants/acme/resume", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ended"]["by"], "ana");
    assert_eq!(server.queue.tenant_hold("acme").await.unwrap(), None);

    // The queue.
    assert_eq!(paused_metric().await, Some(0.0));
    let (status, _) = post("/v1/pause", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post("/v1/pause", Some(TOKEN), r#"{"reason":"deploy"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["paused"]["reason"], &answer["paused"]["by"]),
        (&Value::from("deploy"), &Value::from("api"))
    );
    let (_, body) = get("/v1/status").await;
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["paused"]["reason"], "deploy");
    assert_eq!(paused_metric().await, Some(1.0));
    let (status, _) = post("/v1/resume", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = post("/v1/resume", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["ended"]["reason"], "deploy");
    let (_, body) = get("/v1/status").await;
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["paused"], Value::Null);
    assert_eq!(paused_metric().await, Some(0.0));
    server.stop().await;
}
