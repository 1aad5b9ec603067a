//! The simulator's memory: accounts, each with its sliding-window call log, its counters and
//! the webhooks created in it; and the seeded fault generator.
//!
//! One `std::sync::Mutex` guards it all: every critical section is a few map and deque
//! operations with no `.await` inside, and one lock makes the fault draws follow the order
//! in which calls arrive, which is what makes a seed reproducible.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{AccountSource, SimConfig};
use crate::leadsquared::CreateWebhook;

/// The name an account gets under `--any-account`: `key-` and the first 12 hex digits of the
/// SHA-256 of its access key (stats must not show the key itself).
pub fn account_label(access_key: &str) -> String {
    let digest = Sha256::digest(access_key.as_bytes());
    format!("key-{}", &hex::encode(digest)[..12])
}

/// Why a simulator cannot start with this configuration.
#[derive(Debug, thiserror::Error)]
pub enum SimConfigError {
    /// Two tenants share an access/secret key pair, so a call cannot tell them apart.
    #[error("tenants {first:?} and {second:?} have the same access and secret key")]
    SharedKeys {
        /// The first tenant.
        first: String,
        /// The second.
        second: String,
    },
    /// A limit of zero would refuse every call.
    #[error("the default limit must be at least 1")]
    ZeroLimit,
    /// A fault rate outside 0..=1.
    #[error("{name} must be between 0 and 1, got {value}")]
    Rate {
        /// Which rate.
        name: &'static str,
        /// The value given.
        value: f64,
    },
}

/// A webhook the simulator created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedWebhook {
    /// The Id it answered with.
    pub id: String,
    /// `Description`.
    pub description: String,
    /// `URL`.
    pub url: String,
    /// `WebhookEvent` code.
    pub event: u32,
}

/// Faults injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Answered 500 without doing anything.
    pub errors: u64,
    /// Created the webhook, then answered 500.
    pub created_then_error: u64,
    /// Connection reset without an answer.
    pub resets: u64,
}

/// What the simulator saw of one account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStats {
    /// Calls allowed in any window.
    pub limit: u32,
    /// Every authenticated call that arrived (Create and Retrieve, including refused ones).
    pub calls: u64,
    /// Create calls among them.
    pub create_calls: u64,
    /// Retrieve calls among them.
    pub retrieve_calls: u64,
    /// Calls answered with the rate-limit error.
    pub rate_limited: u64,
    /// The most calls that arrived in any one window (every arrival counted), computed
    /// exactly from arrival times.
    pub max_calls_in_window: u32,
    /// The most calls admitted past the limiter in any one window: never above `limit`.
    pub max_admitted_in_window: u32,
    /// Calls refused for their body (400, or 500 with an MX exception).
    pub invalid: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Webhooks with the same description, URL and event as an earlier one.
    pub duplicates: u64,
    /// Every webhook created, in order.
    pub webhooks: Vec<CreatedWebhook>,
}

/// `GET /_sim/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// The rate-limit window in milliseconds.
    pub window_ms: u64,
    /// Calls refused with 401 (unknown keys), which no account is charged for.
    pub unauthorized: u64,
    /// Per account (tenant name, or [`account_label`] under `--any-account`).
    pub accounts: BTreeMap<String, AccountStats>,
}

/// The limiter's verdict on an arriving call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Within the limit.
    Admitted,
    /// Over it.
    Limited {
        /// The account's limit, for the message.
        limit: u32,
        /// When a call would next be admitted if no other arrived.
        retry_after: Duration,
    },
}

/// The faults drawn for one admitted call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultDraw {
    /// Added before answering.
    pub latency: Duration,
    /// Reset the connection without answering.
    pub reset: bool,
    /// Answer 500 without doing anything.
    pub error: bool,
    /// Do the work, then answer 500.
    pub created_then_error: bool,
}

/// A fault the simulator applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Connection reset.
    Reset,
    /// 500 without doing anything.
    Error,
    /// Created, then 500.
    CreatedThenError,
}

/// Which API an arriving call is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `Webhook.svc/Create`.
    Create,
    /// `Webhook.svc/Retrieve`.
    Retrieve,
}

struct Account {
    limit: u32,
    /// Arrival times in the current window, oldest first.
    arrivals: VecDeque<Instant>,
    /// Admission times in the current window, oldest first.
    admitted: VecDeque<Instant>,
    /// `(description, url, event)` of every webhook, to count duplicates.
    seen: HashMap<(String, String, u32), u64>,
    stats: AccountStats,
}

