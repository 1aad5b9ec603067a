//! `lsq-webhooks simulate` as a process: it prints its address, serves Create, stops on
//! SIGTERM with exit 0, and refuses bad input with exit 2.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lsq-webhooks");

#[tokio::test]
async fn serves_create_and_stops_on_sigterm() {
    let mut child = Command::new(BIN)
        .args(["simulate", "--listen", "127.0.0.1:0", "--any-account"])
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

    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v2/Webhook.svc/Create"))
        .header("x-LSQ-AccessKey", "ak")
        .header("x-LSQ-SecretKey", "sk")
        .json(&json!({
            "Description": "cli", "URL": "https://hooks.example/x", "Method": "POST",
            "ContentType": "text/plain", "WebhookEvent": "6", "NotifyOnFailure": false,
            "WebhookProperties": null, "CustomHeaders": []
        }))
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
    ] {
        let out = Command::new(BIN).args(&args).output().await.expect("run");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
