//! Chaos tests (issue 5): no job lost, no webhook created twice, through worker crashes,
//! Redis restarts and LeadSquared faults.
//!
//! Real parts only: the worker is the real binary (`lsq-webhooks worker`, several
//! processes), Redis is a real server, LeadSquared is the project's simulator served over
//! loopback HTTP in this process (so its counters can be read directly). Each run ends with
//! the same checks: every job done or dead with a reason, nothing queued, scheduled or
//! running (lost = 0), the set of recorded webhook Ids equal to the set the simulator
//! created for those jobs, and zero duplicates (the simulator's own count, and one webhook
//! per job description).
//!
//! Each run prints one `chaos ...` line with its counts straight to the process's standard
//! output, so it shows in the test output whether or not the harness captures output; run
//! `cargo test --test chaos -- --nocapture --test-threads 1` to see it next to the
//! workers' own summaries. The runs take turns (a lock): they start several processes each,
//! and on a small machine running them side by side would only make every lease tighter.

mod common;
mod revision_support;
mod worker_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use lsq_webhooks::job::{JobState, NewJob};
use lsq_webhooks::producer::Producer;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig, QueueStatus};
use lsq_webhooks::sim::{Faults, SimStats};
use lsq_webhooks::tenant::Tenant;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use worker_support::Sim;

/// One chaos run at a time (see the module header).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a run may take before it is declared stuck (a bound against hanging, not a
/// performance assertion: a healthy run takes a fraction of it).
const RUN_DEADLINE: Duration = Duration::from_secs(150);

/// Writes a line to the real standard output, past the test harness's capture.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Tenants `{run}-t0..`, each its own simulator account with `limit` calls per 5 s.
async fn start_sim(run: &str, tenants: usize, limit: u32, faults: Faults) -> (Sim, Vec<Tenant>) {
    worker_support::sim_with_tenants(run, tenants, limit, faults).await
}

/// `n` jobs spread over the tenants. Descriptions have a fixed width, so no description
/// contains another (Retrieve's `SearchText` matches by substring).
fn jobs(run: &str, tenants: &[Tenant], n: usize, from: usize) -> Vec<NewJob> {
    (from..from + n)
        .map(|i| NewJob {
            delete: false,
            legacy_key: None,
            tenant: tenants[i % tenants.len()].name.clone(),
            body: serde_json::json!({
                "Description": format!("chaos {run} job {i:05}"),
                "URL": format!("https://hooks.example/{run}/{i:05}"),
                "Method": "POST",
                "ContentType": "application/json",
                "WebhookEvent": "3",
                "IsSpecificLandingPage": false,
                "NotifyOnFailure": false,
                "WebhookProperties": null,
                "CustomHeaders": [{"Key": "x-api-key", "Value": format!("secret-{i}")}]
            })
            .to_string(),
            key: format!("job-{i}"),
        })
        .collect()
}

/// Where a run's workers find Redis, and how they are started.
struct Fleet {
    redis: String,
    queue: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    started: usize,
}

/// A worker process.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Fleet {
    fn new(redis: &str, queue: &str, args: &[&str]) -> Self {
        Fleet {
            redis: redis.into(),
            queue: queue.into(),
            dir: tempfile::tempdir().expect("temp dir"),
            args: args.iter().map(|a| a.to_string()).collect(),
            started: 0,
        }
    }

    /// Starts `lsq-webhooks worker --exit-when-idle` with the fleet's arguments, its log in a
    /// file of its own.
    fn spawn(&mut self) -> Worker {
        self.started += 1;
        let log = self.dir.path().join(format!("worker-{}.log", self.started));
        let file = std::fs::File::create(&log).expect("worker log");
        let child = Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
            .args(["--redis", &self.redis, "--queue", &self.queue, "worker"])
            .arg("--exit-when-idle")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start a worker");
        Worker { child, log }
    }
}

impl Worker {
    /// Waits for the worker's log to say the pool is running.
    async fn started(&self) {
        wait_for("the worker to start", || async {
            std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .contains("worker pool starting")
        })
        .await;
    }
}

