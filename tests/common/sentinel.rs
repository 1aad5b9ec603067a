//! A Redis Sentinel deployment for tests (issue 16): a primary, a replica and three
//! sentinels, each a real `redis-server` (the sentinels are `redis-server CONF --sentinel`,
//! the same binary, so Debian's `redis-sentinel` package is not needed) on loopback ports.
//!
//! The sentinels watch the primary with a short `down-after-milliseconds`
//! ([`DOWN_AFTER_MS`]) and failover timeout, so a SIGKILLed primary is replaced within a
//! few seconds. Every process runs under a shell watchdog that ends it when this test
//! process exits, as [`super::PrivateRedis`] does.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// How long the sentinels wait before they call a silent primary down.
pub const DOWN_AFTER_MS: u64 = 1000;
/// Sentinel's failover timeout.
pub const FAILOVER_TIMEOUT_MS: u64 = 3000;

/// One `redis-server` process under a watchdog shell.
struct Process {
    port: u16,
    child: Option<Child>,
}

impl Process {
    /// Runs `redis-server ARGS` (ARGS is a shell word list) and waits until `port` answers
    /// PING.
    fn start(port: u16, dir: &std::path::Path, args: &str) -> Result<Process, String> {
        let script = format!(
            "cd '{dir}' && redis-server {args} & pid=$!; read _ ; kill -9 $pid 2>/dev/null; wait $pid",
            dir = dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !super::ping(port) {
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("redis-server {args} did not answer on {port}"));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server {args} exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Process {
            port,
            child: Some(child),
        })
    }

    /// SIGKILL to the server itself (not its shell), found by the pid it reports.
    fn sigkill(&mut self) {
        if let Some(pid) = server_pid(self.port) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && super::ping(self.port) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// `process_id` from `INFO server` on `port`.
fn server_pid(port: u16) -> Option<u32> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "server"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

/// Runs `redis-cli -p PORT ARGS...` and returns its trimmed output.
pub fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A primary, a replica and three sentinels.
pub struct SentinelSet {
    /// The master name the sentinels monitor.
    pub master: String,
    /// The data nodes' ports: `[first primary, first replica]`.
    pub nodes: [u16; 2],
    /// The sentinels' ports.
    pub sentinels: [u16; 3],
    dir: tempfile::TempDir,
    data: [Option<Process>; 2],
    _sentinels: Vec<Process>,
}

impl SentinelSet {
    /// Starts the five processes and waits until every sentinel sees the replica and the
    /// other sentinels (so a failover can be agreed on).
    pub fn start(master: &str) -> SentinelSet {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = [free_port(), free_port()];
        let sentinels = [free_port(), free_port(), free_port()];
        let primary = Process::start(nodes[0], dir.path(), &node_args(nodes[0], None, "a"))
            .expect("start the primary");
        let replica = Process::start(
            nodes[1],
            dir.path(),
            &node_args(nodes[1], Some(nodes[0]), "b"),
        )
        .expect("start the replica");
        let mut started = Vec::new();
        for (i, port) in sentinels.iter().enumerate() {
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile sentinel-{i}.log\n\
                     sentinel monitor {master} 127.0.0.1 {p} 2\n\
                     sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {master} {FAILOVER_TIMEOUT_MS}\n\
                     sentinel parallel-syncs {master} 1\n",
                    dir = dir.path().display(),
                    p = nodes[0],
                ),
            )
            .expect("sentinel config");
            started.push(
                Process::start(
                    *port,
                    dir.path(),
                    &format!("'{}' --sentinel", conf.display()),
                )
                .expect("start a sentinel"),
            );
        }
        let set = SentinelSet {
            master: master.to_string(),
            nodes,
            sentinels,
            dir,
            data: [Some(primary), Some(replica)],
            _sentinels: started,
        };
        set.wait_until("the replica is in sync", Duration::from_secs(20), || {
            cli(nodes[1], &["info", "replication"]).contains("master_link_status:up")
        });
        set.wait_until(
            "every sentinel knows the replica and the other sentinels",
            Duration::from_secs(30),
            || {
                set.sentinels.iter().all(|s| {
                    let info = cli(*s, &["sentinel", "master", master]);
                    let lines: Vec<&str> = info.lines().collect();
                    let field = |name: &str| {
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(0)
                    };
                    field("num-slaves") >= 1 && field("num-other-sentinels") >= 2
                })
            },
        );
        set
    }

