//! The status page, loaded in headless Chromium from a real server over a Redis queue: its
//! script runs, reads the API, and the DOM shows the queue's numbers, the throttled tenant
//! and the dead letters with their reasons; and its Retry buttons, clicked through
//! ChromeDriver, put dead jobs back.
//!
//! Chromium and ChromeDriver come from Debian's `chromium` and `chromium-driver` packages
//! (`scripts/test` installs them). In CI (`CI` set) a missing one fails the test; on a developer
//! machine without it the test says so and passes without checking (set `LSQ_CHROMIUM` or
//! `LSQ_CHROMEDRIVER` to use other binaries).

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

/// A browser binary the tests need: `$env`, else `default`; `None` (after saying why) when
/// it is missing and the test may skip. With `CI` set a missing one fails the test instead.
fn browser_binary(env: &str, default: &str, package: &str) -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.into()));
    if path.exists() {
        return Some(path);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(
        !in_ci,
        "CI is set but {} does not exist: scripts/test must install Debian's {package} package",
        path.display()
    );
    eprintln!(
        "SKIPPED: {} not found (apt-get install {package}, or set {env}); \
         this test fails instead of skipping when CI is set",
        path.display()
    );
    None
}

/// The Chromium binary, or `None` when the test may skip.
fn chromium() -> Option<PathBuf> {
    browser_binary("LSQ_CHROMIUM", "/usr/bin/chromium", "chromium")
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

/// A new, empty Redis queue named after `prefix`.
async fn new_queue(prefix: &str) -> Arc<dyn Queue> {
    let config = QueueConfig {
        name: common::unique_queue(prefix),
        ..QueueConfig::default()
    };
    Arc::new(
        RedisQueue::connect(&common::redis_url(), config)
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_queue_in_chromium() {
    let Some(bin) = chromium() else { return };
    let queue = new_queue("page").await;
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
    // Its share, with its limit and why (issue 13).
    let share_row = dom
        .split("<tr data-share-tenant=\"slowco\">")
        .nth(1)
        .unwrap_or_else(|| panic!("slowco not in the shares table: {dom}"));
    let share_row = share_row.split("</tr>").next().unwrap();
    let slowco = status
        .tenants
        .iter()
        .find(|t| t.tenant == "slowco")
        .unwrap();
    assert!(
        share_row.contains(&format!(">{}<", slowco.share)),
        "{share_row}"
    );
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

/// ChromeDriver (Debian's `chromium-driver`), or `None` when the test may skip.
fn chromedriver() -> Option<PathBuf> {
    browser_binary(
        "LSQ_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    )
}

/// A headless Chromium session driven over the W3C WebDriver protocol (plain HTTP and JSON
/// to ChromeDriver), so a test can click and answer prompts as a person would. The driver
/// is killed when this is dropped.
struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`.
    session: String,
    driver: std::process::Child,
    _profile: tempfile::TempDir,
}

/// How long any one wait in the browser may take: a bound on a hang, not a timing assertion.
const BROWSER_WAIT: Duration = Duration::from_secs(60);

impl Browser {
    async fn start(driver_bin: &PathBuf, chromium_bin: &PathBuf) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = serde_json::json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {
                "binary": chromium_bin,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Browser {
            http,
            session: String::new(),
            driver,
            _profile: profile,
        };
        let created = browser
            .call(
                reqwest::Method::POST,
                &format!("{base}/session"),
                capabilities,
            )
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session: {e}"));
        let id = created["sessionId"].as_str().unwrap().to_string();
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// One WebDriver command: its `value`, or the driver's error (`error: message`).
    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        let mut request = self.http.request(method, url);
        // GETs carry no body.
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: serde_json::Value = request
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let value = answer["value"].clone();
        match value.get("error").and_then(serde_json::Value::as_str) {
            Some(error) => Err(format!("{error}: {}", value["message"])),
            None => Ok(value),
        }
    }

    /// A command on this session (`path` after `/session/ID`).
    async fn session_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    /// A POST on this session that must succeed.
    async fn post(&self, path: &str, body: serde_json::Value) {
        if let Err(e) = self.session_call(reqwest::Method::POST, path, body).await {
            panic!("POST {path}: {e}");
        }
    }

    async fn open(&self, url: &str) {
        self.post("/url", serde_json::json!({ "url": url })).await;
    }

    /// Clicks the element `css` selects, once it is there. The page redraws its tables
    /// every 2 s, so an element found just before a redraw is found again.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let found = self
                .session_call(
                    reqwest::Method::POST,
                    "/element",
                    serde_json::json!({"using": "css selector", "value": css}),
                )
                .await;
            let clicked = match found {
                Ok(element) => {
                    let id = element
                        .as_object()
                        .and_then(|o| o.values().next())
                        .and_then(serde_json::Value::as_str)
                        .unwrap()
                        .to_string();
                    self.session_call(
                        reqwest::Method::POST,
                        &format!("/element/{id}/click"),
                        serde_json::json!({}),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match clicked {
                Ok(_) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into the element `css` selects (WebDriver's element value: key
    /// events, as a person typing).
    async fn type_text(&self, css: &str, text: &str) {
        let element = self
            .session_call(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        let id = element
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(serde_json::Value::as_str)
            .unwrap()
            .to_string();
        self.post(
            &format!("/element/{id}/value"),
            serde_json::json!({ "text": text }),
        )
        .await;
    }

    /// How many elements `css` selects now.
    async fn count(&self, css: &str) -> u64 {
        let n = self
            .session_call(
                reqwest::Method::POST,
                "/execute/sync",
                serde_json::json!({
                    "script": "return document.querySelectorAll(arguments[0]).length;",
                    "args": [css],
                }),
            )
            .await
            .unwrap();
        n.as_u64().unwrap()
    }

    /// Answers the prompt the page has opened with `text`.
    async fn answer_prompt(&self, text: &str) {
        let deadline = Instant::now() + BROWSER_WAIT;
        while let Err(e) = self
            .session_call(reqwest::Method::GET, "/alert/text", serde_json::Value::Null)
            .await
        {
            assert!(Instant::now() < deadline, "no prompt opened: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.post("/alert/text", serde_json::json!({ "text": text }))
            .await;
        self.post("/alert/accept", serde_json::json!({})).await;
    }

    /// Waits until the element `css` selects shows `want`.
    async fn wait_for_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + BROWSER_WAIT;
        let mut last = String::new();
        loop {
            let text = self
                .session_call(
                    reqwest::Method::POST,
                    "/execute/sync",
                    serde_json::json!({
                        "script": "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                        "args": [css],
                    }),
                )
                .await;
            if let Ok(serde_json::Value::String(t)) = text {
                if t == want {
                    return;
                }
                last = t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} shows {last:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The dead letters' Retry buttons, clicked in Chromium: the page asks for the API token,
/// says so when it is wrong (and retries nothing), puts the job back with the right one,
/// and "Retry all" then uses the token it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_buttons_put_dead_jobs_back_in_chromium() {
    let (Some(chromium_bin), Some(driver_bin)) = (chromium(), chromedriver()) else {
        return;
    };
    let queue = new_queue("page-retry").await;
    fill(queue.as_ref(), &[("acme", 25)], 1, 3, 0).await;
    let dead_ids = || async {
        let dead = queue.dead().await.unwrap();
        dead.into_iter().map(|j| j.job.0).collect::<Vec<String>>()
    };
    let dead = dead_ids().await;
    assert_eq!(dead.len(), 3);
    let server = Server::start(queue.clone(), ApiLimits::default()).await;
    let browser = Browser::start(&driver_bin, &chromium_bin).await;
    browser.open(&server.url("/")).await;
    let button = |id: &str| format!("tr[data-job=\"{id}\"] button");

    // A wrong token: refused, nothing retried.
    browser.click(&button(&dead[0])).await;
    browser.answer_prompt("not-the-token").await;
    browser.wait_for_text("#retry-result", "wrong token").await;
    assert_eq!(queue.dead().await.unwrap().len(), 3);

    // The right one: that job goes back to its tenant's queue.
    browser.click(&button(&dead[0])).await;
    browser.answer_prompt(ops_support::TOKEN).await;
    browser
        .wait_for_text("#retry-result", "1 job(s) put back in the queue")
        .await;
    assert_eq!(dead_ids().await, dead[1..].to_vec());
    assert_eq!(queue.status().await.unwrap().queued, 1);

    // "Retry all" asks for no token now: the page kept the one that worked.
    browser.click("#retry-all").await;
    browser
        .wait_for_text("#retry-result", "2 job(s) put back in the queue")
        .await;
    assert!(queue.dead().await.unwrap().is_empty());
    assert_eq!(queue.status().await.unwrap().queued, 3);
    drop(browser);
    server.stop().await;
}

/// Job lookup by idempotency key and by a click on a job, with its calls; the jobs table
/// browsed a page at a time with the cursor (issue 15), in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_looked_up_and_browsed_by_page_in_chromium() {
    let (Some(chromium_bin), Some(driver_bin)) = (chromium(), chromedriver()) else {
        return;
    };
    let queue = new_queue("page-jobs").await;
    fill(queue.as_ref(), &[("acme", 25)], 55, 1, 0).await;
    let done: Vec<_> = queue
        .results(None)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.status == lsq_webhooks::job::JobState::Done)
        .collect();
    assert_eq!(done.len(), 55);
    let looked = &done[7];
    for (n, (outcome, status)) in [("transient", Some(503)), ("created", None)]
        .into_iter()
        .enumerate()
    {
        let call = lsq_webhooks::job::Attempt {
            at_ms: 1_796_125_200_000 + n as u64,
            call: "create".into(),
            outcome: outcome.into(),
            http_status: status,
            exception_type: None,
            duration_ms: 40,
            error: status.map(|_| "HTTP 503 Service Unavailable".to_string()),
        };
        queue.note_attempt(&looked.job, &call).await.unwrap();
    }
    let server = Server::start(queue.clone(), ApiLimits::default()).await;
    let browser = Browser::start(&driver_bin, &chromium_bin).await;
    browser.open(&server.url("/")).await;

    // By idempotency key and tenant.
    browser.type_text("#lookup-id", &looked.key).await;
    browser.type_text("#lookup-tenant", "acme").await;
    browser.click("#lookup").await;
    browser.wait_for_text("#job-id", &looked.job.0).await;
    browser.wait_for_text("#job-state", "done").await;
    browser
        .wait_for_text("#job-history tr:nth-child(1) td:nth-child(3)", "transient")
        .await;
    browser
        .wait_for_text("#job-history tr:nth-child(1) td:nth-child(4)", "503")
        .await;
    browser
        .wait_for_text("#job-history tr:nth-child(2) td:nth-child(3)", "created")
        .await;
    // An unknown key says so.
    browser.type_text("#lookup-id", "-nope").await;
    browser.click("#lookup").await;
    browser.wait_for_text("#lookup-result", "no such job").await;

    // The jobs table: dead ones first (one), then done ones, 50 a page, newest first.
    browser.wait_for_text("#dead-count", "1 dead").await;
    assert_eq!(browser.count("#jobs tr[data-job]").await, 1);
    browser.click("#jobs-of option[value=\"done\"]").await;
    browser
        .wait_for_text("#jobs tr:nth-child(50) td:nth-child(3)", "done")
        .await;
    assert_eq!(browser.count("#jobs tr[data-job]").await, 50);
    let newest = &done.last().unwrap().job.0;
    browser
        .wait_for_text("#jobs tr:nth-child(1) td:nth-child(1)", newest)
        .await;
    browser.click("#jobs-next").await;
    browser.wait_for_text("#jobs-page", "page 2").await;
    browser
        .wait_for_text("#jobs tr:nth-child(1) td:nth-child(1)", &done[4].job.0)
        .await;
    assert_eq!(browser.count("#jobs tr[data-job]").await, 5);
    // A click on a job opens it.
    browser
        .click(&format!("tr[data-job=\"{}\"] a.job", done[0].job.0))
        .await;
    browser.wait_for_text("#job-id", &done[0].job.0).await;
    browser.click("#jobs-first").await;
    browser.wait_for_text("#jobs-page", "page 1").await;
    drop(browser);
    server.stop().await;
}

/// The tenants table (issue 15), in Chromium: every tenant's counts and state, filtered and
/// sorted through `GET /v1/tenants`; its Pause and Resume buttons hold and release a tenant,
/// and the queue's button pauses and resumes the whole queue, each showing who, when and
/// why. No tenant key reaches the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenants_table_and_the_pause_buttons_in_chromium() {
    let (Some(chromium_bin), Some(driver_bin)) = (chromium(), chromedriver()) else {
        return;
    };
    let queue = new_queue("page-tenants").await;
    fill(queue.as_ref(), &[("acme", 25)], 2, 0, 1).await;
    fill(queue.as_ref(), &[("beta", 25)], 0, 1, 0).await;
    let server = Server::start(queue.clone(), ApiLimits::default()).await;
    let browser = Browser::start(&driver_bin, &chromium_bin).await;
    browser.open(&server.url("/")).await;
    let col = |tenant: &str, n: u32| format!("tr[data-tenant-row=\"{tenant}\"] td:nth-child({n})");

    browser
        .wait_for_text("#tenants-count", "2 registered")
        .await;
    browser.wait_for_text(&col("acme", 2), "waiting").await;
    browser.wait_for_text(&col("acme", 3), "1").await;
    browser.wait_for_text(&col("acme", 5), "2").await;
    browser.wait_for_text(&col("beta", 2), "stuck").await;
    browser.wait_for_text(&col("beta", 6), "1").await;
    // Sorted by name, then by dead jobs (most first), then only the stuck ones.
    browser
        .wait_for_text("#tenants tr:nth-child(1) td:nth-child(1)", "acme")
        .await;
    browser.click("#tenants-sort option[value=\"dead\"]").await;
    browser
        .wait_for_text("#tenants tr:nth-child(1) td:nth-child(1)", "beta")
        .await;
    browser.click("#tenants-sort option[value=\"name\"]").await;
    browser
        .click("#tenants-filter option[value=\"stuck\"]")
        .await;
    browser
        .wait_for_text("#tenants tr:nth-child(1) td:nth-child(1)", "beta")
        .await;
    assert_eq!(browser.count("#tenants tr[data-tenant-row]").await, 1);
    browser.click("#tenants-filter option[value=\"\"]").await;
    browser
        .wait_for_text("#tenants tr:nth-child(1) td:nth-child(1)", "acme")
        .await;

    // Pause acme with a reason: the page asks for the token, the tenant is held.
    browser
        .type_text("#pause-reason", "the customer asked")
        .await;
    browser
        .click("tr[data-tenant-row=\"acme\"] button.tenant-toggle")
        .await;
    browser.answer_prompt(ops_support::TOKEN).await;
    browser.wait_for_text("#steer-result", "acme paused").await;
    let hold = queue.tenant_hold("acme").await.unwrap().expect("acme held");
    assert_eq!(
        (hold.kind, hold.reason.as_str(), hold.by.as_deref()),
        (
            lsq_webhooks::queue::HoldKind::Paused,
            "the customer asked",
            Some("api")
        )
    );
    browser
        .wait_for_text(&col("acme", 2), "held (paused)")
        .await;
    let why = format!(
        "the customer asked (by api, since {})",
        lsq_webhooks::ops::status::utc_time(hold.since_ms, false)
    );
    browser.wait_for_text(&col("acme", 8), &why).await;
    browser
        .wait_for_text(
            "tr[data-tenant-row=\"acme\"] button.tenant-toggle",
            "Resume",
        )
        .await;
    // Resume: the kept token, no prompt.
    browser
        .click("tr[data-tenant-row=\"acme\"] button.tenant-toggle")
        .await;
    browser.wait_for_text("#steer-result", "acme resumed").await;
    assert_eq!(queue.tenant_hold("acme").await.unwrap(), None);
    browser.wait_for_text(&col("acme", 2), "waiting").await;

    // The whole queue.
    browser.wait_for_text("#queue-state", "running").await;
    browser.click("#queue-toggle").await;
    browser.wait_for_text("#steer-result", "queue paused").await;
    let pause = queue.queue_pause().await.unwrap().expect("queue paused");
    assert_eq!(
        (pause.reason.as_str(), pause.by.as_deref()),
        ("the customer asked", Some("api"))
    );
    assert!(!matches!(queue.dispatch().await.unwrap(), Dispatch::Job(_)));
    let state = format!(
        "PAUSED since {} by api: the customer asked (no job is dispatched)",
        lsq_webhooks::ops::status::utc_time(pause.since_ms, false)
    );
    browser.wait_for_text("#queue-state", &state).await;
    browser.wait_for_text("#queue-toggle", "Resume queue").await;
    browser.click("#queue-toggle").await;
    browser
        .wait_for_text("#steer-result", "queue resumed")
        .await;
    assert_eq!(queue.queue_pause().await.unwrap(), None);
    browser.wait_for_text("#queue-state", "running").await;

    // A rare state past the first 1,000 tenants a filtered page examines: the page reads on.
    let many: Vec<_> = (0..1200)
        .map(|n| ops_support::tenant(&format!("t{n:04}"), 25))
        .collect();
    queue.put_tenants(&many).await.unwrap();
    fill(queue.as_ref(), &[("zeta", 25)], 0, 1, 0).await;
    browser
        .click("#tenants-filter option[value=\"stuck\"]")
        .await;
    browser.wait_for_text(&col("zeta", 2), "stuck").await;
    assert_eq!(browser.count("#tenants tr[data-tenant-row]").await, 2);

    let dom = browser
        .session_call(
            reqwest::Method::POST,
            "/execute/sync",
            serde_json::json!({"script": "return document.documentElement.outerHTML;", "args": []}),
        )
        .await
        .unwrap();
    let dom = dom.as_str().unwrap();
    for secret in ["ak-acme", "sk-acme", "ak-beta", "sk-beta"] {
        assert!(!dom.contains(secret), "{secret} in the page");
    }
    drop(browser);
    server.stop().await;
}
