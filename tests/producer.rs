//! The `Producer` handle a Rust service uses, against a real Redis.

mod common;

use std::sync::Arc;

use lsq_webhooks::producer::{JobRequest, Producer, ProducerError};
use lsq_webhooks::queue::redis::RedisQueue;
use lsq_webhooks::queue::{Pushed, Queue, QueueConfig};
use lsq_webhooks::secret::Secret;
use lsq_webhooks::tenant::Tenant;

fn request(tenant: &str, n: usize) -> JobRequest {
    JobRequest {
        delete: false,
        tenant: tenant.into(),
        webhook: serde_json::json!({
            "Description": format!("hook {n}"),
            "URL": "https://example.com/hook",
            "Method": "POST",
            "ContentType": "application/json",
            "WebhookEvent": "6",
            "NotifyOnFailure": false,
            "WebhookProperties": null
        }),
        key: None,
    }
}

async fn producer() -> (Producer, Arc<RedisQueue>) {
    let q = Arc::new(
        RedisQueue::connect(
            &common::redis_url(),
            QueueConfig {
                name: common::unique_queue("producer"),
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
    (Producer::new(q.clone()), q)
}

#[tokio::test]
async fn enqueues_one_and_recognises_it_again() {
    let (p, q) = producer().await;
    let first = p.enqueue(&request("acme", 1)).await.expect("enqueue");
    let Pushed::Enqueued { job } = first else {
        panic!("expected a new job, got {first:?}");
    };
    assert_eq!(
        p.enqueue(&request("acme", 1)).await.expect("enqueue"),
        Pushed::Duplicate { job: job.clone() }
    );
    let stored = q.job(&job).await.expect("job").expect("stored");
    assert!(
        stored
            .key
            .starts_with(lsq_webhooks::job::DERIVED_KEY_PREFIX)
    );
}

#[tokio::test]
async fn one_invalid_or_unknown_job_enqueues_none() {
    let (p, q) = producer().await;
    let mut bad = request("acme", 2);
    bad.webhook["WebhookEvent"] = "999".into();
    match p.enqueue_many(&[request("acme", 1), bad]).await {
        Err(ProducerError::Invalid(invalid)) => {
            assert_eq!(invalid.len(), 1);
            assert_eq!(invalid[0].0, 1);
            assert_eq!(invalid[0].1[0].field, "webhook.WebhookEvent");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    match p
        .enqueue_many(&[request("acme", 1), request("nobody", 1)])
        .await
    {
        Err(ProducerError::UnknownTenant(t)) => assert_eq!(t, "nobody"),
        other => panic!("expected UnknownTenant, got {other:?}"),
    }
    assert_eq!(q.status().await.expect("status").queued, 0);
    let pushed = p
        .enqueue_many(&[request("acme", 1), request("acme", 2)])
        .await
        .expect("enqueue");
    assert_eq!(pushed.len(), 2);
}

/// The typed entry point (issue 15): a `Producer` built in one line from a Redis URL takes
/// a `CreateWebhook`, recognises it again as the JSON entry point does, and still
/// validates one built by hand.
#[tokio::test]
async fn a_typed_webhook_from_a_producer_built_in_one_line() {
    let (_, q) = producer().await;
    let p = Producer::connect(&common::redis_url(), &q.config().name)
        .await
        .expect("connect");
    let webhook = lsq_webhooks::leadsquared::CreateWebhook::from_value(&request("acme", 7).webhook)
        .expect("a valid body");
    let first = p
        .create_webhook("acme", &webhook, Some("order-7"))
        .await
        .expect("enqueue");
    let Pushed::Enqueued { job } = first else {
        panic!("expected a new job, got {first:?}");
    };
    let stored = q.job(&job).await.expect("job").expect("stored");
    assert_eq!(
        (stored.tenant.as_str(), stored.key.as_str()),
        ("acme", "order-7")
    );
    // The same typed body through the JSON entry point, with the same key: a duplicate.
    let json = JobRequest {
        delete: false,
        key: Some("order-7".into()),
        ..request("acme", 7)
    };
    assert_eq!(
        p.enqueue(&json).await.expect("enqueue"),
        Pushed::Duplicate { job: job.clone() }
    );
    // Without a key, the derived one matches the JSON entry point's.
    let typed = p
        .create_webhooks(&[("acme", &webhook, None)])
        .await
        .expect("enqueue");
    let by_json = p.enqueue(&request("acme", 7)).await.expect("enqueue");
    assert!(matches!(typed[0], Pushed::Enqueued { .. }), "{typed:?}");
    assert!(matches!(by_json, Pushed::Duplicate { .. }), "{by_json:?}");

    // Built by hand with a URL LeadSquared refuses: refused here, nothing enqueued.
    let mut bad = webhook.clone();
    bad.url = "not a url".into();
    match p.create_webhook("acme", &bad, Some("order-8")).await {
        Err(ProducerError::Invalid(problems)) => {
            assert!(format!("{problems:?}").contains("URL"), "{problems:?}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(q.find_job("acme", "order-8").await.expect("find").is_none());
    // A queue name that cannot be used is refused in the one line too.
    assert!(
        Producer::connect(&common::redis_url(), "bad{name}")
            .await
            .is_err()
    );
}

/// Issue 18: a delete through the handle is a job of its own, taken once; for a registered
/// tenant and a key that is not empty.
#[tokio::test]
async fn delete_webhook_enqueues_a_delete_once() {
    use lsq_webhooks::job::Operation;
    let (p, q) = producer().await;
    let first = p.delete_webhook("acme", "gone").await.expect("enqueue");
    let Pushed::Enqueued { job } = first else {
        panic!("expected a new job, got {first:?}");
    };
    assert_eq!(
        p.delete_webhook("acme", "gone").await.expect("enqueue"),
        Pushed::Duplicate { job: job.clone() }
    );
    let leased = match q.dispatch().await.expect("dispatch") {
        lsq_webhooks::queue::Dispatch::Job(j) => j,
        other => panic!("expected the job, got {other:?}"),
    };
    assert_eq!(leased.id, job);
    assert_eq!(
        Operation::split(&leased.body).0,
        Operation::Delete(String::new())
    );
    let e = p.delete_webhook("nobody", "k").await;
    assert!(matches!(e, Err(ProducerError::UnknownTenant(_))), "{e:?}");
    let e = p.delete_webhook("acme", "").await;
    assert!(matches!(e, Err(ProducerError::Invalid(_))), "{e:?}");
}
