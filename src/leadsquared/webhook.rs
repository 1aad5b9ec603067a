//! The Create body: typed, serialised exactly as LeadSquared takes it, and decoded from a
//! job's `webhook` object with every rule checked before anything is sent.
//!
//! Decoding is hand-written rather than `#[derive(Deserialize)]` so that one pass reports
//! every problem, each naming its field, and so that no message ever quotes a custom header
//! value (serde's own errors quote the offending input).

use std::borrow::Cow;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::secret::Secret;

/// LeadSquared's documented maximum number of custom headers on one webhook.
pub const MAX_CUSTOM_HEADERS: usize = 10;

/// The body of `POST /v2/Webhook.svc/Create`, valid by construction when built by
/// [`CreateWebhook::from_value`]. `Debug` never shows custom header values.
///
/// The fields are declared in the byte order of their JSON names, so serialising it gives
/// canonical JSON (keys sorted at every depth, as a `serde_json::Value` would print): the
/// text a job stores and its derived idempotency key hashes (`job::derived_key`).
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

/// What triggers a webhook: LeadSquared's 18 event codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEvent {
    /// 1: landing page submission (needs `LandingPageUrls`).
    LandingPageSubmission,
    /// 2: lead activity create.
    LeadActivityCreate,
    /// 3: lead create.
    LeadCreate,
    /// 4: lead owner change.
    LeadOwnerChange,
    /// 5: lead stage change.
    LeadStageChange,
    /// 6: lead update.
    LeadUpdate,
    /// 7: task create.
    TaskCreate,
    /// 8: task reminder.
    TaskReminder,
    /// 9: lead score change.
    LeadScoreChange,
    /// 15: lead activity update.
    LeadActivityUpdate,
    /// 16: tasks complete.
    TaskComplete,
    /// 17: task update.
    TaskUpdate,
    /// 26: lead field update.
    LeadFieldUpdate,
    /// 31: opportunity create.
    OpportunityCreate,
    /// 32: opportunity update.
    OpportunityUpdate,
    /// 33: opportunity field update.
    OpportunityFieldUpdate,
    /// 34: opportunity stage update.
    OpportunityStageUpdate,
    /// 35: opportunity delete.
    OpportunityDelete,
}

/// Which shape of `WebhookProperties` an event takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFamily {
    /// Activity events (2, 15): `{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}`.
    Activity,
    /// Opportunity events (31-35): `{"OpportunityEvents":["12002"],"IsAsyncEnable":true,...}`.
    Opportunity,
    /// Every other event: no properties.
    Plain,
}

impl WebhookEvent {
    /// Every event, in code order.
    pub const ALL: [WebhookEvent; 18] = [
        WebhookEvent::LandingPageSubmission,
        WebhookEvent::LeadActivityCreate,
        WebhookEvent::LeadCreate,
        WebhookEvent::LeadOwnerChange,
        WebhookEvent::LeadStageChange,
        WebhookEvent::LeadUpdate,
        WebhookEvent::TaskCreate,
        WebhookEvent::TaskReminder,
        WebhookEvent::LeadScoreChange,
        WebhookEvent::LeadActivityUpdate,
        WebhookEvent::TaskComplete,
        WebhookEvent::TaskUpdate,
        WebhookEvent::LeadFieldUpdate,
        WebhookEvent::OpportunityCreate,
        WebhookEvent::OpportunityUpdate,
        WebhookEvent::OpportunityFieldUpdate,
        WebhookEvent::OpportunityStageUpdate,
        WebhookEvent::OpportunityDelete,
    ];

    /// LeadSquared's numeric code.
    pub fn code(self) -> u32 {
        match self {
            WebhookEvent::LandingPageSubmission => 1,
            WebhookEvent::LeadActivityCreate => 2,
            WebhookEvent::LeadCreate => 3,
            WebhookEvent::LeadOwnerChange => 4,
            WebhookEvent::LeadStageChange => 5,
            WebhookEvent::LeadUpdate => 6,
            WebhookEvent::TaskCreate => 7,
            WebhookEvent::TaskReminder => 8,
            WebhookEvent::LeadScoreChange => 9,
            WebhookEvent::LeadActivityUpdate => 15,
            WebhookEvent::TaskComplete => 16,
            WebhookEvent::TaskUpdate => 17,
            WebhookEvent::LeadFieldUpdate => 26,
            WebhookEvent::OpportunityCreate => 31,
            WebhookEvent::OpportunityUpdate => 32,
            WebhookEvent::OpportunityFieldUpdate => 33,
            WebhookEvent::OpportunityStageUpdate => 34,
            WebhookEvent::OpportunityDelete => 35,
        }
    }

