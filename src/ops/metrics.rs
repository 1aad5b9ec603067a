//! Prometheus metrics: what the workers did (jobs by outcome, LeadSquared's answers and how
//! long they took) and what the queue holds (depth by state, throttled tenants).
//!
//! The counters and the histogram are this process's own: a worker calls
//! [`Metrics::job_finished`] and [`Metrics::call_observed`] as it goes. The gauges (and
//! `lsq_jobs_done_total`) describe the queue shared by every process; every process that
//! serves `/metrics` shows the same queue, and Prometheus should aggregate them with `max`,
//! not `sum`.
//!
//! A scrape stays cheap with many tenants (issue 15): everything the queue gauges show
//! comes from one [`Queue::pulse`] per scrape, bounded by [`MAX_TENANT_LABELS`]: counts
//! from indexes the queue keeps (throttled, cut shares, spent quotas, holds), and the
//! per-tenant families for the tenants the pulse lists, never a walk over every tenant.
//!
//! Label cardinality is bounded: outcomes and states are fixed sets, and at most
//! [`MAX_TENANT_LABELS`] tenants get a label of their own on each per-tenant family; the
//! throttled ones beyond are added up under `tenant="other"`. No label or value ever
//! carries a secret.
//!
//! [`Queue::pulse`]: crate::queue::Queue::pulse

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::queue::{HoldKind, QueuePulse, ShareReason};

/// The `Content-Type` of [`Metrics::encode`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// At most this many tenants get their own `tenant` label on `lsq_tenant_throttled`; the
/// others are counted under `tenant="other"`. Prometheus keeps one series per label value,
/// and a deployment may have thousands of tenants.
pub const MAX_TENANT_LABELS: usize = 50;

/// How a call to LeadSquared ended, the `outcome` label of
/// `lsq_leadsquared_call_duration_seconds`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum CallOutcome {
    /// An answer that did what was asked (created, or a Retrieve page).
    Ok,
    /// "Rate limited" (or the daily quota).
    RateLimited,
    /// A failure worth another try: a server error, a timeout, a reset.
    Transient,
    /// A failure no retry fixes: refused keys, an invalid body.
    Permanent,
}

impl CallOutcome {
    /// Every outcome.
    pub const ALL: [CallOutcome; 4] = [
        CallOutcome::Ok,
        CallOutcome::RateLimited,
        CallOutcome::Transient,
        CallOutcome::Permanent,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::RateLimited => "rate_limited",
            CallOutcome::Transient => "transient",
            CallOutcome::Permanent => "permanent",
        }
    }
}

/// What became of one job a worker ran. Each run ends in exactly one of these.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum JobOutcome {
    /// Created; the webhook Id is recorded.
    Done,
    /// Done by finding a webhook an earlier attempt had created (Retrieve), not by Create.
    Reconciled,
    /// A transient failure; scheduled to be tried again after a backoff (or dead-lettered by
    /// the queue when no attempt is left: `lsq_queue_jobs{state="dead"}` shows those).
    Retried,
    /// LeadSquared said "rate limited"; the job went back to its tenant's list.
    RateLimited,
    /// Handed back without an answer (shutdown, or a reconcile that found nothing).
    Requeued,
    /// Gave up: a permanent error, or no attempts left.
    Dead,
    /// The result could not be recorded (the lease was lost, or the store did not answer
    /// before shutdown); the lease runs out and another worker takes the job back.
    Lost,
}

impl JobOutcome {
    /// Every outcome.
    pub const ALL: [JobOutcome; 7] = [
        JobOutcome::Done,
        JobOutcome::Reconciled,
        JobOutcome::Retried,
        JobOutcome::RateLimited,
        JobOutcome::Requeued,
        JobOutcome::Dead,
        JobOutcome::Lost,
    ];

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Done => "done",
            JobOutcome::Reconciled => "reconciled",
            JobOutcome::Retried => "retried",
            JobOutcome::RateLimited => "rate_limited",
            JobOutcome::Requeued => "requeued",
            JobOutcome::Dead => "dead",
            JobOutcome::Lost => "lost",
        }
    }
}

