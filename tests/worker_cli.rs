//! The `worker`, `results` and `dead` commands of the real binary against a real Redis.

mod common;
mod worker_support;

use std::process::{Command, Output};

use lsq_webhooks::job::NewJob;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, Pushed, Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;

fn lsq(queue: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &common::redis_url(), "--queue", queue])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
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
        "CustomHeaders": []
    })
}

/// A new queue (its name, and a connection) with one tenant, `tenant`, whose API is at
/// `api_base`; its keys are `ak-TENANT` and `sk-TENANT`.
async fn queue_with(prefix: &str, tenant: &str, api_base: &str) -> (String, RedisQueue) {
    let name = common::unique_queue(prefix);
    let queue = RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("queue");
    queue
        .put_tenants(&[Tenant {
            name: tenant.into(),
            api_base: Some(url::Url::parse(api_base).expect("url")),
            access_key: Secret::new(format!("ak-{tenant}")),
            secret_key: Secret::new(format!("sk-{tenant}")),
            limit: 25,
            reserve: 0,
            daily_limit: None,
        }])
        .await
        .expect("tenants");
    (name, queue)
}

#[tokio::test]
async fn results_and_dead_letters_through_the_binary() {
    // Every call answers 503: a transient failure about the call, which spends an attempt.
    // (A host that refuses connections holds its tenant instead: tests/worker_discovery.rs.)
    let down = common::always_503();
    let (name, queue) = queue_with("cli-dead", "down", &down).await;
    let mut jobs: Vec<NewJob> = (0..3)
        .map(|n| NewJob {
            delete: false,
            legacy_key: None,
            tenant: "down".into(),
            body: body(n).to_string(),
            key: format!("k{n}"),
        })
        .collect();
    jobs.push(NewJob {
        delete: false,
        legacy_key: None,
        tenant: "down".into(),
        body: serde_json::json!({"Description": 7}).to_string(),
        key: "broken".into(),
    });
    queue.push(&jobs).await.expect("push");

    let out = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            lsq(
                &name,
                &[
                    "worker",
                    "--exit-when-idle",
                    "--max-attempts",
                    "2",
                    "--retry-base-ms",
                    "5",
                    "--retry-cap-secs",
                    "1",
                    "--reconcile-settle-ms",
                    "10",
                ],
            )
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary counts every job that died during the run: the three out of attempts
    // (buried by the queue on their last retry) as well as the one it buried itself.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dead 4, dead by this worker 4"), "{err}");

    let csv = lsq(&name, &["results", "--format", "csv"]);
    assert!(csv.status.success());
    let mut reader = csv::Reader::from_reader(csv.stdout.as_slice());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(String::from)
        .collect();
    assert_eq!(
        header,
        [
            "job",
            "tenant",
            "key",
            "status",
            "webhook_id",
            "attempts",
            "error",
            "outcome"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        assert_eq!(&row[3], "dead");
        assert_eq!(&row[4], "");
        // What a job did is a done job's; a dead one did nothing.
        assert_eq!(&row[7], "");
        if &row[2] == "broken" {
            assert!(row[6].contains("does not decode"), "{:?}", &row[6]);
        } else {
            assert_eq!(&row[5], "2");
            assert!(row[6].contains("gave up after 2 attempts"), "{:?}", &row[6]);
        }
        assert!(!row[6].contains("sk-down") && !row[6].contains("ak-down"));
    }

    let only = lsq(&name, &["results", "--tenant", "nobody"]);
    assert!(only.status.success());
    assert_eq!(stdout(&only), "");

    let list = lsq(&name, &["dead", "list"]);
    assert!(list.status.success());
    let lines: Vec<serde_json::Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines.iter().all(|l| l["status"] == "dead"));
    let broken = lines
        .iter()
        .find(|l| l["key"] == "broken")
        .expect("broken job listed");
    let broken_id = broken["job"].as_str().expect("id").to_string();

    // Naming nothing is a usage error.
    let bad = lsq(&name, &["dead", "purge"]);
    assert_eq!(bad.status.code(), Some(2));

    let retried = lsq(&name, &["dead", "retry", &broken_id]);
    assert!(retried.status.success());
    assert_eq!(stdout(&retried).trim(), "retried 1");
    let status = queue.status().await.expect("status");
    assert_eq!((status.queued, status.dead), (1, 3));

    let purged = lsq(&name, &["dead", "purge", "--all"]);
    assert_eq!(stdout(&purged).trim(), "purged 3");
    assert_eq!(queue.dead().await.expect("dead").len(), 0);
    // The retried job is still there, waiting.
    assert_eq!(queue.status().await.expect("status").queued, 1);
}

