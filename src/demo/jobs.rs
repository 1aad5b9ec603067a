//! The jobs a demo run enqueues: plain webhooks with descriptions no other job's contains,
//! checked as `enqueue` checks them.

use super::{DemoConfig, DemoError};
use crate::job::NewJob;
use crate::producer::JobRequest;

/// A Create body: a plain lead or task event, a description no other job's contains (the
/// reconcile searches by description).
fn webhook(tenant: &str, n: u64) -> serde_json::Value {
    const EVENTS: [&str; 4] = ["3", "6", "5", "7"];
    serde_json::json!({
        "Description": format!("demo {tenant} webhook {n:06}"),
        "URL": format!("https://hooks.example.com/{tenant}/{n}"),
        "Method": "POST",
        "ContentType": "application/json",
        "WebhookEvent": EVENTS[(n % 4) as usize],
        "IsSpecificLandingPage": false,
        "NotifyOnFailure": false,
        "WebhookProperties": null,
        "CustomHeaders": []
    })
}

/// A tenant's job number `n`, checked and normalised the way `enqueue` and the HTTP API do
/// it (its key derived from tenant, event and description).
fn job(tenant: &str, n: u64) -> Result<NewJob, DemoError> {
    let request = JobRequest {
        delete: false,
        tenant: tenant.to_string(),
        webhook: webhook(tenant, n),
        key: None,
    };
    crate::producer::validate(&request).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        DemoError::Config(format!("a demo job is invalid: {}", list.join("; ")))
    })
}

/// Jobs pushed per call: one Redis script run each, small enough to stay quick.
pub(super) const PUSH_BATCH: usize = 500;

/// Every job of the run, tenants taking turns in the order, so that each has work from the
/// first batch pushed.
pub(super) fn all_jobs(config: &DemoConfig) -> Result<Vec<NewJob>, DemoError> {
    let most = config
        .tenants
        .iter()
        .map(|t| config.jobs_for(t.limit))
        .max()
        .unwrap_or(0);
    let mut all = Vec::with_capacity(config.total_jobs() as usize);
    for n in 0..most {
        for t in &config.tenants {
            if n < config.jobs_for(t.limit) {
                all.push(job(&t.name, n)?);
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_jobs_are_valid_and_descriptions_do_not_contain_each_other() {
        let descriptions: Vec<String> =
            (0..120)
                .map(|n| match job("acme", n) {
                    Ok(j) => serde_json::from_str::<serde_json::Value>(&j.body).unwrap_or_default()
                        ["Description"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    Err(e) => panic!("job {n}: {e}"),
                })
                .collect();
        for (i, a) in descriptions.iter().enumerate() {
            for (k, b) in descriptions.iter().enumerate() {
                assert!(i == k || !a.contains(b.as_str()), "{a} contains {b}");
            }
        }
    }
}
