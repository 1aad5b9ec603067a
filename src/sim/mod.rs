//! A LeadSquared API simulator for tests, demos and benchmarks.
//!
//! It serves Create and Retrieve under `/v2/Webhook.svc/` with both of LeadSquared's
//! authentication styles, answers bad bodies with LeadSquared's error shapes (400 for a
//! body not per spec, 500 with an `MX...Exception` for inputs it refuses: the same
//! validation as [`crate::leadsquared::CreateWebhook::check`]), and enforces a strict
//! per-account limit: at most N calls in ANY window (5 s), where every call that arrives
//! counts, refused ones included (see `docs/decisions.md`). Faults can be injected
//! reproducibly from a seed: 500s, latency, connection resets, and "created, then answered
//! 500". `GET /_sim/stats` reports per account the calls, rate-limit answers, the most calls
//! in any window (exact, from arrival times) and every webhook created, so tests can count
//! duplicates; `PUT /_sim/accounts/{account}/limit` changes a limit at runtime.
//!
//! - [`state`]: accounts, sliding windows, counters, the seeded fault generator.
//! - [`routes`]: the HTTP surface ([`app`]).
//! - [`server`]: [`serve`] on a bound listener, with connection resets and shutdown.

pub mod routes;
pub mod server;
pub mod state;

use std::time::Duration;

pub use routes::app;
pub use server::{ConnectionControl, SimServer, serve};
pub use state::{
    AccountStats, CreatedWebhook, FaultCounts, SimConfigError, SimState, SimStats, account_label,
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
}

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
        }
    }
}
