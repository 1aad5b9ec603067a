//! The producer's command line, driven as a user runs it: `tenants import` and `enqueue`
//! against a real Redis, with valid and invalid files.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};

fn run(queue: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(args)
        .env("REDIS_URL", common::redis_url())
        .env("LSQ_QUEUE", queue)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lsq-webhooks");
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait for lsq-webhooks")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn webhook(n: usize) -> serde_json::Value {
    serde_json::json!({
        "Description": format!("hook {n}"),
        "URL": format!("https://example.com/hooks/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "NotifyOnFailure": true,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": "HEADER-SECRET"}]
    })
}

fn line(tenant: &str, n: usize) -> String {
    serde_json::json!({"tenant": tenant, "webhook": webhook(n)}).to_string()
}

const TENANTS: &str = "tenant,api_base,access_key,secret_key,limit\n\
                       acme,http://127.0.0.1:9,ak-acme,sk-SECRET-acme,10\n\
                       beta,https://api-in21.leadsquared.com,ak-beta,sk-SECRET-beta,\n";

/// The test's queue, as the binary under test sees it.
async fn open(queue: &str) -> RedisQueue {
    RedisQueue::connect(
        &common::redis_url(),
        QueueConfig {
            name: queue.to_string(),
            ..Default::default()
        },
    )
    .await
    .expect("connect")
}

async fn queued(queue: &str) -> u64 {
    open(queue).await.status().await.expect("status").queued
}

