//! The simulator's memory: accounts, each with its sliding-window call log, its daily count,
//! its other client's arrival schedule, its counters and the webhooks created in it; and the
//! seeded fault generator.
//!
//! One `std::sync::Mutex` guards it all: every critical section is a few map and deque
//! operations with no `.await` inside, and one lock makes the fault draws follow the order
//! in which calls arrive, which is what makes a seed reproducible.
//!
//! The other client (the tenant's own integrations: forms, apps) is a Poisson process per
//! account: exponential gaps with mean `window / N`, each account drawing from a generator of
//! its own seeded from the simulator's seed and the account's name. Its gaps are laid end to
//! end on a schedule of their own (`next = previous + gap`), so the same seed gives the same
//! schedule however late the task that plays it wakes, and its draws never shift the fault
//! generator's (which must depend on our calls' order alone).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
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
    /// A daily limit of zero would refuse every call.
    #[error("the daily limit of {account} must be at least 1")]
    ZeroDailyLimit {
        /// The account, or "every account" for the default.
        account: String,
    },
    /// A day of zero length.
    #[error("the day must be at least 1 ms long")]
    ZeroDay,
    /// More other-client calls per window than the simulator plays.
    #[error(
        "the other client's calls per window for {account} must be at most \
         {MAX_OTHER_CLIENT_CALLS}, got {value}"
    )]
    OtherClientCalls {
        /// The account, or "every account" for the default.
        account: String,
        /// The value given.
        value: u32,
    },
    /// A per-account setting names an account the tenants file does not have.
    #[error("{setting} names {account:?}, which is not a tenant")]
    UnknownAccount {
        /// Which setting.
        setting: &'static str,
        /// The name given.
        account: String,
    },
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
    /// The digest of the whole body as last written by Create or Update
    /// ([`crate::job::body_digest`] of its canonical JSON): tests compare it with the
    /// desired state without the stats showing a header value.
    #[serde(default)]
    pub body_digest: String,
}

impl CreatedWebhook {
    fn of(id: String, body: &CreateWebhook) -> Self {
        CreatedWebhook {
            id,
            description: body.description.clone(),
            url: body.url.clone(),
            event: body.event.code(),
            body_digest: crate::job::body_digest(&body.to_json()),
        }
    }

    /// What makes two webhooks duplicates: the same description, URL and event.
    fn identity(&self) -> (String, String, u32) {
        (self.description.clone(), self.url.clone(), self.event)
    }
}

/// Faults injected, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Answered 500 without doing anything.
    pub errors: u64,
    /// Did the work (Create, Update or Delete), then answered 500.
    pub created_then_error: u64,
    /// Connection reset without an answer.
    pub resets: u64,
}

/// The most other-client calls per window the simulator plays for one account: it is a
/// simulator, not a load generator, and more would keep a core busy drawing gaps.
pub const MAX_OTHER_CLIENT_CALLS: u32 = 10_000;

/// The most other-client calls played at one wake-up of the task: after a stall longer than
/// a window or so, the schedule skips ahead instead of firing a burst no real client sends.
const MAX_CATCH_UP: u32 = 64;

/// What the account's other client (the tenant's own integrations) did. Its calls are not in
/// [`AccountStats::calls`], which counts ours (the ones arriving over HTTP).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherClientStats {
    /// Its mean calls per window (0: no other client).
    pub calls_per_window: u32,
    /// Every call it made.
    pub calls: u64,
    /// Calls the window and the daily quota admitted.
    pub admitted: u64,
    /// Calls refused because the window was full.
    pub refused: u64,
    /// Refused calls that its own calls in the window cannot explain (fewer than `limit` of
    /// them, counted as the window counts): without our calls they would have been admitted.
    pub refused_because_of_ours: u64,
    /// Calls refused because the day's quota was spent.
    pub quota_refused: u64,
    /// Of `calls`, the retries of refused calls (with [`SimConfig::other_client_retry`]).
    #[serde(default)]
    pub retries: u64,
    /// Its calls admitted in the window that ends at the snapshot.
    pub in_window: u32,
}