impl Account {
    fn new(limit: u32) -> Self {
        Account {
            limit,
            arrivals: VecDeque::new(),
            admitted: VecDeque::new(),
            seen: HashMap::new(),
            stats: AccountStats {
                limit,
                ..AccountStats::default()
            },
        }
    }
}

struct Inner {
    accounts: HashMap<String, Account>,
    /// `(access key, secret key)` → account name, for a tenants file.
    by_keys: HashMap<(String, String), String>,
    rng: StdRng,
    unauthorized: u64,
}

/// The simulator's shared state: hand it to [`super::app`] and keep a clone to read stats.
pub struct SimState {
    config: SimConfig,
    inner: Mutex<Inner>,
}

impl SimState {
    /// Builds the state for a configuration, checking it.
    pub fn new(config: SimConfig) -> Result<Arc<SimState>, SimConfigError> {
        if config.default_limit == 0 {
            return Err(SimConfigError::ZeroLimit);
        }
        let f = &config.faults;
        for (name, value) in [
            ("error rate", f.error_rate),
            ("created-then-error rate", f.created_then_error_rate),
            ("reset rate", f.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimConfigError::Rate { name, value });
            }
        }
        let mut accounts = HashMap::new();
        let mut by_keys: HashMap<(String, String), String> = HashMap::new();
        if let AccountSource::Tenants(tenants) = &config.accounts {
            for t in tenants {
                let keys = (
                    t.access_key.expose().to_string(),
                    t.secret_key.expose().to_string(),
                );
                if let Some(first) = by_keys.get(&keys) {
                    return Err(SimConfigError::SharedKeys {
                        first: first.clone(),
                        second: t.name.clone(),
                    });
                }
                by_keys.insert(keys, t.name.clone());
                accounts.insert(t.name.clone(), Account::new(t.limit.max(1)));
            }
        }
        let rng = StdRng::seed_from_u64(config.faults.seed);
        Ok(Arc::new(SimState {
            config,
            inner: Mutex::new(Inner {
                accounts,
                by_keys,
                rng,
                unauthorized: 0,
            }),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still consistent enough
        // for a simulator: keep serving rather than poison every later call.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The account these keys belong to, or `None` (a 401). Under `--any-account` every
    /// non-empty access key is an account of its own.
    pub fn authenticate(&self, access_key: &str, secret_key: &str) -> Option<String> {
        let mut inner = self.lock();
        let found = match &self.config.accounts {
            AccountSource::AnyAccount if !access_key.is_empty() && !secret_key.is_empty() => {
                let name = account_label(access_key);
                let limit = self.config.default_limit;
                inner
                    .accounts
                    .entry(name.clone())
                    .or_insert_with(|| Account::new(limit));
                Some(name)
            }
            AccountSource::AnyAccount => None,
            AccountSource::Tenants(_) => inner
                .by_keys
                .get(&(access_key.to_string(), secret_key.to_string()))
                .cloned(),
        };
        if found.is_none() {
            inner.unauthorized += 1;
        }
        found
    }

    /// Records a call arriving for an account now, decides whether the limiter admits it,
    /// and draws its faults (only admitted calls draw, so the sequence depends on the order
    /// of admitted calls alone).
    pub fn arrive(&self, account: &str, api: Api) -> (Admission, FaultDraw) {
        let now = Instant::now();
        let window = self.config.window;
        let count_rejected = self.config.count_rejected;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let default_limit = self.config.default_limit;
        let acc = inner
            .accounts
            .entry(account.to_string())
            .or_insert_with(|| Account::new(default_limit));
        // The window is (now - window, now]: a call frees its slot exactly one window after
        // it arrived.
        let cutoff = now.checked_sub(window);
        let expired = |t: &Instant| cutoff.is_some_and(|c| *t <= c);
        while acc.arrivals.front().is_some_and(expired) {
            acc.arrivals.pop_front();
        }
        while acc.admitted.front().is_some_and(expired) {
            acc.admitted.pop_front();
        }
        let counted = if count_rejected {
            acc.arrivals.len()
        } else {
            acc.admitted.len()
        };
        let admit = counted < acc.limit as usize;
        acc.arrivals.push_back(now);
        acc.stats.calls += 1;
        match api {
            Api::Create => acc.stats.create_calls += 1,
            Api::Retrieve => acc.stats.retrieve_calls += 1,
        }
        acc.stats.max_calls_in_window =
            acc.stats.max_calls_in_window.max(acc.arrivals.len() as u32);
        if !admit {
            acc.stats.rate_limited += 1;
            let log = if count_rejected {
                &acc.arrivals
            } else {
                &acc.admitted
            };
            // The call that must leave the window before the count drops below the limit.
            let k = log.len().saturating_sub(acc.limit as usize);
            let frees_at = log.get(k).map_or(now, |t| *t + window);
            return (
                Admission::Limited {
                    limit: acc.limit,
                    retry_after: frees_at.saturating_duration_since(now),
                },
                FaultDraw::default(),
            );
        }
        acc.admitted.push_back(now);
        acc.stats.max_admitted_in_window = acc
            .stats
            .max_admitted_in_window
            .max(acc.admitted.len() as u32);

        let f = &self.config.faults;
        // Always draw all four so one call's outcome does not shift the next call's draws.
        let jitter: f64 = inner.rng.random();
        let reset: f64 = inner.rng.random();
        let error: f64 = inner.rng.random();
        let created_then_error: f64 = inner.rng.random();
        let draw = FaultDraw {
            latency: f.latency + f.latency_jitter.mul_f64(jitter),
            reset: reset < f.reset_rate,
            error: error < f.error_rate,
            created_then_error: api == Api::Create
                && created_then_error < f.created_then_error_rate,
        };
        (Admission::Admitted, draw)
    }

    /// Counts a fault when it is applied.
    pub fn fault_applied(&self, account: &str, fault: Fault) {
        if let Some(acc) = self.lock().accounts.get_mut(account) {
            let f = &mut acc.stats.faults;
            match fault {
                Fault::Reset => f.resets += 1,
                Fault::Error => f.errors += 1,
                Fault::CreatedThenError => f.created_then_error += 1,
            }
        }
    }

    /// Counts a call refused for its body.
    pub fn invalid(&self, account: &str) {
        if let Some(acc) = self.lock().accounts.get_mut(account) {
            acc.stats.invalid += 1;
        }
    }

    /// Creates a webhook in an account; returns its Id.
    pub fn create(&self, account: &str, body: &CreateWebhook) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut inner = self.lock();
        let default_limit = self.config.default_limit;
        let acc = inner
            .accounts
            .entry(account.to_string())
            .or_insert_with(|| Account::new(default_limit));
        let key = (
            body.description.clone(),
            body.url.clone(),
            body.event.code(),
        );
        let n = acc.seen.entry(key).or_insert(0);
        if *n > 0 {
            acc.stats.duplicates += 1;
        }
        *n += 1;
        acc.stats.webhooks.push(CreatedWebhook {
            id: id.clone(),
            description: body.description.clone(),
            url: body.url.clone(),
            event: body.event.code(),
        });
        id
    }

    /// An account's webhooks whose description contains `search` (case-insensitive; empty
    /// matches all), oldest first.
    pub fn search(&self, account: &str, search: &str) -> Vec<CreatedWebhook> {
        let needle = search.to_lowercase();
        self.lock()
            .accounts
            .get(account)
            .map(|acc| {
                acc.stats
                    .webhooks
                    .iter()
                    .filter(|w| needle.is_empty() || w.description.to_lowercase().contains(&needle))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Changes an account's limit; `false` if there is no such account (under
    /// `--any-account` the account is created).
    pub fn set_limit(&self, account: &str, limit: u32) -> bool {
        let limit = limit.max(1);
        let mut inner = self.lock();
        match inner.accounts.get_mut(account) {
            Some(acc) => {
                acc.limit = limit;
                acc.stats.limit = limit;
                true
            }
            None if matches!(self.config.accounts, AccountSource::AnyAccount) => {
                inner
                    .accounts
                    .insert(account.to_string(), Account::new(limit));
                true
            }
            None => false,
        }
    }

    /// A snapshot of every account's counters and webhooks.
    pub fn stats(&self) -> SimStats {
        let inner = self.lock();
        SimStats {
            window_ms: self.config.window.as_millis() as u64,
            unauthorized: inner.unauthorized,
            accounts: inner
                .accounts
                .iter()
                .map(|(name, acc)| (name.clone(), acc.stats.clone()))
                .collect(),
        }
    }
}
