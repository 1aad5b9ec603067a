//! A per-client rate limit on `POST /v1/jobs`: one producer stuck in a loop gets 429 with
//! `Retry-After`, and the others go on enqueueing.
//!
//! The client is the peer's IP address (an IPv6 address counts by its /64, which one host
//! usually holds whole), not the bearer token: `serve` has one token, shared by every
//! producer, so it cannot tell them apart. `X-Forwarded-For` is not read: any client can
//! write it. Behind a reverse proxy every client is the proxy, so the limit then holds for
//! all of them together (raise it or turn it off with 0).
//!
//! governor's keyed GCRA does the counting, in this process's memory: it allows a burst of
//! one second's worth and refills smoothly. That fits a guard against floods; it is not the
//! per-tenant LeadSquared limit, which must hold across processes (see docs/decisions.md).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// How often (in checks) the limiter forgets clients whose bucket is full again, so the
/// map of clients stays as small as the set of recent ones at an amortised cost.
const FORGET_EVERY: u64 = 1024;

/// The `--job-posts-per-client-per-sec` default: far above what a producer posting one job
/// per event or batches of up to 1000 needs, far below a loop that hammers the API.
pub const DEFAULT_PER_SEC: u32 = 100;

type Limiter<C> = RateLimiter<
    ClientKey,
    DefaultKeyedStateStore<ClientKey>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Who a request counts against: the peer's IPv4 address, or its IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The key of a peer address.
    pub fn of(peer: IpAddr) -> Self {
        match peer.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => ClientKey(v4),
        }
    }
}

/// A tower layer that limits each client to `per_sec` requests a second (a burst of as
/// many); 0 turns it off. Put it on one route with `MethodRouter::route_layer`.
pub struct PerClientLimit<C: Clock = DefaultClock> {
    /// None when the limit is off.
    limiter: Option<Arc<Limiter<C>>>,
    /// Checks so far, for the periodic forgetting of idle clients.
    checks: Arc<AtomicU64>,
}

// By hand: a derive would ask `C: Clone`, and only the `Arc`s are cloned.
impl<C: Clock> Clone for PerClientLimit<C> {
    fn clone(&self) -> Self {
        PerClientLimit {
            limiter: self.limiter.clone(),
            checks: self.checks.clone(),
        }
    }
}

impl PerClientLimit {
    /// `per_sec` requests a second per client on the real clock; 0: no limit.
    pub fn per_second(per_sec: u32) -> Self {
        Self::with_clock(per_sec, DefaultClock::default())
    }
}

impl<C: Clock> PerClientLimit<C> {
    /// The same on another clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(per_sec: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_sec)
            .map(|n| Arc::new(RateLimiter::dashmap_with_clock(Quota::per_second(n), clock)));
        PerClientLimit {
            limiter,
            checks: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Counts one request of `client`: `Ok` to go on, or how long until it may try again.
    pub fn check(&self, client: ClientKey) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    /// Clients the limiter remembers (those that used part of their burst lately).
    pub fn clients(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }

    /// The answer to a refused request: 429, `Retry-After` in whole seconds (rounded up,
    /// at least 1) and the API's usual error body.
    fn refusal(wait: Duration) -> Response {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let secs = secs.max(1);
        let body = serde_json::json!({
            "error": format!("too many requests from this client; retry after {secs} s"),
        });
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        response
    }
}

impl<S, C: Clock> tower::Layer<S> for PerClientLimit<C> {
    type Service = Limited<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited {
            inner,
            limit: self.clone(),
        }
    }
}

/// A service behind a [`PerClientLimit`].
pub struct Limited<S, C: Clock = DefaultClock> {
    inner: S,
    limit: PerClientLimit<C>,
}

impl<S: Clone, C: Clock> Clone for Limited<S, C> {
    fn clone(&self) -> Self {
        Limited {
            inner: self.inner.clone(),
            limit: self.limit.clone(),
        }
    }
}

impl<S, C> tower::Service<Request> for Limited<S, C>
where
    S: tower::Service<Request, Response = Response>,
    C: Clock,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // `serve` always records the peer; a router served without it counts every request
        // against one shared client rather than not at all.
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
        match self.limit.check(ClientKey::of(peer)) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(wait) => {
                tracing::debug!(%peer, ?wait, "POST /v1/jobs refused: client over its rate");
                Either::Right(ready(Ok(PerClientLimit::<C>::refusal(wait))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn key(ip: &str) -> ClientKey {
        ClientKey::of(ip.parse().unwrap())
    }

    #[test]
    fn a_burst_of_one_seconds_worth_then_one_per_interval_per_client() {
        let clock = FakeRelativeClock::default();
        let limit = PerClientLimit::with_clock(4, clock.clone());
        let (a, b) = (key("10.0.0.1"), key("10.0.0.2"));
        for _ in 0..4 {
            assert_eq!(limit.check(a), Ok(()));
        }
        assert_eq!(limit.check(a), Err(Duration::from_millis(250)));
        // Another client has its own burst.
        assert_eq!(limit.check(b), Ok(()));
        clock.advance(Duration::from_millis(249));
        assert_eq!(limit.check(a), Err(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(limit.check(a), Ok(()));
        assert_eq!(limit.check(a), Err(Duration::from_millis(250)));
    }

    #[test]
    fn zero_is_no_limit() {
        let limit = PerClientLimit::with_clock(0, FakeRelativeClock::default());
        for _ in 0..10_000 {
            assert_eq!(limit.check(key("10.0.0.1")), Ok(()));
        }
        assert_eq!(limit.clients(), 0);
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        let clock = FakeRelativeClock::default();
        let limit = PerClientLimit::with_clock(1, clock);
        assert_eq!(limit.check(key("2001:db8:1:2::1")), Ok(()));
        assert!(limit.check(key("2001:db8:1:2::2")).is_err());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let limit = PerClientLimit::with_clock(10, clock.clone());
        for i in 0..100u8 {
            assert_eq!(limit.check(key(&format!("10.0.1.{i}"))), Ok(()));
        }
        assert_eq!(limit.clients(), 100);
        // A second on, every bucket is full again: the next sweep drops them all but the
        // one client still sending.
        clock.advance(Duration::from_secs(1));
        for _ in 0..FORGET_EVERY {
            assert_eq!(limit.check(key("10.0.2.1")), Ok(()));
            clock.advance(Duration::from_millis(100));
        }
        assert_eq!(limit.clients(), 1);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        for (wait, header) in [
            (Duration::from_millis(1), "1"),
            (Duration::from_secs(1), "1"),
            (Duration::from_millis(1001), "2"),
            (Duration::ZERO, "1"),
        ] {
            let r = PerClientLimit::<DefaultClock>::refusal(wait);
            assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r.headers()[header::RETRY_AFTER], header, "{wait:?}");
        }
    }
}
