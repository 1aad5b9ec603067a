//! The road that names every problem: a `webhook` object read from a `serde_json::Value`,
//! each field checked on its own, each problem naming its field and the kind of rejection
//! LeadSquared answers it with.

use serde_json::{Map, Value};

use super::raw::Parts;
use super::{
    ContentType, CreateWebhook, CustomHeader, FieldError, MAX_CUSTOM_HEADERS, Problem, Rejection,
    WebhookEvent,
};
use crate::secret::Secret;

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
}

/// Checks an absolute http/https URL with a host.
pub(super) fn check_http_url(raw: &str) -> Result<(), String> {
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
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
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
pub(super) struct Decoder {
    pub(super) problems: Vec<Problem>,
}

impl Decoder {
    pub(super) fn push(&mut self, field: &str, kind: Rejection, reason: String) {
        self.problems.push(Problem {
            error: FieldError {
                field: field.to_string(),
                reason,
            },
            kind,
        });
    }

    pub(super) fn wrong_type(&mut self, field: &str, want: &str, got: &Value) {
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
}

/// A non-empty string of ASCII digits.
pub(super) fn is_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_digit())
}

/// An RFC 9110 token: what an HTTP header name may be (its length is a
/// [`super::BodyLimits`] rule).
pub(super) fn is_header_name(s: &str) -> bool {
    !s.is_empty()
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
    use serde_json::{Value, json};

    use super::*;
    use crate::leadsquared::webhook::fixtures::{errors, has, seed_body};

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
}
