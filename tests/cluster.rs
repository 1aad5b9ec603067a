//! The queue on a Redis Cluster (issue 17): `redis+cluster://` URLs through the binary, and
//! worker processes of the real binary draining a queue on a 3-master cluster against the
//! simulator. The conformance suite runs on the same kind of cluster
//! (tests/queue_conformance.rs, `cluster::`).
//!
//! One queue is one hash tag today, so its keys sit on the one node that owns the tag's
//! slot; sharding a queue across the nodes is the next step of issue 17.

mod common;
mod worker_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use worker_support::*;

fn lsq(redis: &str, queue: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", redis, "--queue", queue])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_cluster_url_that_does_not_read_is_exit_2_and_says_what_is_wrong() {
    for (url, says) in [
        ("redis+cluster://127.0.0.1:7000/2", "no path or options"),
        ("redis+cluster://127.0.0.1:7000?db=1", "no path or options"),
        ("redis+cluster://127.0.0.1:notaport", "cluster node 1"),
        ("redis+cluster://127.0.0.1:7000,", "cluster node 2"),
        (
            "redis+cluster://user:hunter2-secret@127.0.0.1:0",
            "cluster node 1",
        ),
    ] {
        let out = lsq(url, "q", &["status"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{url}: {err}");
        assert!(err.contains(says), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: the password shown: {err}");
    }
}

#[test]
fn no_cluster_node_answering_is_exit_1_within_seconds() {
    let (a, b) = (common::free_port(), common::free_port());
    let started = Instant::now();
    let out = lsq(
        &format!("redis+cluster://127.0.0.1:{a},127.0.0.1:{b}"),
        "q",
        &["status"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no cluster node answered"), "{err}");
    // A guard that the failure is quick, not a benchmark: the contract says 3 s.
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_drain_a_queue_on_the_cluster() {
    let url = common::cluster::cluster_url();
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let known = tenants(&placeholder, 10, &[25]);
    let sim = start_sim(sim_config(&known, Duration::from_secs(1))).await;
    let ts = tenants(&sim.server.base_url(), 10, &[25]);
    let name = common::unique_queue("cluster-drain");
    let queue = RedisQueue::connect(
        &url,
        QueueConfig {
            name: name.clone(),
            window: Duration::from_secs(1),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect to the cluster");
    queue.put_tenants(&ts).await.expect("tenants");
    queue.push(&jobs(&ts, 20)).await.expect("push");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
                .args(["--redis", &url, "--queue", &name])
                .args(["worker", "--exit-when-idle", "--window-ms", "1000"])
                .env("RUST_LOG", "warn")
                .kill_on_drop(true)
                .output()
        })
        .collect();
    for w in workers {
        let out = tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the workers exit once the queue is drained")
            .expect("run a worker");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let stats = sim.stats();
    assert_eq!(rate_limit_answers(&stats), 0);
    assert_all_done_and_matching(&queue, &stats, 200).await;
    let status = lsq(&url, &name, &["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(json["done"], 200, "{json}");
}
