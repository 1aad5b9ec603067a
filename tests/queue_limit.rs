//! The limiter's two promises at Redis scale (the contract's own cases, on both backends,
//! are tests/queue_conformance.rs): never more than `limit` calls of a tenant in any window
//! with several dispatchers on separate connections, as separate processes would be; and a
//! tenant with thousands of jobs does not delay the others.

mod common;
mod queue_support;

use std::collections::HashMap;
use std::sync::Arc;

use lsq_webhooks::queue::{Dispatch, Queue};
use lsq_webhooks::tenant::Tenant;
use queue_support::{config, connect, job, tenant};

/// Redis only: dispatchers on separate connections share one limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_limit_in_any_window_with_concurrent_dispatchers() {
    const TENANTS: usize = 30;
    const JOBS_PER_TENANT: usize = 100;
    const LIMIT: usize = 5;
    const WINDOW_MS: u64 = 200;
    const DISPATCHERS: usize = 4;

    let name = common::unique_queue("strict");
    let setup = connect(config(&name, WINDOW_MS)).await;
    let tenants: Vec<_> = (0..TENANTS)
        .map(|t| tenant(&format!("t{t:02}"), LIMIT as u32))
        .collect();
    setup.put_tenants(&tenants).await.expect("tenants");
    // Interleaved, so every tenant has work from the start.
    let jobs: Vec<_> = (0..JOBS_PER_TENANT)
        .flat_map(|n| (0..TENANTS).map(move |t| job(&format!("t{t:02}"), n)))
        .collect();
    setup.push(&jobs).await.expect("push");

    let per_tenant = drain_concurrently(&name, WINDOW_MS, DISPATCHERS).await;
    let total: usize = per_tenant.values().map(Vec::len).sum();
    assert_eq!(total, TENANTS * JOBS_PER_TENANT);
    assert_at_most_per_window(&per_tenant, JOBS_PER_TENANT, LIMIT, WINDOW_MS);
    let status = setup.status().await.expect("status");
    assert_eq!((status.queued, status.running, status.done), (0, 0, 3000));
}

/// Redis only (issue 13): two dispatchers on separate connections, as two worker processes
/// would be, make strictly at most `limit − reserve` calls of a tenant in any window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserve_cap_holds_across_two_dispatchers() {
    const LIMIT: u32 = 6;
    const RESERVE: u32 = 2;
    const CAP: usize = (LIMIT - RESERVE) as usize;
    const JOBS: usize = 40;
    const WINDOW_MS: u64 = 200;

    let name = common::unique_queue("reserve-strict");
    let setup = connect(config(&name, WINDOW_MS)).await;
    let tenants: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| Tenant {
            reserve: RESERVE,
            ..tenant(n, LIMIT)
        })
        .collect();
    setup.put_tenants(&tenants).await.expect("tenants");
    let jobs: Vec<_> = (0..JOBS)
        .flat_map(|n| ["a", "b"].map(|t| job(t, n)))
        .collect();
    setup.push(&jobs).await.expect("push");
    let per_tenant = drain_concurrently(&name, WINDOW_MS, 2).await;
    assert_at_most_per_window(&per_tenant, JOBS, CAP, WINDOW_MS);
}

/// Redis only at this scale: five push batches of one tenant ahead of ten others.
#[tokio::test]
async fn a_tenant_with_thousands_of_jobs_does_not_delay_the_others() {
    let name = common::unique_queue("fair");
    let q = connect(config(&name, 5000)).await;
    let mut tenants = vec![tenant("big", 10_000)];
    tenants.extend((0..10).map(|t| tenant(&format!("small{t}"), 25)));
    q.put_tenants(&tenants).await.expect("tenants");
    // The busy tenant's jobs are all in first.
    let big: Vec<_> = (0..5000).map(|n| job("big", n)).collect();
    q.push(&big).await.expect("push");
    let small: Vec<_> = (0..3)
        .flat_map(|n| (0..10).map(move |t| job(&format!("small{t}"), n)))
        .collect();
    q.push(&small).await.expect("push");

    let mut order = Vec::new();
    while order.iter().filter(|t: &&String| *t != "big").count() < 30 {
        match q.dispatch().await.expect("dispatch") {
            Dispatch::Job(j) => order.push(j.tenant),
            other => panic!("work is waiting, got {other:?}"),
        }
    }
    // Tenants take turns: three rounds of eleven tenants serve all thirty small jobs.
    assert!(
        order.len() <= 33,
        "small tenants waited behind {} dispatches: {order:?}",
        order.len()
    );
    assert!(order.iter().filter(|t| *t == "big").count() >= 2);
}

/// Drains the queue `name` with `dispatchers` dispatchers, each on its own connection as
/// separate processes would be, finishing every job; returns each tenant's dispatch times.
async fn drain_concurrently(
    name: &str,
    window_ms: u64,
    dispatchers: usize,
) -> HashMap<String, Vec<u64>> {
    let mut tasks = Vec::new();
    for _ in 0..dispatchers {
        let q = Arc::new(connect(config(name, window_ms)).await);
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                match q.dispatch().await.expect("dispatch") {
                    Dispatch::Job(j) => {
                        q.answered(&j).await.expect("answered");
                        q.complete(&j, "wh", false).await.expect("complete");
                        seen.push((j.tenant, j.dispatched_at_ms));
                    }
                    Dispatch::Wait(d) => q.wait_for_work(d).await,
                    Dispatch::Empty => return seen,
                }
            }
        }));
    }
    let mut per_tenant: HashMap<String, Vec<u64>> = HashMap::new();
    for t in tasks {
        for (tenant, at) in t.await.expect("dispatcher") {
            per_tenant.entry(tenant).or_default().push(at);
        }
    }
    per_tenant
}

/// Asserts that each tenant made `jobs` calls and never more than `most` in any window.
fn assert_at_most_per_window(
    per_tenant: &HashMap<String, Vec<u64>>,
    jobs: usize,
    most: usize,
    window_ms: u64,
) {
    for (tenant, times) in per_tenant {
        assert_eq!(times.len(), jobs, "{tenant}");
        let mut times = times.clone();
        times.sort_unstable();
        // Any window holding most + 1 calls would have two calls `most` apart less than a
        // window apart.
        for pair in times.windows(most + 1) {
            let (first, last) = (pair[0], pair[most]);
            assert!(
                last - first >= window_ms,
                "{tenant}: {} calls within {} ms (at {first}..={last})",
                most + 1,
                last - first
            );
        }
    }
}
