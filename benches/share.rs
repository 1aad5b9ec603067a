//! Sharing benchmark (issue 26): how our calls share each account's budget with the
//! tenant's own integrations, on both gateway rules, and the frontier the adaptive share is
//! measured against.
//!
//! One run per gateway rule (refused calls counted in the window, as the simulator does by
//! default; and admitted calls only). Each run is one simulator, where another client spends
//! Poisson(10) of each account's 25 calls per window and never retries, and one Redis, with
//! these groups side by side, each drained by 2 worker processes of the real binary:
//!
//! - **fixed s**, for s = 4..12: 8 tenants each with `reserve = 25 − s` under `--share
//!   fixed`, so our calls are spread evenly at s per window ([`queue::share::pace`]);
//! - **adaptive**: 8 tenants × 150 jobs under the default `--share adaptive`; when they are
//!   done, a **second run** of 20 jobs each on the same tenants (the share remembered);
//! - **alone**: 8 tenants × 150 jobs, adaptive, no other client (utilisation, 0 answers);
//! - **drop**: 4 tenants, adaptive, whose other client goes from 10 to 0 after 60 s: how
//!   long our share takes to climb back to 0.99 of the limit;
//! - **rise**: 4 tenants, adaptive, alone at first, whose other client starts 15 calls per
//!   window after 20 s: its calls refused because of ours, window by window after.
//!
//! For each tenant, its first three windows (from its first call) are start-up, the rest
//! settled. Printed per group: the other client's calls refused because of ours (settled,
//! and in all at start-up per tenant), our calls rate-limited, our calls per window while
//! settled and that ÷ the 15 the other client leaves on average. Then the adaptive group
//! against the best fixed share that keeps the other client within 2%, found in the same
//! run. The targets are issue 26's.
//!
//! `cargo bench --bench share` runs it with LeadSquared's 5-second window (about 8 minutes).
//! Without `--bench` (`cargo test --benches`) a quick version with a 1-second window and
//! fewer jobs runs as a smoke test. Naming a rule (`-- counted` or `-- admitted`) runs only
//! that one. Needs Redis (`REDIS_URL`, or a `redis-server` the harness starts).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/worker_support/mod.rs"]
mod worker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use lsq_webhooks::job::NewJob;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::sim::{SimState, SimStats};
use lsq_webhooks::tenant::Tenant;
use tokio::time::Instant;

/// The sizes of one run.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    window: Duration,
    limit: u32,
    /// The other client's mean calls per window.
    other_calls: u32,
    /// Tenants per group (the drop and rise groups have half).
    tenants: usize,
    /// Jobs of each adaptive and alone tenant.
    jobs: usize,
    /// Jobs of each tenant in the second run.
    second_jobs: usize,
    /// Windows of work each fixed-share tenant gets (s × this jobs).
    fixed_windows: usize,
    /// When the drop group's other client stops, and the rise group's starts.
    drop_after: Duration,
    rise_after: Duration,
    /// A run that has not finished by then is stopped and reported as such.
    deadline: Duration,
}

const FULL: Sizes = Sizes {
    window: Duration::from_secs(5),
    limit: 25,
    other_calls: 10,
    tenants: 8,
    jobs: 150,
    second_jobs: 20,
    fixed_windows: 24,
    drop_after: Duration::from_secs(60),
    rise_after: Duration::from_secs(20),
    deadline: Duration::from_secs(240),
};

const QUICK: Sizes = Sizes {
    window: Duration::from_secs(1),
    limit: 25,
    other_calls: 10,
    tenants: 2,
    jobs: 40,
    second_jobs: 10,
    fixed_windows: 8,
    drop_after: Duration::from_secs(12),
    rise_after: Duration::from_secs(4),
    deadline: Duration::from_secs(60),
};

/// The fixed shares swept.
const FIXED: std::ops::RangeInclusive<u32> = 4..=12;

/// How often the simulator's counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One account's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    at: Duration,
    calls: u64,
    rate_limited: u64,
    in_window: u32,
    other_calls: u64,
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
        rate_limited: a.rate_limited,
        in_window: a.in_window,
        other_calls: a.other_client.calls,
        other_in_window: a.other_client.in_window,
        other_because_of_ours: a.other_client.refused_because_of_ours,
    }
}

