//! Every rule the README states for a Create body, and every size limit, as a table: one
//! valid and one invalid example each, checked before anything is enqueued through each way
//! in (the library's check, a job file with `enqueue --check` and `sync --dry-run`, the
//! Rust `Producer`). `POST /v1/jobs` is compared line by line with the file's check in
//! tests/ops_api.rs (`post_jobs_accepts_and_refuses_the_lines_enqueue_does`).

mod common;

use std::collections::HashSet;
use std::process::{Command, Output};
use std::sync::Arc;

use lsq_webhooks::leadsquared::BodyLimits;
use lsq_webhooks::producer::{self, JobRequest, Producer, ProducerError};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;
use serde_json::{Value, json};

/// A header value that must never be shown.
const SECRET: &str = "hv-SECRET-never-shown";

/// A plain valid body (event 3, lead create).
fn plain() -> Value {
    json!({
        "Description": "CRM sync: lead created",
        "URL": "https://hooks.example.com/acme/lead",
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": true,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": SECRET}]
    })
}

/// `plain()` with each (field, value) set; `Value::Null` for a field in `remove` drops it.
fn with(changes: &[(&str, Value)]) -> Value {
    let mut b = plain();
    for (field, value) in changes {
        b[*field] = value.clone();
    }
    b
}

fn without(field: &str) -> Value {
    let mut b = plain();
    b.as_object_mut().map(|o| o.remove(field));
    b
}

fn headers(n: usize, key_len: usize, value_len: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                let key = format!("x-h{i}-{}", "k".repeat(key_len.saturating_sub(5)));
                json!({"Key": key, "Value": format!("{SECRET}{}", "v".repeat(value_len.saturating_sub(SECRET.len())))})
            })
            .collect(),
    )
}

/// One rule: a body that keeps it, one that breaks it, and the start of the problem the
/// broken one is reported with (`field: reason`, the field as a job file names it).
struct Rule {
    name: &'static str,
    valid: Value,
    invalid: Value,
    problem: &'static str,
}

