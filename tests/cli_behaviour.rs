//! The commands of the real binary when Redis is down or comes late, with JSON logs, and
//! on a second Ctrl-C (issue 15, "commands that behave").

mod common;
mod worker_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};

const BIN: &str = env!("CARGO_BIN_EXE_lsq-webhooks");

fn lsq(redis: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(["--redis", redis, "--queue", "t-behave"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("LSQ_LOG_FORMAT")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null());
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback port where nothing listens (refused at once).
fn closed_port() -> u16 {
    common::free_port()
}

/// Every read or write command, run against a Redis that is down.
fn one_shot_commands(dir: &std::path::Path) -> Vec<Vec<String>> {
    let jobs = dir.join("jobs.jsonl");
    std::fs::write(&jobs, "").expect("write jobs");
    let tenants = dir.join("tenants.csv");
    std::fs::write(
        &tenants,
        "tenant,api_base,access_key,secret_key\nacme,https://api.leadsquared.com,u$xk,sk\n",
    )
    .expect("write tenants");
    [
        vec!["status"],
        vec!["status", "--json"],
        vec!["results"],
        vec!["enqueue", jobs.to_str().expect("utf-8")],
        vec!["tenants", "list"],
        vec!["tenants", "import", tenants.to_str().expect("utf-8")],
        vec!["dead", "list"],
        vec!["status", "--tenants"],
        vec!["pause"],
        vec!["resume"],
        vec!["tenants", "pause", "acme"],
    ]
    .into_iter()
    .map(|a| a.into_iter().map(String::from).collect())
    .collect()
}

#[test]
fn with_redis_down_every_one_shot_command_fails_fast_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = format!("redis://:pw-never-shown@127.0.0.1:{}", closed_port());
    for args in one_shot_commands(dir.path()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let out = lsq(&redis, &args).output().expect("run");
        let took = started.elapsed();
        let err = stderr(&out);
        println!("{args:?}: {took:?}: {err}");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err:?}");
        assert!(
            err.starts_with("error: cannot reach the Redis queue at 127.0.0.1:"),
            "{args:?}: {err}"
        );
        assert!(err.contains("Connection refused"), "{args:?}: {err}");
        assert!(!err.contains("pw-never-shown"), "{args:?}: {err}");
        // The bound (before: 8-10 s of the connection manager's own retries).
        assert!(took < Duration::from_secs(3), "{args:?} took {took:?}");
    }
}

#[test]
fn a_redis_that_accepts_but_never_answers_fails_the_command_too() {
    // The kernel completes the handshake (backlog); nobody ever reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let started = Instant::now();
    let out = lsq(&format!("redis://127.0.0.1:{port}"), &["status"])
        .output()
        .expect("run");
    let took = started.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the Redis queue at 127.0.0.1:{port}"
        )),
        "{err}"
    );
    // The first connection has 2.5 s (src/queue/redis/connect.rs); the margin is for a
    // loaded machine.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    drop(silent);
}

