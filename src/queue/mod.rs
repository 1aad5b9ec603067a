//! The queue that is the limiter.
//!
//! Jobs wait in one list per tenant. The tenants that have waiting jobs sit in one sorted set
//! scored by the time their next call is allowed; a dispatch takes the first tenant whose
//! time has come, pops its next job, spends one of the tenant's calls, leases the job to the
//! caller and re-scores the tenant. So no worker ever waits behind a busy tenant, and the
//! per-tenant cap (at most the tenant's share, never more than `limit − reserve`, calls in
//! ANY window of [`QueueConfig::window`]) is enforced where every worker process shares it.
//!
//! [`Queue`] is the contract; [`redis`] is the production backend (state in Redis, atomic
//! Lua scripts, shared by processes on many machines), [`embedded`] the in-process one.
//! [`QueueError`] says what failed and, by its variant, what to do: retry, wait for
//! memory, or stop.
//! tests/queue_conformance.rs runs every case of the contract on both; [`reason`] builds
//! every reason text either records; [`tenants`] the rows and state rules of the tenants view
//! both keep from per-tenant counters.
//!
//! Attempt accounting: a dispatch counts an attempt; an answer that must not cost one (a
//! rate limit, a hand-back before the call was sent) gives it back.
//!
//! Call accounting: the finishing methods re-stamp the job's call in its tenant's log at the
//! moment they run (see [`Queue::answered`]), so a worker needs one store call per job
//! after its LeadSquared call, not two; successes, the common case, share one call per batch
//! ([`Queue::complete_many`]).

pub mod embedded;
mod error;
pub mod hold;
pub mod reason;
pub mod redis;
pub mod revision;
pub mod sharded;
pub mod share;
pub mod tenants;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::job::{JobId, JobResult, NewJob};
use crate::tenant::Tenant;
pub use error::{QueueError, StoreMemory};
pub use share::{ShareMode, ShareReason};
pub use tenants::{TenantPage, TenantQuery, TenantRow, TenantSort, TenantState};

/// Settings every backend honours.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Key prefix / queue name (`--queue`, `LSQ_QUEUE`): two queues never share state.
    pub name: String,
    /// The rate-limit window: LeadSquared counts calls per 5 seconds.
    pub window: Duration,
    /// Extra spacing added to the window for network jitter. Zero is safe because each call
    /// is re-stamped at the moment its answer arrived (by the finishing methods, or
    /// [`Queue::answered`]).
    pub margin: Duration,
    /// How long a dispatched job stays leased without a heartbeat before any worker may
    /// take it back (counted as an attempt whose outcome is unknown).
    pub lease: Duration,
    /// Attempts after which a job that keeps failing transiently is dead.
    pub max_attempts: u32,
    /// The length of the day a tenant's `daily_limit` counts calls over, days starting at
    /// the Unix epoch: 24 hours is the UTC day. Tests shorten it.
    pub day: Duration,
    /// Whether each tenant's share adapts to the account's other clients ([`share`]), or
    /// is always `limit − reserve`.
    pub share: ShareMode,
    /// Whether a tenant whose host has not answered yet (since it was imported with new keys
    /// or a new host, discovered, or released) may have only one call in flight until its
    /// host answers, instead of its cap. A host that never answers then takes one worker
    /// slot until its calls time out, not a window's worth. Off by default here; the
    /// `worker` command turns it on (see docs/decisions.md, "Calls in flight").
    pub slow_start: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            name: "lsq".into(),
            window: Duration::from_secs(5),
            margin: Duration::ZERO,
            lease: Duration::from_secs(5),
            max_attempts: 8,
            day: Duration::from_secs(86_400),
            share: ShareMode::Adaptive,
            slow_start: false,
        }
    }
}

/// A job handed to a worker by [`Queue::dispatch`]. One of the tenant's calls has been spent
/// for it, and it is leased to the caller until it is finished or the lease runs out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeasedJob {
    /// Job id.
    pub id: JobId,
    /// Tenant name.
    pub tenant: String,
    /// Idempotency key.
    pub key: String,
    /// The Create body as stored (JSON text). Decoding it is the worker's job: a body a buggy
    /// producer wrote may not decode, and that job is buried, not the worker.
    pub body: String,
    /// Attempts spent including this one.
    pub attempt: u32,
    /// An earlier attempt may have reached LeadSquared (timeout after sending, reset, 5xx,
    /// lease lost mid-call): look for the webhook with Retrieve before creating it again.
    pub outcome_unknown: bool,
    /// Proves ownership of the lease; a finished job whose lease was lost is refused.
    pub lease: String,
    /// Redis-clock time of the dispatch, milliseconds since the Unix epoch.
    pub dispatched_at_ms: u64,
    /// Set when the dispatch put up the fence for this job's Create (see [`Fence`]): until
    /// this moment of the holder's own clock it may send Create without calling
    /// [`Queue::sending`] first; after it, or when `None`, it must call `sending`.
    pub fenced_until: Option<Instant>,
}

