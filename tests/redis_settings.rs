//! Redis's own settings and the promise that no job is lost (issue 5): the queue reads
//! `appendonly` and `maxmemory-policy` from real servers started with each setting, tolerates
//! a server that refuses `CONFIG`, and the worker says so when it starts.

mod common;

use lsq_webhooks::queue::QueueConfig;
use lsq_webhooks::queue::redis::{Durability, RedisQueue};

/// A queue of the test's own at `url`.
async fn queue_at(url: &str, test: &str) -> RedisQueue {
    RedisQueue::connect(
        url,
        QueueConfig {
            name: common::unique_queue(test),
            ..QueueConfig::default()
        },
    )
    .await
    .expect("connect")
}

async fn durability_of(extra: &[&str]) -> (Durability, common::PrivateRedis) {
    let redis = common::PrivateRedis::start(extra).expect("a private redis-server");
    let queue = queue_at(&redis.url(), "settings").await;
    (queue.durability().await, redis)
}

#[tokio::test]
async fn aof_and_noeviction_are_safe() {
    let (d, _redis) =
        durability_of(&["--appendonly", "yes", "--maxmemory-policy", "noeviction"]).await;
    assert_eq!(d, Durability::Safe);
}

#[tokio::test]
async fn no_aof_or_an_evicting_policy_is_unsafe_and_says_why() {
    let (d, _redis) = durability_of(&["--appendonly", "no"]).await;
    let Durability::Unsafe(problems) = d else {
        panic!("expected unsafe, got {d:?}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("appendonly yes"), "{problems:?}");

    let (d, _redis) =
        durability_of(&["--appendonly", "yes", "--maxmemory-policy", "allkeys-lru"]).await;
    let Durability::Unsafe(problems) = d else {
        panic!("expected unsafe, got {d:?}");
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("allkeys-lru") && problems[0].contains("noeviction"),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_server_that_refuses_config_is_tolerated() {
    // Managed Redis services rename or forbid CONFIG; the queue still works.
    let (d, _redis) = durability_of(&["--rename-command", "CONFIG", "''"]).await;
    assert!(matches!(d, Durability::Unknown(_)), "{d:?}");
}

#[tokio::test]
async fn the_worker_warns_at_start_about_unsafe_settings() {
    let redis = common::PrivateRedis::start(&["--appendonly", "no"]).expect("redis");
    let url = redis.url();
    let queue = common::unique_queue("settings-worker");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
            .args([
                "--redis",
                &url,
                "--queue",
                &queue,
                "worker",
                "--exit-when-idle",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .expect("run the worker")
    })
    .await
    .expect("join");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("appendonly") && stderr.contains("can lose jobs"),
        "{stderr}"
    );
}

/// On a cluster every master is read, and a problem names its node: two masters set safe at
/// run time and one left with `appendonly no` give exactly that one's problem, whichever node
/// a command without a key would have gone to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_every_master_is_read_and_each_problem_names_its_node() {
    use common::sentinel::cli;
    let cluster = common::cluster::PrivateCluster::start(3).expect("a private cluster");
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    for &port in &ports[..2] {
        assert_eq!(cli(port, &["config", "set", "appendonly", "yes"]), "OK");
    }
    let queue = queue_at(&cluster.url(), "settings-cluster").await;
    for _ in 0..3 {
        let Durability::Unsafe(problems) = queue.durability().await else {
            panic!("one master has appendonly no");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        let unsafe_node = format!(":{}: appendonly is \"no\"", ports[2]);
        assert!(problems[0].contains(&unsafe_node), "{problems:?}");
    }
    assert_eq!(cli(ports[2], &["config", "set", "appendonly", "yes"]), "OK");
    assert_eq!(queue.durability().await, Durability::Safe);
}
