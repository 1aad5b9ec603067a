//! What a demo run does: its tenants, how long each is kept busy, the window, the faults,
//! the pool's settings; and which queue runs it.

use std::collections::HashSet;
use std::time::Duration;

use super::DemoError;
use crate::sim::Faults;
use crate::worker::RetryPolicy;

/// One of the demo's tenants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoTenant {
    /// Its name.
    pub name: String,
    /// Calls allowed per window.
    pub limit: u32,
    /// How it is registered.
    pub setup: TenantSetup,
}

impl DemoTenant {
    /// A tenant registered with its host and its right keys.
    pub fn known(name: &str, limit: u32) -> DemoTenant {
        DemoTenant {
            name: name.to_string(),
            limit,
            setup: TenantSetup::Known,
        }
    }
}

/// How a demo tenant is registered (issue 14: tenants as they really are).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TenantSetup {
    /// With its host and its right keys.
    #[default]
    Known,
    /// With no `api_base`: the worker discovers its host with `UserByAccessKey.Get`.
    NoHost,
    /// Living in the simulator's second region, registered with the first region's host:
    /// its first call answers 401, and its host is rediscovered.
    OtherRegion,
    /// With a secret key LeadSquared refuses: the tenant is parked, its jobs stay queued.
    BadKeys,
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
    /// looking for the webhook (see [`crate::worker::WorkerConfig::reconcile_settle`]). The
    /// simulator has finished a Create before it answers or resets, so the demo needs far
    /// less than LeadSquared's 10 s default.
    pub reconcile_settle: Duration,
}

/// The standard tenants: limits from LeadSquared's 25 down to plans with far fewer.
/// `hooli` has no host (discovered), `stark` lives in another region (rediscovered after a
/// 401), `oscorp`'s keys are refused (parked).
const STANDARD_TENANTS: [(&str, u32, TenantSetup); 11] = [
    ("acme", 25, TenantSetup::Known),
    ("globex", 25, TenantSetup::Known),
    ("initech", 25, TenantSetup::Known),
    ("umbrella", 20, TenantSetup::Known),
    ("hooli", 20, TenantSetup::NoHost),
    ("stark", 15, TenantSetup::OtherRegion),
    ("wayne", 10, TenantSetup::Known),
    ("wonka", 5, TenantSetup::Known),
    ("oscorp", 5, TenantSetup::BadKeys),
    ("tyrell", 3, TenantSetup::Known),
    ("cyberdyne", 2, TenantSetup::Known),
];

impl DemoConfig {
    /// The demo `lsq-webhooks demo` runs: eleven tenants with limits from 25 down to 2 calls
    /// per 5 s (one without a host, one in another region, one whose keys are refused), each busy for `busy` (about 1,200 jobs for 40 s), 1% of calls answered 500,
    /// 1% of Creates answered 500 after creating the webhook, 0.5% of connections reset,
    /// 20-80 ms of latency; faults drawn from `seed`.
    pub fn standard(busy: Duration, seed: u64) -> DemoConfig {
        DemoConfig {
            tenants: STANDARD_TENANTS
                .iter()
                .map(|(name, limit, setup)| DemoTenant {
                    name: (*name).to_string(),
                    limit: *limit,
                    setup: *setup,
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

    /// Jobs of the tenants whose keys are refused: parked, never done.
    pub fn parked_jobs(&self) -> u64 {
        self.tenants
            .iter()
            .filter(|t| t.setup == TenantSetup::BadKeys)
            .map(|t| self.jobs_for(t.limit))
            .sum()
    }

    pub(super) fn check(&self) -> Result<(), DemoError> {
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
        /// Its shards (`--shards`; `None`: the default, 16 on a `redis+cluster://` URL, else
        /// 1), so that on a cluster the demo's queue spreads over the nodes as a worker's does.
        shards: Option<u32>,
    },
}

impl Backend {
    /// Redis at `url`, under a fresh queue name `demo-` and 8 hex digits, in `shards`
    /// shards (`None`: the default for the URL).
    pub fn redis(url: impl Into<String>, keep: bool, shards: Option<u32>) -> Backend {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Backend::Redis {
            url: url.into(),
            queue: format!("demo-{}", &id[..8]),
            keep,
            shards,
        }
    }

    /// One line saying which queue this is (a password in the URL is not shown).
    pub fn describe(&self) -> String {
        match self {
            Backend::Embedded => {
                "queue: embedded, in this process (set REDIS_URL or --redis to use Redis)".into()
            }
            Backend::Redis {
                url, queue, keep, ..
            } => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_demo_keeps_each_tenant_busy_for_the_time_asked() {
        let c = DemoConfig::standard(Duration::from_secs(40), 1);
        assert!(c.check().is_ok());
        assert_eq!(c.jobs_for(25), 200);
        assert_eq!(c.jobs_for(2), 16);
        assert_eq!(c.total_jobs(), 155 * 8);
        assert_eq!(c.parked_jobs(), 5 * 8);
    }

    #[test]
    fn redis_urls_are_described_without_credentials() {
        let b = Backend::Redis {
            url: "redis://user:hunter2@redis.internal:6380/2".into(),
            queue: "demo-1".into(),
            keep: false,
            shards: None,
        };
        let d = b.describe();
        assert!(!d.contains("hunter2") && !d.contains("user"), "{d}");
        assert!(
            d.contains("redis.internal:6380/2") && d.contains("demo-1"),
            "{d}"
        );
    }
}
