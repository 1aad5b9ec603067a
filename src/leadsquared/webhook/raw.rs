//! The fast road into a [`CreateWebhook`], for a body in its usual shape, and the rules
//! between fields that both roads end in ([`Parts::assemble`]).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::check::{Decoder, check_http_url, is_code, is_header_name, truncate};
use super::{
    ContentType, CreateWebhook, CustomHeader, EventFamily, FieldError, MAX_CUSTOM_HEADERS, Method,
    Problem, Rejection, WebhookEvent,
};
use crate::secret::Secret;

impl CreateWebhook {
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
        let properties = d.properties(
            raw.properties
                .map(|text| Value::String(text.into_owned()))
                .as_ref(),
            Some(event),
        );
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
}

/// A body's fields, each read and checked on its own: what both roads into
/// [`CreateWebhook`] produce before the rules that join fields.
pub(super) struct Parts {
    pub(super) description: Option<String>,
    pub(super) url: Option<String>,
    pub(super) content_type: Option<ContentType>,
    pub(super) event: Option<WebhookEvent>,
    pub(super) landing_page_urls: Option<Vec<String>>,
    pub(super) is_specific: Option<bool>,
    pub(super) notify_on_failure: bool,
    pub(super) properties: Option<Map<String, Value>>,
    pub(super) custom_headers: Vec<CustomHeader>,
    pub(super) activity_event: Option<String>,
}

impl Parts {
    /// The rules between fields, then the body, or every problem `d` holds.
    pub(super) fn assemble(self, mut d: Decoder) -> Result<CreateWebhook, Vec<Problem>> {
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
        if let Some(event) = event
            && event != WebhookEvent::LandingPageSubmission
            && landing_page_urls.is_some()
        {
            d.push(
                "LandingPageUrls",
                Rejection::Invalid,
                format!(
                    "only event 1 (landing page submission) takes landing pages, not event {event}"
                ),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::leadsquared::webhook::fixtures::{activity_body, errors, has, seed_body};

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
    fn event_2_gets_a_top_level_activity_event() {
        let mut body = activity_body();
        let w = CreateWebhook::from_value(&body).expect("valid");
        assert_eq!(w.to_value()["ActivityEvent"], json!("247"));

        body["ActivityEvent"] = json!("248");
        assert!(has(&errors(body), "ActivityEvent: \"248\" differs"));

        let mut plain = seed_body();
        plain["ActivityEvent"] = json!("247");
        assert!(has(&errors(plain), "ActivityEvent: only activity events"));
    }

    #[test]
    fn the_fast_road_gives_the_body_the_checked_road_gives_or_declines() {
        let activity = activity_body();
        let mut bad_url = seed_body();
        bad_url["URL"] = json!("ftp://x.example/");
        let mut no_pages = seed_body();
        no_pages["WebhookEvent"] = json!("1");
        let mut answered = 0;
        for body in [seed_body(), activity, bad_url, no_pages] {
            let text = body.to_string();
            let fast = serde_json::from_str::<RawWebhook<'_>>(&text)
                .ok()
                .and_then(CreateWebhook::from_raw);
            let checked = CreateWebhook::check(&body);
            if let Some(w) = fast {
                assert_eq!(checked, Ok(w), "{text}");
                answered += 1;
            } else {
                // Declining is always allowed; a valid body in the usual shape is not declined.
                assert!(
                    checked.is_err(),
                    "the fast road declined a valid body: {text}"
                );
            }
        }
        assert_eq!(answered, 2);
    }
}
