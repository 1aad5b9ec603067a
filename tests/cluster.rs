//! The queue on a Redis Cluster (issue 17): `redis+cluster://` URLs through the binary, and
//! worker processes of the real binary draining a queue on a 3-master cluster against the
//! simulator. The conformance suite runs on the same kind of cluster
//! (tests/queue_conformance.rs, `cluster::`).
//!
//! The queue is sharded (16 shards by default on a cluster, each its own hash tag), so its
//! keys spread over the nodes; the shard count is fixed once written.

mod common;
mod worker_support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::{node_ports, queue_keys_per_node};
use lsq_webhooks::queue::sharded::ShardedQueue;
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

/// A drain's set-up: a simulator for `n` tenants of `limit` calls per 1 s window, and a
/// sharded queue of its own on the cluster at `url` (the cluster's default shard count).
struct Drain {
    sim: worker_support::Sim,
    tenants: Vec<lsq_webhooks::tenant::Tenant>,
    name: String,
    queue: ShardedQueue<lsq_webhooks::queue::redis::RedisQueue>,
}

/// `n` worker processes of the binary draining queue `name` at `url` (1 s windows), each
/// until the queue is idle; their outputs once they exit.
fn drain_workers(
    url: &str,
    name: &str,
    n: usize,
) -> Vec<impl std::future::Future<Output = std::io::Result<Output>>> {
    (0..n)
        .map(|_| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
                .args(["--redis", url, "--queue", name])
                .args(["worker", "--exit-when-idle", "--window-ms", "1000"])
                .env("RUST_LOG", "warn")
                .kill_on_drop(true)
                .output()
        })
        .collect()
}

impl Drain {
    async fn start(url: &str, n: usize, limit: u32, test: &str) -> Drain {
        let window = Duration::from_secs(1);
        let (sim, ts) = sim_serving(n, limit, window, Default::default()).await;
        let name = common::unique_queue(test);
        let queue = sharded_queue(url, &name, window).await;
        Drain {
            sim,
            tenants: ts,
            name,
            queue,
        }
    }
}

/// Issue 17: several worker processes of the binary drain a sharded queue (the cluster's
/// default of 16 shards) against the simulator: every node holds at least 15% of the queue's
/// keys, no rate-limit answer, every Id recorded once, and `status` through the cluster
/// counts every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_drain_a_sharded_queue_on_the_cluster() {
    let url = common::cluster::cluster_url();
    let Drain {
        sim,
        tenants: ts,
        name,
        queue,
    } = Drain::start(&url, 60, 25, "cluster-drain").await;
    assert_eq!(queue.shards().len(), 16, "the default on a cluster");
    queue.put_tenants(&ts).await.expect("tenants");
    queue.push(&jobs(&ts, 10)).await.expect("push");
    let keys = queue_keys_per_node(&url, &name);
    let total: usize = keys.iter().sum();
    assert!(total >= 60, "a list per tenant at least: {keys:?}");
    for (node, n) in keys.iter().enumerate() {
        assert!(
            *n as f64 >= 0.15 * total as f64,
            "node {node} holds {n} of the queue's {total} keys: {keys:?}"
        );
    }
    let workers = drain_workers(&url, &name, 3);
    for w in workers {
        let out = tokio::time::timeout(Duration::from_secs(180), w)
            .await
            .expect("the workers exit once the queue is drained")
            .expect("run a worker");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let stats = sim.stats();
    assert_eq!(rate_limit_answers(&stats), 0);
    assert_all_done_and_matching(&queue, &stats, 600).await;
    let status = lsq(&url, &name, &["status", "--json"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(json["done"], 600, "{json}");
}

/// A job file of `n` jobs per tenant, as `enqueue` reads it.
fn job_file(ts: &[lsq_webhooks::tenant::Tenant], n: usize) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    for job in jobs(ts, n) {
        let body: serde_json::Value = serde_json::from_str(&job.body).expect("body");
        let line = serde_json::json!({"tenant": job.tenant, "webhook": body});
        writeln!(file, "{line}").expect("write");
    }
    file
}

/// Issue 17: a shard count that differs from the queue's is a configuration error (exit 2)
/// that says both counts, and nothing is written; the same count, by flag or environment,
/// is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_count_other_than_the_queues_is_exit_2_and_writes_nothing() {
    let url = common::cluster::cluster_url();
    let name = common::unique_queue("cluster-shards");
    let placeholder = url::Url::parse("http://127.0.0.1:1").expect("url");
    let ts = tenants(&placeholder, 5, &[25]);
    let config = QueueConfig {
        name: name.clone(),
        ..QueueConfig::default()
    };
    let queue = ShardedQueue::connect(&url, config, Default::default(), Some(4))
        .await
        .expect("connect to the cluster");
    queue.put_tenants(&ts).await.expect("tenants");
    let file = job_file(&ts, 2);
    let path = file.path().to_str().expect("path");

    let out = lsq(&url, &name, &["--shards", "16", "enqueue", path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--shards 16") && err.contains("4 shards"),
        "{err}"
    );
    assert_eq!(
        queue.status().await.expect("status").queued,
        0,
        "nothing written"
    );
    let out = lsq(&url, &name, &["enqueue", path]);
    assert!(
        out.status.success(),
        "the queue's own count: {}",
        stderr(&out)
    );
    assert_eq!(queue.status().await.expect("status").queued, 10);

    // A new queue takes the count first given; a refused one writes nothing more.
    let other = common::unique_queue("cluster-shards-new");
    let out = lsq(&url, &other, &["--shards", "0", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let fresh = lsq(&url, &other, &["--shards", "3", "status", "--json"]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    let again = Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &url, "--queue", &other, "status"])
        .env("LSQ_SHARDS", "5")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks");
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let keys: usize = queue_keys_per_node(&url, &other).iter().sum();
    assert_eq!(keys, 1, "only the count was written: {keys}");
    let same = Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &url, "--queue", &other, "status"])
        .env("LSQ_SHARDS", "3")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks");
    assert!(same.status.success(), "{}", stderr(&same));
}