    /// The event with this code.
    pub fn from_code(code: u32) -> Option<WebhookEvent> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The documented name, e.g. "lead create".
    pub fn label(self) -> &'static str {
        match self {
            WebhookEvent::LandingPageSubmission => "landing page submission",
            WebhookEvent::LeadActivityCreate => "lead activity create",
            WebhookEvent::LeadCreate => "lead create",
            WebhookEvent::LeadOwnerChange => "lead owner change",
            WebhookEvent::LeadStageChange => "lead stage change",
            WebhookEvent::LeadUpdate => "lead update",
            WebhookEvent::TaskCreate => "task create",
            WebhookEvent::TaskReminder => "task reminder",
            WebhookEvent::LeadScoreChange => "lead score change",
            WebhookEvent::LeadActivityUpdate => "lead activity update",
            WebhookEvent::TaskComplete => "tasks complete",
            WebhookEvent::TaskUpdate => "task update",
            WebhookEvent::LeadFieldUpdate => "lead field update",
            WebhookEvent::OpportunityCreate => "opportunity create",
            WebhookEvent::OpportunityUpdate => "opportunity update",
            WebhookEvent::OpportunityFieldUpdate => "opportunity field update",
            WebhookEvent::OpportunityStageUpdate => "opportunity stage update",
            WebhookEvent::OpportunityDelete => "opportunity delete",
        }
    }

    /// Which `WebhookProperties` shape this event takes.
    pub fn family(self) -> EventFamily {
        match self.code() {
            2 | 15 => EventFamily::Activity,
            31..=35 => EventFamily::Opportunity,
            _ => EventFamily::Plain,
        }
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.code(), self.label())
    }
}

impl Serialize for WebhookEvent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.code().to_string())
    }
}

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

/// Every top-level field LeadSquared's Create takes (case-sensitive).
pub const FIELDS: [&str; 11] = [
    "Description",
    "URL",
    "Method",
    "ContentType",
    "WebhookEvent",
    "LandingPageUrls",
    "IsSpecificLandingPage",
    "NotifyOnFailure",
    "WebhookProperties",
    "CustomHeaders",
    "ActivityEvent",
];

const ACTIVITY_PROPERTIES: [&str; 3] = ["ActivityEvent", "ActivityData", "WebPageNames"];
const OPPORTUNITY_PROPERTIES: [&str; 7] = [
    "OpportunityEvents",
    "IsAsyncEnable",
    "ChangedOpportunityField",
    "StatusFrom",
    "StatusTo",
    "StageFrom",
    "StageTo",
];

impl CreateWebhook {
    /// Decodes and validates a job's `webhook` object (the Create body as LeadSquared takes
    /// it). Every problem is reported, each naming its field.
    pub fn from_value(v: &Value) -> Result<CreateWebhook, Vec<FieldError>> {
        Self::check(v).map_err(|p| p.into_iter().map(|p| p.error).collect())
    }

    /// [`CreateWebhook::from_value`], with the kind of each problem (the simulator answers
    /// by kind, as LeadSquared does).
    pub fn check(v: &Value) -> Result<CreateWebhook, Vec<Problem>> {
        let mut d = Decoder::default();
        let Some(obj) = v.as_object() else {
            d.push(
                "webhook",
                Rejection::Shape,
                format!("must be a JSON object, found {}", json_type(v)),
            );
            return Err(d.problems);
        };
        for key in obj.keys() {
            if !FIELDS.contains(&key.as_str()) {
                let hint = FIELDS
                    .iter()
                    .find(|f| f.eq_ignore_ascii_case(key))
                    .map(|f| format!(" (field names are case-sensitive: did you mean {f}?)"))
                    .unwrap_or_default();
                d.push(
                    &truncate(key, 64),
                    Rejection::Shape,
                    format!("unknown field{hint}"),
                );
            }
        }

        let description = d.string(obj, "Description", true);
        if description.as_deref().is_some_and(|s| s.trim().is_empty()) {
            d.push(
                "Description",
                Rejection::Invalid,
                "must not be empty".into(),
            );
        }
        let url = d.string(obj, "URL", true);
        if let Some(Err(reason)) = url.as_deref().map(check_http_url) {
            d.push("URL", Rejection::Invalid, reason);
        }
        if let Some(m) = d.string(obj, "Method", false)
            && m != "POST"
        {
            d.push(
                "Method",
                Rejection::Invalid,
                format!("must be \"POST\", found {:?}", truncate(&m, 32)),
            );
        }
        let content_type = d.string(obj, "ContentType", true).and_then(|raw| {
            let ct = ContentType::parse(&raw);
            if ct.is_none() {
                d.push(
                    "ContentType",
                    Rejection::Invalid,
                    format!(
                        "{:?} is not one of {}",
                        truncate(&raw, 64),
                        ContentType::ALL.map(|c| c.as_str()).join(", ")
                    ),
                );
            }
            ct
        });
        let event = d.event(obj);
        let parts = Parts {
            description,
            url,
            content_type,
            event,
            landing_page_urls: d.landing_page_urls(obj),
            is_specific: d.bool(obj, "IsSpecificLandingPage"),
            notify_on_failure: d.bool(obj, "NotifyOnFailure").unwrap_or(false),
            properties: d.properties(obj.get("WebhookProperties"), event),
            custom_headers: d.custom_headers(obj),
            activity_event: d.activity_event(obj),
        };
        parts.assemble(d)
    }

