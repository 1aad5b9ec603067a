//! The Create body: typed, serialised exactly as LeadSquared takes it, and decoded from a
//! job's `webhook` object with every rule checked before anything is sent.
//!
//! Decoding is hand-written rather than `#[derive(Deserialize)]` so that one pass reports
//! every problem, each naming its field, and so that no message ever quotes a custom header
//! value (serde's own errors quote the offending input).
//!
//! Two roads lead to a [`CreateWebhook`], and they end in the same rules:
//! - `body.rs`: the body types ([`CreateWebhook`], [`CustomHeader`], [`ContentType`],
//!   [`Method`]) and how they serialise (canonical JSON, as a job stores it);
//! - `event.rs`: LeadSquared's event codes ([`WebhookEvent`]) and the shape of properties
//!   each takes ([`EventFamily`]);
//! - `check.rs`: the road that names every problem ([`CreateWebhook::check`]): each field
//!   read and checked on its own, from a `serde_json::Value`;
//! - `limits.rs`: how large each part may be ([`BodyLimits`]), checked by producers before
//!   a job is enqueued (this project's limits, not LeadSquared's);
//! - `properties.rs`: the `WebhookProperties` rules of activity and opportunity events;
//! - `raw.rs`: the fast road for a body in its usual shape ([`RawWebhook`],
//!   [`CreateWebhook::from_raw`]), and the rules that join fields, where both roads end.

mod body;
mod check;
mod event;
mod limits;
mod properties;
mod raw;

pub use body::{ContentType, CreateWebhook, CustomHeader, MAX_CUSTOM_HEADERS, Method};
pub use check::FIELDS;
pub use event::{EventFamily, WebhookEvent};
pub use limits::BodyLimits;
pub use raw::RawWebhook;

/// One reason a `webhook` object is refused, naming the field (`URL`, `CustomHeaders[3].Key`,
/// `WebhookProperties.OpportunityEvents`, or `webhook` for the object as a whole). Never
/// quotes a custom header value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as LeadSquared spells it, with a path for nested ones.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// How LeadSquared would answer a body with this problem, so the simulator can answer the
/// same way: a body it cannot deserialise is a 400, an input it reads but refuses a 500 with
/// an `MX...Exception`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not per the API's shape: not an object, unknown field, wrong JSON type. (400)
    Shape,
    /// A mandatory field is missing. (500 `MXMandatoryAttributeMissingException`)
    Missing,
    /// A value of the right type that is not allowed. (500 `MXInvalidInputException`)
    Invalid,
}

/// A [`FieldError`] with the kind of rejection it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Which field and why.
    pub error: FieldError,
    /// How LeadSquared answers it.
    pub kind: Rejection,
}

/// Bodies and helpers the unit tests of every part share.
#[cfg(test)]
mod fixtures {
    use serde_json::{Value, json};

    use super::CreateWebhook;

    pub(super) fn seed_body() -> Value {
        // The example from LeadSquared's "Create a Webhook" page (event 3 here: the page's
        // event 1 example omits the LandingPageUrls its own rules require).
        json!({
            "Description": "Description of webhook",
            "URL": "https://requestb.in/19n3y3u1",
            "Method": "POST",
            "ContentType": "application/json",
            "WebhookEvent": "3",
            "IsSpecificLandingPage": false,
            "NotifyOnFailure": true,
            "WebhookProperties": null,
            "CustomHeaders": [
                {"Key": "x-api-key", "Value": "j5FtwJk44e6fJHzbKc3fa82pJQQoBa7MebQHXAP"},
                {"Key": "x-api-key", "Value": "j5FtwJk44e6fJHzbKc3fa82pJQQoBa7MebQHXAP6"}
            ]
        })
    }

    /// The seed body as event 2 (lead activity create), with the documented properties.
    pub(super) fn activity_body() -> Value {
        let mut body = seed_body();
        body["WebhookEvent"] = json!("2");
        body["WebhookProperties"] =
            json!(r#"{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}"#);
        body
    }

    pub(super) fn errors(v: Value) -> Vec<String> {
        match CreateWebhook::from_value(&v) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    pub(super) fn has(errs: &[String], prefix: &str) -> bool {
        errs.iter().any(|e| e.starts_with(prefix))
    }
}
