//! A LeadSquared API simulator for tests, demos and benchmarks.
//!
//! It serves Create and Retrieve under `/v2/Webhook.svc/` with both of LeadSquared's
//! authentication styles, answers bad bodies with LeadSquared's error shapes (400 for a
//! body not per spec, 500 with an `MX...Exception` for inputs it refuses: the same
//! validation as [`crate::leadsquared::CreateWebhook::check`]), and enforces a strict
//! per-account limit: at most N calls in ANY window (5 s), where every call that arrives
//! counts, refused ones included (see `docs/decisions.md`). Faults can be injected
//! reproducibly from a seed: 500s, latency, connection resets, and "created, then answered
//! 500". An account can have another client (the tenant's own integrations) that spends the
//! same window with N calls per window at random (Poisson) times, and a daily quota that
//! every client's calls spend, answered once spent with the rate-limit error naming the day
//! ("API calls exceeded the limit of N in 86400 second(s)"). `GET /_sim/stats` reports per
//! account our calls, rate-limit and quota answers, the other client's calls and refusals
//! (and how many of them our calls caused), the most calls in any window (exact, from
//! arrival times) and every webhook created, so tests can count duplicates;
//! `PUT /_sim/accounts/{account}/limit`, `.../other-client` and `.../daily-limit` change an
//! account at runtime.
//!
//! Regions: [`serve_region`] serves more regions on more listeners with one state. Each
//! account lives in one ([`SimConfig::account_regions`]); any API call on another region's
//! host answers 401, except `GET /v2/Authentication.svc/UserByAccessKey.Get`, which answers
//! on every host with the account's user record in LeadSquared's shape (`Id`, `Name`,
//! `TimeZone`, `OrgShortCode`, `LSQCommonServiceURLs {api, app, tracking}`; the `api` is the
//! account's region's base URL, `http://ADDR`, as plain http needs the scheme). Discovery
//! calls count against the account's window like any call.
//!
//! - [`state`]: accounts, sliding windows, daily counts, the other clients' schedules,
//!   counters, the seeded generators.
//! - [`routes`]: the HTTP surface ([`app`]).
//! - [`server`]: [`serve`] on a bound listener, with connection resets, the other clients'
//!   traffic and shutdown.

pub mod routes;
pub mod server;
pub mod state;

use std::collections::BTreeMap;
use std::time::Duration;

pub use routes::app;
pub use server::{ConnectionControl, Region, SimServer, serve, serve_region};
pub use state::{
    AccountStats, CreatedWebhook, FaultCounts, MAX_OTHER_CLIENT_CALLS, OtherClientStats,
    SimConfigError, SimState, SimStats, account_label,
};

use crate::tenant::{DEFAULT_LIMIT, Tenant};

/// Which accounts the simulator knows.
#[derive(Clone, Debug)]
pub enum AccountSource {
    /// The tenants of a tenants file: a call must carry one tenant's access and secret key;
    /// the account is the tenant, with its `limit`.
    Tenants(Vec<Tenant>),
    /// Any non-empty keys: each access key is an account of its own (named by
    /// [`account_label`]), with [`SimConfig::default_limit`].
    AnyAccount,
}

/// How the rate-limit error arrives: LeadSquared documents 429, and has been seen to send
/// the same body with 200 and with 403.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateLimitStyle {
    /// HTTP 429.
    #[default]
    TooManyRequests,
    /// HTTP 200 with `"Status":"Error"`.
    OkWithError,
    /// HTTP 403.
    Forbidden,
}

/// Faults to inject. Each admitted call draws from one generator seeded with `seed`, in the
/// order calls arrive, so a run with the same calls in the same order sees the same faults.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seed of the fault generator.
    pub seed: u64,
    /// Share of admitted calls answered 500 (without an MX exception) and not processed.
    pub error_rate: f64,
    /// Share of admitted Create calls that create the webhook and then answer 500.
    pub created_then_error_rate: f64,
    /// Share of admitted calls whose connection is reset without an answer (not processed).
    pub reset_rate: f64,
    /// Added to every admitted call before it is answered.
    pub latency: Duration,
    /// Up to this much more, uniformly drawn.
    pub latency_jitter: Duration,
}

/// Everything the simulator needs to start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The accounts.
    pub accounts: AccountSource,
    /// Calls per window for `--any-account` accounts. Default 25.
    pub default_limit: u32,
    /// The rate-limit window. Default 5 s (LeadSquared's).
    pub window: Duration,
    /// Whether refused calls count against the window too (default true: every call that
    /// arrives counts, so a client that keeps calling while limited stays limited).
    pub count_rejected: bool,
    /// How the rate-limit error arrives.
    pub rate_limit_style: RateLimitStyle,
    /// Send `Retry-After` (seconds until a call would be admitted) with the rate-limit error.
    /// LeadSquared does not document one; default false.
    pub retry_after: bool,
    /// Refuse event 2 without a top-level `ActivityEvent` with 500
    /// `MXInvalidDataTypeException`, as public client code reports LeadSquared does.
    /// Default true.
    pub require_activity_event_for_event_2: bool,
    /// Faults to inject.
    pub faults: Faults,
    /// Mean calls per window of every account's other client, arriving at random (a
    /// Poisson process); 0 (the default) for none. At most [`MAX_OTHER_CLIENT_CALLS`].
    pub other_client_calls: u32,
    /// Per account (tenant name, or [`account_label`]), instead of `other_client_calls`.
    pub other_client_calls_for: BTreeMap<String, u32>,
    /// The other client retries each refused call once, this long after it was refused;
    /// `None` (the default): it never retries, as a web form that shows the error does not.
    pub other_client_retry: Option<Duration>,
    /// Calls per day every account may make (every client's calls count); `None` (the
    /// default) for no quota.
    pub daily_limit: Option<u32>,
    /// Per account, instead of `daily_limit`.
    pub daily_limit_for: BTreeMap<String, u32>,
    /// The quota's day: day k is `[k * day, (k + 1) * day)` of Unix time, so the default
    /// (24 h) is the UTC day. Shorter only for tests.
    pub day: Duration,
    /// Which region each account lives in (account name → region name); an account not
    /// named lives in [`DEFAULT_REGION`]. Every call but `UserByAccessKey.Get` on another
    /// region's host answers 401 (see [`serve_region`]).
    pub account_regions: BTreeMap<String, String>,
}

/// The region an account lives in when [`SimConfig::account_regions`] does not name one,
/// and the region [`serve`] serves.
pub const DEFAULT_REGION: &str = "default";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            accounts: AccountSource::AnyAccount,
            default_limit: DEFAULT_LIMIT,
            window: Duration::from_secs(5),
            count_rejected: true,
            rate_limit_style: RateLimitStyle::default(),
            retry_after: false,
            require_activity_event_for_event_2: true,
            faults: Faults::default(),
            other_client_calls: 0,
            other_client_calls_for: BTreeMap::new(),
            other_client_retry: None,
            daily_limit: None,
            daily_limit_for: BTreeMap::new(),
            day: Duration::from_secs(24 * 3600),
            account_regions: BTreeMap::new(),
        }
    }
}
