//! What one page of the tenants view (issue 15, `Queue::tenants_page`, `GET /v1/tenants`,
//! `status --tenants`) costs with many tenants, printed (never asserted): Redis CPU
//! (`INFO cpu`, before and after) and wall time per page of 50, for each order, a page deep
//! in the order, and the filters (a filtered page examines at most `PAGE_BUDGET` tenants),
//! against the full status read (status.lua over every tenant) a view without counters
//! would need.
//!
//! `cargo bench --profile dev --bench tenants` runs 10,000 tenants; without `--bench` (as
//! `cargo test --benches` runs it), or with `--quick`, 500. Redis: `REDIS_URL`, or a private
//! `redis-server` (see tests/common).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/redis_cpu.rs"]
mod redis_cpu;

use lsq_webhooks::queue::{
    Dispatch, HoldKind, NewHold, Queue, TenantQuery, TenantSort, TenantState,
};
use redis_cpu::measure;

fn main() {
    let (tenants, times) = redis_cpu::sizes();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let url = common::redis_url();
        println!("tenants view benchmark: {tenants} tenants, {times} pages each, Redis at {url}");
        let (queue, ts) = redis_cpu::queue_with_two_jobs_each("bench-tenants", tenants).await;
        // Two jobs per tenant. A tenth of the tenants have one done (and are throttled:
        // one call per window, a job still waiting), a twentieth one dead, every 200th is
        // held.
        for n in 0..tenants / 10 {
            match queue.dispatch().await.expect("dispatch") {
                Dispatch::Job(j) if n % 2 == 0 => {
                    queue.complete(&j, "wh", false).await.expect("complete")
                }
                Dispatch::Job(j) => queue.bury(&j, "permanent").await.expect("bury"),
                other => panic!("expected a job: {other:?}"),
            }
        }
        for t in ts.iter().step_by(200) {
            let hold = NewHold {
                kind: HoldKind::Paused,
                reason: "bench".into(),
                length: None,
                by: Some("bench".into()),
            };
            queue.hold(&t.name, hold).await.expect("hold");
        }
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");

        println!("per page of 50                      Redis CPU ms   wall ms   rows  next");
        let deep = (tenants / 2).to_string();
        let cases: Vec<(String, TenantQuery)> = vec![
            (
                "by name, first page".into(),
                query(TenantSort::Name, None, None),
            ),
            (
                format!("by name, from {deep}"),
                query(TenantSort::Name, None, Some(deep.clone())),
            ),
            ("by waiting".into(), query(TenantSort::Waiting, None, None)),
            ("by dead".into(), query(TenantSort::Dead, None, None)),
            (
                "filter throttled".into(),
                query(TenantSort::Name, Some(TenantState::Throttled), None),
            ),
            (
                "filter held (sparse)".into(),
                query(TenantSort::Name, Some(TenantState::Held), None),
            ),
            (
                "filter stuck, by dead".into(),
                query(TenantSort::Dead, Some(TenantState::Stuck), None),
            ),
            (
                "filter done (none)".into(),
                query(TenantSort::Name, Some(TenantState::Done), None),
            ),
        ];
        for (name, q) in &cases {
            let page = queue.tenants_page(q).await.expect("page");
            let (cpu, wall) = measure(&mut con, times, || async {
                std::hint::black_box(queue.tenants_page(q).await.expect("page").tenants.len());
            })
            .await;
            println!(
                "{name:<34} {cpu:>12.3} {wall:>9.3} {:>6}  {}",
                page.tenants.len(),
                page.next.as_deref().unwrap_or("-")
            );
        }
        let (cpu, wall) = measure(&mut con, times, || async {
            std::hint::black_box(queue.status().await.expect("status").tenants.len());
        })
        .await;
        println!(
            "{:<34} {cpu:>12.3} {wall:>9.3}",
            "full status read (every tenant)"
        );
    });
}

fn query(sort: TenantSort, filter: Option<TenantState>, cursor: Option<String>) -> TenantQuery {
    TenantQuery {
        sort,
        filter,
        cursor,
        limit: 50,
    }
}
