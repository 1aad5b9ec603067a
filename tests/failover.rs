//! Surviving a Redis failover (issue 16): Sentinel URLs, acknowledged writes, workers that
//! follow the new primary.
//!
//! Real parts: a primary, a replica and three sentinels ([`common::sentinel`]), worker
//! processes of the real binary, the simulator over loopback HTTP. The chaos runs SIGKILL
//! the primary mid-run, let the sentinels promote the replica, start the killed node again
//! as a replica of the new primary (as an orchestrator that asks the sentinels does), and
//! end with the checks of tests/chaos.rs: every job done with its Id recorded, nothing lost,
//! no webhook created twice (the simulator's own count, and one webhook per description).
//! Each run prints one `failover ...` line with its timings: kill to promotion, and
//! promotion to the first completion on the new primary (the workers resuming).
//!
//! Runs take turns (a lock): each starts eight processes.

mod common;
mod ops_support;
mod worker_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::sentinel::SentinelSet;
use lsq_webhooks::job::{JobState, NewJob};
use lsq_webhooks::queue::ReplicationMode;
use lsq_webhooks::queue::redis::{RedisOptions, RedisQueue};
use lsq_webhooks::queue::{Pushed, Queue, QueueConfig, QueueError};
use lsq_webhooks::sim::Faults;
use lsq_webhooks::tenant::Tenant;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use worker_support::Sim;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A bound against hanging, not a performance assertion.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
/// The bound: workers resume within this long of the promotion.
const RESUME_BOUND: Duration = Duration::from_secs(10);

fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
}

/// Runs the binary with `args`, and returns exit code, stderr, and how long it took.
fn run(args: &[&str]) -> (i32, String, Duration) {
    let started = std::time::Instant::now();
    let out = bin()
        .args(args)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run lsq-webhooks");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        started.elapsed(),
    )
}

#[test]
fn a_malformed_sentinel_url_is_exit_2_and_names_what_is_wrong() {
    for (url, says) in [
        ("redis+sentinel://:hunter2@127.0.0.1:1", "names no master"),
        (
            "redis+sentinel://:hunter2@127.0.0.1:notaport/m",
            "sentinel 1",
        ),
        (
            "redis+sentinel://:hunter2@127.0.0.1:1/m?colour=red",
            "unknown option \"colour\"",
        ),
        ("redis+sentinal://:hunter2@127.0.0.1:1/m", "unknown scheme"),
    ] {
        let (code, text, _) = run(&["--redis", url, "status"]);
        assert_eq!(code, 2, "{url}: {text}");
        assert!(text.contains(says), "{url}: {text}");
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
    }
}

