//! Helpers for the tests of issue 18 (webhooks in their desired state): job lines checked
//! as `enqueue` checks them, the desired state they describe, and the check of the
//! simulator's webhooks against it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use lsq_webhooks::job::{NewJob, body_digest};
use lsq_webhooks::producer::{JobRequest, validate};
use lsq_webhooks::sim::SimStats;

/// The description of `tenant`'s hook `n`: fixed width, so no description contains another
/// (Retrieve's `SearchText` matches by substring).
pub fn description(tenant: &str, n: usize) -> String {
    format!("{tenant} hook {n:04}")
}

/// A webhook body for `tenant`'s hook `n`, posting to `url`, with a header value `secret`.
pub fn hook(tenant: &str, n: usize, url: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "Description": description(tenant, n),
        "URL": url,
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": "3",
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": [{"Key": "x-api-key", "Value": secret}]
    })
}

/// A job line with a derived key, checked as `enqueue` checks it.
pub fn create(tenant: &str, webhook: serde_json::Value) -> NewJob {
    validate(&JobRequest {
        tenant: tenant.into(),
        webhook,
        key: None,
        delete: false,
    })
    .expect("valid job")
}

/// The delete line of the webhook `job` named.
pub fn delete(job: &NewJob) -> NewJob {
    validate(&JobRequest {
        tenant: job.tenant.clone(),
        webhook: serde_json::Value::Null,
        key: Some(job.key.clone()),
        delete: true,
    })
    .expect("valid delete")
}

/// What each tenant's account should hold: (description, URL, body digest) per webhook.
pub type Desired = BTreeMap<String, BTreeSet<(String, String, String)>>;

/// The desired state of a sequence of pushes: the last line per key wins; a delete
/// removes.
pub fn desired(pushes: &[NewJob]) -> Desired {
    let mut last: BTreeMap<(String, String), &NewJob> = BTreeMap::new();
    for job in pushes {
        last.insert((job.tenant.clone(), job.key.clone()), job);
    }
    let mut out = Desired::new();
    for ((tenant, _), job) in last {
        let entry = out.entry(tenant).or_default();
        if job.delete {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&job.body).expect("body");
        entry.insert((
            v["Description"].as_str().unwrap_or_default().to_string(),
            v["URL"].as_str().unwrap_or_default().to_string(),
            body_digest(&job.body),
        ));
    }
    out
}

/// Every tenant named in `desired` holds exactly its webhooks in the simulator, and no
/// create was a duplicate.
pub fn assert_sim_holds(sim: &SimStats, desired: &Desired) {
    for (tenant, want) in desired {
        let account = sim.accounts.get(tenant);
        let have: BTreeSet<(String, String, String)> = account
            .map(|a| {
                a.webhooks
                    .iter()
                    .map(|w| (w.description.clone(), w.url.clone(), w.body_digest.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let count = account.map_or(0, |a| a.webhooks.len());
        assert_eq!(
            &have, want,
            "tenant {tenant}: the simulator holds another state"
        );
        assert_eq!(
            count,
            want.len(),
            "tenant {tenant}: a webhook is there twice"
        );
        assert_eq!(account.map_or(0, |a| a.duplicates), 0, "tenant {tenant}");
    }
}

/// Runs a worker pool on `queue` until it is idle (quick retries; hosts are never
/// discovered: every tenant has its `api_base`).
pub async fn drain(queue: std::sync::Arc<dyn lsq_webhooks::queue::Queue>) {
    use lsq_webhooks::worker::{Pool, RetryPolicy, WorkerConfig};
    let client = lsq_webhooks::leadsquared::Client::new(lsq_webhooks::leadsquared::ClientConfig {
        timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    })
    .expect("client");
    let pool = Pool::new(
        queue,
        client,
        WorkerConfig {
            concurrency: 8,
            exit_when_idle: true,
            retry: RetryPolicy {
                base: std::time::Duration::from_millis(10),
                factor: 2.0,
                cap: std::time::Duration::from_millis(200),
            },
            reconcile_settle: std::time::Duration::from_millis(300),
            discovery_url: url::Url::parse("http://127.0.0.1:1").expect("url"),
            ..WorkerConfig::default()
        },
    );
    let run = pool.run(tokio_util::sync::CancellationToken::new());
    tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the pool finishes and exits when idle")
        .expect("the pool runs");
}
