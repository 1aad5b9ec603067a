//! The status page, loaded in headless Chromium from a real server over a Redis queue: its
//! script runs, reads the API, and the DOM shows the queue's numbers, the throttled tenant
//! and the dead letters with their reasons.
//!
//! Chromium comes from Debian's `chromium` package (`.ci/run` installs it). In CI (`CI` set)
//! a missing Chromium fails the test; on a developer machine without it the test says so and
//! passes without checking (set `LSQ_CHROMIUM` to use another binary).

#![allow(clippy::unwrap_used)]

mod common;
mod ops_support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsq_webhooks::ops::ApiLimits;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, Queue, QueueConfig};

const PAUSE_REASON: &str = "rate limited by LeadSquared (limit of 1 per window)";
use ops_support::{Server, fill};

/// The Chromium binary, or `None` (after saying why) when the test may skip.
fn chromium() -> Option<PathBuf> {
    let path =
        PathBuf::from(std::env::var("LSQ_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if path.exists() {
        return Some(path);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !in_ci,
        "CI is set but {} does not exist: .ci/run must install Debian's chromium package",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} not found (apt-get install chromium, or set LSQ_CHROMIUM); \
         this test fails instead of skipping when CI is set",
        path.display()
    );
    None
}

/// Runs headless Chromium on `url` with `extra` arguments and returns its stdout. Killed
/// after two minutes so a stuck browser fails the test instead of hanging it.
fn run_chromium(bin: &PathBuf, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--window-size=1280,1100",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    reader.join().unwrap()
}

/// The text of the element with this id in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the DOM"));
    let rest = &dom[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    &rest[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_queue_in_chromium() {
    let Some(bin) = chromium() else { return };
    let config = QueueConfig {
        name: common::unique_queue("page"),
        ..QueueConfig::default()
    };
    let queue: Arc<dyn Queue> = Arc::new(
        RedisQueue::connect(&common::redis_url(), config)
            .await
            .unwrap(),
    );
    let reasons = fill(queue.as_ref(), &[("acme", 25), ("slowco", 2)], 4, 1, 6).await;
    // LeadSquared told slowco "rate limited, limit 1" for the next minute: paused, with a
    // reason.
    let job = loop {
        match queue.dispatch().await.unwrap() {
            Dispatch::Job(j) if j.tenant == "slowco" => break j,
            Dispatch::Job(j) => queue.complete(&j, "wh-extra", false).await.unwrap(),
            Dispatch::Wait(d) => tokio::time::sleep(d).await,
            Dispatch::Empty => panic!("empty"),
        }
    };
    queue
        .rate_limited(&job, Duration::from_secs(60), Some(1))
        .await
        .unwrap();
    let server = Server::start(queue.clone(), ApiLimits::default()).await;
    let url = server.url("/");

    let dom = tokio::task::spawn_blocking({
        let (bin, url) = (bin.clone(), url.clone());
        move || run_chromium(&bin, &url, &["--dump-dom"])
    })
    .await
    .unwrap();
    let status = queue.status().await.unwrap();
    assert_eq!(text_of(&dom, "queued"), status.queued.to_string(), "{dom}");
    assert_eq!(text_of(&dom, "done"), status.done.to_string());
    assert_eq!(text_of(&dom, "dead-total"), "2");
    assert_eq!(text_of(&dom, "running"), "0");
    assert_eq!(text_of(&dom, "scheduled"), "0");
    assert_eq!(text_of(&dom, "throughput"), status.done.to_string());
    // The paused tenant is listed with its state and LeadSquared's reason.
    let row = dom
        .split("<tr data-tenant=\"slowco\">")
        .nth(1)
        .unwrap_or_else(|| panic!("slowco not in the throttled table: {dom}"));
    let row = row.split("</tr>").next().unwrap();
    assert!(row.contains(">paused<"), "{row}");
    assert!(row.contains(PAUSE_REASON), "{row}");
    assert_eq!(text_of(&dom, "queue-name"), status.queue);
    // The chart drew a bar for every second of the minute.
    assert_eq!(dom.matches("class=\"bar\"").count(), 60, "{dom}");
    // Dead letters with their reasons, each with a retry button.
    for reason in &reasons {
        assert!(dom.contains(reason.as_str()), "no {reason:?} in {dom}");
    }
    assert_eq!(dom.matches(">Retry</button>").count(), 2);
    assert!(!dom.contains("cannot refresh"), "{dom}");

    // A screenshot for the closing note, when asked for.
    if let Ok(path) = std::env::var("LSQ_PAGE_SCREENSHOT") {
        let shot = format!("--screenshot={path}");
        tokio::task::spawn_blocking(move || run_chromium(&bin, &url, &[&shot]))
            .await
            .unwrap();
    }
    server.stop().await;
}
