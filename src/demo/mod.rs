//! `lsq-webhooks demo`: the whole product in one process, against its own simulator.
//!
//! A run starts the LeadSquared simulator on a free loopback port with a handful of tenants
//! of different limits and a few seeded faults (500s, "created, then 500", connection
//! resets, latency), enqueues enough jobs to keep every tenant at its limit for a while,
//! runs the worker pool until the queue is idle (or until told to stop), and reports:
//! jobs done and dead, the webhook Ids recorded against the ones the simulator created,
//! rate-limit answers (the goal is zero), retries, and each tenant's achieved calls per
//! window while it had work.
//!
//! The queue is Redis when one is named (a fresh queue, deleted afterwards unless kept) and
//! the embedded backend otherwise, so the demo runs on a machine with nothing but Rust.
//!
//! - [`watch`]: the calls and outcomes per tenant, as the worker pool reports them.
//! - [`display`]: live bars on a terminal, plain lines elsewhere.
//! - [`report`]: the summary and how the achieved rate is measured.

pub mod display;
pub mod report;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

pub use display::View;
pub use report::{DemoReport, TenantReport, achieved_per_window};

use crate::job::{JobState, NewJob};
use crate::leadsquared::{Client, ClientConfig};
use crate::producer::JobRequest;
use crate::queue::embedded::EmbeddedQueue;
use crate::queue::redis::RedisQueue;
use crate::queue::{Pushed, Queue, QueueConfig, QueueError};
use crate::secret::Secret;
use crate::sim::{AccountSource, Faults, SimConfig, SimServer, SimState};
use crate::tenant::Tenant;
use crate::worker::{Pool, RetryPolicy, WorkerConfig, WorkerError};
use watch::Watch;

/// One of the demo's tenants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoTenant {
    /// Its name.
    pub name: String,
    /// Calls allowed per window.
    pub limit: u32,
}

/// What a demo run does.
#[derive(Clone, Debug)]
pub struct DemoConfig {
    /// The tenants, in display order.
    pub tenants: Vec<DemoTenant>,
    /// How long each tenant should have work at its limit: a tenant gets
    /// `limit × busy / window` jobs (at least one).
    pub busy: Duration,
    /// The rate-limit window of both the simulator and the queue (LeadSquared's is 5 s;
    /// tests shorten it).
    pub window: Duration,
    /// Faults the simulator injects.
    pub faults: Faults,
    /// Jobs the pool runs at once.
    pub concurrency: usize,
    /// Backoff between attempts of a job that failed transiently.
    pub retry: RetryPolicy,
    /// Attempts before such a job is dead.
    pub max_attempts: u32,
    /// After a stop is asked, how long running calls may finish.
    pub shutdown_grace: Duration,
    /// How long after a Create that may have reached the simulator its job waits before
    /// looking for the webhook (see [`WorkerConfig::reconcile_settle`]). The simulator has
    /// finished a Create before it answers or resets, so the demo needs far less than
    /// LeadSquared's 10 s default.
    pub reconcile_settle: Duration,
}

/// The standard tenants: limits from LeadSquared's 25 down to plans with far fewer.
const STANDARD_TENANTS: [(&str, u32); 10] = [
    ("acme", 25),
    ("globex", 25),
    ("initech", 25),
    ("umbrella", 20),
    ("hooli", 20),
    ("stark", 15),
    ("wayne", 10),
    ("wonka", 5),
    ("tyrell", 3),
    ("cyberdyne", 2),
];

