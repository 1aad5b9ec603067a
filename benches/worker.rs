//! Worker benchmark: the real binary as 4 worker processes on one Redis queue, against the
//! project's simulator in this process. Prints four figures:
//!
//! 1. utilisation of each tenant's limit while it has work (calls the simulator admitted in
//!    a steady-state interval / what the limit allows in it), and the rate-limit answers;
//! 2. aggregate jobs per second with many tenants whose limits do not bind;
//! 3. enqueue-to-call latency for an idle tenant: from just before the push until the
//!    simulator's router sees the Create request (p50, p99);
//! 4. `redis`: Redis's own work per job in the throughput drain (2,000 tenants x 10 jobs):
//!    CPU per job (goal <= 40 µs), commands per job and µs per command; then Redis CPU per
//!    job of each kind of call (dispatch, fence, completion, history) made one kind at a time
//!    (`steps`, also on its own: `-- steps`);
//! 5. the healthy tenants' throughput alone and beside tenants whose hosts refuse every
//!    connection or never answer, and the ratio (issue 14: others unaffected).
//!
//! `cargo bench --bench worker` runs the full sizes (LeadSquared's 5-second window, a 60 s
//! utilisation interval, 2,000 tenants). Without `--bench` (e.g. `cargo test --benches`) it
//! runs a quick version with small sizes and a 1-second window, as a smoke test.
//! `BENCH_WORKER_LOG=info` (any `RUST_LOG` filter) shows the worker processes' logs. Naming
//! parts (`-- latency throughput utilisation redis deadhosts`) runs only those. Redis's
//! figures depend on the workers' build in one way: a Create that starts later than its
//! dispatch's fence allows (a twentieth of the window) takes a fence call of its own, and
//! debug-built workers sharing a core start many Creates that late (0.2 to 0.6 fence calls
//! per job, against almost none for the optimized build). `cargo bench --bench worker --
//! redis` (the optimized bench profile, as deployed) gives the figure; `--profile dev`
//! builds faster and overstates it.
//! Needs Redis (`REDIS_URL`, or a `redis-server` the harness can start).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/worker_support/mod.rs"]
mod worker_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use lsq_webhooks::job::NewJob;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::sim::{self, SimConfig, SimState};
use lsq_webhooks::tenant::Tenant;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    window: Duration,
    /// Steady-state interval measured for utilisation.
    interval: Duration,
    util_tenants: usize,
    util_limit: u32,
    tput_tenants: usize,
    tput_jobs_per_tenant: usize,
    latency_samples: usize,
    processes: usize,
    concurrency: usize,
}

const FULL: Sizes = Sizes {
    window: Duration::from_secs(5),
    interval: Duration::from_secs(60),
    util_tenants: 20,
    util_limit: 25,
    tput_tenants: 2000,
    tput_jobs_per_tenant: 10,
    latency_samples: 200,
    processes: 4,
    concurrency: 128,
};

const QUICK: Sizes = Sizes {
    window: Duration::from_secs(1),
    interval: Duration::from_secs(3),
    util_tenants: 5,
    util_limit: 10,
    tput_tenants: 100,
    tput_jobs_per_tenant: 5,
    latency_samples: 20,
    processes: 4,
    concurrency: 32,
};

/// A simulator whose router also reports each Create's arrival (tenant access key, when)
/// while `recording` is on.
struct RecordingSim {
    state: Arc<SimState>,
    base: url::Url,
    arrivals: mpsc::Receiver<(String, Instant)>,
    recording: Arc<AtomicBool>,
    stop: CancellationToken,
}

