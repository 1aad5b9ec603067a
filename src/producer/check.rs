//! One job, checked: its line decoded, its fields validated, its tenant looked up.
//!
//! [`check_line`] is the road every line of a job file takes: a fast road that decodes the
//! usual valid line into borrowed, typed fields, and on any doubt the slow road
//! ([`parse_line`], [`validate`], [`check_tenant`]) that names every problem. Where the
//! fast road answers, its job is the slow road's: the tests compare the two.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;
use serde_json::Value;

use super::{JobRequest, MAX_KEY_LEN};
use crate::job::{NewJob, derived_key, legacy_key};
use crate::leadsquared::webhook::RawWebhook;
use crate::leadsquared::{BodyLimits, CreateWebhook, FieldError};
use crate::tenant::valid_name;

fn field_error(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// What is wrong with a given idempotency key, if anything.
fn key_problem(key: &str) -> Option<FieldError> {
    if key.is_empty() {
        Some(field_error(
            "key",
            "must not be empty (leave it out to derive one)",
        ))
    } else if key.len() > MAX_KEY_LEN {
        Some(field_error(
            "key",
            format!("is {} bytes, at most {MAX_KEY_LEN}", key.len()),
        ))
    } else {
        None
    }
}

/// A job made from a checked body within `limits`: its key the given one, or derived (with
/// the key version 1 would have derived beside it, see [`crate::job::legacy_key`]).
fn create_job(
    tenant: &str,
    key: Option<String>,
    webhook: &CreateWebhook,
    limits: &BodyLimits,
) -> Result<NewJob, Vec<FieldError>> {
    let body = webhook.to_json();
    let over = limits.check(webhook, body.len());
    if !over.is_empty() {
        return Err(over.into_iter().map(in_webhook).collect());
    }
    let (key, legacy) = match key {
        Some(key) => (key, None),
        None => (
            derived_key(tenant, webhook.event.code(), &webhook.description),
            Some(legacy_key(tenant, &body)),
        ),
    };
    Ok(NewJob {
        tenant: tenant.to_string(),
        body,
        key,
        delete: false,
        legacy_key: legacy,
    })
}

/// A problem of the `webhook` object, named from the job line (`webhook.URL`).
fn in_webhook(p: FieldError) -> FieldError {
    FieldError {
        field: if p.field == "webhook" {
            p.field
        } else {
            format!("webhook.{}", p.field)
        },
        reason: p.reason,
    }
}

/// Checks one job (without the registry: see [`check_tenant`]) within the default
/// [`BodyLimits`] and makes it ready to push.
pub fn validate(request: &JobRequest) -> Result<NewJob, Vec<FieldError>> {
    validate_within(request, &BodyLimits::default())
}

/// [`validate`] within the given size limits.
pub fn validate_within(
    request: &JobRequest,
    limits: &BodyLimits,
) -> Result<NewJob, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !valid_name(&request.tenant) {
        errors.push(field_error(
            "tenant",
            "must be 1-128 characters of letters, digits, '.', '_' or '-'",
        ));
    }
    if let Some(problem) = request.key.as_deref().and_then(key_problem) {
        errors.push(problem);
    }
    if request.delete {
        if !request.webhook.is_null() {
            errors.push(field_error(
                "webhook",
                "a delete has no webhook body (give only tenant, key and \"delete\": true)",
            ));
        }
        return match &request.key {
            Some(key) if errors.is_empty() => Ok(NewJob {
                tenant: request.tenant.clone(),
                body: String::new(),
                key: key.clone(),
                delete: true,
                legacy_key: None,
            }),
            Some(_) => Err(errors),
            None => {
                errors.push(field_error(
                    "key",
                    "is missing: a delete names the key of the webhook it removes",
                ));
                Err(errors)
            }
        };
    }
    if request.webhook.is_null() {
        errors.push(field_error("webhook", "is missing"));
        return Err(errors);
    }
    let body = match CreateWebhook::from_value(&request.webhook) {
        Ok(w) => Some(w),
        Err(problems) => {
            errors.extend(problems.into_iter().map(in_webhook));
            None
        }
    };
    match body {
        Some(webhook) if errors.is_empty() => {
            create_job(&request.tenant, request.key.clone(), &webhook, limits)
        }
        _ => Err(errors),
    }
}