impl DemoConfig {
    /// The demo `lsq-webhooks demo` runs: ten tenants with limits from 25 down to 2 calls
    /// per 5 s, each busy for `busy` (about 1,200 jobs for 40 s), 1% of calls answered 500,
    /// 1% of Creates answered 500 after creating the webhook, 0.5% of connections reset,
    /// 20-80 ms of latency; faults drawn from `seed`.
    pub fn standard(busy: Duration, seed: u64) -> DemoConfig {
        DemoConfig {
            tenants: STANDARD_TENANTS
                .iter()
                .map(|(name, limit)| DemoTenant {
                    name: (*name).to_string(),
                    limit: *limit,
                })
                .collect(),
            busy,
            window: Duration::from_secs(5),
            faults: Faults {
                seed,
                error_rate: 0.01,
                created_then_error_rate: 0.01,
                reset_rate: 0.005,
                latency: Duration::from_millis(20),
                latency_jitter: Duration::from_millis(60),
            },
            concurrency: 64,
            retry: RetryPolicy::default(),
            max_attempts: 8,
            shutdown_grace: Duration::from_secs(5),
            reconcile_settle: Duration::from_secs(1),
        }
    }

    /// Jobs enqueued for a tenant with this limit.
    pub fn jobs_for(&self, limit: u32) -> u64 {
        let windows = self.busy.as_secs_f64() / self.window.as_secs_f64().max(1e-3);
        ((f64::from(limit) * windows).round() as u64).max(1)
    }

    /// Jobs enqueued in all.
    pub fn total_jobs(&self) -> u64 {
        self.tenants.iter().map(|t| self.jobs_for(t.limit)).sum()
    }

    fn check(&self) -> Result<(), DemoError> {
        let bad = |m: &str| Err(DemoError::Config(m.to_string()));
        if self.tenants.is_empty() {
            return bad("at least one tenant");
        }
        let mut names = HashSet::new();
        for t in &self.tenants {
            if !crate::tenant::valid_name(&t.name) || !names.insert(t.name.as_str()) {
                return bad("tenant names must be valid and distinct");
            }
            if t.limit == 0 {
                return bad("every limit must be at least 1");
            }
        }
        if self.window.is_zero() || self.busy.is_zero() {
            return bad("window and busy time must be positive");
        }
        if self.concurrency == 0 || self.max_attempts == 0 {
            return bad("concurrency and max attempts must be at least 1");
        }
        Ok(())
    }
}

/// Which queue runs the demo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded backend, in this process.
    Embedded,
    /// Redis, under a queue name of the demo's own.
    Redis {
        /// Redis URL.
        url: String,
        /// The queue name (key prefix).
        queue: String,
        /// Keep the queue's keys afterwards (to inspect with `status` or `results`).
        keep: bool,
    },
}

impl Backend {
    /// Redis at `url`, under a fresh queue name `demo-` and 8 hex digits.
    pub fn redis(url: impl Into<String>, keep: bool) -> Backend {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Backend::Redis {
            url: url.into(),
            queue: format!("demo-{}", &id[..8]),
            keep,
        }
    }

    /// One line saying which queue this is (a password in the URL is not shown).
    pub fn describe(&self) -> String {
        match self {
            Backend::Embedded => {
                "queue: embedded, in this process (set REDIS_URL or --redis to use Redis)".into()
            }
            Backend::Redis { url, queue, keep } => {
                let then = if *keep {
                    "kept afterwards"
                } else {
                    "deleted afterwards"
                };
                format!(
                    "queue: Redis at {}, queue {queue} ({then})",
                    redacted_url(url)
                )
            }
        }
    }
}

/// A Redis URL without its user name and password.
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(a URL that does not parse)".into(),
    }
}

/// Why a demo could not run. A job failing is not one of these: it is in the report.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The configuration cannot work.
    #[error("demo configuration: {0}")]
    Config(String),
    /// The simulator could not start.
    #[error("cannot start the simulator: {0}")]
    Simulator(String),
    /// The queue failed (Redis unreachable, say).
    #[error("queue: {0}")]
    Queue(#[from] QueueError),
    /// The worker pool failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] crate::leadsquared::ClientBuildError),
}