    /// The fast road for a body already decoded into its expected JSON types (borrowed from
    /// the input, see [`RawWebhook`]): the body when every field is valid, `None` on any
    /// doubt, and then [`CreateWebhook::check`] on the same input says what is wrong. Where
    /// it answers, it answers exactly as `check` does (the rules are the same functions;
    /// `producer`'s tests compare the two roads over many variants).
    pub fn from_raw(raw: RawWebhook<'_>) -> Option<CreateWebhook> {
        let description = raw.description;
        let url = raw.url;
        let landing_page_urls = match raw.landing_page_urls {
            None => None,
            Some(urls) if urls.is_empty() => return None,
            Some(urls) => Some(
                urls.into_iter()
                    .map(|u| check_http_url(&u).is_ok().then(|| u.into_owned()))
                    .collect::<Option<Vec<String>>>()?,
            ),
        };
        let mut custom_headers = Vec::new();
        if let Some(headers) = raw.custom_headers {
            if headers.len() > MAX_CUSTOM_HEADERS {
                return None;
            }
            custom_headers.reserve_exact(headers.len());
            for h in headers {
                // Also refuses a blank key: a header name is never empty or space.
                if !is_header_name(&h.key) {
                    return None;
                }
                custom_headers.push(CustomHeader {
                    key: h.key.into_owned(),
                    value: Secret::new(h.value.into_owned()),
                });
            }
        }
        let activity_event = match raw.activity_event {
            None => None,
            Some(code) if is_code(&code) => Some(code.into_owned()),
            Some(_) => return None,
        };
        let event = raw
            .event
            .trim()
            .parse::<u32>()
            .ok()
            .and_then(WebhookEvent::from_code)?;
        let mut d = Decoder::default();
        let properties = match raw.properties {
            None => None,
            Some(text) => d.properties(Some(&Value::String(text.into_owned())), Some(event)),
        };
        let valid = !description.trim().is_empty()
            && check_http_url(&url).is_ok()
            && raw.method.as_deref().is_none_or(|m| m == "POST")
            && d.problems.is_empty();
        if !valid {
            return None;
        }
        Parts {
            description: Some(description.into_owned()),
            url: Some(url.into_owned()),
            content_type: Some(ContentType::parse(&raw.content_type)?),
            event: Some(event),
            landing_page_urls,
            is_specific: raw.is_specific,
            notify_on_failure: raw.notify_on_failure.unwrap_or(false),
            properties,
            custom_headers,
            activity_event,
        }
        .assemble(d)
        .ok()
    }

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

/// A body's fields, each read and checked on its own: what both roads into
/// [`CreateWebhook`] produce before the rules that join fields.
struct Parts {
    description: Option<String>,
    url: Option<String>,
    content_type: Option<ContentType>,
    event: Option<WebhookEvent>,
    landing_page_urls: Option<Vec<String>>,
    is_specific: Option<bool>,
    notify_on_failure: bool,
    properties: Option<Map<String, Value>>,
    custom_headers: Vec<CustomHeader>,
    activity_event: Option<String>,
}

impl Parts {
    /// The rules between fields, then the body, or every problem `d` holds.
    fn assemble(self, mut d: Decoder) -> Result<CreateWebhook, Vec<Problem>> {
        let Parts {
            description,
            url,
            content_type,
            event,
            landing_page_urls,
            is_specific,
            notify_on_failure,
            properties,
            custom_headers,
            mut activity_event,
        } = self;
        if event == Some(WebhookEvent::LandingPageSubmission) && landing_page_urls.is_none() {
            d.push(
                "LandingPageUrls",
                Rejection::Missing,
                "is mandatory when WebhookEvent is 1 (landing page submission)".into(),
            );
        }
        let has_pages = landing_page_urls.is_some();
        if let Some(flag) = is_specific
            && flag != has_pages
        {
            d.push(
                "IsSpecificLandingPage",
                Rejection::Invalid,
                if has_pages {
                    "must be true when LandingPageUrls are given".into()
                } else {
                    "must be false when no LandingPageUrls are given".into()
                },
            );
        }

        if let Some(event) = event {
            let from_properties = properties
                .as_ref()
                .and_then(|p| p.get("ActivityEvent"))
                .and_then(Value::as_str)
                .map(str::to_string);
            match (&activity_event, &from_properties) {
                (Some(_), _) if event.family() != EventFamily::Activity => d.push(
                    "ActivityEvent",
                    Rejection::Invalid,
                    format!("only activity events (2, 15) take it, not event {event}"),
                ),
                (Some(top), Some(inner)) if top != inner => d.push(
                    "ActivityEvent",
                    Rejection::Invalid,
                    format!(
                        "{:?} differs from WebhookProperties.ActivityEvent {:?}",
                        truncate(top, 32),
                        truncate(inner, 32)
                    ),
                ),
                (None, Some(inner)) if event == WebhookEvent::LeadActivityCreate => {
                    activity_event = Some(inner.clone());
                }
                _ => {}
            }
        }

        if !d.problems.is_empty() {
            return Err(d.problems);
        }
        match (description, url, content_type, event) {
            (Some(description), Some(url), Some(content_type), Some(event)) => Ok(CreateWebhook {
                description,
                url,
                method: Method::Post,
                content_type,
                event,
                is_specific_landing_page: landing_page_urls.is_some(),
                landing_page_urls,
                notify_on_failure,
                properties,
                custom_headers,
                activity_event,
            }),
            // Unreachable in practice: each missing field pushed a problem above.
            _ => Err(vec![Problem {
                error: FieldError {
                    field: "webhook".into(),
                    reason: "incomplete".into(),
                },
                kind: Rejection::Missing,
            }]),
        }
    }
}

/// A `webhook` object decoded straight into the JSON types its fields should have, strings
/// borrowed from the input where they hold no escapes: the input of
/// [`CreateWebhook::from_raw`]. Decoding fails on anything else (an unknown or repeated
/// field, a wrong type, a missing mandatory field), and the caller then takes the road that
/// says what is wrong.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook<'a> {
    #[serde(rename = "Description", borrow)]
    description: Cow<'a, str>,
    #[serde(rename = "URL", borrow)]
    url: Cow<'a, str>,
    #[serde(rename = "Method", borrow, default)]
    method: Option<Cow<'a, str>>,
    #[serde(rename = "ContentType", borrow)]
    content_type: Cow<'a, str>,
    #[serde(rename = "WebhookEvent", borrow)]
    event: Cow<'a, str>,
    #[serde(rename = "LandingPageUrls", borrow, default)]
    landing_page_urls: Option<Vec<Cow<'a, str>>>,
    #[serde(rename = "IsSpecificLandingPage", default)]
    is_specific: Option<bool>,
    #[serde(rename = "NotifyOnFailure", default)]
    notify_on_failure: Option<bool>,
    #[serde(rename = "WebhookProperties", borrow, default)]
    properties: Option<Cow<'a, str>>,
    #[serde(rename = "CustomHeaders", borrow, default)]
    custom_headers: Option<Vec<RawHeader<'a>>>,
    #[serde(rename = "ActivityEvent", borrow, default)]
    activity_event: Option<Cow<'a, str>>,
}