async fn start_recording_sim(config: SimConfig) -> RecordingSim {
    let state = SimState::new(config).expect("simulator config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base =
        url::Url::parse(&format!("http://{}", listener.local_addr().expect("addr"))).expect("url");
    // Bounded: only the latency part records, one call at a time; extra arrivals are dropped.
    let (tx, arrivals) = mpsc::channel(1024);
    let recording = Arc::new(AtomicBool::new(false));
    let on = recording.clone();
    let router = sim::app(state.clone()).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let (tx, on) = (tx.clone(), on.clone());
            async move {
                if on.load(Ordering::Relaxed) && req.uri().path().ends_with("/Create") {
                    let key = req
                        .headers()
                        .get("x-LSQ-AccessKey")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.try_send((key, Instant::now()));
                }
                let response: Response = next.run(req).await;
                response
            }
        },
    ));
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move { until.cancelled().await })
            .await;
    });
    RecordingSim {
        state,
        base,
        arrivals,
        recording,
        stop,
    }
}

fn named_tenants(base: &url::Url, prefix: &str, n: usize, limit: u32) -> Vec<Tenant> {
    (0..n)
        .map(|i| Tenant {
            name: format!("{prefix}{i:04}"),
            api_base: Some(base.clone()),
            access_key: Secret::new(format!("ak-{prefix}{i:04}")),
            secret_key: Secret::new(format!("sk-{prefix}{i:04}")),
            limit,
            reserve: 0,
            daily_limit: None,
        })
        .collect()
}

/// Worker processes of the real binary on one queue.
struct Workers(Vec<tokio::process::Child>);

impl Workers {
    fn spawn(queue: &str, sizes: &Sizes, extra: &[&str]) -> Workers {
        let window_ms = sizes.window.as_millis().to_string();
        let concurrency = sizes.concurrency.to_string();
        Workers(
            (0..sizes.processes)
                .map(|_| {
                    tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
                        .args(["--redis", &common::redis_url(), "--queue", queue])
                        .args(["worker", "--concurrency", &concurrency])
                        .args(["--window-ms", &window_ms, "--shutdown-grace-secs", "5"])
                        .args(extra)
                        .env(
                            "RUST_LOG",
                            std::env::var("BENCH_WORKER_LOG").unwrap_or("error".into()),
                        )
                        .stdout(std::process::Stdio::null())
                        .stderr(if std::env::var("BENCH_WORKER_LOG").is_ok() {
                            std::process::Stdio::inherit()
                        } else {
                            std::process::Stdio::null()
                        })
                        .kill_on_drop(true)
                        .spawn()
                        .expect("start a worker process")
                })
                .collect(),
        )
    }