/// What the simulator saw of one account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountStats {
    /// Calls allowed in any window.
    pub limit: u32,
    /// Every authenticated call of ours that arrived (Create and Retrieve over HTTP,
    /// including refused ones).
    pub calls: u64,
    /// Create calls among them.
    pub create_calls: u64,
    /// Retrieve calls among them.
    pub retrieve_calls: u64,
    /// Update calls among them.
    #[serde(default)]
    pub update_calls: u64,
    /// Delete calls among them.
    #[serde(default)]
    pub delete_calls: u64,
    /// `UserByAccessKey.Get` calls among them.
    #[serde(default)]
    pub discovery_calls: u64,
    /// Calls with the account's keys on another region's host, answered 401 (not charged).
    #[serde(default)]
    pub wrong_region: u64,
    /// Our calls admitted by the window and the daily quota.
    pub admitted: u64,
    /// Our calls answered with the rate-limit error because the window was full.
    pub rate_limited: u64,
    /// Our calls answered with the rate-limit error because the day's quota was spent.
    pub quota_refused: u64,
    /// Our calls admitted in the window that ends at the snapshot.
    pub in_window: u32,
    /// Calls allowed per day (every client's), if the account has a quota.
    pub daily_limit: Option<u32>,
    /// Calls admitted so far today, every client's.
    pub calls_today: u64,
    /// Milliseconds until the day (and so the quota) resets, from the snapshot.
    pub day_resets_in_ms: u64,
    /// The account's other client.
    pub other_client: OtherClientStats,
    /// The most calls that arrived in any one window (every arrival counted, every
    /// client's), computed exactly from arrival times.
    pub max_calls_in_window: u32,
    /// The most calls admitted past the limiter in any one window (every client's): never
    /// above `limit`.
    pub max_admitted_in_window: u32,
    /// Calls refused for their body (400, or 500 with an MX exception).
    pub invalid: u64,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Creates of a webhook with the same description, URL and event as one the account
    /// still had.
    pub duplicates: u64,
    /// The account's webhooks, in the order they were created: as Update left them, and
    /// without the deleted ones.
    pub webhooks: Vec<CreatedWebhook>,
}

/// `GET /_sim/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// The rate-limit window in milliseconds.
    pub window_ms: u64,
    /// The length of the daily quota's day in milliseconds.
    pub day_ms: u64,
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
    /// The day's quota is spent.
    QuotaSpent {
        /// The account's daily limit, for the message.
        daily_limit: u32,
        /// When the day resets.
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
    /// `Webhook.svc/Update`.
    Update,
    /// `Webhook.svc/Delete`.
    Delete,
    /// `Authentication.svc/UserByAccessKey.Get`.
    Discovery,
}

/// Who made a call: us (over HTTP) or the account's other client (played by the simulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Ours,
    Other,
}

/// The day of the daily quota: day `k` is `[k * day, (k + 1) * day)` of Unix time, so the
/// default day is the UTC day. Time moves with tokio's clock from the moment the state was
/// built, so a paused clock moves days too.
#[derive(Clone, Copy, Debug)]
struct DayClock {
    base: Instant,
    base_unix_ms: u128,
    day_ms: u128,
}

impl DayClock {
    fn unix_ms(&self, now: Instant) -> u128 {
        self.base_unix_ms + now.saturating_duration_since(self.base).as_millis()
    }

    fn index(&self, now: Instant) -> u128 {
        self.unix_ms(now) / self.day_ms
    }