#[test]
fn with_json_logs_every_line_on_stderr_is_json() {
    let port = closed_port();
    let down = format!("redis://127.0.0.1:{port}");
    let assert_json_lines = |what: &str, err: &str| {
        assert!(!err.trim().is_empty(), "{what}: nothing on stderr");
        for line in err.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line:?}"));
            assert!(
                v["level"].is_string() && v["message"].is_string(),
                "{what}: {line}"
            );
            assert!(v["timestamp"].is_string(), "{what}: {line}");
        }
    };

    // A fatal error.
    let out = lsq(&down, &["--log-format", "json", "status"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_json_lines("fatal error", &err);
    assert!(err.contains("\"level\":\"ERROR\""), "{err}");

    // A usage error, with the format from the environment.
    let out = lsq(&down, &["stauts"])
        .env("LSQ_LOG_FORMAT", "json")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_json_lines("usage error", &stderr(&out));

    // A worker's whole run against a real Redis: its logs and its run summary.
    let name = common::unique_queue("json-logs");
    let out = Command::new(BIN)
        .args(["--redis", &common::redis_url(), "--queue", &name])
        .args(["--log-format=json", "worker", "--exit-when-idle"])
        .env("RUST_LOG", "debug")
        .env_remove("LSQ_LOG_FORMAT")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_json_lines("worker run", &err);
    let last: serde_json::Value =
        serde_json::from_str(err.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["message"], "worker stopped", "{err}");
    assert_eq!(last["dispatched"], 0, "{err}");
    assert_eq!(last["handed_back"], 0, "{err}");
}

/// Reads a child's stderr lines into a channel.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line containing `needle`; returns the lines seen until then.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let found = line.contains(needle);
            seen.push(line);
            if found {
                return seen;
            }
        }
    }
    panic!("no line with {needle:?} in {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_redis_saying_so_and_goes_on_when_it_answers() {
    // Redis is down when the worker starts: a private one, started later on its port.
    let mut redis = common::PrivateRedis::start(&[]).expect("redis-server");
    redis.kill();
    let url = redis.url();
    let name = common::unique_queue("late-redis");
    let mut child = Command::new(BIN)
        .args([
            "--redis",
            &url,
            "--queue",
            &name,
            "worker",
            "--exit-when-idle",
        ])
        .env("RUST_LOG", "info")
        .env_remove("LSQ_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker");
    let rx = lines_of(&mut child);
    let first = wait_for(&rx, "waiting for Redis");
    assert!(
        first.last().is_some_and(|l| l.contains("tries=1")),
        "{first:#?}"
    );
    // And again while it waits.
    let again = wait_for(&rx, "tries=2");
    assert!(
        again
            .last()
            .is_some_and(|l| l.contains("waiting for Redis"))
    );
    assert!(
        first.iter().chain(&again).all(|l| l.contains("WARN")),
        "{first:#?} {again:#?}"
    );

    redis.restart().expect("restart redis");
    let rest = wait_for(&rx, "Redis answers");
    // --exit-when-idle: an empty queue, so it ends with the run summary.
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success(), "{rest:#?}");
    let summary: Vec<String> = rx.try_iter().collect();
    assert!(
        summary
            .iter()
            .any(|l| l.starts_with("dispatched 0, created 0")),
        "{summary:#?}"
    );
    // The queue was set up once Redis answered.
    let queue = RedisQueue::connect(
        &url,
        QueueConfig {
            name,
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect");
    assert_eq!(queue.status().await.expect("status").queued, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_a_worker_at_once_and_loses_no_job() {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let sim_tenants = worker_support::tenants(&placeholder, 2, &[25]);
    let mut config = worker_support::sim_config(&sim_tenants, Duration::from_secs(5));
    // Slow answers: calls are in flight when the signals come.
    config.faults.latency = Duration::from_millis(1500);
    let sim = worker_support::start_sim(config).await;
    let ts = worker_support::tenants(&sim.server.base_url(), 2, &[25]);
    let name = common::unique_queue("second-sigint");
    let queue = worker_support::redis_queue_named(&name, &ts).await;
    queue
        .push(&worker_support::jobs(&ts, 5))
        .await
        .expect("push");

    // A grace period far longer than the test: only the second signal can end it soon.
    let child = tokio::process::Command::new(BIN)
        .args(["--redis", &common::redis_url(), "--queue", &name])
        .args([
            "worker",
            "--concurrency",
            "4",
            "--shutdown-grace-secs",
            "600",
        ])
        .env("RUST_LOG", "info")
        .env_remove("LSQ_LOG_FORMAT")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker");
    tokio::time::timeout(Duration::from_secs(60), async {
        while queue.status().await.expect("status").running == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("calls in flight");
    let pid = child.id().expect("pid").to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    };
    signal("-INT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal("-INT");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the second signal ends it")
        .expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("second signal: stopping at once"), "{err}");
    let after = queue.status().await.expect("status");
    assert!(after.running > 0, "stopped with calls in flight: {after:?}");

    // Their leases expire, and another worker finishes every job, none twice.
    let rest = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            Command::new(BIN)
                .args(["--redis", &common::redis_url(), "--queue", &name])
                .args([
                    "worker",
                    "--exit-when-idle",
                    "--reconcile-settle-ms",
                    "3000",
                ])
                .env("RUST_LOG", "warn")
                .output()
                .expect("run")
        }
    })
    .await
    .expect("join");
    assert!(rest.status.success(), "{}", stderr(&rest));
    worker_support::assert_all_done_and_matching(&queue, &sim.stats(), 10).await;
}

/// The next job the queue hands out (waiting out a window if need be).
async fn next_job(queue: &RedisQueue) -> lsq_webhooks::queue::LeasedJob {
    loop {
        match queue.dispatch().await.expect("dispatch") {
            lsq_webhooks::queue::Dispatch::Job(j) => return j,
            lsq_webhooks::queue::Dispatch::Wait(d) => tokio::time::sleep(d).await,
            lsq_webhooks::queue::Dispatch::Empty => panic!("nothing queued"),
        }
    }
}

/// `serve --done-ttl-secs`: done records older than the TTL are deleted (newer ones stay),
/// and the deleted jobs' keys stay taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_deletes_done_records_older_than_the_ttl() {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let ts = worker_support::tenants(&placeholder, 1, &[25]);
    let name = common::unique_queue("retention");
    let queue = worker_support::redis_queue_named(&name, &ts).await;
    let jobs = worker_support::jobs(&ts, 3);
    queue.push(&jobs).await.expect("push");
    for _ in 0..2 {
        let j = next_job(&queue).await;
        queue.complete(&j, "wh", false).await.expect("complete");
    }
    // The TTL is 4 s: the fresh record has nearly 4 s before it is old too.
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let fresh = next_job(&queue).await;
    queue.complete(&fresh, "wh", false).await.expect("complete");

    let port = common::free_port();
    let child = tokio::process::Command::new(BIN)
        .args(["--redis", &common::redis_url(), "--queue", &name])
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--done-ttl-secs", "4"])
        .env("LSQ_API_TOKEN", "a-token-of-sixteen-chars")
        .env("RUST_LOG", "info")
        .env_remove("LSQ_LOG_FORMAT")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start serve");
    tokio::time::timeout(Duration::from_secs(30), async {
        while queue.status().await.expect("status").done > 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("old done records deleted");
    let pid = child.id().expect("pid").to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops")
        .expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("retention: deleted done records older than the TTL"),
        "{err}"
    );
    assert!(err.contains("deleted=2"), "{err}");
    assert_eq!(
        queue.job(&fresh.id).await.expect("job").map(|r| r.status),
        Some(lsq_webhooks::job::JobState::Done)
    );
    let again = queue.push(&jobs[..1]).await.expect("push");
    assert!(
        matches!(again[0], lsq_webhooks::queue::Pushed::Duplicate { .. }),
        "{again:?}"
    );

    let refused = lsq(&common::redis_url(), &["worker", "--done-ttl-secs", "0"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}
