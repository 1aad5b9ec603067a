//! The `WebhookProperties` rules: null, or a string holding a JSON object whose fields fit
//! the event's family (activity events 2 and 15, opportunity events 31-35).

use serde_json::{Map, Value};

use super::check::{Decoder, is_code, json_type, truncate};
use super::{EventFamily, Rejection, WebhookEvent};

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

impl Decoder {
    /// `WebhookProperties`: null, or a string holding a JSON object that fits the event's
    /// family.
    pub(super) fn properties(
        &mut self,
        given: Option<&Value>,
        event: Option<WebhookEvent>,
    ) -> Option<Map<String, Value>> {
        const FIELD: &str = "WebhookProperties";
        let text = match given {
            None | Some(Value::Null) => {
                // LeadSquared answers 500 (MXInvalidDataTypeException for event 2) when an
                // activity or opportunity event comes without its properties.
                let needs = match event.map(WebhookEvent::family) {
                    Some(EventFamily::Activity) => {
                        r#"ActivityEvent, e.g. "{\"ActivityEvent\":\"247\"}""#
                    }
                    Some(EventFamily::Opportunity) => {
                        r#"OpportunityEvents, e.g. "{\"OpportunityEvents\":[\"12002\"]}""#
                    }
                    Some(EventFamily::Plain) | None => return None,
                };
                let event = event.map(|e| e.to_string()).unwrap_or_default();
                self.push(
                    FIELD,
                    Rejection::Missing,
                    format!(
                        "is mandatory for event {event}: a JSON object serialised as a string, \
                         with {needs}"
                    ),
                );
                return None;
            }
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::leadsquared::webhook::fixtures::{errors, has, seed_body};

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
}
