//! Jobs as producers write them and as the queue keeps them.
//!
//! A job file is JSON Lines, one job a line:
//! `{"tenant":"acme","webhook":{...Create body...},"key":"optional idempotency key"}`, or
//! `{"tenant":"acme","key":"...","delete":true}`. A job's key names the logical webhook: the
//! given `key`, or derived from the tenant, event and description ([`derived_key`]), so the
//! same webhook enqueued twice is a duplicate and a changed body an update ([`Operation`];
//! issue 18).

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
    /// The job removes the webhook its key names (`"delete": true`); `body` is then empty.
    #[serde(default)]
    pub delete: bool,
    /// The key version 1 would have derived ([`legacy_key`]), for a job without a key of
    /// its own: a queue holding a job under it takes this job as that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_key: Option<String>,
}

impl NewJob {
    /// What the push compares with the key's done record: the body's digest, or `-` for a
    /// delete.
    pub fn digest(&self) -> String {
        if self.delete {
            "-".into()
        } else {
            body_digest(&self.body)
        }
    }
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
    /// What it did, once done (`None` for a job done before outcomes were recorded: it
    /// created its webhook).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Once done: [`body_digest`] of the body the webhook has, for `sync`'s plan. Not shown
    /// anywhere (digests of header values are not for output).
    #[serde(skip)]
    pub digest: Option<String>,
    /// Once done: [`field_digests`] of that body, for `sync`'s plan; not shown either.
    #[serde(skip)]
    pub fields: Option<String>,
    /// Once finished: when, ms since the Unix epoch, by the queue's clock. It orders the
    /// finished jobs of several shards (`results`, `dead list`); not shown.
    #[serde(skip)]
    pub finished_ms: Option<u64>,
}

/// What a job does at LeadSquared. A push decides it (a key already done with another body
/// is an update, a `delete` line a delete) and the queue keeps it in front of the stored
/// body: `update <webhook id>\n` or `delete <webhook id>\n` (a Create body is a JSON
/// object, so it starts with `{` and needs no mark). The Id is the one the key's done
/// record holds (empty when it has none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Create the webhook.
    Create,
    /// Update the webhook with this Id (or, if it is gone, the one Retrieve finds by the
    /// body's description).
    Update(String),
    /// Delete the webhook with this Id.
    Delete(String),
}

impl Operation {
    /// The stored form: the mark, then the Create body.
    pub fn wrap(&self, body: &str) -> String {
        match self {
            Operation::Create => body.to_string(),
            Operation::Update(id) => format!("update {id}\n{body}"),
            Operation::Delete(id) => format!("delete {id}\n{body}"),
        }
    }

    /// The operation and the Create body of a stored body (see [`Operation::wrap`]).
    pub fn split(stored: &str) -> (Operation, &str) {
        let marked = |mark: &str| {
            let rest = stored.strip_prefix(mark)?;
            let (id, body) = rest.split_once('\n')?;
            Some((id.to_string(), body))
        };
        if let Some((id, body)) = marked("update ") {
            (Operation::Update(id), body)
        } else if let Some((id, body)) = marked("delete ") {
            (Operation::Delete(id), body)
        } else {
            (Operation::Create, stored)
        }
    }
}

/// What a done job did (`results`, the status page, `lsq_job_outcomes_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Created the webhook (or found the one an earlier attempt created).
    Created,
    /// Updated it to the job's body.
    Updated,
    /// Nothing to change: it already had the job's body.
    Unchanged,
    /// Deleted it.
    Deleted,
    /// A delete found no such webhook (which counts as done).
    NotFound,
}

impl Outcome {
    /// Every outcome, in the order counts show them.
    pub const ALL: [Outcome; 5] = [
        Outcome::Created,
        Outcome::Updated,
        Outcome::Unchanged,
        Outcome::Deleted,
        Outcome::NotFound,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::NotFound => "not_found",
        }
    }

    /// The outcome named `s` (as [`Outcome::as_str`] writes it).
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// How many attempts a job's history keeps: the last ones.
pub const HISTORY_LEN: usize = 20;

/// One call made for a job, as its history keeps it (issue 15). Never holds a secret: the
/// error is the worker's redacted reason, as `JobResult::error` is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the call was sent, ms since the epoch.
    pub at_ms: u64,
    /// The call: `create`, `retrieve` (the reconcile looking for a webhook an earlier
    /// attempt may have created), `update` or `delete` (issue 18).
    pub call: String,
    /// How it ended: `created`, `found`, `not_found`, `updated`, `deleted`,
    /// `rate_limited`, `transient` or `permanent`.
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

/// The digest a done record keeps of the body it made LeadSquared hold: `sha256:` and the
/// hex digest of the body in canonical JSON. A job pushed later under the same key with
/// another digest is an update; with the same one, a duplicate.
pub fn body_digest(canonical_body: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical_body.as_bytes()))
    )
}

