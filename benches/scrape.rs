//! What one `/metrics` scrape costs with many tenants, printed as figures and ratios (never
//! asserted): Redis CPU (`INFO cpu`, before and after) and wall time per scrape, for
//!
//! - the full status read (`StatusReport::read`: status.lua over every tenant, plus the
//!   done-per-second series), which every scrape made before issue 15;
//! - how the share families were read until they moved into the pulse: `Queue::pulse` on
//!   every scrape plus `Queue::status` once per 30 s, amortised over a 15 s scrape interval;
//! - now: `Queue::pulse` alone, which reads the share families' counts from the queue's
//!   indexes and the shares of at most 50 tenants.
//!
//! The queue: two waiting jobs per tenant; a tenth of the tenants have made their one call
//! of the window (throttled, a job still waiting), one in ten of those answered "rate
//! limited" with its share cut, and one in a hundred tenants held.
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
use lsq_webhooks::queue::{Dispatch, HoldKind, NewHold, Queue};
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
        // the window, so they are throttled with a job still waiting. One in ten of those
        // is answered "rate limited": its share is cut (limit 25 for these, so the one call
        // of ours cannot explain it).
        for n in 0..tenants / 10 {
            match queue.dispatch().await.expect("dispatch") {
                Dispatch::Job(j) if n % 10 == 0 => {
                    queue
                        .put_tenants(&[lsq_webhooks::tenant::Tenant {
                            limit: 25,
                            ..redis_cpu::tenant(j.tenant[1..].parse().expect("tNNNNN"))
                        }])
                        .await
                        .expect("tenant");
                    queue
                        .rate_limited(&j, Duration::ZERO, None)
                        .await
                        .expect("rate limited");
                }
                Dispatch::Job(j) => queue.complete(&j, "wh", false).await.expect("complete"),
                other => panic!("expected a job: {other:?}"),
            }
        }
        for n in (0..tenants).step_by(100) {
            let hold = NewHold {
                kind: HoldKind::Paused,
                reason: "bench".into(),
                length: None,
                by: None,
            };
            queue
                .hold(&redis_cpu::tenant(n).name, hold)
                .await
                .expect("hold");
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
            std::hint::black_box(StatusReport::from_parts(s, Vec::new()).tenants.len());
        })
        .await;
        // Until now a 15 s scrape interval read the status every other scrape (30 s).
        let (until_cpu, until_wall) = (pulse_cpu + view_cpu / 2.0, pulse_wall + view_wall / 2.0);
        println!(
            "queue: {} queued, {} running, {} done, {} throttled, {} cut, {} held, latency {:?}",
            check.queued,
            check.running,
            check.done,
            check.throttled,
            check.share_cut,
            check.held.paused,
            check.latency_ms.map(Duration::from_millis)
        );
        println!("per scrape                        Redis CPU ms   wall ms");
        println!("status read (before issue 15)     {before_cpu:>12.3} {before_wall:>9.3}");
        println!(
            "pulse + status every 30 s         {until_cpu:>12.3} {until_wall:>9.3}  (15 s interval)"
        );
        println!("now: pulse alone                  {pulse_cpu:>12.3} {pulse_wall:>9.3}");
        println!(
            "ratio (pulse + status/30 s)/pulse {:>12.1} {:>9.1}",
            until_cpu / pulse_cpu.max(1e-9),
            until_wall / pulse_wall.max(1e-9)
        );
    });
}
