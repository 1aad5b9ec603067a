//! Benchmarks of the Redis queue, printed as figures and ratios (never asserted):
//!
//! 1. enqueue: jobs/s for a JSON Lines file of 100k jobs (validated, then pushed), through
//!    the library and through the real binary; goal >= 100k jobs/s. Then `bigfile`:
//!    `enqueue` of a 1M-job file through the binary, peak memory and jobs/s, as shipped
//!    (checked in parts, pushed from a second read) beside everything kept in memory (as
//!    before); goal <= 200 MB at 110k jobs/s or better.
//! 2. dispatch: Lua dispatch calls/s with 2,000 tenants, one call at a time and with
//!    several connections at once.
//! 3. utilisation: 4 dispatching "processes" (each its own `RedisQueue`, so its own
//!    connections, with 8 worker tasks) against a strict sliding-window checker standing in
//!    for LeadSquared: the share of each tenant's limit used (goal >= 0.97) and the calls the
//!    checker would have refused (goal 0).
//!
//! 4. replicated: the cost of acknowledged writes (issue 16): push, dispatch and complete
//!    through a primary that has one replica, without `WAIT` and with `WAIT 1` after each
//!    push, dispatch and completion, side by side: jobs/s and the primary's CPU per job.
//!
//! `cargo bench --bench queue` runs it at full size. Without `--bench` (as `cargo test
//! --benches` runs it), or with `--quick`, everything is small and takes a few seconds.
//! Naming parts (`cargo bench --bench queue -- enqueue bigfile dispatch utilisation`) runs only
//! those.
//! Redis: `REDIS_URL`, or a private `redis-server` (see tests/common).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lsq_webhooks::job::{NewJob, legacy_key};
use lsq_webhooks::leadsquared::BodyLimits;
use lsq_webhooks::producer::{Producer, check_line, check_tenant, parse_line, read_jobs, validate};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// How big each part runs.
struct Scale {
    /// Jobs in the enqueue file.
    enqueue_jobs: usize,
    /// Tenants those jobs spread over.
    enqueue_tenants: usize,
    /// Jobs in the big file that `enqueue` must take in bounded memory.
    bigfile_jobs: usize,
    /// Tenants for the dispatch benchmark.
    dispatch_tenants: usize,
    /// Jobs per tenant there (= its limit, so every dispatch finds a job).
    dispatch_per_tenant: usize,
    /// Tenants in the utilisation run.
    util_tenants: usize,
    /// Their limit.
    util_limit: u32,
    /// The window (shorter than LeadSquared's 5 s so that many windows fit in a short run).
    util_window: Duration,
    /// Windows measured.
    util_windows: u32,
}

impl Scale {
    fn full() -> Self {
        Scale {
            enqueue_jobs: 100_000,
            enqueue_tenants: 1_000,
            bigfile_jobs: 1_000_000,
            dispatch_tenants: 2_000,
            dispatch_per_tenant: 25,
            util_tenants: 50,
            util_limit: 25,
            util_window: Duration::from_secs(1),
            util_windows: 20,
        }
    }

    fn quick() -> Self {
        Scale {
            enqueue_jobs: 2_000,
            enqueue_tenants: 20,
            bigfile_jobs: 5_000,
            dispatch_tenants: 100,
            dispatch_per_tenant: 5,
            util_tenants: 5,
            util_limit: 5,
            util_window: Duration::from_millis(200),
            util_windows: 3,
        }
    }
}

const PROCESSES: usize = 4;
const TASKS_PER_PROCESS: usize = 8;
const ENQUEUE_GOAL: f64 = 100_000.0;
const UTILISATION_GOAL: f64 = 0.97;

fn tenant(name: &str, limit: u32) -> Tenant {
    Tenant {
        name: name.to_string(),
        api_base: Some(url::Url::parse("http://127.0.0.1:9").expect("url")),
        access_key: Secret::new("ak"),
        secret_key: Secret::new("sk"),
        limit,
        reserve: 0,
        daily_limit: None,
    }
}