fn import_tenants(queue: &str, dir: &tempfile::TempDir) {
    let path = dir.path().join("tenants.csv");
    std::fs::write(&path, TENANTS).expect("write");
    let out = run(
        queue,
        &["tenants", "import", path.to_str().expect("path")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn tenants_import_is_all_or_nothing() {
    let queue = common::unique_queue("cli-tenants");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "tenant,api_base,access_key,secret_key,limit\n\
         acme,https://api-in21.leadsquared.com,ak,sk-SECRET-1,10\n\
         beta,https://api-in21.leadsquared.com,ak,sk-SECRET-2,many\n",
    )
    .expect("write");
    let out = run(
        &queue,
        &["tenants", "import", bad.to_str().expect("path")],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("line 3: limit:"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
    let listed = run(&queue, &["tenants", "list"], None);
    assert_eq!(text(&listed.stdout), "", "nothing was imported");

    let good = dir.path().join("tenants.csv");
    std::fs::write(&good, TENANTS).expect("write");
    let out = run(
        &queue,
        &["tenants", "import", good.to_str().expect("path")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "imported 2 tenant(s): 2 new, 0 updated"
    );
    let out = run(
        &queue,
        &["tenants", "import", good.to_str().expect("path")],
        None,
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "imported 2 tenant(s): 0 new, 2 updated"
    );
    let listed = text(&run(&queue, &["tenants", "list"], None).stdout);
    assert!(
        listed.contains("acme\t10\t") && listed.contains("beta\t25\t"),
        "{listed}"
    );
    assert!(
        !listed.contains("SECRET") && !listed.contains("ak-"),
        "{listed}"
    );
}

#[tokio::test]
async fn an_invalid_file_enqueues_nothing() {
    let queue = common::unique_queue("cli-invalid");
    let dir = tempfile::tempdir().expect("tempdir");
    import_tenants(&queue, &dir);
    let mut bad_url = webhook(9);
    bad_url["URL"] = "ftp://example.com".into();
    let lines = [
        line("acme", 1),
        line("beta", 2),
        serde_json::json!({"tenant": "acme", "webhook": bad_url}).to_string(),
        line("nobody", 3),
        serde_json::json!({"tenant": "acme", "webhook": webhook(4), "priority": 1}).to_string(),
        line("acme", 5),
    ];
    let path = dir.path().join("jobs.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let file = path.to_str().expect("path");

    // Checking only: the same report, nothing written either way.
    let out = run(&queue, &["enqueue", "--check", file], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "valid 3, invalid 3");
    assert!(text(&out.stderr).contains("line 3: webhook.URL: "));
    let valid_only = dir.path().join("valid.jsonl");
    std::fs::write(&valid_only, line("acme", 1) + "\n" + &line("beta", 2)).expect("write");
    let out = run(
        &queue,
        &["enqueue", "--check", valid_only.to_str().expect("path")],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "valid 2, invalid 0");
    assert_eq!(queued(&queue).await, 0, "a check enqueues nothing");
    let out = run(
        &queue,
        &["enqueue", "--check", "--skip-invalid", file],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "the two flags conflict");

    let out = run(&queue, &["enqueue", file], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "enqueued 0, duplicate 0, invalid 3"
    );
    let err = text(&out.stderr);
    assert!(err.contains("line 3: webhook.URL: "), "{err}");
    assert!(
        err.contains("line 4: tenant: unknown tenant \"nobody\""),
        "{err}"
    );
    assert!(
        err.contains("line 5: job: unknown field \"priority\""),
        "{err}"
    );
    assert!(!err.contains("HEADER-SECRET"), "{err}");
    assert_eq!(queued(&queue).await, 0, "nothing enqueued");

    let out = run(&queue, &["enqueue", "--skip-invalid", file], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "enqueued 3, duplicate 0, invalid 3"
    );
    assert_eq!(queued(&queue).await, 3);
}

#[tokio::test]
async fn enqueue_twice_reports_duplicates_and_reads_stdin() {
    let queue = common::unique_queue("cli-dup");
    let dir = tempfile::tempdir().expect("tempdir");
    import_tenants(&queue, &dir);
    let mut lines: Vec<String> = (0..2500)
        .map(|n| line(if n % 2 == 0 { "acme" } else { "beta" }, n))
        .collect();
    lines.push(
        serde_json::json!({"tenant": "acme", "webhook": webhook(7), "key": "given"}).to_string(),
    );
    let input = lines.join("\n");

    let out = run(&queue, &["enqueue", "-"], Some(&input));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "enqueued 2501, duplicate 0, invalid 0"
    );
    let out = run(&queue, &["enqueue", "-"], Some(&input));
    assert_eq!(
        text(&out.stdout).trim(),
        "enqueued 0, duplicate 2501, invalid 0"
    );
    assert_eq!(queued(&queue).await, 2501);
}

/// A file too big to keep its checked jobs is read twice, in parts: the first read checks
/// every line, the second pushes each part as it is checked; all or nothing still holds, and
/// line numbers count from the start of the file (small parts and no kept jobs here stand
/// in for a file of millions of jobs).
#[tokio::test]
async fn a_large_file_is_checked_then_pushed_in_parts() {
    let queue = common::unique_queue("cli-parts");
    let dir = tempfile::tempdir().expect("tempdir");
    import_tenants(&queue, &dir);
    let mut lines: Vec<String> = (0..1200)
        .map(|n| line(if n % 3 == 0 { "acme" } else { "beta" }, n))
        .collect();
    // The same job twice: the second is a duplicate of the first, across parts.
    lines.push(lines[5].clone());
    let parts = ["--part-bytes", "4096", "--keep-bytes", "0"];
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, lines.join("\n") + "\n").expect("write");
    let mut bad = lines.clone();
    bad[1000] = "{broken".into();
    let bad_path = dir.path().join("bad.jsonl");
    std::fs::write(&bad_path, bad.join("\n")).expect("write");

    let out = run(
        &queue,
        &[&["enqueue", bad_path.to_str().expect("path")][..], &parts].concat(),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("line 1001: json: "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(queued(&queue).await, 0, "nothing enqueued");

    let out = run(
        &queue,
        &[&["enqueue", good.to_str().expect("path")][..], &parts].concat(),
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "enqueued 1200, duplicate 1, invalid 0"
    );
    assert_eq!(queued(&queue).await, 1200);
    // Standard input, spooled and read twice the same way: all duplicates now.
    let out = run(
        &queue,
        &[&["enqueue", "-"][..], &parts].concat(),
        Some(&lines.join("\n")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "enqueued 0, duplicate 1201, invalid 0"
    );
}

#[test]
fn a_missing_file_is_bad_input() {
    let queue = common::unique_queue("cli-missing");
    let out = run(&queue, &["enqueue", "/nonexistent/jobs.jsonl"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = run(
        &queue,
        &["tenants", "import", "/nonexistent/tenants.csv"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

async fn stored_tenant(queue: &str, name: &str) -> lsq_webhooks::tenant::Tenant {
    open(queue)
        .await
        .tenant(name)
        .await
        .expect("tenant")
        .expect("imported")
}

/// Issue 13: `reserve` and `daily_limit` are optional columns, found by the header in any
/// order; the default reserve comes from `--reserve` / `LSQ_RESERVE`; a bad value is
/// `line N: column: reason` and nothing is imported.
#[tokio::test]
async fn tenants_import_reads_reserve_and_daily_limit_in_any_order() {
    let queue = common::unique_queue("cli-reserve");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "reserve,tenant,api_base,access_key,secret_key,limit,daily_limit\n\
         2,acme,https://api-in21.leadsquared.com,ak,sk-SECRET-1,10,5000\n\
         10,beta,https://api-in21.leadsquared.com,ak,sk-SECRET-2,10,\n\
         1,gamma,https://api-in21.leadsquared.com,ak,sk-SECRET-3,10,-3\n",
    )
    .expect("write");
    let out = run(
        &queue,
        &["tenants", "import", bad.to_str().expect("path")],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("line 3: reserve: 10 is not below the limit 10"),
        "{err}"
    );
    assert!(err.contains("line 4: daily_limit: \"-3\""), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
    assert_eq!(text(&run(&queue, &["tenants", "list"], None).stdout), "");

    let good = dir.path().join("good.csv");
    std::fs::write(
        &good,
        "daily_limit,secret_key,tenant,reserve,access_key,api_base,limit\n\
         5000,sk-1,acme,2,ak-1,https://api-in21.leadsquared.com,10\n\
         ,sk-2,beta,,ak-2,https://api-in21.leadsquared.com,\n",
    )
    .expect("write");
    let out = run(
        &queue,
        &[
            "tenants",
            "import",
            "--reserve",
            "3",
            good.to_str().expect("path"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let acme = stored_tenant(&queue, "acme").await;
    assert_eq!(
        (acme.limit, acme.reserve, acme.daily_limit),
        (10, 2, Some(5000))
    );
    let beta = stored_tenant(&queue, "beta").await;
    assert_eq!((beta.limit, beta.reserve, beta.daily_limit), (25, 3, None));

    // LSQ_RESERVE gives the default too; a five-column file stays valid.
    let five = dir.path().join("five.csv");
    std::fs::write(&five, TENANTS).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["tenants", "import", five.to_str().expect("path")])
        .env("REDIS_URL", common::redis_url())
        .env("LSQ_QUEUE", &queue)
        .env("LSQ_RESERVE", "4")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let acme = stored_tenant(&queue, "acme").await;
    assert_eq!((acme.limit, acme.reserve, acme.daily_limit), (10, 4, None));
}
