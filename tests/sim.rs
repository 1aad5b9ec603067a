//! The LeadSquared simulator over real HTTP (port 0), driven by the project's own client and
//! by raw requests where the exact answer shape matters; plus the sliding window on tokio's
//! paused clock through the router alone.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use futures::future::join_all;
use lsq_webhooks::leadsquared::{CallError, Client, ClientConfig, CreateWebhook};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::sim::{
    self, AccountSource, Faults, RateLimitStyle, SimConfig, SimServer, SimState, account_label,
};
use lsq_webhooks::tenant::Tenant;
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};
use tower::ServiceExt;

struct Running {
    server: SimServer,
    _stop: DropGuard,
}

async fn start(config: SimConfig) -> Running {
    let state = SimState::new(config).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let server = sim::serve(listener, state, stop.clone()).expect("serve");
    Running {
        server,
        _stop: stop.drop_guard(),
    }
}

fn tenant(server: &SimServer, name: &str, access: &str, limit: u32) -> Tenant {
    Tenant {
        name: name.into(),
        api_base: Some(server.base_url()),
        access_key: Secret::new(access),
        secret_key: Secret::new(format!("{access}-secret")),
        limit,
        reserve: 0,
        daily_limit: None,
    }
}

fn client() -> Client {
    Client::new(ClientConfig {
        timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    })
    .expect("client")
}

fn webhook(description: &str) -> CreateWebhook {
    CreateWebhook::from_value(&body(description)).expect("valid")
}

fn body(description: &str) -> Value {
    json!({
        "Description": description,
        "URL": "https://hooks.example/in",
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": true,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": "hv-do-not-show"}]
    })
}

