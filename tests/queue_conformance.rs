//! The `Queue` contract (src/queue/mod.rs), written once and run on both backends: each case
//! below is one function over a [`Harness`], and `conformance!` emits one `#[tokio::test]`
//! per case per backend (`redis::*` against a real Redis, `embedded::*` on tokio's paused
//! clock). This file is where the contract lives: a behaviour both backends must share is
//! pinned here, not in a backend's own tests (as River's driver suite and apalis'
//! `generic_storage_test!` do).
//!
//! Time is counted in ticks: 1 s on the paused clock, 100 ms of real time on Redis, so the
//! Redis half stays fast. The window is 5 ticks. Where a case can check a moment to the
//! microsecond, it does so on the paused clock only ([`Harness::exact`]); Redis runs the same
//! steps and checks what real time lets it.

mod common;
mod queue_support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lsq_webhooks::job::{JobId, JobResult, JobState};
use lsq_webhooks::queue::embedded::EmbeddedQueue;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::sharded::{ShardedQueue, shard_of};
use lsq_webhooks::queue::{
    Completion, Dispatch, Dispatched, Fence, HeldCounts, HoldKind, LeasedJob, NewHold, PageOf,
    Pushed, Queue, QueueConfig, QueueError, Requeue, ShareMode, ShareReason, TenantPage,
    TenantQuery, TenantRow, TenantSort, TenantState, TenantStatus, UnreachablePolicy, share,
};
use lsq_webhooks::tenant::Tenant;
use queue_support::{job, next_job, tenant};

/// Which backend a case runs on, and how time moves there.
#[derive(Clone, Copy, Debug)]
enum Harness {
    /// `EmbeddedQueue`, on tokio's paused clock.
    Embedded,
    /// `RedisQueue` on the test binary's Redis, in real time.
    Redis,
    /// `RedisQueue` on a 3-master Redis Cluster of the test binary's own, in real time.
    Cluster,
    /// `ShardedQueue` over 3 `EmbeddedQueue`s, on tokio's paused clock (issue 17).
    Sharded,
    /// `ShardedQueue` over 4 `RedisQueue` shards on the test cluster, in real time: the
    /// shards' hash tags spread over its nodes.
    ClusterSharded,
}

/// Shards of [`Harness::Sharded`].
const EMBEDDED_SHARDS: usize = 3;
/// Shards of [`Harness::ClusterSharded`].
const CLUSTER_SHARDS: u32 = 4;

impl Harness {
    /// The unit of every duration in the cases.
    fn tick(self) -> Duration {
        match self {
            Harness::Embedded | Harness::Sharded => Duration::from_secs(1),
            Harness::Redis | Harness::Cluster | Harness::ClusterSharded => {
                Duration::from_millis(100)
            }
        }
    }

    fn ticks(self, n: u32) -> Duration {
        self.tick() * n
    }

    /// The window every case runs with: 5 ticks.
    fn window(self) -> Duration {
        self.ticks(5)
    }

    /// Whether time is the paused clock, where moments can be checked exactly.
    fn exact(self) -> bool {
        matches!(self, Harness::Embedded | Harness::Sharded)
    }

    /// Whether the queue has several shards: the order in which tenants of different shards
    /// come is the shards' turn, not one ready set's.
    fn sharded(self) -> bool {
        matches!(self, Harness::Sharded | Harness::ClusterSharded)
    }

    /// A config of the case's own (own key prefix): window 5 ticks, lease 50 ticks, 3
    /// attempts.
    fn config(self, test: &str) -> QueueConfig {
        QueueConfig {
            name: common::unique_queue(test),
            window: self.window(),
            margin: Duration::ZERO,
            lease: self.ticks(50),
            max_attempts: 3,
            day: std::time::Duration::from_secs(86_400),
            share: Default::default(),
            slow_start: false,
        }
    }

    /// A queue made from `config`.
    async fn queue(self, config: QueueConfig) -> Arc<dyn Queue> {
        match self {
            Harness::Embedded => Arc::new(EmbeddedQueue::new(config)),
            Harness::Redis => Arc::new(queue_support::connect(config).await),
            Harness::Cluster => Arc::new(
                RedisQueue::connect(&common::cluster::cluster_url(), config)
                    .await
                    .expect("connect to the test cluster"),
            ),
            Harness::Sharded => Arc::new(
                ShardedQueue::new(
                    (0..EMBEDDED_SHARDS)
                        .map(|_| EmbeddedQueue::new(config.clone()))
                        .collect(),
                )
                .expect("shards"),
            ),
            Harness::ClusterSharded => Arc::new(
                ShardedQueue::connect(
                    &common::cluster::cluster_url(),
                    config,
                    Default::default(),
                    Some(CLUSTER_SHARDS),
                )
                .await
                .expect("connect to the test cluster"),
            ),
        }
    }

    /// A queue of the case's own with these tenants (name, calls per window), after `tune`
    /// has adjusted the config.
    async fn queue_with(
        self,
        test: &str,
        tenants: &[(&str, u32)],
        tune: impl FnOnce(&mut QueueConfig),
    ) -> Arc<dyn Queue> {
        let mut config = self.config(test);
        tune(&mut config);
        let q = self.queue(config).await;
        let ts: Vec<_> = tenants.iter().map(|(n, l)| tenant(n, *l)).collect();
        q.put_tenants(&ts).await.expect("tenants");
        q
    }

    /// Lets time pass: exactly `d` on the paused clock, at least `d` on Redis.
    async fn sleep(self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Lets wake-ups already under way arrive, so that the next wait starts clean: on Redis a
    /// message published before is given time to come in; the embedded queue's stored permit
    /// is taken after the dispatch.
    async fn quiet(self, q: &Arc<dyn Queue>, what: &str) {
        if let Harness::Redis | Harness::Cluster | Harness::ClusterSharded = self {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A dispatch that finds nothing is what a worker does before it waits.
        let found = q.dispatch().await.expect("dispatch");
        assert!(
            !matches!(found, Dispatch::Job(_)),
            "{what}: a job was dispatchable before the step: {found:?}"
        );
        q.wait_for_work(Duration::ZERO).await;
    }
}

fn ids(pushed: &[Pushed]) -> Vec<JobId> {
    pushed
        .iter()
        .map(|p| match p {
            Pushed::Enqueued { job } => job.clone(),
            other => panic!("not enqueued: {other:?}"),
        })
        .collect()
}

async fn push(q: &Arc<dyn Queue>, tenant: &str, range: std::ops::Range<usize>) -> Vec<JobId> {
    let jobs: Vec<_> = range.map(|n| job(tenant, n)).collect();
    ids(&q.push(&jobs).await.expect("push"))
}

async fn record(q: &Arc<dyn Queue>, id: &JobId) -> JobResult {
    q.job(id).await.expect("job").expect("the job exists")
}

fn only_job(d: Dispatch) -> LeasedJob {
    match d {
        Dispatch::Job(j) => j,
        other => panic!("expected a job, got {other:?}"),
    }
}

fn batch(d: Dispatched) -> Vec<LeasedJob> {
    match d {
        Dispatched::Jobs(j) => j,
        other => panic!("expected jobs, got {other:?}"),
    }
}

/// Dispatches `n` jobs, answering and completing each at once; returns them in order.
async fn drain(q: &Arc<dyn Queue>, n: usize) -> Vec<LeasedJob> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let j = next_job(q.as_ref()).await;
        q.answered(&j).await.expect("answered");
        q.complete(&j, "wh", false).await.expect("complete");
        out.push(j);
    }
    out
}

/// Dispatches until the job is handed out again (after a lease ran out, a retry came due);
/// other jobs must not come first.
async fn next_is(q: &Arc<dyn Queue>, id: &JobId) -> LeasedJob {
    let j = next_job(q.as_ref()).await;
    assert_eq!(&j.id, id, "another job came first: {j:?}");
    j
}

const BACK: Requeue = Requeue {
    spend_attempt: false,
    outcome_unknown: false,
};

/// Runs `step` while a worker waits in `wait_for_work` (for an hour), and checks that the
/// wait returns. Not a timing assertion: returning at all, long before the hour, is the
/// wake-up.
async fn wakes<F: Future<Output = ()>>(h: Harness, q: &Arc<dyn Queue>, what: &str, step: F) {
    h.quiet(q, what).await;
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.wait_for_work(Duration::from_secs(3600)).await })
    };
    tokio::task::yield_now().await;
    step.await;
    tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .unwrap_or_else(|_| panic!("{what} did not wake a waiting worker"))
        .expect("waiter");
}

// ---------------------------------------------------------------------------------------
// Push and idempotency

async fn push_then_dispatch_in_push_order(h: Harness) {
    let q = h.queue_with("order", &[("acme", 25)], |_| {}).await;
    let pushed = push(&q, "acme", 0..3).await;
    let r = record(&q, &pushed[2]).await;
    assert_eq!(
        (r.status, r.tenant.as_str(), r.key.as_str(), r.attempts),
        (JobState::Queued, "acme", job("acme", 2).key.as_str(), 0)
    );
    let j1 = next_job(q.as_ref()).await;
    assert_eq!(
        (&j1.id, j1.tenant.as_str(), j1.attempt, j1.outcome_unknown),
        (&pushed[0], "acme", 1, false)
    );
    assert_eq!((j1.key.clone(), j1.body.clone()), {
        let j = job("acme", 0);
        (j.key, j.body)
    });
    assert_eq!(j1.fenced_until, None);
    assert_eq!(record(&q, &j1.id).await.status, JobState::Running);
    q.complete(&j1, "wh-1", false).await.expect("complete");
    let j2 = next_job(q.as_ref()).await;
    assert_eq!(j2.id, pushed[1]);
    q.complete(&j2, "wh-2", true).await.expect("complete");
    let r = record(&q, &pushed[0]).await;
    assert_eq!(
        (
            r.status,
            r.webhook_id.as_deref(),
            r.attempts,
            r.reconciled,
            r.error
        ),
        (JobState::Done, Some("wh-1"), 1, false, None)
    );
    assert!(record(&q, &pushed[1]).await.reconciled);
    assert!(q.job(&JobId::new()).await.expect("job").is_none());
    assert!(!q.is_idle().await.expect("idle"));
    let j3 = next_job(q.as_ref()).await;
    assert!(!q.is_idle().await.expect("idle"), "a running job is work");
    q.complete(&j3, "wh-3", false).await.expect("complete");
    assert!(q.is_idle().await.expect("idle"));
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
    q.ping().await.expect("ping");
}

async fn push_is_idempotent_per_tenant_and_key(h: Harness) {
    let q = h
        .queue_with("idem", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    let first = q
        .push(&[job("acme", 1), job("acme", 2), job("acme", 1)])
        .await
        .expect("push");
    let Pushed::Enqueued { job: id1 } = first[0].clone() else {
        panic!("first use enqueued: {first:?}")
    };
    let Pushed::Enqueued { job: id2 } = first[1].clone() else {
        panic!("first use enqueued: {first:?}")
    };
    assert_eq!(first[2], Pushed::Duplicate { job: id1.clone() });
    let mut given = job("acme", 3);
    given.key = "given-key".into();
    let mut same_key = job("acme", 4);
    same_key.key = "given-key".into();
    let mut other_tenant = job("beta", 4);
    other_tenant.key = "given-key".into();
    let second = q
        .push(&[job("acme", 2), given, same_key, other_tenant])
        .await
        .expect("push");
    assert_eq!(second[0], Pushed::Duplicate { job: id2 });
    let Pushed::Enqueued { job: given_id } = second[1].clone() else {
        panic!("a new key is enqueued: {second:?}")
    };
    assert_eq!(second[2], Pushed::Duplicate { job: given_id });
    assert!(
        matches!(second[3], Pushed::Enqueued { .. }),
        "keys are per tenant"
    );
    assert_eq!(q.status().await.expect("status").queued, 4);
    assert_eq!(q.push(&[]).await.expect("push"), Vec::new());
}

async fn an_unknown_tenant_refuses_the_whole_push(h: Harness) {
    let q = h.queue_with("unknown", &[("acme", 25)], |_| {}).await;
    let mut jobs: Vec<_> = (0..1500).map(|n| job("acme", n)).collect();
    jobs.push(job("nobody", 1));
    match q.push(&jobs).await {
        Err(QueueError::UnknownTenant(t)) => assert_eq!(t, "nobody"),
        other => panic!("expected UnknownTenant, got {other:?}"),
    }
    assert_eq!(q.status().await.expect("status").queued, 0);
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
}

// ---------------------------------------------------------------------------------------
// Dispatch order, fairness and the strict window

async fn tenants_take_turns_and_none_waits_behind_a_busy_one(h: Harness) {
    let q = h
        .queue_with("fair", &[("busy", 25), ("other", 25), ("idle", 25)], |_| {})
        .await;
    push(&q, "busy", 0..100).await;
    push(&q, "other", 0..100).await;
    let mut first: Vec<String> = drain(&q, 6).await.into_iter().map(|j| j.tenant).collect();
    if h.sharded() {
        // Each shard in turn: the tenants alternate within a shard, and shards take turns.
        first.sort();
        assert_eq!(first, ["busy", "busy", "busy", "other", "other", "other"]);
    } else {
        assert_eq!(first, ["busy", "other", "busy", "other", "busy", "other"]);
    }
    push(&q, "idle", 0..1).await;
    // One round of the three tenants; on shards, a round of the shards with work (at most
    // two here) over a round of the tenants of its shard (at most two).
    let round = if h.sharded() { 4 } else { 3 };
    let next: Vec<String> = drain(&q, round)
        .await
        .into_iter()
        .map(|j| j.tenant)
        .collect();
    assert!(
        next.iter().any(|t| t == "idle"),
        "the idle tenant is served within one round: {next:?}"
    );

    // A tenant out of calls is skipped, not waited for.
    let q = h
        .queue_with("skip", &[("big", 3), ("small", 25)], |_| {})
        .await;
    push(&q, "big", 0..50).await;
    for _ in 0..3 {
        only_job(q.dispatch().await.expect("dispatch"));
    }
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    push(&q, "small", 0..1).await;
    assert_eq!(
        only_job(q.dispatch().await.expect("dispatch")).tenant,
        "small"
    );
    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => {
            assert!(d <= h.window(), "{d:?}");
            if h.exact() {
                assert_eq!(d, h.window());
            }
        }
        other => panic!("expected a wait for big's window, got {other:?}"),
    }
}

/// Asserts, for each tenant, that the most of its jobs dispatched in any window is exactly
/// the given number.
/// Shards of the harness's queue (1 for the unsharded backends).
fn shard_count(h: Harness) -> usize {
    match h {
        Harness::Sharded => EMBEDDED_SHARDS,
        Harness::ClusterSharded => CLUSTER_SHARDS as usize,
        _ => 1,
    }
}

/// Issue 17: a tenant whose shard is quiet waits no longer than one round of the tenants,
/// however much a busy shard holds: dispatches of 8 (a worker with 8 free slots) reach its
/// one job while twelve busy tenants on shard 0 still have hundreds waiting. (A dispatch
/// that always began at shard 0 would hand out 8 busy jobs every time.)
async fn a_tenant_on_a_quiet_shard_is_not_starved_by_a_busy_shard(h: Harness) {
    let n = shard_count(h);
    let on = |prefix: &str, shard: usize, count: usize| -> Vec<String> {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|t| shard_of(t, n) == shard)
            .take(count)
            .collect()
    };
    let busy = on("busy-", 0, 12);
    let quiet = on("quiet-", 1 % n, 1).remove(0);
    let mut tenants: Vec<(&str, u32)> = busy.iter().map(|t| (t.as_str(), 25)).collect();
    tenants.push((quiet.as_str(), 25));
    let q = h.queue_with("quiet-shard", &tenants, |_| {}).await;
    for t in &busy {
        push(&q, t, 0..25).await;
    }
    let quiet_job = push(&q, &quiet, 0..1).await.remove(0);
    let mut before = 0;
    'dispatch: loop {
        for j in batch(q.dispatch_many(8, None).await.expect("dispatch")) {
            q.complete(&j, "wh", false).await.expect("complete");
            if j.id == quiet_job {
                break 'dispatch;
            }
            before += 1;
        }
        assert!(
            before <= busy.len(),
            "{before} busy jobs came before the quiet tenant's"
        );
    }
    assert!(before <= busy.len(), "{before} busy jobs came first");
    assert!(
        q.status().await.expect("status").queued >= 200,
        "the busy shard still holds most of its jobs"
    );
}

fn assert_most_in_a_window(h: &Harness, got: &[LeasedJob], expected: &[(&str, usize)]) {
    let window_ms = h.window().as_millis() as u64;
    for &(name, most) in expected {
        let times: Vec<u64> = got
            .iter()
            .filter(|j| j.tenant == name)
            .map(|j| j.dispatched_at_ms)
            .collect();
        assert_eq!(
            most_in_a_window(&times, window_ms),
            most,
            "tenant {name}: {times:?}"
        );
    }
}

/// The most calls in any window `[t, t + window)` of these dispatch times (ms).
fn most_in_a_window(times: &[u64], window_ms: u64) -> usize {
    times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < start + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0)
}

async fn never_more_than_limit_calls_in_any_window(h: Harness) {
    let q = h.queue_with("strict", &[("a", 5), ("b", 3)], |_| {}).await;
    push(&q, "a", 0..15).await;
    push(&q, "b", 0..7).await;
    let got = drain(&q, 22).await;
    assert_most_in_a_window(&h, &got, &[("a", 5), ("b", 3)]);
    if h.exact() {
        // A sliding log loses nothing: 15 calls at 5 per window take 2 windows after the
        // first burst.
        let a: Vec<u64> = got
            .iter()
            .filter(|j| j.tenant == "a")
            .map(|j| j.dispatched_at_ms)
            .collect();
        assert_eq!(a[14] - a[0], 2 * h.window().as_millis() as u64);
    }
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
}

