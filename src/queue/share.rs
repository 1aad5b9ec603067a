//! The tenant's share of its account's budget: how many calls per window the queue lets
//! itself make, how it spreads them, and why.
//!
//! The cap is `limit − reserve` (the limit configured or learned from LeadSquared's answer,
//! less the calls left to the tenant's other integrations), never below 1. With
//! [`ShareMode::Adaptive`] the queue also keeps a share under that cap, per tenant, in the
//! store (so every worker process shares one, and a restart keeps it). This module is the
//! whole rule, as arithmetic; the backends only store its state and apply it atomically:
//!
//! - **Pacing.** A tenant whose share is below its limit (a cut share, or a reserve) spreads
//!   its calls: the next no sooner than [`pace`]'s gap after the last, `(1 − OVERLAP) ×
//!   window / share`, and at most `⌊share⌋ + 1` in any window. Each call then goes out while
//!   about `share` of ours are still in the window, which is what a call of the other
//!   client finds there on average: our call is refused when theirs would be, so our own
//!   rate-limit answers measure the harm we do (with bursts or plain pacing they do not).
//! - **Signal.** A rate-limit answer with no more than `limit` of our calls in the window
//!   (counting the refused one) is one our calls cannot explain: another client holds part
//!   of the window.
//! - **Cut** ([`after_refusal`]), at most once per [`CUT_SPACING`] windows: the first answer
//!   after the tenant was at its cap cuts to the share that would leave the other client
//!   whole if it keeps the load it just showed (see [`room_for`]), and at most half; a
//!   second cut within [`REPEAT_WINDOWS`] halves again (its load rose); any other cut is gentle,
//!   `share × CUT − CUT_STEP`, because one answer at the right share is expected now and
//!   then (the target is [`OTHER_REFUSED_TARGET`] of theirs).
//! - **Climb** ([`climb`]): while no answer comes, the share grows by [`CLIMB`] calls per
//!   window, the growth doubling every [`DOUBLING`] windows, so it holds near the level where
//!   answers come, and a tenant that is alone again is back at its cap in about 100
//!   windows. It is computed from the share set at the last cut and the time since, so a
//!   success needs no write.
//!
//! docs/decisions.md ("The shared budget") gives the arithmetic and the measured frontier
//! behind each constant.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The other client's calls refused because of ours that the share aims at: the share
/// leaves the other client's load room for its random swing up to this tail.
pub const OTHER_REFUSED_TARGET: f64 = 0.015;
/// Calls per window the share climbs by in the first window after a cut.
pub const CLIMB: f64 = 0.05;
/// Windows over which the climb's speed doubles.
pub const DOUBLING: f64 = 30.0;
/// A gentle cut: `share × CUT − CUT_STEP`.
pub const CUT: f64 = 0.75;
/// See [`CUT`].
pub const CUT_STEP: f64 = 1.0;
/// A cut within [`REPEAT_WINDOWS`] of the previous one, or the first from the cap, is at
/// least this deep (`share × HALVE`).
pub const HALVE: f64 = 0.5;
/// A cut this many windows or less after the previous one halves: the other load rose. Two,
/// because a refusal pauses the tenant for a window, so the next answer can come no sooner.
pub const REPEAT_WINDOWS: f64 = 2.0;
/// At most one cut per this many windows: several of our calls refused by one crowded
/// moment are one signal.
pub const CUT_SPACING: f64 = 0.5;
/// How much of a window a paced tenant's calls overlap: the gap is `(1 − OVERLAP) ×
/// window / share`, so each call still finds the one `share` calls back in the window.
pub const OVERLAP: f64 = 0.05;

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
    pub fn of(configured: u32, limit: u32, reserve: u32, share: f64) -> ShareReason {
        if share < f64::from(cap(limit, reserve)) {
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

/// How much the share has climbed `windows` windows after it was set: [`CLIMB`] per window
/// at first, doubling every [`DOUBLING`] windows (`CLIMB × DOUBLING / ln 2 × (2^(w/D) −
/// 1)`). The Redis backend's prelude.lua (`tenant_cap`) computes the same with
/// [`climb_scale`].
pub fn climb(windows: f64) -> f64 {
    climb_scale() * ((windows.max(0.0) / DOUBLING).exp2() - 1.0)
}

/// `CLIMB × DOUBLING / ln 2`: the factor of [`climb`], as the scripts are given it.
pub fn climb_scale() -> f64 {
    CLIMB * DOUBLING / std::f64::consts::LN_2
}

/// The share `elapsed` after it was set to `set`, under a cap of `cap`: at least 1.
pub fn share_at(set: f64, elapsed: Duration, window: Duration, cap: u32) -> f64 {
    let windows = elapsed.as_secs_f64() / window.as_secs_f64().max(1e-9);
    (set + climb(windows)).clamp(1.0, f64::from(cap.max(1)))
}

/// How long after it was set to `set` the share is back at `cap` (zero when it is there
/// already): the inverse of [`climb`].
pub fn back_at_cap(set: f64, window: Duration, cap: u32) -> Duration {
    let short = f64::from(cap) - set;
    if short <= 0.0 {
        return Duration::ZERO;
    }
    let windows = DOUBLING * (short / climb_scale() + 1.0).log2();
    window.mul_f64(windows)
}

/// How a tenant at share `share` (calls per window) under a cap of `cap` and a limit of
/// `limit` spreads its calls: `(most calls in any window, least gap between two)`: at most
/// `⌊share⌋ + 1` (never more than the cap) and `(1 − OVERLAP) × window / share` apart. `None`
/// when the share is the whole limit: the strict window alone, as before shares (a tenant
/// alone uses all of it).
pub fn pace(share: f64, cap: u32, limit: u32, window: Duration) -> Option<(u32, Duration)> {
    if share >= f64::from(limit) || share <= 0.0 {
        return None;
    }
    let most = (share.floor() as u32 + 1).min(cap).max(1);
    Some((most, window.mul_f64((1.0 - OVERLAP) / share)))
}

/// `P(X ≥ n)` for `X ~ Poisson(mean)`.
fn poisson_tail(mean: f64, n: u32) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let mut term = (-mean).exp();
    let mut below = term;
    for i in 1..n {
        term *= mean / f64::from(i);
        below += term;
    }
    (1.0 - below).max(0.0)
}

/// The room a Poisson load of `mean` calls per window needs so that no more than
/// [`OTHER_REFUSED_TARGET`] of its calls find the window full: the least `n` with
/// `P(Poisson(mean) ≥ n) ≤ target`. A load of 10 needs 18 (1.4%), so a limit of 25 leaves us 7.
pub fn room_for(mean: f64) -> u32 {
    let mut n = 0;
    while n < 10_000 && poisson_tail(mean.max(0.0), n) > OTHER_REFUSED_TARGET {
        n += 1;
    }
    n
}

/// The other client's load, calls per window, that a share of `share` under a limit of
/// `limit` leaves whole: the largest mean whose [`room_for`] fits in `limit − share`. What
/// `status` shows as the estimated other use of a shared tenant.
pub fn other_use(limit: u32, share: f64) -> f64 {
    let room = (f64::from(limit) - share).floor().max(0.0) as u32;
    let (mut lo, mut hi) = (0.0_f64, f64::from(limit.max(1)));
    if poisson_tail(lo, room) > OTHER_REFUSED_TARGET {
        return 0.0;
    }
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if poisson_tail(mid, room) > OTHER_REFUSED_TARGET {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo
}

/// `share` to a hundredth, as status shows it.
pub fn shown(share: f64) -> f64 {
    (share * 100.0).round() / 100.0
}

/// The other clients' load a share leaves whole, to a tenth, while the share is cut below
/// the cap (`None` otherwise): what status shows.
pub fn other_use_shown(limit: u32, reserve: u32, share: f64) -> Option<f64> {
    (share < f64::from(cap(limit, reserve)))
        .then(|| (other_use(limit, share) * 10.0).round() / 10.0)
}

/// What a tenant's rate-limit answer means for its share.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusal {
    /// The share when the answer came ([`share_at`] of the stored one, or the cap).
    pub share: f64,
    /// The cap (`limit − reserve`).
    pub cap: u32,
    /// The tenant's effective limit.
    pub limit: u32,
    /// Our calls in the window, the refused one included.
    pub ours: u32,
    /// Time since the last cut; `None` when there was none.
    pub since_cut: Option<Duration>,
    /// The window.
    pub window: Duration,
}

/// The share after a rate-limit answer, or `None` when it stays as it is: the answer is
/// explained by our own calls, or the share was cut less than [`CUT_SPACING`] windows ago.
pub fn after_refusal(r: Refusal) -> Option<f64> {
    if r.ours > r.limit {
        return None;
    }
    let windows_since = r
        .since_cut
        .map(|d| d.as_secs_f64() / r.window.as_secs_f64());
    if windows_since.is_some_and(|w| w < CUT_SPACING) {
        return None;
    }
    let new = if r.share >= f64::from(r.cap) {
        // The first sign of another client: it just had at least `limit − (ours − 1)`
        // calls in the window. Leave that load its room, and go at least halfway down.
        let shown = f64::from(r.limit + 1) - f64::from(r.ours);
        let whole = f64::from(r.limit) - f64::from(room_for(shown));
        (r.share * HALVE).min(whole)
    } else if windows_since.is_some_and(|w| w < REPEAT_WINDOWS) {
        r.share * HALVE
    } else {
        r.share * CUT - CUT_STEP
    };
    Some(new.max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(5);

    fn refusal(share: f64, ours: u32, since_cut: Option<Duration>) -> Refusal {
        Refusal {
            share,
            cap: 25,
            limit: 25,
            ours,
            since_cut,
            window: W,
        }
    }

    #[test]
    fn cap_holds_its_floor_and_reason_follows_share() {
        assert_eq!(cap(25, 5), 20);
        assert_eq!(cap(3, 5), 1);
        assert_eq!(cap(1, 0), 1);
        assert_eq!(ShareReason::of(25, 25, 0, 25.0), ShareReason::Configured);
        assert_eq!(ShareReason::of(25, 10, 0, 10.0), ShareReason::LearnedLimit);
        assert_eq!(ShareReason::of(25, 25, 5, 20.0), ShareReason::Reserve);
        assert_eq!(ShareReason::of(25, 25, 5, 7.5), ShareReason::Shared);
    }

    #[test]
    fn room_for_a_load_of_ten_leaves_seven_of_twenty_five() {
        assert_eq!(room_for(10.0), 18);
        assert_eq!(room_for(0.0), 1);
        let u = other_use(25, 7.0);
        assert!((9.0..11.0).contains(&u), "{u}");
        assert_eq!(room_for(u), 18);
        assert_eq!(other_use(25, 25.0), 0.0);
    }

    #[test]
    fn the_first_answer_at_the_cap_cuts_to_what_leaves_the_shown_load_whole() {
        // 15 of ours in the window with the refused one: the other client had 11.
        let s = after_refusal(refusal(25.0, 15, None)).expect("a cut");
        assert_eq!(s, 25.0 - f64::from(room_for(11.0)));
        // Crowded out at the cap (24 of ours): at least halved.
        assert_eq!(after_refusal(refusal(25.0, 25, None)), Some(12.5));
        // Our own calls explain it: no cut.
        assert_eq!(after_refusal(refusal(25.0, 26, None)), None);
    }

    #[test]
    fn later_cuts_are_gentle_spaced_and_halve_when_they_come_fast() {
        let gentle = after_refusal(refusal(8.0, 8, Some(W * 4))).expect("a cut");
        assert!((gentle - (8.0 * CUT - CUT_STEP)).abs() < 1e-9);
        assert_eq!(after_refusal(refusal(8.0, 8, Some(W / 4))), None);
        assert_eq!(after_refusal(refusal(8.0, 8, Some(W * 3 / 4))), Some(4.0));
        assert_eq!(after_refusal(refusal(8.0, 8, Some(W * 19 / 10))), Some(4.0));
        assert_eq!(after_refusal(refusal(1.2, 1, Some(W * 3 / 4))), Some(1.0));
    }

    #[test]
    fn the_climb_is_slow_then_doubles_and_back_at_cap_inverts_it() {
        assert!((share_at(7.0, W, W, 25) - (7.0 + CLIMB)).abs() < 0.01);
        assert_eq!(share_at(7.0, W * 10_000, W, 25), 25.0);
        assert_eq!(share_at(0.2, Duration::ZERO, W, 25), 1.0);
        let back = back_at_cap(7.0, W, 25);
        assert!((share_at(7.0, back, W, 25) - 25.0).abs() < 1e-6);
        // Alone again from 7: back at the cap in under 10 minutes.
        assert!(back < Duration::from_secs(600), "{back:?}");
        assert_eq!(back_at_cap(25.0, W, 25), Duration::ZERO);
    }

    #[test]
    fn pacing_spreads_a_share_below_the_limit_only() {
        assert_eq!(pace(25.0, 25, 25, W), None);
        let (most, gap) = pace(7.0, 25, 25, W).expect("paced");
        assert_eq!(most, 8);
        assert_eq!(gap, W.mul_f64(0.95 / 7.0));
        assert_eq!(pace(24.5, 25, 25, W).expect("paced").0, 25);
        // A reserve is kept whole: at most the cap in any window.
        assert_eq!(pace(20.0, 20, 25, W).expect("paced").0, 20);
    }
}
