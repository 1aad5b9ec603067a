//! Putting jobs on a queue.
//!
//! Every job is validated before anything is written: its JSON shape
//! (`{"tenant","webhook","key"?}`, nothing else), its tenant (registered), and its webhook
//! (LeadSquared's Create rules, [`CreateWebhook::from_value`]). A valid job is stored with
//! its body normalised (as it will be sent) and an idempotency key: the one given, or one
//! derived from the tenant and the normalised body, so the same webhook enqueued twice is
//! recognised.
//!
//! Two ways in: [`read_jobs`] for a JSON Lines file (every line checked, each problem
//! reported as `line N: field: reason`), and [`Producer`] for Rust services.
//!
//! A [`Producer`] rides out a Redis restart: a push that meets an unreachable Redis is
//! retried with the worker's reconnect backoff for up to [`PUSH_RETRY_FOR`]. That is safe
//! because a push is idempotent: a retry of a push whose answer was lost finds its jobs
//! already enqueued (counted as duplicates), never enqueues them twice.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{JobId, NewJob, derived_key};
use crate::leadsquared::webhook::RawWebhook;
use crate::leadsquared::{CreateWebhook, FieldError};
use crate::queue::{Pushed, Queue, QueueError};
use crate::tenant::valid_name;
use crate::worker::Stats;
use crate::worker::backoff::{ReconnectPolicy, with_reconnect};

/// Longest idempotency key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Jobs per [`Queue::push`] call from a [`Producer`]: one progress step, and a bound on how
/// much one call holds in flight.
pub const PUSH_CHUNK: usize = 10_000;

/// How long a [`Producer`] retries a push while Redis cannot be reached (a restart, a
/// failover) before it reports the failure: 60 s, waiting between tries as the worker does
/// (full jitter, 50 ms doubling to 5 s).
pub const PUSH_RETRY_FOR: Duration = Duration::from_secs(60);

/// A job as a producer gives it: the shape of one line of a job file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// Tenant name; must be registered.
    pub tenant: String,
    /// The Create body as LeadSquared takes it.
    pub webhook: Value,
    /// Idempotency key; derived from tenant and body when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A problem on one line of a job file; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {field}: {reason}")]
pub struct LineError {
    /// Line in the file.
    pub line: u64,
    /// The field (`tenant`, `key`, `webhook.URL`, ...), `json` for a line that is not JSON,
    /// or `job` for the line as a whole.
    pub field: String,
    /// What is wrong; never quotes a webhook value (custom header values are secrets).
    pub reason: String,
}

/// A job file, read and checked.
#[derive(Clone, Debug, Default)]
pub struct JobFile {
    /// The valid jobs, in file order.
    pub jobs: Vec<NewJob>,
    /// Every problem, in file order (a line may have several).
    pub errors: Vec<LineError>,
    /// Lines with at least one problem.
    pub invalid_lines: u64,
}

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

/// Checks one job (without the registry: see [`check_tenant`]) and makes it ready to push.
pub fn validate(request: &JobRequest) -> Result<NewJob, Vec<FieldError>> {
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
    let body = match CreateWebhook::from_value(&request.webhook) {
        Ok(w) => Some(w.to_json()),
        Err(problems) => {
            errors.extend(problems.into_iter().map(|p| FieldError {
                field: if p.field == "webhook" {
                    p.field
                } else {
                    format!("webhook.{}", p.field)
                },
                reason: p.reason,
            }));
            None
        }
    };
    match body {
        Some(body) if errors.is_empty() => Ok(NewJob {
            key: request
                .key
                .clone()
                .unwrap_or_else(|| derived_key(&request.tenant, &body)),
            tenant: request.tenant.clone(),
            body,
        }),
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
/// `key`, and nothing else.
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
        if !matches!(name.as_str(), "tenant" | "webhook" | "key") {
            errors.push(field_error(
                "job",
                format!("unknown field {name:?} (a job has tenant, webhook and key)"),
            ));
        }
    }
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
    let webhook = obj.remove("webhook");
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
        }),
        _ => Err(errors),
    }
}