async fn answered_restamps_the_call_so_slow_answers_push_the_window_later(h: Harness) {
    let q = h.queue_with("answered", &[("acme", 2)], |_| {}).await;
    push(&q, "acme", 0..3).await;
    let j1 = next_job(q.as_ref()).await;
    let j2 = next_job(q.as_ref()).await;
    // The answers take 2 ticks: LeadSquared may have seen the calls as late as that.
    h.sleep(h.ticks(2)).await;
    let answered_ms = q.status().await.expect("status").now_ms;
    q.answered(&j1).await.expect("answered");
    q.answered(&j2).await.expect("answered");
    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => {
            if h.exact() {
                assert_eq!(d, h.window(), "the window now runs from the answers");
            }
        }
        other => panic!("expected a wait, got {other:?}"),
    }
    assert_eq!(
        q.status().await.expect("status").tenants[0].calls_in_window,
        2
    );
    let j3 = next_job(q.as_ref()).await;
    assert!(j3.dispatched_at_ms >= answered_ms + h.window().as_millis() as u64);
    // `answered` needs no lease: a call whose lease is gone is re-stamped all the same.
    q.complete(&j1, "wh", false).await.expect("complete");
    q.answered(&j1).await.expect("answered without a lease");
}

async fn every_finishing_path_restamps_the_call(h: Harness) {
    type Finish = fn(Arc<dyn Queue>, LeasedJob) -> futures::future::BoxFuture<'static, ()>;
    let paths: [(&str, Finish); 5] = [
        ("complete", |q, j| {
            Box::pin(async move { q.complete(&j, "wh", false).await.expect("complete") })
        }),
        ("retry_later", |q, j| {
            Box::pin(async move {
                q.retry_later(&j, Duration::from_secs(3600), "HTTP 503", false)
                    .await
                    .expect("retry")
            })
        }),
        ("rate_limited", |q, j| {
            Box::pin(async move {
                q.rate_limited(&j, Duration::ZERO, None)
                    .await
                    .expect("rate limited")
            })
        }),
        ("requeue", |q, j| {
            Box::pin(async move { q.requeue(&j, BACK).await.expect("requeue") })
        }),
        ("bury", |q, j| {
            Box::pin(async move { q.bury(&j, "refused").await.expect("bury") })
        }),
    ];
    for (name, finish) in paths {
        let q = h.queue_with("restamp", &[("acme", 1)], |_| {}).await;
        push(&q, "acme", 0..3).await;
        let j = next_job(q.as_ref()).await;
        h.sleep(h.ticks(2)).await;
        let answered_ms = q.status().await.expect("status").now_ms;
        finish(q.clone(), j).await;
        let next = next_job(q.as_ref()).await;
        assert!(
            next.dispatched_at_ms >= answered_ms + h.window().as_millis() as u64,
            "{name}: the next call came within a window of the answer"
        );
    }
}

async fn sending_restamps_the_call_so_a_late_create_counts_from_when_it_goes_out(h: Harness) {
    let q = h
        .queue_with("restamp-sending", &[("acme", 1)], |_| {})
        .await;
    push(&q, "acme", 0..2).await;
    let j = next_job(q.as_ref()).await;
    // The worker was slow to send: the fence, taken just before the Create goes out, moves
    // the call to now, and the next call waits a whole window from there.
    h.sleep(h.ticks(2)).await;
    let sent_ms = q.status().await.expect("status").now_ms;
    assert!(q.sending(&j, h.ticks(1)).await.expect("sending"));
    // Its answer, a tick later, is reported as of before the send: only the send's stamp
    // can make the next call wait (and the call is no longer in flight).
    h.sleep(h.tick()).await;
    let answered_early = Completion {
        answered_ago: h.ticks(3),
        ..completion(&j, "wh", false, None)
    };
    q.complete_many(&[answered_early]).await.expect("complete");
    let next = next_job(q.as_ref()).await;
    assert!(
        next.dispatched_at_ms >= sent_ms + h.window().as_millis() as u64,
        "the next call came within a window of the late Create: {} < {} + window",
        next.dispatched_at_ms,
        sent_ms
    );
    // A plain heartbeat does not move the call.
    let q = h
        .queue_with("restamp-heartbeat", &[("acme", 1)], |_| {})
        .await;
    push(&q, "acme", 0..2).await;
    let j = next_job(q.as_ref()).await;
    h.sleep(h.ticks(2)).await;
    assert!(q.heartbeat(&j).await.expect("heartbeat"));
    let answered_early = Completion {
        answered_ago: h.ticks(2),
        ..completion(&j, "wh", false, None)
    };
    q.complete_many(&[answered_early]).await.expect("complete");
    let next = next_job(q.as_ref()).await;
    if h.exact() {
        assert_eq!(
            next.dispatched_at_ms,
            j.dispatched_at_ms + h.window().as_millis() as u64
        );
    }
}

// ---------------------------------------------------------------------------------------
// Batch dispatch

async fn dispatch_many_hands_out_what_single_dispatches_would(h: Harness) {
    let q = h
        .queue_with("batch", &[("a", 2), ("b", 2), ("c", 1)], |_| {})
        .await;
    let mut jobs = Vec::new();
    for n in 0..3 {
        for t in ["a", "b", "c"] {
            jobs.push(job(t, n));
        }
    }
    q.push(&jobs).await.expect("push");
    let got = batch(q.dispatch_many(100, None).await.expect("dispatch"));
    let mut order: Vec<&str> = got.iter().map(|j| j.tenant.as_str()).collect();
    if h.sharded() {
        // One shard's jobs after another's: the same jobs, each tenant's in its order.
        for t in ["a", "b", "c"] {
            let mine: Vec<&JobId> = got
                .iter()
                .filter(|j| j.tenant == t)
                .map(|j| &j.id)
                .collect();
            let mut sorted = mine.clone();
            sorted.sort();
            assert_eq!(mine, sorted, "{t}'s jobs in push order");
        }
        order.sort();
        assert_eq!(order, ["a", "a", "b", "b", "c"]);
    } else {
        assert_eq!(order, ["a", "b", "c", "a", "b"]);
    }
    let leases: std::collections::BTreeSet<&str> = got.iter().map(|j| j.lease.as_str()).collect();
    assert_eq!(leases.len(), got.len(), "every job has its own lease");
    assert!(
        got.iter()
            .all(|j| j.fenced_until.is_none() && j.attempt == 1)
    );
    // Every tenant has spent its limit: the next call is a window after the first.
    match q.dispatch_many(100, None).await.expect("dispatch") {
        Dispatched::Wait(d) => {
            assert!(d <= h.window(), "{d:?}");
            if h.exact() {
                assert_eq!(d, h.window());
            }
        }
        other => panic!("expected a wait, got {other:?}"),
    }
    for j in &got {
        q.complete(j, "wh", false).await.expect("complete");
    }
    let s = q.status().await.expect("status");
    assert_eq!((s.done, s.running, s.queued), (5, 0, 4));
    // At most the number asked for.
    let q = h.queue_with("batch-max", &[("a", 25)], |_| {}).await;
    push(&q, "a", 0..10).await;
    assert_eq!(
        batch(q.dispatch_many(4, None).await.expect("dispatch")).len(),
        4
    );
    // (The batch's last job was dispatched as if 3 µs later: its tenant's turn is then.)
    h.sleep(h.tick()).await;
    assert_eq!(
        batch(q.dispatch_many(0, None).await.expect("dispatch")).len(),
        1,
        "at least one"
    );
}

/// The n-th job of a batch is dispatched as by a call of its own n µs after the first, so
/// its call leaves the window n µs later too.
async fn dispatch_many_stamps_the_nth_job_n_microseconds_later(h: Harness) {
    let q = h.queue_with("batch-time", &[("a", 3)], |_| {}).await;
    push(&q, "a", 0..6).await;
    let first = batch(q.dispatch_many(3, None).await.expect("dispatch"));
    assert_eq!(first.len(), 3);
    // Their answers come at once (no later than their stamps): out of flight, stamps kept.
    for j in &first {
        q.answered(j).await.expect("answered");
    }
    if h.exact() {
        // One window on: the first call left it; the second stays in it 1 µs longer, the
        // third 2 µs, so single dispatches go out 1 µs apart.
        tokio::time::advance(h.window()).await;
        for n in 0..3 {
            only_job(q.dispatch().await.expect("dispatch"));
            if n < 2 {
                assert_eq!(
                    q.dispatch().await.expect("dispatch"),
                    Dispatch::Wait(Duration::from_micros(1)),
                    "after the {n}-th"
                );
                tokio::time::advance(Duration::from_micros(1)).await;
            }
        }
    } else {
        // Microseconds are below what real time resolves: once the window has passed, the
        // next batch goes whole.
        h.sleep(h.window() + h.tick()).await;
        assert_eq!(
            batch(q.dispatch_many(3, None).await.expect("dispatch")).len(),
            3
        );
    }
    assert_eq!(q.status().await.expect("status").running, 6);
}

// ---------------------------------------------------------------------------------------
// Leases, fences and hand-backs

/// A completion repeated because its first answer was lost (a failover, a reset) or not
/// acknowledged by the replicas (issue 16) is recognised: the job is done with that Id, so
/// the repeat succeeds and changes nothing; a repeat with another Id is refused.
async fn a_completion_repeated_with_its_id_is_recognised(h: Harness) {
    let q = h
        .queue_with("complete-again", &[("acme", 25)], |_| {})
        .await;
    let pushed = push(&q, "acme", 0..1).await;
    let held = next_job(q.as_ref()).await;
    q.complete(&held, "wh-1", false).await.expect("complete");
    q.complete(&held, "wh-1", false)
        .await
        .expect("the same completion again is recognised");
    let other = q.complete(&held, "wh-2", false).await;
    assert!(
        matches!(&other, Err(QueueError::LeaseLost(id)) if *id == pushed[0]),
        "{other:?}"
    );
    let r = record(&q, &pushed[0]).await;
    assert_eq!(
        (r.status, r.webhook_id.as_deref(), r.attempts),
        (JobState::Done, Some("wh-1"), 1)
    );
    assert_eq!(q.status().await.expect("status").done, 1);
}

/// A batch of completions records each as `complete` would, with its history entry: a
/// repeat with its Id is recognised, a lost lease records nothing (its call still goes in
/// the history), and the counters and sets move once for all.
async fn complete_many_records_each_job_as_complete_does(h: Harness) {
    let q = h
        .queue_with("complete-many", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    let mut pushed = push(&q, "acme", 0..2).await;
    pushed.extend(push(&q, "beta", 0..2).await);
    let mut jobs = Vec::new();
    for _ in 0..4 {
        jobs.push(next_job(q.as_ref()).await);
    }
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    q.complete(&jobs[0], "wh-0", false).await.expect("complete");
    let mut stale = jobs[3].clone();
    stale.lease = "not-the-lease".into();
    let (a1, a2, a3) = (
        attempt(1, "created"),
        attempt(2, "found"),
        attempt(3, "created"),
    );
    let batch = [
        completion(&jobs[0], "wh-0", false, None),
        completion(&jobs[1], "wh-1", false, Some(&a1)),
        completion(&jobs[2], "wh-2", true, Some(&a2)),
        completion(&stale, "wh-3", false, Some(&a3)),
    ];
    assert_eq!(
        q.complete_many(&batch).await.expect("complete_many"),
        [true, true, true, false]
    );
    assert!(q.complete_many(&[]).await.expect("empty batch").is_empty());
    for (j, id, reconciled) in [(&jobs[1], "wh-1", false), (&jobs[2], "wh-2", true)] {
        let r = record(&q, &j.id).await;
        assert_eq!(
            (r.status, r.webhook_id.as_deref(), r.reconciled),
            (JobState::Done, Some(id), reconciled)
        );
    }
    assert_eq!(q.attempts(&jobs[1].id).await.expect("attempts"), [a1]);
    assert_eq!(q.attempts(&jobs[2].id).await.expect("attempts"), [a2]);
    assert_eq!(record(&q, &jobs[3].id).await.status, JobState::Running);
    assert_eq!(q.attempts(&jobs[3].id).await.expect("attempts"), [a3]);
    let status = q.status().await.expect("status");
    assert_eq!((status.done, status.running), (3, 1));
    q.complete(&jobs[3], "wh-3", false).await.expect("complete");
    assert_eq!(q.status().await.expect("status").done, 4);
}

/// A batched completion re-stamps each call at the moment its answer arrived: the store's
/// now less `answered_ago`, and never earlier than the call was stamped before.
async fn complete_many_restamps_each_call_when_its_answer_arrived(h: Harness) {
    // (how long before the batch the answer arrived, the wait after it, in ticks)
    for (ago, wait) in [(2, 3), (50, 1)] {
        let q = h
            .queue_with("complete-many-stamp", &[("acme", 1)], |_| {})
            .await;
        push(&q, "acme", 0..2).await;
        let j = next_job(q.as_ref()).await;
        h.sleep(h.ticks(4)).await;
        let now_ms = q.status().await.expect("status").now_ms;
        let a = attempt(1, "created");
        let c = Completion {
            answered_ago: h.ticks(ago),
            ..completion(&j, "wh", false, Some(&a))
        };
        assert_eq!(q.complete_many(&[c]).await.expect("complete_many"), [true]);
        // Answered 2 ticks ago (2 after the dispatch): the window runs from then, 3 ticks
        // on. An answer older than the dispatch leaves the dispatch's stamp: 1 tick on.
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Wait(d) if h.exact() => assert_eq!(d, h.ticks(wait), "ago {ago}"),
            Dispatch::Wait(_) => {}
            other => panic!("ago {ago}: expected a wait, got {other:?}"),
        }
        let from = now_ms
            .saturating_sub(h.ticks(ago).as_millis() as u64)
            .max(j.dispatched_at_ms);
        let next = next_job(q.as_ref()).await;
        assert!(
            next.dispatched_at_ms >= from + h.window().as_millis() as u64,
            "ago {ago}: the next call came within a window of the answer"
        );
        if !h.exact() {
            // Real time: the stamp is no later than now either, so the wait was shorter
            // than a whole window from now.
            assert!(next.dispatched_at_ms < now_ms + h.window().as_millis() as u64);
        }
    }
}

fn completion<'a>(
    job: &'a LeasedJob,
    webhook_id: &'a str,
    reconciled: bool,
    attempt: Option<&'a lsq_webhooks::job::Attempt>,
) -> Completion<'a> {
    Completion {
        job,
        webhook_id,
        reconciled,
        outcome: lsq_webhooks::job::Outcome::Created,
        attempt,
        answered_ago: Duration::ZERO,
    }
}

async fn an_expired_lease_is_taken_back_and_the_old_holder_refused(h: Harness) {
    let q = h
        .queue_with("lease", &[("acme", 25)], |c| c.lease = h.ticks(3))
        .await;
    let pushed = push(&q, "acme", 0..1).await;
    let first = next_job(q.as_ref()).await;
    // Heartbeats keep it.
    h.sleep(h.ticks(2)).await;
    assert!(q.heartbeat(&first).await.expect("heartbeat"));
    h.sleep(h.ticks(2)).await;
    assert!(q.heartbeat(&first).await.expect("heartbeat"));
    // Nothing to hand out, but the lease is out: the dispatch says when it expires (its job
    // comes back then with no wake-up), not "empty" (which lets a sharded queue skip a
    // shard until a wake-up).
    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) if h.exact() => assert_eq!(d, h.ticks(3)),
        Dispatch::Wait(d) => assert!(d > h.ticks(2) && d <= h.ticks(3), "{d:?}"),
        other => panic!("expected a wait for the lease, got {other:?}"),
    }
    assert_eq!(q.status().await.expect("status").running, 1);
    // Silence past the lease: taken back, the attempt counted, the outcome unknown.
    h.sleep(h.ticks(4)).await;
    let second = next_is(&q, &pushed[0]).await;
    assert_eq!((second.attempt, second.outcome_unknown), (2, true));
    assert_ne!(second.lease, first.lease);
    assert_eq!(
        record(&q, &second.id).await.error.as_deref(),
        Some("lease expired (the worker died or hung); handed back to be reconciled")
    );
    assert!(!q.heartbeat(&first).await.expect("heartbeat"));
    assert!(
        !q.sending(&first, h.ticks(1)).await.expect("sending"),
        "a lost lease may not send"
    );
    for refused in [
        q.complete(&first, "wh-stale", false).await,
        q.bury(&first, "x").await,
        q.retry_later(&first, Duration::ZERO, "x", false).await,
        q.rate_limited(&first, Duration::ZERO, None).await,
        q.requeue(&first, BACK).await,
    ] {
        assert!(
            matches!(&refused, Err(QueueError::LeaseLost(id)) if *id == pushed[0]),
            "{refused:?}"
        );
    }
    q.complete(&second, "wh-1", true).await.expect("complete");
    let r = record(&q, &pushed[0]).await;
    assert_eq!(
        (r.status, r.webhook_id.as_deref(), r.attempts, r.reconciled),
        (JobState::Done, Some("wh-1"), 2, true)
    );
}

async fn an_expired_lease_with_no_attempts_left_buries_the_job(h: Harness) {
    let q = h
        .queue_with("killer", &[("acme", 25)], |c| {
            c.lease = h.ticks(2);
            c.max_attempts = 2;
        })
        .await;
    let pushed = push(&q, "acme", 0..1).await;
    assert_eq!(next_job(q.as_ref()).await.attempt, 1);
    assert_eq!(next_job(q.as_ref()).await.attempt, 2);
    h.sleep(h.ticks(3)).await;
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
    let dead = q.dead().await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].job, pushed[0]);
    assert_eq!(
        dead[0].error.as_deref(),
        Some("lease expired with all 2 attempts spent (the worker died or hung holding the job)")
    );
    assert_eq!(dead[0].status, JobState::Dead);
}

