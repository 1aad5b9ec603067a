//! Every tenant at a glance (issue 15): the rows of [`Queue::tenants_page`] and the rules
//! both backends share for them. A row comes from counters the queue keeps per tenant as
//! jobs move (push, complete, bury, dead retry and purge), never from a walk over the jobs,
//! and a page looks at no more than [`PAGE_BUDGET`] tenants, so a page costs the same with
//! 10 tenants or 10,000.
//!
//! [`Queue::tenants_page`]: super::Queue::tenants_page

use serde::{Deserialize, Serialize};

use super::{QueueError, TenantHold};

/// Most tenants one page examines (matching its filter or not): with a filter few tenants
/// match, a page may hold fewer rows than asked for, and its cursor goes on from the first
/// tenant it did not examine.
pub const PAGE_BUDGET: usize = 1000;

/// Most rows one page holds.
pub const MAX_PAGE: usize = 500;

/// Where a tenant stands, in the order the rules are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Held (paused by an operator, keys refused, host unreachable): no call until the hold
    /// ends; the row's `hold` says why, who and since when.
    Held,
    /// Jobs wait in its list but its next call is later: at its limit, paused by a
    /// rate-limit answer, or parked for its daily quota.
    Throttled,
    /// Jobs not finished (in its list, leased or scheduled for a retry), calling as they go.
    Waiting,
    /// Nothing left to run, and some jobs dead: it will not finish without an operator
    /// (`dead list`, `dead retry`).
    Stuck,
    /// Nothing left to run and nothing dead.
    Done,
}

impl TenantState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Held => "held",
            TenantState::Throttled => "throttled",
            TenantState::Waiting => "waiting",
            TenantState::Stuck => "stuck",
            TenantState::Done => "done",
        }
    }

    /// The state of a tenant with `unfinished` jobs not finished (`queued` of them in its
    /// list) and `dead` dead ones, held or not, whose next call is later than now or not.
    /// tenants.lua applies the same rules.
    pub fn of(held: bool, queued: u64, next_call_later: bool, unfinished: u64, dead: u64) -> Self {
        if held {
            TenantState::Held
        } else if queued > 0 && next_call_later {
            TenantState::Throttled
        } else if unfinished > 0 {
            TenantState::Waiting
        } else if dead > 0 {
            TenantState::Stuck
        } else {
            TenantState::Done
        }
    }

    /// Parses a name as [`TenantState::as_str`] gives it.
    pub fn parse(s: &str) -> Result<Self, QueueError> {
        Ok(match s {
            "held" => TenantState::Held,
            "throttled" => TenantState::Throttled,
            "waiting" => TenantState::Waiting,
            "stuck" => TenantState::Stuck,
            "done" => TenantState::Done,
            other => {
                return Err(QueueError::Config(format!(
                    "filter {other:?}: expected held, throttled, waiting, stuck or done"
                )));
            }
        })
    }
}

/// The order of a tenants page. Counts sort most first, ties by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantSort {
    /// By name.
    #[default]
    Name,
    /// By jobs not finished (waiting in the list plus in flight).
    Waiting,
    /// By jobs done.
    Done,
    /// By dead jobs.
    Dead,
}

impl TenantSort {
    /// The name taken and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantSort::Name => "name",
            TenantSort::Waiting => "waiting",
            TenantSort::Done => "done",
            TenantSort::Dead => "dead",
        }
    }

    /// Parses a name as [`TenantSort::as_str`] gives it.
    pub fn parse(s: &str) -> Result<Self, QueueError> {
        Ok(match s {
            "name" => TenantSort::Name,
            "waiting" => TenantSort::Waiting,
            "done" => TenantSort::Done,
            "dead" => TenantSort::Dead,
            other => {
                return Err(QueueError::Config(format!(
                    "sort {other:?}: expected name, waiting, done or dead"
                )));
            }
        })
    }
}

/// Which page of tenants [`super::Queue::tenants_page`] reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantQuery {
    /// The order.
    pub sort: TenantSort,
    /// Only tenants in this state; `None`: all.
    pub filter: Option<TenantState>,
    /// Where the page starts: `None` for the first, else the `next` of the page before.
    pub cursor: Option<String>,
    /// Most rows (1 to [`MAX_PAGE`]).
    pub limit: usize,
}

impl TenantQuery {
    /// The position the cursor stands for (0 for none); a cursor that does not parse is
    /// [`QueueError::Config`].
    pub fn offset(&self) -> Result<usize, QueueError> {
        match self.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => Ok(0),
            Some(c) => c.parse().map_err(|_| {
                QueueError::Config(format!("cursor {c:?} is not one this queue gave"))
            }),
        }
    }

    /// The rows asked for, within 1 to [`MAX_PAGE`].
    pub fn rows(&self) -> usize {
        self.limit.clamp(1, MAX_PAGE)
    }
}

/// One tenant in the tenants view. Never its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRow {
    /// Tenant name.
    pub tenant: String,
    /// Where it stands.
    pub state: TenantState,
    /// Jobs in its list.
    pub waiting: u64,
    /// Jobs leased to a worker or scheduled for a retry.
    pub in_flight: u64,
    /// Jobs ever done (purging done records does not lower it, as for
    /// `lsq_jobs_done_total`).
    pub done: u64,
    /// Dead jobs.
    pub dead: u64,
    /// Calls in the current window.
    pub calls_in_window: u32,
    /// The most calls per window the queue makes for it now (its share; see
    /// [`super::share`]).
    pub share: u32,
    /// Calls allowed per window (may have been lowered by LeadSquared's answer).
    pub limit: u32,
    /// When its next call is allowed, ms since the epoch, while that is later than now
    /// (and it has jobs in its list).
    pub next_call_ms: Option<u64>,
    /// Its hold in force: kind, reason, who and since when.
    pub hold: Option<TenantHold>,
}

/// One page of tenants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPage {
    /// Registered tenants, all states.
    pub total: u64,
    /// The rows of this page, in the order asked for.
    pub tenants: Vec<TenantRow>,
    /// Pass it as the cursor of the next page; `None` on the last.
    pub next: Option<String>,
}