/// Runs the demo until every job is done or dead, or until `shutdown` is cancelled (then
/// the pool stops in its two stages and the report says `interrupted`). Progress goes to
/// standard error as `view` says; the report is returned, not printed.
pub async fn run(
    config: &DemoConfig,
    backend: &Backend,
    view: View,
    shutdown: CancellationToken,
) -> Result<DemoReport, DemoError> {
    config.check()?;
    let started = Instant::now();
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let tenants = tenants_at(config, addr)?;
    let state = SimState::new(SimConfig {
        accounts: AccountSource::Tenants(tenants.clone()),
        window: config.window,
        faults: config.faults.clone(),
        ..SimConfig::default()
    })
    .map_err(|e| DemoError::Simulator(e.to_string()))?;
    let sim_stop = CancellationToken::new();
    // Stops the simulator on every way out of this function.
    let _sim_guard = sim_stop.clone().drop_guard();
    let sim = crate::sim::serve(listener, state, sim_stop.clone())
        .map_err(|e| DemoError::Simulator(e.to_string()))?;

    let queue_config = QueueConfig {
        name: match backend {
            Backend::Embedded => "demo".into(),
            Backend::Redis { queue, .. } => queue.clone(),
        },
        window: config.window,
        max_attempts: config.max_attempts,
        ..QueueConfig::default()
    };
    let (queue, redis_prefix): (Arc<dyn Queue>, Option<String>) = match backend {
        Backend::Embedded => (Arc::new(EmbeddedQueue::new(queue_config)), None),
        Backend::Redis { url, .. } => {
            let q = RedisQueue::connect(url, queue_config).await?;
            let prefix = q.prefix().to_string();
            (Arc::new(q), Some(prefix))
        }
    };
    let result = drive(
        config, backend, &tenants, queue, &sim, view, shutdown, started,
    )
    .await;
    if let (Backend::Redis { url, keep, .. }, Some(prefix)) = (backend, redis_prefix)
        && !keep
        && let Err(e) = delete_queue(url, &prefix).await
    {
        tracing::warn!("could not delete the demo's queue {prefix}: {e}");
    }
    sim_stop.cancel();
    sim.join().await;
    result
}

/// The tenants, with keys of their own, calling the simulator at `addr`.
fn tenants_at(config: &DemoConfig, addr: SocketAddr) -> Result<Vec<Tenant>, DemoError> {
    let api_base = url::Url::parse(&format!("http://{addr}"))
        .map_err(|e| DemoError::Simulator(e.to_string()))?;
    // Keys made up per run: nothing outside this process knows them.
    let run = uuid::Uuid::new_v4().simple().to_string();
    Ok(config
        .tenants
        .iter()
        .map(|t| Tenant {
            name: t.name.clone(),
            api_base: api_base.clone(),
            access_key: Secret::new(format!("demo-access-{}", t.name)),
            secret_key: Secret::new(format!("demo-secret-{}-{run}", t.name)),
            limit: t.limit,
        })
        .collect())
}

/// A Create body: a plain lead or task event, a description no other job's contains (the
/// reconcile searches by description).
fn webhook(tenant: &str, n: u64) -> serde_json::Value {
    const EVENTS: [&str; 4] = ["3", "6", "5", "7"];
    serde_json::json!({
        "Description": format!("demo {tenant} webhook {n:06}"),
        "URL": format!("https://hooks.example.com/{tenant}/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": EVENTS[(n % 4) as usize],
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": []
    })
}

/// A tenant's job number `n`, checked and normalised the way `enqueue` and the HTTP API do
/// it (its idempotency key derived from tenant and body).
fn job(tenant: &str, n: u64) -> Result<NewJob, DemoError> {
    let request = JobRequest {
        tenant: tenant.to_string(),
        webhook: webhook(tenant, n),
        key: None,
    };
    crate::producer::validate(&request).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        DemoError::Config(format!("a demo job is invalid: {}", list.join("; ")))
    })
}

/// Jobs pushed per call: one Redis script run each, small enough to stay quick.
const PUSH_BATCH: usize = 500;

