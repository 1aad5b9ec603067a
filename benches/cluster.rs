//! The sharded queue on one Redis and on a 3-master Redis Cluster, side by side in one run
//! (issue 17): the same drain (tenants × jobs pushed first, then worker processes of the
//! binary against the simulator until the queue is idle) on a private `redis-server` with
//! one shard, and on a private 3-node cluster with the cluster's default of 16 shards.
//! Prints the drain's throughput (jobs/s: every job is one dispatch and one completion) and
//! each node's Redis CPU per job (`INFO cpu` user + system, read before the workers start
//! and as soon as the queue is idle), and their sum.
//!
//!
//! Then `utilisation`, on the one Redis (1 shard) and on the cluster (16 shards): tenants with more work than their limit,
//! worker processes of the binary, and each tenant's calls the simulator admitted in a
//! steady-state interval against what its limit allows there; with the rate-limit answers
//! (goal 0) and each node's share of the queue's keys (goal >= 15% each).
//!
//! Then `idle`: one worker process on a queue with nothing in it, on the one Redis (1 shard)
//! and on the cluster (16 shards): the script calls per second it makes (`INFO
//! commandstats`, EVALSHA, summed over the nodes), and their ratio.
//!
//! Then `reshard`, on the cluster: the same drain twice, untouched and with `redis-cli
//! --cluster reshard` moving 2,048 slots (shards 0 and 1 of 16 among them) from the first node
//! to the second while it runs: jobs/s, the longest time no job finished (the queue's done
//! count read every 20 ms), the workers' store errors (each one a retry: a script refused
//! while its keys migrate), rate-limit answers (goal 0) and jobs not done (goal 0). Last,
//! because it leaves the cluster's slots moved.
//!
//! `cargo bench --bench cluster` (`--profile dev` builds faster, but its debug workers start
//! many Creates late and each takes a fence call of its own, which overstates Redis's work:
//! see benches/worker.rs; `--bench` gives the full size, 2,000 tenants × 10 jobs, 4 processes, and 40
//! tenants over 30 s for utilisation; without it, e.g. `cargo test --benches`, 200 × 10 and 2
//! processes, 10 tenants over 5 s, a smoke run). `-- drain`, `-- utilisation`, `-- idle` or
//! `-- reshard` runs one part.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/worker_support/mod.rs"]
mod worker_support;

use std::time::{Duration, Instant};

use lsq_webhooks::queue::Queue;

/// How big a run is.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    tenants: usize,
    jobs_per_tenant: usize,
    processes: usize,
    util_tenants: usize,
    util_interval: Duration,
    /// The utilisation part's window and each tenant's calls per window.
    util_window: Duration,
    util_limit: u32,
}

const FULL: Sizes = Sizes {
    tenants: 2000,
    jobs_per_tenant: 10,
    processes: 4,
    util_tenants: 40,
    util_interval: Duration::from_secs(30),
    // LeadSquared's own: 25 calls in any 5 seconds.
    util_window: Duration::from_secs(5),
    util_limit: 25,
};
const QUICK: Sizes = Sizes {
    tenants: 200,
    jobs_per_tenant: 10,
    processes: 2,
    util_tenants: 10,
    util_interval: Duration::from_secs(5),
    util_window: Duration::from_secs(1),
    util_limit: 10,
};

/// The window of the drain part.
const WINDOW: Duration = Duration::from_secs(1);

/// Calls the simulator admitted per account so far.
fn admitted(sim: &worker_support::Sim) -> std::collections::BTreeMap<String, u64> {
    sim.stats()
        .accounts
        .into_iter()
        .map(|(k, a)| (k, a.admitted))
        .collect()
}

