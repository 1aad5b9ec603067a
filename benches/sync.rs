//! `sync` benchmark (issue 18): 1,000 tenants × 5 webhooks made by this product, then a
//! desired state with 10% of the webhooks changed and 5% removed, planned with `--prune`
//! against the simulator over loopback HTTP and a real Redis queue. Prints how long the
//! plan takes and the API calls it spends (one Retrieve page per tenant), then applies it
//! and prints the calls the worker spent (creates + updates + deletes) and whether the
//! simulator ends equal to the file.
//!
//! `cargo bench --profile dev --bench sync` runs the full size. Without `--bench` (e.g.
//! `cargo test --benches`) it runs 50 tenants as a smoke test.
//! Needs Redis (`REDIS_URL`, or a `redis-server` the harness can start).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/revision_support/mod.rs"]
mod revision_support;
#[path = "../tests/worker_support/mod.rs"]
mod worker_support;

use std::time::{Duration, Instant};

use lsq_webhooks::job::NewJob;
use lsq_webhooks::leadsquared::{Client, ClientConfig};
use lsq_webhooks::queue::QueueConfig;
use lsq_webhooks::sim::SimStats;
use revision_support::{assert_sim_holds, create, desired, drain, hook};
use worker_support::{Backend, queue, sim_config, start_sim, tenants};

/// The simulator's calls of each kind, summed over the accounts.
fn calls(s: &SimStats) -> (u64, u64, u64, u64) {
    s.accounts.values().fold((0, 0, 0, 0), |t, a| {
        (
            t.0 + a.create_calls,
            t.1 + a.update_calls,
            t.2 + a.delete_calls,
            t.3 + a.retrieve_calls,
        )
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let n_tenants = if full { 1000 } else { 50 };
    let per_tenant = 5;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let nowhere = url::Url::parse("http://127.0.0.1:1").expect("url");
        let sim = start_sim(sim_config(&tenants(&nowhere, n_tenants, &[25]), Duration::from_secs(5))).await;
        let ts = tenants(&sim.server.base_url(), n_tenants, &[25]);
        let q = queue(Backend::Redis, "bench-sync", QueueConfig::default()).await;
        q.put_tenants(&ts).await.expect("tenants");
        let url = |t: &str, n: usize, v: u32| format!("https://hooks.example/{t}/{n}/v{v}");
        let first: Vec<NewJob> = ts
            .iter()
            .flat_map(|t| (0..per_tenant).map(move |n| (t.name.clone(), n)))
            .map(|(t, n)| create(&t, hook(&t, n, &url(&t, n, 1), "hv-1")))
            .collect();
        q.push(&first).await.expect("push");
        drain(q.clone()).await;

        // The desired state: of every 20 webhooks, 2 changed (one moved, one rotated) and 1
        // removed; the rest as they are.
        let mut file = Vec::new();
        for (i, job) in first.iter().enumerate() {
            let (t, n) = (job.tenant.as_str(), i % per_tenant);
            match i % 20 {
                0 => file.push(create(t, hook(t, n, &url(t, n, 2), "hv-1"))),
                10 => file.push(create(t, hook(t, n, &url(t, n, 1), "hv-2"))),
                5 => {}
                _ => file.push(job.clone()),
            }
        }
        let client = Client::new(ClientConfig::default()).expect("client");
        let before = calls(&sim.stats());
        let started = Instant::now();
        let plan = lsq_webhooks::sync::plan(q.as_ref(), &client, file.clone(), true)
            .await
            .expect("plan");
        let took = started.elapsed();
        let after = calls(&sim.stats());
        let (c, u, d, unchanged) = plan.totals();
        println!(
            "sync plan: {n_tenants} tenants x {per_tenant} webhooks: {:.2} s; create {c}, update {u}, \
             delete {d}, unchanged {unchanged}; API calls {} (Retrieve pages, one per tenant: {})",
            took.as_secs_f64(),
            after.3 - before.3,
            plan.retrieve_calls()
        );
        q.push(&plan.jobs).await.expect("push the plan");
        let applied_at = Instant::now();
        drain(q.clone()).await;
        let done = calls(&sim.stats());
        println!(
            "sync apply: {:.2} s; API calls creates {} updates {} deletes {} (at most \
             creates + updates + deletes of the plan: {})",
            applied_at.elapsed().as_secs_f64(),
            done.0 - after.0,
            done.1 - after.1,
            done.2 - after.2,
            c + u + d
        );
        assert_sim_holds(&sim.stats(), &desired(&file));
        println!("sync: the simulator holds exactly the file's state (no duplicate)");
    });
}