/// One custom header of a [`RawWebhook`].
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader<'a> {
    #[serde(rename = "Key", borrow)]
    key: Cow<'a, str>,
    #[serde(rename = "Value", borrow)]
    value: Cow<'a, str>,
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

/// Checks an absolute http/https URL with a host.
fn check_http_url(raw: &str) -> Result<(), String> {
    match url::Url::parse(raw) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Err(format!(
            "must be an http or https URL, not {:?}",
            truncate(u.scheme(), 16)
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Err("has no host".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("is not an absolute http or https URL ({e})")),
    }
}

/// At most `max` characters of a string from the input, for messages.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Collects problems while reading fields.
#[derive(Default)]
struct Decoder {
    problems: Vec<Problem>,
}

impl Decoder {
    fn push(&mut self, field: &str, kind: Rejection, reason: String) {
        self.problems.push(Problem {
            error: FieldError {
                field: field.to_string(),
                reason,
            },
            kind,
        });
    }

    fn wrong_type(&mut self, field: &str, want: &str, got: &Value) {
        self.push(
            field,
            Rejection::Shape,
            format!("must be {want}, found {}", json_type(got)),
        );
    }

    /// A string field; `null` counts as absent.
    fn string(&mut self, obj: &Map<String, Value>, field: &str, required: bool) -> Option<String> {
        match obj.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) => {
                if required {
                    self.push(field, Rejection::Missing, "is mandatory".into());
                }
                None
            }
            Some(other) => {
                self.wrong_type(field, "a string", other);
                None
            }
        }
    }

    /// A boolean field; `null` counts as absent.
    fn bool(&mut self, obj: &Map<String, Value>, field: &str) -> Option<bool> {
        match obj.get(field) {
            Some(Value::Bool(b)) => Some(*b),
            None | Some(Value::Null) => None,
            Some(other) => {
                self.wrong_type(field, "true or false", other);
                None
            }
        }
    }

    /// `WebhookEvent`: a string number as LeadSquared documents it (a JSON number is taken
    /// too: it cannot mean anything else, and it is sent as a string).
    fn event(&mut self, obj: &Map<String, Value>) -> Option<WebhookEvent> {
        const FIELD: &str = "WebhookEvent";
        let code = match obj.get(FIELD) {
            None | Some(Value::Null) => {
                self.push(FIELD, Rejection::Missing, "is mandatory".into());
                return None;
            }
            Some(Value::String(s)) => s.trim().parse::<u32>().ok().ok_or(truncate(s, 32)),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(n.to_string()),
            Some(other) => {
                self.wrong_type(FIELD, "an event code as a string, e.g. \"3\"", other);
                return None;
            }
        };
        let known = || {
            WebhookEvent::ALL
                .iter()
                .map(|e| e.code().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match code {
            Ok(code) => {
                let event = WebhookEvent::from_code(code);
                if event.is_none() {
                    self.push(
                        FIELD,
                        Rejection::Invalid,
                        format!("{code} is not a known event code (known: {})", known()),
                    );
                }
                event
            }
            Err(raw) => {
                self.push(
                    FIELD,
                    Rejection::Invalid,
                    format!("{raw:?} is not an event code (known: {})", known()),
                );
                None
            }
        }
    }

    /// `LandingPageUrls`: a non-empty list of absolute http/https URLs, or absent/null.
    fn landing_page_urls(&mut self, obj: &Map<String, Value>) -> Option<Vec<String>> {
        const FIELD: &str = "LandingPageUrls";
        let items = match obj.get(FIELD) {
            None | Some(Value::Null) => return None,
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.wrong_type(FIELD, "a list of URLs", other);
                return None;
            }
        };
        if items.is_empty() {
            self.push(
                FIELD,
                Rejection::Invalid,
                "must list at least one URL (or be omitted)".into(),
            );
            return None;
        }
        let mut urls = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            match item {
                Value::String(s) => match check_http_url(s) {
                    Ok(()) => urls.push(s.clone()),
                    Err(reason) => self.push(&field, Rejection::Invalid, reason),
                },
                other => self.wrong_type(&field, "a URL string", other),
            }
        }
        (urls.len() == items.len()).then_some(urls)
    }

    /// `CustomHeaders`: at most 10 `{Key, Value}` with non-empty keys that are valid header
    /// names. Values are never quoted.
    fn custom_headers(&mut self, obj: &Map<String, Value>) -> Vec<CustomHeader> {
        const FIELD: &str = "CustomHeaders";
        let items = match obj.get(FIELD) {
            None | Some(Value::Null) => return Vec::new(),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.wrong_type(FIELD, "a list of {\"Key\",\"Value\"} objects", other);
                return Vec::new();
            }
        };
        if items.len() > MAX_CUSTOM_HEADERS {
            self.push(
                FIELD,
                Rejection::Invalid,
                format!(
                    "{} headers given, at most {MAX_CUSTOM_HEADERS} allowed",
                    items.len()
                ),
            );
        }
        let mut headers = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("{FIELD}[{i}]");
            let Some(h) = item.as_object() else {
                self.wrong_type(&at, "a {\"Key\",\"Value\"} object", item);
                continue;
            };
            for k in h.keys() {
                if k != "Key" && k != "Value" {
                    self.push(
                        &format!("{at}.{}", truncate(k, 32)),
                        Rejection::Shape,
                        "unknown field (a header has only Key and Value)".into(),
                    );
                }
            }
            let key = match h.get("Key") {
                Some(Value::String(k)) if k.trim().is_empty() => {
                    self.push(&format!("{at}.Key"), Rejection::Invalid, "is empty".into());
                    None
                }
                Some(Value::String(k)) if !is_header_name(k) => {
                    self.push(
                        &format!("{at}.Key"),
                        Rejection::Invalid,
                        format!(
                            "{:?} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
                            truncate(k, 64)
                        ),
                    );
                    None
                }
                Some(Value::String(k)) => Some(k.clone()),
                None | Some(Value::Null) => {
                    self.push(
                        &format!("{at}.Key"),
                        Rejection::Missing,
                        "is mandatory".into(),
                    );
                    None
                }
                Some(other) => {
                    self.wrong_type(&format!("{at}.Key"), "a string", other);
                    None
                }
            };
            // The value is a secret: report its type, never its content.
            let value = match h.get("Value") {
                Some(Value::String(v)) => Some(Secret::new(v.clone())),
                None | Some(Value::Null) => {
                    self.push(
                        &format!("{at}.Value"),
                        Rejection::Missing,
                        "is mandatory".into(),
                    );
                    None
                }
                Some(other) => {
                    self.wrong_type(&format!("{at}.Value"), "a string", other);
                    None
                }
            };
            if let (Some(key), Some(value)) = (key, value) {
                headers.push(CustomHeader { key, value });
            }
        }
        headers
    }

    /// Top-level `ActivityEvent`: a string of digits (a JSON number is taken and sent as a
    /// string).
    fn activity_event(&mut self, obj: &Map<String, Value>) -> Option<String> {
        const FIELD: &str = "ActivityEvent";
        match obj.get(FIELD) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_code(s) => Some(s.clone()),
            Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
            Some(Value::String(s)) => {
                self.push(
                    FIELD,
                    Rejection::Invalid,
                    format!("{:?} is not an activity event code", truncate(s, 32)),
                );
                None
            }
            Some(other) => {
                self.wrong_type(FIELD, "an activity event code as a string", other);
                None
            }
        }
    }

    /// `WebhookProperties`: null, or a string holding a JSON object that fits the event's
    /// family.
    fn properties(
        &mut self,
        given: Option<&Value>,
        event: Option<WebhookEvent>,
    ) -> Option<Map<String, Value>> {
        const FIELD: &str = "WebhookProperties";
        let text = match given {
            None | Some(Value::Null) => return None,
            Some(Value::String(s)) => s,
            Some(other) => {
                self.wrong_type(
                    FIELD,
                    "null or a JSON object serialised as a string, e.g. \"{\\\"ActivityEvent\\\":\\\"247\\\"}\"",
                    other,
                );
                return None;
            }
        };
        let map = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                self.push(
                    FIELD,
                    Rejection::Invalid,
                    format!("must hold a JSON object, holds {}", json_type(&other)),
                );
                return None;
            }
            Err(e) => {
                self.push(
                    FIELD,
                    Rejection::Invalid,
                    format!("is not valid JSON ({e})"),
                );
                return None;
            }
        };
        let event = event?;
        let before = self.problems.len();
        let allowed: &[&str] = match event.family() {
            EventFamily::Activity => &ACTIVITY_PROPERTIES,
            EventFamily::Opportunity => &OPPORTUNITY_PROPERTIES,
            EventFamily::Plain => {
                if !map.is_empty() {
                    self.push(
                        FIELD,
                        Rejection::Invalid,
                        format!(
                            "event {event} takes no properties (only activity events 2, 15 and \
                             opportunity events 31-35 do); use null"
                        ),
                    );
                }
                return None;
            }
        };
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                self.push(
                    &format!("{FIELD}.{}", truncate(k, 32)),
                    Rejection::Invalid,
                    format!(
                        "not a property of event {event} (allowed: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        let field = |k: &str| format!("{FIELD}.{k}");
        match event.family() {
            EventFamily::Activity => {
                match map.get("ActivityEvent") {
                    Some(Value::String(s)) if is_code(s) => {}
                    None | Some(Value::Null) => self.push(
                        &field("ActivityEvent"),
                        Rejection::Missing,
                        "is mandatory for activity events".into(),
                    ),
                    Some(_) => self.push(
                        &field("ActivityEvent"),
                        Rejection::Invalid,
                        "must be an activity event code as a string, e.g. \"247\"".into(),
                    ),
                }
                for k in ["ActivityData", "WebPageNames"] {
                    match map.get(k) {
                        None | Some(Value::Null) => {}
                        Some(Value::String(s)) if serde_json::from_str::<Value>(s).is_ok() => {}
                        Some(_) => self.push(
                            &field(k),
                            Rejection::Invalid,
                            "must be a JSON list serialised as a string, e.g. \"[]\"".into(),
                        ),
                    }
                }
            }
            EventFamily::Opportunity => {
                match map.get("OpportunityEvents") {
                    Some(Value::Array(codes))
                        if !codes.is_empty()
                            && codes.iter().all(|c| c.as_str().is_some_and(is_code)) => {}
                    None | Some(Value::Null) => self.push(
                        &field("OpportunityEvents"),
                        Rejection::Missing,
                        "is mandatory for opportunity events".into(),
                    ),
                    Some(_) => self.push(
                        &field("OpportunityEvents"),
                        Rejection::Invalid,
                        "must be a non-empty list of event codes as strings, e.g. [\"12002\"]"
                            .into(),
                    ),
                }
                match map.get("IsAsyncEnable") {
                    None | Some(Value::Null) | Some(Value::Bool(_)) => {}
                    Some(_) => self.push(
                        &field("IsAsyncEnable"),
                        Rejection::Invalid,
                        "must be true or false".into(),
                    ),
                }
                for k in [
                    "ChangedOpportunityField",
                    "StatusFrom",
                    "StatusTo",
                    "StageFrom",
                    "StageTo",
                ] {
                    match map.get(k) {
                        None | Some(Value::Null) | Some(Value::String(_)) => {}
                        Some(_) => {
                            self.push(&field(k), Rejection::Invalid, "must be a string".into())
                        }
                    }
                }
                if event == WebhookEvent::OpportunityFieldUpdate
                    && !map.contains_key("ChangedOpportunityField")
                {
                    self.push(
                        &field("ChangedOpportunityField"),
                        Rejection::Missing,
                        "is mandatory for event 33 (opportunity field update)".into(),
                    );
                }
            }
            EventFamily::Plain => {}
        }
        (self.problems.len() == before).then_some(map)
    }
}

