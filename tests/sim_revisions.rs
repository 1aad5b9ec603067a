//! Issue 18: the simulator's Update, Delete and Retrieve by WebhookId, spoken to by the
//! client's `update` and `delete` over real HTTP.

use std::time::Duration;

use lsq_webhooks::leadsquared::{
    Applied, CallError, Client, ClientConfig, CreateWebhook, WebhookId,
};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::sim::{self, Faults, SimConfig, SimServer, SimState, account_label};
use lsq_webhooks::tenant::Tenant;
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

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

fn tenant(server: &SimServer, access: &str) -> Tenant {
    Tenant {
        name: "acme".into(),
        api_base: Some(server.base_url()),
        access_key: Secret::new(access),
        secret_key: Secret::new(format!("{access}-secret")),
        limit: 25,
        reserve: 0,
        daily_limit: None,
    }
}

fn client_with(delete_call: &str) -> Client {
    Client::new(ClientConfig {
        timeout: Duration::from_secs(10),
        delete_call: delete_call.parse().expect("delete call"),
        ..ClientConfig::default()
    })
    .expect("client")
}

fn client() -> Client {
    client_with(lsq_webhooks::leadsquared::client::DEFAULT_DELETE_CALL)
}

fn body(description: &str, url: &str) -> Value {
    json!({
        "Description": description,
        "URL": url,
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": true,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": "hv-do-not-show"}]
    })
}

fn webhook(description: &str, url: &str) -> CreateWebhook {
    CreateWebhook::from_value(&body(description, url)).expect("valid")
}

/// A raw call with header auth; returns status and parsed body.
async fn raw(
    server: &SimServer,
    method: reqwest::Method,
    path: &str,
    access: &str,
    body: Option<String>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, server.base_url().join(path).expect("url"))
        .header("x-LSQ-AccessKey", access)
        .header("x-LSQ-SecretKey", format!("{access}-secret"));
    if let Some(b) = body {
        request = request.header("content-type", "application/json").body(b);
    }
    let response = request.send().await.expect("answer");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn update_replaces_the_webhook_and_validates_like_create() {
    let sim = start(SimConfig::default()).await;
    let t = tenant(&sim.server, "ak-up");
    let c = client();
    let id = c
        .create(&t, &webhook("CRM sync", "https://old.example/in"))
        .await
        .expect("created");
    let new = webhook("CRM sync", "https://new.example/in");
    assert_eq!(c.update(&t, &id, &new).await, Ok(Applied::Done));
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-up")];
    assert_eq!(acc.webhooks.len(), 1);
    assert_eq!(acc.webhooks[0].id, id.0);
    assert_eq!(acc.webhooks[0].url, "https://new.example/in");
    assert_eq!(
        acc.webhooks[0].body_digest,
        lsq_webhooks::job::body_digest(&new.to_json())
    );
    assert_eq!((acc.create_calls, acc.update_calls), (1, 1));
    assert_eq!(acc.duplicates, 0);

    // Validated like Create: a bad URL is LeadSquared's input error, and nothing changes.
    let mut bad = body("CRM sync", "not a url");
    bad["WebhookId"] = json!(id.0);
    let (status, answer) = raw(
        &sim.server,
        reqwest::Method::POST,
        "/v2/Webhook.svc/Update",
        "ak-up",
        Some(bad.to_string()),
    )
    .await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["Status"], json!("Error"));
    assert!(
        answer["ExceptionType"]
            .as_str()
            .is_some_and(|t| t.starts_with("MX"))
    );
    // Without a WebhookId: mandatory.
    let (status, answer) = raw(
        &sim.server,
        reqwest::Method::POST,
        "/v2/Webhook.svc/Update",
        "ak-up",
        Some(body("CRM sync", "https://x.example/").to_string()),
    )
    .await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(
        answer["ExceptionType"],
        json!("MXMandatoryAttributeMissingException")
    );
    let stats = sim.server.stats();
    assert_eq!(
        stats.accounts[&account_label("ak-up")].webhooks[0].url,
        "https://new.example/in"
    );
}