async fn a_lease_lost_mid_create_waits_until_the_call_can_no_longer_land(h: Harness) {
    let q = h
        .queue_with("inflight", &[("acme", 25)], |c| c.lease = h.ticks(2))
        .await;
    let pushed = push(&q, "acme", 0..1).await;
    let first = next_job(q.as_ref()).await;
    let fenced_ms = q.status().await.expect("status").now_ms;
    assert!(q.sending(&first, h.ticks(10)).await.expect("fence"));
    // The lease (2 ticks) runs out, the Create's time (10 ticks) does not: the job waits in
    // the schedule, not in its tenant's list.
    h.sleep(h.ticks(3)).await;
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    let r = record(&q, &first.id).await;
    assert_eq!(r.status, JobState::Scheduled);
    assert_eq!(
        r.error.as_deref(),
        Some(
            "lease expired mid-call (the worker died or hung); reconciled once that call can \
             no longer land"
        )
    );
    let second = next_is(&q, &pushed[0]).await;
    assert!(second.dispatched_at_ms >= fenced_ms + h.ticks(10).as_millis() as u64);
    assert_eq!((second.attempt, second.outcome_unknown), (2, true));
    assert!(!q.sending(&first, h.ticks(1)).await.expect("fence"));
    assert!(!q.heartbeat(&first).await.expect("heartbeat"));
    q.complete(&second, "wh-1", true).await.expect("complete");
}

async fn a_fenced_dispatch_waits_for_the_create_like_the_explicit_fence(h: Harness) {
    let q = h
        .queue_with("fenced", &[("acme", 25)], |c| c.lease = h.ticks(2))
        .await;
    let pushed = push(&q, "acme", 0..1).await;
    let fence = Fence {
        slack: h.ticks(1),
        in_flight: h.ticks(9),
    };
    let asked = tokio::time::Instant::now();
    let first = batch(q.dispatch_many(4, Some(fence)).await.expect("dispatch")).remove(0);
    let until = first
        .fenced_until
        .expect("a Create is fenced by its dispatch");
    assert!(until >= asked + fence.slack);
    if h.exact() {
        assert_eq!(until, asked + fence.slack);
    }
    // The holder goes silent (no `sending`, no heartbeat).
    h.sleep(h.ticks(3)).await;
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    assert_eq!(record(&q, &first.id).await.status, JobState::Scheduled);
    let second = next_is(&q, &pushed[0]).await;
    assert!(second.dispatched_at_ms >= first.dispatched_at_ms + h.ticks(10).as_millis() as u64);
    assert_eq!((second.attempt, second.outcome_unknown), (2, true));
    // A reconcile only Retrieves: never fenced.
    q.requeue(
        &second,
        Requeue {
            spend_attempt: false,
            outcome_unknown: true,
        },
    )
    .await
    .expect("requeue");
    let third = batch(q.dispatch_many(4, Some(fence)).await.expect("dispatch")).remove(0);
    assert_eq!((third.outcome_unknown, third.fenced_until), (true, None));
}

async fn a_hand_back_mid_create_waits_and_other_finishes_forget_the_fence(h: Harness) {
    let q = h.queue_with("handback", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..2).await;
    let mid_call = Requeue {
        spend_attempt: false,
        outcome_unknown: true,
    };
    // Abandoned mid-Create (shutdown's hard stop): scheduled until the call cannot land.
    let a = next_job(q.as_ref()).await;
    assert!(
        q.sending(&a, Duration::from_secs(3600))
            .await
            .expect("fence")
    );
    q.requeue(&a, mid_call).await.expect("requeue");
    let r = record(&q, &a.id).await;
    assert_eq!((r.status, r.attempts), (JobState::Scheduled, 0));
    assert_eq!(
        r.error.as_deref(),
        Some("handed back mid-call; reconciled once that call can no longer land")
    );
    // Handed back before its Create was sent: straight to the front.
    let b = next_job(q.as_ref()).await;
    assert_ne!(b.id, a.id);
    q.requeue(&b, mid_call).await.expect("requeue");
    let b = next_is(&q, &b.id).await;
    assert_eq!((b.attempt, b.outcome_unknown), (1, true));
    // A Create that answered (a transient failure) clears the fence: the retry comes when
    // the worker said, not an hour later.
    assert!(
        q.sending(&b, Duration::from_secs(3600))
            .await
            .expect("fence")
    );
    q.retry_later(&b, h.ticks(1), "HTTP 500", true)
        .await
        .expect("retry");
    let again = next_is(&q, &b.id).await;
    assert!(again.outcome_unknown);
    // A reconcile that found nothing goes back to the front at once, fence or not.
    assert!(
        q.sending(&again, Duration::from_secs(3600))
            .await
            .expect("fence")
    );
    q.requeue(&again, BACK).await.expect("requeue");
    let create = next_is(&q, &b.id).await;
    assert!(!create.outcome_unknown);
    let s = q.status().await.expect("status");
    assert_eq!((s.scheduled, s.running, s.queued), (1, 1, 0));
}

// ---------------------------------------------------------------------------------------
// Finishing paths

async fn retry_later_schedules_at_the_front_then_gives_up(h: Harness) {
    let q = h.queue_with("retry", &[("acme", 25)], |_| {}).await;
    let pushed = push(&q, "acme", 0..3).await;
    let j = next_job(q.as_ref()).await;
    q.retry_later(&j, h.ticks(3), "HTTP 503", true)
        .await
        .expect("retry");
    let r = record(&q, &j.id).await;
    assert_eq!(
        (r.status, r.error.as_deref(), r.attempts),
        (JobState::Scheduled, Some("HTTP 503"), 1)
    );
    assert_eq!(q.status().await.expect("status").scheduled, 1);
    // Not before it is due; then before the jobs that never ran.
    let other = next_job(q.as_ref()).await;
    assert_eq!(other.id, pushed[1]);
    q.complete(&other, "wh", false).await.expect("complete");
    h.sleep(h.ticks(3)).await;
    let again = next_is(&q, &pushed[0]).await;
    assert_eq!((again.attempt, again.outcome_unknown), (2, true));
    // An unknown outcome stays unknown: a transient failure proves nothing.
    q.retry_later(&again, Duration::ZERO, "timeout", false)
        .await
        .expect("retry");
    let last = next_is(&q, &pushed[0]).await;
    assert_eq!((last.attempt, last.outcome_unknown), (3, true));
    q.retry_later(&last, Duration::ZERO, "HTTP 502", false)
        .await
        .expect("retry");
    let r = record(&q, &pushed[0]).await;
    assert_eq!(
        (r.status, r.attempts, r.error.as_deref()),
        (
            JobState::Dead,
            3,
            Some("gave up after 3 attempts: HTTP 502")
        )
    );
    assert_eq!(q.status().await.expect("status").scheduled, 0);
}

async fn rate_limited_with_a_limit_pauses_gives_back_the_attempt_and_learns_it(h: Harness) {
    // Fixed shares: this case is about the pause and the learned limit (the adaptive
    // share's cases are below).
    let q = h
        .queue_with("paused", &[("acme", 25), ("beta", 25)], |c| {
            c.share = ShareMode::Fixed
        })
        .await;
    let pushed = push(&q, "acme", 0..10).await;
    let j = next_job(q.as_ref()).await;
    let before_ms = q.status().await.expect("status").now_ms;
    q.rate_limited(&j, h.ticks(4), Some(3))
        .await
        .expect("rate limited");
    let s = q.status().await.expect("status");
    let acme = s.tenants.iter().find(|t| t.tenant == "acme").expect("acme");
    assert_eq!((acme.limit, acme.waiting), (3, 10));
    assert_eq!(
        acme.pause_reason.as_deref(),
        Some("rate limited by LeadSquared (limit of 3 per window)")
    );
    let paused_until = acme.paused_until_ms.expect("paused");
    assert!(paused_until >= before_ms + h.ticks(4).as_millis() as u64);
    assert_eq!(
        q.tenant("acme").await.expect("tenant").expect("acme").limit,
        3
    );
    let r = record(&q, &j.id).await;
    assert_eq!((r.status, r.attempts), (JobState::Queued, 0));
    // Another tenant is not held up.
    push(&q, "beta", 0..1).await;
    let b = next_job(q.as_ref()).await;
    assert_eq!(b.tenant, "beta");
    q.complete(&b, "wh", false).await.expect("complete");
    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => {
            if h.exact() {
                assert_eq!(d, h.ticks(4));
            }
        }
        other => panic!("acme is paused, expected a wait, got {other:?}"),
    }
    let again = next_is(&q, &pushed[0]).await;
    assert_eq!(again.attempt, 1, "the rate-limited attempt was given back");
    assert!(again.dispatched_at_ms >= paused_until);
    q.complete(&again, "wh", false).await.expect("complete");
    // From now on, 3 per window.
    let rest: Vec<u64> = drain(&q, 8)
        .await
        .iter()
        .map(|j| j.dispatched_at_ms)
        .collect();
    assert_eq!(
        most_in_a_window(&rest, h.window().as_millis() as u64),
        3,
        "{rest:?}"
    );
    // The learned limit outlives re-imports with a higher one; a lower one wins.
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    assert_eq!(
        q.tenant("acme").await.expect("tenant").expect("acme").limit,
        3
    );
    q.put_tenants(&[tenant("acme", 2)]).await.expect("tenants");
    assert_eq!(
        q.tenant("acme").await.expect("tenant").expect("acme").limit,
        2
    );
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    assert_eq!(
        q.tenant("acme").await.expect("tenant").expect("acme").limit,
        3
    );
}

async fn rate_limited_without_a_limit_pauses_and_keeps_the_limit(h: Harness) {
    let q = h.queue_with("paused-plain", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..2).await;
    let j = next_job(q.as_ref()).await;
    q.rate_limited(&j, h.ticks(4), None)
        .await
        .expect("rate limited");
    let s = q.status().await.expect("status");
    let acme = &s.tenants[0];
    assert_eq!(acme.limit, 25);
    assert_eq!(
        acme.pause_reason.as_deref(),
        Some("rate limited by LeadSquared")
    );
    // A larger limit named than the tenant's is not learned.
    let q = h.queue_with("paused-high", &[("acme", 5)], |_| {}).await;
    push(&q, "acme", 0..1).await;
    let j = next_job(q.as_ref()).await;
    q.rate_limited(&j, h.ticks(1), Some(50))
        .await
        .expect("rate limited");
    let s = q.status().await.expect("status");
    assert_eq!(s.tenants[0].limit, 5);
    assert_eq!(
        s.tenants[0].pause_reason.as_deref(),
        Some("rate limited by LeadSquared (limit of 50 per window)")
    );
    // A shorter pause does not cut a longer one short, nor replace its reason.
    let q = h.queue_with("paused-twice", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..2).await;
    let a = next_job(q.as_ref()).await;
    let b = next_job(q.as_ref()).await;
    q.rate_limited(&a, h.ticks(20), Some(10))
        .await
        .expect("rate limited");
    let long = q.status().await.expect("status").tenants[0].clone();
    q.rate_limited(&b, h.ticks(1), None)
        .await
        .expect("rate limited");
    let after = q.status().await.expect("status").tenants[0].clone();
    assert_eq!(after.paused_until_ms, long.paused_until_ms);
    assert_eq!(after.pause_reason, long.pause_reason);
}

async fn requeue_puts_the_job_at_the_front_spending_or_giving_back_the_attempt(h: Harness) {
    let q = h.queue_with("requeue", &[("acme", 25)], |_| {}).await;
    let pushed = push(&q, "acme", 0..3).await;
    let j = next_job(q.as_ref()).await;
    q.requeue(&j, BACK).await.expect("requeue");
    let r = record(&q, &j.id).await;
    assert_eq!((r.status, r.attempts), (JobState::Queued, 0));
    let j = next_is(&q, &pushed[0]).await;
    assert_eq!((j.attempt, j.outcome_unknown), (1, false));
    q.requeue(
        &j,
        Requeue {
            spend_attempt: true,
            outcome_unknown: true,
        },
    )
    .await
    .expect("requeue");
    let j = next_is(&q, &pushed[0]).await;
    assert_eq!((j.attempt, j.outcome_unknown), (2, true));
    q.requeue(&j, BACK).await.expect("requeue");
    let j = next_is(&q, &pushed[0]).await;
    assert_eq!(
        (j.attempt, j.outcome_unknown),
        (2, false),
        "the outcome is taken as given"
    );
    q.complete(&j, "wh", false).await.expect("complete");
}

async fn bury_records_the_reason_and_dead_jobs_are_retried_or_purged(h: Harness) {
    let q = h.queue_with("dead", &[("acme", 25)], |_| {}).await;
    let pushed = push(&q, "acme", 0..3).await;
    let j1 = next_job(q.as_ref()).await;
    q.bury(&j1, "400: MXInvalidInputException: bad URL")
        .await
        .expect("bury");
    let j2 = next_job(q.as_ref()).await;
    q.bury(&j2, "401: bad keys").await.expect("bury");
    let dead = q.dead().await.expect("dead");
    assert_eq!(
        dead.iter()
            .map(|d| (d.job.clone(), d.status, d.error.clone().unwrap_or_default()))
            .collect::<Vec<_>>(),
        vec![
            (
                pushed[0].clone(),
                JobState::Dead,
                "400: MXInvalidInputException: bad URL".to_string()
            ),
            (
                pushed[1].clone(),
                JobState::Dead,
                "401: bad keys".to_string()
            ),
        ]
    );
    assert_eq!(q.status().await.expect("status").dead, 2);
    // Retried: back at the end of the list, with fresh attempts and no error.
    assert_eq!(
        q.retry_dead(Some(std::slice::from_ref(&pushed[1])))
            .await
            .expect("retry"),
        1
    );
    let r = record(&q, &pushed[1]).await;
    assert_eq!((r.status, r.attempts, r.error), (JobState::Queued, 0, None));
    assert_eq!(next_job(q.as_ref()).await.id, pushed[2]);
    let back = next_is(&q, &pushed[1]).await;
    assert_eq!(back.attempt, 1);
    q.complete(&back, "wh-2", false).await.expect("complete");
    // Not dead: not retried, not purged.
    assert_eq!(
        q.retry_dead(Some(std::slice::from_ref(&pushed[1])))
            .await
            .expect("retry"),
        0
    );
    assert_eq!(
        q.purge_dead(Some(&[pushed[1].clone(), JobId::new()]))
            .await
            .expect("purge"),
        0
    );
    // Purged: gone, and its key free again.
    assert_eq!(q.purge_dead(None).await.expect("purge"), 1);
    assert!(q.job(&pushed[0]).await.expect("job").is_none());
    assert!(q.dead().await.expect("dead").is_empty());
    let again = q.push(&[job("acme", 0)]).await.expect("push");
    assert!(matches!(&again[0], Pushed::Enqueued { job } if *job != pushed[0]));
    // All of them, when none are named.
    let j = next_job(q.as_ref()).await;
    q.bury(&j, "x").await.expect("bury");
    assert_eq!(q.retry_dead(None).await.expect("retry"), 1);
    assert_eq!(q.status().await.expect("status").dead, 0);
}

async fn purge_done_deletes_done_records_and_keeps_their_keys(h: Harness) {
    let q = h.queue_with("purge-done", &[("acme", 25)], |_| {}).await;
    let pushed = push(&q, "acme", 0..3).await;
    let j1 = next_job(q.as_ref()).await;
    q.complete(&j1, "wh-1", false).await.expect("complete");
    let j2 = next_job(q.as_ref()).await;
    q.bury(&j2, "refused").await.expect("bury");
    // One done, one dead, one queued, one unknown id: only the done one goes.
    let mut named = pushed.clone();
    named.push(JobId::new());
    assert_eq!(q.purge_done(&named).await.expect("purge"), 1);
    assert!(q.job(&pushed[0]).await.expect("job").is_none());
    let results: Vec<JobId> = q
        .results(None)
        .await
        .expect("results")
        .into_iter()
        .map(|r| r.job)
        .collect();
    assert_eq!(results, vec![pushed[1].clone()]);
    let s = q.status().await.expect("status");
    assert_eq!((s.queued, s.done, s.dead), (1, 0, 1));
    let again = q.push(&[job("acme", 0)]).await.expect("push");
    assert_eq!(
        again[0],
        Pushed::Duplicate {
            job: pushed[0].clone()
        }
    );
    assert_eq!(q.purge_done(&pushed).await.expect("purge"), 0);
}

// ---------------------------------------------------------------------------------------
// Reading the queue

