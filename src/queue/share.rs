//! The tenant's share of its account's budget: how many calls per window the queue lets
//! itself make, and why.
//!
//! The cap starts at `limit − reserve` (the limit configured or learned from LeadSquared's
//! answer, less the calls left to the tenant's other integrations), never below 1. With
//! [`ShareMode::Adaptive`] the queue also keeps a share under that cap, per tenant, in the
//! store (so every worker process shares it, and a restart keeps it), changed only inside
//! the atomic step of [`Queue::rate_limited`](super::Queue::rate_limited):
//!
//! - a rate-limit answer with fewer than `limit` of our calls in the tenant's window
//!   (counting the refused one) is one our calls cannot explain: another client is using
//!   the account. The share is cut to `max(1, floor(share × CUT_NUM / CUT_DEN))`, at most
//!   once per window (several of our calls refused by the same crowded window are one
//!   signal, not several);
//! - any rate-limit answer restarts the climb: the share grows by one call for each whole
//!   window that has passed since the last rate-limit answer, up to the cap. The climb is
//!   computed when the share is read, so no timer and no write is needed while calls
//!   succeed.
//!
//! docs/decisions.md ("The adaptive share") says why these constants.

use serde::{Deserialize, Serialize};

/// The share is cut to `share × CUT_NUM / CUT_DEN` (rounded down, at least 1) on a rate
/// limit our calls cannot explain: halved, as TCP does.
pub const CUT_NUM: u32 = 1;
/// See [`CUT_NUM`].
pub const CUT_DEN: u32 = 2;

/// Whether the queue adapts each tenant's share to the account's other clients
/// (`worker --share`, `LSQ_SHARE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ShareMode {
    /// Always `limit − reserve` per window: the behaviour before shares.
    Fixed,
    /// Cut on a rate limit our calls cannot explain, climb back while calls succeed.
    #[default]
    Adaptive,
}

impl ShareMode {
    /// As the flag and the scripts spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareMode::Fixed => "fixed",
            ShareMode::Adaptive => "adaptive",
        }
    }
}

/// Why a tenant's share is what it is, the first that applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareReason {
    /// Cut below the cap: another client is using the account.
    Shared,
    /// The cap leaves the tenant's reserve unused.
    Reserve,
    /// LeadSquared named a lower limit than the configured one.
    LearnedLimit,
    /// The configured limit, all of it.
    #[default]
    Configured,
}

impl ShareReason {
    /// Why `share` is what it is for a tenant with this configured limit, effective
    /// (configured or learned) limit and reserve.
    pub fn of(configured: u32, limit: u32, reserve: u32, share: u32) -> ShareReason {
        if share < cap(limit, reserve) {
            ShareReason::Shared
        } else if reserve > 0 {
            ShareReason::Reserve
        } else if limit < configured {
            ShareReason::LearnedLimit
        } else {
            ShareReason::Configured
        }
    }

    /// As status text shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareReason::Shared => "shared with other clients",
            ShareReason::Reserve => "reserve",
            ShareReason::LearnedLimit => "learned limit",
            ShareReason::Configured => "configured",
        }
    }
}

/// The most calls per window the queue makes for a tenant with this effective limit and
/// reserve: `limit − reserve`, never below 1.
pub fn cap(limit: u32, reserve: u32) -> u32 {
    limit.saturating_sub(reserve).max(1)
}

/// The share after a cut from `share`.
pub fn cut(share: u32) -> u32 {
    (u64::from(share) * u64::from(CUT_NUM) / u64::from(CUT_DEN)).max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_and_cut_hold_their_floor() {
        assert_eq!(cap(25, 5), 20);
        assert_eq!(cap(3, 5), 1);
        assert_eq!(cap(1, 0), 1);
        assert_eq!(cut(25), 12);
        assert_eq!(cut(1), 1);
        assert_eq!(ShareReason::of(25, 25, 0, 25), ShareReason::Configured);
        assert_eq!(ShareReason::of(25, 10, 0, 10), ShareReason::LearnedLimit);
        assert_eq!(ShareReason::of(25, 25, 5, 20), ShareReason::Reserve);
        assert_eq!(ShareReason::of(25, 25, 5, 7), ShareReason::Shared);
    }
}