#[tokio::test]
async fn an_unknown_webhook_id_is_not_found_on_update_and_delete() {
    let sim = start(SimConfig::default()).await;
    let t = tenant(&sim.server, "ak-nf");
    let c = client();
    let gone = WebhookId("no-such-id".into());
    let w = webhook("CRM sync", "https://new.example/in");
    assert_eq!(c.update(&t, &gone, &w).await, Ok(Applied::NotFound));
    assert_eq!(c.delete(&t, &gone).await, Ok(Applied::NotFound));
    // LeadSquared's error shape.
    let (status, answer) = raw(
        &sim.server,
        reqwest::Method::GET,
        "/v2/Webhook.svc/Delete?webhookId=no-such-id",
        "ak-nf",
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(answer["Status"], json!("Error"));
    assert_eq!(
        answer["ExceptionType"],
        json!(lsq_webhooks::leadsquared::answer::NOT_FOUND_EXCEPTION)
    );
    assert!(
        sim.server.stats().accounts[&account_label("ak-nf")]
            .webhooks
            .is_empty()
    );
}

#[tokio::test]
async fn delete_is_a_get_and_a_post_answers_405() {
    let sim = start(SimConfig::default()).await;
    let t = tenant(&sim.server, "ak-del");
    let c = client();
    let keep = c
        .create(&t, &webhook("keep", "https://k.example/"))
        .await
        .expect("created");
    let id = c
        .create(&t, &webhook("drop", "https://d.example/"))
        .await
        .expect("created");
    let (status, _) = raw(
        &sim.server,
        reqwest::Method::POST,
        &format!("/v2/Webhook.svc/Delete?webhookId={}", id.0),
        "ak-del",
        Some("{}".into()),
    )
    .await;
    assert_eq!(status, 405);
    // A client configured for the POST form gets a permanent error, not "not found".
    let posting = client_with("POST /v2/Webhook.svc/Delete");
    let e = posting.delete(&t, &id).await;
    assert!(matches!(e, Err(CallError::Permanent { .. })), "{e:?}");
    // A wrong path is LeadSquared's "no such API": an error, never "not found".
    let wrong = client_with("GET /v2/Webhook.svc/Remove");
    let e = wrong.delete(&t, &id).await;
    assert!(matches!(e, Err(CallError::Permanent { .. })), "{e:?}");
    let reason = format!("{e:?}");
    assert!(!reason.contains("ak-del"), "{reason}");

    assert_eq!(c.delete(&t, &id).await, Ok(Applied::Done));
    assert_eq!(c.delete(&t, &id).await, Ok(Applied::NotFound));
    let stats = sim.server.stats();
    let acc = &stats.accounts[&account_label("ak-del")];
    let left: Vec<&str> = acc.webhooks.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(left, vec![keep.0.as_str()]);
    // Two GETs by the default client and one by the wrong path's (answered by the router's
    // fallback, which counts nothing); the POSTs answered 405 before any account.
    assert_eq!(acc.delete_calls, 2);
}

#[tokio::test]
async fn retrieve_filters_by_webhook_id() {
    let sim = start(SimConfig::default()).await;
    let t = tenant(&sim.server, "ak-ret");
    let c = client();
    let first = c
        .create(&t, &webhook("hook", "https://a.example/"))
        .await
        .expect("created");
    c.create(&t, &webhook("hook", "https://b.example/"))
        .await
        .expect("created");
    let request = json!({
        "Parameter": {"WebhookId": first.0},
        "Paging": {"PageIndex": 1, "PageSize": 10},
    });
    let (status, answer) = raw(
        &sim.server,
        reqwest::Method::POST,
        "/v2/Webhook.svc/Retrieve",
        "ak-ret",
        Some(request.to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["RecordCount"], json!(1));
    assert_eq!(answer["Response"][0]["WebhookId"], json!(first.0));
    assert_eq!(answer["Response"][0]["URL"], json!("https://a.example/"));
}

#[tokio::test]
async fn update_and_delete_count_against_the_accounts_limit() {
    let sim = start(SimConfig {
        default_limit: 3,
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "ak-lim");
    let c = client();
    let id = c
        .create(&t, &webhook("hook", "https://a.example/"))
        .await
        .expect("created");
    let w = webhook("hook", "https://b.example/");
    assert_eq!(c.update(&t, &id, &w).await, Ok(Applied::Done));
    assert_eq!(c.delete(&t, &id).await, Ok(Applied::Done));
    // The window holds three calls: a fourth of any kind is refused.
    let e = c.update(&t, &id, &w).await;
    assert!(matches!(e, Err(CallError::RateLimited { .. })), "{e:?}");
    let e = c.delete(&t, &id).await;
    assert!(matches!(e, Err(CallError::RateLimited { .. })), "{e:?}");
    let stats = sim.server.stats();
    assert_eq!(stats.accounts[&account_label("ak-lim")].rate_limited, 2);
}

#[tokio::test]
async fn a_lost_update_or_delete_answer_did_the_work_and_repeating_it_converges() {
    let sim = start(SimConfig {
        faults: Faults {
            created_then_error_rate: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let t = tenant(&sim.server, "ak-lost");
    let c = client();
    let state = || sim.server.stats().accounts[&account_label("ak-lost")].clone();
    // Every change is done, then answered 500.
    let e = c.create(&t, &webhook("hook", "https://a.example/")).await;
    assert!(e.is_err());
    let id = WebhookId(state().webhooks[0].id.clone());
    let new = webhook("hook", "https://b.example/");
    for _ in 0..2 {
        let e = c.update(&t, &id, &new).await;
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
        let now = state();
        assert_eq!(now.webhooks.len(), 1);
        assert_eq!(now.webhooks[0].url, "https://b.example/");
    }
    let e = c.delete(&t, &id).await;
    assert!(e.is_err(), "{e:?}");
    assert!(state().webhooks.is_empty());
    // The retry finds it gone: not found, which a delete takes as done.
    assert_eq!(c.delete(&t, &id).await, Ok(Applied::NotFound));
    assert_eq!(state().duplicates, 0);
}

#[test]
fn delete_call_parses_method_and_path() {
    use lsq_webhooks::leadsquared::DeleteCall;
    let d: DeleteCall = "get /v2/Webhook.svc/Delete".parse().expect("parse");
    assert_eq!(d.method, reqwest::Method::GET);
    assert_eq!(d.path, "/v2/Webhook.svc/Delete");
    for bad in ["", "GET", "PUT /x", "GET x", "GET /x?y=1"] {
        assert!(bad.parse::<DeleteCall>().is_err(), "{bad:?}");
    }
}