async fn status_counts_and_the_tenant_view(h: Harness) {
    let q = h
        // A longer window (20 ticks), so that real time under load stays within it.
        .queue_with("status", &[("acme", 2), ("beta", 25), ("idle", 25)], |c| {
            c.window = h.ticks(20)
        })
        .await;
    assert_eq!(
        q.tenant_names().await.expect("names"),
        ["acme", "beta", "idle"]
    );
    let acme = q.tenant("acme").await.expect("tenant").expect("acme");
    assert_eq!(
        (acme.secret_key.expose(), acme.limit),
        ("sk-secret-acme", 2)
    );
    assert!(q.tenant("nobody").await.expect("tenant").is_none());
    let empty = q.status().await.expect("status");
    assert_eq!(
        (empty.queued, empty.running, empty.oldest_running_ms),
        (0, 0, None)
    );
    assert!(empty.tenants.is_empty(), "{:?}", empty.tenants);
    push(&q, "acme", 0..4).await;
    push(&q, "beta", 0..2).await;
    let a = next_job(q.as_ref()).await;
    let b = next_job(q.as_ref()).await;
    let a2 = next_job(q.as_ref()).await;
    assert_eq!(
        (a.tenant.as_str(), b.tenant.as_str(), a2.tenant.as_str()),
        ("acme", "beta", "acme")
    );
    q.retry_later(&b, h.ticks(100), "HTTP 503", false)
        .await
        .expect("retry");
    q.bury(&a2, "refused").await.expect("bury");
    h.sleep(h.tick()).await;
    let s = q.status().await.expect("status");
    assert_eq!(s.queue, q.config().name);
    assert_eq!(
        (s.queued, s.scheduled, s.running, s.done, s.dead),
        (3, 1, 1, 0, 1)
    );
    let oldest = s.oldest_running_ms.expect("one running");
    assert!(oldest >= h.tick().as_millis() as u64);
    let rows: Vec<(&str, u64, u32, u32)> = s
        .tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.waiting, t.limit, t.calls_in_window))
        .collect();
    assert_eq!(rows, [("acme", 2, 2, 2), ("beta", 1, 25, 1)]);
    assert!(s.tenants.iter().all(|t| t.paused_until_ms.is_none()));
    // Out of the window, a tenant with nothing waiting is not shown.
    q.complete(&a, "wh", false).await.expect("complete");
    h.sleep(h.ticks(20)).await;
    let _ = drain(&q, 3).await;
    h.sleep(h.ticks(20)).await;
    let s = q.status().await.expect("status");
    assert_eq!((s.queued, s.done, s.scheduled), (0, 4, 1));
    assert!(s.tenants.is_empty(), "{:?}", s.tenants);
    assert!(!q.is_idle().await.expect("idle"), "a retry is scheduled");
}

async fn results_keep_finishing_order_and_name_a_tenant(h: Harness) {
    let q = h
        .queue_with("results", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    push(&q, "acme", 0..3).await;
    push(&q, "beta", 0..1).await;
    let j1 = next_job(q.as_ref()).await;
    let j2 = next_job(q.as_ref()).await;
    let j3 = next_job(q.as_ref()).await;
    q.complete(&j3, "wh-3", false).await.expect("complete");
    q.bury(&j1, "refused").await.expect("bury");
    q.complete(&j2, "wh-2", true).await.expect("complete");
    let all: Vec<(JobId, JobState)> = q
        .results(None)
        .await
        .expect("results")
        .into_iter()
        .map(|r| (r.job, r.status))
        .collect();
    assert_eq!(
        all,
        [
            (j3.id.clone(), JobState::Done),
            (j1.id.clone(), JobState::Dead),
            (j2.id.clone(), JobState::Done)
        ]
    );
    let beta: Vec<JobId> = q
        .results(Some("beta"))
        .await
        .expect("results")
        .into_iter()
        .map(|r| r.job)
        .collect();
    assert_eq!(beta, vec![j2.id.clone()]);
    assert!(q.results(Some("nobody")).await.expect("results").is_empty());
    let series = q.done_per_second(60).await.expect("done per second");
    assert_eq!((series.len(), series.iter().sum::<u64>()), (60, 2));
    assert!(q.done_per_second(0).await.expect("done").is_empty());
}

/// A queue of the case's own with two tenants, `a-…` on shard 0 and `b-…` on shard 1 (the
/// same shard when there is one), `per_tenant` jobs each, all leased: a's, then b's.
async fn two_shards_leased(
    h: Harness,
    test: &str,
    per_tenant: usize,
) -> (Arc<dyn Queue>, Vec<LeasedJob>, Vec<LeasedJob>) {
    let n = shard_count(h);
    let on = |prefix: &str, shard: usize| -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|t| shard_of(t, n) == shard)
            .expect("a tenant on the shard")
    };
    let (a, b) = (on("a-", 0), on("b-", 1 % n));
    let q = h
        .queue_with(test, &[(a.as_str(), 25), (b.as_str(), 25)], |_| {})
        .await;
    push(&q, &a, 0..per_tenant).await;
    push(&q, &b, 0..per_tenant).await;
    let mut jobs = Vec::new();
    for _ in 0..2 * per_tenant {
        jobs.push(next_job(q.as_ref()).await);
    }
    let (ja, jb) = jobs.into_iter().partition(|j| j.tenant == a);
    (q, ja, jb)
}

/// Finishes `order`'s jobs in turn, a few milliseconds apart on every clock: the first
/// `done` completed, the rest buried.
async fn finish_in_turn(h: Harness, q: &Arc<dyn Queue>, order: &[&LeasedJob], done: usize) {
    for (i, j) in order.iter().enumerate() {
        if i < done {
            q.complete(j, "wh", false).await.expect("complete");
        } else {
            q.bury(j, "refused").await.expect("bury");
        }
        h.sleep(Duration::from_millis(5).max(h.ticks(1))).await;
    }
}

/// Issue 17: `results` and `dead list` are in finishing order across the whole queue; on
/// shards too, where the jobs of two tenants on different shards finish in turn.
async fn results_across_shards_keep_finishing_order(h: Harness) {
    let (q, ja, jb) = two_shards_leased(h, "finish-order", 2).await;
    let order = [&jb[0], &ja[0], &jb[1], &ja[1]];
    finish_in_turn(h, &q, &order, 2).await;
    let ids = |rs: Vec<JobResult>| -> Vec<JobId> { rs.into_iter().map(|r| r.job).collect() };
    let expected: Vec<JobId> = order.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids(q.results(None).await.expect("results")), expected);
    assert_eq!(ids(q.dead().await.expect("dead")), expected[2..].to_vec());
}

/// Issue 17: done and dead pages are newest first across the whole queue, with a cursor: on
/// shards too, where one tenant's jobs all finish before another's on another shard (pages
/// that took a row from each shard in turn would mix them).
async fn pages_across_shards_are_newest_first(h: Harness) {
    let (q, ja, jb) = two_shards_leased(h, "page-order", 4).await;
    // a's two done, then b's two done, then a's two dead, then b's two dead.
    let order = [
        &ja[0], &ja[1], &jb[0], &jb[1], &ja[2], &ja[3], &jb[2], &jb[3],
    ];
    finish_in_turn(h, &q, &order, 4).await;
    let newest_first =
        |js: &[&LeasedJob]| -> Vec<JobId> { js.iter().rev().map(|j| j.id.clone()).collect() };
    let done = newest_first(&order[..4]);
    assert_eq!(
        all_pages(&q, PageOf::Done, 3).await,
        [done[..3].to_vec(), done[3..].to_vec()]
    );
    let dead = newest_first(&order[4..]);
    assert_eq!(
        all_pages(&q, PageOf::Dead, 3).await,
        [dead[..3].to_vec(), dead[3..].to_vec()]
    );
}

// ---------------------------------------------------------------------------------------
// Wake-ups: every path that can make work available wakes a waiting worker

async fn a_push_wakes_a_waiting_worker(h: Harness) {
    let q = h.queue_with("wake-push", &[("acme", 25)], |_| {}).await;
    wakes(h, &q, "push", async {
        push(&q, "acme", 0..1).await;
    })
    .await;
}

async fn put_tenants_wakes_a_waiting_worker(h: Harness) {
    let q = h.queue_with("wake-tenants", &[("acme", 1)], |_| {}).await;
    push(&q, "acme", 0..2).await;
    next_job(q.as_ref()).await;
    wakes(h, &q, "put_tenants", async {
        q.put_tenants(&[tenant("acme", 5)]).await.expect("tenants");
    })
    .await;
}

async fn retry_later_wakes_a_waiting_worker(h: Harness) {
    let q = h.queue_with("wake-retry", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..1).await;
    let j = next_job(q.as_ref()).await;
    wakes(h, &q, "retry_later", async {
        q.retry_later(&j, h.ticks(1), "HTTP 503", false)
            .await
            .expect("retry");
    })
    .await;
}

async fn rate_limited_wakes_a_waiting_worker(h: Harness) {
    let q = h.queue_with("wake-limited", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..1).await;
    let j = next_job(q.as_ref()).await;
    wakes(h, &q, "rate_limited", async {
        q.rate_limited(&j, h.ticks(1), Some(3))
            .await
            .expect("rate limited");
    })
    .await;
}

async fn requeue_wakes_a_waiting_worker(h: Harness) {
    let q = h.queue_with("wake-requeue", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..1).await;
    let j = next_job(q.as_ref()).await;
    wakes(h, &q, "requeue", async {
        q.requeue(&j, BACK).await.expect("requeue");
    })
    .await;
    // Handed back mid-call: into the schedule, and a wake-up all the same.
    let j = next_job(q.as_ref()).await;
    assert!(q.sending(&j, h.ticks(2)).await.expect("fence"));
    wakes(h, &q, "requeue mid-call", async {
        q.requeue(
            &j,
            Requeue {
                spend_attempt: false,
                outcome_unknown: true,
            },
        )
        .await
        .expect("requeue");
    })
    .await;
    assert_eq!(q.status().await.expect("status").scheduled, 1);
}

async fn retry_dead_wakes_a_waiting_worker(h: Harness) {
    let q = h.queue_with("wake-dead", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..1).await;
    let j = next_job(q.as_ref()).await;
    q.bury(&j, "refused").await.expect("bury");
    wakes(h, &q, "retry_dead", async {
        assert_eq!(q.retry_dead(None).await.expect("retry"), 1);
    })
    .await;
}

async fn a_lease_taken_back_wakes_a_waiting_worker(h: Harness) {
    let q = h
        .queue_with("wake-lease", &[("acme", 25)], |c| c.lease = h.ticks(2))
        .await;
    push(&q, "acme", 0..1).await;
    let j = next_job(q.as_ref()).await;
    // Its Create may still land: the dispatch that takes the lease back schedules the job,
    // and the other workers must learn when it comes due.
    assert!(q.sending(&j, h.ticks(8)).await.expect("fence"));
    wakes(h, &q, "a lease taken back", async {
        h.sleep(h.ticks(3)).await;
        assert!(matches!(
            q.dispatch().await.expect("dispatch"),
            Dispatch::Wait(_)
        ));
    })
    .await;
    assert_eq!(q.status().await.expect("status").scheduled, 1);
}

// ---------------------------------------------------------------------------------------
// Headroom and the adaptive share (issue 13)

/// The status row of one tenant.
async fn row(q: &Arc<dyn Queue>, name: &str) -> TenantStatus {
    q.status()
        .await
        .expect("status")
        .tenants
        .into_iter()
        .find(|t| t.tenant == name)
        .unwrap_or_else(|| panic!("{name} is not in status"))
}

/// Dispatches (answering and completing each job) until the queue says wait; returns how
/// many it handed out.
async fn dispatch_until_wait(q: &Arc<dyn Queue>) -> usize {
    let mut n = 0;
    loop {
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => {
                q.complete(&j, "wh", false).await.expect("complete");
                n += 1;
            }
            Dispatch::Wait(_) => return n,
            Dispatch::Empty => panic!("jobs are waiting, got empty after {n}"),
        }
    }
}

async fn a_reserve_leaves_calls_unused_in_every_window(h: Harness) {
    let q = h.queue_with("reserve", &[], |_| {}).await;
    let acme = Tenant {
        reserve: 2,
        daily_limit: Some(5000),
        ..tenant("acme", 5)
    };
    let tiny = Tenant {
        reserve: 2,
        ..tenant("tiny", 3)
    };
    q.put_tenants(&[acme.clone(), tiny]).await.expect("tenants");
    let stored = q.tenant("acme").await.expect("tenant").expect("acme");
    assert_eq!((stored.reserve, stored.daily_limit), (2, Some(5000)));
    push(&q, "acme", 0..9).await;
    push(&q, "tiny", 0..3).await;
    let got = drain(&q, 12).await;
    assert_most_in_a_window(&h, &got, &[("acme", 3), ("tiny", 1)]);
    push(&q, "acme", 9..10).await;
    let r = row(&q, "acme").await;
    assert_eq!(
        (
            r.limit,
            r.configured_limit,
            r.reserve,
            r.share,
            r.share_reason
        ),
        (5, 5, 2, 3, ShareReason::Reserve)
    );
    assert_eq!(r.daily_limit, Some(5000));
    // A learned lower limit: learned − reserve, never below 1.
    let j = next_job(q.as_ref()).await;
    q.rate_limited(&j, h.ticks(0), Some(2))
        .await
        .expect("rate limited");
    let r = row(&q, "acme").await;
    assert_eq!((r.limit, r.share), (2, 1));
}

/// A case's queue with one tenant of limit 25 (share mode `mode`) that made `calls` calls
/// in one window, the last answered "rate limited": with `calls` of ours in the window, the
/// other client showed at least `26 − calls`.
async fn cut_at(h: Harness, test: &str, mode: ShareMode, calls: usize) -> Arc<dyn Queue> {
    let q = h
        .queue_with(test, &[("acme", 25)], |c| c.share = mode)
        .await;
    push(&q, "acme", 0..200).await;
    for _ in 1..calls {
        let j = next_job(q.as_ref()).await;
        q.complete(&j, "wh", false).await.expect("complete");
    }
    let last = next_job(q.as_ref()).await;
    q.rate_limited(&last, h.ticks(0), None)
        .await
        .expect("rate limited");
    q
}

/// Whether a share read back is the one expected, give or take the climb since.
fn near(got: f64, want: f64) -> bool {
    (got - want).abs() < 0.2
}

async fn the_first_unexplained_answer_cuts_to_what_leaves_the_other_load_whole(h: Harness) {
    let q = h.queue_with("share-cut", &[("acme", 25)], |_| {}).await;
    push(&q, "acme", 0..40).await;
    let mut out = Vec::new();
    for _ in 0..17 {
        out.push(next_job(q.as_ref()).await);
    }
    for j in &out[..15] {
        q.complete(j, "wh", false).await.expect("complete");
    }
    // 17 of ours in the window: the other client had at least 9. Leaving a load of 9 whole
    // needs room_for(9) = 17 calls, so 8 are ours (and at most half the cap).
    q.rate_limited(&out[15], h.ticks(0), None)
        .await
        .expect("rate limited");
    let want = (25.0 - f64::from(share::room_for(9.0))).min(12.5);
    assert_eq!(want, 8.0);
    let r = row(&q, "acme").await;
    assert!(near(r.share_calls, want), "{r:?}");
    assert_eq!(
        (r.limit, r.share, r.share_reason),
        (25, 9, ShareReason::Shared)
    );
    let other = r.other_use.expect("an estimate of the other load");
    assert!((7.0..11.0).contains(&other), "{r:?}");
    // A second unexplained answer within half a window is the same crowded moment: no cut.
    q.rate_limited(&out[16], h.ticks(0), None)
        .await
        .expect("rate limited");
    assert!(near(row(&q, "acme").await.share_calls, want));
    // Crowded out at the cap (every call but the refused one ours): at least halved.
    let q = cut_at(h, "share-cut-full", ShareMode::Adaptive, 25).await;
    assert!(near(row(&q, "acme").await.share_calls, 12.5));
    // Fixed: the same answers leave the share at the cap.
    let q = cut_at(h, "share-fixed", ShareMode::Fixed, 16).await;
    let r = row(&q, "acme").await;
    assert_eq!(
        (r.share, r.share_reason, r.other_use),
        (25, ShareReason::Configured, None)
    );
}

async fn later_cuts_are_gentle_and_a_second_soon_after_halves(h: Harness) {
    let q = cut_at(h, "share-later", ShareMode::Adaptive, 16).await;
    // More than two windows later: a gentle cut, share × CUT − CUT_STEP.
    h.sleep(h.window() * 3).await;
    let before = row(&q, "acme").await.share_calls;
    let j = next_job(q.as_ref()).await;
    q.rate_limited(&j, h.ticks(0), None)
        .await
        .expect("rate limited");
    let gentle = row(&q, "acme").await.share_calls;
    assert!(
        near(gentle, before * share::CUT - share::CUT_STEP),
        "{before} -> {gentle}"
    );
    // Another between half a window and two windows later: its load rose, halve.
    h.sleep(h.ticks(3)).await;
    let j = next_job(q.as_ref()).await;
    q.rate_limited(&j, h.ticks(0), None)
        .await
        .expect("rate limited");
    let halved = row(&q, "acme").await.share_calls;
    assert!(near(halved, gentle * share::HALVE), "{gentle} -> {halved}");
}

async fn the_share_is_not_cut_on_a_rate_limit_our_calls_explain(h: Harness) {
    // An answer naming a lower limit is explained by it: learned, no cut.
    let q = h
        .queue_with("share-explained-learned", &[("acme", 10)], |_| {})
        .await;
    push(&q, "acme", 0..5).await;
    let a = next_job(q.as_ref()).await;
    let b = next_job(q.as_ref()).await;
    q.complete(&a, "wh", false).await.expect("complete");
    q.rate_limited(&b, h.ticks(0), Some(2))
        .await
        .expect("rate limited");
    let r = row(&q, "acme").await;
    assert_eq!(
        (r.limit, r.share, r.share_reason),
        (2, 2, ShareReason::LearnedLimit)
    );
    // One naming the limit the tenant already has explains nothing (LeadSquared's message
    // names the limit on every refusal): cut.
    let q = h
        .queue_with("share-named-same", &[("acme", 10)], |_| {})
        .await;
    push(&q, "acme", 0..5).await;
    let a = next_job(q.as_ref()).await;
    q.rate_limited(&a, h.ticks(0), Some(10))
        .await
        .expect("rate limited");
    assert_eq!(row(&q, "acme").await.share_reason, ShareReason::Shared);
    // A pause longer than the window (a daily quota's answer) parks the tenant and leaves
    // the share alone.
    let q = h.queue_with("share-quota", &[("acme", 10)], |_| {}).await;
    push(&q, "acme", 0..2).await;
    let j = next_job(q.as_ref()).await;
    q.rate_limited(&j, h.window() * 4, None)
        .await
        .expect("rate limited");
    let r = row(&q, "acme").await;
    assert_eq!((r.share, r.share_reason), (10, ShareReason::Configured));
    assert!(r.paused_until_ms.is_some());
}

