//! The body types of `Create`, and how they serialise: the text a job stores and sends.

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::WebhookEvent;
use crate::secret::Secret;

/// LeadSquared's documented maximum number of custom headers on one webhook.
pub const MAX_CUSTOM_HEADERS: usize = 10;

/// The body of `POST /v2/Webhook.svc/Create`, valid by construction when built by
/// [`CreateWebhook::from_value`]. `Debug` never shows custom header values.
///
/// The fields are declared in the byte order of their JSON names, so serialising it gives
/// canonical JSON (keys sorted at every depth, as a `serde_json::Value` would print): the
/// text a job stores, and what its digest (`job::body_digest`) and the key version 1
/// derived (`job::legacy_key`) hash.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CreateWebhook {
    /// Top-level copy of the activity event code. Public client code reports that Create
    /// answers 500 `MXInvalidDataTypeException` for event 2 without it (medium confidence),
    /// so [`CreateWebhook::from_value`] fills it from `WebhookProperties` for event 2.
    #[serde(rename = "ActivityEvent", skip_serializing_if = "Option::is_none")]
    pub activity_event: Option<String>,
    /// The format LeadSquared posts the data in.
    #[serde(rename = "ContentType")]
    pub content_type: ContentType,
    /// Headers LeadSquared adds to each delivery (often the receiver's API key).
    #[serde(rename = "CustomHeaders")]
    pub custom_headers: Vec<CustomHeader>,
    /// Free text; also what `Retrieve`'s `SearchText` matches, so it is how an already
    /// created webhook is found again.
    #[serde(rename = "Description")]
    pub description: String,
    /// True exactly when `landing_page_urls` is given.
    #[serde(rename = "IsSpecificLandingPage")]
    pub is_specific_landing_page: bool,
    /// Landing pages the event is limited to; mandatory for [`WebhookEvent::LandingPageSubmission`].
    #[serde(rename = "LandingPageUrls", skip_serializing_if = "Option::is_none")]
    pub landing_page_urls: Option<Vec<String>>,
    /// Always `POST` (the only method LeadSquared supports).
    #[serde(rename = "Method", serialize_with = "post")]
    pub method: Method,
    /// Whether LeadSquared notifies the account when a delivery fails.
    #[serde(rename = "NotifyOnFailure")]
    pub notify_on_failure: bool,
    /// Where LeadSquared posts the event: an absolute http or https URL, sent as given.
    #[serde(rename = "URL")]
    pub url: String,
    /// What triggers the webhook; sent as a string number (`"3"`).
    #[serde(rename = "WebhookEvent")]
    pub event: WebhookEvent,
    /// Activity or opportunity details; sent as a JSON object serialised into a string,
    /// or `null`.
    #[serde(rename = "WebhookProperties", serialize_with = "properties_as_string")]
    pub properties: Option<Map<String, Value>>,
}

/// The delivery method. LeadSquared only supports `POST`; the type exists so the field is
/// typed like the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Method {
    /// `POST`.
    #[default]
    Post,
}

fn post<S: Serializer>(_: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("POST")
}

fn properties_as_string<S: Serializer>(
    p: &Option<Map<String, Value>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        None => s.serialize_none(),
        Some(map) => {
            let text = serde_json::to_string(map).map_err(serde::ser::Error::custom)?;
            s.serialize_str(&text)
        }
    }
}

/// One custom header: `{"Key": "...", "Value": "..."}`. The value is a [`Secret`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CustomHeader {
    /// Header name, non-empty.
    #[serde(rename = "Key")]
    pub key: String,
    /// Header value; never logged or quoted in an error.
    #[serde(rename = "Value")]
    pub value: Secret,
}

/// The format LeadSquared posts event data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `application/json`.
    Json,
    /// `application/x-www-form-urlencoded`.
    FormUrlEncoded,
    /// `text/plain`.
    TextPlain,
}

impl ContentType {
    /// Every content type LeadSquared accepts.
    pub const ALL: [ContentType; 3] = [
        ContentType::Json,
        ContentType::FormUrlEncoded,
        ContentType::TextPlain,
    ];