fn webhook(n: usize) -> serde_json::Value {
    serde_json::json!({
        "Description": format!("provisioned hook {n}"),
        "URL": format!("https://hooks.example.com/lsq/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": true,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": "j5FtwJk44e6fJHzbKc3fa82pJQQoBa7MebQHXAP"}]
    })
}

fn job(tenant: &str, n: usize) -> NewJob {
    let body = webhook(n).to_string();
    NewJob {
        delete: false,
        legacy_key: None,
        key: legacy_key(tenant, &body),
        tenant: tenant.to_string(),
        body,
    }
}

async fn connect(name: &str, window: Duration) -> RedisQueue {
    RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.to_string(),
            window,
            margin: Duration::ZERO,
            lease: Duration::from_secs(60),
            max_attempts: 8,
            day: std::time::Duration::from_secs(86_400),
            share: Default::default(),
            slow_start: false,
        },
    )
    .await
    .expect("connect to Redis")
}

/// Deletes every key of a benchmark queue.
async fn cleanup(name: &str) {
    let Ok(client) = redis::Client::open(common::redis_url()) else {
        return;
    };
    let Ok(mut con) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{name}}}:*"))
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut con)
            .await
        else {
            return;
        };
        if !keys.is_empty() {
            // Best effort: a leftover key of a uniquely named queue harms nobody.
            let _: redis::RedisResult<i64> =
                redis::cmd("UNLINK").arg(&keys).query_async(&mut con).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`; `None` where
/// that cannot be read (not Linux, or Redis on another machine).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// The Redis server's process id, when it runs on this machine (from `INFO server`).
async fn redis_pid() -> Option<String> {
    let client = redis::Client::open(common::redis_url()).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await
        .ok()?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .to_string();
    cpu_seconds(&pid).map(|_| pid)
}

/// CPU per job, in µs, between two readings; "n/a" when either is missing.
fn cpu_per_job(before: Option<f64>, after: Option<f64>, jobs: f64) -> String {
    match (before, after) {
        (Some(b), Some(a)) => format!("{:.1} µs", (a - b) * 1e6 / jobs.max(1.0)),
        _ => "n/a".into(),
    }
}

fn rate(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

/// Writes a job file of `jobs` jobs over `tenants` tenants; its size and the tenants.
fn write_jobs(path: &std::path::Path, jobs: usize, tenants: usize) -> (u64, Vec<Tenant>) {
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    for n in 0..jobs {
        let line = serde_json::json!({
            "tenant": format!("t{:04}", n % tenants),
            "webhook": webhook(n),
        });
        writeln!(w, "{line}").expect("write");
    }
    w.flush().expect("flush");
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let tenants = (0..tenants)
        .map(|t| tenant(&format!("t{t:04}"), 25))
        .collect();
    (bytes, tenants)
}

/// Runs a command to its end, reading its peak resident memory (`VmHWM`, a high-water mark
/// the kernel keeps) every few milliseconds while it runs: its output, wall time and peak
/// in MB.
fn run_with_peak(cmd: &mut std::process::Command) -> (std::process::Output, Duration, f64) {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    while child.try_wait().expect("wait").is_none() {
        if let Ok(status) = std::fs::read_to_string(&status_path)
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kb = peak_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("output");
    (out, started.elapsed(), peak_kb as f64 / 1024.0)
}

/// `enqueue` of a big file through the binary: as it runs (bounded memory: checked in
/// parts, pushed from a second read), beside the same binary told to keep every checked job
/// in memory, as `enqueue` did before. Quick mode makes the parts small so that the second
/// read is taken.
async fn bench_bigfile(scale: &Scale, dir: &std::path::Path, full: bool) {
    println!(
        "\n== enqueue of a big file: {} jobs over {} tenants, peak memory of the process",
        scale.bigfile_jobs, scale.enqueue_tenants
    );
    let path = dir.join("big.jsonl");
    let (bytes, tenants) = write_jobs(&path, scale.bigfile_jobs, scale.enqueue_tenants);
    let small_parts: &[&str] = if full {
        &[]
    } else {
        &["--part-bytes", "65536", "--keep-bytes", "0"]
    };
    let mut figures = Vec::new();
    for (label, extra) in [
        ("bounded (as shipped)", small_parts),
        ("everything kept", &["--keep-bytes", "1099511627776"][..]),
    ] {
        let name = common::unique_queue("bench-bigfile");
        let q = connect(&name, Duration::from_secs(5)).await;
        q.put_tenants(&tenants).await.expect("tenants");
        let (out, d, peak_mb) = run_with_peak(
            std::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
                .args(["--queue", &name, "enqueue"])
                .arg(&path)
                .args(extra)
                .env("REDIS_URL", common::redis_url()),
        );
        let jobs_per_s = rate(scale.bigfile_jobs as f64, d);
        println!(
            "{label:>22}: {:?} in {:.2} s = {jobs_per_s:.0} jobs/s; peak RSS {peak_mb:.0} MB (file {:.0} MB; goal <= 200 MB)",
            String::from_utf8_lossy(&out.stdout).trim(),
            d.as_secs_f64(),
            bytes as f64 / 1e6,
        );
        figures.push((jobs_per_s, peak_mb));
        drop(q);
        cleanup(&name).await;
    }
    if let [(bounded_rate, bounded_mb), (kept_rate, kept_mb)] = figures[..] {
        println!(
            "bounded / everything kept: speed {:.2}, peak memory {:.2}",
            bounded_rate / kept_rate.max(1e-9),
            bounded_mb / kept_mb.max(1e-9)
        );
    }
}

async fn bench_enqueue(scale: &Scale, dir: &std::path::Path) {
    println!(
        "\n== enqueue: {} jobs over {} tenants from a JSON Lines file",
        scale.enqueue_jobs, scale.enqueue_tenants
    );
    let path = dir.join("jobs.jsonl");
    let (bytes, tenants) = write_jobs(&path, scale.enqueue_jobs, scale.enqueue_tenants);
    let registered: HashSet<String> = tenants.iter().map(|t| t.name.clone()).collect();

    // The two roads through a line, on one thread, on the same lines: through a
    // `serde_json::Value` (which names every problem), and as `enqueue` checks a line.
    let data = std::fs::read(&path).expect("read the job file");
    let sample: Vec<&[u8]> = data
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .take(20_000)
        .collect();
    let started = Instant::now();
    let by_value = sample
        .iter()
        .filter(|line| {
            let request = std::str::from_utf8(line)
                .map_err(|_| Vec::new())
                .and_then(parse_line);
            request.is_ok_and(|r| {
                check_tenant(&r.tenant, &registered).is_none() && validate(&r).is_ok()
            })
        })
        .count();
    let value_road = started.elapsed();
    let started = Instant::now();
    let as_enqueue = sample
        .iter()
        .filter(|line| check_line(line, &registered, &BodyLimits::default()).is_ok())
        .count();
    let typed_road = started.elapsed();
    let per_line = |d: Duration| d.as_secs_f64() * 1e6 / sample.len().max(1) as f64;
    println!(
        "checking a line, one thread ({} lines): through a Value {:.2} µs, as enqueue does {:.2} µs; ratio {:.2} ({by_value} and {as_enqueue} valid)",
        sample.len(),
        per_line(value_road),
        per_line(typed_road),
        value_road.as_secs_f64() / typed_road.as_secs_f64().max(1e-9)
    );

    // Through the library, as `enqueue` does it: read + validate everything, then push.
    let name = common::unique_queue("bench-enqueue");
    let q = Arc::new(connect(&name, Duration::from_secs(5)).await);
    q.put_tenants(&tenants).await.expect("tenants");
    let own_validate_before = cpu_seconds("self");
    let started = Instant::now();
    let file = read_jobs(
        BufReader::new(std::fs::File::open(&path).expect("open")),
        &registered,
        &BodyLimits::default(),
    )
    .expect("read");
    let validated = started.elapsed();
    let own_validate_after = cpu_seconds("self");
    // For the second run, all duplicates (copied outside the timings).
    let again_jobs = file.jobs.clone();
    let producer = Producer::new(q.clone());
    let redis = redis_pid().await;
    let redis_cpu = || redis.as_deref().and_then(cpu_seconds);
    let (redis_before, own_before) = (redis_cpu(), cpu_seconds("self"));
    let push_started = Instant::now();
    let (summary, _) = producer
        .push_validated(file.jobs, &mut |_| {})
        .await
        .expect("push");
    let total = validated + push_started.elapsed();
    let (redis_after, own_after) = (redis_cpu(), cpu_seconds("self"));
    let n = summary.enqueued as f64;
    println!(
        "library: {} jobs ({:.1} MB) in {:.3} s = {:.0} jobs/s (read+validate {:.3} s = {:.0}/s, push {:.3} s = {:.0}/s); ratio to goal {:.2}",
        summary.enqueued,
        bytes as f64 / 1e6,
        total.as_secs_f64(),
        rate(n, total),
        validated.as_secs_f64(),
        rate(n, validated),
        (total - validated).as_secs_f64(),
        rate(n, total - validated),
        rate(n, total) / ENQUEUE_GOAL
    );
    // CPU time does not grow when other processes share the machine, as wall time does.
    println!(
        "library, CPU per job: read+validate {} (this process, all threads); push: Redis {}, this process {}",
        cpu_per_job(own_validate_before, own_validate_after, n),
        cpu_per_job(redis_before, redis_after, n),
        cpu_per_job(own_before, own_after, n)
    );
    let started = Instant::now();
    let again = producer
        .push_validated(again_jobs, &mut |_| {})
        .await
        .expect("push");
    let d = started.elapsed();
    println!(
        "library, all duplicates: {} in {:.3} s = {:.0} jobs/s",
        again.0.duplicate,
        d.as_secs_f64(),
        rate(again.0.duplicate as f64, d)
    );
    drop(q);
    cleanup(&name).await;

    // Through the binary: process start, connect, read, validate, push, summary.
    let name = common::unique_queue("bench-enqueue-bin");
    let q = connect(&name, Duration::from_secs(5)).await;
    q.put_tenants(&tenants).await.expect("tenants");
    let redis_before = redis_cpu();
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--queue", &name, "enqueue"])
        .arg(&path)
        .env("REDIS_URL", common::redis_url())
        .output()
        .expect("run lsq-webhooks enqueue");
    let d = started.elapsed();
    println!(
        "binary: `lsq-webhooks enqueue FILE` -> {:?} in {:.3} s = {:.0} jobs/s; ratio to goal {:.2}",
        String::from_utf8_lossy(&out.stdout).trim(),
        d.as_secs_f64(),
        rate(scale.enqueue_jobs as f64, d),
        rate(scale.enqueue_jobs as f64, d) / ENQUEUE_GOAL
    );
    println!(
        "binary, Redis CPU per job: {}",
        cpu_per_job(redis_before, redis_cpu(), scale.enqueue_jobs as f64)
    );
    drop(q);
    cleanup(&name).await;
}

async fn bench_dispatch(scale: &Scale) {
    let jobs_total = scale.dispatch_tenants * scale.dispatch_per_tenant;
    println!(
        "\n== dispatch: {} tenants, {} jobs each (= their limit), {jobs_total} Lua dispatch calls",
        scale.dispatch_tenants, scale.dispatch_per_tenant
    );
    for (label, connections, in_flight) in [
        ("1 connection, 1 call at a time", 1usize, 1usize),
        ("4 connections, 8 calls in flight each", 4, 8),
    ] {
        let name = common::unique_queue("bench-dispatch");
        let setup = connect(&name, Duration::from_secs(5)).await;
        let tenants: Vec<Tenant> = (0..scale.dispatch_tenants)
            .map(|t| tenant(&format!("t{t:04}"), scale.dispatch_per_tenant as u32))
            .collect();
        setup.put_tenants(&tenants).await.expect("tenants");
        let jobs: Vec<NewJob> = (0..scale.dispatch_per_tenant)
            .flat_map(|n| (0..scale.dispatch_tenants).map(move |t| job(&format!("t{t:04}"), n)))
            .collect();
        setup.push(&jobs).await.expect("push");
        let mut queues = Vec::new();
        for _ in 0..connections {
            queues.push(Arc::new(connect(&name, Duration::from_secs(5)).await));
        }
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for q in &queues {
            for _ in 0..in_flight {
                let q = q.clone();
                tasks.spawn(async move {
                    let mut n = 0u64;
                    while let Dispatch::Job(_) = q.dispatch().await.expect("dispatch") {
                        n += 1;
                    }
                    n
                });
            }
        }
        let mut dispatched = 0;
        while let Some(n) = tasks.join_next().await {
            dispatched += n.expect("task");
        }
        let d = started.elapsed();
        println!(
            "{label}: {dispatched} jobs in {:.3} s = {:.0} dispatch calls/s",
            d.as_secs_f64(),
            rate(dispatched as f64, d)
        );
        drop(queues);
        drop(setup);
        cleanup(&name).await;
    }
}

/// LeadSquared's side of the limit: a strict sliding window per tenant on the arrival
/// clock. A call is refused when `limit` calls arrived in the window before it.
/// Per tenant: arrival times of accepted calls still in the window, and every accepted call.
type Arrivals = HashMap<String, (VecDeque<Instant>, Vec<Instant>)>;

struct StrictWindow {
    limit: usize,
    window: Duration,
    calls: Mutex<Arrivals>,
    refused: std::sync::atomic::AtomicU64,
}

impl StrictWindow {
    fn arrive(&self, tenant: &str) {
        let now = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let (recent, all) = calls.entry(tenant.to_string()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            recent.pop_front();
        }
        if recent.len() >= self.limit {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            recent.push_back(now);
            all.push(now);
        }
    }
}

async fn bench_utilisation(scale: &Scale) {
    let window = scale.util_window;
    let limit = scale.util_limit;
    println!(
        "\n== utilisation: {} tenants, limit {limit} per {:?}, {PROCESSES} processes x {TASKS_PER_PROCESS} tasks, {} windows measured, 0-2 ms network each way",
        scale.util_tenants, window, scale.util_windows
    );
    let name = common::unique_queue("bench-util");
    let setup = connect(&name, window).await;
    let tenants: Vec<Tenant> = (0..scale.util_tenants)
        .map(|t| tenant(&format!("t{t:03}"), limit))
        .collect();
    setup.put_tenants(&tenants).await.expect("tenants");
    // More jobs than the run can use, so every tenant always has work.
    let per_tenant = (scale.util_windows as usize + 3) * limit as usize;
    let jobs: Vec<NewJob> = (0..per_tenant)
        .flat_map(|n| (0..scale.util_tenants).map(move |t| job(&format!("t{t:03}"), n)))
        .collect();
    setup.push(&jobs).await.expect("push");

    let checker = Arc::new(StrictWindow {
        limit: limit as usize,
        window,
        calls: Mutex::new(HashMap::new()),
        refused: Default::default(),
    });
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for _ in 0..PROCESSES {
        let q = Arc::new(connect(&name, window).await);
        for _ in 0..TASKS_PER_PROCESS {
            let (q, checker, stop) = (q.clone(), checker.clone(), stop.clone());
            tasks.spawn(async move {
                while !stop.is_cancelled() {
                    match q.dispatch().await.expect("dispatch") {
                        Dispatch::Job(j) => {
                            let there = rand::rng().random_range(0..=2000u64);
                            let back = rand::rng().random_range(0..=2000u64);
                            tokio::time::sleep(Duration::from_micros(there)).await;
                            checker.arrive(&j.tenant);
                            tokio::time::sleep(Duration::from_micros(back)).await;
                            q.answered(&j).await.expect("answered");
                            q.complete(&j, "wh", false).await.expect("complete");
                        }
                        Dispatch::Wait(d) => {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = q.wait_for_work(d) => {}
                            }
                        }
                        Dispatch::Empty => break,
                    }
                }
            });
        }
    }
    let run = window * (scale.util_windows + 1) + window / 2;
    tokio::time::sleep(run.saturating_sub(started.elapsed())).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}

    let calls: Arrivals =
        std::mem::take(&mut *checker.calls.lock().unwrap_or_else(|e| e.into_inner()));
    let ideal = f64::from(scale.util_windows * limit);
    let mut shares: Vec<f64> = calls
        .values()
        .map(|(_, all)| {
            let Some(first) = all.first() else {
                return 0.0;
            };
            let span = window * scale.util_windows;
            all.iter()
                .filter(|t| t.duration_since(*first) < span)
                .count() as f64
                / ideal
        })
        .collect();
    shares.resize(scale.util_tenants, 0.0);
    shares.sort_by(f64::total_cmp);
    let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
    // Steady cadence: call i and call i + k*limit can be no less than k windows apart; how
    // close they came, over each tenant's whole run.
    let mut cadence: Vec<f64> = calls
        .values()
        .filter_map(|(_, all)| {
            let l = limit as usize;
            let j = (all.len().saturating_sub(1) / l) * l;
            let gap = all.get(j)?.duration_since(*all.first()?);
            (j >= l && !gap.is_zero())
                .then(|| (window * (j / l) as u32).as_secs_f64() / gap.as_secs_f64())
        })
        .collect();
    cadence.sort_by(f64::total_cmp);
    if !cadence.is_empty() {
        println!(
            "cadence (k windows / time between call i and call i+k*limit, whole run): mean {:.4}, min {:.4}",
            cadence.iter().sum::<f64>() / cadence.len() as f64,
            cadence[0]
        );
    }
    let refused = checker.refused.load(std::sync::atomic::Ordering::Relaxed);
    let accepted: usize = calls.values().map(|(_, all)| all.len()).sum();
    println!(
        "per-tenant utilisation over {} windows from each tenant's first call: mean {mean:.3}, min {:.3}, max {:.3}; ratio to goal {:.2}",
        scale.util_windows,
        shares.first().copied().unwrap_or(0.0),
        shares.last().copied().unwrap_or(0.0),
        mean / UTILISATION_GOAL
    );
    println!("calls accepted {accepted}, refused by the strict window (excess) {refused}");
    drop(setup);
    cleanup(&name).await;
}

/// The primary's process id, for its CPU readings.
fn pid_on(port: u16) -> Option<String> {
    let info = common::sentinel::cli(port, &["info", "server"]);
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))?
        .trim()
        .to_string();
    cpu_seconds(&pid).map(|_| pid)
}

/// Push, then drain with dispatches of 32 and a completion per job (8 at a time), against
/// a primary with one replica; once without WAIT, once with WAIT 1 (see the module header).
async fn bench_replicated(scale: &Scale) {
    use lsq_webhooks::queue::Dispatched;
    use lsq_webhooks::queue::redis::RedisOptions;
    let jobs_n = scale.dispatch_tenants * scale.dispatch_per_tenant;
    println!(
        "\n## replicated: {jobs_n} jobs over {} tenants, primary + 1 replica on loopback",
        scale.dispatch_tenants
    );
    let primary = common::PrivateRedis::start(&[]).expect("primary");
    let port = primary.port.to_string();
    let replica =
        common::PrivateRedis::start(&["--replicaof", "127.0.0.1", &port]).expect("replica");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::sentinel::cli(replica.port, &["info", "replication"])
        .contains("master_link_status:up")
    {
        assert!(Instant::now() < deadline, "the replica did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = pid_on(primary.port);
    let mut rows = Vec::new();
    for (label, replicas) in [("no WAIT", 0u32), ("WAIT 1", 1)] {
        let name = format!("bench-repl-{}", uuid::Uuid::new_v4().simple());
        let queue = RedisQueue::connect_with(
            &primary.url(),
            QueueConfig {
                name,
                window: Duration::from_secs(5),
                lease: Duration::from_secs(60),
                ..QueueConfig::default()
            },
            RedisOptions {
                min_replicas: Some(replicas),
                replica_timeout: Duration::from_secs(1),
                ..RedisOptions::default()
            },
        )
        .await
        .expect("connect");
        let tenants: Vec<Tenant> = (0..scale.dispatch_tenants)
            .map(|i| tenant(&format!("t{i}"), 10_000))
            .collect();
        queue.put_tenants(&tenants).await.expect("tenants");
        let all: Vec<NewJob> = (0..jobs_n)
            .map(|i| job(&tenants[i % tenants.len()].name, i))
            .collect();
        let cpu0 = pid.as_deref().and_then(cpu_seconds);
        let started = Instant::now();
        for chunk in all.chunks(100) {
            queue.push(chunk).await.expect("push");
        }
        let pushed = started.elapsed();
        let cpu1 = pid.as_deref().and_then(cpu_seconds);
        let started = Instant::now();
        let mut done = 0usize;
        while done < jobs_n {
            match queue.dispatch_many(32, None).await.expect("dispatch") {
                Dispatched::Jobs(jobs) => {
                    for batch in jobs.chunks(8) {
                        let calls = batch.iter().map(|j| queue.complete(j, "wh", false));
                        for r in futures::future::join_all(calls).await {
                            r.expect("complete");
                        }
                    }
                    done += jobs.len();
                }
                Dispatched::Wait(d) => tokio::time::sleep(d).await,
                Dispatched::Empty => break,
            }
        }
        let drained = started.elapsed();
        let cpu2 = pid.as_deref().and_then(cpu_seconds);
        println!(
            "{label:>8}: push {:>9.0} jobs/s (CPU {} per job) | dispatch + complete {:>8.0} jobs/s (CPU {} per job)",
            rate(jobs_n as f64, pushed),
            cpu_per_job(cpu0, cpu1, jobs_n as f64),
            rate(done as f64, drained),
            cpu_per_job(cpu1, cpu2, done as f64),
        );
        rows.push((rate(jobs_n as f64, pushed), rate(done as f64, drained)));
        let _ = queue.delete_all().await;
    }
    if let [(p0, d0), (p1, d1)] = rows[..] {
        println!(
            "WAIT 1 / no WAIT: push {:.2}x, dispatch + complete {:.2}x",
            p1 / p0.max(1e-9),
            d1 / d0.max(1e-9)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--quick");
    let scale = if full { Scale::full() } else { Scale::quick() };
    println!(
        "queue benchmark ({}), Redis at {}",
        if full { "full" } else { "quick" },
        common::redis_url()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    // `cargo bench --bench queue -- enqueue` runs only the parts named.
    let named: Vec<String> = args
        .iter()
        .filter(|a| {
            [
                "enqueue",
                "bigfile",
                "dispatch",
                "utilisation",
                "replicated",
            ]
            .contains(&a.as_str())
        })
        .cloned()
        .collect();
    let run = |part: &str| named.is_empty() || named.iter().any(|n| n == part);
    runtime.block_on(async {
        if run("enqueue") {
            bench_enqueue(&scale, dir.path()).await;
        }
        if run("bigfile") {
            bench_bigfile(&scale, dir.path(), full).await;
        }
        if run("dispatch") {
            bench_dispatch(&scale).await;
        }
        if run("utilisation") {
            bench_utilisation(&scale).await;
        }
        if run("replicated") {
            bench_replicated(&scale).await;
        }
    });
}
