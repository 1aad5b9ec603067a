//! The LeadSquared client against real HTTP: a tiny axum server on port 0 that answers a
//! scripted status, headers and body, and a raw TCP server for what axum will not do (cut an
//! answer short, reset the connection, never answer, stream a huge body). Every answer
//! classification the issue lists is driven through the client here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use lsq_webhooks::leadsquared::{CallError, Client, ClientConfig, CreateWebhook, WebhookId};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};

const ACCESS: &str = "ak-test-0123456789";
const SECRET: &str = "sk-test-abcdefghij";
const HEADER_VALUE: &str = "hv-secret-value-42";

fn tenant(port: u16) -> Tenant {
    Tenant {
        name: "acme".into(),
        api_base: Some(url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url")),
        access_key: Secret::new(ACCESS),
        secret_key: Secret::new(SECRET),
        limit: 25,
        reserve: 0,
        daily_limit: None,
    }
}

fn body() -> CreateWebhook {
    CreateWebhook::from_value(&json!({
        "Description": "lead create for acme",
        "URL": "https://hooks.example/acme",
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": true,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": HEADER_VALUE}]
    }))
    .expect("valid body")
}

fn client() -> Client {
    Client::new(ClientConfig {
        timeout: Duration::from_millis(1500),
        max_answer_bytes: 64 * 1024,
        ..ClientConfig::default()
    })
    .expect("client")
}

/// What the scripted server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    access: Option<String>,
    secret: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// An axum server answering every request with the same scripted answer.
struct Scripted {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: DropGuard,
}

async fn scripted(status: u16, headers: &[(&'static str, &'static str)], body: &str) -> Scripted {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = seen.clone();
    let status = StatusCode::from_u16(status).expect("status");
    let headers: Vec<(&'static str, &'static str)> = headers.to_vec();
    let body = body.to_string();
    let app = Router::new().fallback(move |uri: Uri, h: HeaderMap, b: Bytes| {
        let record = record.clone();
        let headers = headers.clone();
        let body = body.clone();
        async move {
            let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
            record.lock().expect("lock").push(Seen {
                path: uri.path().to_string(),
                access: get("x-lsq-accesskey"),
                secret: get("x-lsq-secretkey"),
                content_type: get("content-type"),
                body: serde_json::from_slice(&b).unwrap_or(Value::Null),
            });
            let mut out = HeaderMap::new();
            for (k, v) in headers {
                out.insert(k, v.parse().expect("header value"));
            }
            (status, out, body).into_response()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    });
    Scripted {
        port,
        seen,
        _stop: stop.drop_guard(),
    }
}

/// What the raw server does once it has read a request.
#[derive(Clone, Copy)]
enum Raw {
    /// Promises 100 bytes, sends 10, closes.
    CutShort,
    /// Closes with a TCP reset and no answer.
    Reset,
    /// Never answers.
    Silent,
    /// A 200 whose chunked body never stops before the client's cap.
    Endless,
    /// A 429 whose declared length is over the client's cap.
    HugeRateLimit,
}

async fn raw(behaviour: Raw) -> (u16, DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => return },
                _ = token.cancelled() => return,
            };
            let token = token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = answer_raw(stream, behaviour) => {}
                    _ = token.cancelled() => {}
                }
            });
        }
    });
    (port, stop.drop_guard())
}