    async fn stop(mut self) {
        for child in &self.0 {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for child in &mut self.0 {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}

async fn redis_queue(name: &str, window: Duration) -> RedisQueue {
    RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.to_string(),
            window,
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect to redis")
}

async fn push_all(queue: &RedisQueue, jobs: &[NewJob]) {
    for chunk in jobs.chunks(1000) {
        queue.push(chunk).await.expect("push");
    }
}

fn calls_by_account(state: &SimState) -> BTreeMap<String, u64> {
    state
        .stats()
        .accounts
        .into_iter()
        .map(|(k, a)| (k, a.calls))
        .collect()
}

/// Figure 1: utilisation of each tenant's limit in a steady-state interval.
async fn utilisation(sizes: &Sizes) {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let known = named_tenants(&placeholder, "u", sizes.util_tenants, sizes.util_limit);
    let mut config = worker_support::sim_config(&known, sizes.window);
    // Some network time, so that calls are re-stamped when answered.
    config.faults.latency = Duration::from_millis(10);
    config.faults.latency_jitter = Duration::from_millis(30);
    let sim = start_recording_sim(config).await;
    let ts = named_tenants(&sim.base, "u", sizes.util_tenants, sizes.util_limit);
    let name = common::unique_queue("bench-util");
    let queue = redis_queue(&name, sizes.window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    // Enough work for a warm-up window, the interval, and a margin.
    let windows = (sizes.interval.as_secs_f64() / sizes.window.as_secs_f64()).ceil() as usize + 4;
    let per_tenant = sizes.util_limit as usize * windows;
    push_all(&queue, &worker_support::jobs(&ts, per_tenant)).await;
    let workers = Workers::spawn(&name, sizes, &[]);
    while calls_by_account(&sim.state).values().sum::<u64>() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One window of warm-up, then the interval.
    tokio::time::sleep(sizes.window).await;
    let (t1, c1) = (Instant::now(), calls_by_account(&sim.state));
    tokio::time::sleep(sizes.interval).await;
    let (t2, c2) = (Instant::now(), calls_by_account(&sim.state));
    workers.stop().await;
    let elapsed = t2 - t1;
    let allowed = sizes.util_limit as f64 * elapsed.as_secs_f64() / sizes.window.as_secs_f64();
    let utils: Vec<f64> = c2
        .iter()
        .map(|(k, n)| (n - c1.get(k).copied().unwrap_or(0)) as f64 / allowed)
        .collect();
    let stats = sim.state.stats();
    let limited = worker_support::rate_limit_answers(&stats);
    let min = utils.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = utils.iter().sum::<f64>() / utils.len().max(1) as f64;
    let max_admitted = stats
        .accounts
        .values()
        .map(|a| a.max_admitted_in_window)
        .max()
        .unwrap_or(0);
    println!(
        "utilisation: {} processes, {} tenants x {} calls per {:?}, interval {:.1} s: \
         min {min:.3}, mean {mean:.3} (goal >= 0.97); rate-limit answers {limited} (goal 0); \
         most calls in any window {max_admitted} (limit {})",
        sizes.processes,
        sizes.util_tenants,
        sizes.util_limit,
        sizes.window,
        elapsed.as_secs_f64(),
        sizes.util_limit
    );
    sim.stop.cancel();
}

/// One drain of the throughput figure: many tenants whose limits do not bind, every job
/// pushed before the workers start.
struct Drain {
    jobs: usize,
    elapsed: Duration,
    done: u64,
    dead: u64,
    rate_limited: u64,
}

/// Pushes `tenants x jobs_per_tenant` jobs, starts the worker processes (with
/// `worker_args`), and waits until the
/// queue is idle. `first` runs just before the workers start and `last` as soon as the queue
/// is idle, before they stop (an idle worker keeps polling); what they read comes back with
/// the drain.
async fn drain<A, B>(
    sizes: &Sizes,
    prefix: &str,
    worker_args: &[&str],
    first: impl std::future::Future<Output = A>,
    last: impl std::future::Future<Output = B>,
) -> (Drain, A, B) {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let known = named_tenants(&placeholder, prefix, sizes.tput_tenants, 25);
    let sim = start_recording_sim(worker_support::sim_config(&known, sizes.window)).await;
    let ts = named_tenants(&sim.base, prefix, sizes.tput_tenants, 25);
    let name = common::unique_queue(&format!("bench-{prefix}"));
    let queue = redis_queue(&name, sizes.window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    let jobs = worker_support::jobs(&ts, sizes.tput_jobs_per_tenant);
    push_all(&queue, &jobs).await;
    let before = first.await;
    let start = Instant::now();
    let workers = Workers::spawn(&name, sizes, worker_args);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if queue.is_idle().await.expect("is_idle") {
            break;
        }
    }
    let elapsed = start.elapsed();
    let after = last.await;
    workers.stop().await;
    let status = queue.status().await.expect("status");
    let stats = sim.state.stats();
    sim.stop.cancel();
    let _ = queue.delete_all().await;
    let drained = Drain {
        jobs: jobs.len(),
        elapsed,
        done: status.done,
        dead: status.dead,
        rate_limited: worker_support::rate_limit_answers(&stats),
    };
    (drained, before, after)
}

/// Figure 2: aggregate jobs per second with many tenants.
async fn throughput(sizes: &Sizes) {
    let (d, (), ()) = drain(sizes, "p", &[], async {}, async {}).await;
    println!(
        "throughput: {} processes x concurrency {}, {} tenants, {} jobs: {:.0} jobs/s \
         (goal >= 5000) in {:.2} s; done {}, dead {}, rate-limit answers {}",
        sizes.processes,
        sizes.concurrency,
        sizes.tput_tenants,
        d.jobs,
        d.jobs as f64 / d.elapsed.as_secs_f64(),
        d.elapsed.as_secs_f64(),
        d.done,
        d.dead,
        d.rate_limited
    );
}

/// How a dead host fails, for figure 4.
#[derive(Clone, Copy)]
enum Dead {
    /// Nothing listens: every connection is refused at once.
    Closed,
    /// Accepts and never answers: every call waits out the call timeout.
    Silent,
}

/// A loopback address that fails as `dead` says, for as long as this process runs.
fn dead_host(dead: Dead) -> url::Url {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    match dead {
        Dead::Closed => drop(l),
        Dead::Silent => {
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for c in l.incoming().flatten() {
                    held.push(c);
                }
            });
        }
    }
    url::Url::parse(&format!("http://{addr}")).expect("url")
}

/// Figure 4: the healthy tenants' throughput alone, then beside tenants whose hosts are dead
/// (refused, or silent until the call timeout), side by side in one run.
async fn dead_hosts(sizes: &Sizes) {
    const TIMEOUT_SECS: &str = "5";
    // The worker's default concurrency: slots are what a silent host could take from others.
    let sizes = &Sizes {
        concurrency: 64,
        ..*sizes
    };
    let healthy = (sizes.tput_tenants / 10).max(10);
    let dead_each = 10;
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let known = named_tenants(&placeholder, "h", healthy, 25);
    let sim = start_recording_sim(worker_support::sim_config(&known, sizes.window)).await;
    let mut rates = Vec::new();
    // Alone, beside dead hosts, alone again: the ratio is to the mean of the two alone runs,
    // so a warm-up or a noisy moment on one side does not pass for an effect.
    for with_dead in [false, true, false] {
        // The simulator still counts the last run's calls in each account's window, and a
        // new queue knows nothing of them: start when they have left it.
        tokio::time::sleep(sizes.window * 2).await;
        let ts = named_tenants(&sim.base, "h", healthy, 25);
        let name = common::unique_queue("bench-dead");
        let queue = redis_queue(&name, sizes.window).await;
        let mut all = ts.clone();
        if with_dead {
            for (dead, prefix) in [(Dead::Closed, "closed"), (Dead::Silent, "silent")] {
                all.extend(named_tenants(&dead_host(dead), prefix, dead_each, 25));
            }
        }
        queue.put_tenants(&all).await.expect("tenants");
        let dead_jobs: Vec<NewJob> = worker_support::jobs(&all[ts.len()..], 25);
        push_all(&queue, &dead_jobs).await;
        let jobs = worker_support::jobs(&ts, sizes.tput_jobs_per_tenant * 4);
        let total = jobs.len() as u64;
        push_all(&queue, &jobs).await;
        let start = Instant::now();
        let workers = Workers::spawn(&name, sizes, &["--call-timeout-secs", TIMEOUT_SECS]);
        while queue.status().await.expect("status").done < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = start.elapsed();
        workers.stop().await;
        let status = queue.status().await.expect("status");
        let held = status.tenants.iter().filter(|t| t.hold.is_some()).count();
        let rate = total as f64 / elapsed.as_secs_f64();
        println!(
            "dead hosts: {healthy} healthy tenants, {total} jobs{}: {rate:.0} jobs/s in {:.2} s; \
             tenants held at the end {held} (concurrency {} x {} processes)",
            if with_dead {
                format!(
                    ", beside {dead_each} refused and {dead_each} silent hosts (call timeout \
                     {TIMEOUT_SECS} s) with 25 jobs each"
                )
            } else {
                String::new()
            },
            elapsed.as_secs_f64(),
            sizes.concurrency,
            sizes.processes,
        );
        rates.push(rate);
    }
    println!(
        "dead hosts: healthy throughput beside dead hosts / alone = {:.2} (goal 1.0)",
        rates[1] / ((rates[0] + rates[2]) / 2.0)
    );
    sim.stop.cancel();
}

/// Figure 3: enqueue-to-call latency for an idle tenant.
async fn latency(sizes: &Sizes) {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let n = sizes.latency_samples;
    let known = named_tenants(&placeholder, "l", n, 25);
    let mut sim = start_recording_sim(worker_support::sim_config(&known, sizes.window)).await;
    let ts = named_tenants(&sim.base, "l", n, 25);
    let name = common::unique_queue("bench-lat");
    let queue = redis_queue(&name, sizes.window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    let workers = Workers::spawn(&name, sizes, &[]);
    // Let the workers start and go idle on the empty queue.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sim.recording.store(true, Ordering::Relaxed);
    let mut samples = Vec::with_capacity(n);
    for (i, t) in ts.iter().enumerate() {
        while sim.arrivals.try_recv().is_ok() {}
        let job = NewJob {
            delete: false,
            legacy_key: None,
            tenant: t.name.clone(),
            body: worker_support::body(&t.name, i).to_string(),
            key: format!("lat-{i}"),
        };
        let t0 = Instant::now();
        queue.push(&[job]).await.expect("push");
        let want = t.access_key.expose().to_string();
        let arrived = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match sim.arrivals.recv().await {
                    Some((key, at)) if key == want => return Some(at),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await;
        match arrived {
            Ok(Some(at)) => samples.push(at - t0),
            _ => eprintln!("latency: no call for {} within 10 s", t.name),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    workers.stop().await;
    samples.sort();
    let pct = |p: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "latency: enqueue-to-call for an idle tenant, {} samples, {} idle worker processes: \
         p50 {:.2} ms (goal <= 5), p99 {:.2} ms (goal <= 50), max {:.2} ms",
        samples.len(),
        sizes.processes,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    sim.stop.cancel();
}

/// Figure 4: Redis's own work per job in the throughput drain (every call a real job makes:
/// dispatch, fence, completion, history), from Redis's counters: CPU (`INFO cpu`, user +
/// system), calls and µs per command (`INFO commandstats`); then [`steps`].
async fn redis_work(sizes: &Sizes) {
    let mut per_job = Vec::new();
    for (label, args) in [
        ("completions one per call", &["--complete-batch", "1"][..]),
        ("completions batched (as shipped)", &[][..]),
    ] {
        let (d, before, after) = drain(sizes, "w", args, redis_counters(), redis_counters()).await;
        let jobs = d.jobs as f64;
        let cpu = (after.cpu - before.cpu) * 1e6 / jobs;
        per_job.push(cpu);
        let mut rows: Vec<(String, f64, f64)> = after
            .commands
            .iter()
            .map(|(name, &(calls, usec))| {
                let (c0, u0) = before.commands.get(name).copied().unwrap_or((0, 0));
                (
                    name.clone(),
                    (calls - c0) as f64 / jobs,
                    (usec - u0) as f64 / jobs,
                )
            })
            .filter(|(_, calls, _)| *calls > 0.0)
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        println!(
            "redis work, {label}: {} jobs over {} tenants, {} processes, done {}, dead {}, \
             {:.0} jobs/s: Redis CPU {cpu:.1} µs per job (goal <= 40; user {:.1}, system {:.1})",
            d.jobs,
            sizes.tput_tenants,
            sizes.processes,
            d.done,
            d.dead,
            jobs / d.elapsed.as_secs_f64(),
            (after.user - before.user) * 1e6 / jobs,
            (after.cpu - after.user - before.cpu + before.user) * 1e6 / jobs,
        );
        // Redis counts the commands a script calls as well as the EVALSHA that runs it
        // (whose time includes theirs): a row per command, not a sum.
        println!("  per command (EVALSHA's time includes the commands its scripts call):");
        for (name, calls, usec) in &rows {
            println!("  {name:<18} {calls:>6.3} calls/job {usec:>7.2} µs/job");
        }
    }
    if let [one, batched] = per_job[..] {
        println!(
            "redis work: batched / one per call = {:.2} (same run, side by side)",
            batched / one.max(1e-9)
        );
    }
}

/// Redis CPU per job of each call a job makes, one kind of call at a time over the same
/// jobs as the drain (2,000 tenants x 10 jobs), driven from this process (no simulator, no
/// worker) with 64 calls in flight as a worker keeps them: what each script costs,
/// including its round trip.
async fn steps(sizes: &Sizes) {
    use lsq_webhooks::job::Attempt;
    use lsq_webhooks::queue::{Completion, Dispatched, Fence, LeasedJob};
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let ts = named_tenants(&placeholder, "c", sizes.tput_tenants, 25);
    let name = common::unique_queue("bench-steps");
    let queue = redis_queue(&name, sizes.window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    let jobs = worker_support::jobs(&ts, sizes.tput_jobs_per_tenant);
    push_all(&queue, &jobs).await;
    let n = jobs.len() as f64;
    let fence = Fence {
        slack: Duration::from_secs(1),
        in_flight: Duration::from_secs(30),
    };
    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    let t0 = redis_counters().await;
    let mut leased: Vec<LeasedJob> = Vec::with_capacity(jobs.len());
    while leased.len() < jobs.len() {
        match queue
            .dispatch_many(32, Some(fence))
            .await
            .expect("dispatch")
        {
            Dispatched::Jobs(js) => leased.extend(js),
            Dispatched::Wait(d) => tokio::time::sleep(d).await,
            Dispatched::Empty => break,
        }
    }
    let t1 = redis_counters().await;
    rows.push(("dispatch (32 per call)", t1.per_job_since(&t0, n)));
    for chunk in leased.chunks(64) {
        let calls = chunk.iter().map(|j| queue.sending(j, fence.in_flight));
        for r in futures::future::join_all(calls).await {
            r.expect("sending");
        }
    }
    let t2 = redis_counters().await;
    rows.push((
        "sending (the fence, when the dispatch's is past)",
        t2.per_job_since(&t1, n),
    ));
    let attempt = Attempt {
        at_ms: 1_700_000_000_000,
        call: "create".into(),
        outcome: "created".into(),
        http_status: None,
        exception_type: None,
        duration_ms: 12,
        error: None,
    };
    // Half the jobs finish as before (a completion, then the history entry, each its own
    // call), half in batches of 64 with the history entry inside: side by side.
    let (each, batched) = leased.split_at(leased.len() / 2);
    let half = each.len().max(1) as f64;
    for chunk in each.chunks(64) {
        let calls = chunk.iter().map(|j| queue.complete(j, "wh-1", false));
        for r in futures::future::join_all(calls).await {
            r.expect("complete");
        }
    }
    let t3 = redis_counters().await;
    rows.push(("complete, one per call", t3.per_job_since(&t2, half)));
    for chunk in each.chunks(64) {
        let calls = chunk.iter().map(|j| queue.note_attempt(&j.id, &attempt));
        for r in futures::future::join_all(calls).await {
            r.expect("note_attempt");
        }
    }
    let t4 = redis_counters().await;
    rows.push(("note_attempt, one per call", t4.per_job_since(&t3, half)));
    for chunk in batched.chunks(64) {
        let done: Vec<Completion<'_>> = chunk
            .iter()
            .map(|j| Completion {
                job: j,
                webhook_id: "wh-1",
                reconciled: false,
                outcome: lsq_webhooks::job::Outcome::Created,
                attempt: Some(&attempt),
                answered_ago: Duration::from_millis(1),
            })
            .collect();
        queue.complete_many(&done).await.expect("complete_many");
    }
    let t5 = redis_counters().await;
    let batched_cost = t5.per_job_since(&t4, batched.len().max(1) as f64);
    rows.push(("complete_many, 64 per call, with history", batched_cost));
    println!(
        "  complete_many / (complete + note_attempt) = {:.2} (same run)",
        batched_cost.0 / t4.per_job_since(&t2, half).0.max(1e-9)
    );
    println!(
        "  per call, one kind at a time ({} jobs, 64 in flight): Redis CPU per job, and of it \
         inside the scripts (EVALSHA's µs; the rest is reading, parsing and replying)",
        leased.len()
    );
    let job_path = rows[0].1.0 + batched_cost.0;
    for (what, (cpu, scripts)) in rows {
        println!("  {what:<50} {cpu:>7.1} µs  (in scripts {scripts:>5.1} µs)");
    }
    // The same Redis's speed, so that figures from machines of other speeds compare: one
    // `redis.call('HGET', ...)` in a Lua loop, µs (0.27 on the machine the 85 µs per
    // job was measured on).
    let hget = lua_hget_us().await;
    println!(
        "  a job that needs no fence (dispatch + complete_many): {job_path:.1} µs; this Redis \
         runs one HGET in a Lua loop in {hget:.3} µs, so that is {:.0} such calls",
        job_path / hget.max(1e-9)
    );
    let _ = queue.delete_all().await;
}

/// A connection of the bench's own to the Redis the drains use.
async fn bench_redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(common::redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis")
}

/// µs per `redis.call('HGET', ...)` in a Lua loop of 200,000 on this Redis: its speed.
async fn lua_hget_us() -> f64 {
    let mut con = bench_redis().await;
    let key = common::unique_queue("bench-hget");
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("f")
        .arg(1)
        .query_async(&mut con)
        .await
        .expect("HSET");
    let loops = 200_000u32;
    let started = Instant::now();
    let _: i64 = redis::cmd("EVAL")
        .arg("for i = 1, tonumber(ARGV[1]) do redis.call('HGET', KEYS[1], 'f') end return 1")
        .arg(1)
        .arg(&key)
        .arg(loops)
        .query_async(&mut con)
        .await
        .expect("EVAL");
    let us = started.elapsed().as_secs_f64() * 1e6 / f64::from(loops);
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("DEL");
    us
}

/// Redis's counters at one moment: CPU seconds used (user + system, `INFO cpu`) and, per
/// command, calls and µs spent (`INFO commandstats`).
struct RedisCounters {
    cpu: f64,
    user: f64,
    commands: BTreeMap<String, (u64, u64)>,
}

impl RedisCounters {
    /// CPU and script time (EVALSHA's µs), µs per job, from `before` to these counters.
    fn per_job_since(&self, before: &RedisCounters, jobs: f64) -> (f64, f64) {
        let usec = |c: &RedisCounters| c.commands.get("evalsha").map_or(0, |e| e.1);
        (
            (self.cpu - before.cpu) * 1e6 / jobs,
            usec(self).saturating_sub(usec(before)) as f64 / jobs,
        )
    }
}

async fn redis_counters() -> RedisCounters {
    let mut con = bench_redis().await;
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .arg("commandstats")
        .query_async(&mut con)
        .await
        .expect("INFO");
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let user = field("used_cpu_user:");
    let cpu = field("used_cpu_sys:") + user;
    // `cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,...`
    let commands = info
        .lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let stat = |key: &str| -> Option<u64> {
                stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                    .parse()
                    .ok()
            };
            Some((name.to_string(), (stat("calls")?, stat("usec")?)))
        })
        .collect();
    RedisCounters {
        cpu,
        user,
        commands,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full { FULL } else { QUICK };
    println!(
        "worker benchmark ({}): {sizes:?}",
        if full { "full" } else { "quick" }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // `cargo bench --bench worker -- throughput` runs only the parts named.
    let named: Vec<String> = std::env::args()
        .filter(|a| {
            [
                "latency",
                "throughput",
                "utilisation",
                "redis",
                "steps",
                "deadhosts",
            ]
            .contains(&a.as_str())
        })
        .collect();
    let run = |part: &str| named.is_empty() || named.iter().any(|n| n == part);
    runtime.block_on(async {
        if run("latency") {
            latency(&sizes).await;
        }
        if run("throughput") {
            throughput(&sizes).await;
        }
        if run("utilisation") {
            utilisation(&sizes).await;
        }
        if run("redis") {
            redis_work(&sizes).await;
        }
        if run("redis") || run("steps") {
            steps(&sizes).await;
        }
        if run("deadhosts") {
            dead_hosts(&sizes).await;
        }
    });
}