#[allow(clippy::too_many_arguments)]
async fn drive(
    config: &DemoConfig,
    backend: &Backend,
    tenants: &[Tenant],
    queue: Arc<dyn Queue>,
    sim: &SimServer,
    view: View,
    shutdown: CancellationToken,
    started: Instant,
) -> Result<DemoReport, DemoError> {
    queue.put_tenants(tenants).await?;
    // Tenants take turns in the push order, so that each has work from the first batch.
    let most = config
        .tenants
        .iter()
        .map(|t| config.jobs_for(t.limit))
        .max()
        .unwrap_or(0);
    let mut all = Vec::with_capacity(config.total_jobs() as usize);
    for n in 0..most {
        for t in &config.tenants {
            if n < config.jobs_for(t.limit) {
                all.push(job(&t.name, n)?);
            }
        }
    }
    let mut enqueued = 0u64;
    for batch in all.chunks(PUSH_BATCH) {
        if shutdown.is_cancelled() {
            break;
        }
        let pushed = queue.push(batch).await?;
        enqueued += pushed
            .iter()
            .filter(|p| matches!(p, Pushed::Enqueued { .. }))
            .count() as u64;
    }

    let watch = Arc::new(Watch::new(queue.config()));
    let client = Client::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })?;
    let pool = Pool::new(
        queue.clone(),
        client,
        WorkerConfig {
            concurrency: config.concurrency,
            exit_when_idle: true,
            retry: config.retry,
            shutdown_grace: config.shutdown_grace,
            reconcile_settle: config.reconcile_settle,
            name: "demo".into(),
            ..WorkerConfig::default()
        },
    )
    .with_observer(watch.clone());
    let rows: Vec<display::Row> = config
        .tenants
        .iter()
        .map(|t| display::Row {
            name: t.name.clone(),
            limit: t.limit,
            jobs: config.jobs_for(t.limit),
        })
        .collect();
    let stop_display = CancellationToken::new();
    let shown = AbortOnDropHandle::new(display::spawn(
        view,
        intro(config, sim.local_addr(), enqueued),
        rows,
        watch.clone(),
        stop_display.clone(),
    ));
    let summary = pool.run(shutdown.clone()).await;
    stop_display.cancel();
    if let Err(e) = shown.await {
        tracing::warn!("the progress display failed: {e}");
    }
    let summary = summary?;
    let interrupted = shutdown.is_cancelled();

    // What the queue recorded, against what the simulator saw.
    let results = queue.results(None).await?;
    let stats = sim.stats();
    let logs = watch.call_logs();
    let mut recorded: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let (mut done, mut dead) = (0u64, 0u64);
    let mut per_tenant_done: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for r in &results {
        let counts = per_tenant_done.entry(r.tenant.as_str()).or_default();
        match r.status {
            JobState::Done => {
                done += 1;
                counts.0 += 1;
                if let Some(id) = &r.webhook_id {
                    recorded.entry(r.tenant.as_str()).or_default().push(id);
                }
            }
            JobState::Dead => {
                dead += 1;
                counts.1 += 1;
            }
            _ => {}
        }
    }
    let mut ids_match = true;
    let (mut ids_created, mut duplicates, mut rate_limited, mut calls) = (0, 0, 0, 0);
    let mut faults = (0, 0, 0);
    let mut tenant_reports = Vec::with_capacity(config.tenants.len());
    for t in &config.tenants {
        let account = stats.accounts.get(&t.name).cloned().unwrap_or_default();
        let mut created: Vec<&str> = account.webhooks.iter().map(|w| w.id.as_str()).collect();
        let mut got = recorded.remove(t.name.as_str()).unwrap_or_default();
        created.sort_unstable();
        got.sort_unstable();
        ids_match &= created == got;
        ids_created += created.len() as u64;
        duplicates += account.duplicates;
        rate_limited += account.rate_limited;
        calls += account.calls;
        faults.0 += account.faults.errors;
        faults.1 += account.faults.created_then_error;
        faults.2 += account.faults.resets;
        let log = logs.get(&t.name).cloned().unwrap_or_default();
        let busy = match (
            log.calls.first(),
            log.busy_until.and_then(|i| log.calls.get(i)),
        ) {
            (Some(first), Some(last)) => last.saturating_sub(*first),
            _ => Duration::ZERO,
        };
        let achieved = log
            .busy_until
            .and_then(|until| achieved_per_window(&log.calls, until, t.limit, config.window));
        let (t_done, t_dead) = per_tenant_done
            .get(t.name.as_str())
            .copied()
            .unwrap_or_default();
        tenant_reports.push(TenantReport {
            name: t.name.clone(),
            limit: t.limit,
            jobs: config.jobs_for(t.limit),
            done: t_done,
            dead: t_dead,
            calls: account.calls,
            rate_limited: account.rate_limited,
            max_calls_in_window: account.max_calls_in_window,
            retries: watch.progress(&t.name).retries,
            busy,
            achieved,
        });
    }
    let jobs = config.total_jobs();
    Ok(DemoReport {
        backend: match backend {
            Backend::Embedded => "embedded queue".into(),
            Backend::Redis { queue, .. } => format!("Redis queue {queue}"),
        },
        elapsed: started.elapsed(),
        interrupted,
        window: config.window,
        jobs,
        done,
        dead,
        unfinished: jobs.saturating_sub(done + dead),
        ids_recorded: results
            .iter()
            .filter(|r| r.status == JobState::Done && r.webhook_id.is_some())
            .count() as u64,
        ids_created,
        ids_match,
        duplicates,
        rate_limited,
        calls,
        retries: summary.retried,
        reconciled: summary.reconciled,
        faults,
        tenants: tenant_reports,
    })
}