/// Reads one request (head and `Content-Length` body), then misbehaves.
async fn answer_raw(mut stream: TcpStream, behaviour: Raw) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    match behaviour {
        Raw::CutShort => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"Status\":")
                .await;
            let _ = stream.shutdown().await;
        }
        Raw::Reset => {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
        }
        Raw::Silent => std::future::pending::<()>().await,
        Raw::Endless => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await;
            let piece = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
            for _ in 0..64 {
                if stream.write_all(piece.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        Raw::HugeRateLimit => {
            let _ = stream
                .write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 10000000\r\n\r\n{")
                .await;
            std::future::pending::<()>().await;
        }
    }
}

async fn create_against(
    status: u16,
    headers: &[(&'static str, &'static str)],
    answer: &str,
) -> Result<WebhookId, CallError> {
    let server = scripted(status, headers, answer).await;
    client().create(&tenant(server.port), &body()).await
}

fn assert_no_secret(e: &CallError) {
    let text = format!("{e} {e:?}");
    for s in [ACCESS, SECRET, HEADER_VALUE] {
        assert!(!text.contains(s), "secret in {text}");
    }
}

#[tokio::test]
async fn success_returns_the_id_and_sends_the_body_with_header_auth() {
    let server = scripted(
        200,
        &[("content-type", "application/json")],
        r#"{"Status":"Success","Message":{"Id":"b1c420d7-9c3e-11e7-b0ab-02e89b2fb8f4"}}"#,
    )
    .await;
    let id = client()
        .create(&tenant(server.port), &body())
        .await
        .expect("created");
    assert_eq!(id, WebhookId("b1c420d7-9c3e-11e7-b0ab-02e89b2fb8f4".into()));
    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v2/Webhook.svc/Create");
    assert_eq!(seen[0].access.as_deref(), Some(ACCESS));
    assert_eq!(seen[0].secret.as_deref(), Some(SECRET));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[0].body, body().to_value());
    assert_eq!(seen[0].body["WebhookEvent"], json!("3"));
}

