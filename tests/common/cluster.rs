//! A Redis Cluster for tests (issue 17): three masters, each a real `redis-server
//! --cluster-enabled yes` on a loopback port, joined with `redis-cli --cluster create` and
//! no replicas. Each node runs under [`super::PrivateRedis`]'s watchdog, so the cluster ends
//! when the test process does.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::PrivateRedis;
use super::sentinel::cli;

/// A cluster of masters on loopback ports.
pub struct PrivateCluster {
    /// The nodes, in the order they were created.
    pub nodes: Vec<PrivateRedis>,
}

impl PrivateCluster {
    /// Starts `n` (at least 3, as `redis-cli --cluster create` asks) masters, assigns the
    /// slots across them, and waits until every node says `cluster_state:ok`.
    pub fn start(n: usize) -> Result<PrivateCluster, String> {
        let nodes = (0..n)
            .map(|_| {
                PrivateRedis::start(&[
                    "--cluster-enabled yes",
                    "--cluster-config-file nodes.conf",
                    "--cluster-node-timeout 5000",
                ])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| format!("cannot run redis-cli --cluster create: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = PrivateCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster
            .nodes
            .iter()
            .all(|n| cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"))
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster did not reach cluster_state:ok in 30 s: {}",
                    cli(cluster.nodes[0].port, &["cluster", "info"])
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:A,127.0.0.1:B,...`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// How many keys each node holds (`DBSIZE`), in node order.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| cli(n.port, &["dbsize"]).parse().unwrap_or(0))
            .collect()
    }
}

/// The URL of a 3-master cluster this test binary shares (started at the first call, ended
/// when the binary exits). Each test keeps to its own queue name, as on the one Redis.
pub fn cluster_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let cluster = PrivateCluster::start(3).unwrap_or_else(|e| {
            panic!("tests need redis-server and redis-cli with cluster support: {e}")
        });
        let url = cluster.url();
        // Lives as long as the test binary: each node's watchdog ends it when we exit.
        std::mem::forget(cluster);
        url
    })
    .clone()
}

/// The ports of the test cluster's nodes, from its URL.
pub fn node_ports(url: &str) -> Vec<u16> {
    url.trim_start_matches("redis+cluster://")
        .split(',')
        .map(|hp| {
            hp.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        })
        .collect()
}

/// Keys of queue `name` (all its shards: `{name}` and `{name~...}`) on each node.
pub fn queue_keys_per_node(url: &str, name: &str) -> Vec<usize> {
    let pattern = format!("{{{name}[}}~]*");
    node_ports(url)
        .into_iter()
        .map(|port| {
            cli(port, &["--scan", "--pattern", &pattern])
                .lines()
                .filter(|l| !l.is_empty())
                .count()
        })
        .collect()
}

/// Moves the first node's first `slots` slots to the second node with `redis-cli --cluster
/// reshard` (the keys migrate while the cluster serves), given the nodes' ports; blocks until
/// the move ends (run it off the runtime) and returns redis-cli's output.
pub fn move_slots(ports: &[u16], slots: u32) -> std::process::Output {
    let id = |port: u16| cli(port, &["cluster", "myid"]);
    let (from, to) = (id(ports[0]), id(ports[1]));
    Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", ports[0])])
        .args(["--cluster-from", &from, "--cluster-to", &to])
        .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster reshard")
}
