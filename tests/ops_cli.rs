//! `status` and `serve` through the real binary against Redis: the table and the JSON show
//! the queue's numbers, `--watch` keeps reading until SIGINT (and on a terminal redraws in
//! place), `serve` refuses to start
//! without a token and stops cleanly on SIGTERM, and log lines are JSON with
//! `--log-format json`.

#![allow(clippy::unwrap_used)]

mod common;
mod ops_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lsq_webhooks::ops::StatusReport;
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Dispatch, Queue, QueueConfig};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_lsq-webhooks");

fn lsq(queue: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("REDIS_URL", common::redis_url())
        .env("LSQ_QUEUE", queue)
        .env_remove("LSQ_API_TOKEN")
        .env_remove("RUST_LOG");
    c
}

async fn filled(name: &str) -> (String, Arc<dyn Queue>) {
    let queue = common::unique_queue(name);
    let config = QueueConfig {
        name: queue.clone(),
        ..QueueConfig::default()
    };
    let q: Arc<dyn Queue> = Arc::new(
        RedisQueue::connect(&common::redis_url(), config)
            .await
            .unwrap(),
    );
    ops_support::fill(q.as_ref(), &[("acme", 25), ("beta", 10)], 3, 1, 5).await;
    (queue, q)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test]
async fn status_prints_the_queue_as_a_table_and_as_json() {
    let (queue, q) = filled("status").await;
    let out = lsq(&queue).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report.queued, report.running, report.done, report.dead),
        (10, 0, 6, 2)
    );
    assert_eq!(report.queue, queue);
    assert_eq!(report.throughput.done, Some(6));
    assert_eq!(report.throughput.per_second.len(), 60);
    let beta = report.tenants.iter().find(|t| t.tenant == "beta").unwrap();
    assert_eq!((beta.waiting, beta.limit), (5, 10));
    assert!(beta.calls_in_window <= beta.limit, "{beta:?}");

    let out = lsq(&queue).arg("status").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("queued 10   scheduled 0   running 0   done 6   dead 2"),
        "{table}"
    );
    assert!(
        table.contains("throughput 6 done in the last 60 s"),
        "{table}"
    );
    assert!(table.contains("beta"), "{table}");
    let beta_row = table.lines().find(|l| l.starts_with("beta ")).unwrap();
    assert!(beta_row.contains("       5  "), "{beta_row}");
    assert!(beta_row.contains("/10  "), "{beta_row}");
    assert!(
        !table.contains('\x1b'),
        "no escape codes when not on a terminal"
    );
    drop(q);
}

/// Issue 13: status shows each tenant's limit, reserve, our share and why, and its daily
/// limit, in JSON and in the table.
#[tokio::test]
async fn status_shows_each_tenants_share_and_why() {
    let queue = common::unique_queue("status-share");
    let q = RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    let kept = lsq_webhooks::tenant::Tenant {
        reserve: 3,
        daily_limit: Some(5000),
        ..ops_support::tenant("kept", 10)
    };
    q.put_tenants(&[kept, ops_support::tenant("crowded", 10)])
        .await
        .unwrap();
    let jobs: Vec<_> = (0..2)
        .flat_map(|n| {
            ["kept", "crowded"].map(|t| lsq_webhooks::job::NewJob {
                delete: false,
                legacy_key: None,
                tenant: t.into(),
                body: ops_support::webhook(n).to_string(),
                key: format!("{t}-{n}"),
            })
        })
        .collect();
    q.push(&jobs).await.unwrap();
    // One call of "crowded" answered "rate limited" with 1 of our calls in the window: another
    // client is using the account.
    let crowded = loop {
        match q.dispatch().await.unwrap() {
            Dispatch::Job(j) if j.tenant == "crowded" => break j,
            Dispatch::Job(j) => q.complete(&j, "wh", false).await.unwrap(),
            other => panic!("jobs are waiting: {other:?}"),
        }
    };
    q.rate_limited(&crowded, Duration::ZERO, None)
        .await
        .unwrap();

    let out = lsq(&queue).args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |name: &str| {
        json["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tenant"] == name)
            .unwrap_or_else(|| panic!("{name} not in {json}"))
            .clone()
    };
    let kept = row("kept");
    assert_eq!(
        (
            &kept["limit"],
            &kept["reserve"],
            &kept["share"],
            &kept["share_reason"]
        ),
        (&json!(10), &json!(3), &json!(7), &json!("reserve"))
    );
    assert_eq!(kept["daily_limit"], json!(5000));
    let crowded = row("crowded");
    assert_eq!(crowded["share_reason"], "shared", "{crowded}");
    let share = crowded["share"].as_u64().unwrap();
    assert!((1..10).contains(&share), "{crowded}");
    let calls = crowded["share_calls"].as_f64().unwrap();
    assert!((1.0..10.0).contains(&calls), "{crowded}");
    assert!(crowded["other_use"].as_f64().is_some(), "{crowded}");
    assert_eq!(crowded["daily_limit"], serde_json::Value::Null);

    let out = lsq(&queue).arg("status").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("SHARE  WHY"), "{table}");
    let kept_row = table.lines().find(|l| l.starts_with("kept ")).unwrap();
    assert!(kept_row.contains("/10      7  reserve "), "{kept_row}");
    let crowded_row = table.lines().find(|l| l.starts_with("crowded ")).unwrap();
    assert!(crowded_row.contains("  shared (others ~"), "{crowded_row}");
}

