//! Issue 18: `lsq-webhooks sync FILE [--prune] [--dry-run]` of the real binary against a
//! real Redis and the simulator: the plan per tenant (naming changed fields, never a header
//! value), nothing changed by a dry run, the plan applied by the worker, webhooks made by
//! hand never deleted nor duplicated, and an invalid file planning nothing; and the worker's
//! `--delete-call`.

mod common;
mod revision_support;
mod worker_support;

use std::process::{Command, Output};
use std::time::Duration;

use lsq_webhooks::leadsquared::CreateWebhook;
use lsq_webhooks::queue::Queue;
use revision_support::*;
use worker_support::*;

fn lsq(queue: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &common::redis_url(), "--queue", queue])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn url(t: &str, n: usize, v: u32) -> String {
    format!("https://hooks.example/{t}/{n}/v{v}")
}

/// A job line of the file: the request as a producer writes it.
fn line(tenant: &str, webhook: serde_json::Value) -> String {
    serde_json::json!({"tenant": tenant, "webhook": webhook}).to_string()
}

fn write(dir: &tempfile::TempDir, name: &str, lines: &[String]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the file");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_plans_applies_and_never_touches_what_it_did_not_make() {
    let nowhere = url::Url::parse("http://127.0.0.1:1").expect("url");
    let sim = start_sim(sim_config(
        &tenants(&nowhere, 2, &[25]),
        Duration::from_secs(5),
    ))
    .await;
    let ts = tenants(&sim.server.base_url(), 2, &[25]);
    let name = common::unique_queue("sync-cli");
    let queue = redis_queue_named(&name, &ts).await;
    let worker = || {
        let o = lsq(
            &name,
            &[
                "worker",
                "--exit-when-idle",
                "--discovery-url",
                "http://127.0.0.1:1",
            ],
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    // What this product made: 5 hooks per tenant.
    let first: Vec<_> = ts
        .iter()
        .flat_map(|t| (0..5).map(move |n| (t.name.clone(), n)))
        .map(|(t, n)| create(&t, hook(&t, n, &url(&t, n, 1), "hv-secret-one")))
        .collect();
    queue.push(&first).await.expect("push");
    worker();
    // Made by hand in t00's account: one the file never names, and one the file wants.
    let c = client(Duration::from_secs(5));
    let manual = hook("t00", 90, "https://hand.example/", "hv-secret-one");
    let wanted = hook("t00", 6, &url("t00", 6, 1), "hv-secret-one");
    for w in [&manual, &wanted] {
        let w = CreateWebhook::from_value(w).expect("valid");
        c.create(&ts[0], &w).await.expect("created by hand");
    }

    // The desired state: t00's hook 0 moves, 1 stays, 2 rotates its header value, 3 is
    // gone, 4 stays, 5 is new, 6 is the hand-made one; t01 stays as it is.
    let mut lines = vec![
        line("t00", hook("t00", 0, &url("t00", 0, 2), "hv-secret-one")),
        line("t00", hook("t00", 1, &url("t00", 1, 1), "hv-secret-one")),
        line("t00", hook("t00", 2, &url("t00", 2, 1), "hv-secret-two")),
        line("t00", hook("t00", 4, &url("t00", 4, 1), "hv-secret-one")),
        line("t00", hook("t00", 5, &url("t00", 5, 1), "hv-secret-one")),
        line("t00", wanted.clone()),
    ];
    lines.extend((0..5).map(|n| line("t01", hook("t01", n, &url("t01", n, 1), "hv-secret-one"))));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(&dir, "desired.jsonl", &lines);

    let before = sim.stats();
    let plan = lsq(&name, &["sync", &file, "--prune", "--dry-run"]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    let out = text(&plan.stdout);
    assert!(
        out.contains(
            "tenant t00: create 1, update 2 (URL, header x-api-key value), delete 1, \
             unchanged 2, 1 already in LeadSquared without a record (left alone)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("tenant t01: create 0, update 0, delete 0, unchanged 5\n"),
        "{out}"
    );
    assert!(
        out.contains("total: create 1, update 2, delete 1, unchanged 7; Retrieve calls 2\n"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing enqueued"), "{out}");
    let shown = format!("{out}{}", text(&plan.stderr));
    assert!(
        !shown.contains("hv-secret"),
        "a header value was shown: {shown}"
    );
    // Nothing changed: no job, no call but the two Retrieve pages.
    let status = queue.status().await.expect("status");
    assert_eq!((status.queued, status.scheduled, status.running), (0, 0, 0));
    let after = sim.stats();
    for t in ["t00", "t01"] {
        assert_eq!(after.accounts[t].webhooks, before.accounts[t].webhooks);
        assert_eq!(
            after.accounts[t].retrieve_calls,
            before.accounts[t].retrieve_calls + 1
        );
    }
    // Without --prune, hook 3 is kept and said so.
    let kept = lsq(&name, &["sync", &file, "--dry-run"]);
    assert!(
        text(&kept.stdout)
            .contains("delete 0, unchanged 2, 1 not in the file (kept; --prune deletes them)"),
        "{}",
        text(&kept.stdout)
    );

    let apply = lsq(&name, &["sync", &file, "--prune"]);
    assert!(apply.status.success(), "{}", text(&apply.stderr));
    assert!(
        text(&apply.stdout).contains("enqueued 4, duplicate 0\n"),
        "{}",
        text(&apply.stdout)
    );
    worker();
    // The file's state, plus the webhook made by hand that the file never named.
    let desired_jobs: Vec<_> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("line");
            create(v["tenant"].as_str().expect("tenant"), v["webhook"].clone())
        })
        .chain(std::iter::once(create("t00", manual)))
        .collect();
    assert_sim_holds(&sim.stats(), &desired(&desired_jobs));
    // `job` says what each did.
    for (n, did) in [(0, "updated"), (3, "deleted"), (5, "created")] {
        let key = create("t00", hook("t00", n, &url("t00", n, 1), "x")).key;
        let shown = lsq(&name, &["job", "--tenant", "t00", "--key", &key]);
        let out = text(&shown.stdout);
        assert!(
            out.contains(&format!("did         {did}\n")),
            "hook {n}: {out}"
        );
    }
    // In sync now: the same file plans nothing.
    let again = lsq(&name, &["sync", &file, "--prune", "--dry-run"]);
    assert!(
        text(&again.stdout).contains("total: create 0, update 0, delete 0, unchanged 10;"),
        "{}",
        text(&again.stdout)
    );
}

#[tokio::test]
async fn an_invalid_line_plans_nothing_and_says_where() {
    let nowhere = url::Url::parse("http://127.0.0.1:1").expect("url");
    let ts = tenants(&nowhere, 1, &[25]);
    let name = common::unique_queue("sync-bad");
    let queue = redis_queue_named(&name, &ts).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = vec![
        line("t00", hook("t00", 0, "https://ok.example/", "hv-secret-one")),
        line("t00", hook("t00", 1, "not a url", "hv-secret-one")),
        serde_json::json!({"tenant": "t00", "key": "k", "delete": true,
            "webhook": hook("t00", 2, "https://ok.example/", "hv-secret-one")})
        .to_string(),
        serde_json::json!({"tenant": "nobody", "webhook": hook("x", 3, "https://ok.example/", "s")})
            .to_string(),
    ];
    let file = write(&dir, "bad.jsonl", &lines);
    let o = lsq(&name, &["sync", &file, "--dry-run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    for want in [
        "line 2: webhook.URL",
        "line 3: webhook: a delete has no webhook body",
        "line 4: tenant",
    ] {
        assert!(err.contains(want), "{want:?} missing in {err}");
    }
    assert!(err.contains("3 invalid line(s); nothing planned"), "{err}");
    assert!(!err.contains("hv-secret"), "{err}");
    assert!(text(&o.stdout).is_empty(), "{}", text(&o.stdout));
    let status = queue.status().await.expect("status");
    assert_eq!(status.queued, 0);
}

/// The worker's `--delete-call`: the configured POST form is answered 405 by the simulator
/// (as integrators report of LeadSquared), so the delete dies with that reason and the
/// webhook stays; the default GET form deletes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_delete_call_is_configurable() {
    let nowhere = url::Url::parse("http://127.0.0.1:1").expect("url");
    let sim = start_sim(sim_config(
        &tenants(&nowhere, 1, &[25]),
        Duration::from_secs(5),
    ))
    .await;
    let ts = tenants(&sim.server.base_url(), 1, &[25]);
    let name = common::unique_queue("delete-call");
    let queue = redis_queue_named(&name, &ts).await;
    let worker = |extra: &[&str]| {
        let mut args = vec![
            "worker",
            "--exit-when-idle",
            "--discovery-url",
            "http://127.0.0.1:1",
        ];
        args.extend_from_slice(extra);
        let o = lsq(&name, &args);
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    let made = create("t00", hook("t00", 0, &url("t00", 0, 1), "hv-secret-one"));
    queue.push(std::slice::from_ref(&made)).await.expect("push");
    worker(&[]);
    queue.push(&[delete(&made)]).await.expect("push");
    worker(&["--delete-call", "POST /v2/Webhook.svc/Delete"]);
    let dead = queue.dead().await.expect("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0].error.clone().unwrap_or_default();
    assert!(
        reason.contains("405") || reason.contains("MethodNotAllowed"),
        "{reason}"
    );
    assert_eq!(sim.stats().accounts["t00"].webhooks.len(), 1);
    // Retried with the default call, the delete is done.
    assert_eq!(queue.retry_dead(None).await.expect("retry"), 1);
    worker(&[]);
    assert!(sim.stats().accounts["t00"].webhooks.is_empty());
    let bad = lsq(
        &name,
        &["worker", "--exit-when-idle", "--delete-call", "PATCH /x"],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
}
