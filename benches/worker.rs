//! Worker benchmark: the real binary as 4 worker processes on one Redis queue, against the
//! project's simulator in this process. Prints three figures:
//!
//! 1. utilisation of each tenant's limit while it has work (calls the simulator admitted in
//!    a steady-state interval / what the limit allows in it), and the rate-limit answers;
//! 2. aggregate jobs per second with many tenants whose limits do not bind;
//! 3. enqueue-to-call latency for an idle tenant: from just before the push until the
//!    simulator's router sees the Create request (p50, p99).
//!
//! `cargo bench --bench worker` runs the full sizes (LeadSquared's 5-second window, a 60 s
//! utilisation interval, 2,000 tenants). Without `--bench` (e.g. `cargo test --benches`) it
//! runs a quick version with small sizes and a 1-second window, as a smoke test. Naming
//! parts (`-- latency throughput utilisation`) runs only those.
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
    fn spawn(queue: &str, sizes: &Sizes) -> Workers {
        let window_ms = sizes.window.as_millis().to_string();
        let concurrency = sizes.concurrency.to_string();
        Workers(
            (0..sizes.processes)
                .map(|_| {
                    tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
                        .args(["--redis", &common::redis_url(), "--queue", queue])
                        .args(["worker", "--concurrency", &concurrency])
                        .args(["--window-ms", &window_ms, "--shutdown-grace-secs", "5"])
                        .env("RUST_LOG", "error")
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
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
    let workers = Workers::spawn(&name, sizes);
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

/// Figure 2: aggregate jobs per second with many tenants.
async fn throughput(sizes: &Sizes) {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let known = named_tenants(&placeholder, "p", sizes.tput_tenants, 25);
    let sim = start_recording_sim(worker_support::sim_config(&known, sizes.window)).await;
    let ts = named_tenants(&sim.base, "p", sizes.tput_tenants, 25);
    let name = common::unique_queue("bench-tput");
    let queue = redis_queue(&name, sizes.window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    let jobs = worker_support::jobs(&ts, sizes.tput_jobs_per_tenant);
    let total = jobs.len();
    push_all(&queue, &jobs).await;
    let start = Instant::now();
    let workers = Workers::spawn(&name, sizes);
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if queue.is_idle().await.expect("is_idle") {
            break;
        }
    }
    let elapsed = start.elapsed();
    workers.stop().await;
    let status = queue.status().await.expect("status");
    let stats = sim.state.stats();
    println!(
        "throughput: {} processes x concurrency {}, {} tenants, {total} jobs: {:.0} jobs/s \
         (goal >= 5000) in {:.2} s; done {}, dead {}, rate-limit answers {}",
        sizes.processes,
        sizes.concurrency,
        sizes.tput_tenants,
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        status.done,
        status.dead,
        worker_support::rate_limit_answers(&stats)
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
    let workers = Workers::spawn(&name, sizes);
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
        .filter(|a| ["latency", "throughput", "utilisation"].contains(&a.as_str()))
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
    });
}