#[tokio::test]
async fn watch_reads_again_until_sigint() {
    let (queue, q) = filled("watch").await;
    let mut child = lsq(&queue)
        .args(["status", "--watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first: StatusReport = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first.queued, 10);
    // A job finishes between two readings: the next reading shows it.
    let job = loop {
        match q.dispatch().await.unwrap() {
            lsq_webhooks::queue::Dispatch::Job(j) => break j,
            lsq_webhooks::queue::Dispatch::Wait(d) => tokio::time::sleep(d).await,
            lsq_webhooks::queue::Dispatch::Empty => panic!("empty"),
        }
    };
    q.complete(&job, "wh-late", false).await.unwrap();
    let later = loop {
        let r: StatusReport = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if r.done == 7 {
            break r;
        }
    };
    assert!(later.now_ms > first.now_ms);
    assert_eq!(later.queued, 9);
    signal(child.id(), "-INT");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// On a terminal, `--watch` redraws in place: the screen is cleared once, each frame starts
/// at the top, every line clears what a longer line of the last frame left, and the frame
/// ends by clearing the rest of the screen. `script` (util-linux) gives it a terminal.
#[test]
fn watch_redraws_in_place_on_a_terminal() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (queue, q) = runtime.block_on(filled("watch-tty"));
    let mut child = Command::new("script")
        .args([
            "-q",
            "-e",
            "-c",
            &format!("'{BIN}' status --watch"),
            "/dev/null",
        ])
        .env("REDIS_URL", common::redis_url())
        .env("LSQ_QUEUE", &queue)
        .env_remove("LSQ_API_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    const FOOTER: &str = "(every 1s; Ctrl-C to stop)\x1b[K";
    // Two whole frames (each ends by clearing the rest of the screen); the bound is against
    // a hang, not a timing assertion.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut screen = String::new();
    while screen.matches("\x1b[J").count() < 2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => screen.push_str(&String::from_utf8_lossy(&bytes)),
            Err(_) => panic!("no two frames within 60 s: {screen:?}"),
        }
    }
    signal(child.id(), "-TERM");
    let _ = child.wait();
    drop(q);

    assert!(screen.starts_with("\x1b[2J\x1b[H"), "{screen:?}");
    assert_eq!(
        screen.matches("\x1b[2J").count(),
        1,
        "cleared once: {screen:?}"
    );
    let frames: Vec<&str> = screen.split("\x1b[H").skip(1).collect();
    assert!(frames.len() >= 2, "{screen:?}");
    for frame in &frames[..2] {
        assert!(
            frame.contains("queued 10   scheduled 0   running 0   done 6   dead 2\x1b[K"),
            "{frame:?}"
        );
        assert!(frame.contains(FOOTER), "{frame:?}");
        assert!(frame.ends_with("\x1b[J"), "{frame:?}");
        // Every line of the frame clears to its end.
        for line in frame.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.trim_end_matches('\r').ends_with("\x1b[K") || line.ends_with("\x1b[J"),
                "{line:?}"
            );
        }
    }
}