    fn resets_in(&self, now: Instant) -> Duration {
        let ms = self.day_ms - self.unix_ms(now) % self.day_ms;
        Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

/// The rules every arriving call is judged by.
#[derive(Clone, Copy, Debug)]
struct Rules {
    window: Duration,
    count_rejected: bool,
    /// The other client's retry of a refused call, after this long (`None`: none).
    other_retry: Option<Duration>,
    day: DayClock,
}

/// An account's other client: its rate and its arrival schedule.
struct OtherClient {
    calls_per_window: u32,
    /// Its own generator (see the module header).
    rng: StdRng,
    /// The next scheduled arrival; `None` until the traffic task first sees the account
    /// (or after its rate changed: the process is memoryless, so it restarts from then).
    next_at: Option<Instant>,
    /// Retries due, in time order: each refused first call is tried once more after
    /// [`Rules::other_retry`].
    retries: VecDeque<Instant>,
}

impl OtherClient {
    fn gap(&mut self, window: Duration) -> Duration {
        let u: f64 = self.rng.random();
        // Inverse transform: -ln(1 - u) is exponential with mean 1, finite for u in [0, 1).
        window.mul_f64(-(1.0 - u).ln() / f64::from(self.calls_per_window.max(1)))
    }
}

struct Account {
    limit: u32,
    /// Arrival times in the current window, every client's, oldest first.
    arrivals: VecDeque<Instant>,
    /// Admission times in the current window, every client's, oldest first.
    admitted: VecDeque<Instant>,
    /// The other client's arrivals in the current window.
    other_arrivals: VecDeque<Instant>,
    /// The other client's admissions in the current window.
    other_admitted: VecDeque<Instant>,
    other: OtherClient,
    daily_limit: Option<u32>,
    /// The day `calls_today` counts.
    day: u128,
    /// `(description, url, event)` of every webhook the account has, to count duplicates.
    seen: HashMap<(String, String, u32), u64>,
    stats: AccountStats,
}

/// An account's settings when it is created.
#[derive(Clone, Copy, Debug)]
struct AccountSettings {
    limit: u32,
    other_client_calls: u32,
    daily_limit: Option<u32>,
    seed: u64,
}

impl Account {
    fn new(name: &str, settings: AccountSettings) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        let mut name_bits = [0u8; 8];
        name_bits.copy_from_slice(&digest[..8]);
        let seed = settings.seed ^ u64::from_le_bytes(name_bits);
        Account {
            limit: settings.limit,
            arrivals: VecDeque::new(),
            admitted: VecDeque::new(),
            other_arrivals: VecDeque::new(),
            other_admitted: VecDeque::new(),
            other: OtherClient {
                calls_per_window: settings.other_client_calls,
                rng: StdRng::seed_from_u64(seed),
                next_at: None,
                retries: VecDeque::new(),
            },
            daily_limit: settings.daily_limit,
            day: 0,
            seen: HashMap::new(),
            stats: AccountStats {
                limit: settings.limit,
                daily_limit: settings.daily_limit,
                other_client: OtherClientStats {
                    calls_per_window: settings.other_client_calls,
                    ..OtherClientStats::default()
                },
                ..AccountStats::default()
            },
        }
    }

    /// Takes a webhook that was replaced or deleted out of the duplicate count.
    fn forget(&mut self, old: &CreatedWebhook) {
        if let Some(n) = self.seen.get_mut(&old.identity()) {
            *n = n.saturating_sub(1);
        }
    }

    /// Drops calls that have left the window (`(now - window, now]`: a call frees its slot
    /// exactly one window after it arrived) and starts a new day's count when the day turned.
    fn refresh(&mut self, now: Instant, rules: &Rules) {
        let cutoff = now.checked_sub(rules.window);
        let expired = |t: &Instant| cutoff.is_some_and(|c| *t <= c);
        for log in [
            &mut self.arrivals,
            &mut self.admitted,
            &mut self.other_arrivals,
            &mut self.other_admitted,
        ] {
            while log.front().is_some_and(expired) {
                log.pop_front();
            }
        }
        let day = rules.day.index(now);
        if day != self.day {
            self.day = day;
            self.stats.calls_today = 0;
        }
    }

    /// Judges a call arriving now: the daily quota first (once it is spent every call gets
    /// the quota's answer, the one that tells a client to stop for the day), then the
    /// window. Every arrival goes into the arrival log; only admitted calls spend the quota.
    fn judge(&mut self, now: Instant, caller: Caller, rules: &Rules) -> Admission {
        self.refresh(now, rules);
        let (counted, own) = if rules.count_rejected {
            (self.arrivals.len(), self.other_arrivals.len())
        } else {
            (self.admitted.len(), self.other_admitted.len())
        };
        self.arrivals.push_back(now);
        if caller == Caller::Other {
            self.other_arrivals.push_back(now);
        }
        self.stats.max_calls_in_window = self
            .stats
            .max_calls_in_window
            .max(self.arrivals.len() as u32);
        if let Some(daily_limit) = self.daily_limit
            && self.stats.calls_today >= u64::from(daily_limit)
        {
            match caller {
                Caller::Ours => self.stats.quota_refused += 1,
                Caller::Other => self.stats.other_client.quota_refused += 1,
            }
            return Admission::QuotaSpent {
                daily_limit,
                retry_after: rules.day.resets_in(now),
            };
        }
        let limit = self.limit as usize;
        if counted >= limit {
            match caller {
                Caller::Ours => self.stats.rate_limited += 1,
                Caller::Other => {
                    let o = &mut self.stats.other_client;
                    o.refused += 1;
                    if own < limit {
                        o.refused_because_of_ours += 1;
                    }
                }
            }
            let log = if rules.count_rejected {
                &self.arrivals
            } else {
                &self.admitted
            };
            // The call that must leave the window before the count drops below the limit.
            let k = log.len().saturating_sub(limit);
            let frees_at = log.get(k).map_or(now, |t| *t + rules.window);
            return Admission::Limited {
                limit: self.limit,
                retry_after: frees_at.saturating_duration_since(now),
            };
        }
        self.admitted.push_back(now);
        match caller {
            Caller::Ours => self.stats.admitted += 1,
            Caller::Other => {
                self.other_admitted.push_back(now);
                self.stats.other_client.admitted += 1;
            }
        }
        self.stats.calls_today += 1;
        self.stats.max_admitted_in_window = self
            .stats
            .max_admitted_in_window
            .max(self.admitted.len() as u32);
        Admission::Admitted
    }

    /// Plays the other client's arrivals due by `now`; returns the next one's time, if it
    /// has any.
    fn play_other_client(&mut self, now: Instant, rules: &Rules) -> Option<Instant> {
        // Retries due (of calls refused before): each is one more call, never retried again.
        while self.other.retries.front().is_some_and(|at| *at <= now) {
            self.other.retries.pop_front();
            self.stats.other_client.calls += 1;
            self.stats.other_client.retries += 1;
            self.judge(now, Caller::Other, rules);
        }
        let retry_at = self.other.retries.front().copied();
        if self.other.calls_per_window == 0 {
            self.other.next_at = None;
            return retry_at;
        }
        let mut next = match self.other.next_at {
            Some(at) => at,
            None => now + self.other.gap(rules.window),
        };
        let mut played = 0;
        while next <= now {
            self.stats.other_client.calls += 1;
            // Stamped now, not at `next`: the logs stay in arrival order with our calls.
            let admission = self.judge(now, Caller::Other, rules);
            if let (Some(pause), Admission::Limited { .. }) = (rules.other_retry, &admission) {
                self.other.retries.push_back(now + pause);
            }
            played += 1;
            next += self.other.gap(rules.window);
            if played >= MAX_CATCH_UP {
                next = now + self.other.gap(rules.window);
                break;
            }
        }
        self.other.next_at = Some(next);
        Some(self.other.retries.front().map_or(next, |r| next.min(*r)))
    }
}

struct Inner {
    accounts: HashMap<String, Account>,
    /// `(access key, secret key)` → account name, for a tenants file.
    by_keys: HashMap<(String, String), String>,
    rng: StdRng,
    unauthorized: u64,
    /// Region name → the base URL its listener serves (`http://ADDR`).
    regions: BTreeMap<String, String>,
}

/// The simulator's shared state: hand it to [`super::app`] and keep a clone to read stats.
pub struct SimState {
    config: SimConfig,
    rules: Rules,
    inner: Mutex<Inner>,
    /// Wakes the other-client task when an account appears or a rate changes.
    other_client_changed: Notify,
}

impl SimState {
    /// Builds the state for a configuration, checking it.
    pub fn new(config: SimConfig) -> Result<Arc<SimState>, SimConfigError> {
        if config.default_limit == 0 {
            return Err(SimConfigError::ZeroLimit);
        }
        if config.day.as_millis() == 0 {
            return Err(SimConfigError::ZeroDay);
        }
        let every = || "every account".to_string();
        let dailies = config
            .daily_limit
            .map(|d| (every(), d))
            .into_iter()
            .chain(config.daily_limit_for.iter().map(|(a, d)| (a.clone(), *d)));
        for (account, d) in dailies {
            if d == 0 {
                return Err(SimConfigError::ZeroDailyLimit { account });
            }
        }
        let others = std::iter::once((every(), config.other_client_calls)).chain(
            config
                .other_client_calls_for
                .iter()
                .map(|(a, n)| (a.clone(), *n)),
        );
        for (account, value) in others {
            if value > MAX_OTHER_CLIENT_CALLS {
                return Err(SimConfigError::OtherClientCalls { account, value });
            }
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
            let known = |name: &String| tenants.iter().any(|t| t.name == *name);
            for (setting, names) in [
                (
                    "other_client_calls_for",
                    config.other_client_calls_for.keys(),
                ),
                ("daily_limit_for", config.daily_limit_for.keys()),
            ] {
                if let Some(account) = names.into_iter().find(|n| !known(n)) {
                    return Err(SimConfigError::UnknownAccount {
                        setting,
                        account: account.clone(),
                    });
                }
            }
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
                let settings = Self::settings(&config, &t.name, t.limit.max(1));
                accounts.insert(t.name.clone(), Account::new(&t.name, settings));
            }
        }
        let rng = StdRng::seed_from_u64(config.faults.seed);
        let base_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let rules = Rules {
            window: config.window,
            count_rejected: config.count_rejected,
            other_retry: config.other_client_retry,
            day: DayClock {
                base: Instant::now(),
                base_unix_ms,
                day_ms: config.day.as_millis(),
            },
        };
        let state = SimState {
            config,
            rules,
            inner: Mutex::new(Inner {
                accounts,
                by_keys,
                rng,
                unauthorized: 0,
                regions: BTreeMap::new(),
            }),
            other_client_changed: Notify::new(),
        };
        // Start the days of the accounts known now.
        let now = Instant::now();
        for acc in state.lock().accounts.values_mut() {
            acc.refresh(now, &state.rules);
        }
        Ok(Arc::new(state))
    }

