//! What one `/metrics` scrape costs with many tenants, printed as figures and ratios (never
//! asserted): Redis CPU (`INFO cpu`, before and after) and wall time per scrape, for
//!
//! - before (issue 15): the full status read every scrape did (`StatusReport::read`:
//!   status.lua over every tenant, plus the done-per-second series);
//! - after: `Queue::pulse` (bounded, no walk over the tenants), which every scrape now
//!   reads, and the full status read once per `TENANT_VIEW_EVERY` (30 s) for the share
//!   families, shown amortised over a 15 s scrape interval.
//!
//! `cargo bench --bench scrape` runs 10,000 tenants; without `--bench` (as `cargo test
//! --benches` runs it), or with `--quick`, 500. Redis: `REDIS_URL`, or a private
//! `redis-server` (see tests/common).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/redis_cpu.rs"]
mod redis_cpu;

use std::time::Duration;

use lsq_webhooks::ops::{Metrics, StatusReport};
use lsq_webhooks::queue::{Dispatch, Queue};
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
        println!("scrape benchmark: {tenants} tenants, {times} scrapes each, Redis at {url}");
        let (queue, _) = redis_cpu::queue_with_two_jobs_each("bench-scrape", tenants).await;
        // Two waiting jobs per tenant; a tenth of the tenants have made their one call of
        // the window, so they are throttled with a job still waiting.
        for _ in 0..tenants / 10 {
            match queue.dispatch().await.expect("dispatch") {
                Dispatch::Job(j) => queue.complete(&j, "wh", false).await.expect("complete"),
                other => panic!("expected a job: {other:?}"),
            }
        }
        let client = redis::Client::open(url.as_str()).expect("client");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connection");
        let metrics = Metrics::new();
        // Read first, while the tenants that called are still in their window.
        let check = queue.pulse(50).await.expect("pulse");

        let (pulse_cpu, pulse_wall) = measure(&mut con, times, || async {
            let pulse = queue.pulse(50).await.expect("pulse");
            std::hint::black_box(metrics.scrape(Some(&pulse)).len());
        })
        .await;
        let (before_cpu, before_wall) = measure(&mut con, times, || async {
            let report = StatusReport::read(&queue).await.expect("status");
            std::hint::black_box(report.tenants.len());
        })
        .await;
        let (view_cpu, view_wall) = measure(&mut con, times, || async {
            let s = queue.status().await.expect("status");
            metrics.set_tenant_view(&StatusReport::from_parts(s, Vec::new()));
        })
        .await;
        // A 15 s scrape interval reads the tenant view every other scrape (30 s).
        let every = lsq_webhooks::ops::metrics::TENANT_VIEW_EVERY.as_secs_f64() / 15.0;
        let (after_cpu, after_wall) =
            (pulse_cpu + view_cpu / every, pulse_wall + view_wall / every);
        println!(
            "queue: {} queued, {} running, {} done, {} throttled, latency {:?}",
            check.queued,
            check.running,
            check.done,
            check.throttled,
            check.latency_ms.map(Duration::from_millis)
        );
        println!("per scrape              Redis CPU ms   wall ms");
        println!("before (status read)    {before_cpu:>12.3} {before_wall:>9.3}");
        println!("after: pulse            {pulse_cpu:>12.3} {pulse_wall:>9.3}");
        println!("after: + tenant view/30s{after_cpu:>12.3} {after_wall:>9.3}  (15 s interval)");
        println!(
            "ratio before/after      {:>12.1} {:>9.1}  (pulse alone: {:.1} / {:.1})",
            before_cpu / after_cpu.max(1e-9),
            before_wall / after_wall.max(1e-9),
            before_cpu / pulse_cpu.max(1e-9),
            before_wall / pulse_wall.max(1e-9)
        );
    });
}