/// The fence a dispatch puts up for the Creates it hands out, so that a worker that sends
/// its Create promptly needs no [`Queue::sending`] round trip first.
///
/// A job handed out to be created (not one whose outcome is unknown: that one only
/// reconciles) records that its Create may land until `dispatch time + slack + in_flight`,
/// as `sending` would. The caller takes its clock reading *before* it sends the dispatch
/// request, so the dispatch time (on the store's clock) is no earlier than that reading;
/// a Create sent no later than `slack` after the reading is sent no later than `dispatch
/// time + slack`, and can land no later than the recorded moment. The job's
/// [`LeasedJob::fenced_until`] is that reading plus `slack`. `slack` must be shorter than
/// the lease, so the lease still holds when the Create goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    /// How long after its dispatch request was sent a job's Create may go out under this
    /// fence.
    pub slack: Duration,
    /// How long a Create may go on landing after it was sent: the client's total timeout
    /// plus the reconcile settle time (as for [`Queue::sending`]).
    pub in_flight: Duration,
}

/// One success of a batch for [`Queue::complete_many`].
#[derive(Clone, Copy, Debug)]
pub struct Completion<'a> {
    /// The job, as dispatched.
    pub job: &'a LeasedJob,
    /// The webhook's Id.
    pub webhook_id: &'a str,
    /// Found with Retrieve instead of created.
    pub reconciled: bool,
    /// What the job did (issue 18): created, updated, deleted, ...
    pub outcome: crate::job::Outcome,
    /// The call's history entry, added in the same step.
    pub attempt: Option<&'a crate::job::Attempt>,
    /// How long before the batch went out the call's answer arrived (the worker's clock):
    /// the call is re-stamped that much before the store's now, which is still no earlier
    /// than the answer.
    pub answered_ago: Duration,
}

/// What [`Queue::dispatch`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dispatch {
    /// A job to run now.
    Job(LeasedJob),
    /// Nothing to hand out now, but something may be in this long with no wake-up: the
    /// earliest of a waiting tenant's next allowed call, a retry coming due and a running
    /// job's lease expiring (its job comes back then, and only a dispatch takes it back).
    Wait(Duration),
    /// Nothing is queued, scheduled or running, but for jobs of tenants held until
    /// released: work can only come through a write that wakes the waiting workers
    /// ([`Queue::wait_for_work`]).
    Empty,
}

/// What [`Queue::dispatch_many`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dispatched {
    /// Jobs to run now: at least one, at most the number asked for.
    Jobs(Vec<LeasedJob>),
    /// As [`Dispatch::Wait`].
    Wait(Duration),
    /// As [`Dispatch::Empty`].
    Empty,
}

/// How a job goes back to the front of its tenant's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requeue {
    /// Keep the attempt this dispatch counted (the call was made and failed in a way worth
    /// counting); otherwise it is given back.
    pub spend_attempt: bool,
    /// Whether the next dispatch must reconcile before creating (see
    /// [`LeasedJob::outcome_unknown`]).
    pub outcome_unknown: bool,
}

/// What a push did with each job, in input order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Pushed {
    /// Newly enqueued under this id (a create, or an update or delete of the webhook its
    /// key names: see [`revision`]).
    Enqueued {
        /// The new job's id.
        job: JobId,
    },
    /// A job with the same idempotency key exists already, and this one changes nothing
    /// (see [`revision`]).
    Duplicate {
        /// The existing job's id.
        job: JobId,
    },
}

/// Why a tenant is held: no call is made for it until the hold ends or is released (see
/// [`Queue::hold`]). Its jobs stay queued and no attempt is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// LeadSquared refused the tenant's keys (401 on `UserByAccessKey.Get`): until new keys
    /// are imported or `tenants resume`.
    KeysRefused,
    /// The tenant's host did not answer several times in a row: for a growing, jittered
    /// time, or until `tenants resume`.
    HostUnreachable,
    /// An operator paused it (`tenants pause`): until `tenants resume`.
    Paused,
}

impl HoldKind {
    /// The name stored and shown (`keys_refused`, `host_unreachable`, `paused`).
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::KeysRefused => "keys_refused",
            HoldKind::HostUnreachable => "host_unreachable",
            HoldKind::Paused => "paused",
        }
    }
}

/// A hold to put on a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewHold {
    /// Why.
    pub kind: HoldKind,
    /// The reason shown (never a key).
    pub reason: String,
    /// How long; `None`: until released. A timed hold never replaces one without an end.
    pub length: Option<Duration>,
    /// Who asked (an operator's name for `tenants pause`).
    pub by: Option<String>,
}