/// The registry check: `None` when `tenant` is registered.
pub fn check_tenant(tenant: &str, registered: &HashSet<String>) -> Option<FieldError> {
    (!registered.contains(tenant) && valid_name(tenant)).then(|| {
        field_error(
            "tenant",
            format!("unknown tenant {tenant:?}; import it with `lsq-webhooks tenants import`"),
        )
    })
}

/// Decodes one line of a job file: a JSON object with `tenant`, `webhook` and optionally
/// `key`; or, for a delete, `tenant`, `key` and `"delete": true`; and nothing else.
pub fn parse_line(text: &str) -> Result<JobRequest, Vec<FieldError>> {
    parse_line_bytes(text.as_bytes())
}

fn parse_line_bytes(text: &[u8]) -> Result<JobRequest, Vec<FieldError>> {
    let value: Value = serde_json::from_slice(text)
        // Syntax errors name a position, never the input.
        .map_err(|e| vec![field_error("json", e.to_string())])?;
    let Value::Object(mut obj) = value else {
        return Err(vec![field_error(
            "job",
            "must be a JSON object {\"tenant\",\"webhook\",\"key\"?}",
        )]);
    };
    let mut errors = Vec::new();
    for name in obj.keys() {
        if !matches!(name.as_str(), "tenant" | "webhook" | "key" | "delete") {
            errors.push(field_error(
                "job",
                format!("unknown field {name:?} (a job has tenant, webhook, key and delete)"),
            ));
        }
    }
    let delete = match obj.remove("delete") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            errors.push(field_error("delete", "must be true or false"));
            false
        }
    };
    let tenant = match obj.remove("tenant") {
        Some(Value::String(t)) => Some(t),
        Some(_) => {
            errors.push(field_error("tenant", "must be a string"));
            None
        }
        None => {
            errors.push(field_error("tenant", "is missing"));
            None
        }
    };
    let webhook = match obj.remove("webhook") {
        // A delete's absent webhook; `validate` says what a delete with one is.
        None if delete => Some(Value::Null),
        w => w,
    };
    if webhook.is_none() {
        errors.push(field_error("webhook", "is missing"));
    }
    let key = match obj.remove("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => {
            errors.push(field_error("key", "must be a string"));
            None
        }
    };
    match (tenant, webhook) {
        (Some(tenant), Some(webhook)) if errors.is_empty() => Ok(JobRequest {
            tenant,
            webhook,
            key,
            delete,
        }),
        _ => Err(errors),
    }
}

/// A job line decoded straight into the types its fields should have, strings borrowed
/// from the line: the input of [`fast_job`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine<'a> {
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    webhook: RawWebhook<'a>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
}

/// The fast road through one line: the job when the line is valid in its usual shape,
/// `None` on any doubt (and then [`parse_line`] and [`validate`] say what is wrong). Where
/// it answers, the job is the one the slow road makes: the tests compare the two.
///
/// It decodes into borrowed, typed fields instead of a `serde_json::Value` (a map and a
/// string per field), which made checking a line about three times cheaper.
fn fast_job(line: &[u8], registered: &HashSet<String>, limits: &BodyLimits) -> Option<NewJob> {
    let raw: RawLine<'_> = serde_json::from_slice(line).ok()?;
    if !valid_name(&raw.tenant) || !registered.contains(raw.tenant.as_ref()) {
        return None;
    }
    if raw.key.as_deref().and_then(key_problem).is_some() {
        return None;
    }
    let webhook = CreateWebhook::from_raw(raw.webhook)?;
    create_job(&raw.tenant, raw.key.map(Cow::into_owned), &webhook, limits).ok()
}

/// The slow road through one line, which names every problem.
fn slow_job(
    line: &[u8],
    registered: &HashSet<String>,
    limits: &BodyLimits,
) -> Result<NewJob, Vec<FieldError>> {
    parse_line_bytes(line).and_then(|request| {
        let unknown = check_tenant(&request.tenant, registered);
        match (validate_within(&request, limits), unknown) {
            (Ok(job), None) => Ok(job),
            (Ok(_), Some(e)) => Err(vec![e]),
            (Err(errors), unknown) => {
                // The tenant comes first in a job line: so does its problem.
                Err(unknown.into_iter().chain(errors).collect())
            }
        }
    })
}

