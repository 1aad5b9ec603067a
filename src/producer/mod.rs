//! Putting jobs on a queue.
//!
//! Every job is validated before anything is written: its JSON shape
//! (`{"tenant","webhook","key"?}`, nothing else), its tenant (registered), and its webhook
//! (LeadSquared's Create rules, [`CreateWebhook::from_value`]). A valid job is stored with
//! its body normalised (as it will be sent) and a key naming the webhook: the one given, or
//! one derived from the tenant, event and description, so the same webhook enqueued twice
//! is recognised, and a changed body is an update of it (issue 18).
//!
//! Two ways in: [`read_jobs`] for a JSON Lines file (every line checked, each problem
//! reported as `line N: field: reason`), and [`Producer`] for Rust services.
//!
//! - [`check`]: one job, checked: [`check_line`] (a fast road for the usual valid line, the
//!   slow one naming every problem), [`validate`], [`parse_line`], [`check_tenant`].
//! - [`file`](mod@file): a job file, read and checked on every core, problems by line number.
//! - [`push`]: the [`Producer`]: chunked, idempotent pushes that ride out a Redis restart
//!   and stop, saying how far they got, when Redis is full.
//!
//! [`CreateWebhook::from_value`]: crate::leadsquared::CreateWebhook::from_value

pub mod check;
pub mod file;
pub mod push;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use check::{check_line, check_tenant, parse_line, validate, validate_within};
pub use file::{JobFile, LineError, ScanTotals, check_jobs, read_jobs, scan_jobs};
pub use push::{PUSH_CHUNK, PUSH_RETRY_FOR, Producer, ProducerError, PushSummary};

/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// A job as a producer gives it: the shape of one line of a job file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Tenant name; must be registered.
    pub tenant: String,
    /// The Create body as LeadSquared takes it (absent, `null`, for a delete).
    #[serde(default)]
    pub webhook: Value,
    /// Idempotency key: names the logical webhook within its tenant; derived from tenant,
    /// `WebhookEvent` and `Description` when absent (see [`crate::job::derived_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Removes the webhook `key` names; such a line has a `key` and no `webhook`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// Jobs and registries the tests of the submodules share.
#[cfg(test)]
mod fixtures {
    use std::collections::HashSet;

    use serde_json::Value;

    pub fn body() -> Value {
        serde_json::json!({
            "Description": "d",
            "URL": "https://example.com/h",
            "Method": "POST",
            "ContentType": "application/json",
            "WebhookEvent": "3",
            "IsSpecificLandingPage": false,
            "NotifyOnFailure": true,
            "WebhookProperties": null,
            "CustomHeaders": [{"Key": "x-api-key", "Value": "SECRET-VALUE"}]
        })
    }

    pub fn registered() -> HashSet<String> {
        ["acme".to_string()].into_iter().collect()
    }
}
