//! Tenant holds in the status view: both backends keep a held tenant's hold apart from its
//! row's counts, and [`merge`] puts them together the same way.

use std::time::Duration;

use super::{QueueStatus, TenantHold, TenantStatus, UnreachablePolicy};

/// The length of the `holds`-th hold of one run of unreachable-host failures: `base`
/// doubled per hold after the first, at most `max`, times the jitter. The Redis backend
/// computes the same in host_failed.lua.
pub fn backoff(policy: UnreachablePolicy, holds: u32) -> Duration {
    let doublings = holds.saturating_sub(1).min(40);
    let base = policy.base.as_micros().max(1) as f64;
    let max = policy.max.as_micros().max(1) as f64;
    let us = (base * 2f64.powi(doublings as i32)).min(max) * policy.jitter.clamp(0.5, 1.0);
    Duration::from_micros((us.floor() as u64).max(1))
}

/// The end, ms since the epoch, that stands for "until released" where a backend stores an
/// end time for every pause (Redis keeps `FOREVER_US` in `paused`; see prelude.lua).
pub const FOREVER_MS: u64 = 9_000_000_000_000;

/// Attaches each hold in force to its tenant's row (adding a row for a held tenant with
/// nothing else to show). An indefinite hold's pause end is not a time anyone should read:
/// the row shows the hold instead.
pub fn merge(status: &mut QueueStatus, holds: impl IntoIterator<Item = (String, TenantHold)>) {
    for (name, hold) in holds {
        if hold.until_ms.is_some_and(|u| u <= status.now_ms) {
            continue;
        }
        let at = match status.tenants.iter().position(|t| t.tenant == name) {
            Some(at) => at,
            None => {
                status.tenants.push(TenantStatus {
                    tenant: name,
                    ..TenantStatus::default()
                });
                status.tenants.len() - 1
            }
        };
        let row = &mut status.tenants[at];
        if hold.until_ms.is_none() {
            row.paused_until_ms = None;
            row.pause_reason = None;
        }
        row.hold = Some(hold);
    }
    for row in &mut status.tenants {
        if row.paused_until_ms.is_some_and(|p| p >= FOREVER_MS) {
            row.paused_until_ms = None;
        }
    }
    status.tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
}