/// What a group measured, summed over its tenants.
#[derive(Debug, Default, Clone)]
struct Figures {
    tenants: u32,
    calls: u64,
    rate_limited: u64,
    /// The other client's calls and those refused because of ours, settled.
    other_calls: u64,
    other_refused: u64,
    /// Refused because of ours in each tenant's first three windows, per tenant.
    startup_refused: Vec<u64>,
    /// Mean of our calls in the window, and of `limit − the other client's`, settled.
    ours_in_window: f64,
    left_in_window: f64,
    /// Tenants whose settled interval had any samples.
    measured: u32,
}

impl Figures {
    /// Adds one tenant's samples, from `from` (the run's part it belongs to).
    fn add(&mut self, samples: &[Sample], sizes: &Sizes, from: Duration) {
        let limit = f64::from(sizes.limit);
        let base = samples
            .iter()
            .rev()
            .find(|s| s.at <= from)
            .copied()
            .unwrap_or_default();
        let Some(first) = samples
            .iter()
            .find(|s| s.at >= from && s.calls > base.calls)
        else {
            return;
        };
        let last_calls = samples.last().map_or(0, |s| s.calls);
        let Some(last) = samples.iter().find(|s| s.calls == last_calls) else {
            return;
        };
        let at_or_last = |t: Duration| {
            samples
                .iter()
                .find(|s| s.at >= t)
                .or(samples.last())
                .copied()
                .unwrap_or_default()
        };
        let settled_at = at_or_last(first.at + sizes.window * 3);
        let end = at_or_last(last.at + sizes.window);
        self.tenants += 1;
        self.calls += last.calls - base.calls;
        self.rate_limited += last.rate_limited - base.rate_limited;
        self.startup_refused
            .push(settled_at.other_because_of_ours - base.other_because_of_ours);
        self.other_calls += end.other_calls - settled_at.other_calls;
        self.other_refused += end.other_because_of_ours - settled_at.other_because_of_ours;
        let steady: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.at >= settled_at.at && s.at <= last.at)
            .collect();
        if !steady.is_empty() {
            let n = steady.len() as f64;
            self.measured += 1;
            self.ours_in_window += steady.iter().map(|s| f64::from(s.in_window)).sum::<f64>() / n;
            self.left_in_window += steady
                .iter()
                .map(|s| limit - f64::from(s.other_in_window))
                .sum::<f64>()
                / n;
        }
    }

    fn other_pct(&self) -> f64 {
        pct(self.other_refused, self.other_calls)
    }

    fn per_window(&self) -> f64 {
        self.ours_in_window / f64::from(self.measured.max(1))
    }

    fn print(&self, name: &str) {
        let startup_max = self.startup_refused.iter().max().copied().unwrap_or(0);
        let startup_sum: u64 = self.startup_refused.iter().sum();
        println!(
            "  {name:<14} other client refused {:>5.1}% ({:>4} of {:>5}) | start-up {:>3} in all, \
             at most {:>2} per tenant | ours rate-limited {:>5.1}% ({:>3} of {:>5}) | ours per \
             window {:>5.2}, {:.2} of what the other client leaves",
            self.other_pct(),
            self.other_refused,
            self.other_calls,
            startup_sum,
            startup_max,
            pct(self.rate_limited, self.calls),
            self.rate_limited,
            self.calls,
            self.per_window(),
            self.ours_in_window / self.left_in_window.max(1e-9),
        );
    }
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// Worker processes of the real binary on one queue.
struct Workers(Vec<tokio::process::Child>);