/// A tenant's hold as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantHold {
    /// Why.
    pub kind: HoldKind,
    /// The reason shown.
    pub reason: String,
    /// When it began, ms since the epoch (store clock).
    pub since_ms: u64,
    /// When it ends, ms since the epoch; `None`: until released.
    #[serde(default)]
    pub until_ms: Option<u64>,
    /// For `host_unreachable`: the failures in a row it stands for.
    #[serde(default)]
    pub failures: u32,
    /// For `host_unreachable`: which hold of this run of failures it is (the n-th lasts
    /// `base` × 2^(n−1)); 0 for other kinds.
    #[serde(default)]
    pub holds: u32,
    /// Who asked, when someone did.
    #[serde(default)]
    pub by: Option<String>,
}

/// How [`Queue::host_failed`] turns a streak of unreachable-host failures into holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnreachablePolicy {
    /// Failures in a row before the first hold (at least 1).
    pub after: u32,
    /// The first hold; each further hold of the same run of failures doubles it.
    pub base: Duration,
    /// The longest hold.
    pub max: Duration,
    /// The hold is multiplied by this (0.5 to 1.0): callers pass a random one, so that the
    /// tenants of one dead host do not all come back at once.
    pub jitter: f64,
}

impl Default for UnreachablePolicy {
    fn default() -> Self {
        UnreachablePolicy {
            after: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(300),
            jitter: 1.0,
        }
    }
}

/// What [`Queue::host_failed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostFailed {
    /// The tenant's unreachable-host failures in a row, this one included.
    pub failures: u32,
    /// The hold it started, if it started one.
    pub held_for: Option<Duration>,
}

/// Per-tenant view for `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantStatus {
    /// Tenant name.
    pub tenant: String,
    /// Jobs waiting in its list.
    pub waiting: u64,
    /// Calls allowed per window (may have been lowered by LeadSquared's answer).
    pub limit: u32,
    /// The limit the tenants file gave.
    #[serde(default)]
    pub configured_limit: u32,
    /// Calls per window left to the tenant's other integrations.
    #[serde(default)]
    pub reserve: u32,
    /// Our current share: the most calls per window the queue makes now (at most
    /// `limit − reserve`, at least 1; see [`share`]).
    #[serde(default)]
    pub share: u32,
    /// Our current share as the controller holds it, calls per window (to a hundredth):
    /// under the limit, the tenant's calls are spread over the window at this rate.
    #[serde(default)]
    pub share_calls: f64,
    /// While the share is cut: the other clients' load, calls per window, that it leaves
    /// whole (estimated from the share, see [`share::other_use`]).
    #[serde(default)]
    pub other_use: Option<f64>,
    /// Why the share is what it is.
    #[serde(default)]
    pub share_reason: ShareReason,
    /// Calls allowed per day: the tenants file's, or the lower one LeadSquared named
    /// ([`Queue::learn_daily_limit`]).
    #[serde(default)]
    pub daily_limit: Option<u32>,
    /// `daily_limit` is the one LeadSquared named.
    #[serde(default)]
    pub daily_limit_learned: bool,
    /// Calls dispatched for it in the current day ([`QueueConfig::day`]).
    #[serde(default)]
    pub calls_today: u64,
    /// When it has made `daily_limit` calls today: when the day resets and it resumes, ms
    /// since the epoch.
    #[serde(default)]
    pub quota_until_ms: Option<u64>,
    /// Calls spent in the current window.
    pub calls_in_window: u32,
    /// When a pause (LeadSquared said "rate limited") ends, ms since the epoch.
    pub paused_until_ms: Option<u64>,
    /// Why it is paused.
    pub pause_reason: Option<String>,
    /// Its hold, while one is in force (see [`Queue::hold`]).
    #[serde(default)]
    pub hold: Option<TenantHold>,
    /// Its API base, once known; `None` while it is being discovered.
    #[serde(default)]
    pub host: Option<String>,
}

/// The whole queue's pause (`lsq-webhooks pause`, [`Queue::pause_queue`]): while it lasts no
/// job is dispatched; jobs already leased finish, the others stay queued.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePause {
    /// Why (never a key).
    pub reason: String,
    /// Who paused it, when someone was named.
    #[serde(default)]
    pub by: Option<String>,
    /// When, ms since the epoch (store clock).
    pub since_ms: u64,
}

/// Totals for `status`, `/v1/status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueStatus {
    /// Queue name.
    pub queue: String,
    /// Backend clock when read, ms since the epoch.
    pub now_ms: u64,
    /// Waiting in tenant lists.
    pub queued: u64,
    /// Waiting for a retry time.
    pub scheduled: u64,
    /// Leased to workers.
    pub running: u64,
    /// Finished with an Id.
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Age of the oldest running lease's dispatch, ms.
    pub oldest_running_ms: Option<u64>,
    /// Per tenant, every tenant with waiting jobs or calls in the window or a pause.
    pub tenants: Vec<TenantStatus>,
    /// The whole queue's pause, while one is in force.
    #[serde(default)]
    pub paused: Option<QueuePause>,
    /// Jobs ever done on this queue by what they did (issue 18), every outcome named
    /// (`created`, `updated`, ...; [`crate::job::Outcome`]); purging records does not
    /// lower them. Jobs done before outcomes were counted are in none.
    #[serde(default)]
    pub outcomes: std::collections::BTreeMap<String, u64>,
}

