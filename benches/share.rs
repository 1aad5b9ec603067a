//! Sharing benchmark (issue 13): how our calls share each account's budget with the tenant's
//! other API clients. The real binary as 2 worker processes (`worker --exit-when-idle`) on
//! one queue in a private Redis, against the project's simulator in this process, where
//! another client spends 10 of each account's 25 calls per window at random (Poisson)
//! times; 2 tenants x 150 jobs. Prints, for each mode of the worker's `--share` flag
//! ("fixed": today's behaviour; "adaptive"), side by side:
//!
//! 1. the share of our calls rate-limited (target <= 5%), over the whole run;
//! 2. our calls ÷ the budget the other client left (target >= 0.9): over a steady
//!    interval per tenant (from one window after its first call until it has fewer jobs
//!    left than one window's limit), the mean of our calls admitted in the window ending
//!    at each sample, divided by the mean of `limit - the other client's calls admitted in
//!    it` (samples every 20 ms). That is `our calls / (25 per window x the interval's
//!    windows - the other client's calls)`, with each call weighted by the part of its
//!    window inside the interval, so the figure does not depend on where the interval's
//!    edges fall between bursts; the same ratio counted from call totals is printed beside
//!    ("counted"), which reads high or low by up to a whole burst when the pacing is bursty
//!    (with no other client the fixed limiter sends 25 at once each window, and an interval
//!    of 3 windows that starts just before a burst and ends just after one reads 4/3);
//! 3. the share of the other client's calls refused because of ours (refused while fewer
//!    than `limit` of its own calls were in the window; target <= 2%), from our first call
//!    until one window after our last;
//! 4. and, with no other client, utilisation of the limit (target >= 0.99), measured the
//!    same way as 2.
//!
//! Beside 3 it prints what any pacing that held our measured calls per window in every
//! window would refuse of the other client's calls, P(Poisson(10) >= 25 - ours): the
//! bound that makes the 0.9 and 2% targets incompatible (see docs/decisions.md).
//!
//! `cargo bench --bench share` runs the full set-up (LeadSquared's 5-second window): a few
//! minutes. Without `--bench` (e.g. `cargo test --benches`) it runs a quick version with a
//! 1-second window and 40 jobs per tenant, as a smoke test. Naming parts (`-- shared
//! alone`) runs only those. Needs Redis (`REDIS_URL`, or a `redis-server` the harness can
//! start) and builds the binary it runs.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/worker_support/mod.rs"]
mod worker_support;

use std::time::Duration;

use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::sim::{SimState, SimStats};
use tokio::time::Instant;

/// The sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    window: Duration,
    limit: u32,
    /// The other client's mean calls per window in the shared set-up.
    other_calls: u32,
    tenants: usize,
    jobs_per_tenant: usize,
    processes: usize,
    concurrency: usize,
    /// A run that has not finished by then is stopped and reported as such.
    deadline: Duration,
}

const FULL: Sizes = Sizes {
    window: Duration::from_secs(5),
    limit: 25,
    other_calls: 10,
    tenants: 2,
    jobs_per_tenant: 150,
    processes: 2,
    concurrency: 32,
    deadline: Duration::from_secs(150),
};

const QUICK: Sizes = Sizes {
    window: Duration::from_secs(1),
    limit: 25,
    other_calls: 10,
    tenants: 2,
    jobs_per_tenant: 40,
    processes: 2,
    concurrency: 32,
    deadline: Duration::from_secs(60),
};

/// How often the simulator's counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One account's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: Duration,
    calls: u64,
    admitted: u64,
    in_window: u32,
    other_calls: u64,
    other_admitted: u64,
    other_in_window: u32,
    other_because_of_ours: u64,
}