/// Issue 17: `redis-cli --cluster reshard` moves the first 2,048 slots (those of shards 0
/// to 1 of 16 at least: shard 1's tag is in slots 1,024-2,047) from the first node to the
/// second while three worker processes drain a sharded queue (the keys migrated under the
/// workers' feet, `ASK`/`TRYAGAIN` answered meanwhile): every job is done, each with one
/// webhook, none lost. A cluster of the test's own, so that the move touches no other
/// test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reshard_mid_drain_loses_no_job() {
    let cluster = common::cluster::PrivateCluster::start(3).expect("a cluster of our own");
    let url = cluster.url();
    let Drain {
        sim,
        tenants: ts,
        name,
        queue,
    } = Drain::start(&url, 20, 5, "cluster-reshard").await;
    queue.put_tenants(&ts).await.expect("tenants");
    // 125 jobs at 5 per window: 25 windows of work per tenant, longer than the move of a
    // node's 5,461 slots takes here, so the move lands mid-drain.
    queue.push(&jobs(&ts, 125)).await.expect("push");
    let workers = drain_workers(&url, &name, 3);
    // Wait for the drain to be under way: some done, most not.
    while queue.status().await.expect("status").done == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ports = node_ports(&url);
    let moving = ports.clone();
    let moved = tokio::task::spawn_blocking(move || common::cluster::move_slots(&moving, 2048))
        .await
        .expect("reshard");
    assert!(
        moved.status.success(),
        "reshard: {}{}",
        String::from_utf8_lossy(&moved.stdout),
        String::from_utf8_lossy(&moved.stderr)
    );
    let during = queue.status().await.expect("status").done;
    for w in workers {
        let out = tokio::time::timeout(Duration::from_secs(180), w)
            .await
            .expect("the workers exit once the queue is drained")
            .expect("run a worker");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(
        during < 2500,
        "the move ended before the drain did ({during} done by then)"
    );
    // Shard 1's keys are on the second node now.
    let prefix = lsq_webhooks::queue::redis::shard_prefix(&name, 1, 16);
    let tag = &prefix[1..prefix.len() - 2];
    let slot = common::sentinel::cli(ports[1], &["cluster", "keyslot", tag]);
    let count = |port: u16| -> u64 {
        common::sentinel::cli(port, &["cluster", "countkeysinslot", &slot])
            .parse()
            .unwrap_or(0)
    };
    assert!(count(ports[1]) > 0, "shard 1 ({prefix}, slot {slot}) moved");
    assert_eq!(count(ports[0]), 0, "nothing of shard 1 left behind");
    let stats = sim.stats();
    assert_all_done_and_matching(&queue, &stats, 2500).await;
}