/// What acknowledged writes do when the primary has fewer replicas connected than asked
/// (`--replication`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Wait for as many replicas as asked, but never for more than the primary reports
    /// connected (`INFO replication`, `connected_slaves`); with fewer, the queue goes on
    /// *degraded*, and says so.
    #[default]
    #[serde(alias = "default")]
    Degrade,
    /// Wait for as many as asked, always: with fewer connected, no write is acknowledged,
    /// so nothing is pushed or dispatched, until enough are back.
    Strict,
}

/// The replicas behind a queue's acknowledged writes (`Queue::replicas`): shown by
/// `status`, `/readyz`, the page and the metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// `--replication`.
    pub mode: ReplicationMode,
    /// Replicas asked for (`--min-replicas`).
    pub min_replicas: u32,
    /// Replicas the primary reports connected.
    pub connected: u32,
    /// Since when fewer are connected than asked, ms since the epoch (`None`: enough are).
    pub degraded_since_ms: Option<u64>,
}

impl ReplicaState {
    /// Fewer replicas connected than asked.
    pub fn degraded(&self) -> bool {
        self.connected < self.min_replicas
    }

    /// One line for people: healthy, degraded (what is at risk), or strict and waiting.
    pub fn describe(&self) -> String {
        let (n, min) = (self.connected, self.min_replicas);
        if !self.degraded() {
            return format!("healthy: {n} of {min} replica(s) connected; writes wait for {min}");
        }
        let since = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(self.degraded_since_ms.unwrap_or(0));
        match self.mode {
            ReplicationMode::Degrade => format!(
                "degraded: {n} of {min} replica(s) connected; {}",
                at_risk(since)
            ),
            ReplicationMode::Strict => format!(
                "waiting (--replication strict): {n} of {min} replica(s) connected, so no \
                 write is acknowledged and nothing is dispatched until {min} are"
            ),
        }
    }
}

/// What a degraded queue puts at risk, said the same way everywhere (log, status,
/// `/readyz`, the page).
pub fn at_risk(since: std::time::SystemTime) -> String {
    let at = httpdate::fmt_http_date(since);
    format!("writes since {at} are on one node only; a second failure loses them")
}

/// What a Prometheus scrape reads (issue 15), at a cost that does not grow with the number
/// of tenants: counts, the jobs ever done, the queue's latency, the throttled tenants, the
/// tenants whose share is cut, whose daily quota is spent or that are held, and a few
/// tenants' shares, each list bounded by the `top` asked for. [`Queue::status`] is the full
/// per-tenant view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueuePulse {
    /// Backend clock when read, ms since the epoch.
    pub now_ms: u64,
    /// Waiting in tenant lists.
    pub queued: u64,
    /// Waiting for a retry time.
    pub scheduled: u64,
    /// Leased to workers.
    pub running: u64,
    /// Finished with an Id (records not purged).
    pub done: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Jobs ever finished done on this queue: purging done records does not lower it.
    pub done_total: u64,
    /// Age of the oldest running lease's dispatch, ms.
    pub oldest_running_ms: Option<u64>,
    /// The queue's latency: the age, from its push (the time in its UUIDv7 id), of the
    /// oldest job next in line in any tenant's list, ms; `None` when nothing waits.
    pub latency_ms: Option<u64>,
    /// Per tenant, the age of the job next in its list, ms: the `top` oldest, oldest first.
    pub tenant_latency_ms: Vec<(String, u64)>,
    /// Tenants with waiting jobs that may not call now (at their limit, paused or parked).
    pub throttled: u64,
    /// Up to `top` of them, by name.
    pub throttled_tenants: Vec<String>,
    /// Whether the whole queue is paused ([`Queue::pause_queue`]).
    #[serde(default)]
    pub paused: bool,
    /// Tenants whose adaptive share is cut below their cap now ([`share`]), all of them
    /// (none with [`ShareMode::Fixed`]).
    #[serde(default)]
    pub share_cut: u64,
    /// Tenants whose daily quota is spent today (parked until the day resets), all of them,
    /// held or not.
    #[serde(default)]
    pub quota_reached: u64,
    /// Tenants held now, by kind ([`Queue::hold`]), all of them.
    #[serde(default)]
    pub held: HeldCounts,
    /// The shares of up to `top` tenants: those whose share is cut, the longest to climb
    /// back first (then by name), then those whose daily quota is spent, by name, then
    /// those of [`QueuePulse::tenant_latency_ms`] in its order; each tenant once. Each says
    /// why it is listed ([`TenantShare::cut_until_ms`], [`TenantShare::quota_until_ms`]), so
    /// that the lists of several queues can be merged in the same order.
    #[serde(default)]
    pub shares: Vec<TenantShare>,
}