fn sample(stats: &SimStats, account: &str, at: Duration) -> Sample {
    let Some(a) = stats.accounts.get(account) else {
        return Sample {
            at,
            ..Sample::default()
        };
    };
    Sample {
        at,
        calls: a.calls,
        admitted: a.admitted,
        in_window: a.in_window,
        other_calls: a.other_client.calls,
        other_admitted: a.other_client.admitted,
        other_in_window: a.other_client.in_window,
        other_because_of_ours: a.other_client.refused_because_of_ours,
    }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Figures {
    finished: bool,
    /// From our first call to our last, over all tenants.
    span: Duration,
    calls: u64,
    rate_limited: u64,
    /// Numerator and denominator of figure 2 (or 4), window occupancy.
    occupied: f64,
    left: f64,
    /// The same from counts over the intervals.
    counted: f64,
    counted_left: f64,
    /// Mean calls of ours in the window over the steady intervals, summed over tenants.
    tenants_measured: u32,
    /// Figure 3's numerator and denominator.
    other_calls: u64,
    other_because_of_ours: u64,
    max_in_window: u32,
}

impl Figures {
    fn add_tenant(&mut self, samples: &[Sample], sizes: &Sizes) {
        let limit = f64::from(sizes.limit);
        let Some(first) = samples.iter().find(|s| s.calls > 0) else {
            return;
        };
        let last_calls = samples.last().map_or(0, |s| s.calls);
        let last = samples
            .iter()
            .find(|s| s.calls == last_calls)
            .unwrap_or(first);
        // Steady interval: a window after the first call, until fewer jobs are left than a
        // window's limit (each job is one admitted Create: the simulator injects no faults).
        let start = first.at + sizes.window;
        let enough = (sizes.jobs_per_tenant as u64).saturating_sub(u64::from(sizes.limit));
        let end = samples
            .iter()
            .find(|s| s.admitted >= enough)
            .map_or(last.at, |s| s.at);
        let (start, end) = if end > start {
            (start, end)
        } else {
            (first.at, last.at)
        };
        let steady: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= start && s.at <= end)
            .collect();
        if let (Some(a), Some(b)) = (steady.first(), steady.last()) {
            self.tenants_measured += 1;
            let n = steady.len() as f64;
            self.occupied += steady.iter().map(|s| f64::from(s.in_window)).sum::<f64>() / n;
            self.left += steady
                .iter()
                .map(|s| limit - f64::from(s.other_in_window))
                .sum::<f64>()
                / n;
            let windows = (b.at - a.at).as_secs_f64() / sizes.window.as_secs_f64();
            self.counted += (b.admitted - a.admitted) as f64 / windows;
            self.counted_left +=
                (limit * windows - (b.other_admitted - a.other_admitted) as f64) / windows;
        }
        // Figure 3: while our calls could be in the other client's window.
        let until = last.at + sizes.window;
        let after = samples
            .iter()
            .find(|s| s.at >= until)
            .or(samples.last())
            .unwrap_or(last);
        self.other_calls += after.other_calls - first.other_calls;
        self.other_because_of_ours += after.other_because_of_ours - first.other_because_of_ours;
        self.span = self.span.max(last.at - first.at);
    }
}

/// P(X >= k) for X ~ Poisson(mean).
fn poisson_tail(mean: f64, k: u32) -> f64 {
    let mut term = (-mean).exp();
    let mut below = 0.0;
    for i in 0..k {
        below += term;
        term *= mean / f64::from(i + 1);
    }
    (1.0 - below).max(0.0)
}

/// The share of the other client's calls refused when we hold `ours` calls in every window
/// (interpolated between whole numbers): with Poisson arrivals a call of theirs finds
/// Poisson(mean) of their calls in the window (arrivals see time averages), and is refused
/// when those and ours reach the limit.
fn refused_at_constant_occupancy(mean: f64, limit: u32, ours: f64) -> f64 {
    let lo = ours.floor().clamp(0.0, f64::from(limit));
    let frac = ours - lo;
    let at = |k: f64| poisson_tail(mean, limit.saturating_sub(k as u32));
    at(lo) * (1.0 - frac) + at((lo + 1.0).min(f64::from(limit))) * frac
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

/// Whether the binary's worker has the `--share` flag (helper F's change).
fn worker_has_share_flag() -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["worker", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("--share"))
        .unwrap_or(false)
}

/// Worker processes of the real binary on one queue.
struct Workers(Vec<tokio::process::Child>);

impl Workers {
    fn spawn(queue: &str, sizes: &Sizes, share: Option<&str>) -> Workers {
        let window_ms = sizes.window.as_millis().to_string();
        let concurrency = sizes.concurrency.to_string();
        Workers(
            (0..sizes.processes)
                .map(|_| {
                    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"));
                    cmd.args(["--redis", &common::redis_url(), "--queue", queue])
                        .args(["worker", "--exit-when-idle", "--concurrency", &concurrency])
                        .args(["--window-ms", &window_ms, "--shutdown-grace-secs", "5"]);
                    if let Some(mode) = share {
                        cmd.args(["--share", mode]);
                    }
                    cmd.env("RUST_LOG", "error")
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::null())
                        .kill_on_drop(true)
                        .spawn()
                        .expect("start a worker process")
                })
                .collect(),
        )
    }

    /// Whether every process has exited.
    fn all_exited(&mut self) -> bool {
        self.0
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_)) | Err(_)))
    }

    async fn kill(mut self) {
        for child in &mut self.0 {
            let _ = child.kill().await;
        }
    }
}

