//! Secret hygiene over a whole run, through the real binary at `RUST_LOG=debug`: the
//! simulator, `tenants import`/`list`, `enqueue` (with an invalid line), a worker with
//! faults, rate limits and a tenant whose keys are refused, `status`, `results`, `dead list`,
//! the worker's `/metrics`, and `serve` with every route and the status page. Every byte
//! any of them prints or answers is collected, and no access key, secret key, custom header
//! value or API token may appear in it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lsq-webhooks");

/// A distinctive secret: a marker and 32 random hex digits.
fn secret(kind: &str) -> String {
    format!("{kind}-{}", uuid::Uuid::new_v4().simple())
}

/// Everything captured, by where it came from.
#[derive(Default)]
struct Captured(BTreeMap<String, String>);

impl Captured {
    fn add(&mut self, source: impl Into<String>, text: impl Into<String>) {
        let source = source.into();
        let text = text.into();
        self.0
            .entry(source)
            .and_modify(|t| t.push_str(&text))
            .or_insert(text);
    }

    /// Runs a command to its end (bounded), capturing both streams; returns stdout.
    fn run(&mut self, name: &str, cmd: &mut Command) -> String {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (out, err, status) = Running::new(child).wait(Duration::from_secs(120));
        self.add(format!("{name} stdout"), out.clone());
        self.add(format!("{name} stderr"), err.clone());
        assert!(status, "{name} failed:\n{out}\n{err}");
        out
    }
}

/// One of a child's output streams.
type Pipe = Box<dyn Read + Send>;

/// A process whose output is read on threads as it runs.
struct Running {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn new(mut child: Child) -> Running {
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let pipes: [(Option<Pipe>, Arc<Mutex<String>>); 2] = [
            (
                child.stdout.take().map(|p| Box::new(p) as Pipe),
                out.clone(),
            ),
            (
                child.stderr.take().map(|p| Box::new(p) as Pipe),
                err.clone(),
            ),
        ];
        for (pipe, sink) in pipes {
            let Some(mut pipe) = pipe else { continue };
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }));
        }
        Running {
            child,
            out,
            err,
            readers,
        }
    }

    fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits for the process to end (killing it after `limit`), then returns its output
    /// and whether it succeeded.
    fn wait(mut self, limit: Duration) -> (String, String, bool) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let out = self.out.lock().unwrap().clone();
        let err = self.err.lock().unwrap().clone();
        (out, err, status)
    }

    /// SIGTERM, then [`Running::wait`].
    fn stop(self) -> (String, String, bool) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        self.wait(Duration::from_secs(60))
    }
}

fn lsq(queue: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("REDIS_URL", common::redis_url())
        .env("LSQ_QUEUE", queue)
        .env("RUST_LOG", "debug")
        .env_remove("LSQ_API_TOKEN")
        .stdin(Stdio::null());
    c
}

