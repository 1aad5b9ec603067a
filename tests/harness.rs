//! The harness itself: a Redis answers, and queue names do not collide.

mod common;

#[tokio::test]
async fn harness_redis_answers() {
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to test redis");
    let pong: String = redis::cmd("PING")
        .query_async(&mut con)
        .await
        .expect("ping");
    assert_eq!(pong, "PONG");
    assert_ne!(common::unique_queue("a"), common::unique_queue("a"));
}

#[test]
fn private_redis_restarts_on_the_same_port() {
    let mut r = common::PrivateRedis::start(&["--appendonly", "yes"]).expect("redis-server");
    let port = r.port;
    r.restart().expect("restart");
    assert_eq!(r.port, port);
}

/// The script the Redis container runs (common::CONTAINER_SCRIPT), run here against a local
/// redis-server: Redis stays up while the lifeline connection is open and ends once it
/// closes, as it does when a test binary exits, so no container outlives its tests.
#[test]
fn the_container_script_ends_redis_when_its_lifeline_closes() {
    let port = common::free_port();
    let mut script = std::process::Command::new("sh")
        .args(["-c", common::CONTAINER_SCRIPT])
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sh");
    let answers = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !answers() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server never answered"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let lifeline = common::lifeline("127.0.0.1", port).expect("lifeline");
    let seen = || {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "get", "lsq-test-lifeline-seen"])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    };
    while !seen() {
        assert!(
            std::time::Instant::now() < deadline,
            "the script never saw the lifeline"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // While the lifeline holds, Redis stays up.
    assert!(script.try_wait().expect("try_wait").is_none());
    assert!(answers());
    drop(lifeline);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = script.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the script outlived its lifeline by 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!answers(), "Redis still answers after the script ended");
}