/// Held tenants by kind, for [`QueuePulse::held`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCounts {
    /// [`HoldKind::KeysRefused`].
    pub keys_refused: u64,
    /// [`HoldKind::HostUnreachable`].
    pub host_unreachable: u64,
    /// [`HoldKind::Paused`].
    pub paused: u64,
}

impl HeldCounts {
    /// The count of one kind.
    pub fn of(&self, kind: HoldKind) -> u64 {
        match kind {
            HoldKind::KeysRefused => self.keys_refused,
            HoldKind::HostUnreachable => self.host_unreachable,
            HoldKind::Paused => self.paused,
        }
    }
}

/// One tenant's share as [`Queue::status`] shows it, for [`QueuePulse::shares`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantShare {
    /// Tenant name.
    pub tenant: String,
    /// Calls allowed per window (configured, or lower when LeadSquared named a lower one).
    pub limit: u32,
    /// The limit the tenants file gave.
    pub configured_limit: u32,
    /// Calls per window left to the tenant's other integrations.
    pub reserve: u32,
    /// Our current share of the limit: the most calls in any window now.
    pub share: u32,
    /// Our current share as the controller holds it, calls per window (to a hundredth).
    #[serde(default)]
    pub share_calls: f64,
    /// While the share is cut: the other clients' load, calls per window, that it leaves
    /// whole (estimated from the share, see [`share::other_use`]).
    #[serde(default)]
    pub other_use: Option<f64>,
    /// Why the share is what it is.
    pub share_reason: ShareReason,
    /// Calls dispatched for it today.
    pub calls_today: u64,
    /// While its share is cut: when it is back at its cap, ms since the epoch (the order of
    /// the cut ones in [`QueuePulse::shares`], latest first).
    #[serde(default)]
    pub cut_until_ms: Option<u64>,
    /// While its daily quota is spent: when the day resets and it resumes, ms since the
    /// epoch.
    #[serde(default)]
    pub quota_until_ms: Option<u64>,
}

/// Which jobs a [`Queue::jobs_page`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageOf {
    /// Done jobs, the last finished first.
    Done,
    /// Dead jobs, the last to die first.
    Dead,
    /// Jobs not finished: queued, scheduled or running (in no particular order).
    Waiting,
}

/// One page of jobs and the cursor of the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs of this page.
    pub jobs: Vec<JobResult>,
    /// Pass it to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// The queue contract. Each call is atomic with respect to every other worker, in this