/// SIGTERM in the middle of a run: the binary stops taking jobs, hands back the ones whose
/// calls are still running when the grace period ends, and exits 0; a second run finishes
/// the rest. No job is lost and no webhook is created twice.
/// `results --purge-done`: every row is written, then the done jobs' records go; the next
/// `results` shows only what is left, and the purged jobs' keys are still taken.
#[tokio::test]
async fn results_purge_done_through_the_binary() {
    let (name, queue) = queue_with("cli-purge-done", "acme", "http://127.0.0.1:9").await;
    let jobs: Vec<NewJob> = (0..3)
        .map(|n| NewJob {
            delete: false,
            legacy_key: None,
            tenant: "acme".into(),
            body: body(n).to_string(),
            key: format!("k{n}"),
        })
        .collect();
    queue.push(&jobs).await.expect("push");
    for n in 0..3 {
        let Dispatch::Job(job) = queue.dispatch().await.expect("dispatch") else {
            panic!("job {n} not dispatched");
        };
        if n < 2 {
            queue
                .complete(&job, &format!("wh-{n}"), false)
                .await
                .expect("complete");
        } else {
            queue.bury(&job, "refused").await.expect("bury");
        }
    }

    let out = lsq(&name, &["results", "--format", "csv", "--purge-done"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(out.stdout.as_slice())
        .records()
        .map(|r| r.expect("row"))
        .collect();
    let ids: Vec<(&str, &str)> = rows.iter().map(|r| (&r[3], &r[4])).collect();
    assert_eq!(ids, [("done", "wh-0"), ("done", "wh-1"), ("dead", "")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("purged 2 done record(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let after = lsq(&name, &["results"]);
    assert!(after.status.success());
    let left: Vec<serde_json::Value> = stdout(&after)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["status"], "dead");
    let status = queue.status().await.expect("status");
    assert_eq!((status.done, status.dead), (0, 1));
    let again = queue.push(&jobs[..1]).await.expect("push");
    assert!(matches!(again[0], Pushed::Duplicate { .. }), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_loses_no_job() {
    let sim_tenants = worker_support::tenants(
        &url::Url::parse("http://127.0.0.1:1").expect("url"),
        4,
        &[25],
    );
    let mut config = worker_support::sim_config(&sim_tenants, std::time::Duration::from_secs(5));
    // Slow answers, so that calls are in flight when the signal comes.
    config.faults.latency = std::time::Duration::from_millis(150);
    config.faults.latency_jitter = std::time::Duration::from_millis(250);
    let sim = worker_support::start_sim(config).await;
    let ts = worker_support::tenants(&sim.server.base_url(), 4, &[25]);
    let name = common::unique_queue("cli-term");
    let queue = worker_support::redis_queue_named(&name, &ts).await;
    queue
        .push(&worker_support::jobs(&ts, 15))
        .await
        .expect("push");

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &common::redis_url(), "--queue", &name])
        .args(["worker", "--concurrency", "8", "--shutdown-grace-secs", "0"])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");
    // Wait until some jobs are done and others are running.
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let s = queue.status().await.expect("status");
            if s.done >= 10 && s.running > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the worker makes progress");
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));

    let after = queue.status().await.expect("status");
    assert_eq!(
        after.running, 0,
        "every running job was finished or handed back"
    );
    assert_eq!(after.done + after.queued + after.scheduled + after.dead, 60);
    assert!(after.done < 60, "stopped mid-run: {after:?}");

    let rest = tokio::task::spawn_blocking({
        let name = name.clone();
        move || lsq(&name, &["worker", "--exit-when-idle"])
    })
    .await
    .expect("join");
    assert!(
        rest.status.success(),
        "{}",
        String::from_utf8_lossy(&rest.stderr)
    );
    worker_support::assert_all_done_and_matching(&queue, &sim.stats(), 60).await;
    assert_eq!(worker_support::rate_limit_answers(&sim.stats()), 0);
}

/// `job ID` shows each call a worker made, through the binary: every failed call of a job
/// the simulator always answers with a server error, then the same job found by its tenant
/// and idempotency key, and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_shows_each_call_the_worker_made() {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let sim_tenants = worker_support::tenants(&placeholder, 1, &[25]);
    let mut config = worker_support::sim_config(&sim_tenants, std::time::Duration::from_secs(5));
    config.faults.error_rate = 1.0;
    config.faults.seed = 7;
    let sim = worker_support::start_sim(config).await;
    let ts = worker_support::tenants(&sim.server.base_url(), 1, &[25]);
    let name = common::unique_queue("job-history");
    let queue = worker_support::redis_queue_named(&name, &ts).await;
    let jobs = worker_support::jobs(&ts, 1);
    let pushed = queue.push(&jobs).await.expect("push");
    let Pushed::Enqueued { job: id } = &pushed[0] else {
        panic!("{pushed:?}")
    };
    let out = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            lsq(
                &name,
                &[
                    "worker",
                    "--exit-when-idle",
                    "--max-attempts",
                    "3",
                    "--retry-base-ms",
                    "1",
                    "--reconcile-settle-ms",
                    "1",
                ],
            )
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = lsq(&name, &["job", &id.0]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let text = stdout(&text);
    assert!(text.contains("state       dead"), "{text}");
    let calls: Vec<&str> = text.lines().filter(|l| l.contains(" transient ")).collect();
    assert_eq!(calls.len(), 3, "{text}");
    assert!(calls[0].contains(" create "), "{text}");
    assert!(calls.iter().all(|l| l.contains(" 500 ")), "{text}");
    for secret in ["ak-", "sk-"] {
        assert!(!text.contains(secret), "{text}");
    }

    let by_key = lsq(
        &name,
        &[
            "job",
            "--tenant",
            &jobs[0].tenant,
            "--key",
            &jobs[0].key,
            "--json",
        ],
    );
    assert!(
        by_key.status.success(),
        "{}",
        String::from_utf8_lossy(&by_key.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&by_key)).expect("JSON");
    assert_eq!(v["job"], id.0.as_str());
    assert_eq!(v["status"], "dead");
    let history = v["history"].as_array().expect("history");
    assert_eq!(history.len(), 3, "{v}");
    for a in history {
        assert_eq!(a["outcome"], "transient", "{a}");
        assert_eq!(a["http_status"], 500, "{a}");
        assert!(a["at_ms"].as_u64().is_some() && a["duration_ms"].as_u64().is_some());
    }
    assert_eq!(history[0]["call"], "create");

    let missing = lsq(&name, &["job", "no-such-job"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no job no-such-job"));
}