fn rules() -> Vec<Rule> {
    let activity = r#"{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}"#;
    let opportunity = r#"{"OpportunityEvents":["12002"],"IsAsyncEnable":true}"#;
    let url_of = |len: usize| {
        let base = "https://hooks.example.com/";
        format!("{base}{}", "a".repeat(len - base.len()))
    };
    let d = BodyLimits::default();
    vec![
        Rule {
            name: "Description is mandatory",
            valid: plain(),
            invalid: without("Description"),
            problem: "webhook.Description: is mandatory",
        },
        Rule {
            name: "Description is not empty",
            valid: with(&[("Description", json!("x"))]),
            invalid: with(&[("Description", json!("  "))]),
            problem: "webhook.Description: must not be empty",
        },
        Rule {
            name: "URL is mandatory",
            valid: plain(),
            invalid: without("URL"),
            problem: "webhook.URL: is mandatory",
        },
        Rule {
            name: "URL is an absolute http or https URL",
            valid: with(&[("URL", json!("http://plain.example.com/in"))]),
            invalid: with(&[("URL", json!("ftp://files.example.com/in"))]),
            problem: "webhook.URL: must be an http or https URL",
        },
        Rule {
            name: "Method is POST",
            valid: without("Method"),
            invalid: with(&[("Method", json!("GET"))]),
            problem: "webhook.Method: must be \"POST\"",
        },
        Rule {
            name: "ContentType is one of three",
            valid: with(&[("ContentType", json!("application/x-www-form-urlencoded"))]),
            invalid: with(&[("ContentType", json!("application/xml"))]),
            problem: "webhook.ContentType: \"application/xml\" is not one of",
        },
        Rule {
            name: "WebhookEvent is mandatory",
            valid: plain(),
            invalid: without("WebhookEvent"),
            problem: "webhook.WebhookEvent: is mandatory",
        },
        Rule {
            name: "WebhookEvent is a known code",
            valid: with(&[("WebhookEvent", json!("26"))]),
            invalid: with(&[("WebhookEvent", json!("10"))]),
            problem: "webhook.WebhookEvent: 10 is not a known event code",
        },
        Rule {
            name: "event 1 needs LandingPageUrls",
            valid: with(&[
                ("WebhookEvent", json!("1")),
                ("IsSpecificLandingPage", json!(true)),
                ("LandingPageUrls", json!(["https://lp.example.com/a"])),
            ]),
            invalid: with(&[("WebhookEvent", json!("1"))]),
            problem: "webhook.LandingPageUrls: is mandatory when WebhookEvent is 1",
        },
        Rule {
            name: "IsSpecificLandingPage is true exactly when LandingPageUrls are given",
            valid: with(&[
                ("WebhookEvent", json!("1")),
                ("IsSpecificLandingPage", json!(true)),
                ("LandingPageUrls", json!(["https://lp.example.com/a"])),
            ]),
            invalid: with(&[
                ("WebhookEvent", json!("1")),
                ("IsSpecificLandingPage", json!(false)),
                ("LandingPageUrls", json!(["https://lp.example.com/a"])),
            ]),
            problem: "webhook.IsSpecificLandingPage: must be true",
        },
        Rule {
            name: "only landing-page events take LandingPageUrls",
            valid: plain(),
            invalid: with(&[
                ("IsSpecificLandingPage", json!(true)),
                ("LandingPageUrls", json!(["https://lp.example.com/a"])),
            ]),
            problem: "webhook.LandingPageUrls: only event 1 (landing page submission)",
        },
        Rule {
            name: "event 2 needs WebhookProperties (null refused)",
            valid: with(&[
                ("WebhookEvent", json!("2")),
                ("WebhookProperties", json!(activity)),
            ]),
            invalid: with(&[("WebhookEvent", json!("2"))]),
            problem: "webhook.WebhookProperties: is mandatory for event 2",
        },
        Rule {
            name: "event 15 needs WebhookProperties (absent refused)",
            valid: with(&[
                ("WebhookEvent", json!("15")),
                ("WebhookProperties", json!(activity)),
            ]),
            invalid: {
                let mut b = with(&[("WebhookEvent", json!("15"))]);
                b.as_object_mut().map(|o| o.remove("WebhookProperties"));
                b
            },
            problem: "webhook.WebhookProperties: is mandatory for event 15",
        },
        Rule {
            name: "activity properties need ActivityEvent",
            valid: with(&[
                ("WebhookEvent", json!("2")),
                ("WebhookProperties", json!(r#"{"ActivityEvent":"247"}"#)),
            ]),
            invalid: with(&[
                ("WebhookEvent", json!("2")),
                ("WebhookProperties", json!(r#"{"ActivityData":"[]"}"#)),
            ]),
            problem: "webhook.WebhookProperties.ActivityEvent: is mandatory",
        },
        Rule {
            name: "event 31 needs WebhookProperties (null refused)",
            valid: with(&[
                ("WebhookEvent", json!("31")),
                ("WebhookProperties", json!(opportunity)),
            ]),
            invalid: with(&[("WebhookEvent", json!("31"))]),
            problem: "webhook.WebhookProperties: is mandatory for event 31",
        },
        Rule {
            name: "opportunity properties need OpportunityEvents",
            valid: with(&[
                ("WebhookEvent", json!("35")),
                ("WebhookProperties", json!(opportunity)),
            ]),
            invalid: with(&[
                ("WebhookEvent", json!("35")),
                ("WebhookProperties", json!(r#"{"IsAsyncEnable":true}"#)),
            ]),
            problem: "webhook.WebhookProperties.OpportunityEvents: is mandatory",
        },
        Rule {
            name: "event 33 needs ChangedOpportunityField",
            valid: with(&[
                ("WebhookEvent", json!("33")),
                (
                    "WebhookProperties",
                    json!(
                        r#"{"OpportunityEvents":["12003"],"ChangedOpportunityField":"mx_Custom_10"}"#
                    ),
                ),
            ]),
            invalid: with(&[
                ("WebhookEvent", json!("33")),
                ("WebhookProperties", json!(opportunity)),
            ]),
            problem: "webhook.WebhookProperties.ChangedOpportunityField: is mandatory",
        },
        Rule {
            name: "other events take no properties",
            valid: with(&[("WebhookProperties", json!("{}"))]),
            invalid: with(&[("WebhookProperties", json!(activity))]),
            problem: "webhook.WebhookProperties: event 3 (lead create) takes no properties",
        },
        Rule {
            name: "WebhookProperties is a JSON object serialised as a string",
            valid: with(&[
                ("WebhookEvent", json!("2")),
                ("WebhookProperties", json!(activity)),
            ]),
            invalid: with(&[
                ("WebhookEvent", json!("2")),
                ("WebhookProperties", json!({"ActivityEvent": "247"})),
            ]),
            problem: "webhook.WebhookProperties: must be null or a JSON object serialised",
        },
        Rule {
            name: "a top-level ActivityEvent only for activity events",
            valid: with(&[
                ("WebhookEvent", json!("2")),
                ("ActivityEvent", json!("247")),
                ("WebhookProperties", json!(activity)),
            ]),
            invalid: with(&[("ActivityEvent", json!("247"))]),
            problem: "webhook.ActivityEvent: only activity events",
        },
        Rule {
            name: "NotifyOnFailure is a boolean",
            valid: with(&[("NotifyOnFailure", json!(false))]),
            invalid: with(&[("NotifyOnFailure", json!("yes"))]),
            problem: "webhook.NotifyOnFailure: must be true or false",
        },
        Rule {
            name: "field names are case-sensitive, unknown ones refused",
            valid: plain(),
            invalid: with(&[("url", json!("https://x.example.com/"))]),
            problem: "webhook.url: unknown field (field names are case-sensitive",
        },
        Rule {
            name: "at most 10 CustomHeaders",
            valid: with(&[("CustomHeaders", headers(10, 8, 32))]),
            invalid: with(&[("CustomHeaders", headers(11, 8, 32))]),
            problem: "webhook.CustomHeaders: 11 headers given, at most 10",
        },
        Rule {
            name: "a header Key is an HTTP header name",
            valid: with(&[(
                "CustomHeaders",
                json!([{"Key": "X-Api-Key", "Value": SECRET}]),
            )]),
            invalid: with(&[(
                "CustomHeaders",
                json!([{"Key": "x api key", "Value": SECRET}]),
            )]),
            problem: "webhook.CustomHeaders[0].Key: \"x api key\" is not a valid HTTP header name",
        },
        Rule {
            name: "a header has a Value",
            valid: plain(),
            invalid: with(&[("CustomHeaders", json!([{"Key": "x-api-key"}]))]),
            problem: "webhook.CustomHeaders[0].Value: is mandatory",
        },
        // Sizes (BodyLimits): at the limit is valid, one over is not.
        Rule {
            name: "URL size",
            valid: with(&[("URL", json!(url_of(d.url)))]),
            invalid: with(&[("URL", json!(url_of(d.url + 1)))]),
            problem: "webhook.URL: is 2049 bytes, at most 2048 allowed (--max-url-bytes)",
        },
        Rule {
            name: "each landing page URL's size",
            valid: with(&[
                ("WebhookEvent", json!("1")),
                ("IsSpecificLandingPage", json!(true)),
                ("LandingPageUrls", json!([url_of(d.url)])),
            ]),
            invalid: with(&[
                ("WebhookEvent", json!("1")),
                ("IsSpecificLandingPage", json!(true)),
                (
                    "LandingPageUrls",
                    json!(["https://lp.example.com/", url_of(d.url + 1)]),
                ),
            ]),
            problem: "webhook.LandingPageUrls[1]: is 2049 bytes, at most 2048 allowed",
        },
        Rule {
            name: "Description size, in characters",
            valid: with(&[("Description", json!("é".repeat(d.description)))]),
            invalid: with(&[("Description", json!("é".repeat(d.description + 1)))]),
            problem: "webhook.Description: is 1001 characters, at most 1000 allowed (--max-description-chars)",
        },
        Rule {
            name: "header Key size",
            valid: with(&[("CustomHeaders", headers(1, d.header_key, 8))]),
            invalid: with(&[("CustomHeaders", headers(1, d.header_key + 1, 8))]),
            problem: "webhook.CustomHeaders[0].Key: is 257 bytes, at most 256 allowed (--max-header-key-bytes)",
        },
        Rule {
            name: "header Value size",
            valid: with(&[("CustomHeaders", headers(1, 8, d.header_value))]),
            invalid: with(&[("CustomHeaders", headers(1, 8, d.header_value + 1))]),
            problem: "webhook.CustomHeaders[0].Value: is 4097 bytes, at most 4096 allowed (--max-header-value-bytes)",
        },
        Rule {
            name: "whole body size",
            // Ten headers of 4 KiB: each part within its limit, the whole 40 KiB.
            valid: with(&[("CustomHeaders", headers(10, 8, d.header_value))]),
            invalid: with(&[
                ("CustomHeaders", headers(10, 8, d.header_value)),
                (
                    "LandingPageUrls",
                    json!((0..12).map(|_| url_of(d.url)).collect::<Vec<_>>()),
                ),
                ("IsSpecificLandingPage", json!(true)),
                ("WebhookEvent", json!("1")),
            ]),
            problem: "webhook: is 66",
        },
    ]
}

fn request(webhook: &Value) -> JobRequest {
    JobRequest {
        tenant: "acme".into(),
        webhook: webhook.clone(),
        key: None,
        delete: false,
    }
}

/// The library's check: each valid example passes, each invalid one is refused with the
/// rule's problem, and no problem shows a header value.
#[test]
fn every_rule_has_a_valid_and_an_invalid_example() {
    let limits = BodyLimits::default();
    for rule in rules() {
        if let Err(e) = producer::validate_within(&request(&rule.valid), &limits) {
            panic!("{}: the valid example is refused: {e:?}", rule.name);
        }
        let problems: Vec<String> = producer::validate_within(&request(&rule.invalid), &limits)
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            problems.iter().any(|p| p.starts_with(rule.problem)),
            "{}: wanted {:?}, got {problems:?}",
            rule.name,
            rule.problem
        );
        assert!(
            !problems.iter().any(|p| p.contains(SECRET)),
            "{}: {problems:?}",
            rule.name
        );
    }
}

/// A job file of every example: each invalid line reported as `line N: field: reason` with
/// its own line number, the valid ones kept, in order.
#[test]
fn a_job_file_reports_each_rule_by_line() {
    let registered: HashSet<String> = ["acme".to_string()].into();
    let rules = rules();
    let mut lines = Vec::new();
    for rule in &rules {
        lines.push(json!({"tenant": "acme", "webhook": rule.valid}).to_string());
        lines.push(json!({"tenant": "acme", "webhook": rule.invalid}).to_string());
    }
    let file = producer::check_jobs(
        lines.join("\n").as_bytes(),
        &registered,
        &BodyLimits::default(),
    );
    assert_eq!(file.invalid_lines, rules.len() as u64);
    for (i, rule) in rules.iter().enumerate() {
        let want = format!("line {}: {}", 2 * i + 2, rule.problem);
        assert!(
            file.errors.iter().any(|e| e.to_string().starts_with(&want)),
            "{want:?} missing in {:?}",
            file.errors
        );
        assert!(
            !file.errors.iter().any(|e| e.line == 2 * i as u64 + 1),
            "{}: its valid line was refused",
            rule.name
        );
    }
}

/// The limits are configuration: tighter ones refuse what the defaults take, looser ones
/// take what the defaults refuse.
#[test]
fn the_limits_are_configurable() {
    let long_url = with(&[(
        "URL",
        json!(format!("https://hooks.example.com/{}", "a".repeat(3000))),
    )]);
    assert!(producer::validate(&request(&long_url)).is_err());
    let loose = BodyLimits {
        url: 4096,
        ..BodyLimits::default()
    };
    assert!(producer::validate_within(&request(&long_url), &loose).is_ok());
    let tight = BodyLimits {
        description: 5,
        ..BodyLimits::default()
    };
    let e = producer::validate_within(&request(&plain()), &tight).expect_err("too long");
    assert_eq!(
        e[0].to_string(),
        "webhook.Description: is 22 characters, at most 5 allowed (--max-description-chars)"
    );
}

fn lsq(queue: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &common::redis_url(), "--queue", queue])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run lsq-webhooks")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn queue_with_acme(name: &str) -> Arc<RedisQueue> {
    let q = Arc::new(
        RedisQueue::connect(
            &common::redis_url(),
            QueueConfig {
                name: name.to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("connect"),
    );
    q.put_tenants(&[Tenant {
        name: "acme".into(),
        api_base: Some(url::Url::parse("https://api-in21.leadsquared.com").expect("url")),
        access_key: Secret::new("ak"),
        secret_key: Secret::new("sk"),
        limit: 25,
        reserve: 0,
        daily_limit: None,
    }])
    .await
    .expect("tenants");
    q
}

/// The command line: `enqueue --check` and `sync --dry-run` refuse the issue's examples
/// (event 2 with null properties, event 31 without OpportunityEvents, a 2 MB URL) by line,
/// enqueue nothing, and take the long URL once `--max-url-bytes` allows it.
#[tokio::test]
async fn enqueue_and_sync_refuse_what_leadsquared_would() {
    let name = common::unique_queue("rules-cli");
    let q = queue_with_acme(&name).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let huge = format!("https://hooks.example.com/{}", "a".repeat(2 << 20));
    let lines = [
        json!({"tenant": "acme", "webhook": plain()}),
        json!({"tenant": "acme", "webhook": with(&[("WebhookEvent", json!("2"))])}),
        json!({"tenant": "acme", "webhook": with(&[("WebhookEvent", json!("31")), ("WebhookProperties", json!(r#"{"IsAsyncEnable":true}"#))])}),
        json!({"tenant": "acme", "webhook": with(&[("URL", json!(huge)), ("Description", json!("huge"))])}),
    ];
    let path = dir.path().join("jobs.jsonl");
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&path, body.join("\n")).expect("write");
    let file = path.to_str().expect("path");
    for args in [
        vec!["enqueue", "--check", file],
        vec!["enqueue", file],
        vec!["sync", "--dry-run", file],
    ] {
        let o = lsq(&name, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        for want in [
            "line 2: webhook.WebhookProperties: is mandatory for event 2",
            "line 3: webhook.WebhookProperties.OpportunityEvents: is mandatory",
            "line 4: webhook.URL: is 2097178 bytes, at most 2048 allowed (--max-url-bytes)",
        ] {
            assert!(err.contains(want), "{args:?}: {want:?} missing in {err}");
        }
        assert!(!err.contains(SECRET), "{err}");
        assert!(!err.contains("aaaaaaaaaa"), "the URL is quoted: {err}");
    }
    assert_eq!(q.status().await.expect("status").queued, 0);

    // The long URL alone, with a limit that allows it (the flag, then its variable).
    std::fs::write(&path, &body[3]).expect("write");
    let o = lsq(
        &name,
        &[
            "enqueue",
            "--max-url-bytes",
            "3000000",
            "--max-webhook-bytes",
            "3000000",
            file,
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("enqueued 1"),
        "{}",
        text(&o.stdout)
    );
    let o = Command::new(env!("CARGO_BIN_EXE_lsq-webhooks"))
        .args(["--redis", &common::redis_url(), "--queue", &name])
        .args(["enqueue", "--check", file])
        .env("LSQ_MAX_URL_BYTES", "100")
        .env("LSQ_MAX_WEBHOOK_BYTES", "100")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("at most 100 allowed (--max-url-bytes)"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        text(&o.stderr).contains("line 1: webhook: is 2097"),
        "{}",
        text(&o.stderr)
    );
}

/// The Rust `Producer` refuses the same jobs (nothing enqueued), within its own limits.
#[tokio::test]
async fn the_producer_refuses_them_too() {
    let name = common::unique_queue("rules-producer");
    let q = queue_with_acme(&name).await;
    let producer = Producer::new(q.clone());
    let rules = rules();
    for rule in &rules {
        match producer
            .enqueue_many(&[request(&plain()), request(&rule.invalid)])
            .await
        {
            Err(ProducerError::Invalid(invalid)) => {
                assert_eq!(invalid[0].0, 1, "{}", rule.name);
                let shown = ProducerError::Invalid(invalid).to_string();
                assert!(shown.contains(rule.problem), "{}: {shown}", rule.name);
                assert!(!shown.contains(SECRET), "{shown}");
            }
            other => panic!("{}: expected Invalid, got {other:?}", rule.name),
        }
    }
    assert_eq!(q.status().await.expect("status").queued, 0);
    let long = with(&[(
        "URL",
        json!(format!("https://hooks.example.com/{}", "a".repeat(3000))),
    )]);
    assert!(producer.enqueue(&request(&long)).await.is_err());
    let loose = producer.with_limits(BodyLimits {
        url: 4096,
        ..BodyLimits::default()
    });
    assert!(loose.enqueue(&request(&long)).await.is_ok());
}