/// The first line of the progress display.
fn intro(config: &DemoConfig, addr: SocketAddr, jobs: u64) -> String {
    let f = &config.faults;
    let limits: Vec<String> = config.tenants.iter().map(|t| t.limit.to_string()).collect();
    let latency = f.latency.as_millis();
    format!(
        "simulator at http://{addr}: {} tenants with limits {} per {:.0} s; {jobs} jobs; \
         faults (seed {}): {}% of calls 500, {}% of creates 500 after creating, {}% resets, \
         {}-{} ms latency",
        config.tenants.len(),
        limits.join(", "),
        config.window.as_secs_f64(),
        f.seed,
        f.error_rate * 100.0,
        f.created_then_error_rate * 100.0,
        f.reset_rate * 100.0,
        latency,
        latency + f.latency_jitter.as_millis()
    )
}

/// Deletes every key under the queue's prefix.
async fn delete_queue(url: &str, prefix: &str) -> Result<u64, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    // The prefix is `{name}:` with a name of letters, digits and `._:-`: no glob characters.
    let pattern = format!("{prefix}*");
    let mut cursor = 0u64;
    let mut deleted = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            deleted += redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<u64>(&mut con)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_jobs_are_valid_and_descriptions_do_not_contain_each_other() {
        let descriptions: Vec<String> =
            (0..120)
                .map(|n| match job("acme", n) {
                    Ok(j) => serde_json::from_str::<serde_json::Value>(&j.body).unwrap_or_default()
                        ["Description"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    Err(e) => panic!("job {n}: {e}"),
                })
                .collect();
        for (i, a) in descriptions.iter().enumerate() {
            for (k, b) in descriptions.iter().enumerate() {
                assert!(i == k || !a.contains(b.as_str()), "{a} contains {b}");
            }
        }
    }

    #[test]
    fn the_standard_demo_keeps_each_tenant_busy_for_the_time_asked() {
        let c = DemoConfig::standard(Duration::from_secs(40), 1);
        assert!(c.check().is_ok());
        assert_eq!(c.jobs_for(25), 200);
        assert_eq!(c.jobs_for(2), 16);
        assert_eq!(c.total_jobs(), 150 * 8);
    }

    #[test]
    fn redis_urls_are_described_without_credentials() {
        let b = Backend::Redis {
            url: "redis://user:hunter2@redis.internal:6380/2".into(),
            queue: "demo-1".into(),
            keep: false,
        };
        let d = b.describe();
        assert!(!d.contains("hunter2") && !d.contains("user"), "{d}");
        assert!(
            d.contains("redis.internal:6380/2") && d.contains("demo-1"),
            "{d}"
        );
    }
}