impl Workers {
    fn spawn(queue: &str, sizes: &Sizes, share: &str) -> Workers {
        let window_ms = sizes.window.as_millis().to_string();
        Workers(
            (0..2)
                .map(|_| {
                    tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
                        .args(["--redis", &common::redis_url(), "--queue", queue])
                        .args(["worker", "--exit-when-idle", "--concurrency", "32"])
                        .args(["--window-ms", &window_ms, "--shutdown-grace-secs", "5"])
                        .args(["--share", share])
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

/// A group of tenants on its own queue.
struct Group {
    name: String,
    tenants: Vec<Tenant>,
    share: &'static str,
    /// Jobs per tenant.
    jobs: Vec<usize>,
}

fn tenant(name: String, api_base: &url::Url, limit: u32, reserve: u32) -> Tenant {
    Tenant {
        access_key: Secret::new(format!("ak-{name}")),
        secret_key: Secret::new(format!("sk-{name}")),
        name,
        api_base: Some(api_base.clone()),
        limit,
        reserve,
        daily_limit: None,
    }
}

fn groups(sizes: &Sizes, base: &url::Url) -> Vec<Group> {
    let n = sizes.tenants;
    let l = sizes.limit;
    let mut out: Vec<Group> = FIXED
        .map(|s| Group {
            name: format!("fixed {s}"),
            tenants: (0..n)
                .map(|i| tenant(format!("f{s:02}-{i}"), base, l, l - s))
                .collect(),
            share: "fixed",
            jobs: vec![s as usize * sizes.fixed_windows; n],
        })
        .collect();
    for (name, prefix, count, jobs) in [
        ("adaptive", "ad", n, sizes.jobs),
        ("alone", "al", n, sizes.jobs),
        ("drop", "dr", n.div_ceil(2), 4 * sizes.jobs),
        ("rise", "ri", n.div_ceil(2), 4 * sizes.jobs),
    ] {
        out.push(Group {
            name: name.into(),
            tenants: (0..count)
                .map(|i| tenant(format!("{prefix}-{i}"), base, l, 0))
                .collect(),
            share: "adaptive",
            jobs: vec![jobs; count],
        });
    }
    out
}

fn jobs_of(g: &Group, from: usize) -> Vec<NewJob> {
    g.tenants
        .iter()
        .zip(&g.jobs)
        .flat_map(|(t, n)| {
            (from..from + n).map(|k| NewJob {
                delete: false,
                legacy_key: None,
                tenant: t.name.clone(),
                body: worker_support::body(&t.name, k).to_string(),
                key: format!("{}-{k}", t.name),
            })
        })
        .collect()
}

async fn connect(name: &str, sizes: &Sizes) -> RedisQueue {
    RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: name.to_string(),
            window: sizes.window,
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect to redis")
}

/// Samples every account of `names` until `done` says stop or the deadline passes.
async fn sample_until(
    state: &SimState,
    names: &[String],
    t0: Instant,
    sizes: &Sizes,
    samples: &mut BTreeMap<String, Vec<Sample>>,
    mut tick: impl FnMut(Duration) -> bool,
) {
    loop {
        let stats = state.stats();
        let at = t0.elapsed();
        for n in names {
            samples
                .entry(n.clone())
                .or_default()
                .push(sample(&stats, n, at));
        }
        if tick(at) || at > sizes.deadline * 2 {
            return;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// One gateway rule's run.
async fn run(sizes: &Sizes, count_rejected: bool) {
    let rule = if count_rejected {
        "refused calls counted in the window"
    } else {
        "admitted calls only"
    };
    println!("\n== gateway: {rule}");
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let all: Vec<Tenant> = groups(sizes, &placeholder)
        .into_iter()
        .flat_map(|g| g.tenants)
        .collect();
    let mut config = worker_support::sim_config(&all, sizes.window);
    config.count_rejected = count_rejected;
    config.other_client_calls = sizes.other_calls;
    for t in &all {
        if t.name.starts_with("al-") || t.name.starts_with("ri-") {
            config.other_client_calls_for.insert(t.name.clone(), 0);
        }
    }
    config.faults.latency = Duration::from_millis(10);
    config.faults.latency_jitter = Duration::from_millis(30);
    config.faults.seed = 13;
    let sim = worker_support::start_sim(config).await;
    let state: &SimState = sim.server.state();
    let groups = groups(sizes, &sim.server.base_url());
    let names: Vec<String> = groups
        .iter()
        .flat_map(|g| g.tenants.iter().map(|t| t.name.clone()))
        .collect();
    let mut queues = Vec::new();
    for g in &groups {
        let q = connect(&common::unique_queue("bench-share"), sizes).await;
        q.put_tenants(&g.tenants).await.expect("tenants");
        q.push(&jobs_of(g, 0)).await.expect("push");
        queues.push(q);
    }
    let t0 = Instant::now();
    let mut workers: Vec<Option<Workers>> = groups
        .iter()
        .zip(&queues)
        .map(|(g, q)| Some(Workers::spawn(&q.config().name, sizes, g.share)))
        .collect();
    let mut finished_at: Vec<Option<Duration>> = vec![None; groups.len()];
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let (mut dropped, mut risen) = (false, false);
    let main_groups = groups.len() - 2;
    sample_until(state, &names, t0, sizes, &mut samples, |at| {
        for (i, w) in workers.iter_mut().enumerate() {
            if finished_at[i].is_none() && w.as_mut().is_some_and(|w| w.all_exited()) {
                finished_at[i] = Some(at);
            }
        }
        if !dropped && at >= sizes.drop_after {
            dropped = true;
            for t in &groups[main_groups].tenants {
                state.set_other_client_calls(&t.name, 0);
            }
        }
        if !risen && at >= sizes.rise_after {
            risen = true;
            for t in &groups[main_groups + 1].tenants {
                state.set_other_client_calls(&t.name, 15);
            }
        }
        let main_done = finished_at[..main_groups].iter().all(|f| f.is_some());
        (main_done && at > sizes.drop_after + sizes.window * 24) || at > sizes.deadline
    })
    .await;
    for w in workers.iter_mut() {
        if let Some(w) = w.take() {
            w.kill().await;
        }
    }
    let mut figures: Vec<Figures> = Vec::new();
    for (g, f) in groups.iter().zip(&finished_at) {
        let mut fig = Figures::default();
        for t in &g.tenants {
            fig.add(&samples[&t.name], sizes, Duration::ZERO);
        }
        if f.is_none() && g.name != "drop" && g.name != "rise" {
            println!(
                "  ({} did not finish within the deadline: its figures cover what ran)",
                g.name
            );
        }
        figures.push(fig);
    }
    println!("  the frontier, fixed shares spread over the window, and the adaptive share:");
    for (g, f) in groups.iter().zip(&figures).take(main_groups) {
        f.print(&g.name);
    }
    let fixed = &figures[..FIXED.count()];
    let best = fixed
        .iter()
        .zip(FIXED)
        .filter(|(f, _)| f.other_pct() <= 2.0)
        .max_by(|a, b| a.0.per_window().total_cmp(&b.0.per_window()));
    let adaptive = &figures[FIXED.count()];
    let startup_max = adaptive.startup_refused.iter().max().copied().unwrap_or(0);
    match best {
        Some((b, s)) => println!(
            "  adaptive against the best fixed share within 2% (fixed {s}): budget used {:.2} of \
             it (target >= 0.9); other client refused {:.1}% settled (target <= 2%); at most {} \
             refused per tenant at start-up (target <= 10); ours rate-limited {:.1}% (target <= 3%)",
            adaptive.per_window() / b.per_window(),
            adaptive.other_pct(),
            startup_max,
            pct(adaptive.rate_limited, adaptive.calls),
        ),
        None => println!("  no fixed share kept the other client within 2% in this run"),
    }
    let alone = &figures[FIXED.count() + 1];
    println!(
        "  alone: {:.3} of the limit used while settled (target >= 0.99), {} rate-limit answers \
         (target 0)",
        alone.per_window() / f64::from(sizes.limit),
        alone.rate_limited
    );

    // The drop: when our calls per window reach 0.99 of the limit again.
    let drop_group = &groups[main_groups];
    let mut climbs = Vec::new();
    for t in &drop_group.tenants {
        let s = &samples[&t.name];
        let back = s
            .iter()
            .filter(|x| x.at >= sizes.drop_after + sizes.window)
            .find(|x| f64::from(x.in_window) >= 0.99 * f64::from(sizes.limit))
            .map(|x| x.at - sizes.drop_after);
        let last_in = s.last().map_or(0, |x| x.in_window);
        climbs.push((back, last_in));
    }
    println!(
        "  drop (other client 10 -> 0 at {:?}): back at 0.99 of the limit after {} (target <= 30 s)",
        sizes.drop_after,
        climbs
            .iter()
            .map(|(b, last)| match b {
                Some(d) => format!("{:.0} s", d.as_secs_f64()),
                None => format!("not within the run ({last} in the window at its end)"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The rise: the other client's calls refused because of ours, per window after it.
    let rise_group = &groups[main_groups + 1];
    let mut per_window = [0u64; 8];
    let mut calls_per_window = [0u64; 8];
    for t in &rise_group.tenants {
        let s = &samples[&t.name];
        let at = |d: Duration| {
            s.iter()
                .find(|x| x.at >= d)
                .or(s.last())
                .copied()
                .unwrap_or_default()
        };
        for (w, (refused, calls)) in per_window.iter_mut().zip(&mut calls_per_window).enumerate() {
            let a = at(sizes.rise_after + sizes.window * w as u32);
            let b = at(sizes.rise_after + sizes.window * (w as u32 + 1));
            *refused += b.other_because_of_ours - a.other_because_of_ours;
            *calls += b.other_calls - a.other_calls;
        }
    }
    println!(
        "  rise (other client 0 -> 15 at {:?}): its calls refused because of ours, window by \
         window after: {} (target: the harm stops within 2 windows)",
        sizes.rise_after,
        per_window
            .iter()
            .zip(&calls_per_window)
            .map(|(r, c)| format!("{r}/{c}"))
            .collect::<Vec<_>>()
            .join(" ")
    );

    // The second run: the adaptive tenants again, their share remembered.
    let ad = FIXED.count();
    let g = &groups[ad];
    let q = &queues[ad];
    let second = Group {
        name: g.name.clone(),
        tenants: g.tenants.clone(),
        share: g.share,
        jobs: vec![sizes.second_jobs; g.tenants.len()],
    };
    q.push(&jobs_of(&second, sizes.jobs)).await.expect("push");
    let t1 = t0.elapsed();
    let mut w = Workers::spawn(&q.config().name, sizes, "adaptive");
    let ad_names: Vec<String> = g.tenants.iter().map(|t| t.name.clone()).collect();
    let mut done: Option<Duration> = None;
    sample_until(state, &ad_names, t0, sizes, &mut samples, |at| {
        if done.is_none() && w.all_exited() {
            done = Some(at);
        }
        done.is_some_and(|d| at > d + sizes.window) || at > t1 + sizes.deadline
    })
    .await;
    w.kill().await;
    let mut again = Figures::default();
    for t in &g.tenants {
        // The whole second run counts: its start is a remembered share, not a start-up.
        let s: Vec<Sample> = samples[&t.name]
            .iter()
            .filter(|x| x.at >= t1)
            .copied()
            .collect();
        if let (Some(a), Some(b)) = (s.first(), s.last()) {
            again.other_calls += b.other_calls - a.other_calls;
            again.other_refused += b.other_because_of_ours - a.other_because_of_ours;
            again.calls += b.calls - a.calls;
            again.rate_limited += b.rate_limited - a.rate_limited;
        }
    }
    println!(
        "  second run ({} jobs each, share remembered): other client refused {:.1}% ({} of {}; \
         target <= 3%); ours rate-limited {:.1}%",
        sizes.second_jobs,
        again.other_pct(),
        again.other_refused,
        again.other_calls,
        pct(again.rate_limited, again.calls),
    );
    for q in &queues {
        let _ = q.delete_all().await;
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
        .filter(|a| ["counted", "admitted"].contains(&a.as_str()))
        .collect();
    let wanted = |part: &str| named.is_empty() || named.iter().any(|n| *n == part);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if wanted("counted") {
            run(&sizes, true).await;
        }
        if wanted("admitted") {
            run(&sizes, false).await;
        }
    });
}