async fn a_cut_share_spreads_its_calls_over_the_window(h: Harness) {
    let q = cut_at(h, "share-pace", ShareMode::Adaptive, 16).await;
    // The first burst leaves the window; then one call, and a wait of about the gap.
    h.sleep(h.window()).await;
    let share_now = row(&q, "acme").await.share_calls;
    let (most, gap) = share::pace(share_now, 25, 25, h.window()).expect("paced");
    assert_eq!(most, 8);
    assert_eq!(dispatch_until_wait(&q).await, 1);
    if h.exact() {
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Wait(d) => assert!(
                d <= gap && d >= gap.mul_f64(0.9),
                "waited {d:?}, the gap is {gap:?}"
            ),
            other => panic!("paced, expected a wait, got {other:?}"),
        }
    }
    // Over four windows, one call a gap apart: never more than `most` in any window, and
    // about the share per window.
    let got = drain_all(h, &q, 20).await;
    let times: Vec<u64> = got.iter().map(|j| j.dispatched_at_ms).collect();
    assert!(most_in_a_window(&times, h.window().as_millis() as u64) <= most as usize);
    let per_window = got.len() as f64 / 4.0;
    assert!(
        per_window >= share_now * 0.85 && per_window <= share_now / (1.0 - share::OVERLAP) + 1.0,
        "{} calls in 4 windows at a share of {share_now}",
        got.len()
    );
}

async fn the_share_climbs_back_slowly_then_faster_to_its_cap(h: Harness) {
    let q = cut_at(h, "share-climb", ShareMode::Adaptive, 16).await;
    let set = row(&q, "acme").await.share_calls;
    h.sleep(h.window() * 10).await;
    let after_ten = row(&q, "acme").await.share_calls;
    let want = set + share::climb(10.0);
    if h.exact() {
        assert!((after_ten - want).abs() < 0.01, "{after_ten} vs {want}");
    } else {
        assert!(
            after_ten >= want - 0.01 && after_ten < want + 0.3,
            "{after_ten} vs {want}"
        );
    }
    // The ceiling: back at the cap by `back_at_cap`, never above it.
    h.sleep(share::back_at_cap(set, h.window(), 25)).await;
    let r = row(&q, "acme").await;
    assert_eq!(
        (r.share, r.share_reason, r.other_use),
        (25, ShareReason::Configured, None)
    );
}

async fn the_share_holds_its_floor_of_one(h: Harness) {
    let q = h.queue_with("share-floor", &[("acme", 3)], |_| {}).await;
    push(&q, "acme", 0..10).await;
    // Cut after cut, a window apart, each with one of our calls in the window: 3 → 1 → 1.
    for _ in 0..2 {
        let j = next_job(q.as_ref()).await;
        q.rate_limited(&j, h.ticks(0), None)
            .await
            .expect("rate limited");
        let r = row(&q, "acme").await;
        assert!(near(r.share_calls, 1.0), "{r:?}");
        assert_eq!(
            r.share, 2,
            "a share of 1.x allows 2 in a window, one gap apart"
        );
        // The pacing counts from the cut: the next call waits about a gap.
        let (_, gap) = share::pace(r.share_calls, 3, 3, h.window()).expect("paced");
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Wait(d) => assert!(d >= gap / 2 && d <= gap, "{d:?} for a gap of {gap:?}"),
            other => panic!("paced from the cut, got {other:?}"),
        }
        h.sleep(h.window()).await;
    }
    // At its floor, a call is still made.
    let j = next_job(q.as_ref()).await;
    assert_eq!(j.tenant, "acme");
}

async fn a_spent_daily_quota_parks_the_tenant_until_the_day_resets(h: Harness) {
    let q = h.queue_with("quota", &[], |c| c.day = h.ticks(20)).await;
    let acme = Tenant {
        daily_limit: Some(3),
        ..tenant("acme", 25)
    };
    q.put_tenants(&[acme, tenant("beta", 25)])
        .await
        .expect("tenants");
    let ids = push(&q, "acme", 0..6).await;
    // Start just after a day begins (days start at the epoch), so the first three calls
    // fall in one day.
    let day_ms = h.ticks(20).as_millis() as u64;
    let now_ms = q.status().await.expect("status").now_ms;
    h.sleep(Duration::from_millis(day_ms - now_ms % day_ms + 1))
        .await;
    let first = drain(&q, 3).await;
    let r = row(&q, "acme").await;
    assert_eq!((r.calls_today, r.daily_limit, r.waiting), (3, Some(3), 3));
    let until = r.quota_until_ms.expect("parked");
    assert_eq!(until % day_ms, 0, "parked until the day resets");
    // Parked: its jobs stay queued, another tenant is served.
    push(&q, "beta", 0..1).await;
    let b = next_job(q.as_ref()).await;
    assert_eq!(b.tenant, "beta");
    q.complete(&b, "wh", false).await.expect("complete");
    let asked_ms = q.status().await.expect("status").now_ms;
    match q.dispatch().await.expect("dispatch") {
        Dispatch::Wait(d) => {
            if h.exact() {
                assert_eq!(asked_ms + d.as_millis() as u64, until);
            }
        }
        other => panic!("acme is parked, expected a wait, got {other:?}"),
    }
    if !h.exact() {
        // A restart keeps the count: a new handle on the same queue sees it.
        let again = h.queue(q.config().clone()).await;
        assert_eq!(row(&again, "acme").await.calls_today, 3);
    }
    // The next day it resumes, no attempt spent while it waited.
    let rest = drain(&q, 3).await;
    assert!(rest.iter().all(|j| j.dispatched_at_ms >= until), "{rest:?}");
    for j in first.iter().chain(&rest) {
        assert_eq!(j.attempt, 1, "{j:?}");
    }
    for id in &ids {
        let r = record(&q, id).await;
        assert_eq!((r.status, r.attempts), (JobState::Done, 1));
    }
}

async fn a_daily_quota_leadsquared_names_is_learned_and_kept(h: Harness) {
    let q = h
        .queue_with("quota-learned", &[], |c| c.day = h.ticks(20))
        .await;
    let acme = Tenant {
        daily_limit: Some(100),
        ..tenant("acme", 25)
    };
    q.put_tenants(std::slice::from_ref(&acme))
        .await
        .expect("tenants");
    push(&q, "acme", 0..6).await;
    let day_ms = h.ticks(20).as_millis() as u64;
    let now_ms = q.status().await.expect("status").now_ms;
    h.sleep(Duration::from_millis(day_ms - now_ms % day_ms + 1))
        .await;
    drain(&q, 2).await;
    // A higher quota than the file's is recorded but not used.
    q.learn_daily_limit("acme", 500).await.expect("learn");
    let r = row(&q, "acme").await;
    assert_eq!((r.daily_limit, r.daily_limit_learned), (Some(100), false));
    // A lower one is in force at once: 2 calls made today, 1 more, then parked.
    q.learn_daily_limit("acme", 3).await.expect("learn");
    let r = row(&q, "acme").await;
    assert_eq!((r.daily_limit, r.daily_limit_learned), (Some(3), true));
    assert_eq!(dispatch_until_wait(&q).await, 1);
    let r = row(&q, "acme").await;
    assert_eq!((r.calls_today, r.waiting), (3, 3));
    assert!(r.quota_until_ms.is_some(), "parked: {r:?}");
    // Importing the tenant again keeps the learned quota, which is lower; a lower imported
    // one replaces it.
    q.put_tenants(std::slice::from_ref(&acme))
        .await
        .expect("tenants");
    let r = row(&q, "acme").await;
    assert_eq!((r.daily_limit, r.daily_limit_learned), (Some(3), true));
    let lower = Tenant {
        daily_limit: Some(2),
        ..acme
    };
    q.put_tenants(&[lower]).await.expect("tenants");
    let r = row(&q, "acme").await;
    assert_eq!((r.daily_limit, r.daily_limit_learned), (Some(2), false));
    // An unknown tenant is no error: the tenant may have been removed meanwhile.
    q.learn_daily_limit("nobody", 3).await.expect("learn");
}

