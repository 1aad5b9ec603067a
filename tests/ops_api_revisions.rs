//! Issue 18 over HTTP: `POST /v1/jobs` takes update and delete lines, `POST /v1/sync`
//! answers the plan and applies it unless `dry_run`; against a real Redis queue, the
//! simulator, and a worker pool in this process.

mod common;
mod ops_support;
mod revision_support;
mod worker_support;

use std::time::Duration;

use lsq_webhooks::ops::api::ApiLimits;
use ops_support::{Server, TOKEN};
use reqwest::StatusCode;
use revision_support::*;
use serde_json::{Value, json};
use worker_support::*;

async fn post(
    server: &Server,
    path: &str,
    token: Option<&str>,
    lines: &[Value],
) -> (StatusCode, Value) {
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    let mut request = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/x-ndjson")
        .body(body.join("\n"));
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let r = request.send().await.expect("answer");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn url(n: usize, v: u32) -> String {
    format!("https://hooks.example/t00/{n}/v{v}")
}

fn line(n: usize, v: u32, secret: &str) -> Value {
    json!({"tenant": "t00", "webhook": hook("t00", n, &url(n, v), secret)})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_take_updates_and_deletes_and_sync_plans_and_applies() {
    let nowhere = url::Url::parse("http://127.0.0.1:1").expect("url");
    let sim = start_sim(sim_config(
        &tenants(&nowhere, 1, &[25]),
        Duration::from_secs(5),
    ))
    .await;
    let ts = tenants(&sim.server.base_url(), 1, &[25]);
    let queue = queue(Backend::Redis, "api-rev", Default::default()).await;
    queue.put_tenants(&ts).await.expect("tenants");
    let server = Server::start(queue.clone(), ApiLimits::default()).await;

    let (status, answer) = post(
        &server,
        "/v1/jobs",
        Some(TOKEN),
        &[line(0, 1, "hv-a"), line(1, 1, "hv-a"), line(2, 1, "hv-a")],
    )
    .await;
    assert_eq!(
        (status, answer["enqueued"].clone()),
        (StatusCode::ACCEPTED, json!(3)),
        "{answer}"
    );
    drain(queue.clone()).await;

    // An update (the same derived key, another URL) and a delete line.
    let key2 = create("t00", hook("t00", 2, &url(2, 1), "hv-a")).key;
    let delete_line = json!({"tenant": "t00", "key": key2, "delete": true});
    let (status, answer) = post(
        &server,
        "/v1/jobs",
        Some(TOKEN),
        &[line(0, 2, "hv-a"), line(1, 1, "hv-a"), delete_line.clone()],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(
        (answer["enqueued"].clone(), answer["duplicate"].clone()),
        (json!(2), json!(1)),
        "{answer}"
    );
    // A delete with a body is refused with its line and field, and nothing is enqueued.
    let bad = json!({"tenant": "t00", "key": "k", "delete": true, "webhook": hook("t00", 3, &url(3, 1), "hv-a")});
    let (status, answer) = post(&server, "/v1/jobs", Some(TOKEN), &[line(4, 1, "hv-a"), bad]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let text = answer.to_string();
    assert!(
        text.contains("\"line\":2") && text.contains("\"field\":\"webhook\""),
        "{text}"
    );
    assert!(!text.contains("hv-a"), "{text}");
    drain(queue.clone()).await;
    let state_now = || {
        vec![
            create("t00", hook("t00", 0, &url(0, 2), "hv-a")),
            create("t00", hook("t00", 1, &url(1, 1), "hv-a")),
        ]
    };
    assert_sim_holds(&sim.stats(), &desired(&state_now()));

    // Sync: hook 1 rotates its header value, hook 5 is new; hook 0 is left out (kept
    // without prune). A dry run changes nothing; it needs the token.
    let desired_lines = [line(1, 1, "hv-b"), line(5, 1, "hv-a")];
    let (status, _) = post(&server, "/v1/sync?dry_run=true", None, &desired_lines).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let before = sim.stats().accounts["t00"].webhooks.clone();
    let (status, plan) = post(
        &server,
        "/v1/sync?dry_run=true",
        Some(TOKEN),
        &desired_lines,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{plan}");
    let t = &plan["tenants"][0];
    assert_eq!(t["tenant"], json!("t00"), "{plan}");
    assert_eq!(t["create"].as_array().map(Vec::len), Some(1), "{plan}");
    assert_eq!(
        t["update"][0]["fields"],
        json!(["header x-api-key value"]),
        "{plan}"
    );
    assert_eq!(t["not_in_file"], json!(1), "{plan}");
    assert_eq!(
        (plan["dry_run"].clone(), plan["enqueued"].clone()),
        (json!(true), json!(0))
    );
    assert!(!plan.to_string().contains("hv-"), "{plan}");
    assert_eq!(sim.stats().accounts["t00"].webhooks, before);

    let (status, plan) = post(&server, "/v1/sync?prune=true", Some(TOKEN), &desired_lines).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{plan}");
    assert_eq!(
        plan["enqueued"],
        json!(3),
        "create, update, and the pruned delete: {plan}"
    );
    drain(queue.clone()).await;
    let synced = vec![
        create("t00", hook("t00", 1, &url(1, 1), "hv-b")),
        create("t00", hook("t00", 5, &url(5, 1), "hv-a")),
    ];
    assert_sim_holds(&sim.stats(), &desired(&synced));
    server.stop().await;
}