/// process or another.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// The configuration it runs with.
    fn config(&self) -> &QueueConfig;

    /// Adds or updates tenants (all at once). A lowered learned limit is kept if it is
    /// lower than the new one.
    async fn put_tenants(&self, tenants: &[Tenant]) -> Result<(), QueueError>;

    /// One tenant, with its keys.
    async fn tenant(&self, name: &str) -> Result<Option<Tenant>, QueueError>;

    /// Names of all registered tenants.
    async fn tenant_names(&self) -> Result<Vec<String>, QueueError>;

    /// Enqueues many jobs; each is enqueued or recognised as a duplicate of an earlier job
    /// with the same key. Unknown tenants fail the whole push before anything is written.
    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, QueueError>;

    /// Takes up to `max` jobs (at least one) whose tenants may call now, spending a call for
    /// each, in one atomic step: the same jobs, in the same order, as that many
    /// [`Queue::dispatch`] calls in a row would hand out. Also promotes due retries and
    /// takes back jobs whose leases expired (once per call). With `fence`, the jobs to be
    /// created are fenced (see [`Fence`]). A caller asks for no more jobs than it can start
    /// at once: a job's lease runs while it waits.
    async fn dispatch_many(
        &self,
        max: usize,
        fence: Option<Fence>,
    ) -> Result<Dispatched, QueueError>;

    /// Takes the next job whose tenant may call now, spending the call. Also promotes due
    /// retries and takes back jobs whose leases expired.
    async fn dispatch(&self) -> Result<Dispatch, QueueError> {
        Ok(match self.dispatch_many(1, None).await? {
            Dispatched::Jobs(jobs) => match jobs.into_iter().next() {
                Some(job) => Dispatch::Job(job),
                // Not returned by a correct backend; "look again" is the safe reading.
                None => Dispatch::Wait(Duration::ZERO),
            },
            Dispatched::Wait(d) => Dispatch::Wait(d),
            Dispatched::Empty => Dispatch::Empty,
        })
    }

    /// Returns when work may be available: a push, a retry or resume coming due, a job
    /// handed back; or after `max`. Spurious returns are allowed.
    async fn wait_for_work(&self, max: Duration);

    /// Extends the job's lease. `Ok(false)` if the lease was lost.
    async fn heartbeat(&self, job: &LeasedJob) -> Result<bool, QueueError>;

    /// The fence before a Create is sent: extends the lease like [`Queue::heartbeat`] and
    /// records that the call may still land at LeadSquared for `in_flight` from now (the
    /// client's total timeout plus a settle time). If the lease then expires (the worker died
    /// or hung) or the job is handed back mid-call, it is not offered again before that
    /// moment, so the reconcile that follows cannot miss a webhook the call is still
    /// creating. It also re-stamps the job's call at now, as [`Queue::answered`] does: a
    /// Create that goes out long after its dispatch counts in the tenant's window from when
    /// it goes out. `Ok(false)` if the lease was lost: the call must not be sent.
    async fn sending(&self, job: &LeasedJob, in_flight: Duration) -> Result<bool, QueueError>;

    /// Re-stamps the job's call at now, when LeadSquared's answer has arrived, so the
    /// window is measured from the latest moment LeadSquared can have seen the call. Needs
    /// no lease. Every finishing method below ([`Queue::complete`], [`Queue::retry_later`],
    /// [`Queue::rate_limited`], [`Queue::requeue`], [`Queue::bury`]) does this itself in the
    /// same atomic step, lease or not; call this only for a call that ends without one (the
    /// lease was lost mid-call).
    async fn answered(&self, job: &LeasedJob) -> Result<(), QueueError>;

    /// Records success: the webhook Id, atomically with completion, as a create.
    async fn complete(
        &self,
        job: &LeasedJob,
        webhook_id: &str,
        reconciled: bool,
    ) -> Result<(), QueueError> {
        self.complete_as(job, webhook_id, reconciled, crate::job::Outcome::Created)
            .await
    }

    /// Records success with what the job did (issue 18), the webhook Id and the digest of
    /// the body it now has ([`revision::done_digest`] of the job's body), atomically with
    /// completion; a job pushed later under the same key is compared with that digest.
    async fn complete_as(
        &self,
        job: &LeasedJob,
        webhook_id: &str,
        reconciled: bool,
        outcome: crate::job::Outcome,
    ) -> Result<(), QueueError> {
        let one = Completion {
            job,
            webhook_id,
            reconciled,
            outcome,
            attempt: None,
            answered_ago: Duration::ZERO,
        };
        match self.complete_many(&[one]).await?[..] {
            [true] => Ok(()),
            _ => Err(QueueError::LeaseLost(job.id.clone())),
        }
    }

    /// Records many successes in one step, each as [`Queue::complete_as`] does, with its call's
    /// history entry ([`Queue::note_attempt`]) when given: a worker process sends its
    /// completions in batches (`worker::completions`), so the store does the fixed part of
    /// the work once per batch rather than twice per job. Each call is re-stamped at the
    /// store's now less its [`Completion::answered_ago`], never earlier than before. One
    /// answer per completion, in order: `true` when recorded (or recorded before with the
    /// same Id: a repeated batch is recognised), `false` when the lease was lost (nothing
    /// recorded). The history entry is kept either way while the job has a record, as
    /// [`Queue::note_attempt`] keeps it. On an error, repeating the whole batch is safe (a
    /// repeat may add a history entry twice).
    async fn complete_many(&self, done: &[Completion<'_>]) -> Result<Vec<bool>, QueueError>;

    /// Schedules a retry after `delay` (the attempt stays spent), or buries the job if it
    /// has no attempts left.
    async fn retry_later(
        &self,
        job: &LeasedJob,
        delay: Duration,
        error: &str,
        outcome_unknown: bool,
    ) -> Result<(), QueueError>;

    /// LeadSquared said "rate limited": pause the tenant for `pause`, put the job back at
    /// the front of its list without spending the attempt, and lower the tenant's limit to
    /// `limit` if it names a smaller one. With [`ShareMode::Adaptive`], in the same step,
    /// count our calls in the tenant's window: fewer than its limit and the share is cut
    /// (at most once per window), and either way the climb back restarts (see [`share`]).
    async fn rate_limited(
        &self,
        job: &LeasedJob,
        pause: Duration,
        limit: Option<u32>,
    ) -> Result<(), QueueError>;

    /// LeadSquared named a daily quota in a rate-limit answer ("API calls exceeded the limit
    /// of N in 86400 second(s)"): records `calls` as the tenant's learned daily limit. When it
    /// is lower than its daily limit in force, or it has none, it becomes the one the
    /// dispatch counts against, so the tenant is parked once today's calls reach it rather
    /// than when LeadSquared refuses. A later [`Queue::put_tenants`] keeps it when it is
    /// lower than the imported one, as for the learned per-window limit.
    async fn learn_daily_limit(&self, tenant: &str, calls: u32) -> Result<(), QueueError>;

    /// Puts the job back at the front of its tenant's list (shutdown, or after a reconcile
    /// found nothing). A job handed back with its outcome unknown while a Create it sent may
    /// still land (see [`Queue::sending`]) waits in the schedule until then instead.
    async fn requeue(&self, job: &LeasedJob, how: Requeue) -> Result<(), QueueError>;

    /// Dead-letters the job with a reason.
    async fn bury(&self, job: &LeasedJob, reason: &str) -> Result<(), QueueError>;

    /// Records the API base discovered for a tenant with `UserByAccessKey.Get`, or, with
    /// `None`, forgets the tenant's host (a 401 whose rediscovery could not complete: until
    /// discovery answers, the host is not known, and the tenant's next dispatch asks
    /// discovery instead of calling Create), unless its access key is no longer `access_key`
    /// (an import changed it meanwhile). A host it did not have starts slow (one call in
    /// flight until it answers). `Ok(false)`: not recorded (unknown tenant, or changed keys).
    async fn set_tenant_host(
        &self,
        tenant: &str,
        api_base: Option<&url::Url>,
        access_key: &str,
    ) -> Result<bool, QueueError>;

    /// The job's call was never sent (it waited on another job's host discovery, and was
    /// handed back): takes it out of the tenant's call log, so it does not count against the
    /// window. Needs no lease; call it only when no request went out for this dispatch.
    async fn unsent(&self, job: &LeasedJob) -> Result<(), QueueError>;

    /// Spends one call in the tenant's window now, for a call no dispatch made (host
    /// discovery on import, or after a 401), if its cap, pause, hold and daily quota allow
    /// one now; `call` is the call's id in the tenant's log (re-stamp it with
    /// [`Queue::answered`] once answered). `Ok(None)`: spent; `Ok(Some(wait))`: not spent,
    /// ask again after `wait`.
    async fn take_call(&self, tenant: &str, call: &str) -> Result<Option<Duration>, QueueError>;

    /// Holds a tenant: no job of it is dispatched until the hold ends or [`Queue::release`]
    /// ends it. Its jobs stay queued, no attempt is spent, other tenants are not slowed (a
    /// held tenant waits in the ready set scored at the hold's end). A timed hold does not
    /// replace one without an end. `Ok(false)`: unknown tenant.
    async fn hold(&self, tenant: &str, hold: NewHold) -> Result<bool, QueueError>;

    /// Ends a tenant's hold (and a rate-limit pause, and its unreachable streak); its jobs
    /// are dispatched again and workers wake. The hold that was released, if any.
    async fn release(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError>;

    /// A tenant's hold in force, if any (an ended timed hold is none).
    async fn tenant_hold(&self, tenant: &str) -> Result<Option<TenantHold>, QueueError>;

    /// The tenant's host did not answer (refused, DNS, TLS, a timeout): counts the failure
    /// in the tenant's streak (every [`Queue::complete`] and [`Queue::host_answered`] ends
    /// it) and, from `policy.after` in a row, holds the tenant `host_unreachable`: for
    /// `policy.base` the first time, doubling with each further hold of the same streak, at
    /// most `policy.max`, times `policy.jitter`. A failure while such a hold is in force
    /// changes nothing but the count: it is a call sent before the hold, and a pool's calls
    /// in flight all fail together, which is one event, not many. The job is NOT touched:
    /// hand it back with [`Queue::requeue`] without spending its attempt.
    async fn host_failed(
        &self,
        tenant: &str,
        policy: UnreachablePolicy,
        reason: &str,
    ) -> Result<HostFailed, QueueError>;

    /// The tenant's host answered a call (any HTTP answer, even an error): its streak of
    /// [`Queue::host_failed`] starts over, as a completion starts it over. A hold already in
    /// force stays until its end.
    async fn host_answered(&self, tenant: &str) -> Result<(), QueueError>;

    /// Counts, and the per-tenant view.
    async fn status(&self) -> Result<QueueStatus, QueueError>;

    /// One job by id.
    async fn job(&self, id: &JobId) -> Result<Option<JobResult>, QueueError>;

    /// Finished jobs (done and dead), optionally of one tenant, in finishing order.
    async fn results(&self, tenant: Option<&str>) -> Result<Vec<JobResult>, QueueError>;

    /// Dead jobs.
    async fn dead(&self) -> Result<Vec<JobResult>, QueueError>;

    /// Puts dead jobs (all, or these) back in their tenants' lists with fresh attempts.
    async fn retry_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError>;

    /// Deletes dead jobs (all, or these).
    async fn purge_dead(&self, ids: Option<&[JobId]>) -> Result<u64, QueueError>;

    /// Deletes the records of these jobs where they are done (others are left alone) and
    /// returns how many went: for `results --purge-done`, once their rows are written out.
    /// Their idempotency keys stay taken: the same job pushed again is a duplicate of the
    /// purged id, and is never created twice.
    async fn purge_done(&self, ids: &[JobId]) -> Result<u64, QueueError>;

    /// Retention: deletes the records of at most `max` jobs that finished done more than
    /// `age` ago, oldest first, as [`Queue::purge_done`] does (their idempotency keys stay
    /// taken). Returns how many were deleted.
    async fn purge_done_before(&self, age: Duration, max: usize) -> Result<u64, QueueError>;

    /// Jobs that finished done in each of the last `seconds` whole seconds of the backend
    /// clock, oldest first, the current (partial) second last: the throughput `status`
    /// shows and the page charts.
    async fn done_per_second(&self, seconds: u32) -> Result<Vec<u64>, QueueError>;

    /// Adds a call to the job's history, which keeps the last [`crate::job::HISTORY_LEN`].
    /// A job without a record (purged) keeps nothing.
    async fn note_attempt(
        &self,
        id: &JobId,
        attempt: &crate::job::Attempt,
    ) -> Result<(), QueueError>;

    /// A page of jobs of a kind, from `cursor` (`None`: the first page), without reading
    /// the whole set. Done and dead jobs: at most `limit`, newest first, each once (a job
    /// finished while paging shows on no later page). Waiting jobs: about `limit` (Redis
    /// scans its hash of bodies, and returns a small one whole), in the store's order, each
    /// waiting throughout at least once. A cursor that does not parse is
    /// [`QueueError::Config`].
    async fn jobs_page(
        &self,
        of: PageOf,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError>;

    /// The job pushed for `tenant` with idempotency key `key`, if any.
    async fn find_job(&self, tenant: &str, key: &str) -> Result<Option<JobId>, QueueError>;

    /// The job's record and history, or `None` for an unknown job.
    async fn job_view(&self, id: &JobId) -> Result<Option<crate::job::JobView>, QueueError> {
        let Some(job) = self.job(id).await? else {
            return Ok(None);
        };
        let history = self.attempts(id).await?;
        Ok(Some(crate::job::JobView { job, history }))
    }

    /// The job's history, oldest first (empty for an unknown job).
    async fn attempts(&self, id: &JobId) -> Result<Vec<crate::job::Attempt>, QueueError>;

    /// Counts, latency, throttled, cut, parked and held tenants and a few tenants' shares
    /// for a metrics scrape, without reading every tenant (see [`QueuePulse`]); lists
    /// bounded by `top`.
    async fn pulse(&self, top: usize) -> Result<QueuePulse, QueueError>;

    /// One page of the tenants view (see [`tenants`]): each tenant's jobs waiting, in
    /// flight, done and dead, its calls against its share, and its state, from counters the
    /// queue keeps, in the order and with the filter asked for, examining at most
    /// [`tenants::PAGE_BUDGET`] tenants. A cursor that does not parse is
    /// [`QueueError::Config`].
    async fn tenants_page(&self, query: &TenantQuery) -> Result<TenantPage, QueueError>;

    /// Pauses the whole queue: no job is dispatched until [`Queue::resume_queue`]; leased
    /// jobs finish, the others stay queued and spend no attempt. Pausing a paused queue
    /// replaces its reason and who. Returns the pause recorded.
    async fn pause_queue(&self, reason: &str, by: Option<&str>) -> Result<QueuePause, QueueError>;

    /// Ends the queue's pause and wakes the workers; the pause that ended, if any.
    async fn resume_queue(&self) -> Result<Option<QueuePause>, QueueError>;

    /// The queue's pause, while one is in force.
    async fn queue_pause(&self) -> Result<Option<QueuePause>, QueueError>;

    /// The replicas behind acknowledged writes, read from the primary now; `None` where
    /// writes wait for no replica (one server without `--min-replicas`, the embedded queue).
    async fn replicas(&self) -> Result<Option<ReplicaState>, QueueError> {
        Ok(None)
    }

    /// Whether the store answers (`/readyz`). The default reads [`Queue::status`]; a
    /// backend with a cheaper round trip (Redis `PING`) should use it.
    async fn ping(&self) -> Result<(), QueueError> {
        self.status().await.map(|_| ())
    }

    /// Nothing queued, scheduled or running, but for the jobs of tenants held until
    /// released (they wait for an operator or new keys, not for a worker); while the whole
    /// queue is paused, nothing running.
    async fn is_idle(&self) -> Result<bool, QueueError> {
        let s = self.status().await?;
        Ok(s.running == 0 && (s.paused.is_some() || (s.queued == 0 && s.scheduled == 0)))
    }
}