/// The pulse a scrape reads: counts like `status`, the jobs ever done (purges do not lower
/// it), the latency (age of the oldest job next in line, whole queue and per tenant, oldest
/// first, bounded) and the throttled tenants.
async fn pulse_counts_latency_and_throttled_tenants(h: Harness) {
    let q = h
        .queue_with("pulse", &[("acme", 1), ("beta", 25), ("idle", 25)], |c| {
            c.window = h.ticks(20)
        })
        .await;
    let empty = q.pulse(10).await.expect("pulse");
    assert_eq!(
        (
            empty.queued,
            empty.running,
            empty.done_total,
            empty.throttled
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(empty.latency_ms, None);
    assert!(empty.tenant_latency_ms.is_empty() && empty.throttled_tenants.is_empty());

    push(&q, "acme", 0..3).await;
    h.sleep(h.ticks(3)).await;
    push(&q, "beta", 0..2).await;
    h.sleep(h.ticks(1)).await;
    let p = q.pulse(10).await.expect("pulse");
    let tick = h.tick().as_millis() as u64;
    // Redis measures from the time in the ids (the client's clock, read a moment before
    // the push reaches Redis): half a tick of slack.
    let names: Vec<&str> = p
        .tenant_latency_ms
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(names, ["acme", "beta"], "{p:?}");
    let (acme_age, beta_age) = (p.tenant_latency_ms[0].1, p.tenant_latency_ms[1].1);
    assert!(acme_age + tick / 2 >= 4 * tick, "{p:?}");
    assert!(beta_age + tick / 2 >= tick && beta_age < acme_age, "{p:?}");
    assert_eq!(p.latency_ms, Some(acme_age));
    assert_eq!((p.queued, p.scheduled, p.running), (5, 0, 0));
    // Bounded: the oldest only.
    let one = q.pulse(1).await.expect("pulse");
    assert_eq!(one.tenant_latency_ms.len(), 1);
    assert_eq!(one.tenant_latency_ms[0].0, "acme");

    // acme's one call per window is spent: throttled, its next job still waiting.
    let a = next_job(q.as_ref()).await;
    assert_eq!(a.tenant, "acme");
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!((p.queued, p.running, p.throttled), (4, 1, 1), "{p:?}");
    assert_eq!(p.throttled_tenants, ["acme"]);
    assert_eq!(p.tenant_latency_ms[0].0, "acme", "{p:?}");
    assert!(p.oldest_running_ms.is_some());
    q.complete(&a, "wh-1", false).await.expect("complete");

    // beta's two are run: it leaves the latency list; one is done, one dead.
    let b1 = next_job(q.as_ref()).await;
    let b2 = next_job(q.as_ref()).await;
    assert_eq!((b1.tenant.as_str(), b2.tenant.as_str()), ("beta", "beta"));
    q.complete(&b1, "wh-2", false).await.expect("complete");
    q.bury(&b2, "refused").await.expect("bury");
    let p = q.pulse(10).await.expect("pulse");
    let names: Vec<&str> = p
        .tenant_latency_ms
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    assert_eq!(names, ["acme"], "{p:?}");
    assert_eq!(
        (p.queued, p.running, p.done, p.dead, p.done_total),
        (2, 0, 2, 1, 2)
    );
    let s = q.status().await.expect("status");
    assert_eq!(
        (s.queued, s.scheduled, s.running, s.done, s.dead),
        (p.queued, p.scheduled, p.running, p.done, p.dead)
    );

    // Purged done records leave the count of jobs ever done as it was.
    assert_eq!(
        q.purge_done(std::slice::from_ref(&a.id))
            .await
            .expect("purge"),
        1
    );
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!((p.done, p.done_total), (1, 2));
}

/// Issue 15: the rest of what a scrape reads, still without visiting every tenant: the
/// tenants whose share is cut (while it climbs back), whose daily quota is spent, and that
/// are held, by kind; and the shares of a bounded list of tenants (the cut ones, the longest
/// to recover first, then the parked ones, then those of the latency list), each as
/// `status` shows it. Imports, learned quotas, releases and time keep the counts right.
async fn pulse_counts_cut_shares_spent_quotas_and_holds(h: Harness) {
    let names = [
        ("acme", 10),
        ("beta", 4),
        ("gamma", 25),
        ("h1", 25),
        ("h2", 25),
        ("h3", 25),
        ("idle", 25),
    ];
    let q = h.queue_with("pulse-shares", &names, |_| {}).await;
    let gamma = Tenant {
        daily_limit: Some(2),
        ..tenant("gamma", 25)
    };
    q.put_tenants(std::slice::from_ref(&gamma))
        .await
        .expect("tenants");
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!((p.share_cut, p.quota_reached), (0, 0), "{p:?}");
    assert_eq!(p.held, HeldCounts::default());
    assert!(p.shares.is_empty(), "{p:?}");

    // gamma spends its daily quota of 2, a third job still waiting: parked.
    push(&q, "gamma", 0..3).await;
    for _ in 0..2 {
        let j = next_job(q.as_ref()).await;
        assert_eq!(j.tenant, "gamma");
        q.complete(&j, "wh", false).await.expect("complete");
    }
    // acme (limit 10) and beta (limit 4) are cut by an answer their two calls cannot
    // explain: another client held the rest of each window, so both go to the floor (a
    // share of 1, paced: 2 calls in a window at most). acme's job goes on; beta's waits.
    push(&q, "acme", 0..2).await;
    let a = next_job(q.as_ref()).await;
    q.complete(&a, "wh", false).await.expect("complete");
    let a = next_job(q.as_ref()).await;
    assert_eq!(a.tenant, "acme");
    q.rate_limited(&a, h.ticks(0), None)
        .await
        .expect("rate limited");
    let a = next_job(q.as_ref()).await;
    assert_eq!(a.tenant, "acme");
    q.complete(&a, "wh", false).await.expect("complete");
    push(&q, "beta", 0..2).await;
    let b = next_job(q.as_ref()).await;
    q.complete(&b, "wh", false).await.expect("complete");
    let b = next_job(q.as_ref()).await;
    assert_eq!(b.tenant, "beta");
    q.rate_limited(&b, h.ticks(0), None)
        .await
        .expect("rate limited");
    // One hold of each kind, the unreachable one for 10 ticks.
    for (tenant, kind, length) in [
        ("h1", HoldKind::Paused, None),
        ("h2", HoldKind::HostUnreachable, Some(h.ticks(10))),
        ("h3", HoldKind::KeysRefused, None),
    ] {
        let hold = NewHold {
            kind,
            reason: "why".into(),
            length,
            by: None,
        };
        assert!(q.hold(tenant, hold).await.expect("hold"));
    }
    push(&q, "idle", 0..1).await;

    let p = q.pulse(10).await.expect("pulse");
    assert_eq!((p.share_cut, p.quota_reached), (2, 1), "{p:?}");
    assert_eq!(
        p.held,
        HeldCounts {
            keys_refused: 1,
            host_unreachable: 1,
            paused: 1
        }
    );
    let shown: Vec<&str> = p.shares.iter().map(|s| s.tenant.as_str()).collect();
    assert_eq!(shown, ["acme", "beta", "gamma", "idle"], "{p:?}");
    let share = |p: &lsq_webhooks::queue::QueuePulse, name: &str| {
        p.shares
            .iter()
            .find(|s| s.tenant == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {p:?}"))
    };
    let acme = share(&p, "acme");
    assert_eq!(
        (
            acme.limit,
            acme.configured_limit,
            acme.reserve,
            acme.share,
            acme.share_reason
        ),
        (10, 10, 0, 2, ShareReason::Shared)
    );
    assert!(
        acme.other_use.is_some() && (acme.share_calls - 1.0).abs() < 0.2,
        "{acme:?}"
    );
    assert_eq!(
        (share(&p, "beta").share, share(&p, "beta").share_reason),
        (2, ShareReason::Shared)
    );
    let g = share(&p, "gamma");
    assert_eq!(
        (g.share, g.share_reason, g.calls_today),
        (25, ShareReason::Configured, 2)
    );
    assert_eq!(share(&p, "idle").calls_today, 0);
    // Why each is listed, so that lists can be merged: acme's cut lasts longer than beta's.
    let until = |name: &str| share(&p, name).cut_until_ms;
    assert!(
        until("acme").expect("cut") > until("beta").expect("cut"),
        "{p:?}"
    );
    assert!(until("beta").expect("cut") > p.now_ms, "{p:?}");
    assert_eq!((until("gamma"), until("idle")), (None, None));
    assert!(g.quota_until_ms.expect("parked") > p.now_ms, "{p:?}");
    assert_eq!(share(&p, "idle").quota_until_ms, None);
    assert_eq!(share(&p, "acme").quota_until_ms, None);
    // As status shows each of them.
    let s = q.status().await.expect("status");
    for t in &p.shares {
        let row = s
            .tenants
            .iter()
            .find(|r| r.tenant == t.tenant)
            .expect("row");
        assert_eq!(
            (
                row.limit,
                row.configured_limit,
                row.reserve,
                row.share,
                row.share_reason
            ),
            (
                t.limit,
                t.configured_limit,
                t.reserve,
                t.share,
                t.share_reason
            ),
            "{}",
            t.tenant
        );
        assert_eq!(row.calls_today, t.calls_today, "{}", t.tenant);
    }
    // Bounded by `top`, the cut ones first.
    let two = q.pulse(2).await.expect("pulse");
    let shown: Vec<&str> = two.shares.iter().map(|s| s.tenant.as_str()).collect();
    assert_eq!(shown, ["acme", "beta"]);
    assert_eq!((two.share_cut, two.quota_reached), (2, 1));

    // A release ends h1's; a quota LeadSquared names that acme's 3 calls today have reached
    // parks it; a higher imported quota lets gamma go; an import that brings acme's limit
    // down to its share (1) ends its cut.
    q.release("h1").await.expect("release");
    q.learn_daily_limit("acme", 3).await.expect("learn");
    let gamma = Tenant {
        daily_limit: Some(5),
        ..gamma
    };
    q.put_tenants(&[gamma, tenant("acme", 1)])
        .await
        .expect("tenants");
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!(
        (p.share_cut, p.quota_reached, p.held.paused),
        (1, 1, 0),
        "{p:?}"
    );
    assert_eq!(p.shares[0].tenant, "beta", "{p:?}");
    assert_eq!(p.shares[1].tenant, "acme", "{p:?}");
    assert_eq!(share(&p, "acme").share_reason, ShareReason::Configured);

    // Time: beta's share is back at its cap (from its floor of 1 to 4), h2's hold ends.
    h.sleep(h.ticks(12).max(share::back_at_cap(1.0, h.window(), 4)))
        .await;
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!((p.share_cut, p.quota_reached), (0, 1), "{p:?}");
    assert_eq!(
        p.held,
        HeldCounts {
            keys_refused: 1,
            ..HeldCounts::default()
        }
    );
    assert_eq!(share(&p, "beta").share, 4);

    // With fixed shares nothing is cut.
    let q = cut_at(h, "pulse-shares-fixed", ShareMode::Fixed, 2).await;
    let p = q.pulse(10).await.expect("pulse");
    assert_eq!(p.share_cut, 0);
    assert_eq!(
        (p.shares[0].share, p.shares[0].share_reason),
        (25, ShareReason::Configured)
    );
}

fn attempt(n: u64, outcome: &str) -> lsq_webhooks::job::Attempt {
    lsq_webhooks::job::Attempt {
        at_ms: 1_700_000_000_000 + n,
        call: "create".into(),
        outcome: outcome.into(),
        http_status: (outcome == "transient").then_some(503),
        exception_type: None,
        duration_ms: n,
        error: (outcome == "transient").then(|| "HTTP 503 Service Unavailable".into()),
    }
}

/// A job keeps its last 20 calls, oldest first, through its finish; they go with its
/// record when it is purged, and an unknown job keeps nothing.
async fn a_job_keeps_its_last_attempts_until_it_is_purged(h: Harness) {
    let q = h.queue_with("history", &[("acme", 25)], |_| {}).await;
    let ids = push(&q, "acme", 0..2).await;
    assert!(q.attempts(&ids[0]).await.expect("attempts").is_empty());
    // Found by its idempotency key, scoped to its tenant.
    let key = record(&q, &ids[1]).await.key;
    assert_eq!(
        q.find_job("acme", &key).await.expect("find"),
        Some(ids[1].clone())
    );
    assert_eq!(q.find_job("beta", &key).await.expect("find"), None);
    assert_eq!(q.find_job("acme", "no-such-key").await.expect("find"), None);
    // Noted while queued (never dispatched: no record yet in Redis, only its body).
    q.note_attempt(&ids[0], &attempt(0, "transient"))
        .await
        .expect("note");
    let a = next_job(q.as_ref()).await;
    assert_eq!(a.id, ids[0]);
    for n in 1..25 {
        q.note_attempt(&a.id, &attempt(n, "transient"))
            .await
            .expect("note");
    }
    q.note_attempt(&a.id, &attempt(25, "created"))
        .await
        .expect("note");
    q.complete(&a, "wh-1", false).await.expect("complete");
    let kept = q.attempts(&a.id).await.expect("attempts");
    assert_eq!(kept.len(), lsq_webhooks::job::HISTORY_LEN);
    assert_eq!(
        kept.first(),
        Some(&attempt(6, "transient")),
        "the oldest kept"
    );
    assert_eq!(kept.last(), Some(&attempt(25, "created")));
    let view = q.job_view(&a.id).await.expect("view").expect("known");
    assert_eq!((view.job.status, view.history.len()), (JobState::Done, 20));
    assert!(q.job_view(&JobId::new()).await.expect("view").is_none());

    let b = next_job(q.as_ref()).await;
    q.note_attempt(&b.id, &attempt(1, "permanent"))
        .await
        .expect("note");
    q.bury(&b, "refused").await.expect("bury");
    assert_eq!(q.attempts(&b.id).await.expect("attempts").len(), 1);

    assert_eq!(
        q.purge_done(std::slice::from_ref(&a.id))
            .await
            .expect("purge"),
        1
    );
    assert_eq!(q.purge_dead(None).await.expect("purge"), 1);
    for id in [&a.id, &b.id] {
        assert!(q.attempts(id).await.expect("attempts").is_empty());
        // A late note for a purged job leaves nothing behind.
        q.note_attempt(id, &attempt(99, "created"))
            .await
            .expect("note");
        assert!(q.attempts(id).await.expect("attempts").is_empty());
    }
    let unknown = JobId::new();
    q.note_attempt(&unknown, &attempt(1, "created"))
        .await
        .expect("note");
    assert!(q.attempts(&unknown).await.expect("attempts").is_empty());
}

/// Every page until the last, for one kind.
async fn all_pages(q: &Arc<dyn Queue>, of: PageOf, limit: usize) -> Vec<Vec<JobId>> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = q
            .jobs_page(of, cursor.as_deref(), limit)
            .await
            .expect("page");
        pages.push(page.jobs.iter().map(|j| j.job.clone()).collect());
        match page.next {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
        assert!(pages.len() < 100, "paging never ends");
    }
}

/// Done and dead jobs page newest first with a cursor, each once; waiting jobs page too.
async fn jobs_page_with_a_cursor_newest_first(h: Harness) {
    let q = h.queue_with("pages", &[("acme", 25)], |_| {}).await;
    let ids = push(&q, "acme", 0..7).await;
    let mut finished = Vec::new();
    for n in 0..5 {
        let j = next_job(q.as_ref()).await;
        if n == 3 {
            q.bury(&j, "refused").await.expect("bury");
        } else {
            q.complete(&j, "wh", false).await.expect("complete");
            finished.push(j.id.clone());
        }
        // Distinct finishing times on every backend.
        h.sleep(Duration::from_millis(2)).await;
    }
    let done = all_pages(&q, PageOf::Done, 3).await;
    let newest_first: Vec<JobId> = finished.iter().rev().cloned().collect();
    assert_eq!(
        done,
        [newest_first[..3].to_vec(), newest_first[3..].to_vec()]
    );
    let dead = all_pages(&q, PageOf::Dead, 3).await;
    assert_eq!(dead, [vec![ids[3].clone()]]);
    // Exactly one page when it fits.
    let one = q.jobs_page(PageOf::Done, None, 10).await.expect("page");
    assert_eq!((one.jobs.len(), one.next), (4, None));
    assert!(one.jobs.iter().all(|j| j.status == JobState::Done));

    // The waiting ones: one running (leased), one queued.
    let running = next_job(q.as_ref()).await;
    let mut waiting: Vec<JobId> = all_pages(&q, PageOf::Waiting, 1).await.concat();
    waiting.sort();
    waiting.dedup();
    let mut want = vec![running.id.clone(), ids[6].clone()];
    want.sort();
    assert_eq!(waiting, want);

    assert!(matches!(
        q.jobs_page(PageOf::Done, Some("not a cursor"), 3).await,
        Err(QueueError::Config(_))
    ));
}

/// Retention: done records older than the age are deleted, oldest first and at most `max`
/// at a time; newer ones and dead ones stay; the deleted jobs' keys stay taken.
async fn purge_done_before_deletes_only_old_done_records(h: Harness) {
    let q = h.queue_with("retention", &[("acme", 25)], |_| {}).await;
    let ids = push(&q, "acme", 0..5).await;
    for _ in 0..3 {
        let j = next_job(q.as_ref()).await;
        q.complete(&j, "wh", false).await.expect("complete");
    }
    let d = next_job(q.as_ref()).await;
    q.bury(&d, "refused").await.expect("bury");
    h.sleep(h.ticks(5)).await;
    let newer = next_job(q.as_ref()).await;
    q.complete(&newer, "wh", false).await.expect("complete");

    assert_eq!(q.purge_done_before(h.ticks(3), 2).await.expect("purge"), 2);
    assert_eq!(
        q.purge_done_before(h.ticks(3), 100).await.expect("purge"),
        1
    );
    assert_eq!(
        q.purge_done_before(h.ticks(3), 100).await.expect("purge"),
        0
    );
    let s = q.status().await.expect("status");
    assert_eq!((s.done, s.dead), (1, 1));
    assert!(q.job(&ids[0]).await.expect("job").is_none());
    assert_eq!(record(&q, &newer.id).await.status, JobState::Done);
    // Its key stays taken: pushed again, the job is a duplicate.
    let again = q.push(&[job("acme", 0)]).await.expect("push");
    assert!(matches!(again[0], Pushed::Duplicate { .. }), "{again:?}");
}

// ---------------------------------------------------------------------------------------
// Tenant holds, discovered hosts, calls no dispatch made

fn refused() -> NewHold {
    NewHold {
        kind: HoldKind::KeysRefused,
        reason: "keys refused by LeadSquared (401)".into(),
        length: None,
        by: None,
    }
}

/// Dispatches (following waits, at most `ticks` ticks) until nothing more comes; returns
/// what came, each completed.
async fn drain_all(h: Harness, q: &Arc<dyn Queue>, ticks: u32) -> Vec<LeasedJob> {
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + h.ticks(ticks);
    while tokio::time::Instant::now() < until {
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => {
                q.complete(&j, "wh", false).await.expect("complete");
                out.push(j);
            }
            Dispatch::Wait(d) => h.sleep(d.min(h.tick()).max(Duration::from_millis(1))).await,
            Dispatch::Empty => break,
        }
    }
    out
}

async fn a_held_tenant_makes_no_call_and_others_go_on(h: Harness) {
    let q = h
        .queue_with("held", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    let held = push(&q, "acme", 0..3).await;
    push(&q, "beta", 0..3).await;
    assert!(q.hold("acme", refused()).await.expect("hold"));
    assert!(
        !q.hold("nobody", refused()).await.expect("hold"),
        "unknown tenant"
    );
    let served = drain_all(h, &q, 10).await;
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(served.iter().all(|j| j.tenant == "beta"), "{served:?}");
    // Held until released: nothing for a worker to do, and the dispatch says so.
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
    assert!(q.is_idle().await.expect("idle"));
    for id in &held {
        let r = record(&q, id).await;
        assert_eq!((r.status, r.attempts), (JobState::Queued, 0), "{r:?}");
    }
    let r = row(&q, "acme").await;
    assert_eq!(r.waiting, 3);
    let hold = r.hold.expect("status shows the hold");
    assert_eq!(hold.kind, HoldKind::KeysRefused);
    assert_eq!(hold.reason, "keys refused by LeadSquared (401)");
    assert_eq!(hold.until_ms, None);
    assert_eq!(r.paused_until_ms, None, "no fake end time");
    assert_eq!(
        q.tenant_hold("acme").await.expect("hold").map(|h| h.kind),
        Some(HoldKind::KeysRefused)
    );
    assert_eq!(q.tenant_hold("beta").await.expect("hold"), None);
}

async fn release_wakes_a_waiting_worker_and_the_jobs_run(h: Harness) {
    let q = h.queue_with("release", &[("acme", 25)], |_| {}).await;
    let ids = push(&q, "acme", 0..2).await;
    let by = NewHold {
        kind: HoldKind::Paused,
        reason: "maintenance".into(),
        length: None,
        by: Some("ops".into()),
    };
    q.hold("acme", by).await.expect("hold");
    let shown = q.tenant_hold("acme").await.expect("hold").expect("held");
    assert_eq!(
        (shown.kind, shown.by.as_deref()),
        (HoldKind::Paused, Some("ops"))
    );
    let q2 = q.clone();
    wakes(h, &q, "release", async move {
        let was = q2
            .release("acme")
            .await
            .expect("release")
            .expect("was held");
        assert_eq!(was.reason, "maintenance");
    })
    .await;
    assert_eq!(q.release("acme").await.expect("release"), None);
    let ran = drain(&q, 2).await;
    assert_eq!(
        ran.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        ids,
        "in push order"
    );
    assert!(ran.iter().all(|j| j.attempt == 1), "{ran:?}");
}

async fn a_job_handed_back_to_a_held_tenant_keeps_its_attempt(h: Harness) {
    let q = h
        .queue_with("handback", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    let ids = push(&q, "acme", 0..2).await;
    let a = next_is(&q, &ids[0]).await;
    let b = next_is(&q, &ids[1]).await;
    // Two jobs in flight when the hold lands: both come back, no attempt spent.
    q.hold("acme", refused()).await.expect("hold");
    q.requeue(&a, BACK).await.expect("requeue");
    q.requeue(&b, BACK).await.expect("requeue");
    push(&q, "beta", 0..1).await;
    let served = drain_all(h, &q, 10).await;
    assert_eq!(
        served.iter().map(|j| j.tenant.as_str()).collect::<Vec<_>>(),
        ["beta"]
    );
    for id in &ids {
        let r = record(&q, id).await;
        assert_eq!((r.status, r.attempts), (JobState::Queued, 0), "{r:?}");
    }
    assert_eq!(row(&q, "acme").await.waiting, 2);
}

async fn new_keys_end_a_keys_refused_hold(h: Harness) {
    let q = h
        .queue_with("newkeys", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    push(&q, "acme", 0..1).await;
    q.hold("acme", refused()).await.expect("hold");
    q.hold(
        "beta",
        NewHold {
            kind: HoldKind::Paused,
            reason: "by hand".into(),
            length: None,
            by: None,
        },
    )
    .await
    .expect("hold");
    // The same keys again: still refused.
    q.put_tenants(&[tenant("acme", 25)]).await.expect("tenants");
    assert!(q.tenant_hold("acme").await.expect("hold").is_some());
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
    // New keys: the hold ends and a waiting worker wakes. An operator's pause stays.
    let fixed = |name: &str| Tenant {
        secret_key: lsq_webhooks::secret::Secret::new("sk-new"),
        ..tenant(name, 25)
    };
    let q2 = q.clone();
    wakes(h, &q, "an import with new keys", async move {
        q2.put_tenants(&[fixed("acme"), fixed("beta")])
            .await
            .expect("tenants");
    })
    .await;
    assert_eq!(q.tenant_hold("acme").await.expect("hold"), None);
    assert_eq!(
        q.tenant_hold("beta").await.expect("hold").map(|h| h.kind),
        Some(HoldKind::Paused)
    );
    let j = next_job(q.as_ref()).await;
    assert_eq!((j.tenant.as_str(), j.attempt), ("acme", 1));
}

async fn an_answer_from_the_host_starts_its_failure_streak_over(h: Harness) {
    let q = h.queue_with("answered-host", &[("acme", 25)], |_| {}).await;
    let policy = UnreachablePolicy {
        after: 3,
        base: h.ticks(2),
        max: h.ticks(8),
        jitter: 1.0,
    };
    let mut failures = Vec::new();
    for answered in [false, false, true, false, false] {
        if answered {
            q.host_answered("acme").await.expect("answered");
            continue;
        }
        let f = q
            .host_failed("acme", policy, "timed out")
            .await
            .expect("failed");
        failures.push((f.failures, f.held_for));
    }
    // Two in a row, an answer, two again: never the third in a row that holds the tenant.
    assert_eq!(failures, [(1, None), (2, None), (1, None), (2, None)]);
    assert!(q.tenant_hold("acme").await.expect("hold").is_none());
    // An unknown tenant is nothing to answer for.
    q.host_answered("nobody").await.expect("unknown tenant");
}

// ---------------------------------------------------------------------------------------
// Calls in flight (issue 14)

/// Whether a dispatch handed out nothing.
fn nothing(d: &Dispatched) -> bool {
    !matches!(d, Dispatched::Jobs(_))
}

/// A tenant never has more calls in flight (leased jobs) than its cap, whatever its window
/// allows, so a host that never answers holds at most that many worker slots. Other tenants
/// are not held back; the first lease to end gives the turn back at once and wakes a
/// waiting worker; an expired lease frees its slot too.
async fn a_tenant_has_at_most_its_cap_of_calls_in_flight(h: Harness) {
    let q = h
        .queue_with("in-flight", &[("acme", 2), ("beta", 5)], |_| {})
        .await;
    push(&q, "acme", 0..6).await;
    let first = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(first.len(), 2, "the window's cap: {first:?}");
    // A window later the window allows two more calls; the two still in flight do not.
    h.sleep(h.ticks(6)).await;
    let d = q.dispatch_many(10, None).await.expect("dispatch");
    assert!(nothing(&d), "a third call in flight: {d:?}");
    push(&q, "beta", 0..1).await;
    let b = only_job(q.dispatch().await.expect("dispatch"));
    assert_eq!(b.tenant, "beta", "another tenant is not held back");
    // One call ends: one more may go, at once, and a waiting worker is told.
    wakes(h, &q, "a lease ending for a tenant at its cap", async {
        q.answered(&first[0]).await.expect("answered");
        q.complete(&first[0], "wh-0", false)
            .await
            .expect("complete");
    })
    .await;
    let again = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(again.len(), 1, "one slot came free: {again:?}");
    assert_eq!(again[0].tenant, "acme");
    // Leases that expire free their slots: the jobs come back (outcome unknown), two at a
    // time again.
    h.sleep(h.ticks(51)).await;
    let back = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    let acme: Vec<_> = back.iter().filter(|j| j.tenant == "acme").collect();
    assert_eq!(acme.len(), 2, "after the leases expired: {back:?}");
}

/// Every path that ends a lease ends a call in flight: complete, retry_later, requeue, bury.
async fn every_finishing_path_ends_a_call_in_flight(h: Harness) {
    let q = h
        .queue_with("in-flight-paths", &[("acme", 2)], |_| {})
        .await;
    push(&q, "acme", 0..8).await;
    let mut flying = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(flying.len(), 2);
    for path in ["complete", "retry_later", "requeue", "bury"] {
        // Past the window: only the calls in flight stop a dispatch.
        h.sleep(h.ticks(6)).await;
        let d = q.dispatch_many(10, None).await.expect("dispatch");
        assert!(nothing(&d), "before {path}: a third call in flight: {d:?}");
        let j = flying.remove(0);
        match path {
            "complete" => q.complete(&j, "wh", false).await.expect(path),
            "retry_later" => q
                .retry_later(&j, h.ticks(1000), "503", false)
                .await
                .expect(path),
            "requeue" => q.requeue(&j, BACK).await.expect(path),
            _ => q.bury(&j, "400").await.expect(path),
        }
        let next = batch(q.dispatch_many(10, None).await.expect("dispatch"));
        assert_eq!(next.len(), 1, "after {path}: one slot came free: {next:?}");
        flying.extend(next);
    }
}

/// With `slow_start`, a tenant whose host has not answered yet has one call in flight until
/// it answers; new keys start it over, and `host_answered` ends it.
async fn slow_start_gives_an_unanswered_host_one_call_in_flight(h: Harness) {
    let q = h
        .queue_with("slow-start", &[("acme", 5)], |c| c.slow_start = true)
        .await;
    push(&q, "acme", 0..12).await;
    let first = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(
        first.len(),
        1,
        "one call before the host answers: {first:?}"
    );
    let d = q.dispatch_many(10, None).await.expect("dispatch");
    assert!(nothing(&d), "a second call before the host answered: {d:?}");
    // It answers: the whole cap (5), less the answered call in the window.
    q.complete(&first[0], "wh", false).await.expect("complete");
    let more = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(more.len(), 4, "after the host answered: {more:?}");
    // New keys have not been answered: one call in flight at most, and four are; three of
    // them go back, and one is still more than a slow start allows.
    let mut renewed = tenant("acme", 5);
    renewed.access_key = lsq_webhooks::secret::Secret::new("new-access-key");
    q.put_tenants(&[renewed]).await.expect("new keys");
    h.sleep(h.ticks(6)).await;
    for j in &more[..3] {
        q.requeue(j, BACK).await.expect("requeue");
    }
    let d = q.dispatch_many(10, None).await.expect("dispatch");
    assert!(nothing(&d), "new keys with a call in flight: {d:?}");
    // An answer from the host (not a completion) ends it: the cap, less the three requeued
    // calls in the window.
    q.host_answered("acme").await.expect("answered");
    let after = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(after.len(), 2, "after the host answered: {after:?}");
}

/// Holds grow per hold, not per failure: the calls in flight when a host dies fail together,
/// and count as one.
async fn unreachable_host_holds_grow_cap_and_end(h: Harness) {
    let q = h
        .queue_with("unreachable", &[("acme", 25), ("beta", 25)], |_| {})
        .await;
    let policy = UnreachablePolicy {
        after: 2,
        base: h.ticks(2),
        max: h.ticks(8),
        jitter: 1.0,
    };
    let mut held = Vec::new();
    // Four in a row: held from the second; the two after it come while it is in force (calls
    // sent before it) and change nothing but the count.
    for _ in 0..4 {
        let f = q
            .host_failed("acme", policy, "could not connect")
            .await
            .expect("failed");
        held.push((f.failures, f.held_for));
    }
    // Then one failure after each hold has ended: each hold twice the last, up to the cap.
    for wait in [2, 4, 8] {
        h.sleep(h.ticks(wait) + h.tick() / 2).await;
        let f = q
            .host_failed("acme", policy, "could not connect")
            .await
            .expect("failed");
        held.push((f.failures, f.held_for));
    }
    assert_eq!(
        held,
        [
            (1, None),
            (2, Some(h.ticks(2))),
            (3, None),
            (4, None),
            (5, Some(h.ticks(4))),
            (6, Some(h.ticks(8))),
            (7, Some(h.ticks(8))),
        ]
    );
    let hold = q.tenant_hold("acme").await.expect("hold").expect("held");
    assert_eq!(
        (hold.kind, hold.failures, hold.holds),
        (HoldKind::HostUnreachable, 7, 4)
    );
    assert!(hold.until_ms.is_some());
    let ids = push(&q, "acme", 0..1).await;
    push(&q, "beta", 0..2).await;
    // Held: the other tenant is served, acme's job waits (a wait, not "empty").
    let mut beta = 0;
    loop {
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => {
                assert_eq!(j.tenant, "beta", "acme is held");
                q.complete(&j, "wh", false).await.expect("complete");
                beta += 1;
            }
            Dispatch::Wait(d) => {
                assert!(d > Duration::ZERO);
                break;
            }
            Dispatch::Empty => panic!("acme's job is waiting for the hold's end"),
        }
    }
    assert_eq!(beta, 2);
    assert!(
        !q.is_idle().await.expect("idle"),
        "a timed hold ends by itself"
    );
    // The hold ends by itself; the job's attempt was never spent.
    let j = next_is(&q, &ids[0]).await;
    assert_eq!(j.attempt, 1);
    assert_eq!(q.tenant_hold("acme").await.expect("hold"), None, "ended");
    // A success ends the streak: the next failure is the first again.
    q.complete(&j, "wh", false).await.expect("complete");
    let f = q
        .host_failed("acme", policy, "could not connect")
        .await
        .expect("failed");
    assert_eq!((f.failures, f.held_for), (1, None));
    // A timed hold never replaces one without an end.
    q.hold("acme", refused()).await.expect("hold");
    let f = q
        .host_failed("acme", policy, "could not connect")
        .await
        .expect("failed");
    assert_eq!(f.held_for, None);
    assert_eq!(
        q.tenant_hold("acme").await.expect("hold").map(|h| h.kind),
        Some(HoldKind::KeysRefused)
    );
}

async fn a_discovered_host_is_recorded_and_kept_by_an_import(h: Harness) {
    let q = h.queue_with("host", &[], |_| {}).await;
    let hostless = Tenant {
        api_base: None,
        ..tenant("acme", 25)
    };
    q.put_tenants(std::slice::from_ref(&hostless))
        .await
        .expect("tenants");
    assert_eq!(
        q.tenant("acme")
            .await
            .expect("tenant")
            .expect("acme")
            .api_base,
        None
    );
    push(&q, "acme", 0..1).await;
    assert_eq!(
        row(&q, "acme").await.host,
        None,
        "status: still discovering"
    );
    let found = url::Url::parse("https://api-in21.leadsquared.com").expect("url");
    let access = hostless.access_key.expose().to_string();
    assert!(
        !q.set_tenant_host("acme", Some(&found), "other-key")
            .await
            .expect("set")
    );
    assert!(
        !q.set_tenant_host("nobody", Some(&found), &access)
            .await
            .expect("set")
    );
    assert!(
        q.set_tenant_host("acme", Some(&found), &access)
            .await
            .expect("set")
    );
    let stored = q.tenant("acme").await.expect("tenant").expect("acme");
    assert_eq!(stored.api_base.as_ref(), Some(&found));
    assert_eq!(row(&q, "acme").await.host.as_deref(), Some(found.as_str()));
    assert_eq!(stored.secret_key, hostless.secret_key, "keys intact");
    assert_eq!(stored.limit, 25);
    // Importing the row again (no host, same keys) keeps the discovered host.
    q.put_tenants(std::slice::from_ref(&hostless))
        .await
        .expect("tenants");
    let again = q.tenant("acme").await.expect("tenant").expect("acme");
    assert_eq!(again.api_base.as_ref(), Some(&found));
    // New keys: another account, perhaps; the host is found again.
    let rekeyed = Tenant {
        access_key: lsq_webhooks::secret::Secret::new("ak-new"),
        ..hostless
    };
    q.put_tenants(&[rekeyed]).await.expect("tenants");
    assert_eq!(
        q.tenant("acme")
            .await
            .expect("tenant")
            .expect("acme")
            .api_base,
        None
    );
}

/// Issue 27: a 401 whose rediscovery could not complete forgets the tenant's host, so that
/// its next dispatch asks discovery (no Create); the host is gone from the record and the
/// status, the tenant starts slow again (one call in flight), and a found host is recorded
/// as before. A forget with other keys changes nothing.
async fn a_forgotten_host_is_asked_for_again(h: Harness) {
    let q = h
        .queue_with("forget", &[("acme", 5)], |c| c.slow_start = true)
        .await;
    let acme = q.tenant("acme").await.expect("tenant").expect("acme");
    let access = acme.access_key.expose().to_string();
    let home = acme.api_base.clone().expect("a host");
    push(&q, "acme", 0..6).await;
    // The host answers, so the whole cap is open.
    let first = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    q.complete(&first[0], "wh", false).await.expect("complete");
    assert!(
        !q.set_tenant_host("acme", None, "other-key")
            .await
            .expect("forget")
    );
    assert_eq!(
        q.tenant("acme").await.expect("t").expect("acme").api_base,
        Some(home.clone())
    );
    assert!(
        q.set_tenant_host("acme", None, &access)
            .await
            .expect("forget")
    );
    assert_eq!(
        q.tenant("acme").await.expect("t").expect("acme").api_base,
        None
    );
    assert_eq!(row(&q, "acme").await.host, None, "status: discovering");
    // Slow again: one call in flight until the host answers.
    let d = batch(q.dispatch_many(10, None).await.expect("dispatch"));
    assert_eq!(d.len(), 1, "one call while the host is not known: {d:?}");
    assert!(nothing(&q.dispatch_many(10, None).await.expect("dispatch")));
    q.requeue(&d[0], BACK).await.expect("requeue");
    assert!(
        q.set_tenant_host("acme", Some(&home), &access)
            .await
            .expect("set")
    );
    assert_eq!(row(&q, "acme").await.host.as_deref(), Some(home.as_str()));
}

async fn take_call_spends_a_call_of_the_window(h: Harness) {
    let q = h
        .queue_with("take", &[("acme", 2), ("beta", 2)], |_| {})
        .await;
    push(&q, "acme", 0..1).await;
    assert_eq!(q.take_call("acme", "d1").await.expect("take"), None);
    assert_eq!(q.take_call("acme", "d2").await.expect("take"), None);
    let wait = q
        .take_call("acme", "d3")
        .await
        .expect("take")
        .expect("window full");
    assert!(wait > Duration::ZERO && wait <= h.window(), "{wait:?}");
    // The window is full: the job waits for it too.
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    let j = next_job(q.as_ref()).await;
    assert_eq!(j.tenant, "acme");
    // A tenant held until released may not call.
    q.hold("beta", refused()).await.expect("hold");
    let wait = q
        .take_call("beta", "d4")
        .await
        .expect("take")
        .expect("held");
    assert!(wait > Duration::from_secs(86_400 * 365), "{wait:?}");
}

async fn an_unsent_call_leaves_the_window(h: Harness) {
    let q = h.queue_with("unsent", &[("acme", 1)], |_| {}).await;
    let ids = push(&q, "acme", 0..2).await;
    let first = next_is(&q, &ids[0]).await;
    // Handed back without being sent: its call still counts until it is forgotten.
    q.requeue(&first, BACK).await.expect("requeue");
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Wait(_)
    ));
    let q2 = q.clone();
    let f2 = first.clone();
    wakes(h, &q, "unsent", async move {
        q2.unsent(&f2).await.expect("unsent");
    })
    .await;
    let again = only_job(q.dispatch().await.expect("dispatch"));
    assert_eq!((again.id.clone(), again.attempt), (ids[0].clone(), 1));
    // Forgetting a call that is not logged changes nothing.
    q.unsent(&first).await.expect("unsent");
}

// ---------------------------------------------------------------------------------------
// The tenants view and the queue's pause (issue 15)

/// The names of a page's rows, in order.
fn names(page: &TenantPage) -> Vec<&str> {
    page.tenants.iter().map(|r| r.tenant.as_str()).collect()
}

async fn tenants_page(
    q: &Arc<dyn Queue>,
    sort: TenantSort,
    filter: Option<TenantState>,
) -> TenantPage {
    q.tenants_page(&TenantQuery {
        sort,
        filter,
        cursor: None,
        limit: 50,
    })
    .await
    .expect("tenants page")
}

async fn the_tenants_view_counts_jobs_as_they_move(h: Harness) {
    let q = h
        .queue_with(
            "tenants-view",
            &[("a", 25), ("b", 1), ("c", 25), ("d", 25), ("e", 25)],
            |_| {},
        )
        .await;
    let a = push(&q, "a", 0..3).await;
    push(&q, "b", 0..2).await;
    let c = push(&q, "c", 0..1).await;
    push(&q, "e", 0..1).await;
    let held = NewHold {
        kind: HoldKind::Paused,
        reason: "the customer asked".into(),
        length: None,
        by: Some("ana".into()),
    };
    assert!(q.hold("e", held).await.expect("hold"));
    let b0 = if h.sharded() {
        // The shards take turns, so the order across tenants is theirs: a's first job is
        // completed, its second buried, b's kept leased, c's buried, and a third job of a
        // that comes first is handed back unsent.
        let (mut a_seen, mut b_seen, mut c_seen) = (0, None, false);
        while a_seen < 2 || b_seen.is_none() || !c_seen {
            let j = next_job(q.as_ref()).await;
            match j.tenant.as_str() {
                "a" if a_seen < 2 => {
                    assert_eq!(j.id, a[a_seen]);
                    if a_seen == 0 {
                        q.complete(&j, "wh", false).await.expect("complete");
                    } else {
                        q.bury(&j, "permanent").await.expect("bury");
                    }
                    a_seen += 1;
                }
                "b" if b_seen.is_none() => b_seen = Some(j),
                "c" => {
                    assert_eq!(j.id, c[0]);
                    q.bury(&j, "permanent").await.expect("bury");
                    c_seen = true;
                }
                _ => {
                    q.unsent(&j).await.expect("unsent");
                    q.requeue(&j, BACK).await.expect("requeue");
                }
            }
        }
        b_seen.expect("b's job")
    } else {
        // Tenants take turns: a, b, c, then a again (b is at its limit of 1).
        let a0 = next_is(&q, &a[0]).await;
        q.complete(&a0, "wh", false).await.expect("complete");
        let b0 = next_job(q.as_ref()).await;
        assert_eq!(b0.tenant, "b");
        let c0 = next_is(&q, &c[0]).await;
        q.bury(&c0, "permanent").await.expect("bury");
        let a1 = next_is(&q, &a[1]).await;
        q.bury(&a1, "permanent").await.expect("bury");
        b0
    };

    let page = tenants_page(&q, TenantSort::Name, None).await;
    assert_eq!(page.total, 5);
    assert_eq!(page.next, None);
    assert_eq!(names(&page), ["a", "b", "c", "d", "e"]);
    let row = |name: &str| {
        page.tenants
            .iter()
            .find(|r| r.tenant == name)
            .expect("row")
            .clone()
    };
    let counts = |r: &TenantRow| (r.state, r.waiting, r.in_flight, r.done, r.dead);
    assert_eq!(counts(&row("a")), (TenantState::Waiting, 1, 0, 1, 1));
    assert_eq!(counts(&row("b")), (TenantState::Throttled, 1, 1, 0, 0));
    assert_eq!(counts(&row("c")), (TenantState::Stuck, 0, 0, 0, 1));
    assert_eq!(counts(&row("d")), (TenantState::Done, 0, 0, 0, 0));
    assert_eq!(counts(&row("e")), (TenantState::Held, 1, 0, 0, 0));
    assert_eq!(
        (row("a").calls_in_window, row("a").share, row("a").limit),
        (2, 25, 25)
    );
    assert_eq!((row("b").calls_in_window, row("b").share), (1, 1));
    assert!(row("b").next_call_ms.is_some_and(|at| at > 0));
    assert_eq!(row("a").next_call_ms, None);
    let hold = row("e").hold.expect("e's hold");
    assert_eq!(
        (hold.kind, hold.reason.as_str(), hold.by.as_deref()),
        (HoldKind::Paused, "the customer asked", Some("ana"))
    );
    assert!(row("a").hold.is_none());

    // Counts sort most first, ties by name.
    let by = |sort| {
        let q = q.clone();
        async move { tenants_page(&q, sort, None).await }
    };
    assert_eq!(
        names(&by(TenantSort::Dead).await),
        ["a", "c", "b", "d", "e"]
    );
    assert_eq!(
        names(&by(TenantSort::Waiting).await),
        ["b", "a", "e", "c", "d"]
    );
    assert_eq!(
        names(&by(TenantSort::Done).await),
        ["a", "b", "c", "d", "e"]
    );
    for (state, want) in [
        (TenantState::Waiting, "a"),
        (TenantState::Throttled, "b"),
        (TenantState::Stuck, "c"),
        (TenantState::Done, "d"),
        (TenantState::Held, "e"),
    ] {
        let page = tenants_page(&q, TenantSort::Name, Some(state)).await;
        assert_eq!(names(&page), [want], "filter {state:?}");
    }

    // Pages of two by name, each cursor from the page before.
    let mut cursor = None;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let page = q
            .tenants_page(&TenantQuery {
                sort: TenantSort::Name,
                filter: None,
                cursor: cursor.clone(),
                limit: 2,
            })
            .await
            .expect("page");
        seen.extend(page.tenants.iter().map(|r| r.tenant.clone()));
        cursor = page.next;
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    assert_eq!(cursor, None);
    let bad = q
        .tenants_page(&TenantQuery {
            cursor: Some("not a cursor".into()),
            limit: 2,
            ..TenantQuery::default()
        })
        .await;
    assert!(matches!(bad, Err(QueueError::Config(_))), "{bad:?}");

    // Dead jobs retried count as unfinished again; purged ones are gone.
    assert_eq!(
        q.retry_dead(Some(std::slice::from_ref(&c[0])))
            .await
            .expect("retry"),
        1
    );
    assert_eq!(
        q.purge_dead(Some(std::slice::from_ref(&a[1])))
            .await
            .expect("purge"),
        1
    );
    let page = tenants_page(&q, TenantSort::Name, None).await;
    let row = |name: &str| {
        page.tenants
            .iter()
            .find(|r| r.tenant == name)
            .expect("row")
            .clone()
    };
    assert_eq!(counts(&row("c")), (TenantState::Waiting, 1, 0, 0, 0));
    assert_eq!((row("a").done, row("a").dead), (1, 0));
    // The job in flight finishes: done, and nothing of b is in flight any more.
    q.complete(&b0, "wh", false).await.expect("complete");
    let page = tenants_page(&q, TenantSort::Name, None).await;
    let b = page.tenants.iter().find(|r| r.tenant == "b").expect("b");
    assert_eq!((b.in_flight, b.done), (0, 1));
}

/// Every way a job dies (buried, out of attempts on a retry, its lease expired with none
/// left) counts it dead once, and a second burial of a lost lease changes nothing.
async fn every_way_a_job_dies_counts_it_dead_once(h: Harness) {
    let q = h
        .queue_with("tenants-dead", &[("acme", 25)], |c| {
            c.lease = h.ticks(2);
            c.max_attempts = 1;
        })
        .await;
    let ids = push(&q, "acme", 0..3).await;
    let first = next_is(&q, &ids[0]).await;
    q.retry_later(&first, h.ticks(1), "HTTP 503", false)
        .await
        .expect("retry later");
    let second = next_is(&q, &ids[1]).await;
    q.bury(&second, "permanent").await.expect("bury");
    // Its lease is gone: a second burial is refused and counts nothing.
    assert!(q.bury(&second, "permanent").await.is_err());
    next_is(&q, &ids[2]).await;
    h.sleep(h.ticks(3)).await;
    assert_eq!(q.dispatch().await.expect("dispatch"), Dispatch::Empty);
    assert_eq!(q.dead().await.expect("dead").len(), 3);
    let page = tenants_page(&q, TenantSort::Name, None).await;
    let acme = &page.tenants[0];
    assert_eq!(
        (
            acme.state,
            acme.waiting,
            acme.in_flight,
            acme.done,
            acme.dead
        ),
        (TenantState::Stuck, 0, 0, 0, 3)
    );
    assert_eq!(q.retry_dead(None).await.expect("retry"), 3);
    let page = tenants_page(&q, TenantSort::Name, None).await;
    let acme = &page.tenants[0];
    assert_eq!(
        (acme.state, acme.waiting, acme.dead),
        (TenantState::Waiting, 3, 0)
    );
}

async fn a_paused_queue_dispatches_nothing_and_its_jobs_stay_queued(h: Harness) {
    let q = h.queue_with("queue-pause", &[("acme", 25)], |_| {}).await;
    let ids = push(&q, "acme", 0..3).await;
    let running = next_is(&q, &ids[0]).await;
    assert_eq!(q.queue_pause().await.expect("pause"), None);
    q.pause_queue("first", None).await.expect("pause");
    let pause = q
        .pause_queue("deploy", Some("ana@ops1"))
        .await
        .expect("pause");
    assert_eq!(
        (pause.reason.as_str(), pause.by.as_deref()),
        ("deploy", Some("ana@ops1"))
    );
    assert!(pause.since_ms > 0);
    assert_eq!(q.queue_pause().await.expect("pause"), Some(pause.clone()));
    let status = q.status().await.expect("status");
    assert_eq!(status.paused, Some(pause.clone()));
    assert_eq!((status.queued, status.running), (2, 1));
    assert!(q.pulse(5).await.expect("pulse").paused);

    // Nothing is handed out, one at a time or many.
    assert!(!matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Job(_)
    ));
    assert!(!matches!(
        q.dispatch_many(5, None).await.expect("dispatch"),
        Dispatched::Jobs(_)
    ));
    // The job in flight finishes; with nothing running, a paused queue is idle.
    assert!(!q.is_idle().await.expect("idle"));
    q.complete(&running, "wh", false).await.expect("complete");
    assert!(q.is_idle().await.expect("idle"));

    let q2 = q.clone();
    wakes(h, &q, "resume", async move {
        let ended = q2.resume_queue().await.expect("resume");
        assert_eq!(ended.map(|p| p.reason), Some("deploy".into()));
    })
    .await;
    assert_eq!(q.resume_queue().await.expect("resume"), None);
    assert_eq!(q.status().await.expect("status").paused, None);
    assert!(!q.pulse(5).await.expect("pulse").paused);
    let next = next_is(&q, &ids[1]).await;
    assert_eq!(next.attempt, 1);
}