/// One run: a fresh simulator and queue, the jobs, the workers until they exit.
async fn run(sizes: &Sizes, other_calls: u32, share: Option<&str>) -> Figures {
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let known = worker_support::tenants(&placeholder, sizes.tenants, &[sizes.limit]);
    let mut config = worker_support::sim_config(&known, sizes.window);
    config.other_client_calls = other_calls;
    // Some network time, as in the worker benchmark.
    config.faults.latency = Duration::from_millis(10);
    config.faults.latency_jitter = Duration::from_millis(30);
    config.faults.seed = 13;
    let sim = worker_support::start_sim(config).await;
    let state: &SimState = sim.server.state();
    let ts = worker_support::tenants(&sim.server.base_url(), sizes.tenants, &[sizes.limit]);
    let name = common::unique_queue("bench-share");
    let queue = RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.clone(),
            window: sizes.window,
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect to redis");
    queue.put_tenants(&ts).await.expect("tenants");
    queue
        .push(&worker_support::jobs(&ts, sizes.jobs_per_tenant))
        .await
        .expect("push");
    let t0 = Instant::now();
    let mut workers = Workers::spawn(&name, sizes, share);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); ts.len()];
    let mut finished = false;
    // Sample until the workers are done, and one window more (figure 3's tail).
    let mut done_at: Option<Instant> = None;
    loop {
        let stats = state.stats();
        let at = t0.elapsed();
        for (t, s) in ts.iter().zip(samples.iter_mut()) {
            s.push(sample(&stats, &t.name, at));
        }
        if done_at.is_none() && workers.all_exited() {
            finished = true;
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|d| d.elapsed() > sizes.window) {
            break;
        }
        if at > sizes.deadline {
            break;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    workers.kill().await;
    let stats = state.stats();
    let mut figures = Figures {
        finished,
        ..Figures::default()
    };
    for s in &samples {
        figures.add_tenant(s, sizes);
    }
    for t in &ts {
        if let Some(a) = stats.accounts.get(&t.name) {
            figures.calls += a.calls;
            figures.rate_limited += a.rate_limited;
            figures.max_in_window = figures.max_in_window.max(a.max_admitted_in_window);
        }
    }
    let _ = queue.delete_all().await;
    figures
}

fn pct(a: u64, b: u64) -> String {
    format!("{:.1}%", 100.0 * ratio(a as f64, b as f64))
}

fn report(setup: &str, mode: &str, f: &Figures, sizes: &Sizes, other_calls: u32) {
    let shared = other_calls > 0;
    let unfinished = if f.finished {
        String::new()
    } else {
        format!(
            " (NOT FINISHED within {:?}: figures cover what ran)",
            sizes.deadline
        )
    };
    if shared {
        println!(
            "{setup} {mode:>8}: our calls rate-limited {} ({} of {}; target <= 5%); \
             budget left used {:.3} (counted {:.3}; target >= 0.9); other client's calls \
             refused because of ours {} ({} of {}; target <= 2%); run {:.1} s{unfinished}",
            pct(f.rate_limited, f.calls),
            f.rate_limited,
            f.calls,
            ratio(f.occupied, f.left),
            ratio(f.counted, f.counted_left),
            pct(f.other_because_of_ours, f.other_calls),
            f.other_because_of_ours,
            f.other_calls,
            f.span.as_secs_f64(),
        );
        let ours = f.occupied / f64::from(f.tenants_measured.max(1));
        println!(
            "{setup} {mode:>8}: (we held {ours:.1} calls per window on average; any pacing \
             that holds that many in every window refuses about {:.1}% of the other \
             client's calls: P(Poisson({other_calls}) >= {} - {ours:.1}))",
            100.0 * refused_at_constant_occupancy(f64::from(other_calls), sizes.limit, ours),
            sizes.limit,
        );
    } else {
        println!(
            "{setup} {mode:>8}: utilisation of the limit {:.3} (counted {:.3}; target >= \
             0.99); our calls rate-limited {} ({} of {}); most calls in any window {} \
             (limit {}); run {:.1} s{unfinished}",
            ratio(f.occupied, f.left),
            ratio(f.counted, f.counted_left),
            pct(f.rate_limited, f.calls),
            f.rate_limited,
            f.calls,
            f.max_in_window,
            sizes.limit,
            f.span.as_secs_f64(),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let sizes = if full { FULL } else { QUICK };
    println!("command: {}", args.join(" "));
    println!(
        "share benchmark ({}): {sizes:?}",
        if full { "full" } else { "quick" }
    );
    let named: Vec<&String> = args
        .iter()
        .filter(|a| ["shared", "alone"].contains(&a.as_str()))
        .collect();
    let wanted = |part: &str| named.is_empty() || named.iter().any(|n| *n == part);
    let has_flag = worker_has_share_flag();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for (setup, other, shared) in [
            (
                format!(
                    "shared (other client {} of {} per window)",
                    sizes.other_calls, sizes.limit
                ),
                sizes.other_calls,
                true,
            ),
            ("alone (no other client)".to_string(), 0, false),
        ] {
            if !wanted(if shared { "shared" } else { "alone" }) {
                continue;
            }
            for mode in ["fixed", "adaptive"] {
                let share = match (has_flag, mode) {
                    (true, m) => Some(m),
                    (false, "fixed") => None,
                    (false, _) => {
                        println!("{setup} {mode:>8}: not measured: the worker has no --share flag");
                        continue;
                    }
                };
                let figures = run(&sizes, other, share).await;
                report(&setup, mode, &figures, &sizes, other);
            }
        }
    });
}