/// Checks one line of a job file as [`super::check_jobs`] does: the job, or every problem with
/// the line (its tenant checked against `registered`, its body's sizes against `limits`).
pub fn check_line(
    line: &[u8],
    registered: &HashSet<String>,
    limits: &BodyLimits,
) -> Result<NewJob, Vec<FieldError>> {
    match fast_job(line, registered, limits) {
        Some(job) => Ok(job),
        None => slow_job(line, registered, limits),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{body, registered};
    use super::*;

    /// Bodies of each shape the rules treat apart: plain, activity, opportunity, landing page.
    fn bodies() -> Vec<Value> {
        let mut activity = body();
        activity["WebhookEvent"] = "2".into();
        activity["WebhookProperties"] =
            r#"{"ActivityEvent":"247","ActivityData":"[]","WebPageNames":"[]"}"#.into();
        let mut opportunity = body();
        opportunity["WebhookEvent"] = "33".into();
        opportunity["WebhookProperties"] =
            r#"{"OpportunityEvents":["12002"],"IsAsyncEnable":true,"ChangedOpportunityField":"mx_Stage"}"#.into();
        let mut landing = body();
        landing["WebhookEvent"] = "1".into();
        landing["IsSpecificLandingPage"] = true.into();
        landing["LandingPageUrls"] = serde_json::json!(["https://lp.example.com/a"]);
        let mut bare = serde_json::json!({});
        for f in ["Description", "URL", "ContentType", "WebhookEvent"] {
            bare[f] = body()[f].clone();
        }
        vec![body(), activity, opportunity, landing, bare]
    }

    /// Values a field is set to in the variants: every JSON type, and the odd values the
    /// rules single out.
    fn odd_values() -> Vec<Value> {
        let mut values: Vec<Value> = serde_json::json!([
            null, true, false, 0, 3, -1, 2.5, "", " ", "3", " 3 ", "2", "1", "33", "15", "99",
            "x", "POST", "post", "https://a.example/x", "ftp://x.example/", "http://", "247",
            "application/json", "text/plain", [], [1], ["https://a.example/p"], ["nope"], {},
            [{"Key": "k", "Value": "v"}], [{"Key": "", "Value": "v"}], [{"Key": "a b", "Value": "v"}],
            [{"Key": "k"}], [{"Key": "k", "Value": null}], [{"Key": "k", "Value": "v", "X": 1}],
            [{"Key": null, "Value": "v"}], [null], ["{}"],
            "{\"ActivityEvent\":\"247\"}", "{\"ActivityEvent\":\"248\"}", "{}", "[]", "{",
            "{\"OpportunityEvents\":[\"1\"]}", "{\"Other\":1}"
        ])
        .as_array()
        .cloned()
        .unwrap_or_default();
        values.push(Value::Array(
            (0..11)
                .map(|i| serde_json::json!({"Key": format!("k{i}"), "Value": "v"}))
                .collect(),
        ));
        values
    }

    /// The fast road's answer for `line`, checked against the slow road's: `true` when the
    /// fast road answered.
    fn roads_agree(line: &str, registered: &HashSet<String>) -> bool {
        let limits = BodyLimits::default();
        let slow = slow_job(line.as_bytes(), registered, &limits);
        match fast_job(line.as_bytes(), registered, &limits) {
            Some(job) => {
                assert_eq!(slow, Ok(job), "the roads differ on {line}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn the_fast_road_answers_as_the_slow_road_does() {
        let registered = registered();
        let mut lines = Vec::new();
        for base in bodies() {
            lines.push(serde_json::json!({"tenant": "acme", "webhook": base}).to_string());
            for field in crate::leadsquared::webhook::FIELDS
                .into_iter()
                .chain(["Extra"])
            {
                let mut without = base.clone();
                if let Some(obj) = without.as_object_mut() {
                    obj.remove(field);
                }
                lines.push(serde_json::json!({"tenant": "acme", "webhook": without}).to_string());
                for value in odd_values() {
                    let mut changed = base.clone();
                    changed[field] = value;
                    lines.push(
                        serde_json::json!({"tenant": "acme", "webhook": changed}).to_string(),
                    );
                }
            }
            for value in odd_values().into_iter().chain([
                "k1".into(),
                "nobody".into(),
                "bad name".into(),
                "x".repeat(MAX_KEY_LEN + 1).into(),
            ]) {
                for field in ["tenant", "key", "webhook", "extra"] {
                    let mut line = serde_json::json!({"tenant": "acme", "webhook": base.clone()});
                    line[field] = value.clone();
                    lines.push(line.to_string());
                }
            }
        }
        // Text the `Value` form cannot print: repeated fields, escapes, spacing, other types.
        let text = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        lines.push(text.replace(r#""Method":"POST""#, r#""Method":"POST","Method":"GET""#));
        lines.push(text.replace(r#""Method":"POST""#, r#""Method":"GET","Method":"POST""#));
        lines.push(text.replace(r#""tenant":"acme""#, r#""tenant":"acme","tenant":"acme""#));
        lines.push(text.replace(r#""URL":"https"#, r#""URL":"\u0068ttps"#));
        lines.push(text.replace(r#""Value":"SECRET"#, r#""Value":"\"SECRET"#));
        lines.push(text.replace(r#""tenant":"acme""#, r#""tenant":"\u0061cme""#));
        lines.push(text.replace(':', " : ").replace(',', " ,\t") + "\r");
        lines.push(text.replace(r#""WebhookEvent":"3""#, r#""WebhookEvent":3"#));
        lines.push(text.clone() + " x");
        lines.push(format!("[{text}]"));
        lines.push(text[..text.len() - 1].to_string());

        let answered = lines.iter().filter(|l| roads_agree(l, &registered)).count();
        // Every plain body, and many variants, take the fast road: the comparison is real.
        assert!(answered >= 100, "the fast road answered {answered} lines");
        assert!(answered < lines.len(), "the fast road declined nothing");
    }

    #[test]
    fn derived_key_ignores_key_order() {
        let a = parse_line(&serde_json::json!({"tenant": "acme", "webhook": body()}).to_string())
            .expect("parse");
        let mut reordered = String::from("{\"webhook\":{");
        let obj = body();
        let fields: Vec<String> = obj
            .as_object()
            .map(|m| {
                m.iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                    .collect()
            })
            .unwrap_or_default();
        reordered.push_str(&fields.join(","));
        reordered.push_str("},\"tenant\":\"acme\"}");
        let b = parse_line(&reordered).expect("parse");
        let (a, b) = (validate(&a).expect("valid"), validate(&b).expect("valid"));
        assert_eq!(a.key, b.key);
    }

    #[test]
    fn refuses_bad_keys_and_tenant_names() {
        let request = JobRequest {
            delete: false,
            tenant: "bad name".into(),
            webhook: body(),
            key: Some(String::new()),
        };
        let errors = validate(&request).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["tenant", "key"]);
    }

    /// Issue 18: a delete line names a key and has no webhook; each mistake is named by its
    /// field.
    #[test]
    fn delete_lines_have_a_key_and_no_webhook() {
        let line = |v: Value| {
            parse_line(&v.to_string())
                .and_then(|r| validate(&r))
                .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let job = line(serde_json::json!({"tenant": "acme", "key": "crm", "delete": true}))
            .expect("a delete");
        assert!(job.delete && job.body.is_empty() && job.legacy_key.is_none());
        assert_eq!(job.key, "crm");
        let e = line(serde_json::json!({"tenant": "acme", "delete": true})).expect_err("no key");
        assert!(e.iter().any(|e| e.starts_with("key: is missing")), "{e:?}");
        let e = line(
            serde_json::json!({"tenant": "acme", "key": "k", "delete": true, "webhook": body()}),
        )
        .expect_err("a body");
        assert!(
            e.iter()
                .any(|e| e.starts_with("webhook: a delete has no webhook body")),
            "{e:?}"
        );
        let e = line(serde_json::json!({"tenant": "acme", "key": "k", "delete": "yes"}))
            .expect_err("not a bool");
        assert!(
            e.iter()
                .any(|e| e.starts_with("delete: must be true or false")),
            "{e:?}"
        );
        // "delete": false is an ordinary job, which needs its webhook.
        let e = line(serde_json::json!({"tenant": "acme", "delete": false})).expect_err("no body");
        assert!(
            e.iter().any(|e| e.starts_with("webhook: is missing")),
            "{e:?}"
        );
    }

    /// Issue 18: the derived key names the webhook (tenant, event, description); the key
    /// version 1 derived rides along for old queues.
    #[test]
    fn a_changed_url_keeps_the_derived_key() {
        let mut moved = body();
        moved["URL"] = "https://moved.example/in".into();
        let a = validate(
            &parse_line(&serde_json::json!({"tenant": "acme", "webhook": body()}).to_string())
                .expect("parse"),
        )
        .expect("valid");
        let b = validate(
            &parse_line(&serde_json::json!({"tenant": "acme", "webhook": moved}).to_string())
                .expect("parse"),
        )
        .expect("valid");
        assert_eq!(a.key, b.key);
        assert_ne!(a.legacy_key, b.legacy_key);
        assert_ne!(a.digest(), b.digest());
    }
}