    /// `redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/MASTER`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.master)
    }

    /// The primary's port as the first sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = cli(*s, &["sentinel", "get-master-addr-by-name", &self.master]);
            out.lines().nth(1).and_then(|p| p.trim().parse().ok())
        })
    }

    /// SIGKILLs the data node on `port`.
    pub fn sigkill(&mut self, port: u16) {
        let i = self.index(port);
        if let Some(mut p) = self.data[i].take() {
            p.sigkill();
        }
    }

    /// Starts the data node on `port` again, as a replica of `primary` (as an orchestrator
    /// that asks the sentinels first would), and waits until it is in sync.
    pub fn restart_as_replica(&mut self, port: u16, primary: u16) {
        let i = self.index(port);
        let name = if i == 0 { "a" } else { "b" };
        let p = Process::start(port, self.dir.path(), &node_args(port, Some(primary), name))
            .expect("restart a data node");
        self.data[i] = Some(p);
        self.wait_until(
            "the restarted node is in sync",
            Duration::from_secs(60),
            || cli(port, &["info", "replication"]).contains("master_link_status:up"),
        );
    }

    /// Makes the data node on `replica` the primary and the one on `primary` its replica
    /// without a restart, and points every sentinel at the new primary: the state a worker
    /// meets when its connections came back up on a killed primary restarted as a replica.
    /// The old primary keeps its clients connected (a sentinel-run failover would kill them,
    /// `CLIENT KILL TYPE normal`, and that drop alone makes a client ask the sentinels).
    /// Returns the old primary's connected clients just before and just after its
    /// demotion (the sentinels removed already), for the caller to check that its
    /// connections survived.
    pub fn demote_in_place(&mut self, primary: u16, replica: u16) -> (u32, u32) {
        let connected = |port| -> u32 {
            cli(port, &["info", "clients"])
                .lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        for s in self.sentinels {
            assert_eq!(cli(s, &["sentinel", "remove", &self.master]), "OK");
        }
        let before = connected(primary);
        assert_eq!(cli(replica, &["replicaof", "no", "one"]), "OK");
        assert_eq!(
            cli(primary, &["replicaof", "127.0.0.1", &replica.to_string()]),
            "OK"
        );
        let after = connected(primary);
        let (p, down, timeout) = (
            replica.to_string(),
            DOWN_AFTER_MS.to_string(),
            FAILOVER_TIMEOUT_MS.to_string(),
        );
        for s in self.sentinels {
            let m = self.master.as_str();
            assert_eq!(
                cli(s, &["sentinel", "monitor", m, "127.0.0.1", &p, "2"]),
                "OK"
            );
            assert_eq!(
                cli(s, &["sentinel", "set", m, "down-after-milliseconds", &down]),
                "OK"
            );
            assert_eq!(
                cli(s, &["sentinel", "set", m, "failover-timeout", &timeout]),
                "OK"
            );
        }
        self.wait_until(
            "the demoted node is in sync with the new primary",
            Duration::from_secs(20),
            || cli(primary, &["info", "replication"]).contains("master_link_status:up"),
        );
        (before, after)
    }

    fn index(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|p| *p == port)
            .expect("a data node's port")
    }

    /// Polls `cond` every 50 ms. On a timeout it fails with what each data node says of
    /// its replication and the end of each node's log, so a failure in CI can be read.
    fn wait_until(&self, what: &str, max: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + max;
        while !cond() {
            if Instant::now() >= deadline {
                panic!("timed out waiting until {what}\n{}", self.diagnosis());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `INFO replication` of both data nodes and the last lines of every log.
    fn diagnosis(&self) -> String {
        let mut out = String::new();
        for (port, name) in self.nodes.iter().zip(["a", "b"]) {
            out.push_str(&format!(
                "--- node {name} (port {port}) INFO replication:\n{}\n",
                cli(*port, &["info", "replication"])
            ));
        }
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|e| e == "log"));
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            out.push_str(&format!("--- {}:\n{}\n", log.display(), tail.join("\n")));
        }
        out
    }
}

/// A data node's arguments: loopback, no snapshots, AOF on (the README's settings), its
/// files and log named after it, and `replicaof` when it is a replica.
///
/// `repl-diskless-sync-delay 0`: by default a primary waits 5 s for more replicas before it
/// streams a full sync. Writes are acknowledged only once a replica has them (WAIT), so
/// with the default the workers' resume after a failover includes those 5 s of the
/// restarted node's resync (docs/decisions.md, issue 16).
fn node_args(port: u16, replica_of: Option<u16>, name: &str) -> String {
    let mut args = format!(
        "--port {port} --bind 127.0.0.1 --save '' --appendonly yes \
         --appendfilename {name}.aof --appenddirname aof-{name} --dbfilename {name}.rdb \
         --logfile {name}.log --repl-diskless-sync-delay 0"
    );
    if let Some(p) = replica_of {
        args.push_str(&format!(" --replicaof 127.0.0.1 {p}"));
    }
    args
}
