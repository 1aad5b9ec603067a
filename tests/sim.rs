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
        api_base: server.base_url(),
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
            matches!(e, CallError::RateLimited { limit: Some(25), retry_after: None, reason }
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
        matches!(e, Err(CallError::Permanent { ref reason }) if reason.starts_with("MXUnAuthorizedAccessException")),
        "{e:?}"
    );
    let mut wrong_secret = tenant(&sim.server, "beta", "ak-beta", 25);
    wrong_secret.secret_key = Secret::new("nope");
    assert!(matches!(
        client.create(&wrong_secret, &webhook("x")).await,
        Err(CallError::Permanent { .. })
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
async fn latency_past_the_client_timeout_is_a_transient_timeout() {
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
        matches!(e, Err(CallError::Transient { maybe_reached: true, ref reason }) if reason.contains("timed out")),
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