/// Reads a JSON Lines job file and checks every line (blank lines are skipped; `\r\n` line
/// ends are fine). I/O errors end the read; problems with lines are collected in
/// [`JobFile::errors`]. See [`check_jobs`].
pub fn read_jobs(
    mut reader: impl BufRead,
    registered: &HashSet<String>,
) -> std::io::Result<JobFile> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    Ok(check_jobs(&data, registered))
}

/// Lines per thread below which checking is not split: a thread costs more than it saves.
const LINES_PER_THREAD: usize = 2_000;

/// Checks every line of JSON Lines text (a leading UTF-8 byte order mark is skipped). Lines
/// are split between the machine's cores (decoding and validating is most of an import's
/// time); the result is in file order. Raw bytes, so that a line that is not UTF-8 is
/// reported with its number.
pub fn check_jobs(data: &[u8], registered: &HashSet<String>) -> JobFile {
    // A byte order mark, as some Windows editors write at the start of a UTF-8 file, is not
    // part of the first line.
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(lines.len() / LINES_PER_THREAD)
        .max(1);
    let per_thread = lines.len().div_ceil(threads).max(1);
    if threads == 1 {
        return check_lines(&lines, 0, registered);
    }
    let parts: Vec<JobFile> = std::thread::scope(|scope| {
        let handles: Vec<_> = lines
            .chunks(per_thread)
            .enumerate()
            .map(|(i, chunk)| scope.spawn(move || check_lines(chunk, i * per_thread, registered)))
            .collect();
        handles
            .into_iter()
            // A panic in a checker is a bug; re-raise it rather than lose lines.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut file = JobFile::default();
    for part in parts {
        file.jobs.extend(part.jobs);
        file.errors.extend(part.errors);
        file.invalid_lines += part.invalid_lines;
    }
    file
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
fn fast_job(line: &[u8], registered: &HashSet<String>) -> Option<NewJob> {
    let raw: RawLine<'_> = serde_json::from_slice(line).ok()?;
    if !valid_name(&raw.tenant) || !registered.contains(raw.tenant.as_ref()) {
        return None;
    }
    if raw.key.as_deref().and_then(key_problem).is_some() {
        return None;
    }
    let body = CreateWebhook::from_raw(raw.webhook)?.to_json();
    Some(NewJob {
        key: match raw.key {
            Some(key) => key.into_owned(),
            None => derived_key(&raw.tenant, &body),
        },
        tenant: raw.tenant.into_owned(),
        body,
    })
}

/// The slow road through one line, which names every problem.
fn slow_job(line: &[u8], registered: &HashSet<String>) -> Result<NewJob, Vec<FieldError>> {
    parse_line_bytes(line).and_then(|request| {
        let unknown = check_tenant(&request.tenant, registered);
        match (validate(&request), unknown) {
            (Ok(job), None) => Ok(job),
            (Ok(_), Some(e)) => Err(vec![e]),
            (Err(errors), unknown) => {
                // The tenant comes first in a job line: so does its problem.
                Err(unknown.into_iter().chain(errors).collect())
            }
        }
    })
}

/// Checks one line of a job file as [`check_jobs`] does: the job, or every problem with
/// the line (its tenant checked against `registered`).
pub fn check_line(line: &[u8], registered: &HashSet<String>) -> Result<NewJob, Vec<FieldError>> {
    match fast_job(line, registered) {
        Some(job) => Ok(job),
        None => slow_job(line, registered),
    }
}

/// Checks `lines`, the first of which is line `first_index + 1` of the file.
fn check_lines(lines: &[&[u8]], first_index: usize, registered: &HashSet<String>) -> JobFile {
    let mut file = JobFile::default();
    for (index, line) in lines.iter().enumerate() {
        let line_no = (first_index + index) as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match check_line(line, registered) {
            Ok(job) => file.jobs.push(job),
            Err(errors) => {
                file.invalid_lines += 1;
                file.errors.extend(errors.into_iter().map(|e| LineError {
                    line: line_no,
                    field: e.field,
                    reason: e.reason,
                }));
            }
        }
    }
    file
}

/// How a batch of pushes went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushSummary {
    /// Newly enqueued.
    pub enqueued: u64,
    /// Already enqueued earlier under the same key.
    pub duplicate: u64,
}

/// Why a [`Producer`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// A job is invalid; nothing was enqueued. Each entry: the job's index in the request
    /// and its problems.
    #[error("{} invalid job(s); nothing enqueued: {}", .0.len(), describe(.0))]
    Invalid(Vec<(usize, Vec<FieldError>)>),
    /// A job names a tenant that is not registered; nothing was enqueued.
    #[error("unknown tenant {0:?}; import it with `lsq-webhooks tenants import`")]
    UnknownTenant(String),
    /// The queue failed: retry with backoff.
    #[error(transparent)]
    Queue(QueueError),
}

fn describe(invalid: &[(usize, Vec<FieldError>)]) -> String {
    invalid
        .iter()
        .flat_map(|(i, errors)| errors.iter().map(move |e| format!("job {i}: {e}")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<QueueError> for ProducerError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::UnknownTenant(t) => ProducerError::UnknownTenant(t),
            other => ProducerError::Queue(other),
        }
    }
}

/// A Rust service's handle for enqueueing jobs. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    /// Where jobs go.
    queue: Arc<dyn Queue>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", &self.queue.config().name)
            .finish()
    }
}