// Revisions of a webhook (issue 18): update, delete, versioned keys

/// A job checked as `enqueue` checks it (key derived from tenant, event and description
/// unless given), with the webhook's URL.
fn revision(tenant: &str, key: Option<&str>, url: &str) -> lsq_webhooks::job::NewJob {
    let request = lsq_webhooks::producer::JobRequest {
        tenant: tenant.into(),
        webhook: serde_json::json!({
            "Description": "CRM sync: lead created",
            "URL": url,
            "Method": "POST",
            "ContentType": "application/json",
            "WebhookEvent": "3",
            "IsSpecificLandingPage": false,
            "NotifyOnFailure": false,
            "WebhookProperties": null,
        }),
        key: key.map(str::to_string),
        delete: false,
    };
    lsq_webhooks::producer::validate(&request).expect("valid job")
}

/// A delete line's job.
fn deletion(tenant: &str, key: &str) -> lsq_webhooks::job::NewJob {
    let request = lsq_webhooks::producer::JobRequest {
        tenant: tenant.into(),
        webhook: serde_json::Value::Null,
        key: Some(key.into()),
        delete: true,
    };
    lsq_webhooks::producer::validate(&request).expect("valid delete")
}

async fn push_one(q: &Arc<dyn Queue>, job: lsq_webhooks::job::NewJob) -> Pushed {
    let mut out = q.push(&[job]).await.expect("push");
    out.pop().expect("one answer")
}