/// A short digest of each field of a canonical body, for naming what an update changes
/// without keeping the old body (its header values are secrets): `Field=hex8` per
/// top-level field and `header:Key=hex8` per custom header, sorted, space-separated. A
/// digest, never a value, so it can be kept with the done record.
pub fn field_digests(canonical_body: &str) -> String {
    let short = |v: &serde_json::Value| hex::encode(&Sha256::digest(v.to_string().as_bytes())[..4]);
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(canonical_body) else {
        return String::new();
    };
    let mut out: Vec<String> = Vec::with_capacity(fields.len() + 2);
    for (name, value) in &fields {
        match (name.as_str(), value) {
            ("CustomHeaders", serde_json::Value::Array(headers)) => {
                for h in headers {
                    let key = h.get("Key").and_then(serde_json::Value::as_str);
                    let value = h.get("Value").cloned().unwrap_or_default();
                    // Keys with a space or `=` cannot be told apart in this form; they are
                    // rare, and naming them "a header" is enough.
                    let key = key.unwrap_or_default().replace([' ', '='], "_");
                    out.push(format!("header:{key}={}", short(&value)));
                }
            }
            _ => out.push(format!("{name}={}", short(value))),
        }
    }
    out.sort();
    out.join(" ")
}

/// The fields whose digests differ between two [`field_digests`], named for a plan: `URL`,
/// `header x-api-key value`, `header x-new added`, ... (never a value).
pub fn changed_fields(old: &str, new: &str) -> Vec<String> {
    let parse = |s: &str| -> std::collections::BTreeMap<String, String> {
        s.split(' ')
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (old, new) = (parse(old), parse(new));
    let name = |k: &str, what: &str| match k.strip_prefix("header:") {
        Some(h) => format!("header {h} {what}"),
        None => k.to_string(),
    };
    let mut out = Vec::new();
    for (k, v) in &new {
        match old.get(k) {
            Some(o) if o == v => {}
            Some(_) => out.push(name(k, "value")),
            None => out.push(name(k, "added")),
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(name(k, "removed"));
    }
    out
}

/// The prefix of keys derived by [`derived_key`] (version 2 of the derivation).
pub const DERIVED_KEY_PREFIX: &str = "webhook:";

/// The idempotency key of a job that did not name one: it names the logical webhook, not
/// its body, so a changed URL or header value is an update of the same webhook:
/// [`DERIVED_KEY_PREFIX`] and the hex SHA-256 of the tenant, the `WebhookEvent` code and the
/// `Description`, each followed by a newline (issue 18).
pub fn derived_key(tenant: &str, event: u32, description: &str) -> String {
    let mut hash = Sha256::new();
    for part in [tenant, &event.to_string(), description] {
        hash.update(part.as_bytes());
        hash.update(b"\n");
    }
    format!("{DERIVED_KEY_PREFIX}{}", hex::encode(hash.finalize()))
}

/// The key version 1 derived (before issue 18): `sha256:` and the hex digest of the
/// tenant, a newline, and the body in canonical JSON (object keys sorted at every depth, no
/// whitespace: `CreateWebhook::to_json`, or `serde_json::Value`'s `to_string`, whose maps
/// are sorted). Still computed for every job without a key, so that a queue holding jobs
/// keyed this way recognises the same job pushed again (see `docs/decisions.md`, issue 18).
pub fn legacy_key(tenant: &str, canonical_body: &str) -> String {
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
    fn legacy_key_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"URL":"https://x","Description":"d"}"#).unwrap_or_default();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "Description" : "d", "URL": "https://x" }"#)
                .unwrap_or_default();
        let (a, b) = (a.to_string(), b.to_string());
        assert_eq!(legacy_key("acme", &a), legacy_key("acme", &b));
        assert_ne!(legacy_key("acme", &a), legacy_key("beta", &a));
    }

    #[test]
    fn derived_key_names_the_webhook_not_its_body() {
        let k = derived_key("acme", 3, "CRM sync");
        assert!(k.starts_with(DERIVED_KEY_PREFIX), "{k}");
        assert_eq!(k, derived_key("acme", 3, "CRM sync"));
        assert_ne!(k, derived_key("acme", 6, "CRM sync"));
        assert_ne!(k, derived_key("beta", 3, "CRM sync"));
        // The separator keeps the parts apart.
        assert_ne!(derived_key("a", 3, "b\nc"), derived_key("a\n3", 3, "c"));
    }

    #[test]
    fn operations_round_trip_through_the_stored_body() {
        let body = r#"{"Description":"d"}"#;
        assert_eq!(Operation::split(body), (Operation::Create, body));
        let up = Operation::Update("w-1".into()).wrap(body);
        assert_eq!(
            Operation::split(&up),
            (Operation::Update("w-1".into()), body)
        );
        let del = Operation::Delete("w-2".into()).wrap("");
        assert_eq!(
            Operation::split(&del),
            (Operation::Delete("w-2".into()), "")
        );
        assert_eq!(body_digest(body), body_digest(body));
        assert_ne!(body_digest(body), body_digest(&up));
    }

    #[test]
    fn changed_fields_name_fields_and_headers_never_values() {
        let a = r#"{"CustomHeaders":[{"Key":"x-api-key","Value":"old-secret"}],"URL":"https://a"}"#;
        let b = r#"{"CustomHeaders":[{"Key":"x-api-key","Value":"new-secret"},{"Key":"x-t","Value":"1"}],"URL":"https://b"}"#;
        let (fa, fb) = (field_digests(a), field_digests(b));
        assert!(
            !fa.contains("old-secret") && !fb.contains("new-secret"),
            "{fa} {fb}"
        );
        assert_eq!(
            changed_fields(&fa, &fb),
            vec!["URL", "header x-api-key value", "header x-t added"]
        );
        assert_eq!(
            changed_fields(&fb, &fa),
            vec!["URL", "header x-api-key value", "header x-t removed"]
        );
        assert!(changed_fields(&fa, &fa).is_empty());
    }
}