impl Producer {
    /// A producer for `queue`.
    pub fn new(queue: Arc<dyn Queue>) -> Self {
        Producer { queue }
    }

    /// Validates and enqueues one job: its id, and whether it was new or a duplicate.
    pub async fn enqueue(&self, request: &JobRequest) -> Result<Pushed, ProducerError> {
        let mut pushed = self.enqueue_many(std::slice::from_ref(request)).await?;
        pushed.pop().ok_or_else(|| {
            ProducerError::Queue(QueueError::Corrupt {
                key: "push".into(),
                reason: "no answer for the job".into(),
            })
        })
    }

    /// Validates every job, then enqueues them all (in order): one result per job. If any
    /// job is invalid or names an unknown tenant, nothing is enqueued.
    pub async fn enqueue_many(
        &self,
        requests: &[JobRequest],
    ) -> Result<Vec<Pushed>, ProducerError> {
        let mut jobs = Vec::with_capacity(requests.len());
        let mut invalid = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            match validate(request) {
                Ok(job) => jobs.push(job),
                Err(errors) => invalid.push((i, errors)),
            }
        }
        if !invalid.is_empty() {
            return Err(ProducerError::Invalid(invalid));
        }
        // The queue refuses unknown tenants before writing anything.
        self.push(&jobs).await
    }

    /// One push, retried while Redis is unreachable (see the module header).
    async fn push(&self, jobs: &[NewJob]) -> Result<Vec<Pushed>, ProducerError> {
        // Never cancelled: the retries end with `PUSH_RETRY_FOR`. The failures are logged;
        // a producer keeps no counters of its own.
        let never = tokio_util::sync::CancellationToken::new();
        let uncounted = Stats::default();
        let pushed = tokio::time::timeout(
            PUSH_RETRY_FOR,
            with_reconnect(
                "push",
                &ReconnectPolicy::default(),
                &uncounted,
                &never,
                || self.queue.push(jobs),
            ),
        )
        .await;
        match pushed {
            Ok(Some(result)) => Ok(result?),
            Ok(None) | Err(_) => Err(ProducerError::Queue(QueueError::Redis(
                redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "Redis unreachable; gave up after retrying for 60 s",
                )),
            ))),
        }
    }

    /// Enqueues jobs already validated (by [`read_jobs`] or [`validate`]), in chunks of
    /// [`PUSH_CHUNK`], calling `progress` with the number of jobs done after each. The jobs
    /// are pushed grouped by tenant (each tenant's in their order; Redis then touches few
    /// tenant lists per batch); the ids come back in input order.
    pub async fn push_validated(
        &self,
        jobs: Vec<NewJob>,
        progress: &mut (dyn FnMut(usize) + Send),
    ) -> Result<(PushSummary, Vec<JobId>), ProducerError> {
        let mut indexed: Vec<(usize, NewJob)> = jobs.into_iter().enumerate().collect();
        // Stable: the first of two jobs with the same key stays first.
        indexed.sort_by(|a, b| a.1.tenant.cmp(&b.1.tenant));
        let (order, grouped): (Vec<usize>, Vec<NewJob>) = indexed.into_iter().unzip();
        let mut summary = PushSummary::default();
        let mut ids = vec![JobId(String::new()); grouped.len()];
        for (chunk, positions) in grouped.chunks(PUSH_CHUNK).zip(order.chunks(PUSH_CHUNK)) {
            let pushed = self.push(chunk).await?;
            for (pushed, &i) in pushed.into_iter().zip(positions) {
                ids[i] = match pushed {
                    Pushed::Enqueued { job } => {
                        summary.enqueued += 1;
                        job
                    }
                    Pushed::Duplicate { job } => {
                        summary.duplicate += 1;
                        job
                    }
                };
            }
            progress(chunk.len());
        }
        Ok((summary, ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Value {
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

    fn registered() -> HashSet<String> {
        ["acme".to_string()].into_iter().collect()
    }

    #[test]
    fn reads_valid_lines_and_reports_every_bad_one() {
        let good = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        let mut bad_url = body();
        bad_url["URL"] = "not a url".into();
        bad_url["CustomHeaders"][0]["Value"] = "SECRET-VALUE".into();
        let lines = [
            good.clone(),
            String::new(),
            serde_json::json!({"tenant": "acme", "webhook": bad_url}).to_string(),
            "{not json".to_string(),
            serde_json::json!({"tenant": "acme", "webhook": body(), "extra": 1}).to_string(),
            serde_json::json!({"tenant": "acme", "webhook": body(), "key": "k1"}).to_string(),
            "[1,2]\r".to_string(),
            serde_json::json!({"tenant": "nobody", "webhook": body()}).to_string(),
        ];
        let text = lines.join("\n");
        let file = read_jobs(text.as_bytes(), &registered()).expect("read");
        assert_eq!(file.jobs.len(), 2);
        assert_eq!(file.jobs[1].key, "k1");
        assert!(file.jobs[0].key.starts_with("sha256:"));
        assert_eq!(file.invalid_lines, 5);
        let errors: Vec<String> = file.errors.iter().map(|e| e.to_string()).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 3: webhook.URL: ")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("line 4: json: ")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 5: job: unknown field \"extra\""))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 8: tenant: unknown tenant"))
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("line 7: job: must be a JSON object"))
        );
        assert!(!errors.join("\n").contains("SECRET-VALUE"));
    }

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
        let slow = slow_job(line.as_bytes(), registered);
        match fast_job(line.as_bytes(), registered) {
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
    fn a_byte_order_mark_is_not_part_of_the_first_line() {
        let line = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        let text = format!("\u{feff}{line}\r\n{{broken\r\n");
        let file = check_jobs(text.as_bytes(), &registered());
        assert_eq!(file.jobs.len(), 1);
        assert_eq!(file.errors.len(), 1);
        assert_eq!(file.errors[0].line, 2);
    }

    #[test]
    fn large_files_keep_file_order_and_line_numbers() {
        let good = serde_json::json!({"tenant": "acme", "webhook": body()}).to_string();
        let mut lines: Vec<String> = (0..9_000)
            .map(|n| {
                let mut b = body();
                b["Description"] = format!("hook {n}").into();
                serde_json::json!({"tenant": "acme", "webhook": b}).to_string()
            })
            .collect();
        lines[7_001] = "{broken".into();
        lines[8_999] = good;
        let file = check_jobs(lines.join("\n").as_bytes(), &registered());
        assert_eq!(file.jobs.len(), 8_999);
        assert_eq!(file.invalid_lines, 1);
        assert_eq!(file.errors[0].line, 7_002);
        let description = |i: usize| {
            serde_json::from_str::<Value>(&file.jobs[i].body).expect("json")["Description"].clone()
        };
        assert_eq!(description(7_001), "hook 7002");
        assert_eq!(description(0), "hook 0");
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
            tenant: "bad name".into(),
            webhook: body(),
            key: Some(String::new()),
        };
        let errors = validate(&request).expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["tenant", "key"]);
    }
}
