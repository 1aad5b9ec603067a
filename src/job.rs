//! Jobs as producers write them and as the queue keeps them.
//!
//! A job file is JSON Lines, one job a line:
//! `{"tenant":"acme","webhook":{...Create body...},"key":"optional idempotency key"}`.
//! A job's idempotency key is the given `key`, or derived from the tenant and the canonical
//! form of the body, so the same webhook enqueued twice is recognised as a duplicate.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A job's id: a UUIDv7 string, so ids sort by enqueue time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl JobId {
    /// A fresh id.
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job ready to be pushed: its body already validated against the LeadSquared rules
/// (by `producer::validate`, which is how jobs are normally made).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Tenant name; must exist in the registry.
    pub tenant: String,
    /// The Create body exactly as LeadSquared takes it, as JSON text: canonical
    /// (`CreateWebhook::to_json`) when made by `producer::validate`. Stored as given; may
    /// hold custom header values, so never logged.
    pub body: String,
    /// Idempotency key: given by the producer or [`derived_key`].
    pub key: String,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting in its tenant's list.
    Queued,
    /// Waiting for a retry time.
    Scheduled,
    /// Held by a worker under a lease.
    Running,
    /// Finished with a webhook Id.
    Done,
    /// Gave up; `error` says why.
    Dead,
}

impl JobState {
    /// The lowercase name used in files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Dead => "dead",
        }
    }
}

/// One finished (or unfinished) job as `results`, `dead list` and `GET /v1/jobs/{id}` show it.
/// Holds no secret: custom header values stay in the stored body, which this omits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobResult {
    /// Job id.
    pub job: JobId,
    /// Tenant name.
    pub tenant: String,
    /// Idempotency key.
    pub key: String,
    /// Current state.
    pub status: JobState,
    /// The Id LeadSquared gave the webhook, once done.
    pub webhook_id: Option<String>,
    /// Attempts spent (rate-limited calls do not count).
    pub attempts: u32,
    /// Why it died, or the last transient error while it is retried.
    pub error: Option<String>,
    /// Done by finding an already created webhook (Retrieve) rather than by Create.
    #[serde(default)]
    pub reconciled: bool,
}

/// How many attempts a job's history keeps: the last ones.
pub const HISTORY_LEN: usize = 20;

/// One call made for a job, as its history keeps it (issue 15). Never holds a secret: the
/// error is the worker's redacted reason, as `JobResult::error` is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the call was sent, ms since the epoch.
    pub at_ms: u64,
    /// The call: `create`, or `retrieve` (the reconcile looking for a webhook an earlier
    /// attempt may have created).
    pub call: String,
    /// How it ended: `created`, `found`, `not_found`, `rate_limited`, `transient` or
    /// `permanent`.
    pub outcome: String,
    /// The HTTP status of the answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// LeadSquared's `ExceptionType`, when the answer named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception_type: Option<String>,
    /// From sending the call to its answer, ms.
    pub duration_ms: u64,
    /// The error's text, for a failed call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A job with its history: what `lsq-webhooks job` and `GET /v1/jobs/{id}` show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    /// The job's record.
    #[serde(flatten)]
    pub job: JobResult,
    /// Its last calls, oldest first (at most [`HISTORY_LEN`]).
    pub history: Vec<Attempt>,
}

/// The idempotency key of a job that did not name one: `sha256:` and the hex digest of the
/// tenant, a newline, and the body in canonical JSON (object keys sorted at every depth, no
/// whitespace: `CreateWebhook::to_json`, or `serde_json::Value`'s `to_string`, whose maps
/// are sorted). Two bodies equal as JSON give the same key whatever their key order.
pub fn derived_key(tenant: &str, canonical_body: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(tenant.as_bytes());
    hash.update(b"\n");
    hash.update(canonical_body.as_bytes());
    format!("sha256:{}", hex::encode(hash.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_key_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"URL":"https://x","Description":"d"}"#).unwrap_or_default();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "Description" : "d", "URL": "https://x" }"#)
                .unwrap_or_default();
        let (a, b) = (a.to_string(), b.to_string());
        assert_eq!(derived_key("acme", &a), derived_key("acme", &b));
        assert_ne!(derived_key("acme", &a), derived_key("beta", &a));
    }
}
