//! `lsq-webhooks simulate` as a process: it prints its address, serves Create, stops on
//! SIGTERM with exit 0, takes the other client and the daily quota from its flags, and
//! refuses bad input with exit 2.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lsq-webhooks");

/// Starts `simulate` with these arguments; returns the process and its base URL.
async fn spawn_simulator(args: &[&str]) -> (tokio::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    // A bound on a hang, not a timing assertion.
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the simulator printed its address")
        .expect("read")
        .expect("a line");
    let base = line
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();
    (child, base)
}

fn create_body(description: &str) -> Value {
    json!({
        "Description": description, "URL": "https://hooks.example/x", "Method": "POST",
        "ContentType": "text/plain", "WebhookEvent": "6", "NotifyOnFailure": false,
        "WebhookProperties": null, "CustomHeaders": []
    })
}

#[tokio::test]
async fn serves_create_and_stops_on_sigterm() {
    let (mut child, base) =
        spawn_simulator(&["simulate", "--listen", "127.0.0.1:0", "--any-account"]).await;
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v2/Webhook.svc/Create"))
        .header("x-LSQ-AccessKey", "ak")
        .header("x-LSQ-SecretKey", "sk")
        .json(&create_body("cli"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["Status"], json!("Success"), "{answer}");

    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("exited after SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn other_client_and_daily_quota_come_from_the_flags() {
    let (_child, base) = spawn_simulator(&[
        "simulate",
        "--listen",
        "127.0.0.1:0",
        "--any-account",
        "--other-client-calls",
        "4",
        "--daily-limit",
        "1",
    ])
    .await;
    let create = || async {
        let response = reqwest::Client::new()
            .post(format!("{base}/v2/Webhook.svc/Create"))
            .header("x-LSQ-AccessKey", "ak-flags")
            .header("x-LSQ-SecretKey", "sk")
            .json(&create_body("flags"))
            .send()
            .await
            .expect("answer");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("json");
        (status, answer)
    };
    // The quota of 1 is spent by our first call, or by the other client before it.
    let mut last = create().await;
    if last.0 == 200 {
        last = create().await;
    }
    assert_eq!(last.0, 429, "{last:?}");
    assert_eq!(
        last.1["ExceptionMessage"],
        json!("API calls exceeded the limit of 1 in 86400 second(s)")
    );
    let stats: Value = reqwest::get(format!("{base}/_sim/stats"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    let accounts = stats["accounts"].as_object().expect("accounts");
    assert_eq!(accounts.len(), 1, "{stats}");
    let acc = accounts.values().next().expect("one account");
    assert_eq!(acc["other_client"]["calls_per_window"], json!(4), "{acc}");
    assert_eq!(acc["daily_limit"], json!(1), "{acc}");
    assert_eq!(acc["calls_today"], json!(1), "{acc}");
}

#[tokio::test]
async fn bad_input_exits_2() {
    for args in [
        vec!["simulate", "--listen", "127.0.0.1:0"],
        vec![
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--tenants",
            "/nonexistent/tenants.csv",
        ],
        vec![
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--any-account",
            "--error-rate",
            "2",
        ],
        vec!["--other-client-calls-for", "acme"],
        vec!["--daily-limit", "0"],
        vec!["--day-ms", "0"],
        vec!["--other-client-calls", "20000"],
    ] {
        // Bare flags are added to an otherwise valid command line.
        let args: Vec<&str> = if args[0] == "simulate" {
            args
        } else {
            ["simulate", "--listen", "127.0.0.1:0", "--any-account"]
                .into_iter()
                .chain(args)
                .collect()
        };
        let out = Command::new(BIN).args(&args).output().await.expect("run");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--region` serves another region on another address, `--account-region` puts an account
/// there: Create on the first region's host answers 401, on its own 200; UserByAccessKey.Get
/// names its own host on both. Bad region flags are bad input.
#[tokio::test]
async fn regions_come_from_the_flags() {
    let dir = tempfile::tempdir().expect("dir");
    let csv = dir.path().join("tenants.csv");
    std::fs::write(
        &csv,
        "tenant,api_base,access_key,secret_key\neuro,,ak-e,sk-e\n",
    )
    .expect("csv");
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--region", "eu=0"])
        .args(["--account-region", "euro=eu", "--tenants"])
        .arg(&csv)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("a line")
            .expect("read")
            .expect("a line")
    };
    let home = next()
        .await
        .strip_prefix("listening on ")
        .expect("home")
        .to_string();
    let eu = next()
        .await
        .strip_prefix("region eu listening on ")
        .expect("eu")
        .to_string();
    // Then the discovery URL to give the worker: the simulator's own address.
    assert_eq!(
        next().await,
        format!("discovery: --discovery-url {home} (or LSQ_DISCOVERY_URL)")
    );
    let http = reqwest::Client::new();
    let create = |base: &str| {
        http.post(format!("{base}/v2/Webhook.svc/Create"))
            .header("x-LSQ-AccessKey", "ak-e")
            .header("x-LSQ-SecretKey", "sk-e")
            .json(&create_body("region"))
            .send()
    };
    assert_eq!(create(&home).await.expect("answer").status(), 401);
    assert_eq!(create(&eu).await.expect("answer").status(), 200);
    for base in [&home, &eu] {
        let who: Value = http
            .get(format!("{base}/v2/Authentication.svc/UserByAccessKey.Get"))
            .header("x-LSQ-AccessKey", "ak-e")
            .header("x-LSQ-SecretKey", "sk-e")
            .send()
            .await
            .expect("answer")
            .json()
            .await
            .expect("json");
        assert_eq!(who["LSQCommonServiceURLs"]["api"], json!(eu), "{who}");
    }
    drop(child);
    for bad in [
        &["--region", "default=0"][..],
        &["--region", "eu"][..],
        &["--account-region", "euro=mars"][..],
    ] {
        let out = std::process::Command::new(BIN)
            .args(["simulate", "--listen", "127.0.0.1:0", "--any-account"])
            .args(bad)
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
}
