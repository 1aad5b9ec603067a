//! Test harness shared by the integration tests and benchmarks.
//!
//! A Redis for tests: `REDIS_URL` when set; else a private `redis-server` on a free port
//! (one per test binary, ended when the binary exits); else a Redis 7 container through
//! testcontainers when a Docker engine answers (removed when the binary exits: see
//! `ContainerLifeline`); else a failure that says what to install (`scripts/test` installs
//! redis-server on Debian and Ubuntu).
//! Each test gets its own queue name (key prefix), so tests run in parallel on one Redis.

#![allow(dead_code)]

pub mod cluster;
pub mod sentinel;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The URL of the Redis this test binary uses.
pub fn redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("REDIS_URL")
            && !url.is_empty()
        {
            return url;
        }
        match PrivateRedis::start(&[]) {
            Ok(r) => {
                let url = r.url();
                // Lives as long as the test binary: its watchdog ends it when we exit.
                std::mem::forget(r);
                url
            }
            Err(private_err) => match container_redis() {
                Ok(url) => url,
                Err(docker_err) => panic!(
                    "tests need Redis: set REDIS_URL, or install redis-server \
                     (apt-get install redis-server), or run a Docker engine.\n\
                     redis-server: {private_err}\ndocker: {docker_err}"
                ),
            },
        }
    })
    .clone()
}

/// A queue name no other test uses.
pub fn unique_queue(test: &str) -> String {
    format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A free TCP port on the loopback interface.
/// A server that answers every request 503 at once (a transient failure about the call, so
/// each one spends an attempt; a host that refuses connections is about the tenant, and holds
/// it instead: tests/worker_discovery.rs). It lives as long as the test process.
pub fn always_503() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                let mut seen = Vec::new();
                // Read the head and the declared body, then answer; one request a connection.
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if seen.len() >= head_end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    format!("http://{addr}")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `redis-server` of the test's own, for tests that stop and restart Redis.
pub struct PrivateRedis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (AOF files live here when enabled).
    pub dir: std::path::PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn start(extra: &[&str]) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("lsq-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut r = PrivateRedis {
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.restart()?;
        Ok(r)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no shutdown save).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The watchdog shell's child: make sure the port is free before a restart.
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && ping(self.port) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts (again) on the same port and directory, and waits until it answers PING.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        // A shell watchdog: redis-server runs as its child and is killed when our end of the
        // shell's stdin closes, which happens when this test process exits for any reason;
        // then its directory goes too (the per-binary Redis is never dropped).
        let args = format!(
            "redis-server --port {port} --bind 127.0.0.1 --save '' --dir '{dir}' {extra} & \
             pid=$!; read _ ; kill $pid; wait $pid; rm -rf '{dir}'",
            port = self.port,
            dir = self.dir.display(),
            extra = self.extra.join(" ")
        );
        let mut child = Command::new("sh")
            .args(["-c", &args])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let mut msg = String::new();
                if let Some(err) = child.stderr.take() {
                    for line in BufReader::new(err).lines().take(5).map_while(Result::ok) {
                        msg.push_str(&line);
                    }
                }
                return Err(format!(
                    "redis-server did not answer on port {}: {msg}",
                    self.port
                ));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// What the container's shell runs: Redis (on `$PORT`, default 6379), kept up while a
/// client named [`LIFELINE_NAME`] is connected (after waiting up to 60 s for it to
/// connect; it sets `lsq-test-lifeline-seen` once it has), then ended. The container exits
/// with it and the engine removes it (`AutoRemove`). tests/harness.rs runs it against a
/// local redis-server.
pub const CONTAINER_SCRIPT: &str = "\
p=${PORT:-6379}
redis-server --port $p --protected-mode no --save '' --appendonly no & pid=$!
n=0
until redis-cli -p $p client list 2>/dev/null | grep -q name=lsq-test-lifeline; do
  n=$((n + 1)); [ \"$n\" -gt 600 ] && break; sleep 0.1
done
redis-cli -p $p set lsq-test-lifeline-seen 1 >/dev/null
while redis-cli -p $p client list 2>/dev/null | grep -q name=lsq-test-lifeline; do sleep 1; done
kill $pid; wait $pid";

/// The client name the container's script watches for.
pub const LIFELINE_NAME: &str = "lsq-test-lifeline";

/// The container of this test binary and the connection that keeps it alive: when the
/// binary exits for any reason, its sockets close, the script sees the lifeline gone and
/// ends Redis, and the engine removes the container. (testcontainers removes a container
/// when its handle is dropped, but statics are never dropped: without the lifeline one
/// container per test binary was left running.)
struct ContainerLifeline {
    _container: testcontainers::ContainerAsync<testcontainers::GenericImage>,
    _connection: std::net::TcpStream,
}

static CONTAINER: OnceLock<ContainerLifeline> = OnceLock::new();

/// A Redis 7 container, when a Docker engine answers. Started on a thread of its own with
/// its own runtime, since each test has its own runtime; see [`ContainerLifeline`] for how
/// it goes away when the test binary exits.
fn container_redis() -> Result<String, String> {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            use testcontainers::core::{IntoContainerPort, WaitFor};
            use testcontainers::runners::AsyncRunner;
            use testcontainers::{GenericImage, ImageExt};
            let container = GenericImage::new("redis", "7")
                .with_exposed_port(6379.tcp())
                .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
                .with_entrypoint("sh")
                .with_cmd(["-c", CONTAINER_SCRIPT])
                .with_host_config_modifier(|host| host.auto_remove = Some(true))
                .start()
                .await
                .map_err(|e| e.to_string())?;
            let host = container.get_host().await.map_err(|e| e.to_string())?;
            let port = container
                .get_host_port_ipv4(6379.tcp())
                .await
                .map_err(|e| e.to_string())?;
            let connection = lifeline(&host.to_string(), port)?;
            let _ = CONTAINER.set(ContainerLifeline {
                _container: container,
                _connection: connection,
            });
            Ok(format!("redis://{host}:{port}"))
        })
    })
    .join()
    .map_err(|_| "container start panicked".to_string())?
}

/// A connection to the container's Redis named [`LIFELINE_NAME`].
pub fn lifeline(host: &str, port: u16) -> Result<std::net::TcpStream, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((host, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("CLIENT SETNAME {LIFELINE_NAME}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut ok = [0u8; 5];
    s.read_exact(&mut ok).map_err(|e| e.to_string())?;
    if &ok != b"+OK\r\n" {
        return Err(format!(
            "CLIENT SETNAME answered {:?}",
            String::from_utf8_lossy(&ok)
        ));
    }
    Ok(s)
}