/// A raw POST with header auth; returns status and parsed body.
async fn raw_post(server: &SimServer, path: &str, access: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.base_url().join(path).expect("url"))
        .header("x-LSQ-AccessKey", access)
        .header("x-LSQ-SecretKey", format!("{access}-secret"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn valid_body_gets_success_and_an_id() {
    let sim = start(SimConfig::default()).await;
    let (status, answer) = raw_post(
        &sim.server,
        "/v2/Webhook.svc/Create",
        "ak-1",
        &body("first").to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["Status"], json!("Success"));
    let id = answer["Message"]["Id"].as_str().expect("an Id");
    assert!(!id.is_empty());
    let obj = answer.as_object().expect("object");
    assert_eq!(obj.len(), 2, "{answer}");

    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-1")];
    assert_eq!(acc.webhooks.len(), 1);
    assert_eq!(acc.webhooks[0].id, id);
    assert_eq!(acc.webhooks[0].description, "first");
    assert_eq!(acc.webhooks[0].event, 3);
    assert_eq!(acc.calls, 1);
    // The stats never show the access key itself.
    let text = serde_json::to_string(&stats).expect("json");
    assert!(
        !text.contains("ak-1") && !text.contains("hv-do-not-show"),
        "{text}"
    );
}

#[tokio::test]
async fn thirty_calls_in_one_second_give_25_successes_and_5_rate_limits() {
    let sim = start(SimConfig::default()).await;
    let t = tenant(&sim.server, "acme", "ak-burst", 25);
    let client = client();
    let w = webhook("burst");
    let results = join_all((0..30).map(|_| client.create(&t, &w))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited: Vec<&CallError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 25, "{limited:?}");
    assert_eq!(limited.len(), 5);
    for e in limited {
        assert!(
            matches!(e, CallError::RateLimited { limit: Some(25), retry_after: None, reason, quota: None }
                if reason == "MXAPIRateLimitExceededException: API calls exceeded the limit of 25 in 5 second(s)"),
            "{e:?}"
        );
    }
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-burst")];
    assert_eq!(acc.calls, 30);
    assert_eq!(acc.rate_limited, 5);
    assert_eq!(acc.max_admitted_in_window, 25);
    assert_eq!(acc.max_calls_in_window, 30);
    assert_eq!(acc.webhooks.len(), 25);
    assert_eq!(acc.duplicates, 24);
}

#[tokio::test]
async fn limits_come_from_the_tenants_file_and_unknown_keys_get_401() {
    let csv = "tenant,api_base,access_key,secret_key,limit\n\
               acme,http://127.0.0.1:1,ak-acme,ak-acme-secret,3\n\
               beta,http://127.0.0.1:1,ak-beta,ak-beta-secret,\n";
    let tenants = lsq_webhooks::tenant::parse(csv.as_bytes()).expect("tenants");
    let sim = start(SimConfig {
        accounts: AccountSource::Tenants(tenants),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let acme = tenant(&sim.server, "acme", "ak-acme", 3);
    let mut outcomes = Vec::new();
    for i in 0..4 {
        outcomes.push(client.create(&acme, &webhook(&format!("a{i}"))).await);
    }
    assert!(outcomes[..3].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(
        matches!(
            outcomes[3],
            Err(CallError::RateLimited { limit: Some(3), .. })
        ),
        "{outcomes:?}"
    );

    let stranger = tenant(&sim.server, "x", "ak-unknown", 25);
    let e = client.create(&stranger, &webhook("x")).await;
    assert!(
        matches!(e, Err(CallError::Refused { ref reason }) if reason.starts_with("MXUnAuthorizedAccessException")),
        "{e:?}"
    );
    let mut wrong_secret = tenant(&sim.server, "beta", "ak-beta", 25);
    wrong_secret.secret_key = Secret::new("nope");
    assert!(matches!(
        client.create(&wrong_secret, &webhook("x")).await,
        Err(CallError::Refused { .. })
    ));
    let stats = sim.server.stats();
    assert_eq!(stats.unauthorized, 2);
    assert_eq!(stats.accounts["acme"].limit, 3);
    assert_eq!(stats.accounts["beta"].limit, 25);
    assert_eq!(stats.accounts["beta"].calls, 0);
}

#[tokio::test]
async fn query_string_auth_is_accepted() {
    let sim = start(SimConfig::default()).await;
    let mut url = sim
        .server
        .base_url()
        .join("/v2/Webhook.svc/Create")
        .expect("url");
    url.set_query(Some("accessKey=ak-q&secretKey=sk-q"));
    let response = reqwest::Client::new()
        .post(url)
        .json(&body("via query"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["Status"], json!("Success"));
    assert_eq!(
        sim.server.stats().accounts[&account_label("ak-q")]
            .webhooks
            .len(),
        1
    );
    // No keys at all: 401.
    let response = reqwest::Client::new()
        .post(
            sim.server
                .base_url()
                .join("/v2/Webhook.svc/Create")
                .expect("url"),
        )
        .json(&body("no keys"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn bad_bodies_get_leadsquared_error_shapes() {
    let sim = start(SimConfig::default()).await;
    let create = "/v2/Webhook.svc/Create";
    let is_lsq_error = |v: &Value, exception: &str| {
        v["Status"] == json!("Error")
            && v["ExceptionType"] == json!(exception)
            && v["ExceptionMessage"].is_string()
    };

    let (status, answer) = raw_post(&sim.server, create, "ak-bad", "{not json").await;
    assert_eq!(status, 400);
    assert!(
        is_lsq_error(&answer, "MXInvalidRequestException"),
        "{answer}"
    );

    let mut b = body("d");
    b["url"] = json!("https://x.example");
    let (status, answer) = raw_post(&sim.server, create, "ak-bad", &b.to_string()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["ExceptionMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("url: unknown field")
    );

    let mut b = body("d");
    b["URL"] = json!("ftp://x.example");
    let (status, answer) = raw_post(&sim.server, create, "ak-bad", &b.to_string()).await;
    assert_eq!(status, 500);
    assert!(is_lsq_error(&answer, "MXInvalidInputException"), "{answer}");
    assert!(
        answer["ExceptionMessage"]
            .as_str()
            .unwrap_or_default()
            .starts_with("URL: ")
    );

    let mut b = body("d");
    b.as_object_mut().map(|o| o.remove("WebhookEvent"));
    let (status, answer) = raw_post(&sim.server, create, "ak-bad", &b.to_string()).await;
    assert_eq!(status, 500);
    assert!(
        is_lsq_error(&answer, "MXMandatoryAttributeMissingException"),
        "{answer}"
    );

    // Header values are never quoted back.
    let mut b = body("d");
    b["CustomHeaders"] = json!([{"Key": "bad key", "Value": "hv-do-not-show"}]);
    let (_, answer) = raw_post(&sim.server, create, "ak-bad", &b.to_string()).await;
    assert!(!answer.to_string().contains("hv-do-not-show"), "{answer}");

    // Event 2 without a top-level ActivityEvent, as public code reports LeadSquared answers.
    let mut b = body("d");
    b["WebhookEvent"] = json!("2");
    b["WebhookProperties"] =
        json!(r#"{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}"#);
    let (status, answer) = raw_post(&sim.server, create, "ak-bad", &b.to_string()).await;
    assert_eq!(status, 500);
    assert!(
        is_lsq_error(&answer, "MXInvalidDataTypeException"),
        "{answer}"
    );

    // The project's client sends the same job accepted: validation adds ActivityEvent.
    let t = tenant(&sim.server, "acme", "ak-bad", 25);
    let typed = CreateWebhook::from_value(&b).expect("valid");
    assert!(client().create(&t, &typed).await.is_ok());

    // An unknown API: 404 in the same shape.
    let (status, _) = raw_post(&sim.server, "/v2/Nope.svc/X", "ak-bad", "{}").await;
    assert_eq!(status, 404);
    let stats = sim.server.stats();
    assert_eq!(stats.accounts[&account_label("ak-bad")].invalid, 6);
}

#[tokio::test]
async fn rate_limit_styles_and_retry_after() {
    for style in [
        RateLimitStyle::TooManyRequests,
        RateLimitStyle::OkWithError,
        RateLimitStyle::Forbidden,
    ] {
        let sim = start(SimConfig {
            default_limit: 1,
            rate_limit_style: style,
            retry_after: true,
            ..SimConfig::default()
        })
        .await;
        let t = tenant(&sim.server, "acme", "ak-style", 1);
        let client = client();
        assert!(client.create(&t, &webhook("one")).await.is_ok());
        let e = client.create(&t, &webhook("two")).await;
        match e {
            Err(CallError::RateLimited {
                limit: Some(1),
                retry_after: Some(d),
                ..
            }) => assert!(
                d >= Duration::from_secs(1) && d <= Duration::from_secs(5),
                "{d:?}"
            ),
            other => panic!("{style:?}: {other:?}"),
        }
        let (status, answer) = raw_post(
            &sim.server,
            "/v2/Webhook.svc/Create",
            "ak-style",
            &body("x").to_string(),
        )
        .await;
        let expected = match style {
            RateLimitStyle::TooManyRequests => 429,
            RateLimitStyle::OkWithError => 200,
            RateLimitStyle::Forbidden => 403,
        };
        assert_eq!(status, expected);
        assert_eq!(
            answer["ExceptionType"],
            json!("MXAPIRateLimitExceededException")
        );
    }
}

/// One Create, as account `access`, against a simulator that injects `faults` into every
/// call; the client must take the answer as a transient error that may have reached
/// LeadSquared. Returns the simulator (still running) and the tenant.
async fn create_under(faults: Faults, access: &str, w: &CreateWebhook) -> (Running, Tenant) {
    let sim = start(SimConfig {
        faults,
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "acme", access, 25);
    let e = client().create(&t, w).await;
    assert!(
        matches!(
            e,
            Err(CallError::Transient {
                maybe_reached: true,
                ..
            })
        ),
        "{e:?}"
    );
    (sim, t)
}

#[tokio::test]
async fn injected_500s_are_transient_and_create_nothing() {
    let faults = Faults {
        error_rate: 1.0,
        ..Faults::default()
    };
    let (sim, _) = create_under(faults, "ak-500", &webhook("x")).await;
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-500")];
    assert_eq!(acc.faults.errors, 1);
    assert!(acc.webhooks.is_empty());
}

#[tokio::test]
async fn created_then_500_leaves_a_webhook_the_client_can_find() {
    let faults = Faults {
        created_then_error_rate: 1.0,
        ..Faults::default()
    };
    let w = webhook("created but failed");
    let (sim, t) = create_under(faults, "ak-c500", &w).await;
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-c500")];
    assert_eq!(acc.faults.created_then_error, 1);
    assert_eq!(acc.webhooks.len(), 1);
    // Retrieve finds it, so a worker records it instead of creating a duplicate.
    let found = client().find_existing(&t, &w, 50).await.expect("retrieve");
    assert_eq!(found.map(|id| id.0), Some(acc.webhooks[0].id.clone()));
}

#[tokio::test]
async fn resets_are_transient_and_may_have_reached() {
    let faults = Faults {
        reset_rate: 1.0,
        ..Faults::default()
    };
    let (sim, _) = create_under(faults, "ak-reset", &webhook("x")).await;
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-reset")];
    assert_eq!(acc.faults.resets, 1);
    assert!(acc.webhooks.is_empty());
}

#[tokio::test]
async fn latency_past_the_client_timeout_is_a_timeout_that_may_have_reached() {
    let sim = start(SimConfig {
        faults: Faults {
            latency: Duration::from_secs(30),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "acme", "ak-slow", 25);
    let client = Client::new(ClientConfig {
        timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    })
    .expect("client");
    let e = client.create(&t, &webhook("x")).await;
    assert!(
        matches!(e, Err(CallError::TimedOut { .. }))
            && e.as_ref().is_err_and(CallError::maybe_reached),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_create_whose_client_timed_out_is_still_processed() {
    // Like a real server, the simulator finishes a request it received even when the client
    // has gone: the webhook appears after the client's timeout (issue 5's race).
    let sim = start(SimConfig {
        faults: Faults {
            latency: Duration::from_millis(600),
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "acme", "ak-gone", 25);
    let client = Client::new(ClientConfig {
        timeout: Duration::from_millis(100),
        ..ClientConfig::default()
    })
    .expect("client");
    let e = client.create(&t, &webhook("late")).await;
    assert!(e.is_err_and(|e| e.maybe_reached()));
    let account = account_label("ak-gone");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sim.server.stats().accounts[&account].webhooks.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.server.stats().accounts[&account].webhooks.len(), 1);
}

/// Sequential outcomes of 40 Creates against a fresh simulator with this seed.
async fn outcomes(seed: u64) -> Vec<&'static str> {
    let sim = start(SimConfig {
        default_limit: 1000,
        faults: Faults {
            seed,
            error_rate: 0.3,
            created_then_error_rate: 0.3,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "acme", "ak-seed", 1000);
    let client = client();
    let mut out = Vec::new();
    for i in 0..40 {
        out.push(match client.create(&t, &webhook(&format!("s{i}"))).await {
            Ok(_) => "ok",
            Err(CallError::Transient { .. }) => "transient",
            Err(_) => "other",
        });
    }
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-seed")];
    // Every "created, then 500" left a webhook; every plain 500 left none.
    assert_eq!(
        acc.webhooks.len() as u64,
        out.iter().filter(|o| **o == "ok").count() as u64 + acc.faults.created_then_error
    );
    out
}

#[tokio::test]
async fn faults_are_reproducible_from_a_seed() {
    let a = outcomes(7).await;
    let b = outcomes(7).await;
    assert_eq!(a, b);
    assert!(a.contains(&"ok") && a.contains(&"transient"), "{a:?}");
    assert!(!a.contains(&"other"));
    assert_ne!(a, outcomes(8).await, "another seed, another sequence");
}

#[tokio::test]
async fn retrieve_pages_through_matching_webhooks() {
    let sim = start(SimConfig {
        default_limit: 100,
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "acme", "ak-ret", 100);
    let client = client();
    for i in 0..5 {
        client
            .create(&t, &webhook(&format!("Acme lead hook {i}")))
            .await
            .expect("created");
    }
    client.create(&t, &webhook("other")).await.expect("created");
    let page = client.retrieve(&t, "acme lead", 2, 2).await.expect("page");
    assert_eq!(page.record_count, 5);
    assert_eq!(page.webhooks.len(), 2);
    assert_eq!(page.webhooks[0].description, "Acme lead hook 2");
    assert_eq!(page.webhooks[0].event, Some(3));
    assert_eq!(
        page.webhooks[0].event_name.as_deref(),
        Some("Lead_Post_Create")
    );
    let all = client.retrieve_all(&t, "acme lead", 2).await.expect("all");
    assert_eq!(all.len(), 5);
    // 6 creates + 1 + 3 pages.
    assert_eq!(
        sim.server.stats().accounts[&account_label("ak-ret")].retrieve_calls,
        4
    );
}

#[tokio::test]
async fn limit_can_be_changed_at_runtime() {
    let sim = start(SimConfig::default()).await;
    let label = account_label("ak-rt");
    let response = reqwest::Client::new()
        .put(
            sim.server
                .base_url()
                .join(&format!("/_sim/accounts/{label}/limit"))
                .expect("url"),
        )
        .json(&json!({"limit": 2}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    let t = tenant(&sim.server, "acme", "ak-rt", 2);
    let client = client();
    assert!(client.create(&t, &webhook("1")).await.is_ok());
    assert!(client.create(&t, &webhook("2")).await.is_ok());
    assert!(matches!(
        client.create(&t, &webhook("3")).await,
        Err(CallError::RateLimited { limit: Some(2), .. })
    ));
    let stats: Value = reqwest::get(sim.server.base_url().join("/_sim/stats").expect("url"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["accounts"][&label]["limit"], json!(2));
    assert_eq!(stats["accounts"][&label]["rate_limited"], json!(1));
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let state = SimState::new(SimConfig::default()).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let stop = CancellationToken::new();
    let server = sim::serve(listener, state, stop.clone()).expect("serve");
    let base = server.base_url();
    stop.cancel();
    server.join().await;
    assert!(
        reqwest::get(base.join("/_sim/health").expect("url"))
            .await
            .is_err()
    );
}

// --- The window on the paused clock, through the router alone ---------------------------

async fn call(app: &axum::Router, access: &str) -> u16 {
    let request = Request::post("/v2/Webhook.svc/Create")
        .header("x-LSQ-AccessKey", access)
        .header("x-LSQ-SecretKey", "s")
        .header("content-type", "application/json")
        .body(Body::from(body("w").to_string()))
        .expect("request");
    app.clone()
        .oneshot(request)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn paused_app(count_rejected: bool) -> (axum::Router, Arc<SimState>) {
    let state = SimState::new(SimConfig {
        default_limit: 3,
        count_rejected,
        ..SimConfig::default()
    })
    .expect("config");
    (sim::app(state.clone()), state)
}

#[tokio::test(start_paused = true)]
async fn window_is_any_five_seconds_and_refused_calls_count() {
    let (app, state) = paused_app(true);
    for _ in 0..3 {
        assert_eq!(call(&app, "k").await, 200);
    }
    assert_eq!(call(&app, "k").await, 429);
    tokio::time::advance(Duration::from_millis(4999)).await;
    // The three admitted calls are still in the window.
    assert_eq!(call(&app, "k").await, 429);
    tokio::time::advance(Duration::from_millis(1)).await;
    // Window (0 s, 5 s]: the four calls at 0 have left; the refused one at 4.999 s still
    // counts, so two more fit.
    assert_eq!(call(&app, "k").await, 200);
    assert_eq!(call(&app, "k").await, 200);
    assert_eq!(call(&app, "k").await, 429);
    let stats = state.stats();
    let acc = &stats.accounts[&account_label("k")];
    assert_eq!(acc.max_admitted_in_window, 3);
    assert!(acc.max_calls_in_window >= 4);
    assert_eq!(acc.rate_limited, 3);
}

#[tokio::test(start_paused = true)]
async fn with_refused_calls_free_the_window_counts_admitted_calls_only() {
    let (app, _state) = paused_app(false);
    for _ in 0..3 {
        assert_eq!(call(&app, "k").await, 200);
    }
    for _ in 0..5 {
        assert_eq!(call(&app, "k").await, 429);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    for _ in 0..3 {
        assert_eq!(call(&app, "k").await, 200);
    }
    assert_eq!(call(&app, "k").await, 429);
}

// --- The other client and the daily quota (issue 13) ----------------------------------------

async fn sim_stats(server: &SimServer) -> Value {
    reqwest::get(server.base_url().join("/_sim/stats").expect("url"))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json")
}

async fn put(server: &SimServer, path: &str, body: Value) -> u16 {
    reqwest::Client::new()
        .put(server.base_url().join(path).expect("url"))
        .json(&body)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

fn tenants_source(server_less: &[(&str, u32)]) -> Vec<Tenant> {
    let base = url::Url::parse("http://127.0.0.1:1").expect("url");
    server_less
        .iter()
        .map(|(name, limit)| Tenant {
            name: name.to_string(),
            api_base: Some(base.clone()),
            access_key: Secret::new(format!("ak-{name}")),
            secret_key: Secret::new(format!("ak-{name}-secret")),
            limit: *limit,
            reserve: 0,
            daily_limit: None,
        })
        .collect()
}

/// The other client's counters of one account after 200 windows on the paused clock.
async fn two_hundred_windows(seed: u64) -> (u64, u64, u64, u64) {
    let config = SimConfig {
        accounts: AccountSource::Tenants(tenants_source(&[("acme", 25), ("beta", 25)])),
        other_client_calls: 10,
        other_client_calls_for: [("beta".to_string(), 3)].into(),
        faults: Faults {
            seed,
            ..Faults::default()
        },
        ..SimConfig::default()
    };
    let sim = start(config).await;
    tokio::time::sleep(Duration::from_secs(5 * 200)).await;
    let stats = sim.server.stats();
    let (a, b) = (&stats.accounts["acme"], &stats.accounts["beta"]);
    assert_eq!(a.other_client.calls_per_window, 10);
    assert_eq!(b.other_client.calls_per_window, 3);
    // No call of ours: none of its refusals can be ours, and ours are untouched.
    for acc in [a, b] {
        assert_eq!(acc.other_client.refused_because_of_ours, 0, "{acc:?}");
        assert_eq!(acc.calls, 0);
        assert_eq!(
            acc.other_client.calls,
            acc.other_client.admitted + acc.other_client.refused
        );
        assert!(acc.max_admitted_in_window <= 25);
    }
    (
        a.other_client.calls,
        b.other_client.calls,
        a.other_client.refused,
        b.other_client.refused,
    )
}

#[tokio::test(start_paused = true)]
async fn other_client_calls_arrive_at_about_the_configured_rate_reproducibly() {
    let (acme, beta, acme_refused, beta_refused) = two_hundred_windows(11).await;
    // Poisson: 2000 ± 45 and 600 ± 24.5 (one standard deviation); 4.5 of them either side.
    assert!((1800..=2200).contains(&acme), "acme: {acme}");
    assert!((490..=710).contains(&beta), "beta: {beta}");
    // P(Poisson(10) >= 25) is about 5e-5 per arrival: a few refusals of its own at most;
    // 3 per window never fill 25.
    assert!(acme_refused <= 20, "{acme_refused}");
    assert_eq!(beta_refused, 0);
    // The same seed plays the same schedule; another seed another.
    assert_eq!(
        two_hundred_windows(11).await,
        (acme, beta, acme_refused, beta_refused)
    );
    assert_ne!(two_hundred_windows(12).await.0, acme);
}

/// Waits (polling the stats over HTTP) until `account`'s other client has made `n` calls.
async fn until_other_calls(server: &SimServer, account: &str, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stats = sim_stats(server).await;
        let acc = stats["accounts"][account].clone();
        if acc["other_client"]["calls"].as_u64().unwrap_or(0) >= n {
            return acc;
        }
        assert!(tokio::time::Instant::now() < deadline, "{acc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn other_client_is_refused_when_our_calls_fill_the_window_and_that_is_counted_as_ours() {
    // A long window, so that every call of the test lies in one.
    let sim = start(SimConfig {
        accounts: AccountSource::Tenants(tenants_source(&[("ours", 20), ("theirs", 3)])),
        window: Duration::from_secs(60),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let ours = tenant(&sim.server, "ours", "ak-ours", 20);
    for i in 0..20 {
        client
            .create(&ours, &webhook(&format!("o{i}")))
            .await
            .expect("within the limit");
    }
    // Now the other client: 600 per 60 s, 10 a second.
    let path = "/_sim/accounts/ours/other-client";
    assert_eq!(
        put(&sim.server, path, json!({"calls_per_window": 600})).await,
        200
    );
    until_other_calls(&sim.server, "ours", 5).await;
    assert_eq!(
        put(&sim.server, path, json!({"calls_per_window": 0})).await,
        200
    );
    let acc = &sim_stats(&sim.server).await["accounts"]["ours"];
    let other = &acc["other_client"];
    let calls = other["calls"].as_u64().expect("calls");
    // Fewer than 20 of its own in the window (every arrival counts), so each refusal is ours.
    assert!((5..20).contains(&calls), "{acc}");
    assert_eq!(other["admitted"], json!(0), "{acc}");
    assert_eq!(other["refused"], json!(calls), "{acc}");
    assert_eq!(other["refused_because_of_ours"], json!(calls), "{acc}");
    assert_eq!(acc["admitted"], json!(20));
    assert_eq!(acc["in_window"], json!(20));
    // Ours are refused too, and counted apart.
    assert!(matches!(
        client.create(&ours, &webhook("o20")).await,
        // (A 60-second window reads as a quota to the client: no per-5-second limit.)
        Err(CallError::RateLimited { .. })
    ));
    let acc = &sim_stats(&sim.server).await["accounts"]["ours"];
    assert_eq!(acc["rate_limited"], json!(1), "{acc}");
    assert_eq!(acc["calls"], json!(21));

    // Where the other client fills the window itself, its refusals are not ours.
    let path = "/_sim/accounts/theirs/other-client";
    assert_eq!(
        put(&sim.server, path, json!({"calls_per_window": 600})).await,
        200
    );
    until_other_calls(&sim.server, "theirs", 6).await;
    assert_eq!(
        put(&sim.server, path, json!({"calls_per_window": 0})).await,
        200
    );
    let acc = &sim_stats(&sim.server).await["accounts"]["theirs"];
    let other = &acc["other_client"];
    let calls = other["calls"].as_u64().expect("calls");
    assert_eq!(other["admitted"], json!(3), "{acc}");
    assert_eq!(other["in_window"], json!(3), "{acc}");
    assert_eq!(other["refused"], json!(calls - 3), "{acc}");
    // Its own calls (3 admitted, the refused ones counting too) fill the window.
    assert_eq!(other["refused_because_of_ours"], json!(0), "{acc}");
    // And it leaves us nothing.
    let theirs = tenant(&sim.server, "theirs", "ak-theirs", 3);
    assert!(matches!(
        client.create(&theirs, &webhook("t")).await,
        Err(CallError::RateLimited { .. })
    ));
    // A setting for an account there is no tenant for is refused.
    let status = put(
        &sim.server,
        "/_sim/accounts/nobody/other-client",
        json!({"calls_per_window": 1}),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn daily_quota_answers_with_the_days_message_and_counts_the_other_clients_calls() {
    let sim = start(SimConfig {
        // beta's window is wide, so that only its quota refuses.
        accounts: AccountSource::Tenants(tenants_source(&[("acme", 25), ("beta", 1000)])),
        daily_limit_for: [("acme".to_string(), 2), ("beta".to_string(), 5)].into(),
        ..SimConfig::default()
    })
    .await;
    let acme = tenant(&sim.server, "acme", "ak-acme", 25);
    let client = client();
    for i in 0..2 {
        client
            .create(&acme, &webhook(&format!("a{i}")))
            .await
            .expect("within the quota");
    }
    let (status, answer) = raw_post(
        &sim.server,
        "/v2/Webhook.svc/Create",
        "ak-acme",
        &body("a2").to_string(),
    )
    .await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(
        answer,
        json!({
            "Status": "Error",
            "ExceptionType": "MXAPIRateLimitExceededException",
            "ExceptionMessage": "API calls exceeded the limit of 2 in 86400 second(s)",
        })
    );
    // The client takes it for a quota: no per-5-second limit, a wait of up to a day.
    match client.create(&acme, &webhook("a3")).await {
        Err(CallError::RateLimited {
            limit: None,
            retry_after: Some(d),
            ..
        }) => assert!(
            d > Duration::ZERO && d <= Duration::from_secs(86_400),
            "{d:?}"
        ),
        other => panic!("{other:?}"),
    }
    let stats = sim_stats(&sim.server).await;
    let acc = &stats["accounts"]["acme"];
    assert_eq!(stats["day_ms"], json!(86_400_000));
    assert_eq!(acc["daily_limit"], json!(2));
    assert_eq!(acc["calls_today"], json!(2));
    assert_eq!(acc["quota_refused"], json!(2), "{acc}");
    assert_eq!(acc["rate_limited"], json!(0), "{acc}");
    assert_eq!(acc["admitted"], json!(2));

    // The other client's calls spend the same quota.
    let path = "/_sim/accounts/beta/other-client";
    assert_eq!(
        put(&sim.server, path, json!({"calls_per_window": 500})).await,
        200
    );
    until_other_calls(&sim.server, "beta", 7).await;
    assert_eq!(
        put(&sim.server, path, json!({"calls_per_window": 0})).await,
        200
    );
    let acc = &sim_stats(&sim.server).await["accounts"]["beta"];
    assert_eq!(acc["calls_today"], json!(5), "{acc}");
    assert_eq!(acc["other_client"]["admitted"], json!(5), "{acc}");
    assert!(
        acc["other_client"]["quota_refused"].as_u64() >= Some(2),
        "{acc}"
    );
    let beta = tenant(&sim.server, "beta", "ak-beta", 1000);
    let e = client.create(&beta, &webhook("b")).await;
    assert!(
        matches!(e, Err(CallError::RateLimited { ref reason, .. })
            if reason.ends_with("API calls exceeded the limit of 5 in 86400 second(s)")),
        "{e:?}"
    );
    // Lifting the quota at runtime admits calls again.
    let status = put(
        &sim.server,
        "/_sim/accounts/beta/daily-limit",
        json!({"daily_limit": null}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(client.create(&beta, &webhook("b2")).await.is_ok());
}

#[tokio::test]
async fn daily_quota_resets_with_the_day() {
    // A 3-second day: the message names it, and the quota comes back when it turns. The
    // window is wide, so that the refused calls while waiting (they count) never fill it.
    let sim = start(SimConfig {
        default_limit: 1000,
        daily_limit: Some(2),
        day: Duration::from_secs(3),
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "acme", "ak-day", 1000);
    let client = client();
    let label = account_label("ak-day");
    // Until the quota answers (the day may turn between two calls: then more succeed).
    let mut refused = None;
    for i in 0..50 {
        match client.create(&t, &webhook(&format!("d{i}"))).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(CallError::RateLimited { limit: None, retry_after: Some(d), ref reason, .. })
            if reason == "MXAPIRateLimitExceededException: API calls exceeded the limit of 2 in 3 second(s)"
                && d <= Duration::from_secs(3)),
        "{refused:?}"
    );
    let before = sim_stats(&sim.server).await["accounts"][&label].clone();
    assert!(before["quota_refused"].as_u64() >= Some(1), "{before}");
    // Wait for the day to turn: the next call that succeeds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if client.create(&t, &webhook("next day")).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the day never turned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = sim_stats(&sim.server).await["accounts"][&label].clone();
    let today = after["calls_today"].as_u64().expect("calls_today");
    assert!((1..=2).contains(&today), "{after}");
    assert!(
        after["admitted"].as_u64() > before["admitted"].as_u64(),
        "{after}"
    );
    assert_eq!(after["rate_limited"], json!(0), "{after}");
}

#[tokio::test]
async fn bad_other_client_and_quota_settings_are_refused() {
    let tenants = tenants_source(&[("acme", 25)]);
    let cases = [
        SimConfig {
            daily_limit: Some(0),
            ..SimConfig::default()
        },
        SimConfig {
            day: Duration::ZERO,
            ..SimConfig::default()
        },
        SimConfig {
            other_client_calls: lsq_webhooks::sim::MAX_OTHER_CLIENT_CALLS + 1,
            ..SimConfig::default()
        },
        SimConfig {
            accounts: AccountSource::Tenants(tenants.clone()),
            daily_limit_for: [("nobody".to_string(), 3)].into(),
            ..SimConfig::default()
        },
        SimConfig {
            accounts: AccountSource::Tenants(tenants),
            other_client_calls_for: [("nobody".to_string(), 3)].into(),
            ..SimConfig::default()
        },
    ];
    let errors: Vec<String> = cases
        .into_iter()
        .map(|c| SimState::new(c).err().expect("refused").to_string())
        .collect();
    assert_eq!(
        errors,
        [
            "the daily limit of every account must be at least 1",
            "the day must be at least 1 ms long",
            "the other client's calls per window for every account must be at most 10000, got 10001",
            "daily_limit_for names \"nobody\", which is not a tenant",
            "other_client_calls_for names \"nobody\", which is not a tenant",
        ]
    );
}

/// Two regions of one simulator: an account answers only on its own region's host, except
/// `UserByAccessKey.Get`, which answers on every host with the account's host, in
/// LeadSquared's shape, and counts against the account's window.
#[tokio::test]
async fn each_account_lives_in_one_region_and_discovery_answers_everywhere() {
    let csv = "tenant,api_base,access_key,secret_key,limit\n\
               home,,ak-home,sk-home,25\n\
               euro,,ak-euro,sk-euro,2\n";
    let tenants = lsq_webhooks::tenant::parse(csv.as_bytes()).expect("tenants");
    let mut config = SimConfig {
        accounts: AccountSource::Tenants(tenants),
        ..SimConfig::default()
    };
    config.account_regions.insert("euro".into(), "eu".into());
    let state = lsq_webhooks::sim::SimState::new(config).expect("config");
    let stop = tokio_util::sync::CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let home = lsq_webhooks::sim::serve(bind().await.expect("bind"), state.clone(), stop.clone())
        .expect("serve");
    let eu =
        lsq_webhooks::sim::serve_region(bind().await.expect("bind"), state, "eu", stop.clone())
            .expect("serve");
    let client = client();
    let euro_at_home = tenant(&home, "euro", "ak-euro", 2);
    let mut euro_at_home = euro_at_home;
    euro_at_home.secret_key = Secret::new("sk-euro");
    // Another region's host: 401 for Create, not counted against the account.
    let e = client.create(&euro_at_home, &webhook("w")).await;
    assert!(matches!(e, Err(CallError::Refused { .. })), "{e:?}");
    // Discovery on either host names the account's own.
    for at in [home.base_url(), eu.base_url()] {
        let found = client
            .discover(&euro_at_home, &at)
            .await
            .expect("discovered");
        assert_eq!(found, eu.base_url());
    }
    // Its own host takes the call; the two discoveries filled its window of 2.
    let mut euro = euro_at_home.clone();
    euro.api_base = Some(eu.base_url());
    let e = client.create(&euro, &webhook("w")).await;
    assert!(matches!(e, Err(CallError::RateLimited { .. })), "{e:?}");
    let stats = home.stats();
    let a = &stats.accounts["euro"];
    assert_eq!(
        (a.wrong_region, a.discovery_calls, a.create_calls),
        (1, 2, 1)
    );
    assert_eq!(a.webhooks.len(), 0);
    // The documented shape, read raw.
    let raw: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}v2/Authentication.svc/UserByAccessKey.Get",
            home.base_url()
        ))
        .header("x-LSQ-AccessKey", "ak-home")
        .header("x-LSQ-SecretKey", "sk-home")
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    for field in ["Id", "Name", "TimeZone", "OrgShortCode"] {
        assert!(raw[field].is_string(), "{field}: {raw}");
    }
    let urls = &raw["LSQCommonServiceURLs"];
    assert_eq!(urls["api"], home.base_url().as_str().trim_end_matches('/'));
    assert!(
        urls["app"].is_string() && urls["tracking"].is_string(),
        "{raw}"
    );
    // Wrong keys: 401 everywhere, discovery included.
    let mut stranger = euro_at_home.clone();
    stranger.secret_key = Secret::new("nope");
    for at in [home.base_url(), eu.base_url()] {
        let e = client.discover(&stranger, &at).await;
        assert!(matches!(e, Err(CallError::Refused { .. })), "{e:?}");
    }
}