/// Waits (bounded) until `url` answers at all.
async fn wait_up(http: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if http.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

/// A Create body whose custom headers carry `header_secret`.
fn webhook(n: usize, header_secret: &str) -> serde_json::Value {
    serde_json::json!({
        "Description": format!("secret test hook {n}"),
        "URL": format!("https://hooks.example.com/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": [
            {"Key": "x-api-key", "Value": header_secret},
            {"Key": "Authorization", "Value": format!("Bearer {header_secret}")}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_anywhere_in_a_full_run_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    let queue = common::unique_queue("secrets");
    let token = secret("APITOKEN");
    let mut secrets: Vec<String> = vec![token.clone()];
    let mut captured = Captured::default();
    let http = reqwest::Client::new();

    // Tenants: acme (the simulator allows it fewer calls than the queue thinks: rate-limit
    // answers), beta (no api_base: discovered by `tenants import --discover`), and
    // wrongkeys (keys the simulator does not know: 401, UserByAccessKey.Get refuses them
    // too, and the tenant is held).
    let mut keys = BTreeMap::new();
    for t in ["acme", "beta", "wrongkeys"] {
        let (ak, sk) = (secret("ACCESSKEY"), secret("SECRETKEY"));
        secrets.push(ak.clone());
        secrets.push(sk.clone());
        keys.insert(t, (ak, sk));
    }
    let sim_csv = dir.path().join("sim-tenants.csv");
    std::fs::write(
        &sim_csv,
        format!(
            "tenant,api_base,access_key,secret_key,limit\n\
             acme,http://127.0.0.1:9,{},{},3\n\
             beta,http://127.0.0.1:9,{},{},25\n",
            keys["acme"].0, keys["acme"].1, keys["beta"].0, keys["beta"].1
        ),
    )
    .unwrap();
    let sim = Running::new(
        lsq(&queue)
            .args(["simulate", "--listen", "127.0.0.1:0", "--tenants"])
            .arg(&sim_csv)
            .args([
                "--seed",
                "7",
                "--error-rate",
                "0.1",
                "--created-then-error-rate",
                "0.1",
                "--reset-rate",
                "0.05",
                "--latency-ms",
                "5",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut sim_base = String::new();
    for _ in 0..600 {
        if let Some(line) = sim
            .stdout()
            .lines()
            .find(|l| l.starts_with("listening on "))
        {
            sim_base = line.trim_start_matches("listening on ").trim().to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!sim_base.is_empty(), "the simulator did not start");

    let tenants_csv = dir.path().join("tenants.csv");
    std::fs::write(
        &tenants_csv,
        format!(
            "tenant,api_base,access_key,secret_key,limit\n\
             acme,{sim_base},{},{},5\n\
             beta,,{},{},25\n\
             wrongkeys,{sim_base},{},{},25\n",
            keys["acme"].0,
            keys["acme"].1,
            keys["beta"].0,
            keys["beta"].1,
            keys["wrongkeys"].0,
            keys["wrongkeys"].1
        ),
    )
    .unwrap();
    let imported = captured.run(
        "tenants import",
        lsq(&queue)
            .args([
                "tenants",
                "import",
                "--discover",
                "--discovery-url",
                &sim_base,
            ])
            .arg(&tenants_csv),
    );
    assert!(imported.contains("discovered 1 host(s)"), "{imported}");
    let listed = captured.run("tenants list", lsq(&queue).args(["tenants", "list"]));
    assert!(
        listed.contains(&format!("beta\t25\t{sim_base}")),
        "{listed}"
    );
    captured.run(
        "tenants pause",
        lsq(&queue).args([
            "tenants", "pause", "beta", "--reason", "checking", "--by", "ops",
        ]),
    );
    captured.run("status (beta paused)", lsq(&queue).arg("status"));
    captured.run(
        "status --tenants (beta paused)",
        lsq(&queue).args(["status", "--tenants"]),
    );
    captured.run(
        "status --tenants --json",
        lsq(&queue).args(["status", "--tenants", "--json"]),
    );
    captured.run(
        "pause",
        lsq(&queue).args(["pause", "--reason", "checking", "--by", "ops"]),
    );
    captured.run("status (queue paused)", lsq(&queue).arg("status"));
    captured.run("resume", lsq(&queue).arg("resume"));
    captured.run(
        "tenants resume",
        lsq(&queue).args(["tenants", "resume", "beta"]),
    );

    // Jobs, each with its own header secrets; one invalid line carries one too.
    let mut lines = Vec::new();
    for n in 0..27 {
        let tenant = ["acme", "beta", "wrongkeys"][n % 3];
        let h = secret("HEADERVALUE");
        secrets.push(h.clone());
        lines.push(serde_json::json!({"tenant": tenant, "webhook": webhook(n, &h)}).to_string());
    }
    let h = secret("HEADERVALUE");
    secrets.push(h.clone());
    let mut bad = webhook(99, &h);
    bad["URL"] = "not a url".into();
    lines.push(serde_json::json!({"tenant": "acme", "webhook": bad}).to_string());
    let jobs_file = dir.path().join("jobs.jsonl");
    std::fs::write(&jobs_file, lines.join("\n") + "\n").unwrap();
    let out = captured.run(
        "enqueue",
        lsq(&queue)
            .args(["enqueue", "--skip-invalid"])
            .arg(&jobs_file),
    );
    assert!(out.contains("enqueued 27"), "{out}");

    // The worker, with its metrics port, until the queue is idle.
    let metrics_port = common::free_port();
    let worker = Running::new(
        lsq(&queue)
            .args([
                "worker",
                "--concurrency",
                "8",
                "--retry-base-ms",
                "50",
                "--retry-cap-secs",
                "1",
                // The simulator answers in 5 ms: a short settle keeps the run quick.
                "--reconcile-settle-ms",
                "300",
                "--discovery-url",
                &sim_base,
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut idle = false;
    for round in 0..600 {
        let out = captured.run("status --json", lsq(&queue).args(["status", "--json"]));
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        // wrongkeys' 9 jobs wait, held; everything else is done.
        let held: u64 = s["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "held")
            .map(|t| t["waiting"].as_u64().unwrap())
            .sum();
        if held == 9 && s["queued"] == 9 && s["scheduled"] == 0 && s["running"] == 0 {
            idle = true;
            break;
        }
        if round == 3 {
            captured.run("status (during the run)", lsq(&queue).arg("status"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(idle, "the queue never drained");
    let metrics_base = format!("http://127.0.0.1:{metrics_port}");
    for path in ["/metrics", "/healthz"] {
        let body = http
            .get(format!("{metrics_base}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        captured.add(format!("worker GET {path}"), body);
    }
    let (out, err, ok) = worker.stop();
    captured.add("worker stdout", out);
    captured.add("worker stderr", err.clone());
    assert!(ok, "worker failed: {err}");

    captured.run("status", lsq(&queue).arg("status"));
    let results = captured.run("results", lsq(&queue).arg("results"));
    captured.run(
        "results csv",
        lsq(&queue).args(["results", "--format", "csv"]),
    );
    captured.run("dead list", lsq(&queue).args(["dead", "list"]));
    let listed = captured.run(
        "tenants list (after)",
        lsq(&queue).args(["tenants", "list"]),
    );
    assert!(
        listed.contains("wrongkeys") && listed.contains("keys refused by LeadSquared (401)"),
        "{listed}"
    );

    // serve: every route, good and bad writes, the page.
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let serve = Running::new(
        lsq(&queue)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("LSQ_API_TOKEN", &token)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_up(&http, &format!("{base}/healthz")).await;
    let first_job = results
        .lines()
        .next()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v["job"].as_str().map(String::from))
        .unwrap();
    for path in [
        "/".to_string(),
        "/page.js".into(),
        "/openapi.json".into(),
        "/v1/status".into(),
        "/v1/dead".into(),
        "/v1/tenants".into(),
        "/v1/tenants?filter=held".into(),
        format!("/v1/jobs/{first_job}"),
        "/metrics".into(),
        "/healthz".into(),
        "/readyz".into(),
        "/no-such-route".into(),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        let headers = format!("{:?}", r.headers());
        captured.add(
            format!("serve GET {path}"),
            headers + &r.text().await.unwrap(),
        );
    }
    let h = secret("HEADERVALUE");
    secrets.push(h.clone());
    let good = serde_json::json!({"tenant": "beta", "webhook": webhook(200, &h)});
    // Invalid jobs whose secrets sit where secrets go (custom header values): a bad URL,
    // a header without a key, too many headers, and a header value that is not a string.
    let mut bad_url = webhook(201, &h);
    bad_url["URL"] = "ftp://example.com/x".into();
    let mut no_key = webhook(202, &h);
    no_key["CustomHeaders"] = serde_json::json!([{"Key": "", "Value": h}]);
    let mut too_many = webhook(203, &h);
    too_many["CustomHeaders"] = (0..11)
        .map(|i| serde_json::json!({"Key": format!("k{i}"), "Value": format!("{h}")}))
        .collect();
    let mut extra = webhook(204, &h);
    extra["CustomHeaders"] = serde_json::json!([{"Key": "x", "Value": h, "Other": h}]);
    let bad = serde_json::json!([
        {"tenant": "beta", "webhook": bad_url},
        {"tenant": "beta", "webhook": no_key},
        {"tenant": "beta", "webhook": too_many},
        {"tenant": "beta", "webhook": extra},
        {"tenant": "nobody", "webhook": webhook(205, &h)},
    ]);
    let wrong_token = format!("Bearer {}", secret("WRONGTOKEN"));
    for (name, auth, body) in [
        ("good job", format!("Bearer {token}"), good.to_string()),
        ("bad jobs", format!("Bearer {token}"), bad.to_string()),
        ("wrong token", wrong_token, good.to_string()),
    ] {
        let r = http
            .post(format!("{base}/v1/jobs"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if name == "bad jobs" {
            assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{text}");
        }
        captured.add(format!("serve POST /v1/jobs ({name})"), text);
    }
    let r = http
        .post(format!("{base}/v1/dead/retry"))
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    captured.add("serve POST /v1/dead/retry", r.text().await.unwrap());
    if std::path::Path::new("/usr/bin/chromium").exists() {
        let profile = tempfile::tempdir().unwrap();
        let mut chromium = Command::new("/usr/bin/chromium");
        chromium
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
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("{base}/"));
        let dom = Running::new(
            chromium
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
        .wait(Duration::from_secs(120));
        assert!(dom.0.contains("id=\"done\""), "{}", dom.0);
        captured.add("the page's DOM in Chromium", dom.0);
    }
    let (out, err, ok) = serve.stop();
    captured.add("serve stdout", out);
    captured.add("serve stderr", err);
    assert!(ok);
    let (out, err, _) = sim.stop();
    captured.add("simulate stdout", out);
    captured.add("simulate stderr", err);

    // The run did what it should, at debug level, so there was something to leak.
    let worker_log = &captured.0["worker stderr"];
    assert!(worker_log.contains("DEBUG"), "not at debug level");
    assert!(captured.0["results stdout"].contains("\"done\""));
    // And the check itself finds a secret where one is (the job file).
    let job_text = std::fs::read_to_string(&jobs_file).unwrap();
    assert!(secrets.iter().any(|s| job_text.contains(s.as_str())));

    // For a look at what was checked: LSQ_SECRETS_DUMP=DIR writes each output to a file.
    if let Ok(dump) = std::env::var("LSQ_SECRETS_DUMP") {
        std::fs::create_dir_all(&dump).unwrap();
        for (source, text) in &captured.0 {
            let name: String = source
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            std::fs::write(std::path::Path::new(&dump).join(name + ".txt"), text).unwrap();
        }
    }
    let mut leaks = Vec::new();
    for (source, text) in &captured.0 {
        for s in &secrets {
            // The whole secret, or its random part alone.
            let random = s.rsplit('-').next().unwrap();
            if text.contains(s.as_str()) || text.contains(random) {
                let at = text.find(random).unwrap_or(0);
                let context: String = text[at.saturating_sub(120)..].chars().take(240).collect();
                leaks.push(format!("{source}: {}…: {context}", &s[..s.len().min(14)]));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    eprintln!(
        "checked {} outputs, {} bytes, for {} secrets",
        captured.0.len(),
        captured.0.values().map(String::len).sum::<usize>(),
        secrets.len()
    );
}

/// Issue 16: a Redis password in a Sentinel URL (the servers' and the sentinels' own) appears
/// in no output at debug level: not when the URL is malformed, not when no sentinel answers,
/// not when a server refuses it.
#[test]
fn a_redis_password_in_a_sentinel_url_appears_nowhere() {
    let set = common::sentinel::SentinelSet::start("secret-main");
    let password = secret("redis-password");
    let sentinel_password = secret("sentinel-password");
    let hosts = set.url();
    let hosts = hosts
        .trim_start_matches("redis+sentinel://")
        .trim_end_matches("/secret-main");
    let dead = format!("127.0.0.1:{}", common::free_port());
    let urls = [
        // The servers have no password: AUTH is refused.
        format!("redis+sentinel://app:{password}@{hosts}/secret-main"),
        // The sentinels have none either.
        format!("redis+sentinel://{hosts}/secret-main?sentinel_password={sentinel_password}"),
        format!("redis+sentinel://:{password}@{dead}/secret-main"),
        format!("redis+sentinel://:{password}@{hosts}/secret-main?bogus=1"),
        format!("redis+sentinel://:{password}@{hosts}"),
    ];
    let mut captured = Captured::default();
    for (i, url) in urls.iter().enumerate() {
        for args in [&["status"][..], &["worker", "--exit-when-idle"][..]] {
            // A worker waits for a store that is unavailable (no sentinel answering),
            // saying so every few seconds: what it said in its first 5 s is checked.
            let mut child = Command::new(BIN)
                .args(["--redis", url])
                .args(args)
                .env("RUST_LOG", "debug")
                .env_remove("REDIS_URL")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            assert!(!out.status.success(), "url {i} {args:?} succeeded");
            captured.add(
                format!("url {i} {args:?}"),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
        }
    }
    for (source, text) in &captured.0 {
        assert!(!text.is_empty(), "{source}: said nothing");
        for s in [&password, &sentinel_password] {
            assert!(
                !text.contains(s.as_str()),
                "{source} leaked a password:\n{text}"
            );
        }
    }
}

/// Every command path of the binary (`[]`, `["tenants"]`, `["tenants", "import"]`, ...),
/// from clap's own description of the command line, so a new command is checked too.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(path.clone());
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            walk(sub, p, out);
        }
    }
    let mut out = Vec::new();
    walk(
        &<lsq_webhooks::cli::Cli as clap::CommandFactory>::command(),
        Vec::new(),
        &mut out,
    );
    out
}

#[test]
fn no_command_help_shows_a_secret_from_the_environment() {
    let password = secret("redis-password");
    let token = secret("api-token");
    let paths = command_paths();
    assert!(paths.len() > 10, "{paths:?}");
    for path in paths {
        for flag in ["--help", "-h"] {
            let out = Command::new(BIN)
                .args(&path)
                .arg(flag)
                .env(
                    "REDIS_URL",
                    format!("redis://:{password}@db.internal:6379/0"),
                )
                .env("LSQ_API_TOKEN", &token)
                .env("LSQ_QUEUE", "shown-is-fine")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{path:?} {flag}: {text}");
            assert!(!text.is_empty(), "{path:?} {flag}");
            for s in [&password, &token] {
                assert!(
                    !text.contains(s.as_str()),
                    "{path:?} {flag} shows a secret:\n{text}"
                );
            }
            assert!(!text.contains("db.internal"), "{path:?} {flag}:\n{text}");
        }
    }
}