    /// The settings an account gets when it is created: the per-account ones of the
    /// configuration, else its defaults.
    fn settings(config: &SimConfig, name: &str, limit: u32) -> AccountSettings {
        AccountSettings {
            limit,
            other_client_calls: config
                .other_client_calls_for
                .get(name)
                .copied()
                .unwrap_or(config.other_client_calls),
            daily_limit: config
                .daily_limit_for
                .get(name)
                .copied()
                .or(config.daily_limit),
            seed: config.faults.seed,
        }
    }

    /// Creates an account under `--any-account` (with the default limit unless given).
    fn new_account(&self, name: &str, limit: Option<u32>) -> Account {
        let limit = limit.unwrap_or(self.config.default_limit);
        let mut acc = Account::new(name, Self::settings(&self.config, name, limit));
        acc.refresh(Instant::now(), &self.rules);
        if acc.other.calls_per_window > 0 {
            self.other_client_changed.notify_one();
        }
        acc
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
                if !inner.accounts.contains_key(&name) {
                    let acc = self.new_account(&name, None);
                    inner.accounts.insert(name.clone(), acc);
                }
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

    /// Records a call of ours arriving for an account now, decides whether the daily quota
    /// and the window admit it, and draws its faults (only admitted calls draw, so the
    /// sequence depends on the order of admitted calls alone).
    pub fn arrive(&self, account: &str, api: Api) -> (Admission, FaultDraw) {
        let now = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        if !inner.accounts.contains_key(account) {
            let acc = self.new_account(account, None);
            inner.accounts.insert(account.to_string(), acc);
        }
        let Some(acc) = inner.accounts.get_mut(account) else {
            return (Admission::Admitted, FaultDraw::default());
        };
        acc.stats.calls += 1;
        match api {
            Api::Create => acc.stats.create_calls += 1,
            Api::Retrieve => acc.stats.retrieve_calls += 1,
            Api::Update => acc.stats.update_calls += 1,
            Api::Delete => acc.stats.delete_calls += 1,
            Api::Discovery => acc.stats.discovery_calls += 1,
        }
        let admission = acc.judge(now, Caller::Ours, &self.rules);
        if admission != Admission::Admitted {
            return (admission, FaultDraw::default());
        }

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
            // "Did the work, then 500": for every call that changes a webhook.
            created_then_error: matches!(api, Api::Create | Api::Update | Api::Delete)
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
        if !inner.accounts.contains_key(account) {
            let acc = self.new_account(account, None);
            inner.accounts.insert(account.to_string(), acc);
        }
        let Some(acc) = inner.accounts.get_mut(account) else {
            return id;
        };
        let webhook = CreatedWebhook::of(id.clone(), body);
        let n = acc.seen.entry(webhook.identity()).or_insert(0);
        if *n > 0 {
            acc.stats.duplicates += 1;
        }
        *n += 1;
        acc.stats.webhooks.push(webhook);
        id
    }

    /// Replaces the webhook `id` of an account with `body` (Update); `false` if the account
    /// has no webhook with that Id.
    pub fn update(&self, account: &str, id: &str, body: &CreateWebhook) -> bool {
        let mut inner = self.lock();
        let Some(acc) = inner.accounts.get_mut(account) else {
            return false;
        };
        let Some(at) = acc.stats.webhooks.iter().position(|w| w.id == id) else {
            return false;
        };
        let new = CreatedWebhook::of(id.to_string(), body);
        let old = std::mem::replace(&mut acc.stats.webhooks[at], new.clone());
        acc.forget(&old);
        *acc.seen.entry(new.identity()).or_insert(0) += 1;
        true
    }

    /// Deletes the webhook `id` of an account; `false` if it has none with that Id.
    pub fn delete(&self, account: &str, id: &str) -> bool {
        let mut inner = self.lock();
        let Some(acc) = inner.accounts.get_mut(account) else {
            return false;
        };
        let Some(at) = acc.stats.webhooks.iter().position(|w| w.id == id) else {
            return false;
        };
        let old = acc.stats.webhooks.remove(at);
        acc.forget(&old);
        true
    }

    /// An account's webhooks whose description contains `search` (case-insensitive; empty
    /// matches all) and, when given, whose Id is `id`, oldest first.
    pub fn search(&self, account: &str, search: &str, id: Option<&str>) -> Vec<CreatedWebhook> {
        let needle = search.to_lowercase();
        self.lock()
            .accounts
            .get(account)
            .map(|acc| {
                acc.stats
                    .webhooks
                    .iter()
                    .filter(|w| id.is_none_or(|id| w.id == id))
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
                let acc = self.new_account(account, Some(limit));
                inner.accounts.insert(account.to_string(), acc);
                true
            }
            None => false,
        }
    }

    /// Runs `change` on an account, creating it under `--any-account`; `false` if there is
    /// no such account.
    fn with_account(&self, account: &str, change: impl FnOnce(&mut Account)) -> bool {
        let mut inner = self.lock();
        if !inner.accounts.contains_key(account)
            && matches!(self.config.accounts, AccountSource::AnyAccount)
        {
            let acc = self.new_account(account, None);
            inner.accounts.insert(account.to_string(), acc);
        }
        match inner.accounts.get_mut(account) {
            Some(acc) => {
                change(acc);
                true
            }
            None => false,
        }
    }

    /// Changes an account's other client's calls per window (0 stops it; at most
    /// [`MAX_OTHER_CLIENT_CALLS`]); `false` if there is no such account.
    pub fn set_other_client_calls(&self, account: &str, calls_per_window: u32) -> bool {
        let calls_per_window = calls_per_window.min(MAX_OTHER_CLIENT_CALLS);
        let changed = self.with_account(account, |acc| {
            acc.other.calls_per_window = calls_per_window;
            acc.other.next_at = None;
            acc.stats.other_client.calls_per_window = calls_per_window;
        });
        if changed {
            self.other_client_changed.notify_one();
        }
        changed
    }

    /// Sets (or, with `None`, removes) an account's daily quota; `false` if there is no such
    /// account. Today's count is kept.
    pub fn set_daily_limit(&self, account: &str, daily_limit: Option<u32>) -> bool {
        let daily_limit = daily_limit.map(|d| d.max(1));
        self.with_account(account, |acc| {
            acc.daily_limit = daily_limit;
            acc.stats.daily_limit = daily_limit;
        })
    }

    /// Plays every account's other-client arrivals due by now; returns when the next one is
    /// due, if any account has an other client.
    pub fn play_other_clients(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner
            .accounts
            .values_mut()
            .filter_map(|acc| acc.play_other_client(now, &self.rules))
            .min()
    }

    /// Plays the accounts' other clients until `shutdown` is cancelled: the task
    /// [`super::serve`] runs beside its connections. Without it (a bare [`super::app`]) no
    /// other client calls.
    pub async fn run_other_clients(&self, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let next = self.play_other_clients();
            let due = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // A stored permit makes this ready at once if a change came after the play.
                _ = self.other_client_changed.notified() => {}
                _ = due => {}
            }
        }
    }

    /// Records the base URL a region is served on.
    pub fn set_region_base(&self, region: &str, base: &str) {
        self.lock()
            .regions
            .insert(region.to_string(), base.to_string());
    }

    /// The region an account lives in.
    pub fn region_of(&self, account: &str) -> &str {
        self.config
            .account_regions
            .get(account)
            .map_or(super::DEFAULT_REGION, String::as_str)
    }

    /// The base URL of the account's region, if that region is served.
    pub fn region_base_of(&self, account: &str) -> Option<String> {
        let region = self.region_of(account).to_string();
        self.lock().regions.get(&region).cloned()
    }

    /// Counts a call with the account's keys on another region's host (answered 401).
    pub fn wrong_region(&self, account: &str) {
        let mut inner = self.lock();
        inner.unauthorized += 1;
        if let Some(acc) = inner.accounts.get_mut(account) {
            acc.stats.wrong_region += 1;
        }
    }

    /// A snapshot of every account's counters and webhooks.
    pub fn stats(&self) -> SimStats {
        let now = Instant::now();
        let mut inner = self.lock();
        let unauthorized = inner.unauthorized;
        SimStats {
            window_ms: self.config.window.as_millis() as u64,
            day_ms: u64::try_from(self.config.day.as_millis()).unwrap_or(u64::MAX),
            unauthorized,
            accounts: inner
                .accounts
                .iter_mut()
                .map(|(name, acc)| {
                    acc.refresh(now, &self.rules);
                    let mut stats = acc.stats.clone();
                    let other = acc.other_admitted.len();
                    stats.in_window = acc.admitted.len().saturating_sub(other) as u32;
                    stats.other_client.in_window = other as u32;
                    stats.day_resets_in_ms =
                        u64::try_from(self.rules.day.resets_in(now).as_millis())
                            .unwrap_or(u64::MAX);
                    (name.clone(), stats)
                })
                .collect(),
        }
    }
}
