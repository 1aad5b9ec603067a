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