/// A non-empty string of ASCII digits.
fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit())
}

/// An RFC 9110 token: what an HTTP header name may be.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seed_body() -> Value {
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

    fn errors(v: Value) -> Vec<String> {
        match CreateWebhook::from_value(&v) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn has(errs: &[String], prefix: &str) -> bool {
        errs.iter().any(|e| e.starts_with(prefix))
    }

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
    fn all_event_codes_and_content_types_are_known() {
        let codes: Vec<u32> = WebhookEvent::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(
            codes,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 26, 31, 32, 33, 34, 35
            ]
        );
        for e in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::from_code(e.code()), Some(e));
        }
        for c in ContentType::ALL {
            let mut body = seed_body();
            body["ContentType"] = json!(c.as_str());
            assert_eq!(errors(body), Vec::<String>::new());
        }
    }

    #[test]
    fn refuses_unknown_event_and_content_type() {
        let mut body = seed_body();
        body["WebhookEvent"] = json!("10");
        body["ContentType"] = json!("application/xml");
        let e = errors(body);
        assert!(
            has(&e, "WebhookEvent: 10 is not a known event code"),
            "{e:?}"
        );
        assert!(
            has(&e, "ContentType: \"application/xml\" is not one of"),
            "{e:?}"
        );
    }

    #[test]
    fn refuses_unknown_fields_with_a_case_hint() {
        let mut body = seed_body();
        body["url"] = json!("https://x.example");
        body["Extra"] = json!(1);
        let e = errors(body);
        assert!(
            has(
                &e,
                "url: unknown field (field names are case-sensitive: did you mean URL?)"
            ),
            "{e:?}"
        );
        assert!(has(&e, "Extra: unknown field"), "{e:?}");
    }

    #[test]
    fn url_must_be_absolute_http_or_https() {
        for bad in ["ftp://x.example/a", "/relative", "not a url", "https://"] {
            let mut body = seed_body();
            body["URL"] = json!(bad);
            assert!(has(&errors(body), "URL: "), "{bad}");
        }
        let mut body = seed_body();
        body["URL"] = json!("http://plain.example/hook");
        assert_eq!(errors(body), Vec::<String>::new());
    }

    #[test]
    fn method_must_be_post() {
        let mut body = seed_body();
        body["Method"] = json!("GET");
        assert!(has(&errors(body), "Method: must be \"POST\""));
    }

    #[test]
    fn mandatory_fields_are_named() {
        let e = errors(json!({}));
        for f in ["Description", "URL", "ContentType", "WebhookEvent"] {
            assert!(has(&e, &format!("{f}: is mandatory")), "{f}: {e:?}");
        }
        assert!(has(&errors(json!([1])), "webhook: must be a JSON object"));
    }

    #[test]
    fn landing_pages_required_for_event_1_and_flag_must_match() {
        let mut body = seed_body();
        body["WebhookEvent"] = json!("1");
        assert!(has(&errors(body.clone()), "LandingPageUrls: is mandatory"));

        body["LandingPageUrls"] = json!(["https://lp.example/a"]);
        body["IsSpecificLandingPage"] = json!(false);
        assert!(has(
            &errors(body.clone()),
            "IsSpecificLandingPage: must be true"
        ));

        body["IsSpecificLandingPage"] = json!(true);
        let w = CreateWebhook::from_value(&body).expect("valid");
        assert!(w.is_specific_landing_page);

        let mut plain = seed_body();
        plain["IsSpecificLandingPage"] = json!(true);
        assert!(has(&errors(plain), "IsSpecificLandingPage: must be false"));

        let mut absent = seed_body();
        absent["WebhookEvent"] = json!("1");
        absent["LandingPageUrls"] = json!(["https://lp.example/a"]);
        absent
            .as_object_mut()
            .map(|o| o.remove("IsSpecificLandingPage"));
        let w = CreateWebhook::from_value(&absent).expect("flag derived when absent");
        assert_eq!(w.to_value()["IsSpecificLandingPage"], json!(true));
    }

    #[test]
    fn custom_headers_at_most_ten_with_valid_keys_and_values_never_quoted() {
        let mut body = seed_body();
        let many: Vec<Value> = (0..11)
            .map(|i| json!({"Key": format!("h{i}"), "Value": "sekret-value-1"}))
            .collect();
        body["CustomHeaders"] = json!(many);
        assert!(has(
            &errors(body),
            "CustomHeaders: 11 headers given, at most 10"
        ));

        let mut body = seed_body();
        body["CustomHeaders"] = json!([
            {"Key": "", "Value": "sekret-value-2"},
            {"Key": "bad key", "Value": "sekret-value-3"},
            {"Key": "ok", "Value": 12345678},
            {"Key": "ok", "Value": "sekret-value-4", "Extra": "sekret-value-5"},
        ]);
        let e = errors(body);
        assert!(has(&e, "CustomHeaders[0].Key: is empty"), "{e:?}");
        assert!(
            has(&e, "CustomHeaders[1].Key: \"bad key\" is not a valid"),
            "{e:?}"
        );
        assert!(has(&e, "CustomHeaders[2].Value: must be a string"), "{e:?}");
        assert!(has(&e, "CustomHeaders[3].Extra: unknown field"), "{e:?}");
        let all = e.join("\n");
        assert!(
            !all.contains("sekret") && !all.contains("12345678"),
            "{all}"
        );
    }

    #[test]
    fn debug_never_shows_header_values() {
        let w = CreateWebhook::from_value(&seed_body()).expect("valid");
        let dbg = format!("{w:?}");
        assert!(!dbg.contains("j5FtwJk44e6"), "{dbg}");
        assert!(dbg.contains("x-api-key"));
    }

    #[test]
    fn properties_must_parse_and_fit_the_event_family() {
        let with = |event: &str, props: Value| {
            let mut b = seed_body();
            b["WebhookEvent"] = json!(event);
            b["WebhookProperties"] = props;
            errors(b)
        };
        assert!(has(
            &with("15", json!("{not json")),
            "WebhookProperties: is not valid JSON"
        ));
        assert!(has(
            &with("15", json!("[1]")),
            "WebhookProperties: must hold a JSON object"
        ));
        assert!(has(
            &with("15", json!({"ActivityEvent": "247"})),
            "WebhookProperties: must be null or a JSON object serialised as a string"
        ));
        assert!(has(
            &with("15", json!(r#"{"OpportunityEvents":["12002"]}"#)),
            "WebhookProperties.OpportunityEvents: not a property of event 15"
        ));
        assert!(has(
            &with("15", json!(r#"{"ActivityData":"[]"}"#)),
            "WebhookProperties.ActivityEvent: is mandatory"
        ));
        assert!(has(
            &with("31", json!(r#"{"ActivityEvent":"247"}"#)),
            "WebhookProperties.ActivityEvent: not a property of event 31"
        ));
        assert!(has(
            &with("31", json!(r#"{"OpportunityEvents":[12002]}"#)),
            "WebhookProperties.OpportunityEvents: must be a non-empty list"
        ));
        assert!(has(
            &with(
                "33",
                json!(r#"{"OpportunityEvents":["12003"],"IsAsyncEnable":false}"#)
            ),
            "WebhookProperties.ChangedOpportunityField: is mandatory"
        ));
        assert!(has(
            &with("3", json!(r#"{"ActivityEvent":"247"}"#)),
            "WebhookProperties: event 3 (lead create) takes no properties"
        ));
        // The documented examples are accepted.
        for (event, props) in [
            (
                "15",
                r#"{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}"#,
            ),
            (
                "32",
                r#"{"OpportunityEvents":["12002"],"IsAsyncEnable":true}"#,
            ),
            (
                "33",
                r#"{"OpportunityEvents":["12003"],"ChangedOpportunityField":"mx_Custom_10","IsAsyncEnable":false}"#,
            ),
            (
                "34",
                r#"{"OpportunityEvents":["12000"],"StatusFrom":"Lost","StatusTo":"Open","StageFrom":"Budget constraints","StageTo":"Negotiation","IsAsyncEnable":false}"#,
            ),
            ("3", "{}"),
        ] {
            assert_eq!(
                with(event, json!(props)),
                Vec::<String>::new(),
                "{event} {props}"
            );
        }
    }

    #[test]
    fn event_2_gets_a_top_level_activity_event() {
        let mut body = seed_body();
        body["WebhookEvent"] = json!("2");
        body["WebhookProperties"] =
            json!(r#"{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}"#);
        let w = CreateWebhook::from_value(&body).expect("valid");
        assert_eq!(w.to_value()["ActivityEvent"], json!("247"));

        body["ActivityEvent"] = json!("248");
        assert!(has(&errors(body), "ActivityEvent: \"248\" differs"));

        let mut plain = seed_body();
        plain["ActivityEvent"] = json!("247");
        assert!(has(&errors(plain), "ActivityEvent: only activity events"));
    }

    #[test]
    fn problems_carry_the_kind_leadsquared_answers_with() {
        let kinds = |v: Value| -> Vec<Rejection> {
            CreateWebhook::check(&v)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.kind)
                .collect()
        };
        let mut b = seed_body();
        b["NotifyOnFailure"] = json!("yes");
        assert_eq!(kinds(b), [Rejection::Shape]);
        let mut b = seed_body();
        b["URL"] = json!("ftp://x");
        assert_eq!(kinds(b), [Rejection::Invalid]);
        let mut b = seed_body();
        b.as_object_mut().map(|o| o.remove("URL"));
        assert_eq!(kinds(b), [Rejection::Missing]);
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