/// Labels of `lsq_jobs_total` and `lsq_leadsquared_call_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// [`JobOutcome::as_str`].
    outcome: &'static str,
}

/// Labels of `lsq_queue_jobs`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    /// `queued`, `scheduled`, `running`, `done` or `dead`.
    state: &'static str,
}

/// Labels of `lsq_tenant_share`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareLabels {
    /// Tenant name (validated to `[A-Za-z0-9._-]`).
    tenant: String,
    /// Why the share is what it is: `configured`, `learned_limit`, `reserve` or `shared`.
    reason: &'static str,
}

/// Labels of `lsq_tenants_held`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabels {
    /// `keys_refused`, `host_unreachable` or `paused`.
    kind: &'static str,
}

/// Labels of the per-tenant families (`lsq_tenant_is_throttled`, `lsq_tenant_latency_seconds`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    /// Tenant name (validated to `[A-Za-z0-9._-]`), or `other`.
    tenant: String,
}

/// The metrics of one process. Cheap to clone: every clone shares the same registry.
#[derive(Clone)]
pub struct Metrics {
    /// Shared state.
    inner: Arc<Inner>,
}

/// What the clones share.
struct Inner {
    /// Owns the descriptors of every metric below, for encoding.
    registry: Registry,
    /// `lsq_jobs_total{outcome}`.
    jobs: Family<OutcomeLabels, Counter>,
    /// `lsq_webhook_changes_total{outcome}`: what done jobs did (issue 18).
    changes: Family<OutcomeLabels, Counter>,
    /// `lsq_leadsquared_rate_limited_total`.
    rate_limited: Counter,
    /// `lsq_leadsquared_call_duration_seconds{outcome}`.
    call_seconds: Family<OutcomeLabels, Histogram>,
    /// `lsq_queue_jobs{state}`.
    queue_jobs: Family<StateLabels, Gauge>,
    /// `lsq_queue_oldest_running_seconds`.
    oldest_running: Gauge<f64, AtomicU64>,
    /// `lsq_jobs_done_total`: jobs ever done on the queue, by every worker.
    done_total: Counter,
    /// `lsq_queue_latency_seconds`: age of the oldest job next in line.
    latency: Gauge<f64, AtomicU64>,
    /// `lsq_tenant_latency_seconds{tenant}`: the same per tenant, the oldest 50.
    tenant_latency: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    /// `lsq_queue_status_up`: whether the last read of the queue's status succeeded.
    status_up: Gauge,
    /// `lsq_queue_paused`: 1 while the whole queue is paused (`lsq-webhooks pause`).
    paused: Gauge,
    /// `lsq_tenants_throttled`: throttled tenants, all of them.
    throttled_total: Gauge,
    /// `lsq_tenants_held{kind}`: tenants held, by why.
    held: Family<HoldLabels, Gauge>,
    /// `lsq_tenant_is_throttled{tenant}`.
    throttled: Family<TenantLabels, Gauge>,
    /// `lsq_tenant_limit{tenant}`: calls allowed per window (configured or learned).
    tenant_limit: Family<TenantLabels, Gauge>,
    /// `lsq_tenant_share{tenant,reason}`: our current share of that limit, calls per window.
    tenant_share: Family<ShareLabels, Gauge<f64, AtomicU64>>,
    /// `lsq_tenant_other_use_estimate{tenant}`: while a tenant's share is cut, the other
    /// clients' load (calls per window) it leaves whole.
    other_use: Family<TenantLabels, Gauge<f64, AtomicU64>>,
    /// `lsq_tenants_share_cut`: tenants whose share is cut because another client uses the
    /// account, all of them.
    shared_total: Gauge,
    /// `lsq_tenant_calls_today{tenant}`: calls dispatched today, same tenants as the share.
    calls_today: Family<TenantLabels, Gauge>,
    /// `lsq_tenants_quota_reached`: tenants parked until their daily quota resets.
    quota_total: Gauge,
    /// `lsq_redis_replicas_connected`: replicas the primary reports connected.
    replicas_connected: Gauge,
    /// `lsq_redis_min_replicas`: replicas acknowledged writes ask for (`--min-replicas`).
    min_replicas: Gauge,
    /// `lsq_redis_replication_degraded`: 1 while fewer are connected than asked.
    replication_degraded: Gauge,
    /// Held while the gauges are rewritten and encoded, so two scrapes at once never
    /// interleave a clear of the tenant family with the other's encode.
    scrape: std::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered (and at zero).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let jobs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "lsq_jobs",
            "Dispatched jobs by what became of them, counted by this process",
            jobs.clone(),
        );
        // Every outcome appears from the first scrape, so `rate()` has a baseline.
        for outcome in JobOutcome::ALL {
            drop(jobs.get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            }));
        }
        let changes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "lsq_webhook_changes",
            "Jobs done by this process by what they did to their webhook: created, updated, unchanged, deleted, not_found",
            changes.clone(),
        );
        for outcome in crate::job::Outcome::ALL {
            drop(changes.get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            }));
        }
        let rate_limited = Counter::default();
        registry.register(
            "lsq_leadsquared_rate_limited",
            "Answers from LeadSquared that said the tenant was rate limited",
            rate_limited.clone(),
        );
        // 5 ms to about 41 s: a LeadSquared call takes tens to hundreds of milliseconds,
        // and the client's timeout is tens of seconds.
        let call_seconds = Family::<OutcomeLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.005, 2.0, 14))) as fn() -> Histogram,
        );
        registry.register(
            "lsq_leadsquared_call_duration_seconds",
            "Time from sending a call to LeadSquared to its answer, by how it ended (ok, rate_limited, transient, permanent)",
            call_seconds.clone(),
        );
        for outcome in CallOutcome::ALL {
            drop(call_seconds.get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            }));
        }
        let queue_jobs = Family::<StateLabels, Gauge>::default();
        registry.register(
            "lsq_queue_jobs",
            "Jobs in the queue by state, read from the queue at scrape time",
            queue_jobs.clone(),
        );
        let oldest_running = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "lsq_queue_oldest_running_seconds",
            "Age of the oldest running job's lease (0 when none runs)",
            oldest_running.clone(),
        );
        let done_total = Counter::default();
        registry.register(
            "lsq_jobs_done",
            "Jobs ever finished done on the queue, by all workers (purging done records does not lower it)",
            done_total.clone(),
        );
        let latency = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "lsq_queue_latency_seconds",
            "Age of the oldest job next in line in any tenant's list, since its push (0 when none waits)",
            latency.clone(),
        );
        let tenant_latency = Family::<TenantLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lsq_tenant_latency_seconds",
            "Age of the job next in line in the tenant's list, since its push, for the 50 tenants whose is oldest",
            tenant_latency.clone(),
        );
        let status_up = Gauge::default();
        registry.register(
            "lsq_queue_status_up",
            "1 if the queue's status could be read at the last scrape, else 0",
            status_up.clone(),
        );
        let paused = Gauge::default();
        registry.register(
            "lsq_queue_paused",
            "1 while the whole queue is paused (lsq-webhooks pause, POST /v1/pause): no job is dispatched",
            paused.clone(),
        );
        let throttled_total = Gauge::default();
        registry.register(
            "lsq_tenants_throttled",
            "Tenants with waiting jobs that may not call now (paused by LeadSquared or at their limit)",
            throttled_total.clone(),
        );
        let held = Family::<HoldLabels, Gauge>::default();
        registry.register(
            "lsq_tenants_held",
            "Tenants held (no call, jobs queued) by why: keys_refused (LeadSquared refused the keys), host_unreachable, paused (by an operator)",
            held.clone(),
        );
        let throttled = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "lsq_tenant_is_throttled",
            "1 for each throttled tenant (at most 50); tenant=\"other\" counts the rest",
            throttled.clone(),
        );
        let tenant_limit = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "lsq_tenant_limit",
            "Calls allowed per 5 s window (configured, or lower when LeadSquared named a lower limit), for at most 50 tenants: cut shares first, then spent quotas, then the oldest waiting",
            tenant_limit.clone(),
        );
        let tenant_share = Family::<ShareLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lsq_tenant_share",
            "Our current share of the tenant's limit, calls per window, and why (configured, learned_limit, reserve, shared), for at most 50 tenants",
            tenant_share.clone(),
        );
        let other_use = Family::<TenantLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lsq_tenant_other_use_estimate",
            "While a tenant's share is cut: the load of its other clients, calls per window, that the share leaves whole (estimated from our rate-limit answers), for the same tenants as lsq_tenant_share",
            other_use.clone(),
        );
        let shared_total = Gauge::default();
        registry.register(
            "lsq_tenants_share_cut",
            "Tenants whose share is cut because another client is using the account, all of them, with jobs waiting or not",
            shared_total.clone(),
        );
        let calls_today = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "lsq_tenant_calls_today",
            "Calls dispatched for the tenant today (UTC day), for the same tenants as lsq_tenant_share",
            calls_today.clone(),
        );
        let quota_total = Gauge::default();
        registry.register(
            "lsq_tenants_quota_reached",
            "Tenants parked because their daily quota is spent (daily quota reached, resume when the day resets), held or not",
            quota_total.clone(),
        );
        let replicas_connected = Gauge::default();
        registry.register(
            "lsq_redis_replicas_connected",
            "Replicas the Redis primary reports connected (INFO replication), where writes wait for replicas (Sentinel, --min-replicas)",
            replicas_connected.clone(),
        );
        let min_replicas = Gauge::default();
        registry.register(
            "lsq_redis_min_replicas",
            "Replicas each acknowledged write asks for (--min-replicas)",
            min_replicas.clone(),
        );
        let replication_degraded = Gauge::default();
        registry.register(
            "lsq_redis_replication_degraded",
            "1 while fewer replicas are connected than --min-replicas: writes since then are on one node only (with --replication strict: not acknowledged)",
            replication_degraded.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                jobs,
                changes,
                rate_limited,
                call_seconds,
                queue_jobs,
                oldest_running,
                done_total,
                latency,
                tenant_latency,
                status_up,
                paused,
                throttled_total,
                held,
                throttled,
                tenant_limit,
                tenant_share,
                other_use,
                shared_total,
                calls_today,
                quota_total,
                replicas_connected,
                min_replicas,
                replication_degraded,
                scrape: std::sync::Mutex::new(()),
            }),
        }
    }

    /// Counts one dispatched job's outcome.
    pub fn job_finished(&self, outcome: JobOutcome) {
        self.inner
            .jobs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts a done job by what it did to its webhook.
    pub fn webhook_changed(&self, outcome: crate::job::Outcome) {
        self.inner
            .changes
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records one call to LeadSquared: how long until its answer, and how it ended.
    pub fn call_observed(&self, took: Duration, outcome: CallOutcome) {
        self.inner
            .call_seconds
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .observe(took.as_secs_f64());
        if outcome == CallOutcome::RateLimited {
            self.inner.rate_limited.inc();
        }
    }

    /// How many jobs this process has counted with `outcome`.
    pub fn jobs(&self, outcome: JobOutcome) -> u64 {
        self.inner
            .jobs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Refreshes the queue gauges from a pulse, or marks the queue as unreadable (`None`:
    /// the gauges keep their last values and `lsq_queue_status_up` is 0), and returns the
    /// whole exposition in Prometheus text format.
    pub fn scrape(&self, status: Option<&QueuePulse>) -> String {
        // A poisoned lock only means another scrape panicked mid-way; the gauges are
        // rewritten below anyway.
        let _guard = self
            .inner
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match status {
            Some(s) => {
                self.set_queue(s);
                self.inner.status_up.set(1);
            }
            None => {
                self.inner.status_up.set(0);
            }
        }
        self.encode_locked()
    }

    /// Sets the replication gauges (left as they are with `None`: writes wait for no
    /// replica, or the primary could not say).
    pub fn set_replicas(&self, state: Option<&crate::queue::ReplicaState>) {
        if let Some(r) = state {
            self.inner.replicas_connected.set(i64::from(r.connected));
            self.inner.min_replicas.set(i64::from(r.min_replicas));
            self.inner.replication_degraded.set(i64::from(r.degraded()));
        }
    }

    /// The exposition in Prometheus text format, gauges as last refreshed.
    pub fn encode(&self) -> String {
        let _guard = self
            .inner
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.encode_locked()
    }

    fn encode_locked(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder,
        // and an empty scrape is what Prometheus would then record.
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .is_err()
        {
            tracing::error!("encoding metrics failed");
            out.clear();
        }
        out
    }

    fn set_queue(&self, s: &QueuePulse) {
        let i = &self.inner;
        for (state, n) in [
            ("queued", s.queued),
            ("scheduled", s.scheduled),
            ("running", s.running),
            ("done", s.done),
            ("dead", s.dead),
        ] {
            i.queue_jobs
                .get_or_create(&StateLabels { state })
                .set(clamp(n));
        }
        i.oldest_running
            .set(s.oldest_running_ms.unwrap_or(0) as f64 / 1000.0);
        i.paused.set(i64::from(s.paused));
        // The queue's count only grows; a queue emptied by hand (FLUSHDB) leaves the counter
        // where it was, as a counter must.
        let done = i.done_total.get();
        if s.done_total > done {
            i.done_total.inc_by(s.done_total - done);
        }
        i.latency.set(s.latency_ms.unwrap_or(0) as f64 / 1000.0);
        i.tenant_latency.clear();
        for (tenant, age_ms) in s.tenant_latency_ms.iter().take(MAX_TENANT_LABELS) {
            i.tenant_latency
                .get_or_create(&TenantLabels {
                    tenant: tenant.clone(),
                })
                .set(*age_ms as f64 / 1000.0);
        }
        i.throttled_total.set(clamp(s.throttled));
        i.throttled.clear();
        let named = &s.throttled_tenants[..s.throttled_tenants.len().min(MAX_TENANT_LABELS)];
        for tenant in named {
            i.throttled
                .get_or_create(&TenantLabels {
                    tenant: tenant.clone(),
                })
                .set(1);
        }
        // Always present, so a query for the aggregate has a series even when it is 0.
        i.throttled
            .get_or_create(&TenantLabels {
                tenant: "other".into(),
            })
            .set(clamp(s.throttled.saturating_sub(named.len() as u64)));
        i.shared_total.set(clamp(s.share_cut));
        i.quota_total.set(clamp(s.quota_reached));
        for kind in [
            HoldKind::KeysRefused,
            HoldKind::HostUnreachable,
            HoldKind::Paused,
        ] {
            i.held
                .get_or_create(&HoldLabels {
                    kind: kind.as_str(),
                })
                .set(clamp(s.held.of(kind)));
        }
        // The tenants the queue lists (cut shares first, then spent quotas, then the
        // oldest waiting), at most MAX_TENANT_LABELS; the counts above cover all.
        i.tenant_limit.clear();
        i.tenant_share.clear();
        i.other_use.clear();
        i.calls_today.clear();
        for t in s.shares.iter().take(MAX_TENANT_LABELS) {
            i.tenant_limit
                .get_or_create(&TenantLabels {
                    tenant: t.tenant.clone(),
                })
                .set(i64::from(t.limit));
            i.tenant_share
                .get_or_create(&ShareLabels {
                    tenant: t.tenant.clone(),
                    reason: share_reason_label(t.share_reason),
                })
                .set(if t.share_calls > 0.0 {
                    t.share_calls
                } else {
                    f64::from(t.share)
                });
            if let Some(other) = t.other_use {
                i.other_use
                    .get_or_create(&TenantLabels {
                        tenant: t.tenant.clone(),
                    })
                    .set(other);
            }
            i.calls_today
                .get_or_create(&TenantLabels {
                    tenant: t.tenant.clone(),
                })
                .set(clamp(t.calls_today));
        }
    }
}

/// The `reason` label of `lsq_tenant_share`, as the status JSON spells it.
fn share_reason_label(r: ShareReason) -> &'static str {
    match r {
        ShareReason::Shared => "shared",
        ShareReason::Reserve => "reserve",
        ShareReason::LearnedLimit => "learned_limit",
        ShareReason::Configured => "configured",
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{HeldCounts, TenantShare};

    fn share(name: &str, share: u32, reason: ShareReason) -> TenantShare {
        TenantShare {
            tenant: name.into(),
            limit: 25,
            configured_limit: 25,
            reserve: 0,
            share,
            share_calls: f64::from(share),
            other_use: (reason == ShareReason::Shared).then_some(10.0),
            share_reason: reason,
            calls_today: 3,
            cut_until_ms: None,
            quota_until_ms: None,
        }
    }

    #[test]
    fn shares_counts_and_holds_come_from_the_pulse_bounded() {
        let m = Metrics::new();
        let mut pulse = QueuePulse {
            share_cut: 1,
            quota_reached: 4,
            held: HeldCounts {
                keys_refused: 2,
                host_unreachable: 0,
                paused: 1,
            },
            shares: vec![
                share("crowded", 7, ShareReason::Shared),
                share("calm", 25, ShareReason::Configured),
            ],
            ..QueuePulse::default()
        };
        pulse.shares.extend(
            (0..MAX_TENANT_LABELS).map(|n| share(&format!("t{n:03}"), 25, ShareReason::Configured)),
        );
        let text = m.scrape(Some(&pulse));
        for line in [
            "lsq_tenant_share{tenant=\"crowded\",reason=\"shared\"} 7.0\n",
            "lsq_tenant_share{tenant=\"calm\",reason=\"configured\"} 25.0\n",
            "lsq_tenant_other_use_estimate{tenant=\"crowded\"} 10.0\n",
            "lsq_tenant_limit{tenant=\"crowded\"} 25\n",
            "lsq_tenant_calls_today{tenant=\"calm\"} 3\n",
            "lsq_tenants_share_cut 1\n",
            "lsq_tenants_quota_reached 4\n",
            "lsq_tenants_held{kind=\"keys_refused\"} 2\n",
            "lsq_tenants_held{kind=\"paused\"} 1\n",
            "lsq_tenants_held{kind=\"host_unreachable\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        let labelled = |family: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .count()
        };
        for family in [
            "lsq_tenant_limit",
            "lsq_tenant_share",
            "lsq_tenant_calls_today",
        ] {
            assert_eq!(labelled(family), MAX_TENANT_LABELS, "{family}");
        }
        // The next scrape shows the next pulse: labels that went are gone.
        pulse.shares.truncate(1);
        pulse.share_cut = 0;
        let text = m.scrape(Some(&pulse));
        assert!(!text.contains("tenant=\"calm\""), "{text}");
        assert!(text.contains("lsq_tenants_share_cut 0\n"), "{text}");
    }

    #[test]
    fn counts_outcomes_and_calls_by_outcome() {
        let m = Metrics::new();
        m.job_finished(JobOutcome::Done);
        m.job_finished(JobOutcome::Done);
        m.job_finished(JobOutcome::Dead);
        m.call_observed(Duration::from_millis(30), CallOutcome::Ok);
        m.call_observed(Duration::from_millis(40), CallOutcome::RateLimited);
        m.call_observed(Duration::from_millis(50), CallOutcome::Transient);
        let text = m.encode();
        assert!(
            text.contains("lsq_jobs_total{outcome=\"done\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_jobs_total{outcome=\"dead\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_jobs_total{outcome=\"retried\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_leadsquared_rate_limited_total 1\n"),
            "{text}"
        );
        for (outcome, n) in [
            ("ok", 1),
            ("rate_limited", 1),
            ("transient", 1),
            ("permanent", 0),
        ] {
            assert!(
                text.contains(&format!(
                    "lsq_leadsquared_call_duration_seconds_count{{outcome=\"{outcome}\"}} {n}\n"
                )),
                "{outcome}: {text}"
            );
        }
        assert_eq!(m.jobs(JobOutcome::Done), 2);
    }

    #[test]
    fn latency_done_total_and_bounded_throttled_labels() {
        let m = Metrics::new();
        let mut pulse = QueuePulse {
            queued: 7,
            done_total: 12,
            latency_ms: Some(90_500),
            tenant_latency_ms: (0..MAX_TENANT_LABELS + 5)
                .map(|n| (format!("t{n:03}"), 90_500 - n as u64))
                .collect(),
            throttled: MAX_TENANT_LABELS as u64 + 7,
            throttled_tenants: (0..MAX_TENANT_LABELS).map(|n| format!("t{n:03}")).collect(),
            ..QueuePulse::default()
        };
        let text = m.scrape(Some(&pulse));
        let labelled = |family: &str, text: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .count()
        };
        assert_eq!(
            labelled("lsq_tenant_is_throttled", &text),
            MAX_TENANT_LABELS + 1
        );
        assert!(
            text.contains("lsq_tenant_is_throttled{tenant=\"other\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("lsq_tenants_throttled 57\n"), "{text}");
        assert_eq!(
            labelled("lsq_tenant_latency_seconds", &text),
            MAX_TENANT_LABELS
        );
        assert!(text.contains("lsq_queue_latency_seconds 90.5\n"), "{text}");
        assert!(
            text.contains("lsq_tenant_latency_seconds{tenant=\"t001\"} 90.499\n"),
            "{text}"
        );
        assert!(
            text.contains("lsq_queue_jobs{state=\"queued\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("lsq_jobs_done_total 12\n"), "{text}");
        assert!(
            text.contains("# TYPE lsq_jobs_done_total counter\n"),
            "{text}"
        );
        assert!(text.contains("lsq_queue_status_up 1\n"), "{text}");

        // Later: fewer throttled, nothing waiting; the stale labels go, the counter stays
        // monotonic even if the queue's count went back (a flushed Redis).
        pulse.throttled = 1;
        pulse.throttled_tenants = vec!["t010".into()];
        pulse.tenant_latency_ms.clear();
        pulse.latency_ms = None;
        pulse.done_total = 3;
        let text = m.scrape(Some(&pulse));
        assert!(
            !text.contains("lsq_tenant_is_throttled{tenant=\"t011\""),
            "{text}"
        );
        assert!(
            text.contains("lsq_tenant_is_throttled{tenant=\"other\"} 0\n"),
            "{text}"
        );
        assert_eq!(labelled("lsq_tenant_latency_seconds", &text), 0);
        assert!(text.contains("lsq_queue_latency_seconds 0.0\n"), "{text}");
        assert!(text.contains("lsq_jobs_done_total 12\n"), "{text}");

        let text = m.scrape(None);
        assert!(text.contains("lsq_queue_status_up 0\n"), "{text}");
    }

    /// Issue 18: done jobs counted by what they did, every outcome present from the start.
    #[test]
    fn webhook_changes_are_counted_by_outcome() {
        let m = Metrics::new();
        m.webhook_changed(crate::job::Outcome::Updated);
        m.webhook_changed(crate::job::Outcome::Updated);
        m.webhook_changed(crate::job::Outcome::NotFound);
        let text = m.scrape(None);
        for line in [
            "lsq_webhook_changes_total{outcome=\"updated\"} 2\n",
            "lsq_webhook_changes_total{outcome=\"not_found\"} 1\n",
            "lsq_webhook_changes_total{outcome=\"created\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }
}