#[tokio::test]
async fn status_429_is_rate_limited_with_retry_after_and_the_named_limit() {
    let e = create_against(
        429,
        &[("retry-after", "7")],
        r#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 25 in 5 second(s)"}"#,
    )
    .await;
    assert_eq!(
        e,
        Err(CallError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            limit: Some(25),
            quota: None,
            reason:
                "MXAPIRateLimitExceededException: API calls exceeded the limit of 25 in 5 second(s)"
                    .into(),
        })
    );
    // A bare 429 with no body is still a rate limit.
    let e = create_against(429, &[], "").await;
    assert!(
        matches!(
            e,
            Err(CallError::RateLimited {
                retry_after: None,
                limit: None,
                ..
            })
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn status_200_with_status_error_rate_limit_is_rate_limited() {
    let e = create_against(
        200,
        &[],
        r#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 20 in 5 second(s)"}"#,
    )
    .await;
    assert!(
        matches!(
            e,
            Err(CallError::RateLimited {
                limit: Some(20),
                retry_after: None,
                ..
            })
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn status_403_with_rate_limit_body_is_rate_limited_and_plain_403_is_permanent() {
    let e = create_against(
        403,
        &[],
        r#"{"Status":"Error","ExceptionType":"MXAPIRateLimitExceededException","ExceptionMessage":"API calls exceeded the limit of 10 in 5 second(s)"}"#,
    )
    .await;
    assert!(
        matches!(
            e,
            Err(CallError::RateLimited {
                limit: Some(10),
                ..
            })
        ),
        "{e:?}"
    );
    let e = create_against(403, &[], "Forbidden").await;
    assert!(matches!(e, Err(CallError::Permanent { .. })), "{e:?}");
}

#[tokio::test]
async fn status_500_with_mx_exception_is_permanent_with_type_and_message() {
    let e = create_against(
        500,
        &[],
        r#"{"Status":"Error","ExceptionType":"MXInvalidInputException","ExceptionMessage":"Invalid URL"}"#,
    )
    .await;
    assert_eq!(
        e,
        Err(CallError::Permanent {
            reason: "MXInvalidInputException: Invalid URL".into()
        })
    );
    let e = create_against(
        500,
        &[],
        r#"{"Status":"Error","ExceptionType":"MXInvalidDataTypeException","ExceptionMessage":"ActivityEvent"}"#,
    )
    .await;
    assert!(
        matches!(e, Err(CallError::Permanent { ref reason }) if reason.starts_with("MXInvalidDataTypeException: ")),
        "{e:?}"
    );
}

#[tokio::test]
async fn server_errors_without_mx_exception_are_transient_and_may_have_reached() {
    for (status, answer) in [
        (500, "Internal Server Error"),
        (
            500,
            r#"{"Status":"Error","Message":"Something went wrong"}"#,
        ),
        (502, "<html>Bad Gateway</html>"),
        (503, ""),
        (504, "Gateway Timeout"),
    ] {
        let e = create_against(status, &[], answer).await;
        assert!(
            matches!(e, Err(CallError::Transient { maybe_reached: true, ref reason }) if reason.starts_with(&format!("HTTP {status}"))),
            "{status}: {e:?}"
        );
    }
}

#[tokio::test]
async fn client_errors_are_permanent() {
    for status in [400, 404] {
        let e = create_against(status, &[], "").await;
        assert!(
            matches!(e, Err(CallError::Permanent { ref reason }) if reason.starts_with(&format!("HTTP {status}"))),
            "{status}: {e:?}"
        );
    }
    // A 401 is a question about the tenant (keys, or region), for the worker to ask.
    let e = create_against(401, &[], "").await;
    assert!(
        matches!(e, Err(CallError::Refused { ref reason }) if reason.starts_with("HTTP 401")),
        "{e:?}"
    );
    let e = create_against(
        400,
        &[],
        r#"{"Status":"Error","ExceptionType":"MXInvalidRequestException","ExceptionMessage":"The message body is not as per API specification"}"#,
    )
    .await;
    assert_eq!(
        e,
        Err(CallError::Permanent {
            reason: "MXInvalidRequestException: The message body is not as per API specification"
                .into()
        })
    );
}

#[tokio::test]
async fn malformed_or_empty_success_answers_are_transient_and_may_have_reached() {
    for answer in [
        "",
        "not json",
        "{\"Status\":\"Success\"",
        r#"{"Status":"Success","Message":{}}"#,
        r#"{"Status":"Success","Message":{"Id":""}}"#,
        "[1,2,3]",
        "null",
    ] {
        let e = create_against(200, &[], answer).await;
        assert!(
            matches!(
                e,
                Err(CallError::Transient {
                    maybe_reached: true,
                    ..
                })
            ),
            "{answer:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn status_200_with_status_error_and_other_exception_is_permanent() {
    let e = create_against(
        200,
        &[],
        r#"{"Status":"Error","ExceptionType":"MXDuplicateEntryException","ExceptionMessage":"exists"}"#,
    )
    .await;
    assert_eq!(
        e,
        Err(CallError::Permanent {
            reason: "MXDuplicateEntryException: exists".into()
        })
    );
}

#[tokio::test]
async fn echoed_secrets_never_reach_the_error() {
    let answer = format!(
        r#"{{"Status":"Error","ExceptionType":"MXInvalidInputException","ExceptionMessage":"bad {ACCESS} {SECRET} {HEADER_VALUE}"}}"#
    );
    let server = scripted(500, &[], &answer).await;
    let e = client()
        .create(&tenant(server.port), &body())
        .await
        .expect_err("refused");
    assert_eq!(e.reason(), "MXInvalidInputException: bad *** *** ***");
    assert_no_secret(&e);
}

#[tokio::test]
async fn an_answer_cut_short_is_transient_and_may_have_reached() {
    let (port, _stop) = raw(Raw::CutShort).await;
    let e = client().create(&tenant(port), &body()).await;
    match &e {
        Err(
            err @ CallError::Transient {
                maybe_reached: true,
                ..
            },
        ) => assert_no_secret(err),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_reset_connection_is_transient_and_may_have_reached() {
    let (port, _stop) = raw(Raw::Reset).await;
    let e = client().create(&tenant(port), &body()).await;
    match &e {
        Err(
            err @ CallError::Transient {
                maybe_reached: true,
                ..
            },
        ) => assert_no_secret(err),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_answer_before_the_timeout_is_timed_out_and_may_have_reached() {
    let (port, _stop) = raw(Raw::Silent).await;
    let client = Client::new(ClientConfig {
        timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    })
    .expect("client");
    let e = client.create(&tenant(port), &body()).await;
    assert!(
        matches!(e, Err(CallError::TimedOut { .. }))
            && e.as_ref().is_err_and(CallError::maybe_reached),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_never_reached() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let e = client().create(&tenant(port), &body()).await;
    assert!(matches!(e, Err(CallError::Unreachable { .. })), "{e:?}");
    assert!(!e.as_ref().err().is_some_and(CallError::maybe_reached));
    // Discovery on a host that does not answer: unreachable too.
    let nowhere = url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let e = client().discover(&tenant(port), &nowhere).await;
    assert!(matches!(e, Err(CallError::Unreachable { .. })), "{e:?}");
}

#[test]
fn the_default_discovery_url_parses() {
    let url = lsq_webhooks::worker::default_discovery_url();
    assert_eq!(url.as_str(), "https://api.leadsquared.com/");
}

#[tokio::test]
async fn huge_answers_are_not_read_and_do_not_panic() {
    let (port, _stop) = raw(Raw::Endless).await;
    let e = client().create(&tenant(port), &body()).await;
    assert!(
        matches!(e, Err(CallError::Transient { maybe_reached: true, ref reason }) if reason.contains("larger than")),
        "{e:?}"
    );
    // The status of a huge answer still decides.
    let (port, _stop) = raw(Raw::HugeRateLimit).await;
    let e = client().create(&tenant(port), &body()).await;
    assert!(
        matches!(e, Err(CallError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(3)),
        "{e:?}"
    );
}

#[tokio::test]
async fn plain_http_is_refused_unless_loopback() {
    let mut t = tenant(1);
    t.api_base = Some(url::Url::parse("http://api-in21.leadsquared.com").expect("url"));
    let e = client().create(&t, &body()).await;
    assert!(
        matches!(e, Err(CallError::Permanent { ref reason }) if reason.starts_with("refusing plain http")),
        "{e:?}"
    );
}

#[tokio::test]
async fn retrieve_reads_a_page_leniently() {
    let server = scripted(
        200,
        &[],
        r#"{"RecordCount":"3","Response":[
            {"WebhookId":"w1","EventName":"Lead_Post_Create","EventCode":3,"Description":"lead create for acme","URL":"https://hooks.example/acme"},
            {"WebhookId":"w2","EventCode":"6","Description":"other","URL":"https://x"},
            {"EventCode":3,"Description":"no id"}
        ]}"#,
    )
    .await;
    let page = client()
        .retrieve(&tenant(server.port), "acme", 1, 50)
        .await
        .expect("page");
    assert_eq!(page.record_count, 3);
    assert_eq!(page.webhooks.len(), 2);
    assert!(page.webhooks[0].matches(&body()));
    assert_eq!(page.webhooks[1].event, Some(6));
    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen[0].path, "/v2/Webhook.svc/Retrieve");
    assert_eq!(seen[0].body["Parameter"]["SearchText"], json!("acme"));
    assert_eq!(
        seen[0].body["Paging"],
        json!({"PageIndex": 1, "PageSize": 50})
    );
}

#[tokio::test]
async fn discovery_reads_the_host_from_the_documented_answer_with_header_keys() {
    let server = scripted(
        200,
        &[("content-type", "application/json")],
        r#"{"Id":"u1","Name":"API","TimeZone":"Asia/Kolkata","OrgShortCode":"1234",
            "LSQCommonServiceURLs":{"api":"api-in21.leadsquared.com","app":"app.leadsquared.com","tracking":"t"}}"#,
    )
    .await;
    let at = url::Url::parse(&format!("http://127.0.0.1:{}", server.port)).expect("url");
    let host = client()
        .discover(&tenant(server.port), &at)
        .await
        .expect("discovered");
    assert_eq!(host.as_str(), "https://api-in21.leadsquared.com/");
    let seen = server.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v2/Authentication.svc/UserByAccessKey.Get");
    assert_eq!(
        (seen[0].access.as_deref(), seen[0].secret.as_deref()),
        (Some(ACCESS), Some(SECRET))
    );
}

#[tokio::test]
async fn discovery_errors_never_carry_the_keys() {
    // Refused, with the keys echoed back.
    let answer = format!(
        r#"{{"Status":"Error","ExceptionType":"MXUnAuthorizedAccessException","ExceptionMessage":"no user for {ACCESS} / {SECRET}"}}"#
    );
    let server = scripted(401, &[], &answer).await;
    let at = url::Url::parse(&format!("http://127.0.0.1:{}", server.port)).expect("url");
    let e = client()
        .discover(&tenant(server.port), &at)
        .await
        .expect_err("refused");
    assert!(matches!(e, CallError::Refused { .. }), "{e:?}");
    assert_no_secret(&e);
    // An unusable host named, with a key in it.
    let answer = format!(r#"{{"LSQCommonServiceURLs":{{"api":"http://{SECRET}.example.com"}}}}"#);
    let server = scripted(200, &[("content-type", "application/json")], &answer).await;
    let at = url::Url::parse(&format!("http://127.0.0.1:{}", server.port)).expect("url");
    let e = client()
        .discover(&tenant(server.port), &at)
        .await
        .expect_err("plain http to a remote host");
    assert!(matches!(e, CallError::Transient { .. }), "{e:?}");
    assert_no_secret(&e);
}