    /// The MIME type as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::FormUrlEncoded => "application/x-www-form-urlencoded",
            ContentType::TextPlain => "text/plain",
        }
    }

    /// The content type with this exact MIME name.
    pub fn parse(s: &str) -> Option<ContentType> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl Serialize for ContentType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl CreateWebhook {
    /// The body as JSON, exactly as sent to LeadSquared (custom header values included:
    /// store or send it, never log it).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The body as canonical JSON text: keys sorted at every depth, no whitespace; equal to
    /// `to_value().to_string()`, in one pass. What a queued job stores and what its derived
    /// idempotency key hashes (custom header values included: never log it).
    pub fn to_json(&self) -> String {
        // Room for a typical body up front: growing the buffer step by step was a fifth of
        // the time of checking a job file.
        let mut out = Vec::with_capacity(512);
        // Serialising plain strings, bools and maps of JSON values cannot fail, and what
        // serde_json writes is UTF-8; the fallback is the same text by the slower road.
        match serde_json::to_writer(&mut out, self).map(|()| String::from_utf8(out)) {
            Ok(Ok(text)) => text,
            _ => self.to_value().to_string(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for CreateWebhook {
    /// Decodes through [`CreateWebhook::from_value`]; the error lists every field problem.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        CreateWebhook::from_value(&v).map_err(|errors| {
            serde::de::Error::custom(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::leadsquared::webhook::fixtures::seed_body;

    #[test]
    fn seed_example_round_trips_to_the_same_body() {
        let body = seed_body();
        let w = CreateWebhook::from_value(&body).expect("valid");
        assert_eq!(w.event, WebhookEvent::LeadCreate);
        assert_eq!(w.to_value(), body);
    }

    #[test]
    fn serialises_event_as_string_and_properties_as_json_string() {
        let mut body = seed_body();
        body["WebhookEvent"] = json!("32");
        body["WebhookProperties"] =
            json!(r#"{"OpportunityEvents":["12002"],"IsAsyncEnable":true}"#);
        let w = CreateWebhook::from_value(&body).expect("valid");
        let out = w.to_value();
        assert_eq!(out["WebhookEvent"], json!("32"));
        let props = out["WebhookProperties"].as_str().expect("a string");
        let parsed: Value = serde_json::from_str(props).expect("json inside");
        assert_eq!(
            parsed,
            json!({"OpportunityEvents":["12002"],"IsAsyncEnable":true})
        );
    }

    #[test]
    fn event_code_as_number_is_sent_as_string_and_method_defaults_to_post() {
        let mut body = seed_body();
        body["WebhookEvent"] = json!(6);
        body.as_object_mut().map(|o| o.remove("Method"));
        let w = CreateWebhook::from_value(&body).expect("valid");
        assert_eq!(w.to_value()["WebhookEvent"], json!("6"));
        assert_eq!(w.to_value()["Method"], json!("POST"));
    }

    #[test]
    fn debug_never_shows_header_values() {
        let w = CreateWebhook::from_value(&seed_body()).expect("valid");
        let dbg = format!("{w:?}");
        assert!(!dbg.contains("j5FtwJk44e6"), "{dbg}");
        assert!(dbg.contains("x-api-key"));
    }

    #[test]
    fn deserialize_goes_through_validation() {
        let ok: Result<CreateWebhook, _> = serde_json::from_value(seed_body());
        assert!(ok.is_ok());
        let mut b = seed_body();
        b["URL"] = json!("nope");
        let err = serde_json::from_value::<CreateWebhook>(b)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("URL: "), "{err}");
    }

    #[test]
    fn to_json_is_the_canonical_text_of_to_value() {
        let mut landing = seed_body();
        landing["WebhookEvent"] = json!("1");
        landing["IsSpecificLandingPage"] = json!(true);
        landing["LandingPageUrls"] = json!(["https://lp.example/b", "https://lp.example/a"]);
        let mut activity = seed_body();
        activity["WebhookEvent"] = json!("2");
        activity["WebhookProperties"] =
            json!(r#"{"WebPageNames":"[]","ActivityEvent":"247","ActivityData":"[]"}"#);
        for body in [seed_body(), landing, activity] {
            let w = CreateWebhook::from_value(&body).expect("valid");
            let text = w.to_json();
            assert_eq!(text, w.to_value().to_string());
            // Every optional field is exercised by one of the bodies above.
            let back: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(CreateWebhook::from_value(&back).expect("valid"), w);
        }
    }
}