/// Keys of queue `name` (every shard) on the node at `port`.
fn queue_keys(port: u16, name: &str) -> usize {
    common::sentinel::cli(port, &["--scan", "--pattern", &format!("{{{name}[}}~]*")])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

/// Utilisation of each tenant's limit on the sharded cluster queue, in a steady interval.
async fn utilisation(label: &str, url: &str, ports: &[u16], sizes: Sizes) {
    let n = sizes.util_tenants;
    // Some network time, so that calls are re-stamped when answered.
    let faults = lsq_webhooks::sim::Faults {
        latency: Duration::from_millis(5),
        latency_jitter: Duration::from_millis(10),
        ..Default::default()
    };
    let (sim, ts) =
        worker_support::sim_serving(n, sizes.util_limit, sizes.util_window, faults).await;
    let name = common::unique_queue("bench-cluster-util");
    let queue = worker_support::sharded_queue(url, &name, sizes.util_window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    // Enough for a warm-up window, the interval and a margin.
    let windows =
        (sizes.util_interval.as_secs_f64() / sizes.util_window.as_secs_f64()).ceil() as usize + 4;
    let jobs = worker_support::jobs(&ts, sizes.util_limit as usize * windows);
    for chunk in jobs.chunks(1000) {
        queue.push(chunk).await.expect("push");
    }
    let keys: Vec<usize> = ports.iter().map(|p| queue_keys(*p, &name)).collect();
    let total: usize = keys.iter().sum::<usize>().max(1);
    let mut workers = spawn_workers(url, &name, sizes.processes, sizes.util_window);
    while admitted(&sim).values().sum::<u64>() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(sizes.util_window).await;
    let (t1, c1) = (Instant::now(), admitted(&sim));
    tokio::time::sleep(sizes.util_interval).await;
    let (t2, c2) = (Instant::now(), admitted(&sim));
    stop_workers(&mut workers).await;
    let allowed =
        f64::from(sizes.util_limit) * (t2 - t1).as_secs_f64() / sizes.util_window.as_secs_f64();
    let utils: Vec<f64> = c2
        .iter()
        .map(|(k, n)| (n - c1.get(k).copied().unwrap_or(0)) as f64 / allowed)
        .collect();
    let min = utils.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = utils.iter().sum::<f64>() / utils.len().max(1) as f64;
    let shares: Vec<String> = keys
        .iter()
        .map(|k| format!("{:.0}%", 100.0 * *k as f64 / total as f64))
        .collect();
    println!(
        "utilisation on {label} ({} shards): {} processes, {n} tenants x {} calls per \
         {:?}, interval {:.1} s: min {min:.3}, mean {mean:.3} (goal >= 0.99); rate-limit \
         answers {} (goal 0); the queue's keys per node [{}] (goal >= 15% each)",
        queue.shards().len(),
        sizes.processes,
        sizes.util_limit,
        sizes.util_window,
        (t2 - t1).as_secs_f64(),
        worker_support::rate_limit_answers(&sim.stats()),
        shares.join(", ")
    );
}

/// Worker processes of the binary on queue `name`.
fn spawn_workers(
    url: &str,
    name: &str,
    processes: usize,
    window: Duration,
) -> Vec<tokio::process::Child> {
    (0..processes)
        .map(|_| {
            worker_command(url, name, window)
                .env("RUST_LOG", "error")
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("start a worker process")
        })
        .collect()
}

/// A worker process of the binary on queue `name` (concurrency 128, `window`), its output
/// dropped and its standard error left to the caller; killed if dropped.
fn worker_command(url: &str, name: &str, window: Duration) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"));
    command
        .args(["--redis", url, "--queue", name])
        .args([
            "worker",
            "--concurrency",
            "128",
            "--window-ms",
            &window.as_millis().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

/// Stops them (SIGTERM, then at most 30 s each).
async fn stop_workers(workers: &mut [tokio::process::Child]) {
    for child in workers.iter() {
        if let Some(pid) = child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for child in workers.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    }
}

/// Redis's own CPU seconds so far on the node at `port`.
fn node_cpu(port: u16) -> f64 {
    common::sentinel::cli(port, &["info", "cpu"])
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            ["used_cpu_user", "used_cpu_sys"]
                .contains(&k)
                .then(|| v.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Script calls (EVALSHA) the node at `port` has run so far.
fn node_script_calls(port: u16) -> u64 {
    common::sentinel::cli(port, &["info", "commandstats"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One worker process on an empty queue of its own at `url` (tenants registered, no job):
/// its script calls per second over `interval`, after it has settled.
async fn idle(label: &str, url: &str, ports: &[u16], interval: Duration) -> f64 {
    let window = Duration::from_secs(1);
    let base = url::Url::parse("http://127.0.0.1:1").expect("url");
    let name = common::unique_queue(&format!("bench-idle-{}", label.replace(' ', "-")));
    let queue = worker_support::sharded_queue(url, &name, window).await;
    queue
        .put_tenants(&worker_support::tenants(&base, 40, &[25]))
        .await
        .expect("tenants");
    let mut workers = spawn_workers(url, &name, 1, window);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = || ports.iter().map(|p| node_script_calls(*p)).sum::<u64>();
    let before = count();
    tokio::time::sleep(interval).await;
    let calls = count().saturating_sub(before);
    stop_workers(&mut workers).await;
    let per_second = calls as f64 / interval.as_secs_f64();
    println!(
        "idle, {label}: {} shards, one worker process, {calls} script calls in {:.0} s: \
         {per_second:.2} per second",
        queue.shards().len(),
        interval.as_secs_f64()
    );
    queue.delete_all().await.expect("clean up");
    per_second
}

/// What one drain of the `reshard` part saw.
struct Moved {
    jobs: usize,
    done: u64,
    elapsed: Duration,
    /// The longest time the done count did not move, once the drain was under way.
    stall: Duration,
    store_errors: u64,
    rate_limited: u64,
    /// How long the slot move took (`None`: no move).
    moving: Option<Duration>,
}

/// One drain of `tenants` × `jobs_per_tenant` on the cluster by 3 worker processes, with a
/// move of 2,048 slots from the first node to the second once it is under way when `slots`
/// is set (see the module header).
async fn drain_moving(
    cluster: &common::cluster::PrivateCluster,
    sizes: Sizes,
    slots: bool,
) -> Moved {
    let url = cluster.url();
    let window = Duration::from_secs(1);
    let (sim, ts) =
        worker_support::sim_serving(sizes.util_tenants, 25, window, Default::default()).await;
    let name = common::unique_queue(if slots {
        "bench-moved"
    } else {
        "bench-unmoved"
    });
    let queue = worker_support::sharded_queue(&url, &name, window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    // Eight windows of work per tenant: longer than the move takes.
    let jobs = worker_support::jobs(&ts, 25 * 8);
    for chunk in jobs.chunks(1000) {
        queue.push(chunk).await.expect("push");
    }
    let logs: Vec<tempfile::NamedTempFile> = (0..3)
        .map(|_| tempfile::NamedTempFile::new().expect("log file"))
        .collect();
    let mut workers: Vec<tokio::process::Child> = logs
        .iter()
        .map(|log| {
            worker_command(&url, &name, window)
                .arg("--exit-when-idle")
                .env("RUST_LOG", "warn,lsq_webhooks::worker=info")
                .stderr(log.reopen().expect("log file"))
                .spawn()
                .expect("start a worker process")
        })
        .collect();
    let started = Instant::now();
    while queue.status().await.expect("status").done == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mover = slots.then(|| {
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let out = common::cluster::move_slots(&ports, 2048);
            assert!(out.status.success(), "reshard failed");
            t.elapsed()
        })
    });
    let (mut last, mut at, mut stall) = (0, Instant::now(), Duration::ZERO);
    loop {
        let done = queue.status().await.expect("status").done;
        if done != last {
            stall = stall.max(at.elapsed());
            (last, at) = (done, Instant::now());
        }
        if done as usize >= jobs.len() || started.elapsed() > Duration::from_secs(300) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let moving = match mover {
        Some(m) => Some(m.await.expect("the move")),
        None => None,
    };
    for w in workers.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(60), w.wait()).await;
    }
    let store_errors = logs
        .iter()
        .map(|log| {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            text.rsplit("store_errors: ")
                .next()
                .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    let rate_limited = worker_support::rate_limit_answers(&sim.stats());
    let done = queue.status().await.expect("status").done;
    Moved {
        jobs: jobs.len(),
        done,
        elapsed,
        stall,
        store_errors,
        rate_limited,
        moving,
    }
}

fn report_moved(label: &str, m: &Moved) -> f64 {
    let rate = m.done as f64 / m.elapsed.as_secs_f64();
    println!(
        "reshard, {label}: {} jobs, done {} ({} not done; goal 0), {:.1} s, {rate:.0} jobs/s; \
         longest time with no job finished {:.0} ms; store errors retried {}; rate-limit \
         answers {} (goal 0){}",
        m.jobs,
        m.done,
        m.jobs as u64 - m.done.min(m.jobs as u64),
        m.elapsed.as_secs_f64(),
        m.stall.as_secs_f64() * 1e3,
        m.store_errors,
        m.rate_limited,
        m.moving
            .map(|d| format!("; the move of 2,048 slots took {:.1} s", d.as_secs_f64()))
            .unwrap_or_default(),
    );
    rate
}

/// One drain: what it took and each node's CPU.
struct Drain {
    jobs: usize,
    elapsed: Duration,
    done: u64,
    shards: usize,
    cpu_per_node: Vec<f64>,
}

async fn drain(url: &str, ports: &[u16], sizes: Sizes, label: &str) -> Drain {
    let window = Duration::from_secs(1);
    // Kept until the drain ends: the workers call it.
    let (_sim, ts) =
        worker_support::sim_serving(sizes.tenants, 25, window, Default::default()).await;
    let name = common::unique_queue(&format!("bench-cluster-{label}"));
    let queue = worker_support::sharded_queue(url, &name, window).await;
    queue.put_tenants(&ts).await.expect("tenants");
    let jobs = worker_support::jobs(&ts, sizes.jobs_per_tenant);
    for chunk in jobs.chunks(1000) {
        queue.push(chunk).await.expect("push");
    }
    let before: Vec<f64> = ports.iter().map(|p| node_cpu(*p)).collect();
    let started = Instant::now();
    let mut workers = spawn_workers(url, &name, sizes.processes, WINDOW);
    while !queue.is_idle().await.expect("idle") {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let after: Vec<f64> = ports.iter().map(|p| node_cpu(*p)).collect();
    stop_workers(&mut workers).await;
    let done = queue.status().await.expect("status").done;
    Drain {
        jobs: jobs.len(),
        elapsed,
        done,
        shards: queue.shards().len(),
        cpu_per_node: before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a - b) * 1e6 / jobs.len() as f64)
            .collect(),
    }
}

fn report(label: &str, d: &Drain) -> f64 {
    let total: f64 = d.cpu_per_node.iter().sum();
    let nodes: Vec<String> = d.cpu_per_node.iter().map(|c| format!("{c:.1}")).collect();
    println!(
        "{label}: {} shards, {} jobs, done {}, {:.1} s, {:.0} jobs/s; Redis CPU per job per \
         node [{}] µs, sum {total:.1} µs, busiest node {:.1} µs",
        d.shards,
        d.jobs,
        d.done,
        d.elapsed.as_secs_f64(),
        d.jobs as f64 / d.elapsed.as_secs_f64(),
        nodes.join(", "),
        d.cpu_per_node.iter().copied().fold(0.0, f64::max),
    );
    d.jobs as f64 / d.elapsed.as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full { FULL } else { QUICK };
    println!(
        "cluster benchmark ({}): {sizes:?}",
        if full { "full" } else { "quick" }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let one = common::PrivateRedis::start(&[]).expect("redis-server");
    let cluster = common::cluster::PrivateCluster::start(3).expect("a 3-master cluster");
    let cluster_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let named: Vec<String> = std::env::args()
        .filter(|a| ["drain", "utilisation", "idle", "reshard"].contains(&a.as_str()))
        .collect();
    let run = |part: &str| named.is_empty() || named.iter().any(|n| n == part);
    runtime.block_on(async {
        if run("drain") {
            let single = drain(
                &format!("redis://127.0.0.1:{}", one.port),
                &[one.port],
                sizes,
                "one",
            )
            .await;
            let sharded = drain(&cluster.url(), &cluster_ports, sizes, "three").await;
            let a = report("1 node", &single);
            let b = report("3 nodes", &sharded);
            println!(
                "3 nodes / 1 node: throughput {:.2}, busiest node's CPU per job {:.2}",
                b / a.max(1e-9),
                sharded.cpu_per_node.iter().copied().fold(0.0, f64::max)
                    / single.cpu_per_node.iter().copied().fold(1e-9, f64::max)
            );
        }
        if run("utilisation") {
            let one_url = format!("redis://127.0.0.1:{}", one.port);
            utilisation("1 node", &one_url, &[one.port], sizes).await;
            utilisation("3 nodes", &cluster.url(), &cluster_ports, sizes).await;
        }
        if run("idle") {
            let interval = if full {
                Duration::from_secs(20)
            } else {
                Duration::from_secs(3)
            };
            let one_url = format!("redis://127.0.0.1:{}", one.port);
            let a = idle("1 node", &one_url, &[one.port], interval).await;
            let b = idle("3 nodes", &cluster.url(), &cluster_ports, interval).await;
            println!(
                "idle: 16 shards / 1 shard = {:.2} script calls per second",
                b / a.max(1e-9)
            );
        }
        if run("reshard") {
            let still = drain_moving(&cluster, sizes, false).await;
            let moved = drain_moving(&cluster, sizes, true).await;
            let a = report_moved("no move", &still);
            let b = report_moved("slots moving", &moved);
            println!(
                "reshard: moving / no move = {:.2} jobs/s, {:.2} longest time with no job finished",
                b / a.max(1e-9),
                moved.stall.as_secs_f64() / still.stall.as_secs_f64().max(1e-9)
            );
        }
    });
}
