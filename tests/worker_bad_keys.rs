//! Issue 27: a tenant whose keys LeadSquared refuses, served by two worker processes (the
//! real binary) at concurrency 16 for a minute, with the discovery host unreachable and
//! with it answering. Whatever discovery does, the tenant costs at most 3 calls refused
//! with 401 across both processes, no job dies or spends an attempt, no lease runs out under
//! a live worker, and the other tenant's jobs are all done.
//!
//! Counts, never timings: the minute is how long the workers get to misbehave, not a bound
//! on anything.

mod common;
mod worker_support;

use std::process::Stdio;
use std::time::Duration;

use lsq_webhooks::job::JobState;
use lsq_webhooks::queue::{HoldKind, Queue};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;
use worker_support::*;

/// How long the two workers run.
const RUN: Duration = Duration::from_secs(62);

fn tenant(name: &str, api_base: Option<url::Url>, secret: &str) -> Tenant {
    Tenant {
        name: name.into(),
        api_base,
        access_key: Secret::new(format!("ak-{name}")),
        secret_key: Secret::new(secret.to_string()),
        limit: 25,
        reserve: 0,
        daily_limit: None,
    }
}

/// A loopback URL nothing listens on.
fn closed_port() -> url::Url {
    let port = common::free_port();
    url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url")
}

async fn two_workers_and_bad_keys(discovery_answers: bool, test: &str) {
    let right = tenant("bad", None, "sk-right-secret");
    let fine = tenant("fine", None, "sk-fine");
    let sim = start_sim(sim_config(
        &[right.clone(), fine.clone()],
        Duration::from_secs(5),
    ))
    .await;
    let home = sim.server.base_url();
    let wrong = Tenant {
        api_base: Some(home.clone()),
        ..tenant("bad", None, "sk-WRONG-secret")
    };
    let fine = Tenant {
        api_base: Some(home.clone()),
        ..fine
    };
    let name = common::unique_queue(test);
    let queue = redis_queue_named(&name, &[wrong.clone(), fine.clone()]).await;
    let pushed = queue
        .push(&jobs(std::slice::from_ref(&wrong), 30))
        .await
        .expect("push");
    queue
        .push(&jobs(std::slice::from_ref(&fine), 20))
        .await
        .expect("push");
    let discovery = if discovery_answers {
        home.clone()
    } else {
        closed_port()
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let mut workers = Vec::new();
    for i in 0..2 {
        let log = dir.path().join(format!("worker-{i}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
            .args(["--redis", &common::redis_url(), "--queue", &name, "worker"])
            .args(["--concurrency", "16", "--discovery-url", discovery.as_str()])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start a worker");
        workers.push((child, log));
    }
    // A third of the way in: held, naming what happened.
    tokio::time::sleep(RUN / 3).await;
    let early = queue
        .tenant_hold("bad")
        .await
        .expect("hold")
        .expect("the tenant is held");
    assert_eq!(early.kind, HoldKind::KeysRefused, "{early:?}");
    if discovery_answers {
        assert_eq!(early.reason, "keys refused by LeadSquared (401)");
    } else {
        assert!(
            early
                .reason
                .starts_with("keys refused by LeadSquared (401), and the discovery host")
                && early.reason.contains("could not be reached"),
            "{}",
            early.reason
        );
        // Until discovery answers, the host is not known: no Create can go out.
        let stored = queue.tenant("bad").await.expect("tenant").expect("bad");
        assert_eq!(stored.api_base, None);
    }
    tokio::time::sleep(RUN - RUN / 3).await;
    let mut logs = String::new();
    for (mut child, log) in workers {
        let pid = child.id().expect("running").to_string();
        let term = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(term.success());
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("the worker stops on SIGTERM")
            .expect("wait");
        assert!(status.success(), "{status:?}");
        logs.push_str(&std::fs::read_to_string(&log).expect("log"));
    }

    let stats = sim.stats();
    let refused = stats.unauthorized;
    let status = queue.status().await.expect("status");
    let bad = status
        .tenants
        .iter()
        .find(|t| t.tenant == "bad")
        .expect("row");
    let lease_lost = logs.matches("lease lost").count();
    eprintln!(
        "bad keys, 2 workers x concurrency 16, {} s, discovery {}: {refused} call(s) refused \
         with 401; dead {}; lease lost {lease_lost}; the other tenant's webhooks {}",
        RUN.as_secs(),
        if discovery_answers {
            "answering"
        } else {
            "unreachable"
        },
        status.dead,
        stats.accounts["fine"].webhooks.len(),
    );
    assert!(
        (1..=3).contains(&refused),
        "calls refused with 401: {refused}"
    );
    assert_eq!(status.dead, 0, "no job dies for its tenant's keys");
    assert_eq!(
        lease_lost, 0,
        "a lease ran out under a live worker:\n{logs}"
    );
    assert_eq!(bad.waiting, 30, "every job of the tenant still queued");
    assert_eq!(stats.accounts["fine"].webhooks.len(), 20);
    let hold = bad.hold.as_ref().expect("still held");
    assert!(
        matches!(hold.kind, HoldKind::KeysRefused | HoldKind::HostUnreachable),
        "{hold:?}"
    );
    if !discovery_answers {
        assert!(hold.reason.contains("discovery host"), "{}", hold.reason);
    }
    // Each job of the tenant is queued with no attempt spent.
    for p in &pushed {
        let lsq_webhooks::queue::Pushed::Enqueued { job } = p else {
            panic!("{p:?}");
        };
        let r = queue.job(job).await.expect("job").expect("exists");
        assert_eq!((r.status, r.attempts), (JobState::Queued, 0), "{r:?}");
    }
    // The summary counts every job that died during the run (none), and no secret is
    // logged.
    assert_eq!(
        logs.matches("dead 0, dead by this worker 0").count(),
        2,
        "{logs}"
    );
    assert!(!logs.contains("sk-WRONG-secret") && !logs.contains("receiver-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_with_the_discovery_host_unreachable_two_workers() {
    two_workers_and_bad_keys(false, "badkeys-nodisc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_with_the_discovery_host_answering_two_workers() {
    two_workers_and_bad_keys(true, "badkeys-disc").await;
}