/// The last lines of every log in the fleet's directory, for a failure message.
fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- {}\n", p.display()));
        for l in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds; fails the test after [`RUN_DEADLINE`].
async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + RUN_DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(redis: &str, queue: &str) -> RedisQueue {
    RedisQueue::connect(
        redis,
        QueueConfig {
            name: queue.into(),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect to the queue")
}

/// Nothing queued, scheduled or running, and `n` jobs finished.
fn settled(s: &QueueStatus, n: usize) -> bool {
    s.queued == 0 && s.scheduled == 0 && s.running == 0 && (s.done + s.dead) as usize == n
}

/// Waits until every worker has exited, and returns how many exited with success.
async fn wait_all(workers: &mut [Worker]) -> usize {
    let mut ok = 0;
    for w in workers.iter_mut() {
        let status = tokio::time::timeout(RUN_DEADLINE, w.child.wait())
            .await
            .expect("a worker did not exit once the queue was idle")
            .expect("wait for a worker");
        if status.success() {
            ok += 1;
        }
    }
    ok
}

/// What a run did, printed as one line.
#[derive(Debug, Default)]
struct Counts {
    jobs: usize,
    done: usize,
    dead: usize,
    kills: usize,
    redis_restarts: usize,
    /// Attempts beyond each job's first.
    retries: u64,
    reconciled: usize,
    duplicates: u64,
    lost: usize,
    /// Faults the simulator injected: 500s, created-then-500s, resets.
    faults: (u64, u64, u64),
    /// Create calls the simulator received.
    creates: u64,
    /// Retrieve calls the simulator received (one per reconcile attempt).
    retrieves: u64,
    /// Rate-limit answers from the simulator (must be 0).
    rate_limited: u64,
}

impl Counts {
    fn line(&self, run: &str) -> String {
        format!(
            "chaos {run}: jobs {} done {} dead {} kills {} redis_restarts {} retries {} \
             reconciled {} duplicates {} lost {} | simulator: creates {} retrieves {} \
             rate-limit answers {} injected 500s {} created-then-500s {} resets {}",
            self.jobs,
            self.done,
            self.dead,
            self.kills,
            self.redis_restarts,
            self.retries,
            self.reconciled,
            self.duplicates,
            self.lost,
            self.creates,
            self.retrieves,
            self.rate_limited,
            self.faults.0,
            self.faults.1,
            self.faults.2,
        )
    }
}

/// The checks every run ends with. Returns the counts.
async fn verify(queue: &RedisQueue, sim: &SimStats, jobs: &[NewJob], tenants: &[Tenant]) -> Counts {
    let status = queue.status().await.expect("status");
    let results = queue.results(None).await.expect("results");
    let by_key: HashMap<&str, _> = results.iter().map(|r| (r.key.as_str(), r)).collect();

    // Lost: a pushed job that is not finished.
    let lost: Vec<&str> = jobs
        .iter()
        .map(|j| j.key.as_str())
        .filter(|k| !by_key.contains_key(k))
        .collect();
    assert!(
        lost.is_empty(),
        "jobs lost (not done, not dead): {lost:?}; status {status:?}"
    );
    assert_eq!(
        (status.queued, status.scheduled, status.running),
        (0, 0, 0),
        "work left over"
    );
    assert_eq!(results.len(), jobs.len(), "results for jobs never pushed");

    // Done with an Id, or dead with a reason.
    let mut recorded = BTreeSet::new();
    for r in &results {
        match r.status {
            JobState::Done => {
                let id = r.webhook_id.clone().expect("a done job has a webhook Id");
                assert!(
                    recorded.insert(id.clone()),
                    "webhook {id} recorded for two jobs"
                );
            }
            JobState::Dead => assert!(
                r.error.as_deref().is_some_and(|e| !e.is_empty()),
                "dead without a reason: {r:?}"
            ),
            other => panic!("job {} finished as {other:?}", r.job),
        }
    }

    // What the simulator created for these jobs, and duplicates.
    let descriptions: BTreeMap<String, &str> = jobs
        .iter()
        .map(|j| {
            (
                serde_json::from_str::<serde_json::Value>(&j.body)
                    .unwrap_or_default()["Description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                j.key.as_str(),
            )
        })
        .collect();
    let mut created = BTreeSet::new();
    let mut per_description: BTreeMap<&str, u32> = BTreeMap::new();
    let mut counts = Counts::default();
    for t in tenants {
        let Some(acc) = sim.accounts.get(&t.name) else {
            continue;
        };
        counts.duplicates += acc.duplicates;
        counts.rate_limited += acc.rate_limited;
        // Every call, Create and the reconciles' Retrieves, went through the shared limiter.
        assert!(
            acc.max_calls_in_window <= t.limit,
            "{}: {} calls in one window, limit {}",
            t.name,
            acc.max_calls_in_window,
            t.limit
        );
        counts.faults.0 += acc.faults.errors;
        counts.faults.1 += acc.faults.created_then_error;
        counts.faults.2 += acc.faults.resets;
        counts.creates += acc.create_calls;
        counts.retrieves += acc.retrieve_calls;
        for w in &acc.webhooks {
            if let Some((d, _)) = descriptions.get_key_value(&w.description) {
                created.insert(w.id.clone());
                *per_description.entry(d.as_str()).or_default() += 1;
            }
        }
    }
    let twice: Vec<_> = per_description.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "webhooks created twice: {twice:?}");
    assert_eq!(counts.duplicates, 0, "the simulator counted duplicates");
    assert_eq!(counts.rate_limited, 0, "LeadSquared answered rate limited");
    let missing: Vec<_> = created.difference(&recorded).collect();
    let phantom: Vec<_> = recorded.difference(&created).collect();
    assert!(
        missing.is_empty() && phantom.is_empty(),
        "recorded Ids differ from the created ones: created but not recorded {missing:?}, \
         recorded but never created {phantom:?}"
    );

    counts.jobs = jobs.len();
    counts.done = results
        .iter()
        .filter(|r| r.status == JobState::Done)
        .count();
    counts.dead = results
        .iter()
        .filter(|r| r.status == JobState::Dead)
        .count();
    counts.reconciled = results.iter().filter(|r| r.reconciled).count();
    counts.retries = results
        .iter()
        .map(|r| u64::from(r.attempts.saturating_sub(1)))
        .sum();
    counts.lost = lost.len();
    counts
}

/// The leases held just before a SIGKILL, and the moment of the kill on Redis's clock.
struct Snapshot {
    /// Job id → lease token.
    held: HashMap<String, String>,
    killed_ms: u64,
}

impl Snapshot {
    /// Reads the running leases and Redis's clock (call just before the SIGKILL).
    async fn take(con: &mut redis::aio::ConnectionManager, prefix: &str) -> Snapshot {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(format!("{prefix}running"))
            .arg(0)
            .arg(-1)
            .query_async(con)
            .await
            .expect("running set");
        let mut held = HashMap::new();
        for id in ids {
            let lease: Option<String> = redis::cmd("HGET")
                .arg(format!("{prefix}job:{id}"))
                .arg("lease")
                .query_async(con)
                .await
                .expect("lease");
            if let Some(l) = lease {
                held.insert(id, l);
            }
        }
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(con).await.expect("TIME");
        Snapshot {
            held,
            killed_ms: secs * 1000 + micros / 1000,
        }
    }
}

/// Measures hand-backs: for each job a killed worker held, the time from the SIGKILL to the
/// job's next dispatch by another worker (`dispatched_ms`, stamped by the dispatch script on
/// Redis's clock, like the kill). Jobs that live holders finish are dropped. A lease seen in
/// several snapshots belongs to the earliest kill: a worker started after a kill cannot hold
/// a lease that existed before it.
async fn watch_hand_backs(
    mut con: redis::aio::ConnectionManager,
    prefix: String,
    mut snapshots: tokio::sync::mpsc::Receiver<Snapshot>,
) -> Vec<u64> {
    // Job id → (lease token at the kill, kill time).
    let mut held: HashMap<String, (String, u64)> = HashMap::new();
    let mut samples = Vec::new();
    let mut open = true;
    while open || !held.is_empty() {
        if open {
            tokio::select! {
                snap = snapshots.recv() => match snap {
                    Some(snap) => {
                        for (id, token) in snap.held {
                            if held.get(&id).is_none_or(|(t, _)| *t != token) {
                                held.entry(id).or_insert((token, snap.killed_ms));
                            }
                        }
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ids: Vec<String> = held.keys().cloned().collect();
        for id in ids {
            let (lease, state, dispatched, unknown): (
                Option<String>,
                Option<String>,
                Option<u64>,
                Option<String>,
            ) = redis::cmd("HMGET")
                .arg(format!("{prefix}job:{id}"))
                .arg(&["lease", "state", "dispatched_ms", "outcome_unknown"])
                .query_async(&mut con)
                .await
                .unwrap_or((None, None, None, None));
            let Some((old, killed_ms)) = held.get(&id).cloned() else {
                continue;
            };
            match (lease, state.as_deref()) {
                // Finished by its holder, which was alive: not a hand-back.
                (_, Some("done" | "dead")) => {
                    held.remove(&id);
                }
                (Some(l), Some("running")) if l != old => {
                    if unknown.as_deref() == Some("1")
                        && let Some(d) = dispatched
                    {
                        samples.push(d.saturating_sub(killed_ms));
                    }
                    held.remove(&id);
                }
                _ => {}
            }
        }
    }
    samples
}

async fn redis_connection(url: &str) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(url).expect("redis url");
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("redis")
}

fn describe(samples: &[u64]) -> String {
    if samples.is_empty() {
        return "none".into();
    }
    let mut s = samples.to_vec();
    s.sort_unstable();
    format!(
        "n {} min {} ms median {} ms max {} ms",
        s.len(),
        s[0],
        s[s.len() / 2],
        s[s.len() - 1]
    )
}

/// Several worker processes; one of them is killed with SIGKILL again and again (and
/// replaced) while jobs are in flight. Jobs it held are taken back when their leases run out
/// and reconciled before any Create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_worker_repeatedly() {
    let _turn = SERIAL.lock().await;
    let run = format!("kill{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let redis = common::redis_url();
    let name = common::unique_queue("chaos-kill");
    let (sim, tenants) = start_sim(
        &run,
        6,
        25,
        Faults {
            seed: 5,
            // Calls take 150-400 ms, so a killed worker is usually mid-call.
            latency: Duration::from_millis(150),
            latency_jitter: Duration::from_millis(250),
            ..Faults::default()
        },
    )
    .await;
    let queue = connect(&redis, &name).await;
    queue.put_tenants(&tenants).await.expect("tenants");
    let all = jobs(&run, &tenants, 180, 0);
    queue.push(&all).await.expect("push");

    let mut fleet = Fleet::new(
        &redis,
        &name,
        &[
            "--concurrency",
            "4",
            "--lease-ms",
            "2000",
            "--call-timeout-secs",
            "2",
            "--reconcile-settle-ms",
            "500",
            "--retry-base-ms",
            "50",
            "--retry-cap-secs",
            "1",
        ],
    );
    let mut others = vec![fleet.spawn(), fleet.spawn()];
    let mut killed = Vec::new();
    let mut con = redis_connection(&redis).await;
    // Bounded: one snapshot per kill, at most 5 kills.
    let (snapshots, received) = tokio::sync::mpsc::channel(8);
    let watcher = tokio::spawn(watch_hand_backs(
        con.clone(),
        queue.prefix().to_string(),
        received,
    ));
    let finished = async {
        let mut victim = fleet.spawn();
        while killed.len() < 5 {
            victim.started().await;
            // Let it take jobs and get mid-call.
            tokio::time::sleep(Duration::from_millis(900)).await;
            let s = queue.status().await.expect("status");
            if settled(&s, all.len()) || s.queued + s.scheduled < 10 {
                break;
            }
            let snap = Snapshot::take(&mut con, queue.prefix()).await;
            victim.child.start_kill().expect("SIGKILL the worker");
            let _ = victim.child.wait().await;
            snapshots.send(snap).await.expect("watcher running");
            killed.push(victim);
            victim = fleet.spawn();
        }
        wait_for("every job to finish", || async {
            settled(&queue.status().await.expect("status"), all.len())
        })
        .await;
        victim
    };
    let victim = tokio::time::timeout(RUN_DEADLINE, finished)
        .await
        .unwrap_or_else(|_| panic!("run stuck:\n{}", log_tails(fleet.dir.path())));
    drop(snapshots);
    let hand_backs = watcher.await.expect("watcher");
    others.push(victim);
    let ok = wait_all(&mut others).await;
    assert_eq!(
        ok,
        others.len(),
        "a surviving worker failed:\n{}",
        log_tails(fleet.dir.path())
    );

    let mut counts = verify(&queue, &sim.server.stats(), &all, &tenants).await;
    counts.kills = killed.len();
    assert!(counts.kills > 0, "the run ended before any kill");
    report(&counts.line("sigkill"));
    report(&format!(
        "chaos sigkill: hand-back (SIGKILL to the next dispatch of a job the killed worker \
         held; lease 2 s, call timeout 2 s, settle 0.5 s): {}",
        describe(&hand_backs)
    ));
}

/// SIGKILL to the redis-server behind `url` (found by its own `INFO server`): a crash, no
/// shutdown save, no final AOF flush.
async fn crash_redis(url: &str) {
    let mut con = redis_connection(url).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .expect("INFO server");
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(|p| p.trim().to_string())
        .expect("process_id in INFO");
    let status = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid} failed");
}

/// Redis is killed (SIGKILL, no save) and restarted mid-run with AOF on; workers and a
/// producer reconnect and carry on; nothing written before the kill is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_mid_run_with_aof() {
    let _turn = SERIAL.lock().await;
    let mut redis =
        common::PrivateRedis::start(&["--appendonly", "yes", "--appendfsync", "always"])
            .expect("a private redis-server");
    let url = redis.url();
    let run = format!("redis{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let name = common::unique_queue("chaos-redis");
    let (sim, tenants) = start_sim(
        &run,
        4,
        25,
        Faults {
            seed: 6,
            latency: Duration::from_millis(100),
            latency_jitter: Duration::from_millis(150),
            ..Faults::default()
        },
    )
    .await;
    let queue = Arc::new(connect(&url, &name).await);
    queue.put_tenants(&tenants).await.expect("tenants");
    let first = jobs(&run, &tenants, 100, 0);
    let second = jobs(&run, &tenants, 40, 100);
    queue.push(&first).await.expect("push");

    let mut fleet = Fleet::new(
        &url,
        &name,
        &[
            "--concurrency",
            "4",
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
        ],
    );
    let mut workers = vec![fleet.spawn(), fleet.spawn()];
    let total = first.len() + second.len();
    let run_it = async {
        wait_for("a third of the jobs to finish", || async {
            queue.status().await.is_ok_and(|s| s.done >= 30)
        })
        .await;
        let before = queue.status().await.expect("status");
        crash_redis(&url).await;
        tokio::task::block_in_place(|| redis.kill());
        // A producer pushing while Redis is down: it retries with bounded, jittered backoff
        // until Redis answers again.
        let producer = {
            let producer = Producer::new(queue.clone());
            let second = second.clone();
            tokio::spawn(async move { producer.push_validated(second, &mut |_| {}).await })
        };
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tokio::task::block_in_place(|| redis.restart()).expect("restart redis");
        let pushed = producer.await.expect("producer task");
        assert!(
            matches!(pushed, Ok((ref s, _)) if s.enqueued + s.duplicate == second.len() as u64),
            "the producer did not carry on: {pushed:?}"
        );
        let after = queue.status().await.expect("status after the restart");
        assert!(
            after.done >= before.done,
            "jobs finished before the restart were lost: {before:?} then {after:?}"
        );
        wait_for("every job to finish", || async {
            queue.status().await.is_ok_and(|s| settled(&s, total))
        })
        .await;
    };
    tokio::time::timeout(RUN_DEADLINE, run_it)
        .await
        .unwrap_or_else(|_| panic!("run stuck:\n{}", log_tails(fleet.dir.path())));
    let ok = wait_all(&mut workers).await;
    assert_eq!(
        ok,
        workers.len(),
        "a worker did not carry on after the restart:\n{}",
        log_tails(fleet.dir.path())
    );
    let all: Vec<NewJob> = first.iter().chain(&second).cloned().collect();
    let mut counts = verify(&queue, &sim.server.stats(), &all, &tenants).await;
    counts.redis_restarts = 1;
    report(&counts.line("redis-restart"));
}

/// The simulator injects 500s, resets, "created, then answered 500", and latency beyond the
/// client's timeout (the call times out at the client, and the simulator creates the
/// webhook anyway, later). Every outcome-unknown job is reconciled before it creates again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadsquared_faults() {
    let _turn = SERIAL.lock().await;
    let run = format!("faults{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let redis = common::redis_url();
    let name = common::unique_queue("chaos-faults");
    // A low limit (10 per 5 s) so that the limiter, which must count every Retrieve a
    // reconcile makes, is what paces the run.
    let (sim, tenants) = start_sim(
        &run,
        12,
        10,
        Faults {
            seed: 7,
            error_rate: 0.1,
            created_then_error_rate: 0.1,
            reset_rate: 0.1,
            // 0-1.4 s against a 1 s client timeout: about 3 calls in 10 time out, and a
            // timed-out Create is still processed up to 0.4 s after the client gave up.
            latency: Duration::ZERO,
            latency_jitter: Duration::from_millis(1400),
        },
    )
    .await;
    let queue = connect(&redis, &name).await;
    queue.put_tenants(&tenants).await.expect("tenants");
    let all = jobs(&run, &tenants, 120, 0);
    queue.push(&all).await.expect("push");

    let mut fleet = Fleet::new(
        &redis,
        &name,
        &[
            "--concurrency",
            "8",
            "--call-timeout-secs",
            "1",
            // Longer than the 0.4 s a timed-out Create can still take at the simulator.
            "--reconcile-settle-ms",
            "1000",
            "--max-attempts",
            "20",
            "--retry-base-ms",
            "50",
            "--retry-cap-secs",
            "1",
        ],
    );
    let mut workers = vec![fleet.spawn(), fleet.spawn(), fleet.spawn()];
    let finished = wait_for("every job to finish", || async {
        queue.status().await.is_ok_and(|s| settled(&s, all.len()))
    });
    tokio::time::timeout(RUN_DEADLINE, finished)
        .await
        .unwrap_or_else(|_| panic!("run stuck:\n{}", log_tails(fleet.dir.path())));
    let ok = wait_all(&mut workers).await;
    assert_eq!(ok, workers.len(), "{}", log_tails(fleet.dir.path()));
    let counts = verify(&queue, &sim.server.stats(), &all, &tenants).await;
    // The run must have met the faults it is about.
    assert!(counts.faults.0 > 0 && counts.faults.1 > 0 && counts.faults.2 > 0);
    assert!(
        counts.reconciled > 0,
        "no outcome-unknown job was reconciled"
    );
    report(&counts.line("leadsquared-faults"));
}

/// The hand-back time with the default lease (5 s) and idle poll (1 s): one worker holds
/// three jobs mid-Create, it is killed, and another worker (already running) takes them.
/// Prints the time from the SIGKILL to each job's next dispatch; asserts only the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_back_after_sigkill_with_default_lease() {
    let _turn = SERIAL.lock().await;
    let run = format!("hb{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let redis = common::redis_url();
    let name = common::unique_queue("chaos-handback");
    let (sim, tenants) = start_sim(
        &run,
        3,
        25,
        Faults {
            seed: 8,
            // Every call takes 2.5 s: the holder is surely mid-Create when killed.
            latency: Duration::from_millis(2500),
            ..Faults::default()
        },
    )
    .await;
    let queue = connect(&redis, &name).await;
    queue.put_tenants(&tenants).await.expect("tenants");
    let all = jobs(&run, &tenants, 3, 0);
    queue.push(&all).await.expect("push");
    // Default lease and idle poll; the call timeout is 3 s so that a Create sent just before
    // the kill can no longer land 3 s + settle after it was sent.
    let mut fleet = Fleet::new(
        &redis,
        &name,
        &["--call-timeout-secs", "3", "--reconcile-settle-ms", "1000"],
    );
    let mut holder = fleet.spawn();
    wait_for("the first worker to hold every job", || async {
        queue.status().await.is_ok_and(|s| s.running == 3)
    })
    .await;
    let mut taker = fleet.spawn();
    taker.started().await;
    let mut con = redis_connection(&redis).await;
    let (snapshots, received) = tokio::sync::mpsc::channel(1);
    snapshots
        .send(Snapshot::take(&mut con, queue.prefix()).await)
        .await
        .expect("send");
    drop(snapshots);
    holder.child.start_kill().expect("SIGKILL");
    let _ = holder.child.wait().await;
    let samples = tokio::time::timeout(
        RUN_DEADLINE,
        watch_hand_backs(con, queue.prefix().to_string(), received),
    )
    .await
    .expect("the jobs were never handed back");
    tokio::time::timeout(
        RUN_DEADLINE,
        wait_for("every job to finish", || async {
            queue.status().await.is_ok_and(|s| settled(&s, all.len()))
        }),
    )
    .await
    .expect("run stuck");
    assert_eq!(wait_all(std::slice::from_mut(&mut taker)).await, 1);
    let mut counts = verify(&queue, &sim.server.stats(), &all, &tenants).await;
    counts.kills = 1;
    assert_eq!(samples.len(), 3, "every held job is handed back");
    report(&counts.line("hand-back"));
    report(&format!(
        "chaos hand-back: SIGKILL to the next dispatch by another worker (lease 5 s default, \
         heartbeat every 1.67 s, idle poll 1 s; Create in flight, call timeout 3 s + settle \
         1 s): {}",
        describe(&samples)
    ));
}

/// Runs workers until the queue holds nothing unfinished and `total` jobs are finished,
/// SIGKILLing one of them (replaced at once) every 0.7 s while there is work left, at most
/// `max_kills` times; returns the kills.
async fn run_killing(
    fleet: &mut Fleet,
    queue: &RedisQueue,
    total: usize,
    max_kills: usize,
) -> usize {
    let mut workers = vec![fleet.spawn(), fleet.spawn()];
    let mut kills = 0;
    let finished = async {
        let mut victim = fleet.spawn();
        while kills < max_kills {
            victim.started().await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            let s = queue.status().await.expect("status");
            if settled(&s, total) || s.queued + s.scheduled < 5 {
                break;
            }
            victim.child.start_kill().expect("SIGKILL the worker");
            let _ = victim.child.wait().await;
            kills += 1;
            victim = fleet.spawn();
        }
        wait_for("every job to finish", || async {
            queue.status().await.is_ok_and(|s| settled(&s, total))
        })
        .await;
        victim
    };
    let victim = tokio::time::timeout(RUN_DEADLINE, finished)
        .await
        .unwrap_or_else(|_| panic!("run stuck:\n{}", log_tails(fleet.dir.path())));
    workers.push(victim);
    let ok = wait_all(&mut workers).await;
    assert_eq!(ok, workers.len(), "{}", log_tails(fleet.dir.path()));
    kills
}

/// Issue 18: creates, then updates (moved URLs, rotated header values), deletes and more
/// creates, through SIGKILLed workers and LeadSquared's faults (500s, "done, then 500",
/// resets, latency): every tenant's webhooks in the simulator end equal to the desired
/// state of the lines pushed, with no duplicate and nothing lost or dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_updates_and_deletes_through_sigkill_and_faults() {
    use revision_support::{assert_sim_holds, create, delete, desired, hook};
    let _turn = SERIAL.lock().await;
    let run = format!("rev{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let redis = common::redis_url();
    let name = common::unique_queue("chaos-revisions");
    let (sim, tenants) = start_sim(
        &run,
        6,
        25,
        Faults {
            seed: 18,
            error_rate: 0.05,
            created_then_error_rate: 0.1,
            reset_rate: 0.03,
            // Calls take 100-300 ms, so a killed worker is usually mid-call.
            latency: Duration::from_millis(100),
            latency_jitter: Duration::from_millis(200),
        },
    )
    .await;
    let queue = connect(&redis, &name).await;
    queue.put_tenants(&tenants).await.expect("tenants");
    let mut fleet = Fleet::new(
        &redis,
        &name,
        &[
            "--concurrency",
            "4",
            "--lease-ms",
            "2000",
            "--call-timeout-secs",
            "2",
            "--reconcile-settle-ms",
            "500",
            "--max-attempts",
            "20",
            "--retry-base-ms",
            "50",
            "--retry-cap-secs",
            "1",
        ],
    );
    let url = |t: &str, n: usize, v: u32| format!("https://hooks.example/{t}/{n}/v{v}");
    let first: Vec<NewJob> = tenants
        .iter()
        .flat_map(|t| (0..15).map(move |n| (t.name.clone(), n)))
        .map(|(t, n)| create(&t, hook(&t, n, &url(&t, n, 1), "s1")))
        .collect();
    let enqueued = |pushed: &[lsq_webhooks::queue::Pushed]| {
        pushed
            .iter()
            .filter(|p| matches!(p, lsq_webhooks::queue::Pushed::Enqueued { .. }))
            .count()
    };
    let mut total = enqueued(&queue.push(&first).await.expect("push"));
    let mut kills = run_killing(&mut fleet, &queue, total, 3).await;

    // The second file, per tenant: hooks 0-4 move, 5-7 rotate their header value, 8-10 are
    // deleted, 11-14 are the same, 15-19 are new.
    let second: Vec<NewJob> = tenants
        .iter()
        .flat_map(|t| (0..20).map(move |n| (t.name.clone(), n)))
        .map(|(t, n)| match n {
            0..=4 => create(&t, hook(&t, n, &url(&t, n, 2), "s1")),
            5..=7 => create(&t, hook(&t, n, &url(&t, n, 1), "s2")),
            8..=10 => delete(&create(&t, hook(&t, n, &url(&t, n, 1), "s1"))),
            _ => create(&t, hook(&t, n, &url(&t, n, 1), "s1")),
        })
        .collect();
    let pushed = enqueued(&queue.push(&second).await.expect("push"));
    assert_eq!(pushed, 6 * 16, "hooks 11-14 of each tenant are unchanged");
    total += pushed;
    kills += run_killing(&mut fleet, &queue, total, 3).await;

    let stats = sim.server.stats();
    let status = queue.status().await.expect("status");
    assert_eq!(
        (status.done as usize, status.dead),
        (total, 0),
        "{status:?}"
    );
    let all: Vec<NewJob> = first.iter().chain(&second).cloned().collect();
    assert_sim_holds(&stats, &desired(&all));
    let faults: (u64, u64, u64) = stats.accounts.values().fold((0, 0, 0), |f, a| {
        (
            f.0 + a.faults.errors,
            f.1 + a.faults.created_then_error,
            f.2 + a.faults.resets,
        )
    });
    assert!(kills > 0, "the run ended before any kill");
    assert!(faults.1 > 0, "no change was done and then answered 500");
    let calls = |f: fn(&lsq_webhooks::sim::AccountStats) -> u64| -> u64 {
        stats.accounts.values().map(f).sum()
    };
    report(&format!(
        "chaos revisions: jobs {total} kills {kills} outcomes {:?} | simulator: creates {} \
         updates {} deletes {} retrieves {} duplicates 0 | injected 500s {} done-then-500s {} \
         resets {}",
        status.outcomes,
        calls(|a| a.create_calls),
        calls(|a| a.update_calls),
        calls(|a| a.delete_calls),
        calls(|a| a.retrieve_calls),
        faults.0,
        faults.1,
        faults.2,
    ));
}