/// `delete_all` of a sharded queue on the cluster removes every shard's keys from every node
/// (each shard's `SCAN` goes to the master of its slot, not to a random node), and leaves
/// another queue's keys alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_removes_every_shards_keys_from_every_node() {
    let url = common::cluster::cluster_url();
    let base = url::Url::parse("http://127.0.0.1:1").expect("url");
    let ts = tenants(&base, 40, &[25]);
    let (name, other) = (
        common::unique_queue("cluster-delete"),
        common::unique_queue("cluster-keep"),
    );
    let window = Duration::from_secs(1);
    let (queue, kept) = (
        sharded_queue(&url, &name, window).await,
        sharded_queue(&url, &other, window).await,
    );
    for q in [&queue, &kept] {
        q.put_tenants(&ts).await.expect("tenants");
        q.push(&jobs(&ts, 3)).await.expect("push");
    }
    let before = queue_keys_per_node(&url, &name);
    assert!(before.iter().all(|&n| n > 0), "{before:?}");
    let kept_before = queue_keys_per_node(&url, &other);
    let deleted = queue.delete_all().await.expect("delete_all");
    assert_eq!(deleted as usize, before.iter().sum::<usize>(), "{before:?}");
    assert_eq!(queue_keys_per_node(&url, &name), vec![0; before.len()]);
    assert_eq!(queue_keys_per_node(&url, &other), kept_before);
    kept.delete_all().await.expect("clean up");
}

/// A script is refused before it runs while its shard's slot migrates, so it leaves nothing
/// half done: Redis does not undo a script's writes when a later command in it fails, and a
/// completion that met a key already moved (its history list, new) used to fail after it had
/// marked the job done but before it took it out of `running`. The slot is put in the middle
/// of a move by hand (`CLUSTER SETSLOT ... MIGRATING` / `IMPORTING`, no key moved yet): the
/// completion is "unavailable" (the worker's store retry waits it out) and the job is as it
/// was; once the slot is stable again the same completion goes through, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_is_refused_whole_while_its_slot_migrates() {
    let cluster = common::cluster::PrivateCluster::start(3).expect("a cluster of our own");
    let url = cluster.url();
    let name = common::unique_queue("cluster-migrating");
    let queue = sharded_queue(&url, &name, Duration::from_secs(1)).await;
    let base = url::Url::parse("http://127.0.0.1:1").expect("url");
    let ts = tenants(&base, 1, &[25]);
    queue.put_tenants(&ts).await.expect("tenants");
    queue.push(&jobs(&ts, 1)).await.expect("push");
    let job = match queue.dispatch().await.expect("dispatch") {
        lsq_webhooks::queue::Dispatch::Job(j) => j,
        other => panic!("expected the job, got {other:?}"),
    };
    let shard = queue.shard_index(&job.tenant);
    let count = u32::try_from(queue.shards().len()).expect("shards");
    let prefix = lsq_webhooks::queue::redis::shard_prefix(&name, shard as u32, count);
    let tag = &prefix[1..prefix.len() - 2];
    let ports = node_ports(&url);
    let cli = |port: u16, args: &[&str]| common::sentinel::cli(port, args);
    let slot = cli(ports[0], &["cluster", "keyslot", tag]);
    let owner = *ports
        .iter()
        .find(|p| cli(**p, &["cluster", "countkeysinslot", &slot]) != "0")
        .expect("a node holds the shard");
    let other = *ports.iter().find(|p| **p != owner).expect("another node");
    let (owner_id, other_id) = (
        cli(owner, &["cluster", "myid"]),
        cli(other, &["cluster", "myid"]),
    );
    assert_eq!(
        cli(
            other,
            &["cluster", "setslot", &slot, "importing", &owner_id]
        ),
        "OK"
    );
    assert_eq!(
        cli(
            owner,
            &["cluster", "setslot", &slot, "migrating", &other_id]
        ),
        "OK"
    );
    let record = format!("{prefix}job:{}", job.id.0);
    let refused = queue.complete(&job, "wh-1", false).await;
    assert!(
        matches!(&refused, Err(e) if e.is_unavailable()),
        "{refused:?}"
    );
    assert_eq!(cli(owner, &["hget", &record, "state"]), "running");
    assert_ne!(
        cli(owner, &["zscore", &format!("{prefix}running"), &job.id.0]),
        ""
    );
    for port in [owner, other] {
        assert_eq!(cli(port, &["cluster", "setslot", &slot, "stable"]), "OK");
    }
    queue.complete(&job, "wh-1", false).await.expect("complete");
    let results = queue.results(None).await.expect("results");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].webhook_id.as_deref(), Some("wh-1"));
    assert_eq!(queue.status().await.expect("status").running, 0);
}
