//! The shares, spent quotas and holds a scrape reads ([`QueuePulse`]), from a walk over the
//! tenants: in process that costs microseconds per thousand tenants, where the Redis
//! backend keeps indexes instead (`cut`, `quota`, `held:<kind>`; see its prelude.lua). Both
//! give the same counts and list the same tenants in the same order.

use std::time::Duration;

use tokio::time::Instant;

use super::state::{State, TenantState};
use crate::queue::{HeldCounts, HoldKind, QueuePulse, ShareReason, TenantShare, share};

impl TenantState {
    /// Until when its adaptive share is below its cap: it climbs one call per window from
    /// the share set at the last rate-limit answer; `None` when it is not cut now.
    fn cut_until(&self, now: Instant, span: Duration) -> Option<Instant> {
        let (share, since) = self.share?;
        let cap = share::cap(self.limit(), self.tenant.reserve);
        let until = since + share::back_at_cap(share, span, cap);
        (until > now).then_some(until)
    }

    /// Its share as `status` shows it.
    fn share_now(&self, now: Instant, span: Duration, adaptive: bool, today: u64) -> TenantShare {
        let exact = self.share(now, span, adaptive);
        TenantShare {
            tenant: self.tenant.name.clone(),
            limit: self.limit(),
            configured_limit: self.tenant.limit,
            reserve: self.tenant.reserve,
            share: self.cap(now, span, adaptive),
            share_calls: share::shown(exact),
            other_use: share::other_use_shown(self.limit(), self.tenant.reserve, exact),
            share_reason: ShareReason::of(
                self.tenant.limit,
                self.limit(),
                self.tenant.reserve,
                exact,
            ),
            calls_today: if self.today.0 == today {
                self.today.1
            } else {
                0
            },
            cut_until_ms: None,
            quota_until_ms: None,
        }
    }
}

impl State {
    /// Fills in `pulse`'s share cut, quota reached, held and shares (up to `top`), its
    /// latency list already set; `ms` turns an instant into ms since the epoch.
    pub(super) fn pulse_shares(
        &self,
        pulse: &mut QueuePulse,
        now: Instant,
        span: Duration,
        top: usize,
        ms: impl Fn(Instant) -> u64,
    ) {
        let mut cut: Vec<(Instant, &str)> = Vec::new();
        let mut parked: Vec<&str> = Vec::new();
        let mut held = HeldCounts::default();
        for t in self.tenants.values() {
            if let Some(until) = self.adaptive.then(|| t.cut_until(now, span)).flatten() {
                cut.push((until, &t.tenant.name));
            }
            if t.quota_until(now, &self.days).is_some() {
                parked.push(&t.tenant.name);
            }
            if let Some((h, until)) = &t.hold
                && until.is_none_or(|u| u > now)
            {
                match h.kind {
                    HoldKind::KeysRefused => held.keys_refused += 1,
                    HoldKind::HostUnreachable => held.host_unreachable += 1,
                    HoldKind::Paused => held.paused += 1,
                }
            }
        }
        // The longest to climb back first, as Redis orders `cut` (MINUS the moment, then
        // the name).
        cut.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        parked.sort_unstable();
        pulse.share_cut = cut.len() as u64;
        pulse.quota_reached = parked.len() as u64;
        pulse.held = held;
        let today = self.days.of(now);
        let mut shown: Vec<&str> = Vec::new();
        let listed = pulse.tenant_latency_ms.iter().map(|(t, _)| t.as_str());
        for name in cut.iter().map(|(_, n)| *n).chain(parked).chain(listed) {
            if shown.len() >= top {
                break;
            }
            if !shown.contains(&name) {
                shown.push(name);
            }
        }
        pulse.shares = shown
            .into_iter()
            .filter_map(|name| self.tenants.get(name))
            .map(|t| TenantShare {
                cut_until_ms: self
                    .adaptive
                    .then(|| t.cut_until(now, span))
                    .flatten()
                    .map(&ms),
                quota_until_ms: t.quota_until(now, &self.days).map(&ms),
                ..t.share_now(now, span, self.adaptive, today)
            })
            .collect();
    }
}
