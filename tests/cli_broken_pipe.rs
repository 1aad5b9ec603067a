//! Every command that prints ends quietly when its reader goes away (`| head -1`): exit 141
//! (128 + SIGPIPE) and no panic, through the real binary against Redis. Each output is made
//! larger than a pipe holds (checked by reading it once whole), so the command is still
//! writing when the reader closes and must meet the broken pipe.

#![allow(clippy::unwrap_used)]

mod common;
mod ops_support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};

const BIN: &str = env!("CARGO_BIN_EXE_lsq-webhooks");

/// Twice what a Linux pipe holds (64 KiB unless raised with `F_SETPIPE_SZ`): the command
/// still has more to write after the pipe is full and the reader has taken its 8 KiB.
const MORE_THAN_A_PIPE: usize = 128 * 1024;

async fn queue(name: &str) -> (String, RedisQueue) {
    let name = common::unique_queue(name);
    let config = QueueConfig {
        name: name.clone(),
        ..QueueConfig::default()
    };
    let q = RedisQueue::connect(&common::redis_url(), config)
        .await
        .unwrap();
    (name, q)
}

/// `n` tenants, each with `waiting` jobs queued.
async fn many_tenants(q: &dyn Queue, n: usize, waiting: usize) {
    let names: Vec<String> = (0..n).map(|i| format!("tenant-{i:05}")).collect();
    let tenants: Vec<(&str, u32)> = names.iter().map(|n| (n.as_str(), 25)).collect();
    ops_support::fill(q, &tenants, 0, 0, waiting).await;
}

fn lsq(queue: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("REDIS_URL", common::redis_url())
        .env("LSQ_QUEUE", queue)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `args` twice: read whole (exit 0, more than a pipe holds), then read one line (at
/// most 4 KiB) and close the pipe (exit 141, no error on stderr, above all no panic).
fn ends_quietly_when_the_reader_goes(queue: &str, args: &[&str]) {
    let whole = lsq(queue, args).output().unwrap();
    assert!(whole.status.success(), "{args:?}: {whole:?}");
    assert!(
        whole.stdout.len() > MORE_THAN_A_PIPE,
        "{args:?} printed only {} bytes: the test needs more than a pipe holds",
        whole.stdout.len()
    );

    let mut child = lsq(queue, args).spawn().unwrap();
    // One line, or its first 4 KiB (`status --json` is one line).
    let mut out = BufReader::new(child.stdout.take().unwrap()).take(4096);
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "{args:?}");
    // The reader goes away.
    drop(out);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    // Nor an error report (log lines of the command itself may come and go).
    assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    assert_eq!(status.code(), Some(141), "{args:?}: {status}");
}

#[tokio::test]
async fn tenants_list_ends_quietly_when_the_reader_goes() {
    let (name, q) = queue("pipe-tenants").await;
    many_tenants(&q, 10_000, 0).await;
    ends_quietly_when_the_reader_goes(&name, &["tenants", "list"]);
}

#[tokio::test]
async fn status_ends_quietly_when_the_reader_goes() {
    let (name, q) = queue("pipe-status").await;
    many_tenants(&q, 4000, 1).await;
    ends_quietly_when_the_reader_goes(&name, &["status", "--top", "4000"]);
    ends_quietly_when_the_reader_goes(&name, &["status", "--json"]);
}

#[tokio::test]
async fn results_and_dead_list_end_quietly_when_the_reader_goes() {
    let (name, q) = queue("pipe-results").await;
    // One tenant with a limit high enough that filling it never waits for the window.
    ops_support::fill(&q, &[("acme", 100_000)], 1500, 1500, 0).await;
    ends_quietly_when_the_reader_goes(&name, &["results"]);
    ends_quietly_when_the_reader_goes(&name, &["results", "--format", "csv"]);
    ends_quietly_when_the_reader_goes(&name, &["dead", "list"]);
}