#[test]
fn serve_refuses_to_start_without_a_token() {
    for token in [None, Some(""), Some("short")] {
        let mut c = lsq("unused");
        c.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(t) = token {
            c.env("LSQ_API_TOKEN", t);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{token:?}: {out:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("LSQ_API_TOKEN"), "{err}");
    }
}

#[tokio::test]
async fn serve_answers_and_stops_on_sigterm_with_json_logs() {
    let (queue, _q) = filled("serve").await;
    let port = common::free_port();
    let mut child = lsq(&queue)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("LSQ_API_TOKEN", ops_support::TOKEN)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    // Wait for the server to answer (bounded: the test fails rather than hangs).
    let mut up = false;
    for _ in 0..300 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "serve did not answer on {base}");
    let report: StatusReport = http
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((report.queued, report.done, report.dead), (10, 6, 2));
    signal(child.id(), "-TERM");
    let stderr = child.stderr.take().unwrap();
    let logs: Vec<String> = BufReader::new(stderr).lines().map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?} {logs:?}");
    assert!(!logs.is_empty());
    for line in &logs {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("serving the API")),
        "{logs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_serves_metrics_while_it_drains_the_queue() {
    use lsq_webhooks::sim::{self, AccountSource, SimConfig, SimState};
    // A simulator that knows the tenants, on a free port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_addr = listener.local_addr().unwrap();
    let api_base = url::Url::parse(&format!("http://{sim_addr}")).unwrap();
    let tenants: Vec<_> = ["acme", "beta"]
        .iter()
        .map(|n| lsq_webhooks::tenant::Tenant {
            api_base: Some(api_base.clone()),
            ..ops_support::tenant(n, 25)
        })
        .collect();
    let state = SimState::new(SimConfig {
        accounts: AccountSource::Tenants(tenants.clone()),
        ..SimConfig::default()
    })
    .unwrap();
    let stop_sim = tokio_util::sync::CancellationToken::new();
    let _sim = sim::serve(listener, state, stop_sim.clone()).unwrap();
    let _stop_sim = stop_sim.drop_guard();

    let queue = common::unique_queue("wmetrics");
    let q = RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    q.put_tenants(&tenants).await.unwrap();
    let jobs: Vec<_> = (0..20)
        .map(|i| lsq_webhooks::job::NewJob {
            delete: false,
            legacy_key: None,
            tenant: if i % 2 == 0 { "acme" } else { "beta" }.into(),
            body: ops_support::webhook(i).to_string(),
            key: format!("k{i}"),
        })
        .collect();
    q.push(&jobs).await.unwrap();

    let port = common::free_port();
    let mut child = lsq(&queue)
        .args(["worker", "--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for every job to be done (bounded, so a stuck worker fails the test).
    let mut done = 0;
    for _ in 0..600 {
        done = q.status().await.unwrap().done;
        if done == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(done, 20);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = ops_support::parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        m.value("lsq_jobs_total", &[("outcome", "done")]),
        Some(20.0),
        "{text}"
    );
    assert_eq!(m.value("lsq_queue_jobs", &[("state", "done")]), Some(20.0));
    assert_eq!(m.value("lsq_queue_jobs", &[("state", "queued")]), Some(0.0));
    assert_eq!(
        m.value(
            "lsq_leadsquared_call_duration_seconds_count",
            &[("outcome", "ok")]
        ),
        Some(20.0)
    );
    assert_eq!(m.value("lsq_jobs_done_total", &[]), Some(20.0), "{text}");
    assert_eq!(m.value("lsq_queue_latency_seconds", &[]), Some(0.0));
    assert_eq!(
        m.value("lsq_leadsquared_rate_limited_total", &[]),
        Some(0.0)
    );
    // The metrics port serves nothing else.
    let r = http.get(format!("{base}/v1/status")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::NOT_FOUND);
    signal(child.id(), "-TERM");
    assert!(child.wait().unwrap().success());
}

/// No tenant key in a command's output.
fn no_secret(out: &str) {
    for secret in ["ak-acme", "sk-acme", "ak-beta", "sk-beta"] {
        assert!(!out.contains(secret), "{secret} in {out}");
    }
}

/// Issue 15: `status --tenants` through the binary: a page as JSON with its cursor, the
/// table with a held tenant's who and why, a filter, and bad input refused with exit 2.
#[tokio::test]
async fn status_tenants_pages_sorts_and_filters() {
    let (queue, _q) = filled("status-tenants").await;
    let out = lsq(&queue)
        .args([
            "tenants",
            "pause",
            "beta",
            "--reason",
            "the customer asked",
            "--by",
            "ana",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let page = |args: &[&str]| {
        let out = lsq(&queue)
            .args(["status", "--tenants", "--json"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        no_secret(&text);
        serde_json::from_str::<lsq_webhooks::queue::TenantPage>(&text).unwrap()
    };
    let first = page(&["--sort", "waiting", "--limit", "1"]);
    assert_eq!(first.total, 2);
    assert_eq!(first.tenants.len(), 1);
    // Both have 5 waiting: ties by name.
    let acme = &first.tenants[0];
    assert_eq!(
        (acme.tenant.as_str(), acme.waiting, acme.done, acme.dead),
        ("acme", 5, 3, 1)
    );
    let next = first.next.clone().expect("a second page");
    let second = page(&["--sort", "waiting", "--limit", "1", "--cursor", &next]);
    assert_eq!(second.tenants[0].tenant, "beta");
    assert_eq!(second.next, None);
    let held = page(&["--filter", "held"]);
    assert_eq!(held.tenants.len(), 1);
    assert_eq!(
        held.tenants[0].hold.as_ref().map(|h| h.by.as_deref()),
        Some(Some("ana"))
    );

    let out = lsq(&queue).args(["status", "--tenants"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8(out.stdout).unwrap();
    no_secret(&table);
    assert!(
        table.starts_with("tenants 2 registered; 2 shown, by name\n"),
        "{table}"
    );
    let beta = table.lines().find(|l| l.starts_with("beta ")).unwrap();
    assert!(beta.contains(" held "), "{beta}");
    assert!(beta.contains("paused by ana since "), "{beta}");
    assert!(beta.ends_with(": the customer asked"), "{beta}");
    let acme = table.lines().find(|l| l.starts_with("acme ")).unwrap();
    assert!(acme.contains(" waiting "), "{acme}");

    for bad in [
        &["status", "--tenants", "--cursor", "nope"][..],
        &["status", "--tenants", "--filter", "sleepy"],
        &["status", "--tenants", "--sort", "size"],
        &["status", "--sort", "dead"],
        &["status", "--tenants", "--watch"],
    ] {
        let out = lsq(&queue).args(bad).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
}

/// Issue 15: `pause` and `resume` of the whole queue through the binary: no dispatch while
/// paused, `status` says who, when and why, and who defaults to `$USER@host`.
#[tokio::test]
async fn pause_and_resume_the_queue() {
    let (queue, q) = filled("queue-pause").await;
    let out = lsq(&queue)
        .args(["pause", "--reason", "deploy", "--by", "ana@ops1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with(&format!("queue {queue}: PAUSED since ")),
        "{said}"
    );
    assert!(said.contains(" by ana@ops1: deploy"), "{said}");
    assert!(!matches!(q.dispatch().await.unwrap(), Dispatch::Job(_)));
    assert_eq!(q.status().await.unwrap().queued, 10);

    let out = lsq(&queue).arg("status").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    no_secret(&table);
    let line = table
        .lines()
        .find(|l| l.starts_with("PAUSED since "))
        .unwrap();
    assert!(line.contains(" by ana@ops1: deploy"), "{table}");
    let out = lsq(&queue).args(["status", "--json"]).output().unwrap();
    let report: StatusReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.paused.map(|p| p.reason), Some("deploy".into()));

    // Who, when not given.
    let out = lsq(&queue)
        .arg("pause")
        .env("USER", "tester")
        .env("HOSTNAME", "box")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pause = q.queue_pause().await.unwrap().unwrap();
    assert_eq!(
        (pause.reason.as_str(), pause.by.as_deref()),
        ("paused by an operator", Some("tester@box"))
    );

    let out = lsq(&queue).arg("resume").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.starts_with(&format!("resumed queue {queue} (paused since ")),
        "{said}"
    );
    assert!(
        said.ends_with(" by tester@box: paused by an operator)\n"),
        "{said}"
    );
    assert!(matches!(q.dispatch().await.unwrap(), Dispatch::Job(_)));
    let out = lsq(&queue).arg("resume").output().unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("queue {queue} was not paused\n")
    );
}