#[test]
fn no_sentinel_answering_is_exit_1_within_seconds_and_writes_nothing() {
    let ports = [common::free_port(), common::free_port()];
    let url = format!(
        "redis+sentinel://:hunter2@127.0.0.1:{},127.0.0.1:{}/main",
        ports[0], ports[1]
    );
    let (code, text, took) = run(&["--redis", &url, "status"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no sentinel of"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {text}");
}

#[test]
fn an_unknown_master_name_is_exit_1_within_seconds_and_writes_nothing() {
    let set = SentinelSet::start("known");
    let url = set.url().replace("/known", "/unknown");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tenants.csv");
    std::fs::write(
        &file,
        "tenant,api_base,access_key,secret_key\nacme,http://127.0.0.1:9,ak,sk\n",
    )
    .expect("tenants file");
    let before = common::sentinel::cli(set.nodes[0], &["dbsize"]);
    let file = file.display().to_string();
    let (code, text, took) = run(&["--redis", &url, "tenants", "import", &file]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("no sentinel of") && text.contains("\"unknown\""),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}: {text}");
    assert_eq!(common::sentinel::cli(set.nodes[0], &["dbsize"]), before);
    // The same command with the right name goes through the sentinels to the primary.
    let (code, text, _) = run(&["--redis", &set.url(), "tenants", "import", &file]);
    assert_eq!(code, 0, "{text}");
    assert_ne!(common::sentinel::cli(set.nodes[0], &["dbsize"]), before);
}

/// With `--min-replicas 1 --replication strict` on a Redis that has no replica, a push
/// reaches the primary but is not acknowledged: the producer is told so, and told that
/// retrying is safe.
#[tokio::test]
async fn a_push_no_replica_confirmed_is_not_acknowledged() {
    let redis = common::PrivateRedis::start(&[]).expect("redis-server");
    let config = QueueConfig {
        name: common::unique_queue("unacked"),
        ..QueueConfig::default()
    };
    let queue = RedisQueue::connect_with(
        &redis.url(),
        config,
        RedisOptions {
            min_replicas: Some(1),
            replica_timeout: Duration::from_millis(100),
            replication: ReplicationMode::Strict,
            ..RedisOptions::default()
        },
    )
    .await
    .expect("connect");
    let tenants = worker_support::tenants(
        &url::Url::parse("http://127.0.0.1:9").expect("url"),
        1,
        &[50],
    );
    queue.put_tenants(&tenants).await.expect("tenants");
    let err = queue
        .push(&jobs("unacked", &tenants, 1, 0))
        .await
        .expect_err("not acknowledged");
    assert!(
        matches!(
            err,
            QueueError::NotReplicated {
                what: "push",
                acked: 0,
                wanted: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unavailable(), "retried like an unavailable store");
    assert!(err.to_string().contains("retrying is safe"), "{err}");
}

/// The primary demoted to replica under the queue's open connections, and the sentinels
/// naming the other node: the queue's next write meets `READONLY`, asks the sentinels, and
/// a retry lands on the new primary. Twice, back and forth: first for a single command on
/// the main connection (the tenant registry's script), then for an acknowledged pipeline
/// (a push: MULTI/EXEC, then WAIT). Before the fix, the `READONLY` came back inside the
/// answer's values, the connection never looked there, and every retry met it again (a
/// worker in the CI run of stop 24 did so for three minutes).
#[tokio::test]
async fn a_queue_leaves_a_primary_demoted_under_its_open_connections() {
    let _serial = SERIAL.lock().await;
    let mut set = SentinelSet::start("lsq-demoted");
    let url = set.url();
    let name = common::unique_queue("demoted");
    let queue = connect(&url, &name).await;
    let tenants = worker_support::tenants(
        &url::Url::parse("http://127.0.0.1:9").expect("url"),
        2,
        &[50],
    );
    queue.put_tenants(&tenants[..1]).await.expect("tenants");
    queue
        .push(&jobs("demoted", &tenants[..1], 1, 0))
        .await
        .expect("push");
    let [a, b] = set.nodes;

    let (before, after) = set.demote_in_place(a, b);
    assert!(
        after >= before && before >= 3,
        "the queue's connections to the old primary did not stay up: {before} clients \
         before, {after} after"
    );
    let tries = until_it_lands("put the tenants", || queue.put_tenants(&tenants)).await;
    assert_eq!(
        common::sentinel::cli(b, &["hlen", &format!("{{{name}}}:tenants")]),
        "2",
        "the tenants are on the new primary"
    );
    report(&format!(
        "demoted primary, single command: landed on try {tries}"
    ));

    set.demote_in_place(b, a);
    let second = jobs("demoted", &tenants, 2, 0).split_off(1);
    let tries = until_it_lands("push", || queue.push(&second)).await;
    assert_eq!(
        common::sentinel::cli(a, &["hlen", &format!("{{{name}}}:bodies")]),
        "2",
        "both jobs are on the primary of now"
    );
    report(&format!(
        "demoted primary, acknowledged pipeline: landed on try {tries}"
    ));
}

/// Repeats `call` every 100 ms while it fails as an unavailable store, for up to 50 tries;
/// returns the try that succeeded.
async fn until_it_lands<T, F: std::future::Future<Output = Result<T, QueueError>>>(
    what: &str,
    mut call: impl FnMut() -> F,
) -> u32 {
    for n in 1..=50 {
        match call().await {
            Ok(_) => return n,
            Err(e) if e.is_unavailable() && n < 50 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{what}, try {n}: {e}"),
        }
    }
    unreachable!("the last try returns or panics")
}

/// Tenants `{run}-t0..`, each its own simulator account with 50 calls per window.
async fn start_sim(run: &str, n: usize) -> (Sim, Vec<Tenant>) {
    worker_support::sim_with_tenants(run, n, 50, Faults::default()).await
}

/// `n` jobs from number `from`, round-robin over the tenants; fixed-width descriptions.
fn jobs(run: &str, tenants: &[Tenant], n: usize, from: usize) -> Vec<NewJob> {
    (from..from + n)
        .map(|i| NewJob {
            delete: false,
            legacy_key: None,
            tenant: tenants[i % tenants.len()].name.clone(),
            body: serde_json::json!({
                "Description": format!("failover {run} job {i:05}"),
                "URL": format!("https://hooks.example/{run}/{i:05}"),
                "Method": "POST",
                "ContentType": "application/json",
                "WebhookEvent": "3",
                "IsSpecificLandingPage": false,
                "NotifyOnFailure": false,
                "WebhookProperties": null,
                "CustomHeaders": []
            })
            .to_string(),
            key: format!("job-{i}"),
        })
        .collect()
}

/// A worker process through the sentinels.
fn spawn_worker(url: &str, queue: &str, log: &std::path::Path) -> Child {
    spawn_worker_with(url, queue, log, &[])
}

/// [`spawn_worker`] with more arguments.
fn spawn_worker_with(url: &str, queue: &str, log: &std::path::Path, extra: &[&str]) -> Child {
    let file = std::fs::File::create(log).expect("worker log");
    Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args([
            "--redis",
            url,
            "--queue",
            queue,
            "worker",
            "--exit-when-idle",
        ])
        .args([
            "--concurrency",
            "8",
            "--lease-ms",
            "3000",
            "--call-timeout-secs",
            "2",
            "--reconcile-settle-ms",
            "500",
            "--retry-base-ms",
            "50",
            "--retry-cap-secs",
            "1",
        ])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start a worker")
}

fn log_tails(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {}\n", p.display()));
        for l in &lines[lines.len().saturating_sub(12)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// `ZCARD {queue}:done` on one data node directly (not through the sentinels).
fn done_on(port: u16, queue: &str) -> u64 {
    common::sentinel::cli(port, &["zcard", &format!("{{{queue}}}:done")])
        .parse()
        .unwrap_or(0)
}

/// Polls `cond` every 20 ms; fails after [`RUN_DEADLINE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + RUN_DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

/// What one run measured.
struct Timings {
    kill_to_promotion: Duration,
    promotion_to_resume: Duration,
}

/// The checks every run ends with: `must` (the jobs whose push was acknowledged) all done,
/// every job in the queue done with its Id, the Ids exactly the webhooks the simulator
/// created for them, none created twice.
async fn verify(queue: &RedisQueue, sim: &Sim, tenants: &[Tenant], must: &[NewJob]) -> usize {
    let status = queue.status().await.expect("status");
    assert_eq!(
        (status.queued, status.scheduled, status.running),
        (0, 0, 0),
        "work left over: {status:?}"
    );
    let results = queue.results(None).await.expect("results");
    let by_key: HashMap<&str, _> = results.iter().map(|r| (r.key.as_str(), r)).collect();
    let lost: Vec<&str> = must
        .iter()
        .map(|j| j.key.as_str())
        .filter(|k| !by_key.contains_key(k))
        .collect();
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
    let mut recorded = BTreeSet::new();
    for r in &results {
        assert_eq!(r.status, JobState::Done, "not done: {r:?}");
        let id = r.webhook_id.clone().expect("a done job has an Id");
        assert!(recorded.insert(id.clone()), "webhook {id} recorded twice");
    }
    let stats = sim.server.stats();
    let mut created = BTreeSet::new();
    let mut per_description: BTreeMap<String, u32> = BTreeMap::new();
    let mut duplicates = 0;
    for t in tenants {
        let Some(acc) = stats.accounts.get(&t.name) else {
            continue;
        };
        duplicates += acc.duplicates;
        for w in &acc.webhooks {
            created.insert(w.id.clone());
            *per_description.entry(w.description.clone()).or_default() += 1;
        }
    }
    let twice: Vec<_> = per_description.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "webhooks created twice: {twice:?}");
    assert_eq!(duplicates, 0, "the simulator counted duplicates");
    let missing: Vec<_> = created.difference(&recorded).collect();
    let phantom: Vec<_> = recorded.difference(&created).collect();
    assert!(
        missing.is_empty() && phantom.is_empty(),
        "Ids differ: created but not recorded {missing:?}, recorded but never created {phantom:?}"
    );
    results.len()
}

/// Kills the primary once `kill_at` jobs are done, waits for the promotion, starts the
/// killed node again as a replica of the new primary, and measures how long the workers
/// take to complete a job on the new primary.
async fn fail_over(set: &mut SentinelSet, queue: &str, kill_at: u64) -> Timings {
    fail_over_and(set, queue, kill_at, true).await
}

/// [`fail_over`]; with `bring_back` false the killed node stays dead (a lost machine), so
/// the new primary has no replica.
async fn fail_over_and(
    set: &mut SentinelSet,
    queue: &str,
    kill_at: u64,
    bring_back: bool,
) -> Timings {
    let old = set.primary_port().expect("a primary");
    wait_for("jobs done before the kill", || {
        done_on(old, queue) >= kill_at
    })
    .await;
    set.sigkill(old);
    let killed = Instant::now();
    let new = set
        .nodes
        .iter()
        .copied()
        .find(|p| *p != old)
        .expect("the replica");
    let promoted = wait_for("the sentinels to promote the replica", || {
        set.primary_port() == Some(new)
    })
    .await;
    let done_then = done_on(new, queue);
    if bring_back {
        set.restart_as_replica(old, new);
    }
    let resumed = wait_for("a job completed on the new primary", || {
        done_on(new, queue) > done_then
    })
    .await;
    Timings {
        kill_to_promotion: promoted - killed,
        promotion_to_resume: resumed - promoted,
    }
}

async fn connect(url: &str, queue: &str) -> RedisQueue {
    RedisQueue::connect(
        url,
        QueueConfig {
            name: queue.into(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect through the sentinels")
}

async fn wait_workers(workers: &mut [Child], logs: &std::path::Path) {
    for w in workers.iter_mut() {
        let status = tokio::time::timeout(RUN_DEADLINE, w.wait())
            .await
            .unwrap_or_else(|_| panic!("a worker did not exit\n{}", log_tails(logs)))
            .expect("wait for a worker");
        assert!(status.success(), "a worker failed\n{}", log_tails(logs));
    }
}

/// 10 tenants × 100 jobs; the primary SIGKILLed mid-run; the replica promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_a_failover_and_lose_no_job_and_create_none_twice() {
    let _serial = SERIAL.lock().await;
    let mut set = SentinelSet::start("lsq-main");
    let url = set.url();
    let name = common::unique_queue("failover");
    let (sim, tenants) = start_sim("fo", 10).await;
    let queue = connect(&url, &name).await;
    assert_eq!(queue.replication().map(|r| r.replicas), Some(1));
    queue.put_tenants(&tenants).await.expect("tenants");
    let all = jobs("fo", &tenants, 1000, 0);
    queue
        .push(&all)
        .await
        .expect("push, acknowledged by the replica");

    let logs = tempfile::tempdir().expect("logs");
    let mut workers: Vec<Child> = (0..2)
        .map(|i| spawn_worker(&url, &name, &logs.path().join(format!("w{i}.log"))))
        .collect();
    let t = fail_over(&mut set, &name, 300).await;
    wait_workers(&mut workers, logs.path()).await;
    let n = verify(&queue, &sim, &tenants, &all).await;
    assert_eq!(n, all.len());
    report(&format!(
        "failover workers: jobs {} done {n} lost 0 duplicates 0 | kill to promotion {} ms, \
         promotion to resume {} ms",
        all.len(),
        t.kill_to_promotion.as_millis(),
        t.promotion_to_resume.as_millis()
    ));
    assert!(
        t.promotion_to_resume < RESUME_BOUND,
        "workers resumed {:?} after the promotion\n{}",
        t.promotion_to_resume,
        log_tails(logs.path())
    );
}

/// The same, with a producer pushing through the failover: every push it was told had
/// succeeded is there afterwards, done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_acknowledged_during_a_failover_survives_it() {
    let _serial = SERIAL.lock().await;
    let mut set = SentinelSet::start("lsq-main");
    let url = set.url();
    let name = common::unique_queue("failover-push");
    let (sim, tenants) = start_sim("fp", 10).await;
    let queue = Arc::new(connect(&url, &name).await);
    queue.put_tenants(&tenants).await.expect("tenants");
    let first = jobs("fp", &tenants, 1000, 0);
    queue.push(&first).await.expect("push");

    // The producer: 5 jobs a push, every 20 ms, until told to stop; it keeps the jobs of
    // every push it was told succeeded, and counts the ones refused.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (queue, tenants, stop) = (queue.clone(), tenants.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut refused = 0usize;
            let mut next = 1000;
            while !stop.load(Ordering::SeqCst) {
                let batch = jobs("fp", &tenants, 5, next);
                next += 5;
                match tokio::time::timeout(Duration::from_secs(10), queue.push(&batch)).await {
                    Ok(Ok(pushed)) => {
                        assert!(pushed.iter().all(|p| matches!(p, Pushed::Enqueued { .. })));
                        acked.extend(batch);
                    }
                    Ok(Err(e)) => {
                        assert!(e.is_unavailable(), "a push failed for good: {e}");
                        refused += batch.len();
                    }
                    Err(_) => refused += batch.len(),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, refused)
        })
    };

    let logs = tempfile::tempdir().expect("logs");
    let mut workers: Vec<Child> = (0..2)
        .map(|i| spawn_worker(&url, &name, &logs.path().join(format!("w{i}.log"))))
        .collect();
    let t = fail_over(&mut set, &name, 300).await;
    // Pushing on for a while on the new primary.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let (acked, refused) = producer.await.expect("producer");
    wait_workers(&mut workers, logs.path()).await;
    let must: Vec<NewJob> = first.iter().cloned().chain(acked.iter().cloned()).collect();
    let n = verify(&queue, &sim, &tenants, &must).await;
    report(&format!(
        "failover producer: pushed during the run {} acknowledged, {} refused (not \
         acknowledged); jobs done {n}, acknowledged lost 0, duplicates 0 | kill to promotion \
         {} ms, promotion to resume {} ms",
        acked.len(),
        refused,
        t.kill_to_promotion.as_millis(),
        t.promotion_to_resume.as_millis()
    ));
    assert!(!acked.is_empty(), "the producer got no push through");
    assert!(t.promotion_to_resume < RESUME_BOUND);
}

/// Issue 27: with `--min-replicas 1` (the default with Sentinel) on a Redis with no replica,
/// the default replication goes on degraded: the push is acknowledged by the primary alone,
/// and the queue says what that risks.
#[tokio::test]
async fn with_no_replica_connected_writes_go_on_degraded_and_say_so() {
    let redis = common::PrivateRedis::start(&[]).expect("redis-server");
    let name = common::unique_queue("degraded");
    let queue = RedisQueue::connect_with(
        &redis.url(),
        QueueConfig {
            name: name.clone(),
            ..QueueConfig::default()
        },
        RedisOptions {
            min_replicas: Some(1),
            replica_timeout: Duration::from_millis(100),
            ..RedisOptions::default()
        },
    )
    .await
    .expect("connect");
    let tenants = worker_support::tenants(
        &url::Url::parse("http://127.0.0.1:9").expect("url"),
        1,
        &[50],
    );
    queue.put_tenants(&tenants).await.expect("tenants");
    queue
        .push(&jobs("degraded", &tenants, 3, 0))
        .await
        .expect("acknowledged by the primary alone");
    let r = queue
        .replicas()
        .await
        .expect("replicas")
        .expect("waits for replicas");
    assert_eq!((r.connected, r.min_replicas, r.degraded()), (0, 1, true));
    let said = r.describe();
    assert!(
        said.starts_with("degraded: 0 of 1 replica(s) connected; writes since ")
            && said.ends_with("are on one node only; a second failure loses them"),
        "{said}"
    );
    // `status`, text and JSON, says the same.
    let (code, text, _) = run(&[
        "--redis",
        &redis.url(),
        "--queue",
        &name,
        "--min-replicas",
        "1",
        "status",
    ]);
    assert_eq!(code, 0, "{text}");
    let out = bin()
        .args([
            "--redis",
            &redis.url(),
            "--queue",
            &name,
            "--min-replicas",
            "1",
        ])
        .args(["status", "--json"])
        .output()
        .expect("status --json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["replication"]["connected"], 0);
    assert_eq!(json["replication"]["min_replicas"], 1);
    assert_eq!(json["replication"]["mode"], "degrade");
    assert!(json["replication"]["degraded_since_ms"].as_u64().is_some());
    let table = bin()
        .args([
            "--redis",
            &redis.url(),
            "--queue",
            &name,
            "--min-replicas",
            "1",
        ])
        .arg("status")
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("replication degraded: 0 of 1 replica(s) connected; writes since"),
        "{table}"
    );
    // `/readyz` (still ready: the queue works) and the metrics say it too.
    let queue: Arc<dyn Queue> = Arc::new(queue);
    let server = ops_support::Server::start(queue, lsq_webhooks::ops::ApiLimits::default()).await;
    let ready = reqwest::get(server.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert!(
        body["replication"]
            .as_str()
            .is_some_and(|t| t.contains("a second failure loses them")),
        "{body}"
    );
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "lsq_redis_replicas_connected 0",
        "lsq_redis_min_replicas 1",
        "lsq_redis_replication_degraded 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing");
    }
    server.stop().await;
}

/// Issue 27: the primary SIGKILLed and never back (a lost machine). With the default
/// replication the workers go on on the promoted replica, degraded: every job done, none
/// lost, none created twice, and status says 0 of 1 replicas. A fresh replica started
/// then: the queue is whole again, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_lost_for_good_leaves_the_queue_degraded_and_every_job_done() {
    let _serial = SERIAL.lock().await;
    let mut set = SentinelSet::start("lsq-main");
    let url = set.url();
    let name = common::unique_queue("failover-lost");
    let (sim, tenants) = start_sim("fl", 10).await;
    let queue = connect(&url, &name).await;
    queue.put_tenants(&tenants).await.expect("tenants");
    let all = jobs("fl", &tenants, 1000, 0);
    queue
        .push(&all)
        .await
        .expect("push, acknowledged by the replica");
    let healthy = queue.replicas().await.expect("replicas").expect("sentinel");
    assert_eq!((healthy.connected, healthy.degraded()), (1, false));

    let logs = tempfile::tempdir().expect("logs");
    let mut workers: Vec<Child> = (0..2)
        .map(|i| spawn_worker(&url, &name, &logs.path().join(format!("w{i}.log"))))
        .collect();
    let old = set.primary_port().expect("a primary");
    let t = fail_over_and(&mut set, &name, 300, false).await;
    wait_workers(&mut workers, logs.path()).await;
    let n = verify(&queue, &sim, &tenants, &all).await;
    assert_eq!(n, all.len());
    let r = queue.replicas().await.expect("replicas").expect("sentinel");
    assert_eq!(
        (r.connected, r.min_replicas, r.degraded()),
        (0, 1, true),
        "{r:?}"
    );
    let warned = std::fs::read_to_string(logs.path().join("w0.log")).unwrap_or_default()
        + &std::fs::read_to_string(logs.path().join("w1.log")).unwrap_or_default();
    assert!(
        warned.contains("Redis replication degraded: 0 of 1 replica(s) connected"),
        "{}",
        log_tails(logs.path())
    );
    // The workers heard the sentinels announce the new primary (`+switch-master`), unless
    // told not to listen (`LSQ_SENTINEL_EVENTS=false`, to measure the difference).
    if std::env::var("LSQ_SENTINEL_EVENTS").as_deref() != Ok("false") {
        assert!(
            warned.contains("the sentinels announced a new primary"),
            "{}",
            log_tails(logs.path())
        );
    }
    report(&format!(
        "failover lost primary: jobs {} done {n} lost 0 duplicates 0 | kill to promotion {} \
         ms, promotion to resume {} ms | {}",
        all.len(),
        t.kill_to_promotion.as_millis(),
        t.promotion_to_resume.as_millis(),
        r.describe()
    ));

    // A fresh replica of the new primary: whole again, without a restart of anything.
    let new = set.primary_port().expect("the new primary");
    set.restart_as_replica(old, new);
    let started = Instant::now();
    let whole = loop {
        let r = queue.replicas().await.expect("replicas").expect("sentinel");
        if !r.degraded() || started.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !whole.degraded(),
        "still degraded 10 s after a replica connected: {whole:?}"
    );
    report(&format!(
        "failover lost primary: a fresh replica in sync, healthy after {} ms",
        started.elapsed().as_millis()
    ));
}

/// Issue 27: the same loss with `--replication strict` (the behaviour before the default
/// went degraded): while the new primary has no replica no job is done (a dispatch is not
/// acknowledged, so its jobs go back), status says why, nothing is lost; once a replica is
/// back the queue drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_replication_waits_for_a_replica_and_then_drains() {
    let _serial = SERIAL.lock().await;
    let mut set = SentinelSet::start("lsq-main");
    let url = set.url();
    let name = common::unique_queue("failover-strict");
    let (sim, tenants) = start_sim("fs", 10).await;
    let queue = RedisQueue::connect_with(
        &url,
        QueueConfig {
            name: name.clone(),
            ..QueueConfig::default()
        },
        RedisOptions {
            replication: ReplicationMode::Strict,
            ..RedisOptions::default()
        },
    )
    .await
    .expect("connect through the sentinels");
    queue.put_tenants(&tenants).await.expect("tenants");
    let all = jobs("fs", &tenants, 1000, 0);
    queue
        .push(&all)
        .await
        .expect("push, acknowledged by the replica");

    let logs = tempfile::tempdir().expect("logs");
    let mut workers: Vec<Child> = (0..2)
        .map(|i| {
            spawn_worker_with(
                &url,
                &name,
                &logs.path().join(format!("w{i}.log")),
                &["--replication", "strict"],
            )
        })
        .collect();
    let old = set.primary_port().expect("a primary");
    let t = fail_over_and(&mut set, &name, 300, false).await;
    let new = set.primary_port().expect("the new primary");
    // While no replica is connected, no dispatch is acknowledged, so no Create goes out
    // (sampled over a few seconds after the promotion; a count, not a timing).
    let creates = || -> u64 { sim.stats().accounts.values().map(|a| a.create_calls).sum() };
    let (done_then, creates_then) = (done_on(new, &name), creates());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (done_later, creates_later) = (done_on(new, &name), creates());
    let r = queue.replicas().await.expect("replicas").expect("sentinel");
    assert_eq!((r.connected, r.degraded()), (0, true), "{r:?}");
    assert!(
        r.describe()
            .starts_with("waiting (--replication strict): 0 of 1 replica(s)"),
        "{}",
        r.describe()
    );
    // No Create goes out. Completions of Creates sent before the kill may still be
    // written (each is retried until a replica confirms it), never more than were created.
    assert_eq!(
        creates_later, creates_then,
        "Creates made while strict and degraded"
    );
    assert!(
        done_later <= creates_then,
        "{done_later} done of {creates_then} created"
    );
    let stuck = queue.status().await.expect("status");
    assert!(
        stuck.queued + stuck.scheduled + stuck.running > 0,
        "{stuck:?}"
    );

    set.restart_as_replica(old, new);
    wait_workers(&mut workers, logs.path()).await;
    let n = verify(&queue, &sim, &tenants, &all).await;
    assert_eq!(n, all.len());
    report(&format!(
        "failover strict: jobs {} done {n} lost 0 duplicates 0 | kill to promotion {} ms | \
         Creates in the 5 s after the promotion: {}, jobs done: {}",
        all.len(),
        t.kill_to_promotion.as_millis(),
        creates_later - creates_then,
        done_later - done_then
    ));
}