/// Dispatches the next job and completes it as `outcome` with `webhook_id`.
async fn finish_as(
    q: &Arc<dyn Queue>,
    webhook_id: &str,
    outcome: lsq_webhooks::job::Outcome,
) -> LeasedJob {
    let j = next_job(q.as_ref()).await;
    q.complete_as(&j, webhook_id, false, outcome)
        .await
        .expect("complete");
    j
}

async fn a_changed_body_under_a_done_key_is_an_update_and_the_same_body_a_duplicate(h: Harness) {
    use lsq_webhooks::job::{Operation, Outcome};
    let q = h.queue_with("revise", &[("acme", 25)], |_| {}).await;
    let first = revision("acme", None, "https://old.example/in");
    let created = ids(&[push_one(&q, first.clone()).await]);
    // Not done yet: a changed body is a duplicate of the unfinished job.
    let moved = revision("acme", None, "https://new.example/in");
    assert_eq!(
        moved.key, first.key,
        "the derived key names the webhook, not its body"
    );
    assert_eq!(
        push_one(&q, moved.clone()).await,
        Pushed::Duplicate {
            job: created[0].clone()
        }
    );
    let j = finish_as(&q, "wh-1", Outcome::Created).await;
    assert_eq!(
        Operation::split(&j.body),
        (Operation::Create, first.body.as_str())
    );
    let done = record(&q, &created[0]).await;
    assert_eq!(done.outcome, Some(Outcome::Created));
    // The record keeps what `sync` compares: the body's digest and its fields' digests.
    assert_eq!(
        done.digest,
        Some(lsq_webhooks::job::body_digest(&first.body))
    );
    assert_eq!(
        done.fields,
        Some(lsq_webhooks::job::field_digests(&first.body))
    );
    // The same body again: a duplicate.
    assert_eq!(
        push_one(&q, first.clone()).await,
        Pushed::Duplicate {
            job: created[0].clone()
        }
    );
    // Another body: an update of the webhook the done record holds.
    let update = ids(&[push_one(&q, moved.clone()).await]);
    assert_ne!(update[0], created[0]);
    assert_eq!(
        q.find_job("acme", &moved.key).await.expect("find"),
        Some(update[0].clone())
    );
    let j = finish_as(&q, "wh-1", Outcome::Updated).await;
    assert_eq!(
        Operation::split(&j.body),
        (Operation::Update("wh-1".into()), moved.body.as_str())
    );
    let r = record(&q, &update[0]).await;
    assert_eq!(
        (r.status, r.webhook_id.as_deref(), r.outcome),
        (JobState::Done, Some("wh-1"), Some(Outcome::Updated))
    );
    // The update's body is the one recorded now.
    assert_eq!(
        push_one(&q, moved).await,
        Pushed::Duplicate {
            job: update[0].clone()
        }
    );
    assert!(matches!(push_one(&q, first).await, Pushed::Enqueued { .. }));
}

async fn a_delete_line_deletes_what_its_key_names_and_a_body_after_it_creates_again(h: Harness) {
    use lsq_webhooks::job::{Operation, Outcome};
    let q = h.queue_with("delete", &[("acme", 25)], |_| {}).await;
    let hook = revision("acme", Some("crm"), "https://a.example/in");
    push_one(&q, hook.clone()).await;
    finish_as(&q, "wh-7", Outcome::Created).await;
    let gone = ids(&[push_one(&q, deletion("acme", "crm")).await]);
    let j = finish_as(&q, "wh-7", Outcome::Deleted).await;
    assert_eq!(
        Operation::split(&j.body),
        (Operation::Delete("wh-7".into()), "")
    );
    assert_eq!(record(&q, &gone[0]).await.outcome, Some(Outcome::Deleted));
    // Deleted already: a duplicate.
    assert_eq!(
        push_one(&q, deletion("acme", "crm")).await,
        Pushed::Duplicate {
            job: gone[0].clone()
        }
    );
    // A body after the delete creates the webhook again.
    push_one(&q, hook.clone()).await;
    let j = finish_as(&q, "wh-8", Outcome::Created).await;
    assert_eq!(
        Operation::split(&j.body),
        (Operation::Create, hook.body.as_str())
    );
    // A delete of a key never pushed is a delete of nothing (no Id): the worker finds it
    // not found without a call.
    push_one(&q, deletion("acme", "never")).await;
    let j = finish_as(&q, "", Outcome::NotFound).await;
    assert_eq!(
        Operation::split(&j.body),
        (Operation::Delete(String::new()), "")
    );
    // Not found counts as gone, like deleted.
    assert!(matches!(
        push_one(&q, deletion("acme", "never")).await,
        Pushed::Duplicate { .. }
    ));
    let results = q.results(Some("acme")).await.expect("results");
    let outcomes: Vec<_> = results.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            Some(Outcome::Created),
            Some(Outcome::Deleted),
            Some(Outcome::Created),
            Some(Outcome::NotFound)
        ]
    );
    let counted = q.status().await.expect("status").outcomes;
    let count = |o: Outcome| counted.get(o.as_str()).copied();
    assert_eq!(
        (
            count(Outcome::Created),
            count(Outcome::Updated),
            count(Outcome::Deleted),
            count(Outcome::NotFound)
        ),
        (Some(2), Some(0), Some(1), Some(1)),
        "{counted:?}"
    );
}

async fn a_job_done_under_the_version_1_key_is_not_created_again(h: Harness) {
    use lsq_webhooks::job::{Operation, Outcome, legacy_key};
    let q = h.queue_with("legacy", &[("acme", 25)], |_| {}).await;
    // A queue from before issue 18: the job keyed by tenant and body, done by `complete`.
    let new_code = revision("acme", None, "https://old.example/in");
    let old_key = legacy_key("acme", &new_code.body);
    assert_eq!(new_code.legacy_key.as_deref(), Some(old_key.as_str()));
    let old = lsq_webhooks::job::NewJob {
        key: old_key,
        legacy_key: None,
        ..new_code.clone()
    };
    let done = ids(&[push_one(&q, old).await]);
    let j = next_job(q.as_ref()).await;
    q.complete(&j, "wh-old", false).await.expect("complete");
    // The same job pushed by this version: a duplicate of the done one, no second create.
    assert_eq!(
        push_one(&q, new_code.clone()).await,
        Pushed::Duplicate {
            job: done[0].clone()
        }
    );
    assert_eq!(
        q.find_job("acme", &new_code.key).await.expect("find"),
        Some(done[0].clone())
    );
    // And the webhook's new URL is an update of the webhook the old job created.
    let moved = revision("acme", None, "https://new.example/in");
    assert!(matches!(
        push_one(&q, moved.clone()).await,
        Pushed::Enqueued { .. }
    ));
    let j = finish_as(&q, "wh-old", Outcome::Updated).await;
    assert_eq!(
        Operation::split(&j.body),
        (Operation::Update("wh-old".into()), moved.body.as_str())
    );
    assert!(matches!(
        q.dispatch().await.expect("dispatch"),
        Dispatch::Empty
    ));
}

/// One `#[tokio::test]` per case per backend.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        /// The cases against a real Redis, in real time.
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Harness::Redis).await;
                }
            )*
        }
        /// The cases against a real Redis Cluster (one queue, one hash tag: one node).
        mod cluster {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Harness::Cluster).await;
                }
            )*
        }
        /// The cases against the embedded queue, on the paused clock.
        mod embedded {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(super::Harness::Embedded).await;
                }
            )*
        }
        /// The cases against a queue of 3 embedded shards, on the paused clock.
        mod sharded {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::$case(super::Harness::Sharded).await;
                }
            )*
        }
        /// The cases against a queue of 4 shards on the Redis Cluster.
        mod cluster_sharded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Harness::ClusterSharded).await;
                }
            )*
        }
    };
}

conformance!(
    push_then_dispatch_in_push_order,
    push_is_idempotent_per_tenant_and_key,
    an_unknown_tenant_refuses_the_whole_push,
    tenants_take_turns_and_none_waits_behind_a_busy_one,
    a_tenant_on_a_quiet_shard_is_not_starved_by_a_busy_shard,
    never_more_than_limit_calls_in_any_window,
    answered_restamps_the_call_so_slow_answers_push_the_window_later,
    every_finishing_path_restamps_the_call,
    sending_restamps_the_call_so_a_late_create_counts_from_when_it_goes_out,
    dispatch_many_hands_out_what_single_dispatches_would,
    dispatch_many_stamps_the_nth_job_n_microseconds_later,
    an_expired_lease_is_taken_back_and_the_old_holder_refused,
    a_completion_repeated_with_its_id_is_recognised,
    complete_many_records_each_job_as_complete_does,
    complete_many_restamps_each_call_when_its_answer_arrived,
    an_expired_lease_with_no_attempts_left_buries_the_job,
    a_lease_lost_mid_create_waits_until_the_call_can_no_longer_land,
    a_fenced_dispatch_waits_for_the_create_like_the_explicit_fence,
    a_hand_back_mid_create_waits_and_other_finishes_forget_the_fence,
    retry_later_schedules_at_the_front_then_gives_up,
    rate_limited_with_a_limit_pauses_gives_back_the_attempt_and_learns_it,
    rate_limited_without_a_limit_pauses_and_keeps_the_limit,
    requeue_puts_the_job_at_the_front_spending_or_giving_back_the_attempt,
    bury_records_the_reason_and_dead_jobs_are_retried_or_purged,
    purge_done_deletes_done_records_and_keeps_their_keys,
    status_counts_and_the_tenant_view,
    results_keep_finishing_order_and_name_a_tenant,
    results_across_shards_keep_finishing_order,
    pages_across_shards_are_newest_first,
    a_push_wakes_a_waiting_worker,
    put_tenants_wakes_a_waiting_worker,
    retry_later_wakes_a_waiting_worker,
    rate_limited_wakes_a_waiting_worker,
    requeue_wakes_a_waiting_worker,
    retry_dead_wakes_a_waiting_worker,
    a_lease_taken_back_wakes_a_waiting_worker,
    a_reserve_leaves_calls_unused_in_every_window,
    the_first_unexplained_answer_cuts_to_what_leaves_the_other_load_whole,
    later_cuts_are_gentle_and_a_second_soon_after_halves,
    the_share_is_not_cut_on_a_rate_limit_our_calls_explain,
    a_cut_share_spreads_its_calls_over_the_window,
    the_share_climbs_back_slowly_then_faster_to_its_cap,
    the_share_holds_its_floor_of_one,
    a_spent_daily_quota_parks_the_tenant_until_the_day_resets,
    a_daily_quota_leadsquared_names_is_learned_and_kept,
    pulse_counts_latency_and_throttled_tenants,
    pulse_counts_cut_shares_spent_quotas_and_holds,
    a_job_keeps_its_last_attempts_until_it_is_purged,
    jobs_page_with_a_cursor_newest_first,
    purge_done_before_deletes_only_old_done_records,
    a_held_tenant_makes_no_call_and_others_go_on,
    release_wakes_a_waiting_worker_and_the_jobs_run,
    a_job_handed_back_to_a_held_tenant_keeps_its_attempt,
    new_keys_end_a_keys_refused_hold,
    unreachable_host_holds_grow_cap_and_end,
    an_answer_from_the_host_starts_its_failure_streak_over,
    a_tenant_has_at_most_its_cap_of_calls_in_flight,
    every_finishing_path_ends_a_call_in_flight,
    slow_start_gives_an_unanswered_host_one_call_in_flight,
    a_discovered_host_is_recorded_and_kept_by_an_import,
    a_forgotten_host_is_asked_for_again,
    take_call_spends_a_call_of_the_window,
    an_unsent_call_leaves_the_window,
    the_tenants_view_counts_jobs_as_they_move,
    every_way_a_job_dies_counts_it_dead_once,
    a_paused_queue_dispatches_nothing_and_its_jobs_stay_queued,
    a_changed_body_under_a_done_key_is_an_update_and_the_same_body_a_duplicate,
    a_delete_line_deletes_what_its_key_names_and_a_body_after_it_creates_again,
    a_job_done_under_the_version_1_key_is_not_created_again,
);
